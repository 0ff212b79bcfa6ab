"""A sans-IO HTTP/2 connection (RFC 9113), either side: bytes in, callbacks out, bytes to
send accumulated in `out`.

It owns what is HTTP/2 and nothing else: the preface and SETTINGS, frame parsing and
size checks, header blocks (HEADERS + CONTINUATION, HPACK), stream states and ids, flow
control both ways with the data that waits for a window, RST_STREAM, PING and GOAWAY.
What a header list means (pseudo-headers, a request or a response) is the protocol
layer's business (lbproxy/proxy/h2client.py, h2upstream.py); it gets:

    handler.on_headers(stream, headers, end_stream)   a header block (head, 1xx, trailers)
    handler.on_data(stream, data, end_stream)         it calls ack(stream, n) once consumed
    handler.on_reset(stream, code)                    the stream is gone (reset either way)
    handler.on_drained(stream)                        waiting output went out: resume
    handler.on_goaway(last_stream_id, code)           the peer stops taking new streams
    handler.on_error(code, reason)                    we sent GOAWAY: close the transport
    handler.on_oversized(stream)                      a header list over the limit

Abuse is bounded here because only the framing layer sees it: more streams than allowed
are refused (REFUSED_STREAM, the header block still decoded so HPACK stays in step),
header blocks are capped in bytes and in CONTINUATION frames, HPACK bombs stop decoding,
and floods (SETTINGS, PING, PRIORITY, WINDOW_UPDATE, empty DATA, streams reset faster
than they finish) end the connection with ENHANCE_YOUR_CALM, counted per reason in the
`abuse` counts the caller hands in (a frontend's, for its metrics). Every limit is per
connection, so one client never disturbs another.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from lbproxy.http2 import frames as f
from lbproxy.http2.frames import DATA, HEADERS
from lbproxy.http2.hpack import Decoder, Encoder, Header, HeaderListTooLarge, HPACKError

FLOOD_WINDOW = 10.0          # seconds over which floods are counted
# Frames of each kind a peer may send per FLOOD_WINDOW before the connection is a flood.
FLOOD_LIMITS = {"settings": 100, "ping": 100, "priority": 1000, "empty_data": 100,
                "window_update": 1000}
RAPID_RESETS = 100           # client resets beyond completed streams per FLOOD_WINDOW
MAX_CONTINUATIONS = 64       # CONTINUATION frames in one header block
RECENTLY_RESET = 1024        # ids of streams we reset whose late frames are ignored
CONNECTION_WINDOW = 16 << 20  # our connection receive window: streams' windows bound each
HIGH_WATER = 64 * 1024       # waiting output of a stream above which its source pauses


class Handler(Protocol):
    def on_headers(self, stream: Stream, headers: list[Header], end_stream: bool) -> None: ...
    def on_data(self, stream: Stream, data: bytes, end_stream: bool) -> None: ...
    def on_reset(self, stream: Stream, code: int) -> None: ...
    def on_drained(self, stream: Stream) -> None: ...
    def on_goaway(self, last_stream_id: int, code: int) -> None: ...
    def on_error(self, code: int, reason: str) -> None: ...
    def on_oversized(self, stream: Stream) -> None: ...


class ConnectionError_(Exception):
    """A connection error (RFC 9113 §5.4.1): GOAWAY with `code`, then close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Stream:
    __slots__ = ("id", "send_window", "recv_window", "consumed", "pending", "pending_size",
                 "end_pending", "trailers_pending", "recv_closed", "send_closed", "paused",
                 "held", "unacked", "handle")

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.id = stream_id
        self.send_window = send_window
        self.recv_window = recv_window
        self.consumed = 0                   # received and consumed, not yet given back
        self.pending: deque[bytes] = deque()   # output waiting for a window
        self.pending_size = 0
        self.end_pending = False            # END_STREAM to send once `pending` is out
        self.trailers_pending: list[Header] | None = None   # or trailers to send then
        self.recv_closed = False            # END_STREAM received
        self.send_closed = False            # END_STREAM sent
        self.paused = False                 # the protocol paused the source of its output
        self.held = 0                       # reasons (bits) to hold the receive window back
        self.unacked = 0                    # bytes consumed while held, not yet given back
        self.handle: Any = None             # what the protocol layer attaches


