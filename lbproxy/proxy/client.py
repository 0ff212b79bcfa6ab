"""Downstream side: one asyncio Protocol per client connection.

It parses requests with httptools, enforces the strict checks and limits of CONFIG.md
("Behaviour users rely on") before anything reaches a server, keeps the connection
alive between requests, queues pipelined requests so responses go out in order, and
applies the client-side timeouts through its `deadline` (see lbproxy/proxy/state.py).
Parser callbacks stay small: they fill the Exchange; dispatch happens after each parse,
so a request whose body turns out malformed in the same packet never reaches a server.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import httptools

from lbproxy.http.errors import canned
from lbproxy.http.headers import (
    CONNECTION, CONNECTION_OPTIONS, CONTENT_LENGTH, EXPECT, HOST, REQUEST_SPECIAL,
    TRANSFER_ENCODING, UPGRADE, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
    connection_tokens, is_token_list_chunked,
)
from lbproxy.proxy.exchange import Exchange
from lbproxy.proxy.proxy_protocol import ProxyProtocolError, parse_proxy_header
from lbproxy.proxy.tls import sni_of

if TYPE_CHECKING:
    from lbproxy.proxy.frontend import Frontend
    from lbproxy.proxy.upstream import UpstreamProtocol

# Connection phases, for timeouts and error handling.
IDLE = 0        # between requests (keep-alive timeout)
HEAD = 1        # receiving a request head (http_request timeout -> 408)
BODY = 2        # receiving a request body (client timeout)
WAITING = 3     # request received, response not finished
TUNNEL = 4      # after a 101: raw bytes both ways (idle timeout: max of client, server)

# Pause reasons (bits): reading stops while any is set.
PAUSE_PIPELINE = 1      # a pipelined request waits for the one before it
PAUSE_UPSTREAM = 2      # the server does not read the request body fast enough

# Bytes of request line and headers tolerated beyond max_header_size before a
# partially received head is refused (the exact per-header check runs on parsed data).
HEAD_SLACK = 8192


class Rejected(Exception):
    """Raised inside a parser callback to stop parsing and answer `status`."""


class ClientProtocol(asyncio.Protocol):
    def __init__(self, frontend: Frontend) -> None:
        # global
        self.frontend = frontend
        self.state = frontend.state
        self.time = frontend.state.time
        # per connection
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.src = ""
        self.src_b = b""
        self.src_port = 0
        self.dst_port = 0
        self.ssl_fc = False
        self.ssl_fc_sni: str | None = None
        self.phase = IDLE
        self.deadline = 0.0
        self.paused = 0
        self.write_paused = False
        self.head_received = 0   # bytes since the current head began (partial-head guard)
        self.head_size = 0       # bytes of the current head's target and headers (exact)
        self.header_count = 0
        self.reject_status = 0
        self.parsing: Exchange | None = None    # request being received
        self.current: Exchange | None = None    # request being answered
        self.pipeline: deque[Exchange] | None = None
        self.entries: list | None = None         # stick-table entries this connection holds
        # bytes of a PROXY protocol header still being received (accept_proxy binds)
        self.proxy_header: bytes | None = b"" if frontend.config.accept_proxy else None
        self.peer_trusted = False                # peer in forwarded.trusted_proxies
        self.upgrading: Exchange | None = None   # an Upgrade request whose answer is pending
        self.tunnel: UpstreamProtocol | None = None   # the server end of a tunnel after 101

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.src = peer[0]
            self.src_port = peer[1]
        self.src_b = self.src.encode()
        self.peer_trusted = self.frontend.is_trusted(self.src)
        sock = transport.get_extra_info("sockname")
        if sock:
            self.dst_port = sock[1]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.ssl_fc = True
            self.ssl_fc_sni = sni_of(ssl_object)
        self.state.clients.add(self)
        self.frontend.connection_opened()
        self.deadline = self.time() + self.frontend.timeout_http_request

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.deadline = 0.0
        self.state.clients.discard(self)
        self.frontend.connection_closed()
        self._abandon(self.current, self.parsing)
        self.current = self.parsing = self.pipeline = None
        if self.entries is not None:
            for entry in self.entries:
                entry.on_disconnect()
            self.entries = None

    def data_received(self, data: bytes) -> None:
        self.frontend.bytes_in += len(data)
        if self.tunnel is not None:
            self.tunnel.transport.write(data)
            self.deadline = self.time() + self.tunnel_timeout
            return
        if self.upgrading is not None:           # bytes after an Upgrade request: held
            self.upgrading.body.append(data)
            self.upgrading.flush_body()
            return
        if self.proxy_header is not None:
            data = self._proxy_protocol(data)
            if not data:
                return
        phase = self.phase
        if phase == BODY:
            self.deadline = self.time() + self.frontend.timeout_client
        elif phase != WAITING:
            self.head_received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self._upgrade(data[upgrade.args[0]:]):
                return
        except httptools.HttpParserError:
            self.reject(self.reject_status or 400)
            return
        if self.phase == HEAD and self.head_received > self.frontend.max_header_size + HEAD_SLACK:
            self.reject(431)
            return
        current = self.current
        if current is not None:
            if not current.started:
                current.start()
            elif current.body:
                current.flush_body()

    def _proxy_protocol(self, data: bytes) -> bytes:
        """Consume the PROXY header: the addresses it carries replace the peer's."""
        buffered = self.proxy_header + data
        try:
            header = parse_proxy_header(buffered)
        except ProxyProtocolError:
            self.frontend.rejected += 1
            self.close()
            return b""
        if header is None:
            self.proxy_header = buffered
            return b""
        self.proxy_header = None
        if not header.local:
            self.src, self.src_port, self.dst_port = header.src, header.src_port, header.dst_port
            self.src_b = self.src.encode()
            self.peer_trusted = self.frontend.is_trusted(self.src)
        return buffered[header.consumed:]

    def pause_writing(self) -> None:
        self.write_paused = True
        current = self.current
        if current is not None and current.upstream is not None:
            current.upstream.read_paused = True
            current.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        current = self.current
        if current is not None and current.upstream is not None:
            current.upstream.read_paused = False
            current.upstream.transport.resume_reading()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.parsing = Exchange(self)
        self.header_count = 0
        self.head_size = 0
        if self.phase == IDLE:
            self.phase = HEAD
            self.deadline = self.time() + self.frontend.timeout_http_request

    def on_url(self, url: bytes) -> None:
        self.parsing.url_b += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.parsing
        if exchange.method_b:               # a trailer after a chunked body: dropped
            return
        self.header_count += 1
        self.head_size += len(name) + len(value) + 4
        frontend = self.frontend
        if self.header_count > frontend.max_headers or self.head_size > frontend.max_header_size:
            self._reject_in_parser(431)
        code = REQUEST_SPECIAL.get(name.lower())
        if code is None:
            exchange.hparts += (name, b": ", value, b"\r\n")
        elif code == HOST:
            if exchange.host_b is not None:
                self._reject_in_parser(400)
            exchange.host_b = value
            exchange.hparts += (name, b": ", value, b"\r\n")
        elif code == CONTENT_LENGTH:
            exchange.length = int(value)    # llhttp has validated it
        elif code == TRANSFER_ENCODING:
            if not is_token_list_chunked(value):
                self._reject_in_parser(501)
            exchange.chunked = True
        elif code == CONNECTION:
            for token in connection_tokens(value):
                if token not in CONNECTION_OPTIONS:
                    if exchange.extra_hop is None:
                        exchange.extra_hop = set()
                    exchange.extra_hop.add(token)
        elif code == X_FORWARDED_FOR:
            exchange.xff_b = value if exchange.xff_b is None else exchange.xff_b + b", " + value
        elif code == UPGRADE:
            exchange.upgrade_b = value
        elif code == EXPECT:
            exchange.expect_continue = value.strip().lower() == b"100-continue"
            exchange.hparts += (name, b": ", value, b"\r\n")
        elif code == X_FORWARDED_PROTO or code == X_FORWARDED_HOST:
            if not (frontend.x_forwarded_proto if code == X_FORWARDED_PROTO
                    else frontend.x_forwarded_host):
                exchange.hparts += (name, b": ", value, b"\r\n")
        # keep-alive, proxy-connection, te, trailer: hop-by-hop, dropped

    def on_headers_complete(self) -> None:
        exchange = self.parsing
        parser = self.parser
        frontend = self.frontend
        exchange.method_b = parser.get_method()
        exchange.http11 = parser.get_http_version() == "1.1"
        exchange.keep_alive = parser.should_keep_alive()
        exchange.is_head = exchange.method_b == b"HEAD"
        if self.head_size > frontend.max_header_size:     # a target longer than the limit
            self._reject_in_parser(431)
        if exchange.http11 and exchange.host_b is None:
            self._reject_in_parser(400)
        if exchange.chunked and not exchange.http11:
            self._reject_in_parser(400)
        if 0 < frontend.max_body_size < exchange.length:
            self._reject_in_parser(413)
        if self.peer_trusted and exchange.xff_b is not None:
            exchange.forwarded_src = frontend.forwarded_client(exchange.xff_b)
        self.head_received = 0
        self.phase = BODY
        self.deadline = self.time() + frontend.timeout_client
        if self.current is None:
            self.current = exchange
        else:
            if self.pipeline is None:
                self.pipeline = deque()
            self.pipeline.append(exchange)
            self.pause_reading(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        exchange.request_body(body)
        if 0 < self.frontend.max_body_size < exchange.body_size:
            self._reject_in_parser(413)

    def on_message_complete(self) -> None:
        self.parsing.request_done()
        self.parsing = None
        self.phase = WAITING
        self.deadline = 0.0

    # helpers used by exchanges

    def send(self, parts: list[bytes]) -> None:
        """Write parts in one call: one joined write is cheaper than writelines on uvloop."""
        transport = self.transport
        if transport is not None:
            transport.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def send_one(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None:
            transport.write(data)

    def exchange_done(self, exchange: Exchange) -> None:
        """`exchange` has its whole response: go on with the next request or close."""
        if exchange is not self.current:
            return
        self.current = None
        if self.transport is None:
            return
        if not exchange.keep_alive or self.state.stopping:
            self.close()
            return
        if self.reject_status:               # a bad request waited behind this one
            self.reject(self.reject_status)
            return
        pipeline = self.pipeline
        if pipeline:
            self.current = pipeline.popleft()
            if not pipeline:
                self.resume_reading(PAUSE_PIPELINE)
            self.current.start()
        elif self.parsing is None:
            self.phase = IDLE
            self.deadline = self.time() + self.frontend.timeout_keep_alive

    def hold_entry(self, entry: object) -> None:
        """A rule tracked `entry`: count this connection in it until the connection closes."""
        entries = self.entries
        if entries is None:
            entries = self.entries = []
        elif entry in entries:
            return
        entry.on_connect()
        entries.append(entry)

    def pause_reading(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def resume_reading(self, reason: int) -> None:
        was = self.paused
        self.paused &= ~reason
        if was and not self.paused and self.transport is not None:
            self.transport.resume_reading()

    def abort(self) -> None:
        """Cut the connection (a response was already partly sent)."""
        transport = self.transport
        if transport is not None:
            transport.abort()

    def close(self) -> None:
        transport = self.transport
        if transport is not None:
            transport.close()

    # errors and timeouts

    def _reject_in_parser(self, status: int) -> None:
        self.reject_status = status
        raise Rejected(status)

    def _abandon(self, *exchanges: Exchange | None) -> None:
        """Let `exchanges` and every queued pipelined one release their server resources."""
        for exchange in (*exchanges, *(self.pipeline or ())):
            if exchange is not None:
                exchange.abandon()

    def reject(self, status: int) -> None:
        """Answer a bad request with `status` and close; nothing more reaches a server."""
        self.frontend.rejected += 1
        current = self.current
        if current is not None and current.request_complete and current is not self.parsing:
            # A complete earlier request is answered first; the error follows it.
            self.reject_status = status
            self.pause_reading(PAUSE_PIPELINE)
            self._abandon(self.parsing)
            self.parsing = self.pipeline = None
            if not current.started:
                current.start()
            return
        self._abandon(current, self.parsing)
        self.current = self.parsing = self.pipeline = None
        if current is None or current.status == 0:
            self.frontend.responses[status // 100] += 1
            self.send_one(canned(status))
            self.close()
        else:
            self.abort()

    def timed_out(self) -> None:
        phase = self.phase
        if phase == IDLE or phase == TUNNEL:
            self.close()                    # nothing was asked: close quietly
        elif phase == HEAD or (phase == BODY and (self.current is None
                                                  or self.current.status == 0)):
            self.reject(408)
        else:
            self.abort()

    def _upgrade(self, rest: bytes) -> bool:
        """An Upgrade or CONNECT request ended the parse. CONNECT is refused. An Upgrade
        request is forwarded with its Upgrade header; what the client sends next is held
        for the server until the answer decides: 101 starts a tunnel, anything else ends
        the connection after it. Returns True when the caller has nothing left to do."""
        if self.parser.get_method() == b"CONNECT":
            # The CONNECT request is the last one parsed: drop it before answering.
            if self.pipeline:
                self.pipeline.pop()
            elif self.current is not None and not self.current.started:
                self.current = None
            self.reject(501)
            return True
        exchange = self.pipeline[-1] if self.pipeline else self.current
        if exchange is not None and exchange.upgrade_b is not None:
            exchange.keep_alive = False
            self.upgrading = exchange
            if rest:
                exchange.body.append(rest)
            return False
        self.parser = httptools.HttpRequestParser(self)
        if rest:
            self.data_received(rest)
            return True
        return False

    def start_tunnel(self, upstream: UpstreamProtocol) -> None:
        """The server answered 101: relay raw bytes both ways from now on."""
        self.upgrading = None
        self.tunnel = upstream
        self.phase = TUNNEL
        self.deadline = self.time() + self.tunnel_timeout

    @property
    def tunnel_timeout(self) -> float:
        current = self.current
        server_timeout = current.backend.server_timeout if current is not None else 0.0
        return max(self.frontend.timeout_client, server_timeout)
