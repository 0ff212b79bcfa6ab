"""The sans-IO HTTP/2 connection (lbproxy/http2/connection.py), both sides in memory: what
each side is told, and flow control, limits and framing errors."""

from __future__ import annotations

import struct

from lbproxy.http2 import frames as f
from lbproxy.http2.connection import HIGH_WATER, Connection, Settings


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_headers(self, stream, headers, end_stream):
        self.events.append(("headers", stream.id, headers, end_stream))

    def on_data(self, stream, data, end_stream):
        self.events.append(("data", stream.id, data, end_stream))

    def on_reset(self, stream, code):
        self.events.append(("reset", stream.id, code))

    def on_drained(self, stream):
        self.events.append(("drained", stream.id))

    def on_goaway(self, last, code):
        self.events.append(("goaway", last, code))

    def on_error(self, code, reason):
        self.events.append(("error", code, reason))

    def on_oversized(self, stream):
        self.events.append(("oversized", stream.id))

    def of(self, kind: str) -> list[tuple]:
        return [event for event in self.events if event[0] == kind]


def pair(server_settings: Settings | None = None, client_settings: Settings | None = None):
    clock = lambda: 0.0  # noqa: E731
    client_events, server_events = Recorder(), Recorder()
    client = Connection(client_events, True, client_settings or Settings(), clock)
    server = Connection(server_events, False, server_settings or Settings(), clock)
    client.start()
    server.start()
    exchange(client, server)
    return client, server, client_events, server_events


def exchange(a: Connection, b: Connection) -> None:
    """Deliver what each side wrote until both are quiet."""
    while a.out or b.out:
        if a.out:
            data, a.out[:] = bytes(a.out), b""
            b.receive(data)
        if b.out:
            data, b.out[:] = bytes(b.out), b""
            a.receive(data)


REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"h")]


def test_a_request_and_a_response_with_trailers():
    client, server, client_events, server_events = pair()
    stream = client.open_stream()
    client.send_headers(stream, REQUEST, False)
    client.send_data(stream, b"body", True)
    exchange(client, server)
    assert server_events.of("headers") == [("headers", 1, REQUEST, False)]
    assert server_events.of("data") == [("data", 1, b"body", True)]
    served = server.streams[1]
    server.send_headers(served, [(b":status", b"200")], False)
    server.send_data(served, b"answer")
    server.send_trailers(served, [(b"grpc-status", b"0")])
    exchange(client, server)
    assert [e[0] for e in client_events.events] == ["headers", "data", "headers"]
    assert client_events.events[-1] == ("headers", 1, [(b"grpc-status", b"0")], True)
    assert not client.streams and not server.streams          # closed both ways


def answering():
    """A client with 65,535 bytes of window per stream has sent a request; the server's
    stream for it has sent its head. Returns the pair, their recorders, that stream."""
    client, server, client_events, server_events = pair(
        client_settings=Settings(initial_window_size=65535))
    client.send_headers(client.open_stream(), REQUEST, True)
    exchange(client, server)
    served = server.streams[1]
    server.send_headers(served, [(b":status", b"200")], False)
    return client, server, client_events, server_events, served


def test_output_waits_for_the_window_and_the_drain_is_told():
    client, server, client_events, server_events, served = answering()
    server.send_data(served, b"x" * 200_000, True)
    served.paused = True                      # the protocol paused its source
    exchange(client, server)
    received = sum(len(e[2]) for e in client_events.of("data"))
    assert received == 65535 and served.pending_size == 200_000 - 65535
    while served.pending_size:
        client.ack(client.streams[1], received)  # the client consumed what it got
        before = received
        exchange(client, server)
        received = sum(len(e[2]) for e in client_events.of("data"))
        assert received > before
    assert ("drained", 1) in server_events.events
    assert client_events.of("data")[-1][3] is True               # END_STREAM last
    assert received == 200_000


def test_streams_past_the_limit_are_refused_and_hpack_stays_in_step():
    client, server, client_events, server_events = pair(Settings(max_concurrent_streams=2))
    streams = [client.open_stream() for _ in range(3)]
    for stream in streams:
        client.send_headers(stream, REQUEST + [(b"x-n", b"%d" % stream.id)], False)
    exchange(client, server)
    assert [e[1] for e in server_events.of("headers")] == [1, 3]
    assert client_events.of("reset") == [("reset", 5, f.REFUSED_STREAM)]
    assert server.abuse == {"refused_stream": 1}
    server.reset(server.streams[1], f.CANCEL)
    fourth = client.open_stream()
    client.send_headers(fourth, REQUEST + [(b"x-n", b"7")], True)
    exchange(client, server)
    assert server_events.of("headers")[-1][2][-1] == (b"x-n", b"7")


def test_a_changed_initial_window_moves_open_streams():
    client, server, client_events, server_events = pair()
    stream = client.open_stream()
    client.send_headers(stream, REQUEST, True)
    exchange(client, server)
    served = server.streams[1]
    before = served.send_window
    client.out += f.settings({f.INITIAL_WINDOW_SIZE: (1 << 20) + 1000})
    exchange(client, server)
    assert served.send_window == before + 1000


