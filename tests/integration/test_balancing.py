"""Balancing through real sockets: weights, every algorithm, sticky cookies, maxconn
queueing, backup servers, slowstart."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from lbproxy.balance import ALGORITHMS
from tests.harness import Reader, connect, get, simple_config, wait_for


def servers_config(apps, balance="roundrobin", **backend) -> dict:
    config = simple_config([a.port for a in apps], backend={"balance": balance, **backend})
    for server, extra in zip(config["backends"]["app"]["servers"], backend.pop("per_server", [])):
        server.update(extra)
    return config


def with_servers(apps, per_server, **backend) -> dict:
    config = simple_config([a.port for a in apps], backend=backend)
    for server, extra in zip(config["backends"]["app"]["servers"], per_server):
        server.update(extra)
    return config


def test_weighted_roundrobin(backends, proxy):
    apps = backends(2)
    p = proxy(with_servers(apps, [{"weight": 3}, {"weight": 1}]))
    seen = Counter(get(p.port).header("x-server") for _ in range(40))
    assert seen == {"app1": 30, "app2": 10}


@pytest.mark.parametrize("algorithm", sorted(
    name + ("(x-user)" if name == "hdr" else "(user)" if name == "url_param" else "")
    for name in ALGORITHMS))
def test_every_algorithm_serves(backends, proxy, algorithm):
    apps = backends(3)
    p = proxy(simple_config([a.port for a in apps], backend={"balance": algorithm}))
    statuses = [get(p.port, f"/?user=u{i}", {"X-User": f"u{i % 4}"}).status for i in range(12)]
    assert statuses == [200] * 12
    assert sum(a.stats.requests for a in apps) == 12


def test_hashing_keeps_a_key_on_one_server(backends, proxy):
    apps = backends(3)
    p = proxy(simple_config([a.port for a in apps], backend={"balance": "url_param(user)"}))
    for user in ("alice", "bob", "carol"):
        assert len({get(p.port, f"/?user={user}").header("x-server") for _ in range(5)}) == 1


def cookie_of(response) -> str | None:
    value = response.header("set-cookie")
    return value.split(";")[0] if value else None


def test_sticky_cookie_insert(backends, proxy):
    apps = backends(3)
    p = proxy(simple_config([a.port for a in apps], backend={
        "cookie": {"name": "SERVERID", "mode": "insert", "indirect": True, "nocache": True}}))
    first = get(p.port, "/")
    cookie = cookie_of(first)
    server = first.header("x-server")
    assert cookie == f"SERVERID={server}"
    assert "HttpOnly" in first.header("set-cookie")
    assert first.header("cache-control") == "private"
    for _ in range(6):                       # sticks, and no new cookie is set
        again = get(p.port, "/echo", {"Cookie": f"{cookie}; other=1"})
        assert again.header("x-server") == server
        assert again.header("set-cookie") is None
        sent = dict(again.header and __import__("json").loads(again.body)["headers"])
        assert sent.get("Cookie") == "other=1"      # indirect: our cookie is stripped
    stuck = next(a for a in apps if a.backend.name == server)
    stuck.stop()                             # the server dies: redispatch, new cookie
    moved = get(p.port, "/", {"Cookie": cookie})
    assert moved.status == 200 and moved.header("x-server") != server
    assert cookie_of(moved) == f"SERVERID={moved.header('x-server')}"


def test_draining_server_keeps_sticky_clients(backends, proxy):
    apps = backends(2)
    p = proxy(simple_config([a.port for a in apps], backend={"cookie": {"name": "S"}}))
    backend = p.engine.backends["app"]
    p.call(lambda: backend.set_admin(backend.servers[0], "drain"))
    assert {get(p.port).header("x-server") for _ in range(4)} == {"app2"}
    assert get(p.port, "/", {"Cookie": "S=app1"}).header("x-server") == "app1"
    p.call(lambda: backend.set_admin(backend.servers[0], "maint"))
    assert get(p.port, "/", {"Cookie": "S=app1"}).header("x-server") == "app2"


def test_maxconn_queue_serves_in_order_and_times_out(backends, proxy):
    (app,) = backends(1)
    p = proxy(with_servers([app], [{"maxconn": 1}], timeouts={"queue": "2s"}))
    results: dict[int, int] = {}

    def slow(i: int) -> None:
        results[i] = get(p.port, "/slow/300").status

    threads = [threading.Thread(target=slow, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: p.engine.backends["app"].max_queued >= 1)
    for t in threads:
        t.join(10)
    assert results == {0: 200, 1: 200, 2: 200}
    assert p.engine.backends["app"].servers[0].max_in_flight == 1

    q = proxy(with_servers([app], [{"maxconn": 1}], timeouts={"queue": "300ms"}))
    with connect(q.port) as busy:
        busy.sendall(b"GET /slow/2000 HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(lambda: q.engine.backends["app"].in_flight == 1)
        assert get(q.port, "/").status == 503     # waited 300 ms in the queue
        assert Reader(busy).read_response().status == 200


def test_backup_takes_over_only_when_normal_servers_are_down(backends, proxy):
    apps = backends(2)
    p = proxy(with_servers(apps, [{}, {"backup": True}]))
    assert {get(p.port).header("x-server") for _ in range(4)} == {"app1"}
    backend = p.engine.backends["app"]
    p.call(lambda: backend.set_health(backend.servers[0], False, "test"))
    assert {get(p.port).header("x-server") for _ in range(4)} == {"app2"}
    p.call(lambda: backend.set_health(backend.servers[0], True, "test"))
    assert {get(p.port).header("x-server") for _ in range(4)} == {"app1"}


def test_slowstart_ramps_the_weight(backends, proxy):
    apps = backends(2)
    p = proxy(with_servers(apps, [{"weight": 100, "slowstart": "2s"}, {"weight": 100}]))
    backend = p.engine.backends["app"]
    server = backend.servers[0]
    p.call(lambda: backend.set_health(server, False, "test"))
    p.call(lambda: backend.set_health(server, True, "test"))
    first = p.call(lambda: server.weight)
    assert first < 20
    wait_for(lambda: 30 < p.call(lambda: server.weight) < 100, timeout=3)
    wait_for(lambda: p.call(lambda: server.weight) == 100, timeout=4)


def test_clients_leaving_do_not_count_as_server_failures(backends, proxy):
    """A client that hangs up mid-request must not make least_response_time avoid the
    server (bench/balance found healthy servers shunned after a load generator exited)."""
    apps = backends(2)
    p = proxy(simple_config([a.port for a in apps], backend={"balance": "least_response_time"}))
    for _ in range(6):
        assert get(p.port, "/").status == 200
    socks = [connect(p.port) for _ in range(6)]
    for sock in socks:
        sock.sendall(b"GET /slow/1000 HTTP/1.1\r\nHost: t\r\n\r\n")
    wait_for(lambda: p.engine.backends["app"].in_flight == 6)
    for sock in socks:
        sock.close()                              # abandoned, not failed
    wait_for(lambda: p.engine.backends["app"].in_flight == 0)
    balancer = p.engine.backends["app"].balancer
    estimates = p.call(lambda: [e.value for e in balancer._estimates.values()])
    assert max(estimates) < 0.9                   # a failure would weigh >= 1 s
