"""The HTTP/1.1 client protocol with raw bytes on fake transports: what the server gets,
what the client gets, in what order, with what back-pressure and which timeouts."""

from __future__ import annotations

import pytest

from lbproxy.proxy.client import BODY, HEAD, IDLE, NEW, TUNNEL, WAITING
from lbproxy.proxy.exchange import BODY_BUFFER_LIMIT
from tests.unit.dataplane import OK, DataPlane, config, get

TIMEOUTS = {"timeouts": {"http_request": "5s", "http_keep_alive": "20s", "client": "30s"}}


@pytest.fixture
def plane() -> DataPlane:
    return DataPlane(config(frontend=TIMEOUTS, backend={"timeouts": {"server": "100s"}}))


def head_lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def test_a_request_goes_out_rebuilt_and_its_answer_comes_back(plane):
    client = plane.connect()
    client.send(get("/a?x=1", extra=b"Connection: keep-alive\r\nX-Mine: 1\r\n"))
    upstream, server = plane.pool("app1").open()
    lines = head_lines(server.take())
    assert lines[0] == b"GET /a?x=1 HTTP/1.1"
    assert b"Host: h" in lines and b"X-Mine: 1" in lines
    assert b"x-forwarded-for: 10.0.0.1" in lines and b"x-forwarded-proto: http" in lines
    assert not any(line.lower().startswith(b"connection") for line in lines)
    upstream.data_received(OK)
    assert client.received() == OK
    assert client.protocol.phase == IDLE
    assert client.protocol.deadline == plane.loop.time.now + 20     # http_keep_alive


def test_the_server_connection_is_reused(plane):
    client = plane.connect()
    client.send(get("/1"))
    upstream, server = plane.pool("app1").open()
    upstream.data_received(OK)
    client.send(get("/2"))
    assert not plane.pool("app1").waiting                   # no new connect: the idle one
    assert server.take().count(b" HTTP/1.1\r\n") == 2
    upstream.data_received(OK)
    assert client.received() == OK + OK


def test_pipelined_requests_go_one_at_a_time_and_answers_keep_their_order(plane):
    client = plane.connect()
    client.send(get("/1") + get("/2"))
    upstream, server = plane.pool("app1").open()
    assert server.take().startswith(b"GET /1 ")
    assert not client.transport.reading             # the second waits for the first
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
    assert server.take().startswith(b"GET /2 ")     # sent on the same, pooled connection
    assert client.transport.reading
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
    received = client.received()
    assert received.index(b"\r\n\r\n1") < received.index(b"\r\n\r\n2")


