"""Responses the proxy makes itself: error pages, and what deny, return and redirect rules
answer. An Answer is the response as data (status, headers, body), so any downstream
protocol can send it; its HTTP/1.1 form is built once per variant (keep-alive or close,
with or without the body for HEAD) and reused. Error pages never carry a traceback: the
body names only the status and its reason.
"""

from __future__ import annotations

from http import HTTPStatus


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {reason(status)}\r\n".encode("latin-1")


# Status lines indexed by code, so the response path does one list index, no formatting.
STATUS_LINES: list[bytes] = [status_line(code) for code in range(600)]


def _page(status: int) -> bytes:
    text = f"{status} {reason(status)}"
    return (f"<html><head><title>{text}</title></head>"
            f"<body><h1>{text}</h1></body></html>\n").encode()


class Answer:
    """A response of the proxy's own. `headers` are (name, value) byte pairs beside the
    content type and length, which the answer sets itself."""

    __slots__ = ("status", "headers", "body", "content_type", "_h1")

    def __init__(self, status: int, body: bytes | None = None,
                 content_type: bytes = b"text/html",
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.status = status
        self.body = _page(status) if body is None else body
        self.content_type = content_type
        self.headers = headers
        self._h1: dict[tuple[bool, bool], bytes] = {}

    def h1(self, keep_alive: bool, head_only: bool = False) -> bytes:
        """The HTTP/1.1 bytes; for HEAD (`head_only`) the same head without the body."""
        key = (keep_alive, head_only)
        data = self._h1.get(key)
        if data is None:
            data = self._h1[key] = self._serialize(keep_alive, head_only)
        return data

    def _serialize(self, keep_alive: bool, head_only: bool) -> bytes:
        status = self.status
        parts = [STATUS_LINES[status] if status < 600 else status_line(status)]
        for name, value in self.headers:
            parts += (name, b": ", value, b"\r\n")
        parts += (b"content-type: ", self.content_type, b"\r\ncontent-length: ",
                  str(len(self.body)).encode(), b"\r\ncache-control: no-cache\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if not head_only:
            parts.append(self.body)
        return b"".join(parts)


_ERRORS: dict[int, Answer] = {}


def error_answer(status: int) -> Answer:
    """The default page for `status`, built once."""
    answer = _ERRORS.get(status)
    if answer is None:
        answer = _ERRORS[status] = Answer(status)
    return answer
