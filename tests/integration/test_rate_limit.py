"""Stick tables in rules: the seeds' per-IP rate limit, connection counting, and one
limit shared by two lbproxy processes through a real redis-server."""

from __future__ import annotations

import signal
import socket
import time

from tests.harness import Reader, connect, simple_config, wait_for, write_config
from tests.process import LbproxyProcess
from tests.redis_server import RedisServer


def rate_limited(app_port: int, limit: int, period: str = "10s", **global_) -> dict:
    """The seeds' protection: track src, deny with 429 over `limit` requests per period."""
    return simple_config(
        [app_port],
        stick_table={"type": "ip", "size": "100k", "expire": "30s",
                     "store": [f"http_req_rate({period})", "conn_cur"]},
        http_request=[{"track_sc0": "src"},
                      {"deny": {"status": 429}, "if": f"{{ sc_http_req_rate(0) gt {limit} }}"}],
        **({"global": {"log": {"format": "off"}, **global_}} if global_ else {}))


def get_from(port: int, source: str) -> int:
    """A GET from a chosen loopback address (127.0.0.2 is another client IP)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    with sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        return Reader(sock).read_response().status


def test_101st_request_in_the_window_gets_429(backends, proxy):
    (app,) = backends(1)
    p = proxy(rate_limited(app.port, 100))
    with connect(p.port) as sock:                  # one keep-alive connection, 101 requests
        reader = Reader(sock)
        statuses = []
        for _ in range(101):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            statuses.append(reader.read_response().status)
    assert statuses[:100] == [200] * 100
    assert statuses[100] == 429
    assert get_from(p.port, "127.0.0.2") == 200    # another IP is not affected
    assert app.stats.requests == 101


def test_limit_lifts_after_the_window(backends, proxy):
    (app,) = backends(1)
    p = proxy(rate_limited(app.port, 5, period="1s"))
    assert [get_from(p.port, "127.0.0.1") for _ in range(6)] == [200] * 5 + [429]
    wait_for(lambda: get_from(p.port, "127.0.0.1") == 200, timeout=5, interval=0.2)


def test_concurrent_connections_per_ip(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config(
        [app.port],
        stick_table={"type": "ip", "size": 1000, "expire": "30s", "store": ["conn_cur"]},
        http_request=[{"track_sc0": "src"},
                      {"deny": {"status": 429}, "if": "{ sc_conn_cur(0) gt 2 }"}]))
    held = [connect(p.port) for _ in range(3)]
    try:
        statuses = []
        for sock in held:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            statuses.append(Reader(sock).read_response().status)
        assert statuses == [200, 200, 429]
        held[0].close()
        held[1].close()
        table = p.engine.tables["web"]
        wait_for(lambda: p.call(lambda: table.get("127.0.0.1").get("conn_cur")) <= 1)
        assert get_from(p.port, "127.0.0.1") == 200
    finally:
        for sock in held:
            sock.close()


def test_two_processes_share_one_limit_through_redis(backends, redis_server: RedisServer,
                                                     tmp_path):
    (app,) = backends(1)
    ports = []
    processes = []
    try:
        for _ in range(2):
            config = rate_limited(app.port, 20, period="10s", stick_store=redis_server.url)
            ports.append(int(config["frontends"]["web"]["bind"][0].rsplit(":", 1)[1]))
            path = write_config(config, str(tmp_path))
            processes.append(LbproxyProcess("run", "-c", path, wait_port=ports[-1]).__enter__())
        statuses = []
        for i in range(30):                        # alternate between the two instances
            statuses.append(get_from(ports[i % 2], "127.0.0.1"))
            time.sleep(0.02)                       # pace so flushes (100 ms) keep up
        allowed = statuses.count(200)
        assert 20 <= allowed <= 24, statuses       # one combined limit, not 20 each
        assert statuses[-1] == 429
        for process in processes:
            process.signal(signal.SIGTERM)
            assert process.wait() == 0
    finally:
        for process in processes:
            process.__exit__(None, None, None)


def test_table_view_in_the_api(backends, proxy):
    import base64
    import json as json_module

    from tests.harness import free_port, request

    (app,) = backends(1)
    config = rate_limited(app.port, 1000)
    # ranked by the exact counter: a rate can lose one when the requests straddle a period
    config["frontends"]["web"]["stick_table"]["store"].append("http_req_cnt")
    stats_port = free_port()
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}",
                       "auth": {"username": "admin", "password": "pw"}}
    p = proxy(config)
    for source, count in (("127.0.0.1", 5), ("127.0.0.2", 2)):
        for _ in range(count):
            assert get_from(p.port, source) == 200
    token = base64.b64encode(b"admin:pw").decode()
    raw = (f"GET /api/tables/web?by=http_req_cnt HTTP/1.1\r\nHost: x\r\n"
           f"Authorization: Basic {token}\r\nConnection: close\r\n\r\n").encode()
    body = json_module.loads(request(stats_port, raw).body)
    assert body["entries"] == 2 and body["by"] == "http_req_cnt"
    assert [(row["key"], row["http_req_cnt"]) for row in body["top"]] == [
        ("127.0.0.1", 5), ("127.0.0.2", 2)]
    assert all(row["http_req_rate"] >= 1 for row in body["top"])
    missing = (f"GET /api/tables/nope HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}"
               f"\r\nConnection: close\r\n\r\n").encode()
    assert request(stats_port, missing).status == 404