def test_response_without_length_is_chunked_for_http11_and_closes_for_http10(plane):
    client = plane.connect()
    client.send(get("/"))
    upstream, server = plane.pool("app1").open()
    upstream.data_received(b"HTTP/1.1 200 OK\r\n\r\nabc")
    assert client.received().endswith(b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
    server.close()
    plane.settle()                                  # the close ends the body
    assert client.received() == b"0\r\n\r\n"
    old = plane.connect()
    old.send(b"GET / HTTP/1.0\r\n\r\n")
    upstream, _ = plane.pool("app1").open()
    upstream.data_received(b"HTTP/1.1 200 OK\r\n\r\nabc")
    assert b"connection: close\r\n\r\nabc" in old.received()


@pytest.mark.parametrize("head, http11, keep_alive", [
    (b"GET / HTTP/1.1\r\nHost: h\r\n", True, True),
    (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n", True, False),
    (b"GET / HTTP/1.0\r\n", False, False),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n", False, True),
    # llhttp takes Proxy-Connection as Connection; we do not: HTTP/1.0, and it closes
    (b"GET / HTTP/1.0\r\nProxy-Connection: keep-alive\r\n", False, False),
    (b"GET / HTTP/1.1\r\nHost: h\r\nProxy-Connection: close\r\n", True, False),
])
def test_version_and_keep_alive_of_a_request(plane, head, http11, keep_alive):
    """The version is asked of the parser only when keep-alive does not already say 1.1."""
    client = plane.connect()
    client.send(head + b"\r\n")
    exchange = client.protocol.current
    assert (exchange.http11, exchange.keep_alive) == (http11, keep_alive)
    upstream, _ = plane.pool("app1").open()
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    assert (b"connection: close" in client.received()) == (not keep_alive)


@pytest.mark.parametrize("head", [b"GET / HTTP/2.0\r\nHost: h\r\nConnection: keep-alive\r\n",
                                  b"GET / HTTP/2.0\r\nHost: h\r\nProxy-Connection: keep-alive\r\n"])
def test_http_2_0_kept_alive_is_still_refused(plane, head):
    """llhttp keeps such a request alive: the version must still be asked, and refused."""
    client = plane.connect()
    client.send(head + b"\r\n")
    assert client.received().startswith(b"HTTP/1.1 505 ")
    assert not plane.pool("app1").waiting


def test_expect_100_continue(plane):
    client = plane.connect()
    client.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\n\r\n")
    upstream, server = plane.pool("app1").open()
    assert server.take().endswith(b"\r\n\r\n")      # the head only: the body waits
    upstream.data_received(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert client.received() == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.send(b"hello")
    assert server.take() == b"hello"
    upstream.data_received(OK)
    assert client.received() == OK


def test_chunked_body_is_forwarded_chunked_as_it_arrives(plane):
    client = plane.connect()
    client.send(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n")
    upstream, server = plane.pool("app1").open()
    head, body = server.take().split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" in head_lines(head)
    assert body == b"3\r\nabc\r\n"                           # the extension is not passed on
    client.send(b"2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert server.take() == b"2\r\nde\r\n0\r\n\r\n"           # trailers dropped


def test_request_body_waits_for_a_connection_with_bounded_buffering(plane):
    client = plane.connect()
    size = BODY_BUFFER_LIMIT * 2
    client.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size)
    chunk = b"x" * 65536
    while client.transport.reading:
        client.send(chunk)
    sent = client.protocol.parsing.body_size
    assert BODY_BUFFER_LIMIT < sent <= BODY_BUFFER_LIMIT + len(chunk)
    upstream, server = plane.pool("app1").open()
    assert client.transport.reading                 # attached: the buffer went out
    assert len(server.take().split(b"\r\n\r\n", 1)[1]) == sent


def test_back_pressure_both_ways(plane):
    client = plane.connect()
    client.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n")
    upstream, server = plane.pool("app1").open()
    upstream.pause_writing()                        # the server does not read the body
    assert not client.transport.reading
    upstream.resume_writing()
    assert client.transport.reading
    client.protocol.pause_writing()                 # the client does not read the answer
    assert not server.reading
    client.protocol.resume_writing()
    assert server.reading


def test_upgrade_holds_what_follows_until_the_101(plane):
    client = plane.connect()
    client.send(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"\r\nframe-1")
    upstream, server = plane.pool("app1").open()
    head = server.take()
    assert head.endswith(b"\r\n\r\n") and b"upgrade: websocket" in head
    client.send(b"frame-2")
    assert server.take() == b""                     # held: still HTTP until the answer
    upstream.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           b"Connection: Upgrade\r\n\r\nhello")
    assert client.received().endswith(b"upgrade: websocket\r\n\r\nhello")
    assert server.take() == b"frame-1frame-2"
    assert client.protocol.phase == TUNNEL
    client.send(b"raw")
    upstream.data_received(b"back")
    assert server.take() == b"raw" and client.received() == b"back"


def test_declined_upgrade_makes_what_follows_the_next_request(plane):
    client = plane.connect()
    client.send(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"\r\n" + get("/next"))
    upstream, server = plane.pool("app1").open()
    assert b"/next" not in server.take()
    upstream.data_received(OK)
    assert server.closed                            # a server that declined is not reused
    second, server2 = plane.pool("app1").open()
    assert server2.take().startswith(b"GET /next ")
    second.data_received(OK)
    assert client.received() == OK + OK


def test_phase_timeouts(plane):
    silent = plane.connect()
    assert silent.protocol.phase == NEW
    plane.advance(5.1)                              # http_request: closed, nothing said
    assert silent.transport.closed and silent.received() == b""

    slow_head = plane.connect()
    slow_head.send(b"GET / HTTP/1.1\r\nHo")
    assert slow_head.protocol.phase == HEAD
    plane.advance(5.1)
    assert slow_head.received().startswith(b"HTTP/1.1 408 ")

    slow_body = plane.connect()
    slow_body.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab")
    assert slow_body.protocol.phase == BODY
    plane.pool("app1").open()
    plane.advance(29)
    slow_body.send(b"c")                            # each read restarts the client timeout
    plane.advance(29)
    assert not slow_body.transport.closed
    plane.advance(1.1)
    assert slow_body.received().startswith(b"HTTP/1.1 408 ")

    idle = plane.connect()
    idle.send(get())
    upstream, _ = plane.pool("app1").open()
    assert idle.protocol.phase == WAITING and idle.protocol.deadline == 0.0
    upstream.data_received(OK)
    plane.advance(19)
    assert not idle.transport.closed
    plane.advance(1.1)                              # http_keep_alive
    assert idle.transport.closed and idle.received() == OK


def test_server_timeout_counts_inactivity_both_ways(plane):
    client = plane.connect()
    client.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\na")
    upstream, _ = plane.pool("app1").open()
    plane.advance(25)
    client.send(b"b")                               # body sent to the server: activity
    plane.advance(25)
    client.send(b"c")
    plane.advance(60)                               # 110 s after the head was sent
    assert not client.transport.closed
    plane.advance(40.1)                             # 100 s of silence from the server: 504
    assert client.received().startswith(b"HTTP/1.1 504 ")


def test_requests_before_a_bad_one_are_answered_first(plane):
    client = plane.connect()
    client.send(get("/1") + b"GET /2 HTTP/1.1\r\nHost : h\r\n\r\n")
    upstream, server = plane.pool("app1").open()
    upstream.data_received(OK)
    received = client.received()
    assert received.startswith(OK) and received[len(OK):].startswith(b"HTTP/1.1 400 ")
    assert client.transport.closed
    assert server.take().count(b"GET ") == 1


def test_graceful_stop_closes_idle_connections_only(plane):
    idle = plane.connect()
    busy = plane.connect()
    busy.send(get())
    upstream, _ = plane.pool("app1").open()
    plane.state.stopping = True
    for client in (idle, busy):
        client.protocol.close_if_idle()
    assert idle.transport.closed and not busy.transport.closed
    upstream.data_received(OK)
    assert b"connection: close" in busy.received() and busy.transport.closed
