"""Least response time: peak EWMA + P2C, simulated with a fake clock."""

from __future__ import annotations

import heapq
import random
from collections import Counter
from itertools import count

from lbproxy.backends.server import Server
from lbproxy.balance.response_time import FAILURE_FLOOR, LeastResponseTime
from tests.fakes import FakeRequest
from tests.unit.test_balance_contract import make_pool

REQUEST = FakeRequest()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(balancer: LeastResponseTime, clock: Clock, latency: dict[Server, float],
             failing: frozenset[Server] = frozenset(), rate: int = 1000,
             seconds: float = 20.0) -> Counter:
    """Requests arrive every 1/rate s; each server answers after its fixed latency."""
    pending: list[tuple[float, int, Server]] = []
    order = count()
    chosen: Counter = Counter()
    start = clock.now
    for i in range(int(rate * seconds)):
        arrival = start + i / rate
        while pending and pending[0][0] <= arrival:
            clock.now, _, server = heapq.heappop(pending)
            server.in_flight -= 1
            balancer.on_finish(server, latency[server], server not in failing)
        clock.now = arrival
        picked = balancer.pick(REQUEST)
        assert picked is not None
        picked.in_flight += 1
        balancer.on_start(picked)
        chosen[picked] += 1
        heapq.heappush(pending, (arrival + latency[picked], next(order), picked))
    return chosen


def setup(*weights: int) -> tuple[list[Server], LeastResponseTime, Clock]:
    pool, clock = make_pool(*weights), Clock()
    return pool, LeastResponseTime(pool, rng=random.Random(7), clock=clock), clock


def test_a_ten_times_slower_server_gets_under_10_percent():
    pool, balancer, clock = setup(1, 1, 1, 1)
    latency = {server: 0.010 for server in pool} | {pool[0]: 0.100}
    chosen = simulate(balancer, clock, latency)
    assert chosen[pool[0]] / sum(chosen.values()) < 0.10
    assert all(chosen[server] > 0.25 * sum(chosen.values()) for server in pool[1:])


def test_a_fast_failing_server_does_not_attract_traffic():
    pool, balancer, clock = setup(1, 1, 1, 1)
    latency = {server: 0.020 for server in pool} | {pool[0]: 0.001}
    chosen = simulate(balancer, clock, latency, failing=frozenset({pool[0]}))
    assert chosen[pool[0]] / sum(chosen.values()) < 0.02


def test_weight_scales_the_share():
    pool, balancer, clock = setup(3, 1)
    chosen = simulate(balancer, clock, dict.fromkeys(pool, 0.010), rate=400, seconds=10)
    assert chosen[pool[0]] > 2 * chosen[pool[1]]


def test_a_slow_spell_is_noticed_at_once_and_forgotten_in_time():
    pool, balancer, clock = setup(1, 1)
    balancer.on_finish(pool[0], 0.010, True)
    balancer.on_finish(pool[0], 0.500, True)
    assert balancer._estimates[pool[0]].value == 0.500
    for _ in range(300):  # 30 s of 10 ms answers
        clock.now += 0.1
        balancer.on_finish(pool[0], 0.010, True)
    assert balancer._estimates[pool[0]].value - 0.010 < 0.05 * 0.490  # e^-3 left after 3 TAU


def test_failure_counts_as_at_least_the_floor():
    pool, balancer, clock = setup(1, 1, 1)
    balancer.on_finish(pool[0], 0.001, False)
    assert balancer._estimates[pool[0]].value >= FAILURE_FLOOR


def test_new_server_starts_at_the_median_and_is_neither_flooded_nor_starved():
    pool, balancer, clock = setup(1, 1, 1)
    latency = dict(zip(pool, (0.010, 0.020, 0.030)))
    simulate(balancer, clock, latency, seconds=5)
    newcomer = Server("new", None)
    pool.append(newcomer)
    balancer.update(pool)
    assert balancer._estimates[newcomer].value == balancer._estimates[pool[1]].value
    latency[newcomer] = 0.020
    chosen = simulate(balancer, clock, latency, seconds=2)
    share = chosen[newcomer] / sum(chosen.values())
    assert 0.10 < share < 0.40


def test_an_idle_slow_server_is_probed_again():
    pool, balancer, clock = setup(1, 1)
    balancer.on_finish(pool[0], 1.0, True)
    balancer.on_finish(pool[1], 0.010, True)
    assert {balancer.pick(REQUEST) for _ in range(50)} == {pool[1]}
    clock.now += 60  # pool[0] idle for a minute, pool[1] is busy
    pool[1].in_flight = 1
    assert pool[0] in {balancer.pick(REQUEST) for _ in range(50)}
