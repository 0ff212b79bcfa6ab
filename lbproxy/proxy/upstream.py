"""Upstream side: keep-alive connections to one server and the relay of its responses.

One UpstreamProtocol per server connection, one httptools response parser for its whole
life (building a parser costs more than relaying a small response). While it serves an
exchange, parser callbacks append the client's bytes to `out`; `data_received` hands
them to the client transport in one `writelines` after each parse, so a small response
costs one write system call. Between exchanges the connection waits in its ServerPool.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools

from lbproxy.backends.outcomes import (ABORTED, CONNECT_FAILURE, EMPTY_RESPONSE, JUNK_RESPONSE,
                                       RESPONSE_TIMEOUT)
from lbproxy.config.schema import BackendConfig, ServerConfig
from lbproxy.http.errors import STATUS_LINES, status_line
from lbproxy.http.headers import (CONNECTION, CONTENT_LENGTH, RESPONSE_SPECIAL, TRANSFER_ENCODING,
                                  UPGRADE, connection_tokens, named_hop_by_hop, strip_named)
from lbproxy.proxy.tls import client_context, server_hostname

if TYPE_CHECKING:
    from lbproxy.backends.server import Server
    from lbproxy.proxy.exchange import Exchange
    from lbproxy.proxy.state import ProxyState

# An idle pooled connection is closed after this long: below the 5 s keep-alive timeout
# of uvicorn and gunicorn, so we close first and do not race a server that is closing.
POOL_IDLE_TIMEOUT = 4.0
# Idle connections kept per server. Below the number of concurrent requests a server
# sees, every burst closes and reopens connections: at 500 concurrent clients a cap of
# 256 cost 1.6 s of p99 (bench/throughput); 1024 keeps fds bounded without churn.
MAX_IDLE_PER_SERVER = 1024

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ServerPool:
    """Idle keep-alive connections to one server, and the way to open new ones."""

    def __init__(self, server: Server, state: ProxyState, *, connect_timeout: float,
                 server_timeout: float, reuse: bool, ssl: object = None,
                 server_hostname: str | None = None) -> None:
        self.server = server
        self.state = state
        self.connect_timeout = connect_timeout
        self.server_timeout = server_timeout
        self.reuse = reuse
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
        loop = self.state.loop
        address = self.server.address
        factory = lambda: UpstreamProtocol(self)  # noqa: E731
        try:
            if address.unix:
                coro = loop.create_unix_connection(factory, address.unix, ssl=self.ssl,
                                                   server_hostname=self.server_hostname)
            else:
                coro = loop.create_connection(factory, address.host, address.port,
                                              ssl=self.ssl,
                                              server_hostname=self.server_hostname)
            _, upstream = await asyncio.wait_for(coro, self.connect_timeout)
        except (OSError, asyncio.TimeoutError, ValueError):
            if exchange.connecting is self:
                exchange.connecting = None
                exchange.upstream_failed(CONNECT_FAILURE)
            return
        if exchange.connecting is self:
            exchange.connecting = None
            exchange.attach(upstream)
        else:                       # the client left while we connected: keep it for later
            self.release(upstream)

    def release(self, upstream: UpstreamProtocol) -> None:
        """Return a connection after a complete exchange; close it if we keep no more."""
        upstream.exchange = None
        if (self.reuse and upstream.transport is not None and not self.state.stopping
                and len(self.idle) < MAX_IDLE_PER_SERVER):
            if upstream.read_paused:
                upstream.read_paused = False
                upstream.transport.resume_reading()
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
              backend: BackendConfig) -> ServerPool:
    """The pool for `server` as its config and its backend's settings describe it, with
    the TLS client context it connects with (the engine hands this to each Backend)."""
    context = hostname = None
    if config.tls is not None:
        context = client_context(config.tls, f"{config.where}.tls")
        hostname = server_hostname(config.tls, config.address.host)
    return ServerPool(server, state, connect_timeout=backend.timeouts.connect,
                      server_timeout=backend.timeouts.server,
                      reuse=backend.http_reuse != "never", ssl=context,
                      server_hostname=hostname)


class UpstreamProtocol(asyncio.Protocol):
    """One connection to a server; relays each response to the exchange it serves."""

    def __init__(self, pool: ServerPool) -> None:
        # per connection
        self.pool = pool
        self.time = pool.state.time
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.deadline = 0.0
        self.read_paused = False
        self.out: list[bytes] = []          # bytes for the client, flushed after each parse
        self.hparts: list[bytes] = []       # response headers as name, ": ", value, CRLF
        # per response (reset by on_message_begin)
        self.received = False
        self.in_body = False
        self.informational = False
        self.length = -1
        self.chunked_in = False
        self.chunked_out = False
        self.server_close = False
        self.extra_hop: set[bytes] | None = None
        self.upgrade_b: bytes | None = None   # the server's Upgrade header (for a 101)
        self.tunnel = False                    # relaying raw bytes after a 101
        self.done = False
        self.reusable = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.pool.state.upstreams.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.deadline = 0.0
        self.pool.state.upstreams.discard(self)
        self.pool.discard(self)
        exchange = self.exchange
        if exchange is None:
            return
        if self.tunnel:                  # the server ended the tunnel: end the client's
            self.exchange = None
            exchange.client.close()
            return
        self.exchange = None
        if self.in_body and not self.done and self.length < 0 and not self.chunked_in:
            # A response without length ends when the server closes: that is success.
            if self.chunked_out:
                self.out.append(b"0\r\n\r\n")
            self._flush(exchange)
            exchange.response_done(self, False)
        else:
            self._flush(exchange)
            exchange.upstream_failed(ABORTED if self.received else EMPTY_RESPONSE)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:             # a server speaking out of turn is not reusable
            self.close()
            return
        if self.tunnel:
            client = exchange.client
            client.send_one(data)
            client.deadline = self.time() + client.tunnel_timeout
            return
        self.received = True
        self.deadline = self.time() + self.pool.server_timeout
        exchange.resp_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.tunnel:                  # the bytes after the 101 head are tunnel data
                self.out.append(data[upgrade.args[0]:])
                self._flush(exchange)
                self.deadline = 0.0
                exchange.tunnel_started(self)
                return
            self._fail(exchange)
            return
        except httptools.HttpParserError:
            self._fail(exchange)
            return
        if self.out:
            self._flush(exchange)
        if self.done:
            self.done = False
            self.deadline = 0.0
            self.exchange = None
            exchange.response_done(self, self.reusable)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.pause_reading(2)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.resume_reading(2)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.upgrade_b = None
        self.hparts.clear()
        self.in_body = self.informational = self.chunked_in = self.chunked_out = False
        self.server_close = False
        self.extra_hop = None
        self.length = -1

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_body:                # trailers: dropped, like HAProxy without h2
            return
        code = RESPONSE_SPECIAL.get(name.lower())
        if code is None:
            self.hparts += (name, b": ", value, b"\r\n")
        elif code == CONTENT_LENGTH:
            self.length = int(value)
            self.hparts += (name, b": ", value, b"\r\n")
        elif code == TRANSFER_ENCODING:
            self.chunked_in = True
        elif code == UPGRADE:
            self.upgrade_b = value
        elif code == CONNECTION:
            tokens = connection_tokens(value)
            if b"close" in tokens:
                self.server_close = True
            self.extra_hop = named_hop_by_hop(tokens, self.extra_hop)
        # keep-alive, proxy-connection, te, trailer: hop-by-hop, dropped

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101 and exchange.upgrade_b is not None and self.upgrade_b:
                self._switch_protocols(exchange)
                return
            self.informational = True
            if status == 100 and exchange.expect_continue:
                self.out.append(CONTINUE)
            return
        self.in_body = True
        exchange.status = status
        hparts = self.hparts if self.extra_hop is None else strip_named(self.hparts,
                                                                        self.extra_hop)
        if exchange.client.frontend.response_rules or exchange.backend.persistence:
            hparts = exchange.response_headers(hparts)
        head = [STATUS_LINES[status] if status < 600 else status_line(status)]
        head += hparts
        if exchange.is_head or status == 204 or status == 304 or self.length >= 0:
            pass
        elif exchange.http11:
            head.append(b"transfer-encoding: chunked\r\n")
            self.chunked_out = True
        else:
            exchange.keep_alive = False      # HTTP/1.0 client: the close delimits the body
        exchange.response_head(head)
        head.append(b"\r\n")
        self.out.append(b"".join(head))
        if exchange.is_head:
            # httptools cannot be told the body is absent, so this connection is done.
            self.done = True
            self.reusable = False

    def _switch_protocols(self, exchange: Exchange) -> None:
        """Relay the 101 with its Upgrade header; parsing stops at the end of this head
        (httptools raises HttpParserUpgrade) and the connection becomes a tunnel."""
        exchange.status = 101
        self.tunnel = True
        hparts = self.hparts if self.extra_hop is None else strip_named(self.hparts,
                                                                        self.extra_hop)
        self.out.append(b"".join([STATUS_LINES[101], *hparts, b"connection: upgrade\r\n",
                                  b"upgrade: ", self.upgrade_b, b"\r\n\r\n"]))

    def on_body(self, body: bytes) -> None:
        if self.done:
            return
        if self.chunked_out:
            self.out += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            self.out.append(body)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        if self.done or self.tunnel:
            return
        if self.chunked_out:
            self.out.append(b"0\r\n\r\n")
        self.done = True
        # A server that was asked to upgrade and declined is not trusted with another
        # request: it may have read more than the request (RFC 9110 §7.8 leaves it open).
        self.reusable = (not self.server_close and self.parser.should_keep_alive()
                         and self.exchange.upgrade_b is None)

    # helpers

    def _fail(self, exchange: Exchange) -> None:
        self._flush(exchange)
        self.exchange = None
        self.close()
        exchange.upstream_failed(JUNK_RESPONSE)

    def _flush(self, exchange: Exchange) -> None:
        out = self.out
        if out:
            exchange.client.send(out)
            out.clear()

    def send(self, parts: list[bytes]) -> None:
        """Write request bytes to the server in one call (see ClientProtocol.send)."""
        self.send_data(parts[0] if len(parts) == 1 else b"".join(parts))

    def send_data(self, data: bytes) -> None:
        self.pool.server.bytes_in += len(data)
        self.transport.write(data)

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
