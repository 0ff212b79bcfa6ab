"""HTTP/1.1 upstream: keep-alive connections to one server, and the relay of its responses.

One UpstreamProtocol per server connection, one httptools response parser for its whole
life (building a parser costs more than relaying a small response). It writes the
request of the exchange it serves in HTTP/1.1 (`request_head`, and the body re-framed:
chunked stays chunked), parses the response and hands it on: the head to the exchange
(rules and cookies apply there), body pieces straight to the exchange's downstream, which
frames them for its client; after each parse the downstream sends what it has in one
call. Between exchanges the connection waits in its ServerPool.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

import httptools

from lbproxy.backends.outcomes import ABORTED, EMPTY_RESPONSE, JUNK_RESPONSE, RESPONSE_TIMEOUT
from lbproxy.config.schema import BackendConfig, ServerConfig
from lbproxy.extensions import PluginFailed
from lbproxy.http.answers import STATUS_LINES
from lbproxy.http.headers import (CONNECTION, CONTENT_LENGTH, PLAIN_RESPONSE_HEADERS,
                                  RESPONSE_SPECIAL, RESPONSE_SPECIAL_AS_SENT,
                                  RESPONSE_SPECIAL_LENGTHS,
                                  TRANSFER_ENCODING, UPGRADE, connection_header, strip_named)
from lbproxy.http.termination import RESPONSE_HEAD_TOO_LARGE
from lbproxy.proxy.connect import connect_to
from lbproxy.proxy.flow import FlowControl
from lbproxy.proxy.tls import client_context, server_hostname

if TYPE_CHECKING:
    from lbproxy.backends.server import Server
    from lbproxy.proxy.downstream import Downstream
    from lbproxy.proxy.exchange import Exchange
    from lbproxy.proxy.h2upstream import H2ServerPool
    from lbproxy.proxy.state import ProxyState

# An idle pooled connection is closed after this long: below the 5 s keep-alive timeout
# of uvicorn and gunicorn, so we close first and do not race a server that is closing.
POOL_IDLE_TIMEOUT = 4.0
# Idle connections kept per server. Below the number of concurrent requests a server
# sees, every burst closes and reopens connections: at 500 concurrent clients a cap of
# 256 cost 1.6 s of p99 (bench/throughput); 1024 keeps fds bounded without churn.
MAX_IDLE_PER_SERVER = 1024

LAST_CHUNK = b"0\r\n\r\n"


class ServerPool:
    """Idle keep-alive connections to one server, and the way to open new ones."""

    __slots__ = ("connect_timeout", "idle", "max_head", "reuse", "server", "server_hostname",
                 "ssl", "state")       # one per server: 5,000 servers, 5,000 pools

    def __init__(self, server: Server, state: ProxyState, *, connect_timeout: float,
                 reuse: bool, max_head: int = 65536, ssl: object = None,
                 server_hostname: str | None = None) -> None:
        self.server = weakref.proxy(server)   # its owner: no cycle (lbproxy/runtime/heap.py)
        self.state = state
        self.connect_timeout = connect_timeout
        self.reuse = reuse
        self.max_head = max_head        # bytes of a response head, 1xx heads included
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.idle: list[UpstreamProtocol] = []

    def acquire(self) -> UpstreamProtocol | None:
        """An idle connection, most recently used first (its socket is the warmest)."""
        idle = self.idle
        while idle:
            upstream = idle.pop()
            if upstream.transport is not None:
                return upstream
        return None

    def connect(self, exchange: Exchange) -> None:
        """Open a connection for `exchange`; it gets `attach` or `upstream_failed`."""
        exchange.connecting = self
        self.state.loop.create_task(self._connect(exchange))

    async def _connect(self, exchange: Exchange) -> None:
        try:
            upstream = await connect_to(self, lambda: UpstreamProtocol(self))
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            no_fd = self.state.out_of_fds_in(exc, self.server)
            if exchange.connecting is self:
                exchange.connecting = None
                exchange.connect_failed(no_fd)
            return
        if exchange.connecting is self:
            exchange.connecting = None
            exchange.attach(upstream)
        else:                       # the client left while we connected: keep it for later
            self.release(upstream)

    def release(self, upstream: UpstreamProtocol) -> None:
        """Return a connection after a complete exchange; close it if we keep no more."""
        upstream.exchange = upstream.downstream = None
        # a new list, not cleared: an auth_request call reads its answer's headers after this
        upstream.hparts = []        # the last response's headers: 0.5 KB per idle connection
        if (self.reuse and upstream.transport is not None and not self.state.stopping
                and len(self.idle) < MAX_IDLE_PER_SERVER):
            if upstream.flow.paused:
                upstream.flow.clear()
            upstream.deadline = self.state.time() + POOL_IDLE_TIMEOUT
            self.idle.append(upstream)
        else:
            upstream.close()

    def discard(self, upstream: UpstreamProtocol) -> None:
        try:
            self.idle.remove(upstream)
        except ValueError:
            pass

    def close_idle(self) -> None:
        while self.idle:
            self.idle.pop().close()


def make_pool(state: ProxyState, server: Server, config: ServerConfig,
              backend: BackendConfig) -> ServerPool | H2ServerPool:
    """The pool for `server` as its config and its backend's settings describe it: HTTP/1.1
    keep-alive connections, or HTTP/2 ones (`proto: h2`), with the TLS client context it
    connects with (ALPN h2 for HTTP/2). The engine hands this to each Backend."""
    h2 = backend.proto == "h2"
    context = hostname = None
    if config.tls is not None:
        context = client_context(config.tls, f"{config.where}.tls", ["h2"] if h2 else None)
        hostname = server_hostname(config.tls, config.address.host)
    if h2:
        # imported here, at configuration time: only `proto: h2` backends need HTTP/2
        from lbproxy.proxy.h2upstream import H2ServerPool

        return H2ServerPool(server, state, connect_timeout=backend.timeouts.connect,
                            max_head=backend.max_response_header_size, ssl=context,
                            server_hostname=hostname)
    return ServerPool(server, state, connect_timeout=backend.timeouts.connect,
                      reuse=backend.http_reuse != "never",
                      max_head=backend.max_response_header_size, ssl=context,
                      server_hostname=hostname)


def request_head(exchange: Exchange) -> bytes:
    """The request line and headers an HTTP/1.1 server gets: the client's headers minus
    hop-by-hop ones, framing from what was parsed, a Host (the server's address for an
    HTTP/1.0 request that had none), X-Forwarded-* as the frontend says."""
    parts = [exchange.method_b, b" ", exchange.url_b, b" HTTP/1.1\r\n"]
    parts.extend(exchange.hparts if exchange.extra_hop is None else
                 strip_named(exchange.hparts, exchange.extra_hop))
    if exchange.host_b is None:
        parts.extend((b"host: ", exchange.server.host_header, b"\r\n"))
    if exchange.upgrade_b is not None:
        parts.extend((b"connection: upgrade\r\nupgrade: ", exchange.upgrade_b, b"\r\n"))
    if exchange.chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif exchange.length >= 0:
        parts.extend((b"content-length: ", b"%d" % exchange.length, b"\r\n"))
    parts.extend(exchange.frontend.forwarded_parts(exchange))
    parts.append(b"\r\n")
    return b"".join(parts)


class ResponseHeadTooLarge(Exception):
    """Raised in a parser callback: stops the parse, the response is refused."""


class UpstreamProtocol:
    """One connection to a server; relays each response to the exchange it serves. An
    asyncio Protocol (without the base class, so that Cython can compile it)."""

    def __init__(self, pool: ServerPool) -> None:
        # per connection
        self.pool = pool
        self.time = pool.state.time
        self.transport: asyncio.Transport | None = None
        self.flow = FlowControl()
        self.parser = httptools.HttpResponseParser(self)
        self.deadline = 0.0
        self.hparts: list[bytes] = []       # response headers as name, ": ", value, CRLF
        self.max_head = pool.max_head
        # per exchange
        self.exchange: Exchange | None = None
        self.downstream: Downstream | None = None
        self.server_timeout = 0.0
        self.chunked_request = False        # the request body goes out chunked
        self.request_ended = False          # its last chunk was sent
        self.received = False               # any byte of the response arrived
        # bytes received since the response began, while its head is incomplete (-1 after)
        self.head_seen = -1
        # per response (reset by on_message_begin)
        self.in_body = False
        self.informational = False
        self.length = -1
        self.chunked_in = False
        self.server_close = False
        self.extra_hop: set[bytes] | None = None
        self.upgrade_b: bytes | None = None   # the server's Upgrade header (for a 101)
        self.tunnel: bytes | None = None      # the 101 head, once the server switched
        self.done = False
        self.reusable = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self.flow.transport = transport  # type: ignore[assignment]
        self.pool.state.upstreams.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = self.flow.transport = None
        self.deadline = 0.0
        self.pool.state.upstreams.discard(self)
        self.pool.discard(self)
        self.parser = None       # it holds our callbacks: no cycle (lbproxy/runtime/heap.py)
        exchange = self.exchange
        if exchange is None:
            return
        self.exchange = None
        downstream = self.downstream
        if self.tunnel is not None:      # the server ended the tunnel: end the client's
            downstream.close()
            return
        if self.in_body and not self.done and self.length < 0 and not self.chunked_in:
            # A response without length ends when the server closes: that is success.
            downstream.flush(True)
            exchange.response_done(self, False)
        else:
            downstream.flush(False)
            exchange.upstream_failed(ABORTED if self.received else EMPTY_RESPONSE)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:             # a server speaking out of turn is not reusable
            self.close()
            return
        if self.tunnel is not None:
            self.downstream.tunnel_data(data)
            return
        self.received = True
        self.deadline = self.time() + self.server_timeout
        exchange.resp_bytes += len(data)
        head_seen = self.head_seen
        if head_seen >= 0:
            self.head_seen = head_seen + len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.tunnel is not None:      # the bytes after the 101 head are tunnel data
                self.deadline = 0.0
                exchange.tunnel_started(self, self.tunnel + data[upgrade.args[0]:])
                return
            self._fail(exchange)
            return
        except httptools.HttpParserError as error:
            if isinstance(error.__context__, PluginFailed):   # in an http_response rule
                self.exchange = None
                exchange.response_refused(self)
            else:
                self._fail(exchange)
            return
        if self.head_seen > self.max_head:     # a head that goes on and on
            self._fail(exchange)
            return
        self.downstream.flush(self.done)
        if self.done:
            self.done = False
            self.deadline = 0.0
            self.exchange = None
            exchange.response_done(self, self.reusable)

    def eof_received(self) -> None:
        """The server shut its side down: the transport closes (asyncio's default)."""

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.pause_request()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.resume_request()

    # the request

    def send_request(self, exchange: Exchange, body: list[bytes], complete: bool) -> None:
        """Serve `exchange`: write its head and the body received so far."""
        self.exchange = exchange
        downstream = self.downstream = exchange.sink
        self.received = False
        self.head_seen = 0
        self.server_timeout = exchange.backend.server_timeout
        self.deadline = self.time() + self.server_timeout
        if downstream.write_paused:
            exchange.pause_response()
        head = exchange.request_head
        if head is None or exchange.host_b is None:   # without Host, it names the server
            head = exchange.request_head = request_head(exchange)
        self.chunked_request = exchange.chunked
        self.request_ended = False
        if body or (complete and self.chunked_request):
            self._write([head], body, complete)
        else:
            exchange.server.bytes_in += len(head)
            self.transport.write(head)

    def send_body(self, body: list[bytes], complete: bool) -> None:
        """More of the request body (re-framed as chunks when it came chunked). Sending
        is activity: the server timeout counts from here, as HAProxy's does."""
        if body or (complete and self.chunked_request and not self.request_ended):
            self.deadline = self.time() + self.server_timeout
            self._write([], body, complete)

    def _write(self, parts: list[bytes], body: list[bytes], complete: bool) -> None:
        if self.chunked_request:
            for piece in body:
                parts += (b"%x\r\n" % len(piece), piece, b"\r\n")
            if complete and not self.request_ended:
                parts.append(LAST_CHUNK)
                self.request_ended = True
        else:
            parts += body
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.exchange.server.bytes_in += len(data)     # (the pool's is a weak proxy)
        self.transport.write(data)

    def tunnel_data(self, data: bytes) -> None:
        """Client bytes through the tunnel, after the 101."""
        self.transport.write(data)

    def pause_reading(self, reason: int) -> None:
        self.flow.pause(reason)

    def resume_reading(self, reason: int) -> None:
        self.flow.resume(reason)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.upgrade_b = None
        self.hparts.clear()
        self.in_body = self.informational = self.chunked_in = False
        self.server_close = False
        self.extra_hop = None
        self.length = -1

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_body:                # trailers: dropped, like HAProxy without h2
            return
        if name in PLAIN_RESPONSE_HEADERS:
            self.hparts.extend((name, b": ", value, b"\r\n"))
            return
        code = RESPONSE_SPECIAL_AS_SENT.get(name)
        if code is None and len(name) in RESPONSE_SPECIAL_LENGTHS:
            code = RESPONSE_SPECIAL.get(name.lower())
        if code is None:
            self.hparts.extend((name, b": ", value, b"\r\n"))
        elif code == CONTENT_LENGTH:
            self.length = int(value)
            self.hparts.extend((name, b": ", value, b"\r\n"))
        elif code == TRANSFER_ENCODING:
            self.chunked_in = True
        elif code == UPGRADE:
            self.upgrade_b = value
        elif code == CONNECTION:
            tokens, self.extra_hop = connection_header(value, self.extra_hop)
            if b"close" in tokens:
                self.server_close = True
        # keep-alive, proxy-connection, te, trailer: hop-by-hop, dropped

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        status = self.parser.get_status_code()
        max_head = self.max_head
        if self.head_seen > max_head and sum(map(len, self.hparts)) > max_head:
            raise ResponseHeadTooLarge      # (a cheap bound first: what arrived so far)
        hparts = self.hparts if self.extra_hop is None else strip_named(self.hparts,
                                                                        self.extra_hop)
        if status < 200:
            if status == 101 and exchange.upgrade_b is not None and self.upgrade_b:
                # parsing stops at the end of this head (HttpParserUpgrade): a tunnel
                self.tunnel = b"".join([STATUS_LINES[101], *hparts, b"connection: upgrade\r\n",
                                        b"upgrade: ", self.upgrade_b, b"\r\n\r\n"])
                return
            self.informational = True
            if status == 100 and exchange.expect_continue:
                self.downstream.informational(100)
            return
        self.in_body = True
        self.head_seen = -1
        exchange.response_head(status, hparts, self.length)
        if exchange.is_head:
            # httptools cannot be told the body is absent, so this connection is done.
            self.done = True
            self.reusable = False

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.downstream.response_body(body)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        if self.done or self.tunnel is not None:
            return
        self.done = True
        # A server that was asked to upgrade and declined is not trusted with another
        # request: it may have read more than the request (RFC 9110 §7.8 leaves it open).
        self.reusable = (not self.server_close and self.parser.should_keep_alive()
                         and self.exchange.upgrade_b is None)

    # failures

    def _fail(self, exchange: Exchange) -> None:
        """An invalid response, or a head over `max_response_header_size`."""
        too_large = self.head_seen > self.max_head
        self.downstream.flush(False)
        self.exchange = None
        self.close()
        exchange.upstream_failed(JUNK_RESPONSE, RESPONSE_HEAD_TOO_LARGE if too_large else None)

    def timed_out(self) -> None:
        exchange = self.exchange
        self.exchange = None
        self.close()
        if exchange is not None:
            exchange.upstream_failed(RESPONSE_TIMEOUT)

    def close(self) -> None:
        self.exchange = None
        if self.transport is not None:
            self.transport.close()
