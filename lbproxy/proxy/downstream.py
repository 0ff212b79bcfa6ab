"""What an exchange needs from the side that asked: the Downstream interface.

An HTTP/1.1 client connection (lbproxy/proxy/client.py) implements it, and so does an
HTTP/2 stream (lbproxy/proxy/h2client.py). The exchange, the dispatcher and the upstream protocol use only this, so the
request path (rules, dispatch, retries, stick tables, stats, access log) is written once
for every wire protocol. The response reaches the downstream as data (status, header
list, body pieces); the downstream frames it for its protocol and writes what one parse
of the server's bytes produced in one call (`flush`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from lbproxy.http.answers import Answer
    from lbproxy.proxy.exchange import Exchange
    from lbproxy.proxy.frontend import Frontend
    from lbproxy.proxy.state import ProxyState
    from lbproxy.proxy.upstream import UpstreamProtocol


class Downstream(Protocol):
    frontend: Frontend
    state: ProxyState
    time: Callable[[], float]
    # facts of the client's connection, for fetches, logs and X-Forwarded-*
    src: str
    src_b: bytes
    src_port: int
    dst_port: int
    ssl_fc: bool
    ssl_fc_sni: str | None
    peer_trusted: bool          # the peer is one of forwarded.trusted_proxies
    closed: bool                # the client is gone: nothing more can be sent to it
    write_paused: bool          # the client does not read what it is sent: the server waits

    def pause_reading(self, reason: int) -> None:
        """Stop reading the request (body) for `reason` (lbproxy/proxy/flow.py)."""

    def resume_reading(self, reason: int) -> None: ...

    def informational(self, status: int) -> None:
        """A 1xx before the response (100 Continue)."""

    def response_head(self, exchange: Exchange, status: int, headers: list[bytes],
                      length: int, end_stream: bool) -> None:
        """The response starts: `headers` as (name, ": ", value, CRLF) quadruples, hop-by-hop
        ones removed; `length` is the body's length, -1 when unknown; `end_stream`: no body
        follows (an HTTP/2 server's head can say so: gRPC's trailers-only answers). Decides,
        for its protocol, whether the connection stays open (`exchange.keep_alive`)."""

    def response_body(self, data: bytes) -> None: ...

    def response_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Trailers (from an HTTP/2 server), after the body; dropped where the client's
        protocol cannot carry them."""

    def flush(self, end: bool) -> None:
        """Send what the calls since the last flush produced; `end`: the response is
        complete."""

    def answer(self, exchange: Exchange, answer: Answer) -> int:
        """A whole response of the proxy's own (error page, deny, redirect); returns the
        bytes it sent (0 when the client is gone)."""

    def start_tunnel(self, upstream: UpstreamProtocol, data: bytes) -> None:
        """The server switched protocols: `data` (its 101 and what followed) is relayed,
        and from now on raw bytes go both ways."""

    def tunnel_data(self, data: bytes) -> None: ...

    def hold_entry(self, entry: object) -> None:
        """Count the connection in a stick-table entry a rule tracked, while it lasts."""

    def exchange_done(self, exchange: Exchange) -> None:
        """`exchange` is finished (answered, counted, logged): go on with the next."""

    def abort(self) -> None:
        """Cut the client off (a response was partly sent and cannot be finished)."""

    def close(self) -> None: ...


def hold(entries: list[Any] | None, entry: Any) -> list[Any]:
    """A client connection's stick-table entries (None while it holds none) with `entry`
    counted in (its connection counters), once, until the connection closes: `release`."""
    if entries is None:
        entries = []
    elif entry in entries:
        return entries
    entry.on_connect()
    entries.append(entry)
    return entries


def release(entries: list[Any] | None) -> None:
    """The connection that held `entries` closed."""
    if entries is not None:
        for entry in entries:
            entry.on_disconnect()


class SinkFilter:
    """A response sink in front of the downstream (compression, the cache), which an
    exchange writes to as to the downstream itself: what it does not change goes on."""

    __slots__ = ("downstream",)

    def __init__(self, downstream: Downstream) -> None:
        self.downstream = downstream

    @property
    def write_paused(self) -> bool:
        return self.downstream.write_paused

    def informational(self, status: int) -> None:
        self.downstream.informational(status)

    def tunnel_data(self, data: bytes) -> None:
        self.downstream.tunnel_data(data)

    def close(self) -> None:
        self.downstream.close()
