"""Fixtures shared by the integration tests: demo backends and proxies on free ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import trustme

from lbproxy.demo.backend import BackendThread
from tests.harness import ProxyThread

pytest_plugins = ["tests.redis_server"]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A certificate authority the TLS tests' clients trust (trustme)."""
    return trustme.CA()


@pytest.fixture
def backends() -> Iterator[Callable[..., BackendThread]]:
    """Factory: backends(n, **options) starts n demo backends, stopped after the test."""
    started: list[BackendThread] = []

    def start(count: int = 1, **options: object) -> list[BackendThread]:
        new = [BackendThread(name=f"app{len(started) + i + 1}", **options).start()
               for i in range(count)]
        started.extend(new)
        return new

    yield start
    for backend in started:
        backend.stop()


@pytest.fixture
def proxy() -> Iterator[Callable[[dict | str], ProxyThread]]:
    """Factory: proxy(config) starts a proxy in a thread, stopped after the test."""
    started: list[ProxyThread] = []

    def start(config: dict | str) -> ProxyThread:
        p = ProxyThread(config).__enter__()
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


@pytest.fixture(scope="module")
def isolated_plugins() -> Iterator[None]:
    """Plugins a test module loads in-process are forgotten after it: their names leave
    the registries, so later modules see only the built-in fetches, converters, actions and
    balancers."""
    from lbproxy.config import plugins
    from lbproxy.extensions import ACTIONS, BALANCERS
    from lbproxy.routing.converters import CONVERTERS
    from lbproxy.routing.fetches import FETCHES
    tables = (FETCHES, CONVERTERS, ACTIONS, BALANCERS, plugins._loaded)
    before = [dict(table) for table in tables]
    yield
    for table, kept in zip(tables, before):
        table.clear()
        table.update(kept)
