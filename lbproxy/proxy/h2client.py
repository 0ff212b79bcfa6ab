"""HTTP/2 downstream: one asyncio Protocol per client connection, one Downstream per stream.

A connection becomes HTTP/2 when TLS negotiated `h2` by ALPN, or when a cleartext bind
with `h2c: true` receives the client preface; the HTTP/1.1 protocol that accepted it
hands the transport over (`adopt`). The framing is lbproxy/http2/connection.py; here
each stream's request is read into an Exchange (lbproxy/http2/messages.py checks it) and
the stream is that exchange's Downstream (`H2Stream`): the response arrives as data and
goes out as HEADERS, DATA and trailers, with the peer's flow-control windows as back-
pressure on the server side, and the request body's window given back only as fast as
the server takes it.

Timeouts: `http_request` until the first request, `http_keep_alive` while no stream is
open (then GOAWAY and close), `client` while a stream is receiving its body. Reload and
graceful stop send GOAWAY: open streams finish, then the connection closes, lingering
(`linger`) so that what the client still sends cannot turn the close into a reset.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from lbproxy.http.answers import Answer, error_answer
from lbproxy.http.termination import CLIENT_TIMEOUT, REFUSALS
from lbproxy.http2 import frames as f
from lbproxy.http2.connection import HIGH_WATER, Connection, Stream
from lbproxy.http2.messages import (Header, Malformed, head_of, read_again, read_request,
                                    response_headers)
from lbproxy.proxy.downstream import hold, release
from lbproxy.proxy.exchange import Exchange

LINGER = 1.0        # seconds of quiet after which a closing connection stops reading (and dropping) input

if TYPE_CHECKING:
    from lbproxy.proxy.client import ClientProtocol
    from lbproxy.proxy.frontend import Frontend
    from lbproxy.proxy.upstream import UpstreamProtocol


class H2ClientProtocol:
    """An asyncio Protocol (without the base class, so that Cython can compile it)."""

    def __init__(self, frontend: Frontend) -> None:
        # global
        self.frontend = frontend
        self.state = frontend.state
        self.time = frontend.state.time
        # per connection
        self.transport: asyncio.Transport | None = None
        self.h2 = Connection(self, client=False, settings=frontend.h2_settings,
                             clock=self.time, abuse=frontend.h2_abuse)
        self.src = ""
        self.src_b = b""
        self.src_port = 0
        self.dst_port = 0
        self.ssl_fc = False
        self.ssl_fc_sni: str | None = None
        self.deadline = 0.0
        self.write_paused = False
        self.write_pending = False
        self.peer_trusted = False
        self.streams: set[H2Stream] = set()      # streams with an exchange under way
        self.entries: list | None = None         # stick-table entries this connection holds
        self.draining = False                    # GOAWAY sent: close when streams are done
        self.linger_end = 0.0                    # closing: input is dropped until then at the latest
        # the last request's header list (as the HPACK decoder gave it) and what it said
        self.last_headers: list[Header] | None = None
        self.last_head: tuple = ()
        # the last response head (status, header quadruples), its HPACK block, and the
        # encoder's generation it is valid in (see response_block)
        self.last_response: tuple[int, list[bytes]] = (0, [])
        self.last_block = b""
        self.last_generation = -1

    def adopt(self, client: ClientProtocol, data: bytes) -> None:
        """Take over a connection the HTTP/1.1 protocol accepted (ALPN h2, or the h2c
        preface in `data`): its facts, its place in the proxy's counts, its transport."""
        transport = client.transport
        for name in ("src", "src_b", "src_port", "dst_port", "ssl_fc", "ssl_fc_sni",
                     "peer_trusted"):
            setattr(self, name, getattr(client, name))
        self.state.clients.discard(client)
        client.transport = client.flow.transport = None
        client.closed = True
        self.transport = transport
        self.state.clients.add(self)
        self.frontend.h2_connections += 1
        transport.set_protocol(self)
        self.h2.start()
        self.deadline = self.time() + self.frontend.timeout_http_request
        if data:
            self.data_received(data)
        else:
            self.write()

    # asyncio callbacks

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.deadline = 0.0
        self.state.clients.discard(self)
        self.frontend.connection_closed()
        for stream in list(self.streams):
            stream.gone()
        self.streams.clear()
        release(self.entries)
        self.entries = None

    def data_received(self, data: bytes) -> None:
        self.frontend.bytes_in += len(data)
        if self.linger_end:             # closing: what still comes is dropped
            self.deadline = min(self.time() + LINGER, self.linger_end)
            return
        self.h2.receive(data)
        if self.transport is None or self.h2.closed:
            return
        timeout = self.frontend.timeout_client if self.streams else \
            self.frontend.timeout_keep_alive
        self.deadline = self.time() + timeout
        self.write()

    def eof_received(self) -> None:
        """The client shut its side down: the transport closes (asyncio's default)."""

    def pause_writing(self) -> None:
        self.write_paused = True
        for stream in self.streams:
            stream.exchange.pause_response()

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams):
            if not stream.stream.paused:
                stream.exchange.resume_response()

    def write(self) -> None:
        out = self.h2.out
        if out and self.transport is not None:
            self.transport.write(bytes(out))
            out.clear()

    def write_soon(self) -> None:
        """Write at the end of this turn of the event loop: responses of many streams
        finishing together go out in one write, not one each."""
        if not self.write_pending:
            self.write_pending = True
            self.state.loop.call_soon(self._write_now)

    def _write_now(self) -> None:
        self.write_pending = False
        self.write()

    # the connection's life

    def timed_out(self) -> None:
        if self.linger_end:
            self.close()
            return
        if not self.streams:
            self.goaway()
            return
        for stream in list(self.streams):          # a client too slow sending a body
            if not stream.exchange.request_complete:
                stream.too_slow()
        self.write()
        self.deadline = 0.0       # streams waiting for a server: the server side's timeout

    def goaway(self) -> None:
        """Reload or graceful stop: no new streams; those open finish, then we close."""
        self.draining = True
        self.h2.goaway()
        self.write()
        if not self.streams:
            self.linger()

    def close_if_idle(self) -> None:
        self.goaway()

    def reloaded(self) -> None:
        """After a reload, GOAWAY: streams open finish here, new ones come on a new
        connection with the new settings."""
        self.goaway()

    def stream_done(self, stream: H2Stream) -> None:
        self.streams.discard(stream)
        if self.h2.out:
            self.write_soon()
        if not self.streams:
            if self.draining:
                self.linger()
            elif self.transport is not None:
                self.deadline = self.time() + self.frontend.timeout_keep_alive

    def linger(self) -> None:
        """End the connection without a reset. The FIN follows the last frames, and what the
        client still sends (WINDOW_UPDATEs for the data it reads, a stream it opened before
        it saw the GOAWAY) is read and dropped until it closes too, or is quiet for LINGER s,
        or its `client` timeout passes. A plain close with input still arriving makes the
        kernel answer with a reset and drop the responses it had yet to send."""
        transport = self.transport
        if transport is None or self.linger_end:
            return
        self.write()
        if transport.can_write_eof():             # TLS has no half-close: it just waits
            transport.write_eof()
        self.draining = True
        now = self.time()
        self.linger_end = now + max(LINGER, self.frontend.timeout_client)
        self.deadline = now + LINGER

    def close(self) -> None:
        if self.transport is not None:
            self.write()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def hold_entry(self, entry: object) -> None:
        self.entries = hold(self.entries, entry)

    def response_block(self, status: int, hparts: list[bytes]) -> bytes:
        """The HPACK block of a response head. A head like the one before (same status,
        same fields: a server answering alike, gRPC) costs one comparison, as long as the
        encoder's table did not change meanwhile and that block only referred to it; a
        different head, a failed one."""
        encoder = self.h2.encoder
        last_status, last_parts = self.last_response
        if (status == last_status and encoder.generation == self.last_generation
                and hparts == last_parts):
            return self.last_block
        generation = encoder.generation
        block = encoder.encode(response_headers(status, hparts))
        if encoder.generation == generation:   # (a block that adds to the table is
            self.last_response = (status, hparts[:])     # never sent twice)
            self.last_block = block
            self.last_generation = generation
        return block

    # the HTTP/2 connection's callbacks

    def on_headers(self, stream: Stream, headers: list[Header], end_stream: bool) -> None:
        downstream = stream.handle
        if downstream is not None:                 # trailers of the request
            downstream.request_trailers(headers)
            return
        if self.draining:
            self.h2.reset(stream, f.REFUSED_STREAM)
            return
        downstream = stream.handle = H2Stream(self, stream)
        downstream.start(headers, end_stream)

    def on_data(self, stream: Stream, data: bytes, end_stream: bool) -> None:
        downstream = stream.handle
        if downstream is None:
            self.h2.ack(stream, len(data))
            return
        downstream.request_data(data, end_stream)

    def on_reset(self, stream: Stream, code: int) -> None:
        downstream = stream.handle
        if downstream is not None:
            downstream.gone()

    def on_drained(self, stream: Stream) -> None:
        downstream = stream.handle
        if downstream is not None and not self.write_paused:
            downstream.exchange.resume_response()

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        self.draining = True
        if not self.streams:
            self.linger()

    def on_error(self, code: int, reason: str) -> None:
        """A connection error: the GOAWAY goes out, then the connection lingers: closing
        with unread data would reset it and the client might never read the GOAWAY."""
        if code != f.ENHANCE_YOUR_CALM:           # (the HTTP/2 core counted those)
            self.frontend.h2_protocol_errors += 1
        for stream in list(self.streams):
            stream.gone()
        self.linger()

    def on_oversized(self, stream: Stream) -> None:
        """A header list over `max_header_list_size`: 431, and the stream ends."""
        self.h2.note("header_list_size")
        frontend = self.frontend
        frontend.rejected += 1
        frontend.responses[4] += 1
        answer = error_answer(431)
        self.h2.send_headers(stream, [(b":status", b"431"),
                                        (b"content-type", answer.content_type),
                                        (b"content-length", b"%d" % len(answer.body))], False)
        self.h2.send_data(stream, answer.body, end_stream=True)
        if not stream.recv_closed:
            self.h2.reset(stream, f.NO_ERROR)
        exchange = H2Stream(self, stream).exchange      # for its log line
        exchange.set_termination("P", REFUSALS[431])
        exchange.status = 431
        exchange.resp_bytes = len(answer.body)
        exchange.lost()


