"""HTTP/2 to servers (`proto: h2`): multiplexed connections per server, a stream per exchange.

A server's H2ServerPool puts a new exchange on a connection that has room under the
server's SETTINGS_MAX_CONCURRENT_STREAMS, and opens another connection only when every
one is full (exchanges wait for it meanwhile). Each exchange's stream (`H2UpstreamStream`)
is its upstream: it sends the request as HEADERS and DATA (the body waits for the
server's window, and the client's reading pauses meanwhile), hands the response head to
the exchange and the body and trailers to the downstream, and gives the response's
window back only as fast as the client reads.

A stream the server refused (REFUSED_STREAM, or above the last stream id of its GOAWAY)
was never processed and is retried whatever its method, as RFC 9113 §8.7 allows: the
body sent on it is kept until the server answers, up to BODY_BUFFER_LIMIT (past that a
refusal cannot be replayed and answers 502). Idle connections are checked with PING: one
without an answer in time is closed.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections import deque
from typing import TYPE_CHECKING

from lbproxy.backends.outcomes import (ABORTED, EMPTY_RESPONSE, JUNK_RESPONSE, REFUSED,
                                       RESPONSE_TIMEOUT)
from lbproxy.extensions import PluginFailed
from lbproxy.http.termination import RESPONSE_HEAD_TOO_LARGE
from lbproxy.http2 import frames as f
from lbproxy.http2.connection import Connection, Settings, Stream
from lbproxy.http2.messages import CONNECTION_SPECIFIC, Header
from lbproxy.proxy.connect import connect_to
from lbproxy.proxy.exchange import BODY_BUFFER_LIMIT
from lbproxy.proxy.flow import CLIENT_SLOW

if TYPE_CHECKING:
    from lbproxy.backends.server import Server
    from lbproxy.proxy.downstream import Downstream
    from lbproxy.proxy.exchange import Exchange
    from lbproxy.proxy.state import ProxyState

IDLE_TIMEOUT = 60.0       # an idle connection is closed after this long
PING_INTERVAL = 10.0      # an idle connection is pinged this often...
PING_TIMEOUT = 5.0        # ...and closed when the answer takes longer than this


class H2ServerPool:
    def __init__(self, server: Server, state: ProxyState, *, connect_timeout: float,
                 max_head: int = 64 * 1024, ssl: object = None,
                 server_hostname: str | None = None) -> None:
        self.server = weakref.proxy(server)   # its owner: no cycle (lbproxy/runtime/heap.py)
        self.state = state
        self.connect_timeout = connect_timeout
        # what its connections advertise: a response head list up to `max_head`
        self.settings = Settings(max_concurrent_streams=100, initial_window_size=1 << 20,
                                 max_header_list_size=max_head)
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.scheme = b"https" if ssl is not None else b"http"
        self.connections: list[H2ServerConnection] = []
        self.waiting: deque[Exchange] = deque()    # exchanges waiting for a connection
        self.opening = False

    def acquire(self) -> H2UpstreamStream | None:
        """A new stream on the least busy connection with room, or None."""
        best = None
        for connection in self.connections:
            if connection.has_room() and (best is None or
                                          len(connection.active) < len(best.active)):
                best = connection
        return best.new_stream() if best is not None else None

    def connect(self, exchange: Exchange) -> None:
        exchange.connecting = self
        self.waiting.append(exchange)
        if not self.opening:
            self.opening = True
            self.state.loop.create_task(self._open())

    async def _open(self) -> None:
        """Open one connection; its first SETTINGS (the server's stream limit) lets the
        waiting exchanges on (`serve_waiting`), which opens another if some are left."""
        try:
            connection = await connect_to(self, lambda: H2ServerConnection(self))
            if connection.transport is None:         # no h2 by ALPN
                raise OSError("the server does not speak HTTP/2")
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            self.opening = False
            waiting, self.waiting = self.waiting, deque()
            no_fd = self.state.out_of_fds_in(exc, self.server)
            for exchange in waiting:
                if exchange.connecting is self:
                    exchange.connecting = None
                    exchange.connect_failed(no_fd)

    def serve_waiting(self) -> None:
        """Put waiting exchanges on connections with room; if some are left and no
        connection is being opened, open one more."""
        self.opening = False
        waiting = self.waiting
        while waiting:
            exchange = waiting[0]
            if exchange.connecting is not self:          # its client left
                waiting.popleft()
                continue
            stream = self.acquire()
            if stream is None:
                if not self.opening:
                    self.opening = True
                    self.state.loop.create_task(self._open())
                return
            waiting.popleft()
            exchange.connecting = None
            exchange.attach(stream)

    def release(self, upstream: H2UpstreamStream) -> None:
        upstream.finish()

    def discard(self, connection: H2ServerConnection) -> None:
        if connection in self.connections:
            self.connections.remove(connection)

    def close_idle(self) -> None:
        for connection in list(self.connections):
            if not connection.active:
                connection.close()


class H2ServerConnection:
    """One HTTP/2 connection to a server, carrying the streams of several exchanges."""

    def __init__(self, pool: H2ServerPool) -> None:
        self.pool = pool
        self.state = pool.state
        self.time = pool.state.time
        self.transport: asyncio.Transport | None = None
        self.h2 = Connection(self, client=True, settings=pool.settings, clock=self.time)
        self.active: set[H2UpstreamStream] = set()
        self.deadline = 0.0
        self.ping_sent = 0.0
        self.last_used = self.time()
        self.gone_away = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            transport.close()                     # the pool sees transport None: failure
            return
        self.transport = transport  # type: ignore[assignment]
        self.state.upstreams.add(self)
        self.pool.connections.append(self)
        self.h2.start()
        self.write()
        self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.deadline = 0.0
        self.state.upstreams.discard(self)
        self.pool.discard(self)
        for stream in list(self.active):
            stream.lost()

    def data_received(self, data: bytes) -> None:
        self.h2.receive(data)
        self.write()

    def pause_writing(self) -> None:
        for stream in self.active:
            stream.exchange.pause_request()

    def resume_writing(self) -> None:
        for stream in list(self.active):
            if not stream.stream.paused:
                stream.exchange.resume_request()

    def eof_received(self) -> bool:
        return False

    def write(self) -> None:
        out = self.h2.out
        if out and self.transport is not None:
            self.transport.write(bytes(out))
            out.clear()

    # streams

    def has_room(self) -> bool:
        """Open, not going away, its SETTINGS received, under their stream limit."""
        h2 = self.h2
        return (self.transport is not None and h2.settings_received and not self.gone_away
                and not h2.closed and len(self.active) < h2.remote_max_streams)

    def on_settings(self) -> None:
        """The server's SETTINGS arrived (the first ones: the connection is ready)."""
        if self.pool.waiting:
            self.pool.serve_waiting()

    def new_stream(self) -> H2UpstreamStream:
        upstream = H2UpstreamStream(self, self.h2.open_stream())
        self.active.add(upstream)
        self.deadline = 0.0
        return upstream

    def stream_done(self, upstream: H2UpstreamStream) -> None:
        self.active.discard(upstream)
        self.write()
        if self.pool.waiting:
            self.pool.serve_waiting()
        if not self.active:
            if self.gone_away:
                self.close()
            else:
                self.last_used = self.time()
                self._idle()

    def _idle(self) -> None:
        self.ping_sent = 0.0
        self.deadline = self.time() + min(PING_INTERVAL, IDLE_TIMEOUT)

    def timed_out(self) -> None:
        """Idle: close after IDLE_TIMEOUT, else PING, and close if it goes unanswered."""
        if self.active:
            return
        now = self.time()
        if now - self.last_used >= IDLE_TIMEOUT or self.ping_sent:
            self.close()
            return
        self.ping_sent = now
        self.h2.ping(os.urandom(8))
        self.write()
        self.deadline = now + PING_TIMEOUT

    def on_ping_ack(self, payload: bytes) -> None:
        if self.ping_sent and not self.active:
            self._idle()

    def close(self) -> None:
        if self.transport is not None:
            self.h2.goaway()
            self.write()
            self.transport.close()

    # the HTTP/2 connection's callbacks

    def on_headers(self, stream: Stream, headers: list[Header], end_stream: bool) -> None:
        if stream.handle is not None:
            stream.handle.on_headers(headers, end_stream)

    def on_data(self, stream: Stream, data: bytes, end_stream: bool) -> None:
        if stream.handle is not None:
            stream.handle.on_data(data, end_stream)
        else:
            self.h2.ack(stream, len(data))

    def on_reset(self, stream: Stream, code: int) -> None:
        if stream.handle is not None:
            stream.handle.on_reset(code)

    def on_drained(self, stream: Stream) -> None:
        if stream.handle is not None:
            stream.handle.exchange.resume_request()

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        """The server takes no new streams: those above `last_stream_id` it never
        processed (retried elsewhere); the others finish, then the connection closes."""
        self.gone_away = True
        for upstream in list(self.active):
            if upstream.stream.id > last_stream_id:
                upstream.refused()
        if not self.active:
            self.close()

    def on_error(self, code: int, reason: str) -> None:
        self.write()
        if self.transport is not None:
            self.transport.close()

    def on_oversized(self, stream: Stream) -> None:
        """A response head over the backend's `max_response_header_size`."""
        if stream.handle is not None:
            stream.handle.failed(JUNK_RESPONSE, RESPONSE_HEAD_TOO_LARGE)


class H2UpstreamStream:
    """One exchange's stream to the server: the exchange's upstream."""

    __slots__ = ("connection", "stream", "exchange", "downstream", "deadline",
                 "server_timeout", "responded", "done", "pool",
                 "replay", "replay_size")

    def __init__(self, connection: H2ServerConnection, stream: Stream) -> None:
        self.connection = connection
        self.pool = connection.pool
        self.stream = stream
        stream.handle = self
        self.exchange: Exchange | None = None
        self.downstream: Downstream | None = None
        self.deadline = 0.0
        self.server_timeout = 0.0
        self.responded = False           # the final response head arrived
        self.done = False
        self.replay: list[bytes] | None = []     # body sent, kept until the server answers
        self.replay_size = 0

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.connection.transport

    # the request

    def send_request(self, exchange: Exchange, body: list[bytes], complete: bool) -> None:
        self.exchange = exchange
        self.downstream = exchange.sink
        connection = self.connection
        connection.state.upstreams.add(self)
        self.server_timeout = exchange.backend.server_timeout
        self.deadline = connection.time() + self.server_timeout
        if exchange.sink.write_paused:
            connection.h2.hold(self.stream, CLIENT_SLOW)
        end = complete and not body and exchange.trailers is None
        connection.h2.send_headers(self.stream, request_headers(exchange, self.pool), end)
        if not end:
            self.send_body(body, complete)
        connection.write()

    def send_body(self, body: list[bytes], complete: bool) -> None:
        if self.done:
            return
        data = body[0] if len(body) == 1 else b"".join(body)
        self.exchange.server.bytes_in += len(data)     # (the pool's is a weak proxy)
        if self.replay is not None and data:
            self.replay_size += len(data)
            self.replay = self.replay + [data] if self.replay_size <= BODY_BUFFER_LIMIT \
                else None
        stream = self.stream
        h2 = self.connection.h2
        trailers = self.exchange.trailers if complete else None
        h2.send_data(stream, data, complete and trailers is None)
        if trailers is not None:
            h2.send_trailers(stream, trailers)
        self.deadline = self.connection.time() + self.server_timeout
        if h2.source_too_fast(stream):       # on_drained resumes the client's reading
            self.exchange.pause_request()
        self.connection.write()

    def pause_reading(self, reason: int) -> None:
        self.connection.h2.hold(self.stream, reason)

    def resume_reading(self, reason: int) -> None:
        if self.connection.h2.release(self.stream, reason):
            self.connection.write()

    def tunnel_data(self, data: bytes) -> None:
        pass

    # the response

    def on_headers(self, headers: list[Header], end_stream: bool) -> None:
        exchange = self.exchange
        self.deadline = self.connection.time() + self.server_timeout
        if self.responded:                      # trailers
            self.downstream.response_trailers(headers)
            self._complete()
            return
        status, hparts, length = response_head(headers)
        if status is None:
            self.failed(ABORTED)
            return
        if status < 200:
            if status == 100 and exchange.expect_continue:
                self.downstream.informational(100)
                self.downstream.flush(False)
            return
        self.responded = True
        self.replay = None
        exchange.resp_bytes += sum(len(n) + len(v) for n, v in headers)
        try:
            exchange.response_head(status, hparts, length, end_stream)
        except PluginFailed:                    # in an http_response rule
            exchange.response_refused(self)
            return
        if end_stream:
            self._complete()
        else:
            self.downstream.flush(False)

    def on_data(self, data: bytes, end_stream: bool) -> None:
        size = len(data)
        exchange = self.exchange
        if not self.responded:
            self.connection.h2.ack(self.stream, size)
            self.failed(ABORTED)
            return
        self.deadline = self.connection.time() + self.server_timeout
        exchange.resp_bytes += size
        if size:
            self.downstream.response_body(data)
            self.connection.h2.delivered(self.stream, size)
        if end_stream:
            self._complete()
        else:
            self.downstream.flush(False)

    def on_reset(self, code: int) -> None:
        if code == f.REFUSED_STREAM and not self.responded:
            self.refused()
            return
        self.done = True
        self._detach()
        if self.exchange is not None:
            self.exchange.upstream_failed(ABORTED if self.responded else EMPTY_RESPONSE)

    def _complete(self) -> None:
        self.done = True
        self.downstream.flush(True)
        exchange = self.exchange
        self._detach_timer()
        exchange.response_done(self, True)

    def failed(self, kind: str, error: str | None = None) -> None:
        self.close()
        self.exchange.upstream_failed(kind, error)

    # ends

    def refused(self) -> None:
        """The server never processed this stream (REFUSED_STREAM, or above its GOAWAY's
        last id): the body it got goes back to the exchange, which may be retried."""
        self.done = True
        self._detach()
        exchange = self.exchange
        if exchange is None:
            return
        if self.replay is None:
            exchange.upstream_failed(EMPTY_RESPONSE)     # too much body to send again
            return
        if self.replay:
            exchange.body = self.replay + list(exchange.body)
        exchange.upstream_failed(REFUSED)

    def lost(self) -> None:
        """The connection went away under this stream."""
        if self.done:
            return
        self.done = True
        self._detach()
        if self.exchange is not None:
            self.exchange.upstream_failed(ABORTED if self.responded else EMPTY_RESPONSE)

    def timed_out(self) -> None:
        self.close()
        if self.exchange is not None:
            self.exchange.upstream_failed(RESPONSE_TIMEOUT)

    def finish(self) -> None:
        """The exchange is done with the stream (its response complete, or never sent:
        the client left while it was being opened)."""
        if self.exchange is None:
            self.done = True
            self.connection.h2.forget(self.stream)
        self._detach()

    def close(self) -> None:
        """The exchange gives up the stream (client gone, failure): RST_STREAM CANCEL."""
        if not self.done:
            self.done = True
            self.connection.h2.reset(self.stream, f.CANCEL)
        self._detach()

    def _detach_timer(self) -> None:
        self.deadline = 0.0
        self.connection.state.upstreams.discard(self)

    def _detach(self) -> None:
        self._detach_timer()
        if self in self.connection.active:
            self.stream.handle = None
            self.connection.stream_done(self)


def request_headers(exchange: Exchange, pool: H2ServerPool) -> list[Header]:
    """The request as an HTTP/2 header list: pseudo-headers, the client's fields minus
    hop-by-hop ones, `te: trailers` when the client asked (gRPC), X-Forwarded-*."""
    authority = exchange.host_b if exchange.host_b is not None else pool.server.host_header
    headers = [(b":method", exchange.method_b), (b":scheme", pool.scheme),
               (b":authority", authority), (b":path", exchange.url_b)]
    extra_hop = exchange.extra_hop
    parts = exchange.hparts + exchange.frontend.forwarded_parts(exchange)
    for i in range(0, len(parts), 4):
        name = parts[i].lower()
        if name == b"host" or name in CONNECTION_SPECIFIC or (extra_hop and name in extra_hop):
            continue
        headers.append((name, parts[i + 2]))
    if exchange.te_trailers:
        headers.append((b"te", b"trailers"))
    if exchange.length >= 0:
        headers.append((b"content-length", b"%d" % exchange.length))
    return headers


def response_head(headers: list[Header]) -> tuple[int | None, list[bytes], int]:
    """(status, header quadruples, content length or -1) of an HTTP/2 response head;
    status None when :status is missing or invalid."""
    status = None
    hparts: list[bytes] = []
    length = -1
    for name, value in headers:
        if name == b":status":
            status = int(value) if value.isdigit() and len(value) == 3 else None
        elif name[:1] == b":":
            return None, hparts, -1
        else:
            if name == b"content-length" and value.isdigit():
                length = int(value)
            hparts += (name, b": ", value, b"\r\n")
    return status, hparts, length
