"""HTTP/1.1 downstream: one asyncio Protocol per client connection.

It parses requests with httptools, enforces the strict checks and limits of
docs/configuration.md before anything reaches a server, answers pipelined requests in
order, keeps the connection alive between requests, and frames each response for the
client (Content-Length, chunked, or close-delimited for HTTP/1.0). It is the Downstream
(lbproxy/proxy/downstream.py) of the exchanges it creates: an exchange never looks
inside it. Parser callbacks stay small: they fill the Exchange; dispatch happens after
each parse, so a request whose body turns out malformed in the same packet never
reaches a server.

The connection's phases and their timeouts (lbproxy/proxy/phases.py; `_enter` moves
between them, `timed_out` says what a timeout means in each):

    NEW      accepted, nothing received      http_request    timeout: close quietly
    IDLE     between requests                http_keep_alive timeout: close quietly
    HEAD     receiving a request head        http_request    timeout: 408, close
    BODY     receiving a request body        client (each read restarts it): 408 or cut
    WAITING  request received, answering     none here (the server side has its own)
    TUNNEL   after a 101: raw bytes          max(client, server), each read restarts it

A connection closed while the client is still sending (a request refused, or answered by
the server, before its end) lingers, as nginx's does: closed with input unread, the kernel
would answer the client with a reset that can destroy the response before the client
reads it. So the response is followed by a FIN (where the transport can half-close), and
what the client still sends is read and dropped, never parsed, until it closes too, is
quiet for LINGER seconds, or LINGER_MAX has passed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import httptools

from lbproxy.http.answers import STATUS_LINES, Answer, error_answer, status_line
from lbproxy.http.headers import (CONNECTION, CONTENT_LENGTH, EXPECT, HOST,
                                  PLAIN_REQUEST_HEADERS, PROXY_CONNECTION, REQUEST_SPECIAL,
                                  REQUEST_SPECIAL_AS_SENT, REQUEST_SPECIAL_LENGTHS,
                                  TRANSFER_ENCODING, UPGRADE, X_FORWARDED_FOR, X_FORWARDED_HOST,
                                  X_FORWARDED_PROTO,
                                  connection_header, is_token_list_chunked, upgrade_protocols)
from lbproxy.http.target import BadTarget, same_host, split_absolute
from lbproxy.http.termination import CLIENT_TIMEOUT, REFUSALS
from lbproxy.http2.frames import PREFACE
from lbproxy.proxy.downstream import hold, release
from lbproxy.proxy.exchange import Exchange
from lbproxy.proxy.flow import HELD, PIPELINE, FlowControl
from lbproxy.proxy.phases import BODY, HEAD, IDLE, NEW, TUNNEL, WAITING, Phase
from lbproxy.proxy.proxy_protocol import ProxyHeader, ProxyProtocolError, parse_proxy_header
from lbproxy.proxy.tls import sni_of

if TYPE_CHECKING:
    from lbproxy.proxy.frontend import Frontend
    from lbproxy.proxy.upstream import UpstreamProtocol


# Bytes held after an Upgrade request before reading pauses: what the client may send
# before the 101 arrives (a WebSocket client's first frames).
HELD_LIMIT = 64 * 1024
LINGER = 2.0           # seconds of quiet that end a lingering close
LINGER_MAX = 10.0      # seconds a lingering close lasts at most


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
SLASH = ord("/")


class Rejected(Exception):
    """Raised inside a parser callback to stop parsing and answer `status`."""


class ClientProtocol:
    """An asyncio Protocol (without the base class, so that Cython can compile it)."""

    def __init__(self, frontend: Frontend, h2c: bool = False, port: int = 0) -> None:
        # global
        self.frontend = frontend
        self.state = frontend.state
        self.time = frontend.state.time
        self.timeouts = frontend.phase_timeouts      # kept up to date by a reload
        # per connection
        self.transport: asyncio.Transport | None = None
        self.closed = True               # Downstream: the client is gone (or not yet here)
        self.write_paused = False        # Downstream: the client does not read what we send
        self.flow = FlowControl()
        self.parser = httptools.HttpRequestParser(self)
        self.src = ""
        self.src_b = b""
        self.src_port = 0
        self.dst_port = port     # the bind's: no getsockname() per connection
        self.ssl_fc = False
        self.ssl_fc_sni: str | None = None
        self.phase = NEW
        self.deadline = 0.0
        # bytes since the parser last showed progress: the head so far, or the chunk
        # framing and trailers since the last body bytes (the unfinished-line guard)
        self.unparsed = 0
        # what the current head may still take (its target and headers, exactly; the
        # frontend's max_header_size and max_headers): below 0 it is refused with 431
        self.head_left = 0
        self.headers_left = 0
        self.reject_status = 0   # the status of a refused request (a parser callback's)
        self.refused: Exchange | None = None    # it waits behind earlier ones to be answered
        self.parsing: Exchange | None = None    # request being received
        self.current: Exchange | None = None    # request being answered
        self.pipeline: deque[Exchange] | None = None
        self.entries: list | None = None         # stick-table entries this connection holds
        # bytes of a PROXY protocol header still being received (accept_proxy binds)
        self.proxy_header: bytes | None = b"" if frontend.config.accept_proxy else None
        self.proxied: ProxyHeader | None = None  # one read before TLS (proxy/proxied_tls.py)
        self.peer_trusted = False                # peer in forwarded.trusted_proxies
        self.h2c = h2c                           # the bind takes HTTP/2 with prior knowledge
        self.upgrading: Exchange | None = None   # an Upgrade request whose answer is pending
        self.held: bytes = b""                   # what the client sent after it, unparsed
        self.tunnel: UpstreamProtocol | None = None   # the server end of a tunnel after 101
        # llhttp skips the body of a request that asks for an upgrade; when the upgrade is
        # declined, a new parser is primed with this head so that it parses that body
        self.body_head: bytes | None = None
        self.priming = False
        self.linger_end = 0.0                    # > 0: closing, input read and dropped
        # per response: bytes for the client, written in one call by flush()
        self.out: list[bytes] = []
        self.chunked_out = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self.flow.transport = transport  # type: ignore[assignment]
        self.closed = False
        peer = transport.get_extra_info("peername")
        if peer:
            self.src = peer[0]
            self.src_port = peer[1]
        self.src_b = self.src.encode()
        self.peer_trusted = self.frontend.is_trusted(self.src)
        if self.proxied is not None:
            self._take_addresses(self.proxied)
        ssl_object = transport.get_extra_info("ssl_object")
        self.state.clients.add(self)
        self.frontend.connection_opened()
        if ssl_object is not None:
            self.ssl_fc = True
            self.ssl_fc_sni = sni_of(ssl_object)
            if ssl_object.selected_alpn_protocol() == "h2":
                self.frontend.h2_protocol(self.frontend).adopt(self, b"")
                return
        self._enter(NEW)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = self.flow.transport = None
        self.closed = True
        self.deadline = 0.0
        self.state.clients.discard(self)
        self.frontend.connection_closed()
        self._lost(self.current, self.parsing, self.refused)
        self.current = self.parsing = self.pipeline = self.refused = None
        release(self.entries)
        self.entries = None
        self.parser = None       # it holds our callbacks: no cycle (lbproxy/runtime/heap.py)

    def data_received(self, data: bytes) -> None:
        self.frontend.bytes_in += len(data)
        if self.linger_end:
            self.deadline = min(self.time() + LINGER, self.linger_end)
            return
        if self.tunnel is not None:
            self.tunnel.tunnel_data(data)
            self.deadline = self.time() + self.tunnel_timeout
            return
        if self.upgrading is not None:
            self._hold(data)
            return
        if self.proxy_header is not None:
            data = self._proxy_protocol(data)
            if not data:
                return
        phase = self.phase
        if phase == BODY:
            self.deadline = self.time() + self.timeouts[BODY]     # each read restarts it
        elif phase == NEW and self.h2c and data[:4] == PREFACE[:4]:
            self.frontend.h2_protocol(self.frontend).adopt(self, data)
            return
        if phase != WAITING:
            self.unparsed += len(data)
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        """Feed `data` to the parser, then start or feed the request being answered."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            rest = self._parser_stopped(data[upgrade.args[0]:])
            if rest:
                self._parse(rest)
                return
        except httptools.HttpParserError:
            self.reject(self.reject_status or 400)
            return
        if self.unparsed > self.frontend.max_unparsed:
            phase = self.phase
            if phase == HEAD or phase == BODY:
                self.reject(431 if phase == HEAD else 400)
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
        self._take_addresses(header)
        return buffered[header.consumed:]

    def behind_proxy(self, header: ProxyHeader) -> None:
        """A TLS bind's listener read the PROXY header before the handshake."""
        self.proxy_header = None
        self.proxied = header

    def _take_addresses(self, header: ProxyHeader) -> None:
        """The addresses a PROXY header carries replace the peer's (unless LOCAL)."""
        if not header.local:
            self.src, self.src_port, self.dst_port = header.src, header.src_port, header.dst_port
            self.src_b = self.src.encode()
            self.peer_trusted = self.frontend.is_trusted(self.src)

    def eof_received(self) -> None:
        """The client shut its side down: the transport closes (asyncio's default)."""

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.current is not None:
            self.current.pause_response()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.current is not None:
            self.current.resume_response()

    # phases

    def _enter(self, phase: Phase) -> None:
        """Move to `phase` and arm its timeout (the table in the module docstring)."""
        self.phase = phase
        timeout = self.timeouts[phase]
        self.deadline = self.time() + timeout if timeout else 0.0

    @property
    def tunnel_timeout(self) -> float:
        current = self.current
        server_timeout = current.backend.server_timeout if current is not None else 0.0
        return max(self.timeouts[TUNNEL], server_timeout)

    def timed_out(self) -> None:
        phase = self.phase
        if self.linger_end:
            if self.transport is not None:
                self.transport.close()      # the lingering close is over
        elif phase == NEW or phase == IDLE or phase == TUNNEL:
            self.close()                    # nothing was asked: close quietly
        elif phase == HEAD or (phase == BODY and (self.current is None
                                                  or self.current.status == 0)):
            self.reject(408)
        else:
            if self.current is not None:
                self.current.set_termination("c", CLIENT_TIMEOUT)
            self.abort()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.priming:
            return
        self.parsing = Exchange(self)
        self._fresh_budget()
        if self.phase <= IDLE:
            self._enter(HEAD)

    def on_url(self, url: bytes) -> None:
        if self.priming:
            return
        self.parsing.url_b += url
        self.head_left -= len(url)

    def _fresh_budget(self) -> None:
        """The head's limits afresh: for each message, its trailers, and a head after
        an upgrade was declined."""
        frontend = self.frontend
        self.head_left = frontend.max_header_size
        self.headers_left = frontend.max_headers

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers_left -= 1
        self.head_left -= len(name) + len(value) + 4
        if self.headers_left < 0 or self.head_left < 0:
            self._reject_in_parser(431)
        exchange = self.parsing
        if exchange.method_b:               # a trailer after a chunked body: dropped
            return
        if name in PLAIN_REQUEST_HEADERS:   # the most common names, as clients send them
            exchange.hparts.extend((name, b": ", value, b"\r\n"))
            return
        code = REQUEST_SPECIAL_AS_SENT.get(name)
        if code is None and len(name) in REQUEST_SPECIAL_LENGTHS:
            code = REQUEST_SPECIAL.get(name.lower())
        if code is None:
            exchange.hparts.extend((name, b": ", value, b"\r\n"))
        elif code == HOST:
            if exchange.host_b is not None:
                self._reject_in_parser(400)
            exchange.host_b = value
            exchange.hparts.extend((name, b": ", value, b"\r\n"))
        elif code == CONTENT_LENGTH:
            exchange.length = int(value)    # llhttp has validated it
        elif code == TRANSFER_ENCODING:
            if not is_token_list_chunked(value):
                self._reject_in_parser(501)
            exchange.chunked = True
        elif code == CONNECTION:
            tokens, exchange.extra_hop = connection_header(value, exchange.extra_hop)
            if exchange.connection is None:
                exchange.connection = tokens
            else:
                exchange.connection += tokens
        elif code == X_FORWARDED_FOR:
            exchange.xff_b = value if exchange.xff_b is None else exchange.xff_b + b", " + value
        elif code == UPGRADE:
            exchange.upgrade_b = value if exchange.upgrade_b is None \
                else exchange.upgrade_b + b", " + value
        elif code == EXPECT:
            exchange.expect_continue = value.strip().lower() == b"100-continue"
            exchange.hparts.extend((name, b": ", value, b"\r\n"))
        elif code == X_FORWARDED_PROTO or code == X_FORWARDED_HOST:
            frontend = self.frontend
            if not (frontend.x_forwarded_proto if code == X_FORWARDED_PROTO
                    else frontend.x_forwarded_host):
                exchange.hparts.extend((name, b": ", value, b"\r\n"))
        elif code == PROXY_CONNECTION:      # dropped, but its tokens count for llhttp
            if exchange.connection is None:
                exchange.connection = ()
        # keep-alive, te, trailer, http2-settings: hop-by-hop, dropped

    def on_headers_complete(self) -> None:
        if self.priming:
            return
        exchange = self.parsing
        parser = self.parser
        frontend = self.frontend
        method = exchange.method_b = parser.get_method()
        keep_alive = parser.should_keep_alive()
        # llhttp accepts only 0.9, 1.0, 1.1 and 2.0, and keeps any but 1.1 alive only for
        # a `Connection` or `Proxy-Connection: keep-alive`: without either header, keep-alive
        # means HTTP/1.1, and the version need not be asked (formatting it costs ~1 µs)
        if not (keep_alive and exchange.connection is None):
            version = parser.get_http_version()
            if version != "1.1":
                if version != "1.0":            # HTTP/0.9-style lines, HTTP/2.0 over HTTP/1
                    self._reject_in_parser(505 if version >= "2" else 400)
                exchange.http11 = False
                exchange.expect_continue = False    # RFC 9110 §10.1.1: no 100 for HTTP/1.0
        # HTTP/1.0 keeps alive only with `Connection: keep-alive` (llhttp also takes the
        # obsolete Proxy-Connection for Connection: where they differ, the connection closes)
        exchange.keep_alive = keep_alive and (
            exchange.http11 or (exchange.connection is not None
                                and b"keep-alive" in exchange.connection))
        exchange.is_head = method == b"HEAD"
        if self.head_left < 0:                          # a target longer than the limit
            self._reject_in_parser(431)
        if method == b"CONNECT":
            self._reject_in_parser(501)
        if exchange.http11 and exchange.host_b is None:
            self._reject_in_parser(400)
        if exchange.url_b[0] != SLASH:
            self._check_target(exchange)
        if exchange.chunked and not exchange.http11:
            self._reject_in_parser(400)
        if 0 < frontend.max_body_size < exchange.length:
            self._reject_in_parser(413)
        if exchange.upgrade_b is not None:
            self._check_upgrade(exchange)
        if self.peer_trusted and exchange.xff_b is not None:
            exchange.forwarded_src = frontend.forwarded_client(exchange.xff_b)
        self.unparsed = 0
        if exchange.chunked:
            self._fresh_budget()                    # trailers count afresh
        if exchange.chunked or exchange.length > 0:
            self._enter(BODY)                       # (else on_message_complete follows now)
        if self.current is None:
            self.current = exchange
        else:
            if self.pipeline is None:
                self.pipeline = deque()
            self.pipeline.append(exchange)
            self.flow.pause(PIPELINE)

    def on_body(self, body: bytes) -> None:
        self.unparsed = 0
        exchange = self.parsing
        exchange.request_body(body)
        if 0 < self.frontend.max_body_size < exchange.body_size:
            self._reject_in_parser(413)

    def on_message_complete(self) -> None:
        if self.body_head is not None:      # llhttp skipped the body: it is parsed later
            return
        self.parsing.request_done()
        self.parsing = None
        self._enter(WAITING)

    # Downstream: what the exchanges ask of this connection

    def pause_reading(self, reason: int) -> None:
        self.flow.pause(reason)

    def resume_reading(self, reason: int) -> None:
        self.flow.resume(reason)

    def informational(self, status: int) -> None:
        """A 100 Continue from the server (the only 1xx relayed)."""
        self.out.append(CONTINUE)

    def response_head(self, exchange: Exchange, status: int, headers: list[bytes],
                      length: int, end_stream: bool) -> None:
        """Frame the response for the client: the server's Content-Length, else chunked
        for HTTP/1.1 or the close for HTTP/1.0; decide whether the connection stays."""
        out = self.out
        out.append(STATUS_LINES[status] if status < 600 else status_line(status))
        out += headers
        self.chunked_out = False
        if exchange.is_head or status == 204 or status == 304 or length >= 0:
            pass
        elif exchange.http11:
            out.append(b"transfer-encoding: chunked\r\n")
            self.chunked_out = True
        else:
            exchange.keep_alive = False      # HTTP/1.0 client: the close delimits the body
        if not (exchange.keep_alive and exchange.request_complete) or self.state.stopping:
            exchange.keep_alive = False
            out.append(b"connection: close\r\n")
        elif not exchange.http11:
            out.append(b"connection: keep-alive\r\n")
        out.append(b"\r\n")

    def response_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Trailers from an HTTP/2 server: HTTP/1.1 clients do not get them."""

    def response_body(self, data: bytes) -> None:
        if self.chunked_out:
            self.out += (b"%x\r\n" % len(data), data, b"\r\n")
        else:
            self.out.append(data)

    def flush(self, end: bool) -> None:
        """Write what the last parse of the server's bytes produced, in one call (one
        joined write is cheaper than writelines on uvloop); at the `end` of the response,
        the last chunk of a chunked one."""
        out = self.out
        if end and self.chunked_out:
            out.append(b"0\r\n\r\n")
        if out:
            transport = self.transport
            if transport is not None:
                transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def answer(self, exchange: Exchange, answer: Answer) -> int:
        """A response of the proxy's own; the connection stays only if the request was
        complete (nothing of it is left unread) and the proxy is not stopping."""
        keep = exchange.keep_alive = (exchange.keep_alive and exchange.request_complete
                                      and not self.state.stopping)
        transport = self.transport
        if transport is None:
            return 0
        data = answer.h1(keep, exchange.is_head)
        transport.write(data)
        return len(data)

    def start_tunnel(self, upstream: UpstreamProtocol, data: bytes) -> None:
        """The server answered 101 (its head and first bytes are `data`): relay raw bytes
        both ways from now on, starting with those the client sent while it waited."""
        self.out.append(data)
        self.flush(False)
        self.upgrading = None
        self.tunnel = upstream
        self._enter(TUNNEL)
        self.deadline = self.time() + self.tunnel_timeout
        held, self.held = self.held, b""
        if held:
            upstream.tunnel_data(held)
        self.flow.resume(HELD)

    def tunnel_data(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None:
            transport.write(data)
        self.deadline = self.time() + self.tunnel_timeout

    def hold_entry(self, entry: object) -> None:
        """A rule tracked `entry`: count this connection in it until the connection closes."""
        self.entries = hold(self.entries, entry)

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
        pipeline = self.pipeline
        if pipeline:
            self.current = pipeline.popleft()
            if not pipeline:
                self.flow.resume(PIPELINE)
            self.current.start()
        elif self.refused is not None:       # a bad request waited behind this one
            self._refuse(self.refused, self.reject_status)
        elif self.parsing is None:
            self._enter(IDLE)
            if exchange is self.upgrading:
                self._upgrade_declined()

    def reloaded(self) -> None:
        """A reload changed nothing an HTTP/1.1 connection must act on: its frontend was
        reconfigured in place."""

    def close_if_idle(self) -> None:
        """Graceful stop: a connection between requests closes now, the others after
        their response (exchange_done sees `stopping`)."""
        if self.phase <= IDLE and self.current is None:
            self.close()

    def abort(self) -> None:
        """Cut the connection (a response was already partly sent)."""
        transport = self.transport
        if transport is not None:
            transport.abort()

    def close(self) -> None:
        transport = self.transport
        if transport is None or self.linger_end:
            return
        if self.phase == HEAD or self.phase == BODY:    # the client is still sending
            self._linger(transport)
        else:
            transport.close()

    def _linger(self, transport: asyncio.Transport) -> None:
        """Close after what the client still sends (the module's text)."""
        now = self.time()
        self.linger_end = now + LINGER_MAX
        self.deadline = now + LINGER
        self.flow.clear()                   # reading may be paused: it must go on
        if transport.can_write_eof():
            transport.write_eof()

    # refusing bad requests

    def _reject_in_parser(self, status: int) -> None:
        self.reject_status = status
        raise Rejected(status)

    def _lost(self, *exchanges: Exchange | None) -> None:
        """The connection is gone: `exchanges` and every pipelined one release what they
        hold, and each is logged."""
        for exchange in (*exchanges, *(self.pipeline or ())):
            if exchange is not None:
                exchange.lost()

    def reject(self, status: int) -> None:
        """Answer a bad request with `status` and close; nothing more reaches a server.
        Complete requests received before it are answered first, in order."""
        self.frontend.rejected += 1
        current = self.current
        parsing = self.parsing
        refused = parsing if parsing is not None else Exchange(self)
        refused.set_termination("c" if status == 408 else "P", REFUSALS[status])
        refused.abandon()
        self.parsing = None
        if current is not None and current.request_complete and current is not parsing:
            self.reject_status = status
            self.refused = refused
            self.flow.pause(PIPELINE)
            if self.pipeline and self.pipeline[-1] is parsing:
                self.pipeline.pop()
            if not current.started:
                current.start()
            return
        self._lost(current if current is not refused else None)
        self.current = self.pipeline = None
        if refused.status == 0:
            self._refuse(refused, status)
        else:                                 # its response has started: cut it off
            refused.lost()
            self.abort()

    def _refuse(self, refused: Exchange, status: int) -> None:
        """Send the error page of a refused request, log it, and close."""
        self.frontend.responses[status // 100] += 1
        refused.status = status
        transport = self.transport
        if transport is not None:
            data = error_answer(status).h1(keep_alive=False)
            transport.write(data)
            refused.resp_bytes = len(data)
        refused.lost()
        self.close()

    # request targets and upgrades

    def _check_target(self, exchange: Exchange) -> None:
        """A target not in origin form: `*` for OPTIONS, or an absolute-form http(s) URL,
        forwarded in origin form with its authority as the host (RFC 9112 §3.2.2); a Host
        header that names another host is refused rather than forwarded ambiguously."""
        url = exchange.url_b
        if url == b"*":
            if exchange.method_b != b"OPTIONS":
                self._reject_in_parser(400)
            return
        try:
            scheme, authority, origin = split_absolute(url)
        except BadTarget:
            self._reject_in_parser(400)
        if exchange.host_b is None:             # HTTP/1.0: the target names the host
            exchange.host_b = authority
            exchange.hparts += (b"host", b": ", authority, b"\r\n")
        elif not same_host(authority, exchange.host_b, scheme):
            self._reject_in_parser(400)
        exchange.url_b = origin

    def _check_upgrade(self, exchange: Exchange) -> None:
        """Keep Upgrade only for a real protocol switch (http/headers.upgrade_protocols);
        otherwise it is a hop-by-hop header to drop. llhttp stops after any request with
        Upgrade and `Connection: upgrade`, skipping its body: when such an upgrade is
        declined, `body_head` lets a new parser take that body up."""
        has_body = exchange.chunked or exchange.length > 0
        exchange.upgrade_b = upgrade_protocols(exchange.upgrade_b, exchange.connection,
                                               exchange.http11, has_body)
        if exchange.upgrade_b is None and has_body and self.parser.should_upgrade():
            self.body_head = (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                              if exchange.chunked else
                              b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % exchange.length)

    def _parser_stopped(self, rest: bytes) -> bytes:
        """llhttp stopped after a request that asked to upgrade; `rest` is what followed,
        unparsed. Until the server answers 101 those bytes are HTTP, so they are held, never
        passed on. For a declined upgrade, parsing goes on with a new parser: the bytes to
        parse are returned."""
        exchange = self.pipeline[-1] if self.pipeline else self.current
        if exchange is not None and exchange.upgrade_b is not None:
            self.upgrading = exchange
            self._hold(rest)
            return b""
        self.parser = httptools.HttpRequestParser(self)
        body_head = self.body_head
        if body_head is not None:
            self.priming = True
            try:
                self.parser.feed_data(body_head)
            finally:
                self.priming = False
                self.body_head = None
                self._fresh_budget()
        return rest

    def _hold(self, data: bytes) -> None:
        held = self.held = self.held + data
        if len(held) > HELD_LIMIT:
            self.flow.pause(HELD)

    def _upgrade_declined(self) -> None:
        """The server answered an Upgrade request without switching: what the client sent
        after it is the next request."""
        self.upgrading = None
        self.parser = httptools.HttpRequestParser(self)
        held, self.held = self.held, b""
        self.flow.resume(HELD)
        if held:
            self.unparsed = len(held)
            self._parse(held)
