"""Every request gets exactly one access-log line, whatever ends it, with the status and
bytes the client saw and HAProxy-style termination flags (the data plane on fake
transports; the line format itself is tested in test_accesslog.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.dataplane import OK, DataPlane, config, get

TIMEOUTS = {"timeouts": {"http_request": "5s", "client": "30s"}}
BACKEND = {"retries": 0, "timeouts": {"server": "10s", "queue": "2s"}}


class Lines:
    """Stands in for the AccessLog: keeps what each line would say."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def log(self, exchange: Any) -> None:
        self.lines.append({
            "method": exchange.method, "url": exchange.url, "status": exchange.status,
            "bytes": exchange.resp_bytes, "termination": exchange.termination,
            "error": exchange.error, "server": exchange.srv_name or None})

    def only(self) -> dict[str, Any]:
        assert len(self.lines) == 1, self.lines
        return self.lines[0]


def make(frontend: dict | None = None, backend: dict | None = None,
         servers: int = 1) -> tuple[DataPlane, Lines]:
    plane = DataPlane(config(servers, frontend={**TIMEOUTS, **(frontend or {})},
                             backend={**BACKEND, **(backend or {})}))
    lines = Lines()
    for frontend_ in plane.engine.frontends.values():
        frontend_.access_log = lines
    return plane, lines


@pytest.fixture
def plane_lines() -> tuple[DataPlane, Lines]:
    return make()


def test_a_served_request_ends_normally(plane_lines):
    plane, lines = plane_lines
    client = plane.connect()
    client.send(get("/a"))
    upstream, _ = plane.pool("app1").open()
    upstream.data_received(OK)
    assert lines.only() == {"method": "GET", "url": "/a", "status": 200, "bytes": len(OK),
                            "termination": "--", "error": None, "server": "app1"}


@pytest.mark.parametrize(("data", "status", "error"), [
    (b"GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n", 400, "bad-request"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not-implemented"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431, "header-too-large"),
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505, "version-not-supported"),
])
def test_a_refused_request_is_logged_with_the_page_it_got(plane_lines, data, status, error):
    plane, lines = plane_lines
    client = plane.connect()
    client.send(data)
    answer = client.received()
    assert answer.startswith(b"HTTP/1.1 %d " % status)
    line = lines.only()
    assert (line["status"], line["error"], line["termination"]) == (status, error, "PR")
    assert line["bytes"] == len(answer) and line["server"] is None


def test_a_body_over_the_limit_is_refused_and_logged():
    plane, lines = make(frontend={"limits": {"max_body_size": "10"}})
    client = plane.connect()
    client.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n")
    assert client.received().startswith(b"HTTP/1.1 413 ")
    assert lines.only()["url"] == "/up"
    assert (lines.only()["termination"], lines.only()["error"]) == ("PR", "body-too-large")


def test_a_slow_head_gets_408_and_a_line(plane_lines):
    plane, lines = plane_lines
    client = plane.connect()
    client.send(b"GET /slow HTTP/1.1\r\n")
    plane.advance(5.1)
    assert client.received().startswith(b"HTTP/1.1 408 ")
    line = lines.only()
    assert (line["status"], line["termination"], line["error"]) == (408, "cR", "request-timeout")


def test_a_connection_that_sends_nothing_leaves_no_line(plane_lines):
    plane, lines = plane_lines
    client = plane.connect()
    plane.advance(5.1)
    assert client.transport.closed and lines.lines == []


def test_a_response_cut_by_the_server_is_logged_with_the_bytes_sent(plane_lines):
    plane, lines = plane_lines
    client = plane.connect()
    client.send(get("/cut"))
    upstream, server = plane.pool("app1").open()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    upstream.data_received(head + b"abc")
    server.close()
    plane.settle()
    assert client.transport.aborted
    line = lines.only()
    assert (line["status"], line["termination"], line["error"]) == (200, "SD", "aborted")
    assert line["bytes"] == len(head) + 3


def test_a_chunked_response_cut_by_the_server(plane_lines):
    plane, lines = plane_lines
    client = plane.connect()
    client.send(get("/cut"))
    upstream, server = plane.pool("app1").open()
    upstream.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
    server.close()
    plane.settle()
    assert client.transport.aborted
    assert lines.only()["termination"] == "SD"


@pytest.mark.parametrize(("respond", "termination"), [(False, "CH"), (True, "CD")])
def test_a_client_that_leaves_is_logged_with_where_it_left(plane_lines, respond, termination):
    plane, lines = plane_lines
    client = plane.connect()
    client.send(get("/"))
    upstream, _ = plane.pool("app1").open()
    if respond:
        upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    client.transport.close()
    plane.settle()
    line = lines.only()
    assert (line["termination"], line["error"]) == (termination, "client-closed")
    assert line["status"] == (200 if respond else 0)


def test_a_client_that_leaves_mid_head_is_logged(plane_lines):
    plane, lines = plane_lines
    client = plane.connect()
    client.send(b"GET /half HTTP/1.1\r\nHo")
    client.transport.close()
    plane.settle()
    assert lines.only()["termination"] == "CR"


