"""Timeouts on both sides, and what clients see when servers fail."""

from __future__ import annotations

import socket
import threading
import time

from tests.harness import Reader, connect, free_port, get, simple_config, wait_for


class RawServer:
    """A TCP server answering every connection with fixed bytes (or nothing), then closing."""

    def __init__(self, answer: bytes | None) -> None:
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.recv(65536)
                if self.answer is not None:
                    conn.sendall(self.answer)

    def close(self) -> None:
        self.sock.close()


def test_slow_headers_get_408(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port], timeouts={"http_request": "300ms"}))
    with connect(p.port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")     # never finishes the head
        reader = Reader(sock)
        assert reader.read_response().status == 408
        assert reader.closed()
        assert 0.25 < time.monotonic() - started < 2.0
    assert app.stats.requests == 0


def test_idle_keep_alive_connection_is_closed_quietly(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port], timeouts={"http_keep_alive": "300ms"}))
    with connect(p.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_response().status == 200
        started = time.monotonic()
        assert reader.closed(timeout=3)
        assert reader.buf == b""                            # no 408 for an idle client
        assert 0.25 < time.monotonic() - started < 2.0


def test_a_connection_that_sends_nothing_is_closed_quietly(backends, proxy):
    """As HAProxy does: a connection that never sent a byte gets no 408 at http_request
    (a browser's speculative pre-connection, a port scan); it is simply closed."""
    (app,) = backends(1)
    p = proxy(simple_config([app.port], timeouts={"http_request": "300ms"}))
    with connect(p.port) as sock:
        reader = Reader(sock)
        assert reader.closed(timeout=5)
        assert reader.buf == b""
    with connect(p.port) as sock:                  # one byte is a request begun: 408
        sock.sendall(b"G")
        reader = Reader(sock)
        assert reader.read_response().status == 408
        assert reader.closed(timeout=5)
    assert app.stats.requests == 0


def test_slow_request_body_gets_408(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port], timeouts={"client": "300ms"}))
    with connect(p.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        reader = Reader(sock)
        assert reader.read_response().status == 408
        assert reader.closed()


def test_server_timeout_gives_504(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port], backend={"timeouts": {"server": "300ms"}}))
    started = time.monotonic()
    assert get(p.port, "/slow/3000").status == 504
    assert time.monotonic() - started < 2.0
    assert get(p.port, "/").status == 200                  # the proxy is fine after it


def test_connect_failure_gives_503(proxy):
    p = proxy(simple_config([free_port()], backend={"retries": 1}))
    response = get(p.port)
    assert response.status == 503
    assert b"503 Service Unavailable" in response.body


def test_connect_failure_is_retried_on_another_server(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([free_port(), app.port]))
    assert [get(p.port).status for _ in range(6)] == [200] * 6
    assert app.stats.requests == 6
    backend = p.engine.backends["app"]
    assert backend.retried >= 3 and backend.redispatched >= 3


def test_invalid_response_gives_502_and_is_not_retried_by_default(proxy):
    """HAProxy's advice: retrying a junk answer is usually a bad idea (a wrong port, or a
    request that breaks the server), so the default retry_on leaves junk-response out."""
    junk = RawServer(b"this is not HTTP\r\n\r\n")
    try:
        p = proxy(simple_config([junk.port], backend={"retries": 2}))
        assert get(p.port).status == 502
        assert junk.connections == 1
        assert p.engine.backends["app"].retried == 0
    finally:
        junk.close()


def test_junk_response_in_retry_on_retries_idempotent_requests(backends, proxy):
    (app,) = backends(1)
    junk = RawServer(b"HTTP/1.1 2OO OK\r\n\r\n")        # a status that is not a number
    try:
        config = simple_config([junk.port, app.port],
                               backend={"retries": 2, "retry_on": ["junk-response"]})
        p = proxy(config)
        assert [get(p.port).status for _ in range(4)] == [200] * 4
        backend = p.engine.backends["app"]
        assert junk.connections >= 1 and app.stats.requests == 4
        assert backend.retried == backend.redispatched == junk.connections   # each one, once
    finally:
        junk.close()


def test_junk_response_alone_is_retried_then_502_but_post_is_not(proxy):
    junk = RawServer(b"garbage")
    try:
        p = proxy(simple_config([junk.port],
                                backend={"retries": 2, "retry_on": ["junk-response"]}))
        assert get(p.port).status == 502
        assert junk.connections == 3                         # first try + 2 retries
        with connect(p.port) as sock:                        # not idempotent: sent once
            sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
            assert Reader(sock).read_response().status == 502
        assert junk.connections == 4
    finally:
        junk.close()


def test_empty_response_is_retried_then_502(proxy):
    mute = RawServer(None)              # reads the request, closes without answering
    try:
        p = proxy(simple_config([mute.port], backend={"retries": 2}))
        assert get(p.port).status == 502
        assert mute.connections == 3    # first try + 2 retries (GET is idempotent)
    finally:
        mute.close()


