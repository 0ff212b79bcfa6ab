"""Admin logic without sockets: histogram quantiles, the rate sampler, CSV layout, API input."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator
from functools import partial
from types import SimpleNamespace

import pytest

from lbproxy.admin.api import new_server_config
from lbproxy.admin.base import ApiError
from lbproxy.admin.model import TICK, WINDOW, Sampler, ago, quantile
from lbproxy.slicing import at_once
from lbproxy.admin.stats_csv import COLUMNS, to_csv
from lbproxy.backends.backend import Backend
from lbproxy.backends.server import LATENCY_BUCKETS
from lbproxy.config.schema import Address, BackendConfig, ServerConfig
from lbproxy.proxy.state import ProxyState
from lbproxy.proxy.upstream import make_pool


def histogram(by_bound: dict[float, int] | None = None) -> list[int]:
    """Counts per LATENCY_BUCKETS slot: {0.01: 3} puts 3 in the slot whose upper bound is 10 ms."""
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    for bound, n in (by_bound or {}).items():
        counts[LATENCY_BUCKETS.index(bound)] = n
    return counts


def test_quantile_interpolates_inside_the_bucket():
    counts = histogram({0.01: 10})                       # all ten in (5 ms, 10 ms]
    assert quantile(counts, 0.5) == pytest.approx(0.0075)
    assert quantile(counts, 0.95) == pytest.approx(0.00975)
    counts = histogram({0.001: 90, 0.5: 10})             # 90 fast, 10 in (250 ms, 500 ms]
    assert quantile(counts, 0.9) == pytest.approx(0.001)
    assert quantile(counts, 0.95) == pytest.approx(0.375)


def test_quantile_edges():
    assert quantile(histogram(), 0.95) is None
    overflow = histogram()
    overflow[-1] = 5                                   # slower than the last bound
    assert quantile(overflow, 0.95) == LATENCY_BUCKETS[-1]


@pytest.mark.parametrize("seconds, text", [(0, "0s ago"), (59.9, "59s ago"), (60, "1m ago"),
                                           (7200, "2h ago"), (3 * 86400 + 5, "3d ago"),
                                           (-3, "0s ago")])
def test_ago(seconds, text):
    assert ago(seconds) == text


@pytest.fixture
def backend() -> Iterator[Backend]:
    loop = asyncio.new_event_loop()
    config = BackendConfig(name="app", servers=(ServerConfig("a", Address("127.0.0.1", 1)),))
    yield Backend(config, state := ProxyState(loop, 100), partial(make_pool, state))
    loop.close()


def test_sampler_rates_and_recent_latency(backend):
    now = [100.0]
    sampler = Sampler(SimpleNamespace(frontends={}, backends={"app": backend}))
    sampler.clock = lambda: now[0]
    server = backend.servers[0]
    server.observe_latency(5.0)                        # before sampling: all-time counts
    assert sampler.recent(server).rps == 0 and sampler.recent(server).p95 is not None
    at_once(sampler.tick())
    for _ in range(int(WINDOW) + 5):                   # 20 requests of 10 ms per second
        now[0] += TICK
        for _ in range(20):
            server.requests += 1
            backend.requests += 1
            server.observe_latency(0.008)
        at_once(sampler.tick())
    recent = sampler.recent(server)
    assert recent.rps == pytest.approx(20)
    assert recent.rps_max == pytest.approx(20)
    assert recent.avg == pytest.approx(0.008)          # the old 5 s response left the window
    assert 0.005 < recent.p95 <= 0.01
    assert at_once(sampler.backend_recent(backend)).rps == pytest.approx(20)
    assert at_once(sampler.backend_recent(backend)).p95 == recent.p95
    now[0] += WINDOW * 2                               # idle: rate falls to 0 after the window
    for _ in range(3):
        at_once(sampler.tick())
    assert sampler.recent(server).rps == 0 and sampler.recent(server).avg is None


def test_the_rate_never_exceeds_the_maximum_rate(backend):
    """A burst since the last sample shows in the rate at once; the maximum follows it
    (the frontend JSON showed req_rate above req_rate_max)."""
    now = [100.0]
    sampler = Sampler(SimpleNamespace(frontends={}, backends={"app": backend}))
    sampler.clock = lambda: now[0]
    server = backend.servers[0]
    at_once(sampler.tick())
    now[0] += 0.5                                      # between two samples
    server.requests += 30
    recent = sampler.recent(server)
    assert recent.rps == pytest.approx(30) and recent.rps_max >= recent.rps
    now[0] += 0.5
    at_once(sampler.tick())                                     # the burst, now sampled
    now[0] += WINDOW * 2                               # then idle
    for _ in range(3):
        at_once(sampler.tick())
    recent = sampler.recent(server)
    assert recent.rps == 0 and recent.rps_max == pytest.approx(30)


def test_the_history_of_a_server_costs_no_more_with_time():
    """Two copies of the counters per object, shared while they do not change: a ring of a
    copy per second cost 3 KB per server at steady state (16 MB at 5,000 servers)."""
    loop = asyncio.new_event_loop()
    servers = tuple(ServerConfig(f"s{i}", Address("127.0.0.1", 1 + i)) for i in range(500))
    state = ProxyState(loop, 100)
    backend = Backend(BackendConfig(name="app", servers=servers), state, partial(make_pool, state))
    now = [100.0]
    sampler = Sampler(SimpleNamespace(frontends={}, backends={"app": backend}))
    sampler.clock = lambda: now[0]
    busy = backend.servers[0]
    tracemalloc.start()
    try:
        for _ in range(3 * int(WINDOW)):
            now[0] += TICK
            busy.requests += 1
            busy.observe_latency(0.008)
            at_once(sampler.tick())
        used = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        loop.close()
    assert used / len(servers) < 400
    assert sampler.recent(busy).rps == pytest.approx(1)
    assert sampler.recent(backend.servers[1]).rps == 0


def test_csv_layout_matches_haproxy():
    text = to_csv([{"pxname": "web", "svname": "FRONTEND", "stot": 3, "last_chk": "a,b\nc"}])
    header, row, end = text.split("\n")
    assert header == "# " + ",".join(COLUMNS) + ","
    assert header.startswith("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,")
    cells = row.split(",")
    assert len(cells) == len(COLUMNS) + 1 and cells[-1] == "" and end == ""
    assert cells[:2] == ["web", "FRONTEND"] and cells[COLUMNS.index("stot")] == "3"
    assert cells[COLUMNS.index("last_chk")] == "a b c"


def test_new_server_config_follows_the_config_rules():
    config = new_server_config({"name": "web-1.a", "address": "[::1]:8080", "weight": 0,
                                "cookie": "w1"})
    assert (config.name, config.address, config.weight, config.cookie) == (
        "web-1.a", Address("::1", 8080), 0, "w1")
    assert new_server_config({"name": "s", "address": "unix:/run/s.sock"}).address.unix == \
        "/run/s.sock"
    for body in ({"name": 3, "address": "127.0.0.1:1"}, {"name": "s", "address": 8080},
                 {"name": "s", "address": "[::1:80"}, {"name": "s/x", "address": "h:1"},
                 {"name": "s", "address": "h:1", "weight": 1.5}):
        with pytest.raises(ApiError) as error:
            new_server_config(body)
        assert error.value.status == 400
