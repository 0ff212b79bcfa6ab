"""The gRPC health check (`health_check: {type: grpc}`): grpc.health.v1.Health/Check.

One fresh HTTP/2 connection per probe (cleartext h2c), one unary call asking about
`service` ("" = the server as a whole), the answer judged: grpc-status 0 and the status
SERVING (1) is up; anything else says why it is down, in HAProxy's wording where it has
one. The protobuf messages are small enough to write by hand: the request is field 1
(the service name), the response field 1 (the status enum).
"""

from __future__ import annotations

import asyncio
import struct

from lbproxy.config.schema import Address
from lbproxy.http2.connection import Connection, Settings, Stream
from lbproxy.http2.messages import Header
from lbproxy.proxy.state import OUT_OF_FDS

PATH = b"/grpc.health.v1.Health/Check"
SERVING = 1
STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
PROBE_SETTINGS = Settings(max_concurrent_streams=1, initial_window_size=65535,
                          max_header_list_size=16384)


class _Answer:
    """Collects one stream's response from the HTTP/2 connection's callbacks."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.done = False
        self.error: str | None = None

    def on_headers(self, stream: Stream, headers: list[Header], end_stream: bool) -> None:
        self.headers.update(headers)
        self.done = self.done or end_stream

    def on_data(self, stream: Stream, data: bytes, end_stream: bool) -> None:
        self.body += data
        self.done = self.done or end_stream

    def on_reset(self, stream: Stream, code: int) -> None:
        self.error = f"stream reset ({code})"

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        if code:
            self.error = f"GOAWAY ({code})"

    def on_error(self, code: int, reason: str) -> None:
        self.error = f"HTTP/2 error: {reason}"

    def on_drained(self, stream: Stream) -> None:
        pass

    def on_oversized(self, stream: Stream) -> None:
        self.error = "oversized response headers"


def request_message(service: str) -> bytes:
    """HealthCheckRequest{service}, framed as a gRPC message."""
    name = service.encode()
    message = b"\x0a" + _varint(len(name)) + name if name else b""
    return b"\x00" + struct.pack("!I", len(message)) + message


def verdict(answer: _Answer) -> tuple[bool, str]:
    """Judge a finished answer: (up, reason)."""
    if answer.error is not None:
        return False, f"Layer7 {answer.error}"
    if answer.headers.get(b":status") != b"200":
        return False, f"Layer7 wrong status {answer.headers.get(b':status', b'?').decode()}"
    grpc_status = answer.headers.get(b"grpc-status")
    if grpc_status != b"0":
        message = answer.headers.get(b"grpc-message", b"").decode("latin-1")
        return False, f"Layer7 gRPC status {grpc_status.decode() if grpc_status else '?'} " \
                      f"{message}".rstrip()
    body = answer.body
    status = 0
    if len(body) >= 5:
        message = body[5:5 + struct.unpack_from("!I", body, 1)[0]]
        if message[:1] == b"\x08":
            status = message[1]
    if status != SERVING:
        return False, f"Layer7 gRPC health {STATUS_NAMES.get(status, str(status))}"
    return True, "Layer7 check passed (SERVING)"


async def grpc_probe(address: Address, timeout: float, service: str = "",
                     port: int | None = None) -> tuple[bool, str]:
    loop = asyncio.get_running_loop()
    answer = _Answer()
    layer = 4
    try:
        async with asyncio.timeout(timeout):
            if address.unix is not None:
                reader, writer = await asyncio.open_unix_connection(address.unix)
                authority = b"localhost"
            else:
                reader, writer = await asyncio.open_connection(address.host,
                                                               port or address.port)
                authority = str(Address(address.host, port or address.port)).encode()
            layer = 7
            try:
                h2 = Connection(answer, client=True, settings=PROBE_SETTINGS, clock=loop.time)
                h2.start()
                stream = h2.open_stream()
                h2.send_headers(stream, [(b":method", b"POST"), (b":scheme", b"http"),
                                         (b":path", PATH), (b":authority", authority),
                                         (b"content-type", b"application/grpc"),
                                         (b"te", b"trailers")], False)
                h2.send_data(stream, request_message(service), True)
                while not answer.done and answer.error is None:
                    writer.write(bytes(h2.out))
                    h2.out.clear()
                    data = await reader.read(65536)
                    if not data:
                        answer.error = answer.error or "connection closed"
                        break
                    h2.receive(data)
            finally:
                writer.close()
    except TimeoutError:
        return False, f"Layer{layer} timeout"
    except ConnectionRefusedError:
        return False, "Layer4 connection refused"
    except OSError as exc:
        if exc.errno in OUT_OF_FDS:
            raise                   # the proxy's own trouble: no verdict on the server
        return False, f"Layer{layer} connection problem: {exc.strerror or exc}"
    return verdict(answer)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
