"""Passive ejection with a fake clock: failures counted within fail_timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from functools import partial

import pytest

from lbproxy.backends.backend import Backend
from lbproxy.config.schema import (Address, BackendConfig, HealthCheckConfig, PassiveConfig,
                                   ServerConfig)
from lbproxy.health.passive import PassiveMonitor
from lbproxy.proxy.state import ProxyState
from lbproxy.proxy.upstream import make_pool


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def backend() -> Iterator[Backend]:
    """A backend with active checks (so passive ejection starts no re-probe task)."""
    loop = asyncio.new_event_loop()
    config = BackendConfig(name="app", health_check=HealthCheckConfig(),
                           passive=PassiveConfig(max_fails=3, fail_timeout=10.0),
                           servers=(ServerConfig("a", Address("127.0.0.1", 1)),
                                    ServerConfig("b", Address("127.0.0.1", 2))))
    yield Backend(config, state := ProxyState(loop, 100), partial(make_pool, state))
    loop.close()


def test_max_fails_within_fail_timeout_ejects(backend: Backend) -> None:
    clock = Clock()
    monitor = PassiveMonitor(backend, clock)
    a, b = backend.servers
    for outcome in (502, "connect-failure"):
        monitor.observe(a, outcome)
        clock.now += 4
    assert a.up
    monitor.observe(a, 504)
    assert not a.up and a.state == "DOWN" and b.up
    assert a.reason == "passive: 3 failures in 10s (last: 504)"
    assert backend.pick(None, None) is b     # new requests avoid it at once


def test_failures_spread_over_more_than_fail_timeout_do_not_eject(backend: Backend) -> None:
    clock = Clock()
    monitor = PassiveMonitor(backend, clock)
    a = backend.servers[0]
    for _ in range(10):
        monitor.observe(a, "response-timeout")
        clock.now += 5.01
    assert a.up


def test_successes_and_other_statuses_are_not_failures(backend: Backend) -> None:
    monitor = PassiveMonitor(backend, Clock())
    a = backend.servers[0]
    for outcome in (200, 404, 500, 301) * 5:
        monitor.observe(a, outcome)
    assert a.up


def test_every_failure_kind_counts(backend: Backend) -> None:
    monitor = PassiveMonitor(backend, Clock())
    kinds = ["connect-failure", "empty-response", "junk-response", "response-timeout",
             "aborted"]
    for server in backend.servers:
        for kind in kinds[:3] if server.name == "a" else kinds[3:] + [503]:
            monitor.observe(server, kind)
        assert not server.up


def test_counts_are_per_server_and_restart_after_ejection(backend: Backend) -> None:
    clock = Clock()
    monitor = PassiveMonitor(backend, clock)
    a, b = backend.servers
    monitor.observe(a, 502)
    monitor.observe(b, 502)
    monitor.observe(a, 502)
    assert a.up and b.up
    monitor.observe(a, 502)
    assert not a.up
    backend.set_health(a, True, "Layer7 check passed (200)")   # the active checks' doing
    monitor.observe(a, 502)
    assert a.up
