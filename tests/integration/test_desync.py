"""Request smuggling and desync: what reaches a server is what the proxy parsed, checked
and routed, and every client response answers the request it pairs with.

A recording server (tests/desync/recorder.py) splits what the proxy forwards with h11,
a strict parser, and answers each request with what it read, so these tests see both
ends. Each finding of the desync review has its regression test here; a seeded
differential fuzz closes the file (`python -m bench desync` runs a long one).
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from tests.desync import check, generate
from tests.desync.recorder import RecordingServer
from tests.harness import Reader, connect, simple_config, wait_for

DENY_ADMIN = {"acls": {"is_admin": "path_beg /admin"},
              "http_request": [{"deny": {"status": 403}, "if": "is_admin"}]}
FAST = {"timeouts": {"http_request": "1s", "client": "2s"}}


@pytest.fixture
def recorder():
    with RecordingServer() as server:
        yield server


@pytest.fixture
def through(recorder, proxy):
    """A proxy with a deny rule for /admin in front of the recording server."""
    return proxy(simple_config([recorder.port], **DENY_ADMIN, **FAST))


def seen(response) -> dict | None:
    value = response.header("x-seen")
    return json.loads(value) if value else None


def exchange(port: int, raw: bytes, answers: int) -> tuple[list, Reader]:
    sock = connect(port)
    sock.sendall(raw)
    reader = Reader(sock)
    return [reader.read_response() for _ in range(answers)], reader


def server_requests(recorder) -> list[tuple[str, str]]:
    return [(r.method, r.target) for r in recorder.recording.requests.values()]


def headers_seen(recorder, index: int = -1) -> dict[str, str]:
    request = list(recorder.recording.requests.values())[index]
    return {k.lower(): v for k, v in request.headers}


# F1: bytes after an Upgrade request

UPGRADE_WS = (b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")


def test_request_after_a_declined_upgrade_is_parsed_and_routed(through, recorder):
    (ws, admin), reader = exchange(through.port, UPGRADE_WS
                                   + b"GET /admin HTTP/1.1\r\nHost: h\r\n\r\n", 2)
    assert ws.status == 200 and seen(ws)["target"] == "/ws"
    assert admin.status == 403                   # the deny rule ran on it
    assert server_requests(recorder) == [("GET", "/ws")]
    assert recorder.recording.errors == []
    reader.sock.close()


def test_declined_upgrade_goes_on_with_the_next_requests(through, recorder):
    (ws, a, b), reader = exchange(through.port, UPGRADE_WS
                                  + b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                                  + b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n", 3)
    assert [seen(r)["target"] for r in (ws, a, b)] == ["/ws", "/a", "/b"]
    assert server_requests(recorder) == [("GET", "/ws"), ("GET", "/a"), ("GET", "/b")]
    reader.sock.close()


def test_server_connection_that_saw_an_upgrade_is_not_reused(through, recorder):
    """A server that declined an upgrade may have read on: its connection is closed, so
    no late answer can reach another client's request."""
    (ws,), reader = exchange(through.port, UPGRADE_WS, 1)
    reader.sock.close()
    with connect(through.port) as sock:
        sock.sendall(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
        nxt = Reader(sock).read_response()
    assert seen(nxt)["target"] == "/next"
    requests = recorder.recording.requests
    assert requests[seen(ws)["id"]].connection != requests[seen(nxt)["id"]].connection


@pytest.mark.parametrize("framing", [
    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"Content-Length: 3\r\n\r\nabc",
], ids=["chunked", "content-length"])
def test_upgrade_with_a_body_is_an_ordinary_request(through, recorder, framing):
    raw = (b"POST /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           + framing + b"GET /admin HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    (post, admin, b), reader = exchange(through.port, raw, 3)
    assert seen(post) == {**seen(post), "method": "POST", "target": "/ws", "body": 3}
    assert "upgrade" not in headers_seen(recorder, 0)
    assert admin.status == 403
    assert seen(b)["target"] == "/b"
    assert server_requests(recorder) == [("POST", "/ws"), ("GET", "/b")]
    reader.sock.close()


def test_bytes_sent_before_the_101_go_through_the_tunnel(through, recorder):
    early = b"GET /admin HTTP/1.1\r\nHost: h\r\n\r\n"     # tunnel data, whatever it looks like
    with connect(through.port) as sock:
        sock.sendall(b"GET /ws101 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
                     b"Upgrade: websocket\r\n\r\n" + early)
        reader = Reader(sock)
        assert reader.read_response(head_only=True).status == 101
        while len(reader.buf) < len(early):
            assert reader._fill()
        assert reader.buf == early                   # echoed by the server's tunnel
        sock.sendall(b"more")
        wait_for(lambda: bytes(next(iter(recorder.recording.tunnels.values()))) == early + b"more")
    assert server_requests(recorder) == [("GET", "/ws101")]


# F2: Upgrade without Connection: upgrade, or on HTTP/1.0

@pytest.mark.parametrize("raw", [
    b"GET /ws101 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
    b"GET /ws101 HTTP/1.0\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET /ws101 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
], ids=["no-connection-upgrade", "http10", "h2c"])
def test_upgrade_that_is_not_a_protocol_switch_is_dropped(through, recorder, raw):
    (response,), reader = exchange(through.port, raw, 1)
    assert response.status == 200                # the server was not asked to switch
    headers = headers_seen(recorder)
    assert "upgrade" not in headers and "http2-settings" not in headers
    assert "upgrade" not in headers.get("connection", "").lower()
    reader.sock.close()


def test_request_after_a_dropped_upgrade_on_http10_is_parsed(through, recorder):
    raw = (b"GET /a HTTP/1.0\r\nHost: h\r\nConnection: upgrade, keep-alive\r\n"
           b"Upgrade: websocket\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n")
    (a, admin), reader = exchange(through.port, raw, 2)
    assert seen(a)["target"] == "/a" and admin.status == 403
    assert server_requests(recorder) == [("GET", "/a")]
    reader.sock.close()


# F3: absolute-form targets

def test_absolute_form_with_another_host_is_refused(through, recorder):
    (response,), reader = exchange(through.port,
                                   b"GET http://evil/x HTTP/1.1\r\nHost: good\r\n\r\n", 1)
    assert response.status == 400 and reader.closed()
    assert server_requests(recorder) == []


@pytest.mark.parametrize("raw,host", [
    (b"GET http://good/x?y=1 HTTP/1.1\r\nHost: good\r\n\r\n", "good"),
    (b"GET HTTP://Good:80/x?y=1 HTTP/1.1\r\nHost: good\r\n\r\n", "good"),
    (b"GET http://good/x?y=1 HTTP/1.0\r\n\r\n", "good"),
], ids=["same-host", "scheme-case-and-default-port", "http10-no-host"])
def test_absolute_form_is_forwarded_in_origin_form(through, recorder, raw, host):
    (response,), reader = exchange(through.port, raw, 1)
    assert seen(response)["target"] == "/x?y=1" and seen(response)["host"] == host
    reader.sock.close()


def test_absolute_form_cannot_bypass_a_path_rule(through, recorder):
    (response,), reader = exchange(through.port,
                                   b"GET http://h/admin HTTP/1.1\r\nHost: h\r\n\r\n", 1)
    assert response.status == 403
    assert server_requests(recorder) == []
    reader.sock.close()


# F4: requests without Host, hop-by-hop names that must stay, request-line versions

@pytest.mark.parametrize("connection", [b"host", b"content-length", b"transfer-encoding"])
def test_connection_cannot_remove_framing_or_host(through, recorder, connection):
    raw = (b"POST /p HTTP/1.1\r\nHost: h\r\nConnection: " + connection
           + b"\r\nContent-Length: 5\r\n\r\nhello")
    (response,), reader = exchange(through.port, raw, 1)
    assert seen(response) == {**seen(response), "host": "h", "body": 5}
    reader.sock.close()


def test_connection_named_header_is_still_removed(through, recorder):
    (response,), reader = exchange(through.port, b"GET /p HTTP/1.1\r\nHost: h\r\n"
                                   b"Connection: x-hop\r\nX-Hop: 1\r\nX-End: 2\r\n\r\n", 1)
    headers = headers_seen(recorder)
    assert "x-hop" not in headers and headers["x-end"] == "2"
    reader.sock.close()


def test_http10_request_without_host_gets_one(through, recorder):
    (response,), reader = exchange(through.port, b"GET /p HTTP/1.0\r\n\r\n", 1)
    assert seen(response)["host"] == f"127.0.0.1:{recorder.port}"
    reader.sock.close()


@pytest.mark.parametrize("raw,status", [
    (b"GET /x\r\nHost: h\r\n\r\n", 400),                  # HTTP/0.9-style line with headers
    (b"POST /xHTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET /x HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),           # HTTP/2 preface on an HTTP/1 bind
    (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET http://u@h/x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
], ids=["http09", "http09-glued", "http2", "preface", "asterisk-get", "userinfo", "ftp"])
def test_request_line_that_is_not_http1_is_refused(through, recorder, raw, status):
    (response,), reader = exchange(through.port, raw, 1)
    assert response.status == status and reader.closed()
    assert server_requests(recorder) == []


# F5: pipelined requests before a malformed one

def test_requests_before_a_malformed_one_are_all_answered(through, recorder):
    raw = (b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"
           b"GET /c HTTP/1.1\r\nHost h\r\n\r\n")
    (a, b, c), reader = exchange(through.port, raw, 3)
    assert [seen(a)["target"], seen(b)["target"], c.status] == ["/a", "/b", 400]
    assert reader.closed()
    assert server_requests(recorder) == [("GET", "/a"), ("GET", "/b")]


def test_malformed_body_after_pipelined_requests(through, recorder):
    raw = (b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"
           b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    (a, b, c), reader = exchange(through.port, raw, 3)
    assert [seen(a)["target"], seen(b)["target"], c.status] == ["/a", "/b", 400]
    assert server_requests(recorder) == [("GET", "/a"), ("GET", "/b")]
    reader.sock.close()


# trailers and chunk extensions are bounded like headers

def send_slowly(sock: socket.socket, head: bytes, filler: bytes, total: int) -> None:
    sock.sendall(head)
    try:
        for _ in range(total // len(filler)):
            sock.sendall(filler)
    except (BrokenPipeError, ConnectionResetError):
        pass


@pytest.mark.parametrize("head,filler", [
    (b"5;ext=", b"e" * 16384),                            # one endless chunk extension
    (b"5\r\nhello\r\n0\r\nX-Trailer: ", b"t" * 16384),    # one endless trailer
], ids=["extension", "trailer"])
def test_endless_chunk_extension_or_trailer_is_refused(through, recorder, head, filler):
    with connect(through.port) as sock:
        send_slowly(sock, b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + head, filler, 2 << 20)
        assert Reader(sock).read_response().status == 400
    assert recorder.recording.requests == {}


def test_too_many_trailers_are_refused(through, recorder):
    trailers = b"".join(b"X-T%d: 1\r\n" % i for i in range(50_000))
    with connect(through.port) as sock:
        send_slowly(sock, b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n0\r\n", trailers, len(trailers))
        assert Reader(sock).read_response().status == 431
    assert recorder.recording.requests == {}


def test_no_100_continue_for_an_http10_client(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port]))
    with connect(p.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.0\r\nHost: t\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\nhello")
        reader = Reader(sock)
        assert reader._line() == b"HTTP/1.1 200 OK"


# the differential fuzz

def test_differential_fuzz(through, recorder):
    """2,000 seeded cases (about 4,000 requests): see tests/desync/check.py for the rules."""
    report = asyncio.run(check.run_cases(through.port, generate.cases(seed=20, count=2000),
                                         recorder.recording))
    assert report.violations == [], "\n".join(report.violations)
    assert report.counts["served"] > 150 and report.forwarded > 200