class H2Stream:
    """One stream: the Downstream (lbproxy/proxy/downstream.py) of its exchange."""

    __slots__ = ("owner", "stream", "exchange", "frontend", "state", "time", "src", "src_b",
                 "src_port", "dst_port", "ssl_fc", "ssl_fc_sni", "peer_trusted", "closed",
                 "ended", "body", "received")

    def __init__(self, protocol: H2ClientProtocol, stream: Stream) -> None:
        self.owner = protocol
        self.stream = stream
        self.frontend = protocol.frontend
        self.state = protocol.state
        self.time = protocol.time
        self.src, self.src_b = protocol.src, protocol.src_b
        self.src_port, self.dst_port = protocol.src_port, protocol.dst_port
        self.ssl_fc, self.ssl_fc_sni = protocol.ssl_fc, protocol.ssl_fc_sni
        self.peer_trusted = protocol.peer_trusted
        self.closed = False
        self.ended = False               # END_STREAM sent
        self.body: list[bytes] = []      # response body pieces until the next flush
        self.received = 0                # request body bytes, against Content-Length
        self.exchange = Exchange(self)
        self.exchange.http2 = True

    # the request

    def start(self, headers: list[Header], end_stream: bool) -> None:
        exchange = self.exchange
        protocol = self.owner
        frontend = self.frontend
        try:
            if headers is protocol.last_headers:
                read_again(exchange, protocol.last_head)
            else:
                read_request(exchange, headers, frontend)
                protocol.last_headers, protocol.last_head = headers, head_of(exchange)
        except Malformed:
            frontend.rejected += 1
            frontend.h2_protocol_errors += 1
            protocol.h2.reset(self.stream, f.PROTOCOL_ERROR)
            exchange.set_termination("P", REFUSALS[400])
            exchange.lost()
            return
        exchange.http11 = True            # what an HTTP/1.1 server will be sent
        if protocol.peer_trusted and exchange.xff_b is not None:
            exchange.forwarded_src = frontend.forwarded_client(exchange.xff_b)
        protocol.streams.add(self)
        frontend.h2_requests += 1
        status = self._refusal(exchange, end_stream)
        if status:
            frontend.rejected += 1
            exchange.request_complete = True
            exchange.set_termination("P", REFUSALS[status])
            exchange.respond(error_answer(status))
            return
        if end_stream:
            exchange.request_done()
        elif exchange.length < 0:
            exchange.chunked = True        # an HTTP/1.1 server gets the body chunked
        exchange.start()

    def _refusal(self, exchange: Exchange, end_stream: bool) -> int:
        """The status refusing a request HTTP/2 parsed fine, as HTTP/1.1 would (0: none)."""
        frontend = self.frontend
        if exchange.method_b == b"CONNECT":
            return 501
        if len(exchange.hparts) // 4 > frontend.max_headers:
            return 431
        if 0 < frontend.max_body_size < exchange.length:
            return 413
        if end_stream and exchange.length > 0:
            return 400                     # content-length promised a body that never came
        return 0

    def request_data(self, data: bytes, end_stream: bool) -> None:
        exchange = self.exchange
        if exchange.status and exchange.request_complete:      # answered already
            self.owner.h2.ack(self.stream, len(data))
            return
        size = len(data)
        self.received += size
        length = exchange.length
        if (length >= 0 and (self.received > length or (end_stream and self.received < length))
                or 0 < self.frontend.max_body_size < self.received):
            self._malformed_body()
            return
        if size:
            exchange.request_body(data)
            self.owner.h2.delivered(self.stream, size)
        if end_stream:
            exchange.request_done()
        elif exchange.upstream is not None and exchange.body:
            exchange.flush_body()

    def request_trailers(self, headers: list[Header]) -> None:
        """Request trailers end the body; an HTTP/2 server gets them, an HTTP/1.1 one not."""
        exchange = self.exchange
        exchange.trailers = [(name, value) for name, value in headers if name[:1] != b":"]
        exchange.request_done()

    def _malformed_body(self) -> None:
        """DATA that contradicts Content-Length (RFC 9113 §8.1.1) or exceeds the limit."""
        exchange = self.exchange
        self.frontend.h2_protocol_errors += 1
        too_large = 0 < self.frontend.max_body_size < self.received
        exchange.set_termination("P", REFUSALS[413 if too_large else 400])
        if not exchange.status:
            exchange.request_complete = True
            exchange.abandon()
            if too_large:
                exchange.respond(error_answer(413))
                return
        self.owner.h2.reset(self.stream, f.PROTOCOL_ERROR)
        self.gone()

    def too_slow(self) -> None:
        exchange = self.exchange
        if exchange.status:
            exchange.set_termination("c", CLIENT_TIMEOUT)
            self.abort()
            return
        exchange.set_termination("c", REFUSALS[408])
        exchange.abandon()
        exchange.request_complete = True
        exchange.respond(error_answer(408))

    # Downstream

    @property
    def write_paused(self) -> bool:
        return self.owner.write_paused or self.stream.pending_size > HIGH_WATER

    def pause_reading(self, reason: int) -> None:
        self.owner.h2.hold(self.stream, reason)

    def resume_reading(self, reason: int) -> None:
        if self.owner.h2.release(self.stream, reason):
            self.owner.write_soon()

    def informational(self, status: int) -> None:
        self.owner.h2.send_headers(self.stream, [(b":status", b"%d" % status)], False)

    def response_head(self, exchange: Exchange, status: int, headers: list[bytes],
                      length: int, end_stream: bool) -> None:
        no_body = end_stream or exchange.is_head or status == 204 or status == 304
        owner = self.owner
        owner.h2.send_block(self.stream, owner.response_block(status, headers), no_body)
        if no_body:
            self.ended = True

    def response_body(self, data: bytes) -> None:
        self.body.append(data)

    def response_trailers(self, headers: list[Header]) -> None:
        if not self.ended:
            self._send_body(False)
            self.owner.h2.send_trailers(self.stream, headers)
            self.ended = True

    def flush(self, end: bool) -> None:
        if self.closed:
            return
        owner = self.owner
        stream = self.stream
        body = self.body
        if body or (end and not self.ended):
            data = body[0] if len(body) == 1 else b"".join(body)
            body.clear()
            owner.h2.send_data(stream, data, end and not self.ended)
            if end:
                self.ended = True
        if stream.pending_size and owner.h2.source_too_fast(stream):
            self.exchange.pause_response()
        if end and len(owner.streams) == 1:
            owner.write()                 # nothing of another stream to wait for
        else:
            owner.write_soon()

    def _send_body(self, end: bool) -> None:
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self.owner.h2.send_data(self.stream, data, end)

    def answer(self, exchange: Exchange, answer: Answer) -> int:
        if self.closed:
            return 0
        headers = [(b":status", b"%d" % answer.status),
                   (b"content-type", answer.content_type),
                   (b"content-length", b"%d" % len(answer.body))]
        headers += [(name.lower(), value) for name, value in answer.headers]
        conn = self.owner.h2
        if exchange.is_head:
            conn.send_headers(self.stream, headers, True)
        else:
            conn.send_headers(self.stream, headers, False)
            conn.send_data(self.stream, answer.body, end_stream=True)
        self.ended = True
        self.owner.write_soon()
        head = sum(len(name) + len(value) for name, value in headers)
        return head if exchange.is_head else head + len(answer.body)

    def start_tunnel(self, upstream: UpstreamProtocol, data: bytes) -> None:
        self.abort()                      # no Upgrade reaches a server from HTTP/2

    def tunnel_data(self, data: bytes) -> None:
        pass

    def hold_entry(self, entry: object) -> None:
        self.owner.hold_entry(entry)

    def exchange_done(self, exchange: Exchange) -> None:
        conn = self.owner.h2
        if not self.closed:
            if not self.ended:
                self.flush(True)
            if not self.stream.recv_closed and not self._body_all_received(exchange):
                conn.reset(self.stream, f.NO_ERROR)    # answered: the rest is not needed
            conn.finished()
        self._let_go()

    def _let_go(self) -> None:
        """The stream is done with its exchange. Dropping it (and the Stream's handle)
        breaks the cycles between them: all are freed at once by reference counting,
        none is left to the cycle collector, whose passes cost every request."""
        self.closed = True
        self.stream.handle = None
        self.exchange = None          # type: ignore[assignment]
        self.owner.stream_done(self)

    def _body_all_received(self, exchange: Exchange) -> bool:
        """Every byte Content-Length announced came, only END_STREAM has not: no reset,
        which a client still about to send that flag could take for an error."""
        return 0 <= exchange.length == self.received

    def abort(self) -> None:
        if not self.closed:
            self.owner.h2.reset(self.stream, f.INTERNAL_ERROR)
            self.gone()

    def close(self) -> None:
        if not self.closed:
            self.owner.h2.reset(self.stream, f.CANCEL)
            self.gone()

    def gone(self) -> None:
        """The stream ended without its response (reset by either side, the connection
        lost): the exchange lets go of its server."""
        if self.closed:
            return
        self.closed = True            # (before lost(): nothing more is sent on it)
        self.exchange.lost()
        self._let_go()