def test_padding_and_continuation_are_read():
    client, server, client_events, server_events = pair()
    block = client.encoder.encode(REQUEST)
    client.out += f.frame(f.HEADERS, f.PADDED, 1, bytes([3]) + block[:5] + b"\0\0\0")
    client.out += f.frame(f.CONTINUATION, f.END_HEADERS, 1, block[5:])
    client.out += f.frame(f.DATA, f.PADDED | f.END_STREAM, 1, bytes([2]) + b"ab" + b"\0\0")
    client.next_stream_id = 3
    exchange(client, server)
    assert server_events.of("headers")[0][2] == REQUEST
    assert server_events.of("data") == [("data", 1, b"ab", True)]


def test_framing_errors_end_the_connection():
    client, server, client_events, server_events = pair()
    length = 65536                       # over the 16384 bytes we allow
    client.out += struct.pack("!HBBBI", length >> 8, length & 0xFF, f.DATA, 0, 1) + b"\0" * length
    exchange(client, server)
    assert server_events.of("error")[0][1] == f.FRAME_SIZE_ERROR
    assert client_events.of("goaway")[0][2] == f.FRAME_SIZE_ERROR


def test_data_past_the_stream_window_resets_the_stream():
    client, server, client_events, server_events = pair(
        Settings(initial_window_size=65535))
    stream = client.open_stream()
    client.send_headers(stream, REQUEST, False)
    client.out += f.frame(f.DATA, 0, 1, b"x" * 16384) * 4 + f.frame(f.DATA, 0, 1, b"x" * 100)
    exchange(client, server)
    assert client_events.of("reset") == [("reset", 1, f.FLOW_CONTROL_ERROR)]
    assert not server_events.of("error")
    assert HIGH_WATER > 0


def test_frames_arriving_byte_by_byte_are_read_once_whole():
    client, server, _, server_events = pair()
    stream = client.open_stream()
    client.send_headers(stream, REQUEST, False)
    client.send_data(stream, b"y" * 20_000, True)         # two DATA frames
    wire, client.out[:] = bytes(client.out), b""
    for i in range(len(wire)):
        server.receive(wire[i:i + 1])
        if i < len(wire) - 1:                             # the last frame is not whole yet
            assert not any(end for _, _, _, end in server_events.of("data"))
    assert server_events.of("headers") == [("headers", 1, REQUEST, False)]
    assert [(e[2], e[3]) for e in server_events.of("data")] == [(b"y" * 16384, False),
                                                               (b"y" * 3616, True)]
    assert not server.buffer


def test_trailers_waiting_for_the_window_are_encoded_when_they_go_out():
    """HPACK blocks must reach the peer in the order they were encoded: trailers held
    behind flow control must not be encoded before a head that goes out first."""
    client, server, client_events, _ = pair(
        client_settings=Settings(initial_window_size=65535))
    first, second = client.open_stream(), client.open_stream()
    client.send_headers(first, REQUEST, True)
    client.send_headers(second, REQUEST, True)
    exchange(client, server)
    one, two = server.streams[1], server.streams[3]
    server.send_headers(one, [(b":status", b"200")], False)
    server.send_data(one, b"x" * 70_000)                    # more than the window
    server.send_trailers(one, [(b"grpc-status", b"0"), (b"x-trailer", b"t")])
    server.send_headers(two, [(b":status", b"200"), (b"x-trailer", b"t")], True)
    exchange(client, server)
    client.ack(client.streams[1], 65535)
    exchange(client, server)
    assert client_events.of("error") == []
    heads = {(e[1], e[3]): e[2] for e in client_events.of("headers")}
    assert heads[(3, True)] == [(b":status", b"200"), (b"x-trailer", b"t")]
    assert heads[(1, True)] == [(b"grpc-status", b"0"), (b"x-trailer", b"t")]


def window_updates(data: bytes) -> list[tuple[int, int]]:
    """(stream id, increment) of the WINDOW_UPDATE frames in `data`."""
    found, pos = [], 0
    while pos + 9 <= len(data):
        high, low, kind, _, stream_id = struct.unpack_from("!HBBBI", data, pos)
        length = (high << 8) | low
        if kind == f.WINDOW_UPDATE:
            found.append((stream_id, struct.unpack_from("!I", data, pos + 9)[0]))
        pos += 9 + length
    return found


def test_a_held_stream_gives_its_window_back_only_once_released():
    client, server, _, _ = pair(Settings(initial_window_size=65535))
    stream = client.open_stream()
    client.send_headers(stream, REQUEST, False)
    exchange(client, server)
    served = server.streams[1]
    server.hold(served, 2)
    server.hold(served, 4)
    client.send_data(stream, b"z" * 40_000)
    exchange(client, server)
    server.delivered(served, 40_000)                 # passed on, but held
    assert window_updates(bytes(server.out)) == [] and served.unacked == 40_000
    assert server.release(served, 2) is False         # another reason still holds
    assert server.release(served, 4) is True          # the last one: acked now
    assert (1, 40_000) in window_updates(bytes(server.out)) and served.unacked == 0


def test_a_source_too_fast_is_paused_once_and_told_when_drained():
    client, server, _, server_events, served = answering()
    server.send_data(served, b"x" * (65535 + HIGH_WATER + 1))
    assert server.source_too_fast(served) is True
    assert server.source_too_fast(served) is False    # paused already
    exchange(client, server)
    client.ack(client.streams[1], 65535 + HIGH_WATER)
    exchange(client, server)
    assert ("drained", 1) in server_events.events and not served.paused
