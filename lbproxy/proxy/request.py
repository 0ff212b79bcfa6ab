"""A parsed request head, as any downstream protocol delivers it, and the RequestInfo view
that rules, balancers and stick tables read (lbproxy/http/request.py).

Headers stay bytes in the flat list the data plane forwards (name, ": ", value, CRLF
quadruples); a value is decoded only when a rule or a balancer asks for it. The headers
the proxy manages itself (Host, X-Forwarded-For, framing, Connection, Upgrade) are kept
apart in their own fields. Facts of the connection (the client's address, TLS) come from
the downstream that received the request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lbproxy.proxy.downstream import Downstream

# A header edit: (request, quadruples of the headers concerned) -> the quadruples after it.
HeaderEdit = Callable[["Request", list[bytes]], list[bytes]]


class Request:
    __slots__ = (
        "downstream", "method_b", "url_b", "http11", "keep_alive", "hparts", "host_b",
        "xff_b", "length", "chunked", "expect_continue", "extra_hop", "is_head", "norm_path",
        "upgrade_b", "connection", "forwarded_src", "http2", "te_trailers",
    )

    def _init_request(self, downstream: Downstream) -> None:
        """The fields before anything is parsed, set by Exchange's __init__ (a method that,
        compiled, it calls in C, where a base class's __init__ is a call through Python)."""
        self.downstream = downstream
        self.method_b = b""
        self.url_b = b""
        self.http11 = True
        self.keep_alive = True
        self.hparts: list[bytes] = []
        self.host_b: bytes | None = None
        self.xff_b: bytes | None = None
        self.length = -1               # Content-Length, -1 when absent
        self.chunked = False
        self.expect_continue = False
        self.extra_hop: set[bytes] | None = None     # headers Connection names
        self.is_head = False
        self.norm_path: str | None = None            # cache of routing.normalize
        self.upgrade_b: bytes | None = None          # kept only for a real protocol switch
        self.connection: tuple[bytes, ...] | None = None   # Connection tokens, lower-cased
        # the client address X-Forwarded-For gives when the peer is a trusted proxy
        self.forwarded_src: str | None = None
        self.http2 = False                 # arrived on an HTTP/2 stream
        self.te_trailers = False           # HTTP/2 `te: trailers` (gRPC), for an h2 server

    # changes made by rules

    def set_url(self, url: str) -> None:
        self.url_b = url.encode("latin-1", "replace")
        self.norm_path = None

    def edit_headers(self, lname: bytes, edit: HeaderEdit) -> None:
        """Apply `edit` to the headers the server gets, for one that edits `lname`: the
        X-Forwarded-For the client sent is kept apart (the client address is appended to
        it when sent) and edited there; a Host change is kept in step in `host_b`."""
        if lname == b"x-forwarded-for":
            xff = self.xff_b
            parts = edit(self, [] if xff is None else [b"X-Forwarded-For", b": ", xff, b"\r\n"])
            self.xff_b = b", ".join(parts[2::4]) or None
            return
        self.hparts = edit(self, self.hparts)
        if lname == b"host":
            self.host_b = self.raw_header(b"host")

    def raw_header(self, lname: bytes) -> bytes | None:
        parts = self.hparts
        for i in range(0, len(parts), 4):
            if parts[i].lower() == lname:
                return parts[i + 2]
        return None

    # RequestInfo: decoded on demand

    @property
    def method(self) -> str:
        return self.method_b.decode("latin-1")

    @property
    def req_ver(self) -> str:
        """The HTTP version of the request as the client sent it: "2", "1.1" or "1.0"."""
        return "2" if self.http2 else "1.1" if self.http11 else "1.0"

    @property
    def url(self) -> str:
        return self.url_b.decode("latin-1")

    @property
    def path(self) -> str:
        return self.url.split("?", 1)[0]

    @property
    def query(self) -> str:
        url = self.url
        return url.split("?", 1)[1] if "?" in url else ""

    @property
    def host(self) -> str:
        if self.host_b is None:
            return ""
        value = self.host_b.decode("latin-1").strip().lower()
        if value.startswith("["):
            return value[: value.find("]") + 1]
        return value.rsplit(":", 1)[0] if value.count(":") == 1 else value

    @property
    def src(self) -> str:
        return self.forwarded_src or self.downstream.src

    @property
    def src_port(self) -> int:
        return self.downstream.src_port

    @property
    def dst_port(self) -> int:
        return self.downstream.dst_port

    @property
    def ssl_fc(self) -> bool:
        return self.downstream.ssl_fc

    @property
    def ssl_fc_sni(self) -> str | None:
        return self.downstream.ssl_fc_sni

    def _raw_values(self, name: str) -> list[str]:
        if name == "host":
            return [] if self.host_b is None else [self.host_b.decode("latin-1")]
        if name == "x-forwarded-for":
            return [] if self.xff_b is None else [self.xff_b.decode("latin-1")]
        wanted = name.encode("latin-1")
        parts = self.hparts
        return [parts[i + 2].decode("latin-1") for i in range(0, len(parts), 4)
                if parts[i].lower() == wanted]

    def header(self, name: str) -> str | None:
        values = self._raw_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        return [part.strip() for value in self._raw_values(name) for part in value.split(",")]

    def cookie(self, name: str) -> str | None:
        for value in self._raw_values("cookie"):
            for pair in value.split(";"):
                key, _, cookie_value = pair.strip().partition("=")
                if key == name:
                    return cookie_value
        return None