@pytest.mark.parametrize(("act", "status", "termination", "error"), [
    ("refuse", 503, "SC", "connect-failure"),
    ("timeout", 504, "sH", "response-timeout"),
    ("junk", 502, "SH", "junk-response"),
    ("empty", 502, "SH", "empty-response"),
])
def test_server_failures_are_logged_with_the_page_sent(plane_lines, act, status, termination,
                                                     error):
    plane, lines = plane_lines
    client = plane.connect()
    client.send(get("/"))
    pool = plane.pool("app1")
    if act == "refuse":
        pool.refuse()
    else:
        upstream, server = pool.open()
        if act == "timeout":
            plane.advance(10.1)
        elif act == "junk":
            upstream.data_received(b"NOT HTTP\r\n\r\n")
        else:
            server.close()
        plane.settle()
    answer = client.received()
    assert answer.startswith(b"HTTP/1.1 %d " % status)
    line = lines.only()
    assert (line["status"], line["termination"], line["error"]) == (status, termination, error)
    assert line["bytes"] == len(answer)


def test_a_queue_timeout():
    plane, lines = make(backend={"maxconn": 1})
    first, second = plane.connect(), plane.connect()
    first.send(get("/1"))
    second.send(get("/2"))                          # waits in the queue
    plane.advance(2.1)
    assert second.received().startswith(b"HTTP/1.1 503 ")
    assert (lines.only()["termination"], lines.only()["error"]) == ("sQ", "queue-timeout")


def test_no_usable_server(plane_lines):
    plane, lines = plane_lines
    backend = plane.engine.backends["app"]
    backend.set_admin(backend.server("app1"), "maint")
    client = plane.connect()
    client.send(get("/"))
    assert client.received().startswith(b"HTTP/1.1 503 ")
    assert (lines.only()["termination"], lines.only()["error"]) == ("SC", "no-server")


def test_rules_deny_and_redirect():
    plane, lines = make(frontend={"http_request": [
        {"deny": {}, "if": "{ path_beg /admin }"},
        {"redirect": {"location": "/new"}, "if": "{ path_beg /old }"}]})
    plane.connect().send(get("/admin"))
    plane.connect().send(get("/old"))
    assert [(line["status"], line["termination"], line["error"]) for line in lines.lines] == [
        (403, "PR", "denied"), (302, "LR", None)]


def test_a_bad_request_after_a_good_one_logs_both_in_order(plane_lines):
    plane, lines = plane_lines
    client = plane.connect()
    client.send(get("/good") + b"BAD\r\n\r\n")
    upstream, _ = plane.pool("app1").open()
    upstream.data_received(OK)
    assert [(line["url"], line["status"], line["termination"]) for line in lines.lines] == [
        ("/good", 200, "--"), ("", 400, "PR")]


def test_a_tunnel_is_logged_once_at_its_101(plane_lines):
    plane, lines = plane_lines
    client = plane.connect()
    client.send(get("/ws", extra=b"Connection: upgrade\r\nUpgrade: websocket\r\n"))
    upstream, server = plane.pool("app1").open()
    upstream.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           b"Connection: upgrade\r\n\r\n")
    client.transport.close()
    plane.settle()
    assert lines.only()["status"] == 101 and lines.only()["termination"] == "--"


@pytest.mark.parametrize("pieces", [1, 40], ids=["one-read", "many-reads"])
def test_a_response_head_over_the_limit_is_a_502_and_a_server_failure(pieces):
    plane, lines = make(backend={"max_response_header_size": "16k"})
    client = plane.connect()
    client.send(get("/"))
    upstream, server = plane.pool("app1").open()
    head = (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 500)
                                             for i in range(40)) + b"Content-Length: 0\r\n\r\n")
    size = len(head) // pieces + 1
    for start in range(0, len(head), size):
        if not server.closed:
            upstream.data_received(head[start:start + size])
    assert server.closed
    assert client.received().startswith(b"HTTP/1.1 502 ")
    line = lines.only()
    assert (line["termination"], line["error"]) == ("SH", "response-header-too-large")
    assert plane.engine.backends["app"].server("app1").failures == 1


def test_a_response_head_just_under_the_limit_passes():
    plane, lines = make(backend={"max_response_header_size": "16k"})
    client = plane.connect()
    client.send(get("/"))
    upstream, _ = plane.pool("app1").open()
    upstream.data_received(b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * 15000 +
                           b"\r\nContent-Length: 2\r\n\r\nok")
    assert client.received().startswith(b"HTTP/1.1 200 ")
    assert lines.only()["termination"] == "--"


def test_no_descriptor_left_is_a_503_not_the_servers_failure(plane_lines, caplog):
    import errno

    plane, lines = plane_lines
    client = plane.connect()
    client.send(get("/"))
    plane.pool("app1").refuse(OSError(errno.EMFILE, "Too many open files"))
    assert client.received().startswith(b"HTTP/1.1 503 ")
    assert (lines.only()["termination"], lines.only()["error"]) == ("RC", "out-of-fds")
    server = plane.engine.backends["app"].server("app1")
    assert server.failures == 0 and server.in_flight == 0
    assert plane.state.out_of_fds == 1
    assert "out of file descriptors" in caplog.text and "app1" in caplog.text
