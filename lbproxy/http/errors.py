"""Responses the proxy generates itself: small HTML pages, prebuilt once per status.

They never carry a traceback; the body names only the status and its reason.
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


def error_response(status: int, keep_alive: bool = False, body: bytes | None = None,
                   content_type: bytes = b"text/html",
                   headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A complete HTTP/1.1 response for a proxy-generated answer."""
    if body is None:
        body = _page(status)
    parts = [STATUS_LINES[status] if status < 600 else status_line(status)]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (b"content-type: ", content_type, b"\r\ncontent-length: ",
              str(len(body)).encode(), b"\r\ncache-control: no-cache\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)


_CACHE: dict[tuple[int, bool], bytes] = {}


def canned(status: int, keep_alive: bool = False) -> bytes:
    """The default error page for `status`, built once."""
    key = (status, keep_alive)
    response = _CACHE.get(key)
    if response is None:
        response = _CACHE[key] = error_response(status, keep_alive)
    return response