class Settings:
    """What we advertise; defaults: the frontend `http2` section of docs/configuration.md."""

    def __init__(self, max_concurrent_streams: int = 100, initial_window_size: int = 1 << 20,
                 max_header_list_size: int = 64 * 1024) -> None:
        self.max_concurrent_streams = max_concurrent_streams
        self.initial_window_size = initial_window_size
        self.max_header_list_size = max_header_list_size


class Connection:
    def __init__(self, handler: Handler, client: bool, settings: Settings,
                 clock: Callable[[], float], abuse: dict[str, int] | None = None) -> None:
        self.handler = handler
        self.client = client
        self.settings = settings
        self.clock = clock
        self.out = bytearray()
        self.buffer = bytearray()
        self.preface_pending = not client       # a server first reads the client preface
        self.settings_received = False
        self.decoder = Decoder()
        self.encoder = Encoder()
        # the peer's settings
        self.remote_initial_window = f.DEFAULT_WINDOW
        self.remote_max_frame = f.DEFAULT_FRAME_SIZE
        self.remote_max_streams = 1 << 31
        # flow control of the connection itself
        self.send_window = f.DEFAULT_WINDOW
        self.recv_window = f.DEFAULT_WINDOW
        self.consumed = 0
        self.streams: dict[int, Stream] = {}
        self.blocked: deque[Stream] = deque()    # streams with output waiting for a window
        self.last_peer_stream = 0                # highest stream id the peer opened
        self.next_stream_id = 1                  # ours, when we are the client
        self.recently_reset: deque[int] = deque(maxlen=RECENTLY_RESET)
        self.reset_ids: set[int] = set()
        self.goaway_sent = False
        self.goaway_received = False
        self.closed = False
        # a header block being received: stream id, END_STREAM, fragments, frames
        self.assembling: tuple[int, bool, list[bytes], int] | None = None
        # flood counters
        self.flood_since = clock()
        self.counts = dict.fromkeys(FLOOD_LIMITS, 0)
        self.resets = 0                          # streams the peer reset (this window)
        self.completed = 0                       # streams that finished (this window)
        self.data_frames_sent = 0
        self.abuse = {} if abuse is None else abuse   # reason -> count, shared by the caller

    # start and stop

    def start(self) -> None:
        """The preface (client), our SETTINGS, and a large connection window."""
        if self.client:
            self.out += f.PREFACE
        settings = self.settings
        values = {f.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
                  f.INITIAL_WINDOW_SIZE: settings.initial_window_size,
                  f.MAX_HEADER_LIST_SIZE: settings.max_header_list_size}
        if self.client:
            values[f.ENABLE_PUSH] = 0
        self.out += f.settings(values)
        increment = CONNECTION_WINDOW - f.DEFAULT_WINDOW
        self.recv_window += increment
        self.out += f.window_update(0, increment)

    def goaway(self, code: int = f.NO_ERROR, debug: bytes = b"") -> None:
        """No new streams from the peer: those it opened up to now may finish."""
        if not self.goaway_sent:
            self.goaway_sent = True
            self.out += f.goaway(self.last_peer_stream, code, debug)

    def ping(self, payload: bytes) -> None:
        self.out += f.ping(payload)

    # receiving

    def receive(self, data: bytes) -> None:
        if self.closed:
            return
        buffer = self.buffer
        try:
            if self.preface_pending:
                buffer += data
                if len(buffer) < len(f.PREFACE):
                    if not f.PREFACE.startswith(bytes(buffer)):
                        raise ConnectionError_(f.PROTOCOL_ERROR, "not an HTTP/2 preface")
                    return
                if bytes(buffer[:len(f.PREFACE)]) != f.PREFACE:
                    raise ConnectionError_(f.PROTOCOL_ERROR, "not an HTTP/2 preface")
                del buffer[:len(f.PREFACE)]
                self.preface_pending = False
                data = b""
            if buffer:
                # A frame still incomplete waits in the buffer, copied out only once it
                # (or the header saying it is too large) is whole: a frame trickling in
                # byte by byte costs no more than one arriving at once.
                buffer += data
                if len(buffer) < 9 or len(buffer) < 9 + ((buffer[0] << 16) | (buffer[1] << 8)
                                                          | buffer[2]) <= 9 + f.DEFAULT_FRAME_SIZE:
                    return
                data = bytes(buffer)
                buffer.clear()
            used = self._frames(data)
            if used < len(data) and not self.closed:
                buffer += data[used:] if used else data
        except ConnectionError_ as exc:
            self._fail(exc.code, str(exc))

    def _frames(self, data: bytes) -> int:
        """Handle the complete frames at the start of `data`; returns the bytes used."""
        pos = 0
        available = len(data)
        unpack = f.HEADER.unpack_from
        dispatch = _DISPATCH
        while available - pos >= 9:
            high, low, kind, flags, stream_id = unpack(data, pos)
            length = (high << 8) | low
            if length > f.DEFAULT_FRAME_SIZE:   # we never advertise a larger frame size
                raise ConnectionError_(f.FRAME_SIZE_ERROR, f"frame of {length} bytes")
            end = pos + 9 + length
            if end > available:
                break
            payload = data[pos + 9:end]
            pos = end
            stream_id &= 0x7FFFFFFF
            if self.assembling is not None and kind != f.CONTINUATION:
                raise ConnectionError_(f.PROTOCOL_ERROR, "header block interrupted")
            if not self.settings_received and kind != f.SETTINGS:
                raise ConnectionError_(f.PROTOCOL_ERROR, "the first frame must be SETTINGS")
            if kind == DATA:
                self._on_data(flags, stream_id, payload)
            elif kind == HEADERS:
                self._on_headers(flags, stream_id, payload)
            else:
                handler = dispatch.get(kind)
                if handler is not None:         # unknown frame types are ignored
                    handler(self, flags, stream_id, payload)
            if self.closed:
                break
        return pos

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        if size > self.recv_window:
            raise ConnectionError_(f.FLOW_CONTROL_ERROR, "connection window exceeded")
        self.recv_window -= size
        if flags & f.PADDED:
            payload = _unpad(payload)
        end_stream = bool(flags & f.END_STREAM)
        stream = self.streams.get(stream_id)
        if stream is None or stream.recv_closed:
            self._consume(None, size)           # give the connection window back
            if stream_id in self.reset_ids:
                return
            if stream is None and stream_id > self._highest(stream_id):
                raise ConnectionError_(f.PROTOCOL_ERROR, "DATA on an idle stream")
            self._reset(stream_id, f.STREAM_CLOSED, stream)
            return
        if size > stream.recv_window:
            self._consume(None, size)
            self._reset(stream_id, f.FLOW_CONTROL_ERROR, stream)
            return
        stream.recv_window -= size
        padding = size - len(payload)
        if padding:
            self._consume(stream, padding)
        if not payload and not end_stream:
            self._count("empty_data")
        if end_stream:
            stream.recv_closed = True
        self.handler.on_data(stream, payload, end_stream)
        if end_stream:
            self._maybe_close(stream)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & f.PADDED:
            payload = _unpad(payload)
        if flags & f.PRIORITY_FLAG:
            if len(payload) < 5:
                raise ConnectionError_(f.FRAME_SIZE_ERROR, "short priority fields")
            if struct.unpack_from("!I", payload)[0] & 0x7FFFFFFF == stream_id:
                raise ConnectionError_(f.PROTOCOL_ERROR, "stream depends on itself")
            payload = payload[5:]
        end_stream = bool(flags & f.END_STREAM)
        if flags & f.END_HEADERS:
            self._header_block(stream_id, end_stream, payload)
        else:
            self.assembling = (stream_id, end_stream, [payload], 0)
            self._check_block_size(len(payload))

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        assembling = self.assembling
        if assembling is None or assembling[0] != stream_id:
            raise ConnectionError_(f.PROTOCOL_ERROR, "unexpected CONTINUATION")
        _, end_stream, fragments, count = assembling
        fragments.append(payload)
        count += 1
        if count > MAX_CONTINUATIONS:
            self._calm("continuation")
        self._check_block_size(sum(map(len, fragments)))
        if flags & f.END_HEADERS:
            self.assembling = None
            self._header_block(stream_id, end_stream, b"".join(fragments))
        else:
            self.assembling = (stream_id, end_stream, fragments, count)

    def _check_block_size(self, size: int) -> None:
        """A compressed block longer than the whole allowed list is a flood, not a
        request: it is refused before it is decoded."""
        if size > self.settings.max_header_list_size + f.DEFAULT_FRAME_SIZE:
            self._calm("header_block")

    def _header_block(self, stream_id: int, end_stream: bool, block: bytes) -> None:
        limit = self.settings.max_header_list_size
        try:
            headers, size = self.decoder.decode(block, 4 * limit)
        except HeaderListTooLarge:
            self._calm("hpack_bomb")
        except HPACKError as exc:
            raise ConnectionError_(f.COMPRESSION_ERROR, str(exc)) from None
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id in self.reset_ids:
                return                          # late frames of a stream we reset
            stream = self._open_peer_stream(stream_id)
            if stream is None:
                return
        elif stream.recv_closed:
            self._reset(stream_id, f.STREAM_CLOSED, stream)
            return
        if end_stream:
            stream.recv_closed = True
        if size > limit:
            self.handler.on_oversized(stream)
        else:
            self.handler.on_headers(stream, headers, end_stream)
        if end_stream:
            self._maybe_close(stream)

    def _open_peer_stream(self, stream_id: int) -> Stream | None:
        """A HEADERS frame on a new stream: it must come from the right side, in order;
        past our limit of concurrent streams, or after our GOAWAY, it is refused."""
        if self.client:
            raise ConnectionError_(f.PROTOCOL_ERROR, "HEADERS on a stream we did not open")
        if stream_id % 2 == 0 or stream_id <= self.last_peer_stream:
            raise ConnectionError_(f.PROTOCOL_ERROR, f"invalid new stream id {stream_id}")
        self.last_peer_stream = stream_id
        if self.goaway_sent:
            self._remember_reset(stream_id)
            return None
        if len(self.streams) >= self.settings.max_concurrent_streams:
            self.note("refused_stream")
            self._remember_reset(stream_id)
            self.out += f.rst_stream(stream_id, f.REFUSED_STREAM)
            return None
        stream = Stream(stream_id, self.remote_initial_window,
                        self.settings.initial_window_size)
        self.streams[stream_id] = stream
        return stream

    def _on_priority(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            raise ConnectionError_(f.FRAME_SIZE_ERROR, "PRIORITY frame size")
        self._count("priority")

    def _on_rst_stream(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise ConnectionError_(f.FRAME_SIZE_ERROR, "RST_STREAM frame size")
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            if stream_id > self._highest(stream_id):
                raise ConnectionError_(f.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
            return
        self._unblock(stream)
        if not self.client:
            self.resets += 1
            self._check_floods()
        self.handler.on_reset(stream, struct.unpack("!I", payload)[0])

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.ACK:
            if payload:
                raise ConnectionError_(f.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(f.FRAME_SIZE_ERROR, "SETTINGS frame size")
        if self.settings_received:
            self._count("settings")
        self.settings_received = True
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack_from("!HI", payload, offset)
            self._setting(key, value)
        self.out += f.SETTINGS_ACK
        self._flush_blocked()
        on_settings = getattr(self.handler, "on_settings", None)
        if on_settings is not None:
            on_settings()

    def _setting(self, key: int, value: int) -> None:
        if key == f.HEADER_TABLE_SIZE:
            self.encoder.resize(value)
        elif key == f.ENABLE_PUSH:
            if value > 1 or (value and self.client):
                raise ConnectionError_(f.PROTOCOL_ERROR, "invalid ENABLE_PUSH")
        elif key == f.MAX_CONCURRENT_STREAMS:
            self.remote_max_streams = value
        elif key == f.INITIAL_WINDOW_SIZE:
            if value > f.MAX_WINDOW:
                raise ConnectionError_(f.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large")
            delta = value - self.remote_initial_window
            self.remote_initial_window = value
            for stream in self.streams.values():
                stream.send_window += delta
                if stream.send_window > f.MAX_WINDOW:
                    raise ConnectionError_(f.FLOW_CONTROL_ERROR, "stream window overflow")
        elif key == f.MAX_FRAME_SIZE:
            if not f.DEFAULT_FRAME_SIZE <= value <= f.MAX_FRAME_SIZE_LIMIT:
                raise ConnectionError_(f.PROTOCOL_ERROR, "invalid MAX_FRAME_SIZE")
            self.remote_max_frame = value

    def _on_push_promise(self, flags: int, stream_id: int, payload: bytes) -> None:
        raise ConnectionError_(f.PROTOCOL_ERROR, "PUSH_PROMISE is not allowed")

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ConnectionError_(f.FRAME_SIZE_ERROR, "PING frame size")
        if flags & f.ACK:
            on_ping_ack = getattr(self.handler, "on_ping_ack", None)
            if on_ping_ack is not None:
                on_ping_ack(payload)
            return
        self._count("ping")
        self.out += f.ping(payload, ack=True)

    def _on_goaway(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise ConnectionError_(f.PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise ConnectionError_(f.FRAME_SIZE_ERROR, "GOAWAY frame size")
        last_stream_id, code = struct.unpack_from("!II", payload)
        self.goaway_received = True
        self.handler.on_goaway(last_stream_id & 0x7FFFFFFF, code)

    def _on_window_update(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE frame size")
        increment = struct.unpack("!I", payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise ConnectionError_(f.PROTOCOL_ERROR, "zero WINDOW_UPDATE")
            self.send_window += increment
            if self.send_window > f.MAX_WINDOW:
                raise ConnectionError_(f.FLOW_CONTROL_ERROR, "connection window overflow")
            self._count_window_update()
            self._flush_blocked()
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self._highest(stream_id):
                raise ConnectionError_(f.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            self._count_window_update()
            return
        if increment == 0:
            self._reset(stream_id, f.PROTOCOL_ERROR, stream)
            return
        stream.send_window += increment
        if stream.send_window > f.MAX_WINDOW:
            self._reset(stream_id, f.FLOW_CONTROL_ERROR, stream)
            return
        self._count_window_update()
        if stream.pending_size or stream.end_pending:
            self._flush_stream(stream)
            self._after_flush(stream)

    # sending

    def open_stream(self) -> Stream:
        """A new stream of ours (client side); the caller sends its HEADERS."""
        stream_id = self.next_stream_id
        self.next_stream_id += 2
        stream = Stream(stream_id, self.remote_initial_window,
                        self.settings.initial_window_size)
        self.streams[stream_id] = stream
        return stream

    def send_headers(self, stream: Stream, headers: list[Header], end_stream: bool) -> None:
        self.send_block(stream, self.encoder.encode(headers), end_stream)

    def send_block(self, stream: Stream, block: bytes, end_stream: bool) -> None:
        """A header list this connection's `encoder` encoded (the caller may reuse a block
        while `encoder.generation` stays the same)."""
        size = len(block)
        if size <= self.remote_max_frame:
            out = self.out
            out += f.HEADER.pack(size >> 8, size & 0xFF, f.HEADERS,
                                 (f.END_STREAM | f.END_HEADERS) if end_stream else f.END_HEADERS,
                                 stream.id)
            out += block
        else:
            self.out += f.header_block(stream.id, block, end_stream, self.remote_max_frame)
        if end_stream:
            stream.send_closed = True
            self._maybe_close(stream)

    def send_data(self, stream: Stream, data: bytes, end_stream: bool = False) -> None:
        """Send `data` as the windows allow; the rest waits in the stream (its
        `pending_size` tells the caller when to stop reading the source)."""
        size = len(data)
        if (not stream.pending_size and not stream.end_pending
                and size <= stream.send_window and size <= self.send_window
                and size <= self.remote_max_frame):        # the common case: one frame now
            if size or end_stream:
                stream.send_window -= size
                self.send_window -= size
                self.data_frames_sent += 1
                out = self.out
                out += f.HEADER.pack(size >> 8, size & 0xFF, f.DATA,
                                     f.END_STREAM if end_stream else 0, stream.id)
                out += data
                if end_stream:
                    stream.send_closed = True           # (nothing was pending)
                    if stream.recv_closed:
                        self.streams.pop(stream.id, None)
            return
        if data:
            stream.pending.append(data)
            stream.pending_size += len(data)
        if end_stream:
            stream.end_pending = True
        self._flush_stream(stream)

    def send_trailers(self, stream: Stream, headers: list[Header]) -> None:
        """Trailers end the stream, after the data still waiting for a window. They are
        encoded when they go out: HPACK blocks must reach the peer in the order they were
        encoded, and other streams' heads may go out before them."""
        if stream.pending_size:
            stream.trailers_pending = headers
            stream.end_pending = True
            return
        stream.send_closed = True
        self.out += f.header_block(stream.id, self.encoder.encode(headers), True,
                                   self.remote_max_frame)
        self._maybe_close(stream)

    def reset(self, stream: Stream, code: int) -> None:
        """Reset a stream of ours (the handler is not called back for it)."""
        if self.streams.pop(stream.id, None) is not None:
            self._unblock(stream)
            self._remember_reset(stream.id)
            self.out += f.rst_stream(stream.id, code)

    def forget(self, stream: Stream) -> None:
        """Drop a stream of ours that never sent a frame (nothing to tell the peer)."""
        self.streams.pop(stream.id, None)

    def ack(self, stream: Stream | None, size: int) -> None:
        """`size` bytes of received DATA were consumed: give the windows back, in halves
        (one WINDOW_UPDATE per half window, not per frame)."""
        self._consume(stream, size)

    # Pacing, for a proxy: what a stream receives is given back only as fast as the other
    # side takes it, and what it sends stops its source past HIGH_WATER. Both sides of
    # the proxy (lbproxy/proxy/h2client.py, h2upstream.py) pace their streams with these.

    def delivered(self, stream: Stream, size: int) -> None:
        """`size` bytes of DATA were passed on: ack them, or keep them while held."""
        if stream.held:
            stream.unacked += size
        else:
            self._consume(stream, size)

    def hold(self, stream: Stream, reason: int) -> None:
        """Give nothing back to the peer for `reason` (a bit, lbproxy/proxy/flow.py)."""
        stream.held |= reason

    def release(self, stream: Stream, reason: int) -> bool:
        """`reason` no longer holds: once none does, what was kept is acked. True when
        that wrote a frame (the caller writes)."""
        stream.held &= ~reason
        if stream.held or not stream.unacked:
            return False
        self._consume(stream, stream.unacked)
        stream.unacked = 0
        return True

    def source_too_fast(self, stream: Stream) -> bool:
        """True once the stream's waiting output passed HIGH_WATER: the caller pauses
        the source of its data, and `on_drained` tells it when to resume."""
        if stream.pending_size > HIGH_WATER and not stream.paused:
            stream.paused = True
            return True
        return False

    def finished(self) -> None:
        """A stream completed normally (for the rapid-reset count)."""
        self.completed += 1

    # internals

    def _consume(self, stream: Stream | None, size: int) -> None:
        if not size or self.closed:
            return
        self.consumed += size
        if self.consumed >= CONNECTION_WINDOW // 2:
            self.recv_window += self.consumed
            self.out += f.window_update(0, self.consumed)
            self.consumed = 0
        if stream is not None and not stream.recv_closed and stream.id in self.streams:
            stream.consumed += size
            if stream.consumed >= self.settings.initial_window_size // 2:
                stream.recv_window += stream.consumed
                self.out += f.window_update(stream.id, stream.consumed)
                stream.consumed = 0

    def _flush_stream(self, stream: Stream) -> None:
        pending = stream.pending
        out = self.out
        while pending:
            window = min(stream.send_window, self.send_window)
            if window <= 0:
                if stream not in self.blocked:
                    self.blocked.append(stream)
                return
            chunk = pending[0]
            size = min(len(chunk), window, self.remote_max_frame)
            if size < len(chunk):
                pending[0] = chunk[size:]
                chunk = chunk[:size]
            else:
                pending.popleft()
            stream.pending_size -= size
            stream.send_window -= size
            self.send_window -= size
            self.data_frames_sent += 1
            last = not pending and stream.end_pending and stream.trailers_pending is None
            out += f.frame(f.DATA, f.END_STREAM if last else 0, stream.id, chunk)
            if last:
                self._close_send(stream)
                return
        if stream.end_pending and not stream.send_closed:
            trailers = stream.trailers_pending
            if trailers is not None:
                out += f.header_block(stream.id, self.encoder.encode(trailers), True,
                                      self.remote_max_frame)
            else:
                out += f.frame(f.DATA, f.END_STREAM, stream.id)
            self._close_send(stream)

    def _close_send(self, stream: Stream) -> None:
        stream.end_pending = False
        stream.trailers_pending = None
        stream.send_closed = True
        self._maybe_close(stream)

    def _flush_blocked(self) -> None:
        blocked = self.blocked
        for _ in range(len(blocked)):
            if self.send_window <= 0:
                return
            stream = blocked.popleft()
            if stream.id in self.streams:
                self._flush_stream(stream)
                self._after_flush(stream)

    def _after_flush(self, stream: Stream) -> None:
        if stream.paused and stream.pending_size < HIGH_WATER // 2:
            stream.paused = False
            self.handler.on_drained(stream)

    def _unblock(self, stream: Stream) -> None:
        try:
            self.blocked.remove(stream)
        except ValueError:
            pass

    def _maybe_close(self, stream: Stream) -> None:
        if stream.recv_closed and stream.send_closed:
            self.streams.pop(stream.id, None)

    def _reset(self, stream_id: int, code: int, stream: Stream | None) -> None:
        """A stream error: RST_STREAM, and the handler is told the stream is gone."""
        self._remember_reset(stream_id)
        self.out += f.rst_stream(stream_id, code)
        if stream is not None and self.streams.pop(stream_id, None) is not None:
            self._unblock(stream)
            self.handler.on_reset(stream, code)

    def _remember_reset(self, stream_id: int) -> None:
        recent = self.recently_reset
        if len(recent) == recent.maxlen:
            self.reset_ids.discard(recent[0])
        recent.append(stream_id)
        self.reset_ids.add(stream_id)

    def _highest(self, stream_id: int) -> int:
        """The highest id used so far on the side that would have opened `stream_id`."""
        ours = (stream_id % 2 == 1) == self.client
        return self.next_stream_id - 2 if ours else self.last_peer_stream

    def _count(self, kind: str) -> None:
        counts = self.counts
        counts[kind] += 1
        if counts[kind] > FLOOD_LIMITS[kind]:
            self._check_floods()

    def _count_window_update(self) -> None:
        self.counts["window_update"] += 1
        if self.counts["window_update"] > FLOOD_LIMITS["window_update"] + 2 * self.data_frames_sent:
            self._check_floods()

    def _check_floods(self) -> None:
        now = self.clock()
        if now - self.flood_since > FLOOD_WINDOW:
            self.flood_since = now
            self.counts = dict.fromkeys(FLOOD_LIMITS, 0)
            self.resets = self.completed = self.data_frames_sent = 0
            return
        for kind, count in self.counts.items():
            limit = FLOOD_LIMITS[kind]
            if kind == "window_update":
                limit += 2 * self.data_frames_sent
            if count > limit:
                self._calm(f"{kind}_flood")
        if self.resets - self.completed > RAPID_RESETS:
            self._calm("rapid_reset")

    def note(self, reason: str) -> None:
        self.abuse[reason] = self.abuse.get(reason, 0) + 1

    def _calm(self, reason: str) -> None:
        raise ConnectionError_(f.ENHANCE_YOUR_CALM, reason)

    def _fail(self, code: int, reason: str) -> None:
        if code == f.ENHANCE_YOUR_CALM:
            self.note(reason)
        if not self.goaway_sent:
            self.goaway_sent = True
            self.out += f.goaway(self.last_peer_stream, code, reason.encode())
        self.closed = True
        self.handler.on_error(code, reason)


# The handlers of the other frame types (a module constant: a compiled class takes no
# attributes after its definition).
_DISPATCH: dict[int, Callable[..., None]] = {
    f.PRIORITY: Connection._on_priority,
    f.RST_STREAM: Connection._on_rst_stream,
    f.SETTINGS: Connection._on_settings,
    f.PUSH_PROMISE: Connection._on_push_promise,
    f.PING: Connection._on_ping,
    f.GOAWAY: Connection._on_goaway,
    f.WINDOW_UPDATE: Connection._on_window_update,
    f.CONTINUATION: Connection._on_continuation,
}


def _unpad(payload: bytes) -> bytes:
    if not payload:
        raise ConnectionError_(f.PROTOCOL_ERROR, "missing pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ConnectionError_(f.PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1:len(payload) - pad]
