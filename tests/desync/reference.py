"""What a client's bytes mean to a strict parser (h11): the requests a proxy may forward.

The reference splits a client's raw bytes into requests, as a server reading them
directly would, and says for each what the server must see when the proxy forwards it:
the method, the target in origin form, the host and the body length. Where HTTP leaves
the proxy a choice, the reference states lbproxy's documented one: an Upgrade is a real
upgrade only on HTTP/1.1 with `Connection: upgrade`, no body and a protocol other than
h2c; a keep-alive HTTP/1.0 request may be followed by another (h11 closes after any
HTTP/1.0 request, so the rest is read with a fresh parser).
"""

from __future__ import annotations

from dataclasses import dataclass

import h11

from tests.desync.recorder import MAX_EVENT, UPGRADE_PATH, header


@dataclass
class Expected:
    method: str
    target: str               # origin form, as forwarded
    host: str | None          # the Host a server must see; None when the proxy picks it
    body: int
    tunnel: bool = False      # a real upgrade to /ws101: what follows is tunnel data

    def matches(self, seen: dict) -> bool:
        """Whether a server saw this request. An absolute-form target is the same request
        when its authority is the Host the server saw (RFC 9112 §3.2.2)."""
        target, authority = origin_form(seen["target"].encode("latin-1"))
        host = (seen["host"] or "").lower()
        return (seen["method"] == self.method and target.decode("latin-1") == self.target
                and seen["body"] == self.body
                and (authority is None or same_host(authority, host.encode("latin-1")))
                and (self.host is None or host == self.host.lower()))


@dataclass
class Reference:
    requests: list[Expected]
    error: str | None = None       # why the strict parser stopped, if it refused something
    incomplete: bool = False       # the bytes end inside a request
    tunnel_data: bytes = b""       # bytes after a real upgrade


def same_host(authority: bytes, host: bytes) -> bool:
    """Host values equal but for case and a default port."""
    def bare(value: bytes) -> bytes:
        value = value.strip().lower()
        return value.rsplit(b":", 1)[0] if value.endswith((b":80", b":443")) else value
    return bare(authority) == bare(host)


def origin_form(target: bytes) -> tuple[bytes, bytes | None]:
    """(origin-form target, authority) of a request target."""
    lower = target.lower()
    for scheme in (b"http://", b"https://"):
        if lower.startswith(scheme):
            rest = target[len(scheme):]
            cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0),
                      default=len(rest))
            path = rest[cut:]
            return (path if path.startswith(b"/") else b"/" + path), rest[:cut]
    return target, None


def tokens(request: h11.Request, name: bytes) -> list[bytes]:
    """The comma-separated tokens of every `name` header, lower-cased (h11 lower-cases names)."""
    return [token.strip().lower() for key, value in request.headers if key == name
            for token in value.split(b",") if token.strip()]


def is_real_upgrade(request: h11.Request, body: int) -> bool:
    protocols = [p for p in tokens(request, b"upgrade") if p != b"h2c"]
    connection = tokens(request, b"connection")
    framed = header(request.headers, b"transfer-encoding") is not None or body > 0
    return (request.http_version == b"1.1" and b"upgrade" in connection and bool(protocols)
            and not framed)


def keeps_alive(request: h11.Request) -> bool:
    connection = tokens(request, b"connection")
    if b"close" in connection:
        return False
    return request.http_version == b"1.1" or b"keep-alive" in connection


def parse(raw: bytes) -> Reference:
    ref = Reference([])
    data = raw
    while True:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_EVENT)
        conn.receive_data(data)
        request: h11.Request | None = None
        body = 0
        again = False
        while not again:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                ref.error = str(exc)
                return ref
            if event is h11.NEED_DATA:
                ref.incomplete = bool(conn.trailing_data[0]) or request is not None
                return ref
            if event is h11.PAUSED and conn.their_state is not h11.MIGHT_SWITCH_PROTOCOL:
                return ref
            if isinstance(event, h11.Request):
                if event.method == b"CONNECT":      # a tunnel request: never forwarded
                    ref.error = "CONNECT"
                    return ref
                request, body = event, 0
            elif isinstance(event, h11.Data):
                body += len(event.data)
            elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                if event is not h11.PAUSED and conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:
                    continue
                target, authority = origin_form(request.target)
                host = header(request.headers, b"host") or authority
                tunnel = (is_real_upgrade(request, body)
                          and target.split(b"?")[0] == UPGRADE_PATH)
                ref.requests.append(Expected(
                    request.method.decode("latin-1"), target.decode("latin-1"),
                    host.decode("latin-1") if host is not None else None, body, tunnel))
                if tunnel:
                    ref.tunnel_data = bytes(conn.trailing_data[0])
                    return ref
                if not keeps_alive(request):
                    return ref
                conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                conn.send(h11.EndOfMessage())
                if conn.our_state is h11.MUST_CLOSE:   # HTTP/1.0 keep-alive: go on afresh
                    data = bytes(conn.trailing_data[0])
                    again = True
                else:
                    conn.start_next_cycle()
                request = None
            elif isinstance(event, h11.ConnectionClosed):
                return ref
