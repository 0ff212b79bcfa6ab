"""Active and passive health checks end to end: real proxy, real demo servers."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

import pytest

from lbproxy.backends.server import Server
from lbproxy.config.schema import Address, ServerConfig
from tests.harness import ProxyThread, free_port, get, simple_config, wait_for

CHECK = {"interval": "100ms", "timeout": "300ms", "rise": 2, "fall": 2}


def server(p: ProxyThread, name: str) -> Server:
    return p.call(lambda: p.engine.backends["app"].server(name))


def state_of(p: ProxyThread, name: str) -> tuple[str, str]:
    return p.call(lambda: (lambda s: (s.state, s.reason))(p.engine.backends["app"].server(name)))


def wait_state(p: ProxyThread, name: str, wanted: str, timeout: float = 5.0) -> str:
    """Wait until server `name` is in state `wanted`; its reason."""
    return wait_for(lambda: (lambda st: st[0] == wanted and st[1])(state_of(p, name)),
                    timeout)


def served_by(p: ProxyThread, count: int) -> list[str]:
    names = []
    for _ in range(count):
        response = get(p.port)
        assert response.status == 200
        names.append(response.header("X-Server"))
    return names


def _closed(conn: socket.socket) -> bool:
    """The peer closed `conn` (what it sent is read and dropped)."""
    try:
        while conn.recv(65536, socket.MSG_DONTWAIT):
            pass
        return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


class HangingServer:
    """Accepts connections and never answers; tells which ones the peer has closed."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.times: list[float] = []        # of each accept
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return
            self.times.append(time.monotonic())

    def closed_by_peer(self) -> int:
        return sum(map(_closed, list(self.conns)))

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def hanging() -> Callable[[], HangingServer]:
    servers: list[HangingServer] = []

    def start() -> HangingServer:
        servers.append(HangingServer())
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_down_after_fall_failures_up_after_rise_logged_once(backends, proxy, caplog):
    caplog.set_level(logging.INFO, logger="lbproxy")
    app1, app2 = backends(2)
    p = proxy(simple_config([app1.port, app2.port], backend={"health_check": CHECK}))
    assert wait_state(p, "app1", "UP").startswith("Layer7 check passed")
    head = app1.stats.last_head
    assert (head.url, head.header("Host")) == ("/health", f"127.0.0.1:{app1.port}")

    app1.healthy = False
    probes = app1.stats.requests
    assert wait_state(p, "app1", "DOWN") == "Layer7 wrong status 503"
    assert app1.stats.requests - probes >= CHECK["fall"]
    assert set(served_by(p, 6)) == {"app2"}           # avoided from the moment it is DOWN

    seen = app1.stats.requests
    wait_for(lambda: app1.stats.requests >= seen + 3)   # more failed probes: no more logs
    app1.healthy = True
    assert wait_state(p, "app1", "UP") == "Layer7 check passed (200)"
    assert set(served_by(p, 6)) == {"app1", "app2"}
    transitions = [r.getMessage() for r in caplog.records if "server app1 is" in r.getMessage()]
    assert transitions == ["backend app: server app1 is DOWN (Layer7 wrong status 503)",
                           "backend app: server app1 is UP (Layer7 check passed (200))"]


def test_no_errors_while_a_server_dies_under_load(backends, proxy):
    apps = backends(3)
    p = proxy(simple_config([a.port for a in apps], backend={
        "health_check": CHECK, "passive": {"max_fails": 2, "fail_timeout": "5s"},
        "timeouts": {"connect": "1s"}}))
    wait_for(lambda: all(state_of(p, f"app{i}")[1] for i in (1, 2, 3)))
    statuses = []
    for i in range(300):
        if i == 100:
            apps[0].stop()
        statuses.append(get(p.port, "/").status)
    assert statuses.count(200) == 300
    assert state_of(p, "app1")[0] == "DOWN"


def test_passive_ejection_and_reprobe_without_active_checks(backends, proxy):
    bad, good = backends(1, error_rate=1.0) + backends(1)
    p = proxy(simple_config([bad.port, good.port], backend={
        "passive": {"max_fails": 3, "fail_timeout": "500ms", "on_status": [500]}}))
    statuses = [get(p.port).status for _ in range(6)]
    assert statuses.count(500) == 3                   # roundrobin: every other one
    assert state_of(p, "app1") == ("DOWN", "passive: 3 failures in 0.5s (last: 500)")
    assert set(served_by(p, 4)) == {"app2"}
    # no active checks: one TCP probe after fail_timeout brings it back
    assert wait_state(p, "app1", "UP") == "passive: re-probe passed (Layer4 check passed)"


def test_passive_reprobe_keeps_a_dead_server_down_until_it_answers(backends, proxy):
    app1, app2 = backends(2)
    p = proxy(simple_config([app1.port, app2.port], backend={
        "passive": {"max_fails": 1, "fail_timeout": "200ms"}, "retries": 0}))
    port = app1.port
    app1.stop()
    wait_for(lambda: get(p.port).status and state_of(p, "app1")[0] == "DOWN")
    wait_for(lambda: state_of(p, "app1") == (
        "DOWN", "passive: re-probe failed (Layer4 connection refused)"))
    backends(1, port=port)
    assert wait_state(p, "app1", "UP") == "passive: re-probe passed (Layer4 check passed)"


