"""Dispatch without sockets: the maxconn queue, its expiry, slowstart, retries and
redispatch, as a client sees them through the real protocols on fake transports."""

from __future__ import annotations

from tests.unit.dataplane import OK, DataPlane, config, get


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def test_a_full_server_queues_and_the_queue_moves_when_a_slot_frees():
    plane = DataPlane(config(server={"maxconn": 1}, backend={"timeouts": {"queue": "5s"}}))
    first, second = plane.connect(), plane.connect(peer=("10.0.0.2", 40001))
    first.send(get("/1"))
    second.send(get("/2"))
    backend = plane.engine.backends["app"]
    assert backend.queued == 1 and backend.max_queued == 1
    pool = plane.pool("app1")
    upstream, server = pool.open()
    upstream.data_received(OK)                      # the slot frees: /2 goes, pooled
    assert backend.queued == 0
    assert server.take().count(b"GET ") == 2
    upstream.data_received(OK)
    assert first.received() == OK and second.received() == OK


def test_a_queued_request_gets_503_after_the_queue_timeout():
    plane = DataPlane(config(server={"maxconn": 1}, backend={"timeouts": {"queue": "2s"}}))
    first, second = plane.connect(), plane.connect()
    first.send(get("/1"))
    second.send(get("/2"))
    plane.advance(1.9)
    assert second.received() == b""
    plane.advance(0.2)
    assert status_of(second.received()) == 503
    assert plane.engine.backends["app"].queued == 0


def test_a_queued_request_whose_client_left_is_skipped():
    plane = DataPlane(config(server={"maxconn": 1}, backend={"timeouts": {"queue": "5s"}}))
    first, gone, third = plane.connect(), plane.connect(), plane.connect()
    first.send(get("/1"))
    gone.send(get("/gone"))
    third.send(get("/3"))
    gone.transport.close()
    plane.settle()
    upstream, server = plane.pool("app1").open()
    upstream.data_received(OK)
    sent = server.take()
    assert b"/gone" not in sent and b"GET /3 " in sent


def test_no_usable_server_is_503_at_once():
    plane = DataPlane(config())
    server = plane.engine.backends["app"].server("app1")
    plane.engine.backends["app"].set_admin(server, "maint")
    client = plane.connect()
    client.send(get())
    assert status_of(client.received()) == 503


def test_connect_failure_is_retried_on_another_server():
    plane = DataPlane(config(servers=2))
    client = plane.connect()
    client.send(get())
    first = next(name for name in ("app1", "app2") if plane.pool(name).waiting)
    other = "app2" if first == "app1" else "app1"
    plane.pool(first).refuse()
    upstream, server = plane.pool(other).open()     # redispatched
    upstream.data_received(OK)
    assert client.received() == OK
    backend = plane.engine.backends["app"]
    assert (backend.retried, backend.redispatched) == (1, 1)
    assert backend.server(first).failures == 1


def test_retries_run_out_into_503():
    plane = DataPlane(config(backend={"retries": 2}))
    client = plane.connect()
    client.send(get())
    for _ in range(3):                              # the first try and two retries
        plane.pool("app1").refuse()
    assert status_of(client.received()) == 503


def test_a_lost_idempotent_request_is_retried_but_a_post_with_a_body_is_not():
    plane = DataPlane(config(servers=2))
    client = plane.connect()
    client.send(get())
    pool = next(plane.pool(n) for n in ("app1", "app2") if plane.pool(n).waiting)
    upstream, server = pool.open()
    server.close()                                  # closed before any answer
    plane.settle()
    again = next(plane.pool(n) for n in ("app1", "app2") if plane.pool(n).waiting)
    upstream, _ = again.open()
    upstream.data_received(OK)
    assert client.received() == OK

    plane = DataPlane(config(servers=2))
    poster = plane.connect()
    poster.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
    pool = next(plane.pool(n) for n in ("app1", "app2") if plane.pool(n).waiting)
    _, server = pool.open()
    server.close()
    plane.settle()
    assert status_of(poster.received()) == 502


def test_slowstart_ramps_a_server_that_comes_back():
    plane = DataPlane(config(servers=2, server={"weight": 10, "slowstart": "10s"}))
    backend = plane.engine.backends["app"]
    app2 = backend.server("app2")
    backend.set_health(app2, False, "test")
    backend.set_health(app2, True, "test")
    assert app2.weight == 1                         # 1% of 10, at least 1
    weights = []
    for _ in range(22):
        plane.advance(0.5)
        weights.append(app2.weight)
    assert weights == sorted(weights) and weights[0] < 10 and weights[-1] == 10


def test_state_weight_and_slowstart_changes_move_one_server_not_the_pool():
    """Health, admin state, API weights and slowstart steps reach the balancer as
    `refresh(server)`; only membership changes hand it the whole list."""
    plane = DataPlane(config(servers=3, backend={"balance": "leastconn"},
                             server={"weight": 10, "slowstart": "2s"}))
    backend = plane.engine.backends["app"]
    app1, app2, app3 = (backend.server(f"app{i}") for i in (1, 2, 3))
    refreshed, updates = [], []
    backend.balancer.refresh = lambda server: refreshed.append(server.name)
    backend.balancer.update = updates.append
    backend.set_health(app2, False, "test")
    backend.set_admin(app3, "drain")
    backend.set_weight(app1, 5)
    backend.set_health(app2, True, "test")
    for _ in range(6):
        plane.advance(0.5)
    assert updates == []
    assert refreshed[:4] == ["app2", "app3", "app1", "app2"]
    assert set(refreshed[4:]) == {"app2"} and app2.weight == 10


def test_balancer_hooks_run_only_where_the_algorithm_needs_them():
    """roundrobin's hooks only follow servers in and out of maxconn: without one, the data
    plane skips them (two calls per request); leastconn always needs its own."""
    def hooks(**kwargs) -> bool:
        return DataPlane(config(2, **kwargs)).engine.backends["app"].lb_hooks
    assert not hooks()
    assert hooks(server={"maxconn": 3})
    assert hooks(backend={"balance": "leastconn"})
    assert not hooks(backend={"balance": "source"})