def test_post_is_not_sent_twice(proxy):
    mute = RawServer(None)
    try:
        p = proxy(simple_config([mute.port], backend={"retries": 2}))
        with connect(p.port) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
            assert Reader(sock).read_response().status == 502
        assert mute.connections == 1
    finally:
        mute.close()


def test_server_dying_mid_response_cuts_only_that_client(backends, proxy):
    truncated = RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
    (app,) = backends(1)
    try:
        config = simple_config([truncated.port])
        p = proxy(config)
        with connect(p.port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            reader = Reader(sock)
            assert reader.closed()
            assert reader.buf.startswith(b"HTTP/1.1 200 OK")   # head relayed, then cut
        p2 = proxy(simple_config([app.port]))
        assert get(p2.port).status == 200
    finally:
        truncated.close()


def test_a_cut_response_is_logged_and_counted(proxy, tmp_path):
    """Both framings cut short: the client is cut off, the line says how far it got."""
    import json

    heads = {"length": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
             "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"}
    servers = {"length": RawServer(heads["length"] + b"only part"),
               "chunked": RawServer(heads["chunked"] + b"9\r\nonly part\r\n")}
    log_path = tmp_path / "access.log"
    try:
        for framing, server in servers.items():
            config = simple_config([server.port], **{"global": {"log": {
                "access": str(log_path), "format": "json"}}})
            p = proxy(config)
            with connect(p.port) as sock:
                sock.sendall(f"GET /{framing} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                reader = Reader(sock)
                assert reader.closed()
                assert reader.buf.startswith(b"HTTP/1.1 200 OK")
            assert p.call(lambda: p.engine.backends["app"].servers[0].failures) == 1
            p.stop()
        lines = [json.loads(line) for line in log_path.read_text().splitlines()]
        assert [line["url"] for line in lines] == ["/length", "/chunked"]
        for line, framing in zip(lines, ("length", "chunked")):
            assert (line["status"], line["termination"], line["error"]) == (200, "SD", "aborted")
            assert line["bytes"] == len(servers[framing].answer)
    finally:
        for server in servers.values():
            server.close()


def test_maxconn_queues_new_clients_in_the_backlog(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port], maxconn=2))
    first, second = connect(p.port), connect(p.port)
    try:
        wait_for(lambda: p.engine.frontends["web"].connections == 2)
        third = connect(p.port)              # the kernel accepts it into the backlog
        third.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        third.settimeout(0.5)
        try:
            assert third.recv(100) == b""    # not served while two are open...
            raise AssertionError("served over maxconn")
        except socket.timeout:
            pass
        first.close()                        # ...and served as soon as one closes
        third.settimeout(5)
        assert Reader(third).read_response().status == 200
        third.close()
    finally:
        first.close()
        second.close()


def _not_served_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        sock.recv(100)
    except socket.timeout:
        return True
    return False


def test_the_process_limit_pauses_every_frontend_until_a_connection_closes(backends, proxy):
    """global.max_connections counts the connections of all frontends: at the limit both
    stop accepting, and a close anywhere lets both accept again, every time it is hit."""
    (app,) = backends(1)
    config = simple_config([app.port], **{"global": {"log": {"format": "off"},
                                                     "max_connections": 2}})
    config["frontends"]["other"] = {"bind": [f"127.0.0.1:{free_port()}"],
                                    "default_backend": "app"}
    p = proxy(config)
    web = p.engine.frontends["web"]
    other = p.engine.frontends["other"]
    other_port = int(config["frontends"]["other"]["bind"][0].rsplit(":", 1)[1])
    request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    held = [connect(p.port), connect(other_port)]
    try:
        for _ in range(2):                   # the limit is hit, left, and hit again
            wait_for(lambda: web.connections + other.connections == 2)
            waiting = connect(other_port)    # in the backlog: not served at the limit
            waiting.sendall(request)
            assert _not_served_within(waiting, 0.5), "served over global.max_connections"
            held.pop(0).close()              # a close on the other frontend...
            waiting.settimeout(5)
            assert Reader(waiting).read_response().status == 200    # ...lets it in
            held.append(waiting)
    finally:
        for sock in held:
            sock.close()


def test_requests_in_flight_on_a_killed_server_are_retried(backends, proxy):
    """GETs waiting on pooled keep-alive connections when their server dies are
    replayed on another server: the client sees no error."""
    apps = backends(2)
    p = proxy(simple_config([a.port for a in apps]))
    for _ in range(4):                        # warm both pools
        assert get(p.port).status == 200
    results: list[int] = []

    def slow_get() -> None:
        results.append(get(p.port, "/slow/2000").status)

    threads = [threading.Thread(target=slow_get) for _ in range(6)]
    for t in threads:
        t.start()
    wait_for(lambda: apps[0].stats.requests >= 5 and apps[1].stats.requests >= 5)
    apps[0].stop()                            # closes its connections mid-request
    for t in threads:
        t.join(10)
    assert results == [200] * 6
