"""A raw HTTP/2 client for frame-level tests: it writes whatever frames a test asks for,
valid or not, and reads the answers with an independent implementation (hyperframe for
frames, hpack for headers), so the proxy's HTTP/2 code is never checked against itself."""

from __future__ import annotations

import socket
import ssl
import struct
import time

import hpack
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, PriorityFrame, RstStreamFrame, SettingsFrame,
                              WindowUpdateFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def request_headers(path: str = "/", method: str = "GET", authority: str = "h",
                    extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    return [(":method", method), (":scheme", "http"), (":path", path),
            (":authority", authority), *(extra or [])]


class Response:
    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.trailers: list[tuple[str, str]] = []
        self.body = b""
        self.reset: int | None = None
        self.ended = False

    @property
    def status(self) -> int:
        return int(dict(self.headers)[":status"])

    def header(self, name: str) -> str | None:
        return dict(self.headers).get(name)


class RawH2:
    def __init__(self, port: int, tls: ssl.SSLContext | None = None,
                 settings: dict[int, int] | None = None, timeout: float = 5.0,
                 preamble: bytes = b"", server_hostname: str = "localhost") -> None:
        """`preamble`: bytes sent in clear before anything else (a PROXY header)."""
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if preamble:
            sock.sendall(preamble)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=server_hostname)
        self.sock = sock
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buffer = b""
        self.frames: list[Frame] = []           # every frame received, in order
        self.responses: dict[int, Response] = {}
        self.goaway: GoAwayFrame | None = None
        self.closed = False
        self.send_failed = False
        self.next_id = 1
        frame = SettingsFrame(0)
        frame.settings = settings or {}
        self.send(PREFACE + frame.serialize())

    # writing

    def send(self, data: bytes) -> None:
        """Write; once the proxy closed (a flood test goes on sending), writes are dropped."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.send_failed = True

    def new_id(self) -> int:
        stream_id = self.next_id
        self.next_id += 2
        return stream_id

    def block(self, headers: list[tuple[str, str]]) -> bytes:
        return self.encoder.encode(headers)

    def headers(self, stream_id: int, headers: list[tuple[str, str]], end_stream: bool = True,
                end_headers: bool = True) -> None:
        """HEADERS, with CONTINUATION frames when the block is over the 16 KiB frame size."""
        block = self.block(headers)
        frame = HeadersFrame(stream_id)
        frame.data, rest = block[:16384], block[16384:]
        last = end_headers and not rest
        frame.flags = {f for f, on in (("END_STREAM", end_stream), ("END_HEADERS", last)) if on}
        self.send(frame.serialize())
        while rest:
            piece, rest = rest[:16384], rest[16384:]
            self.continuation(stream_id, piece, end_headers=end_headers and not rest)

    def request(self, path: str = "/", method: str = "GET", body: bytes | None = None,
                extra: list[tuple[str, str]] | None = None) -> int:
        stream_id = self.new_id()
        self.headers(stream_id, request_headers(path, method, extra=extra),
                     end_stream=body is None)
        if body is not None:
            self.data(stream_id, body, end_stream=True)
        return stream_id

    def data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        frame = DataFrame(stream_id)
        frame.data = data
        if end_stream:
            frame.flags.add("END_STREAM")
        self.send(frame.serialize())

    def frame(self, frame: Frame) -> None:
        self.send(frame.serialize())

    def rst(self, stream_id: int, code: int = 8) -> None:
        frame = RstStreamFrame(stream_id)
        frame.error_code = code
        self.send(frame.serialize())

    def ping(self, payload: bytes = b"12345678") -> None:
        frame = PingFrame(0)
        frame.opaque_data = payload
        self.send(frame.serialize())

    def priority(self, stream_id: int) -> None:
        frame = PriorityFrame(stream_id)
        frame.depends_on = 0
        self.send(frame.serialize())

    def window_update(self, stream_id: int, increment: int) -> None:
        frame = WindowUpdateFrame(stream_id)
        frame.window_increment = increment
        self.send(frame.serialize())

    def settings(self, values: dict[int, int] | None = None) -> None:
        frame = SettingsFrame(0)
        frame.settings = values or {}
        self.send(frame.serialize())

    def continuation(self, stream_id: int, data: bytes, end_headers: bool = False) -> None:
        frame = ContinuationFrame(stream_id)
        frame.data = data
        if end_headers:
            frame.flags.add("END_HEADERS")
        self.send(frame.serialize())

    # reading

    def _read(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return False
        self.buffer += data
        while len(self.buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
            if len(self.buffer) < 9 + length:
                break
            frame.parse_body(memoryview(self.buffer[9:9 + length]))
            self.buffer = self.buffer[9 + length:]
            self._handle(frame)
        return True

    def _handle(self, frame: Frame) -> None:
        self.frames.append(frame)
        if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
            ack = SettingsFrame(0)
            ack.flags.add("ACK")
            self.send(ack.serialize())
        elif isinstance(frame, GoAwayFrame):
            self.goaway = frame
        elif isinstance(frame, HeadersFrame):
            response = self.responses.setdefault(frame.stream_id, Response())
            headers = [(k.decode() if isinstance(k, bytes) else k,
                        v.decode() if isinstance(v, bytes) else v)
                       for k, v in self.decoder.decode(frame.data)]
            if headers and headers[0][0] == ":status" and headers[0][1].startswith("1"):
                return                          # 1xx
            if response.headers:
                response.trailers = headers
            else:
                response.headers = headers
            response.ended = "END_STREAM" in frame.flags
        elif isinstance(frame, DataFrame):
            response = self.responses.setdefault(frame.stream_id, Response())
            response.body += frame.data
            response.ended = "END_STREAM" in frame.flags
            if frame.flow_controlled_length:
                for stream_id in (0, frame.stream_id):
                    self.window_update(stream_id, frame.flow_controlled_length)
        elif isinstance(frame, RstStreamFrame):
            self.responses.setdefault(frame.stream_id, Response()).reset = frame.error_code

    def wait(self, predicate, timeout: float = 5.0):  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.closed or time.monotonic() > deadline:
                raise AssertionError("condition not met" + (" (connection closed)"
                                                            if self.closed else ""))
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self._read()
            except socket.timeout:
                pass

    def response(self, stream_id: int, timeout: float = 5.0) -> Response:
        def done() -> Response | None:
            response = self.responses.get(stream_id)
            if response is not None and (response.ended or response.reset is not None):
                return response
            return None
        return self.wait(done, timeout)

    def wait_goaway(self, timeout: float = 5.0) -> GoAwayFrame:
        return self.wait(lambda: self.goaway, timeout)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self._read()
            except socket.timeout:
                pass
        return self.closed

    def close(self) -> None:
        self.sock.close()


def raw_settings_frame(values: dict[int, int]) -> bytes:
    payload = b"".join(struct.pack("!HI", k, v) for k, v in values.items())
    return struct.pack("!HBBBI", len(payload) >> 8, len(payload) & 0xFF, 4, 0, 0) + payload