def test_passive_ejection_with_active_checks_comes_back_after_rise(backends, proxy):
    bad, good = backends(1, error_rate=1.0) + backends(1)
    p = proxy(simple_config([bad.port, good.port], backend={
        "health_check": CHECK, "passive": {"max_fails": 2, "on_status": [500]}}))
    wait_for(lambda: state_of(p, "app1")[1])
    wait_for(lambda: get(p.port) and state_of(p, "app1")[1].startswith(
        "passive: 2 failures in 10s (last: 500)"))
    probes = bad.stats.requests
    assert wait_state(p, "app1", "UP") == "Layer7 check passed (200)"   # /health is fine
    assert bad.stats.requests - probes >= CHECK["rise"]


def test_hanging_http_check_is_cut_at_its_timeout(backends, proxy, hanging):
    (app,) = backends(1)
    stuck = hanging()
    p = proxy(simple_config([app.port, stuck.port], backend={
        "health_check": {**CHECK, "timeout": "150ms", "fall": 1}}))
    assert wait_state(p, "app2", "DOWN") == "Layer7 timeout"
    wait_for(lambda: stuck.closed_by_peer() >= 2)      # the checker hung up each time
    assert wait_state(p, "app1", "UP")
    assert set(served_by(p, 4)) == {"app1"}


def test_tcp_check_refused_and_passing(backends, proxy, hanging):
    stuck = hanging()
    p = proxy(simple_config([free_port(), stuck.port], backend={
        "health_check": {**CHECK, "type": "tcp", "fall": 1}}))
    assert wait_state(p, "app1", "DOWN") == "Layer4 connection refused"
    assert wait_state(p, "app2", "UP") == "Layer4 check passed"


def test_server_added_at_run_time_gets_traffic_only_after_passing_checks(backends, proxy):
    app1, app2, app3 = backends(3)
    app3.healthy = False
    p = proxy(simple_config([app1.port], backend={"health_check": {**CHECK, "rise": 3}}))
    backend = p.engine.backends["app"]
    for name, app in (("app2", app2), ("app3", app3)):
        config = ServerConfig(name=name, address=Address("127.0.0.1", app.port))
        p.call(lambda config=config: backend.add_server(config, up=False))
    assert state_of(p, "app2")[0] == "CHECKING"
    checking = 0
    while True:
        response = get(p.port)
        if state_of(p, "app2")[0] == "UP":
            break
        checking += 1
        assert response.header("X-Server") == "app1"
    assert checking > 0
    wait_for(lambda: get(p.port).header("X-Server") == "app2")
    assert wait_state(p, "app3", "DOWN") == "Layer7 wrong status 503"
    assert all(head.url == "/health" for head in app3.stats.heads)


def test_maint_stops_checks_and_removed_servers_are_no_longer_probed(backends, proxy):
    app1, app2, app3 = backends(3)
    p = proxy(simple_config([a.port for a in (app1, app2, app3)],
                            backend={"health_check": CHECK}))
    backend = p.engine.backends["app"]
    wait_for(lambda: app1.stats.requests and app3.stats.requests)
    p.call(lambda: backend.set_admin(backend.server("app1"), "maint"))
    p.call(lambda: backend.remove_server(backend.server("app3"), drain=0))
    wait_for(lambda: backend.server("app3") is None)
    frozen1, frozen3, probes = app1.stats.requests, app3.stats.requests, app2.stats.requests
    wait_for(lambda: app2.stats.requests >= probes + 3)
    assert (app1.stats.requests, app3.stats.requests) == (frozen1, frozen3)
    assert state_of(p, "app1")[0] == "MAINT"
    p.call(lambda: backend.set_admin(backend.server("app1"), "ready"))
    wait_for(lambda: app1.stats.requests > frozen1)


def test_probes_are_spread_over_the_interval(proxy, hanging):
    stuck = hanging()
    proxy(simple_config([stuck.port] * 40, backend={
        "health_check": {**CHECK, "interval": "1s", "timeout": "300ms"}}))
    wait_for(lambda: len(stuck.times) >= 40, timeout=10.0)
    first = sorted(stuck.times[:40])
    assert first[-1] - first[0] > 0.5                  # evenly spread: 0.975 s
    assert max(sum(t <= s < t + 0.1 for s in first) for t in first) <= 12   # 4 per 100 ms


def test_a_probe_longer_than_the_interval_delays_the_next(proxy, hanging):
    stuck = hanging()
    proxy(simple_config([stuck.port], backend={
        "health_check": {**CHECK, "interval": "100ms", "timeout": "400ms"}}))
    wait_for(lambda: len(stuck.times) >= 3)
    assert stuck.times[2] - stuck.times[0] > 0.7       # one at a time, each cut at 400 ms
