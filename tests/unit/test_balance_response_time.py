"""Least response time: peak EWMA + in-flight ages + P2C, simulated with a fake clock.

Every test is deterministic: the clock is a number the test moves, the RNG is seeded, and
servers answer after latencies the test chooses (a function of the server and the time).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from itertools import count, pairwise

import pytest

from lbproxy.backends.server import Server
from lbproxy.balance import response_time
from lbproxy.balance.response_time import (AGE_HORIZON, FAILURE_FACTOR, FAILURE_FLOOR,
                                           FAILURE_HOLD_MAX, TAU, TYPICAL_SAMPLE,
                                           LeastResponseTime)
from tests.fakes import FakeRequest
from tests.unit.test_balance_contract import make_pool

REQUEST = FakeRequest()
FAST, SLOW = 0.005, 0.050


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Simulation:
    """Requests arrive every 1/rate s (open loop); a server answers after
    latency(server, arrival) seconds; servers in `failing(server, arrival)` fail."""

    def __init__(self, balancer: LeastResponseTime, clock: Clock,
                 latency: Callable[[Server, float], float],
                 failing: Callable[[Server, float], bool] = lambda server, at: False) -> None:
        self.balancer, self.clock = balancer, clock
        self.latency, self.failing = latency, failing
        self.pending: list[tuple[float, int, Server, bool]] = []
        self.order = count()
        self.picks: list[tuple[float, Server]] = []   # (arrival, server)
        self.failures = 0

    def run(self, seconds: float, rate: int = 1000) -> Counter:
        chosen: Counter = Counter()
        start = self.clock.now
        for i in range(int(rate * seconds)):
            arrival = start + i / rate
            self._finish_until(arrival)
            self.clock.now = arrival
            server = self.balancer.pick(REQUEST)
            assert server is not None
            server.in_flight += 1
            self.balancer.on_start(server)
            chosen[server] += 1
            self.picks.append((arrival, server))
            failed = self.failing(server, arrival)
            heapq.heappush(self.pending, (arrival + self.latency(server, arrival),
                                          next(self.order), server, failed))
        self.clock.now = start + seconds
        return chosen

    def _finish_until(self, now: float) -> None:
        while self.pending and self.pending[0][0] <= now:
            done, _, server, failed = heapq.heappop(self.pending)
            self.clock.now = done
            server.in_flight -= 1
            self.failures += failed
            latency = 0.001 if failed else self.latency(server, done)
            self.balancer.on_finish(server, latency, not failed)

    def share(self, server: Server, start: float, end: float) -> float:
        window = [picked for at, picked in self.picks if start <= at < end]
        return sum(picked is server for picked in window) / len(window)


def setup(*weights: int, seed: int = 7) -> tuple[list[Server], LeastResponseTime, Clock]:
    pool, clock = make_pool(*weights), Clock()
    return pool, LeastResponseTime(pool, rng=random.Random(seed), clock=clock), clock


def constant(pool: list[Server], slow: Server | None = None) -> Callable[[Server, float], float]:
    return lambda server, at: SLOW if server is slow else FAST


# what the issue asks for

def test_a_permanently_ten_times_slower_server_gets_almost_nothing():
    pool, balancer, clock = setup(1, 1, 1, 1)
    chosen = Simulation(balancer, clock, constant(pool, slow=pool[0])).run(20)
    total = sum(chosen.values())
    assert chosen[pool[0]] / total < 0.01          # its probes, ~2-3 per second
    assert chosen[pool[0]] > 10                    # but probed: it could recover
    assert all(0.30 < chosen[server] / total < 0.37 for server in pool[1:])


def test_a_server_that_turns_slow_is_avoided_before_its_first_slow_answer():
    pool, balancer, clock = setup(1, 1, 1, 1)
    turn = 2.0
    sim = Simulation(balancer, clock, lambda s, at: SLOW if s is pool[0] and at >= turn else FAST)
    sim.run(3)
    sent = [at for at, server in sim.picks if server is pool[0] and turn <= at < turn + SLOW]
    # at 1000 rps a quarter share would be 12 requests before the first slow answer comes
    # back; the age of the ones in flight gives it away after a few
    assert len(sent) <= 4
    assert max(sent) < turn + 0.012


def test_a_moving_slow_server_gets_few_requests_while_slow():
    pool, balancer, clock = setup(1, 1, 1, 1)

    def slow_now(server: Server, at: float) -> bool:
        return pool.index(server) == int(at / 2.0) % 4

    sim = Simulation(balancer, clock, lambda s, at: SLOW if slow_now(s, at) else FAST)
    sim.run(20)
    to_slow = sum(slow_now(server, at) for at, server in sim.picks)
    assert to_slow / len(sim.picks) < 0.02          # round robin: 25 %
    for server in pool:                             # each got its share while fast
        assert sum(s is server for _, s in sim.picks) / len(sim.picks) > 0.20


def test_a_recovered_server_gets_its_share_back_within_a_second():
    pool, balancer, clock = setup(1, 1, 1, 1)
    recovery = 5.0
    sim = Simulation(balancer, clock,
                     lambda s, at: SLOW if s is pool[0] and at < recovery else FAST)
    sim.run(8)
    assert sim.share(pool[0], recovery - 1.0, recovery) < 0.01
    assert sim.share(pool[0], recovery + 1.0, recovery + 2.0) > 0.22
    assert sim.share(pool[0], recovery + 2.0, recovery + 3.0) > 0.22


def test_uniform_servers_share_evenly():
    pool, balancer, clock = setup(1, 1, 1, 1)
    rng = random.Random(3)
    chosen = Simulation(balancer, clock, lambda s, at: FAST * rng.uniform(0.8, 1.2)).run(10)
    total = sum(chosen.values())
    assert all(0.22 < chosen[server] / total < 0.28 for server in pool)


def test_a_fast_failing_server_is_not_cheap_and_is_asked_less_and_less():
    pool, balancer, clock = setup(1, 1, 1, 1)
    sim = Simulation(balancer, clock, constant(pool), failing=lambda s, at: s is pool[0])
    sim.run(60, rate=500)
    failed = [at for at, server in sim.picks if server is pool[0]]
    assert len(failed) / len(sim.picks) < 0.001
    gaps = [b - a for a, b in pairwise(failed)]
    assert gaps[-1] > gaps[0]                       # backoff
    assert max(gaps) <= FAILURE_HOLD_MAX + 3        # still probed: it may come back


def test_a_server_that_stops_failing_is_trusted_again():
    pool, balancer, clock = setup(1, 1, 1, 1)
    sim = Simulation(balancer, clock, constant(pool),
                     failing=lambda s, at: s is pool[0] and at < 3.0)
    sim.run(3)
    sim.run(12)                                     # backoff ≤ 2 s, then it answers well
    assert sim.share(pool[0], 13.0, 15.0) > 0.2


def test_weight_scales_the_share():
    pool, balancer, clock = setup(3, 1)
    chosen = Simulation(balancer, clock, constant(pool)).run(10, rate=400)
    assert chosen[pool[0]] > 2 * chosen[pool[1]]


# the pieces of the model

def test_an_old_request_in_flight_makes_its_server_expensive_before_it_ends():
    pool, balancer, clock = setup(1, 1)
    for server in pool:
        balancer.on_finish(server, 0.010, True)
    pool[0].in_flight += 1
    balancer.on_start(pool[0])
    pool[1].in_flight += 1
    balancer.on_start(pool[1])
    clock.now += 0.030                              # both still in flight; pool[0]'s...
    pool[1].in_flight -= 1
    balancer.on_finish(pool[1], 0.010, True)        # ...while pool[1] answered
    assert {balancer.pick(REQUEST) for _ in range(20)} == {pool[1]}


def test_the_latency_counts_from_the_slot_not_from_the_queue():
    pool, balancer, clock = setup(1, 1)
    pool[0].in_flight += 1
    balancer.on_start(pool[0])
    clock.now += 0.004
    pool[0].in_flight -= 1
    balancer.on_finish(pool[0], 2.0, True)          # 2 s since arrival, queued for most
    assert balancer._estimates[pool[0]].value == pytest.approx(0.004)


def test_starts_without_a_finish_are_forgotten():
    pool, balancer, clock = setup(1, 1)
    for server in pool:
        balancer.on_finish(server, 0.010, True)
    pool[0].in_flight += 1
    balancer.on_start(pool[0])
    pool[0].in_flight -= 1                          # its finish went to another balancer
    clock.now += 5.0
    assert pool[0] in {balancer.pick(REQUEST) for _ in range(40)}
    pool[0].in_flight += 1
    balancer.on_start(pool[0])
    assert list(balancer._estimates[pool[0]].starts) == [clock.now]


def test_a_long_lived_request_stops_counting_as_evidence():
    pool, balancer, clock = setup(1, 1)
    for server in pool:
        balancer.on_finish(server, 0.010, True)
    pool[0].in_flight += 1
    balancer.on_start(pool[0])                      # a WebSocket tunnel, say
    clock.now += 1.0
    assert {balancer.pick(REQUEST) for _ in range(20)} == {pool[1]}
    clock.now += AGE_HORIZON
    pool[1].in_flight += 1
    balancer.on_start(pool[1])                      # one ordinary request each now
    assert pool[0] in {balancer.pick(REQUEST) for _ in range(40)}


def test_a_slow_answer_is_believed_at_once_and_forgotten_in_time():
    pool, balancer, clock = setup(1, 1)
    balancer.on_finish(pool[0], 0.010, True)
    balancer.on_finish(pool[0], 0.500, True)
    assert balancer._estimates[pool[0]].value == 0.500
    for _ in range(300):                            # 10 ms answers for 3 TAU
        clock.now += TAU / 100
        balancer.on_finish(pool[0], 0.010, True)
    assert balancer._estimates[pool[0]].value - 0.010 < 0.06 * 0.490


def test_an_estimate_fades_while_nothing_is_heard():
    pool, balancer, clock = setup(1, 1)
    balancer.on_finish(pool[0], 0.050, True)
    clock.now += TAU
    assert balancer._estimates[pool[0]].at(clock.now) == pytest.approx(0.050 / 2.718281828, rel=1e-6)


def test_an_avoided_server_gets_one_probe_at_a_time():
    pool, balancer, clock = setup(1, 1)
    balancer.on_finish(pool[0], 0.500, True)         # 100× slower than pool[1]...
    balancer.on_finish(pool[1], 0.005, True)
    clock.now += 4 * TAU                             # ...long ago: faded to ~9 ms
    balancer.on_finish(pool[1], 0.020, True)         # a stall: pool[1]'s answer came late
    chosen = Counter()
    for _ in range(10):                              # a burst of requests at that instant
        server = balancer.pick(REQUEST)
        server.in_flight += 1
        balancer.on_start(server)
        chosen[server] += 1
    assert chosen[pool[0]] == 1                      # its estimate holds while the probe is out


def test_failure_counts_as_at_least_the_floor_and_holds():
    pool, balancer, clock = setup(1, 1, 1)
    balancer.on_finish(pool[0], 0.001, False)
    estimate = balancer._estimates[pool[0]]
    assert estimate.value >= FAILURE_FLOOR
    clock.now += 0.2                                 # within the first hold: no fading
    assert estimate.at(clock.now) == estimate.value
    balancer.on_finish(pool[0], 0.005, True)         # a late success does not erase it
    assert estimate.value >= FAILURE_FLOOR


def test_a_server_failing_for_ever_keeps_the_longest_hold():
    pool, balancer, clock = setup(1, 1)
    for _ in range(2000):                            # 2.0 ** 1999 would overflow
        clock.now += 1.0
        balancer.on_finish(pool[0], 0.001, False)
    assert balancer._estimates[pool[0]].stamp == clock.now + FAILURE_HOLD_MAX


def test_a_failure_in_a_large_pool_reads_a_sample_of_it(monkeypatch):
    pool, balancer, _ = setup(*[1] * 5000)
    for server in pool:
        balancer.on_finish(server, 0.500, True)      # every server answers in 500 ms
    reads = []
    original = response_time._Estimate.at
    monkeypatch.setattr(response_time._Estimate, "at",
                        lambda estimate, now: reads.append(estimate) or original(estimate, now))
    balancer.on_finish(pool[0], 0.001, False)
    assert len(reads) <= TYPICAL_SAMPLE
    assert balancer._estimates[pool[0]].value == pytest.approx(FAILURE_FACTOR * 0.500)


def test_new_server_starts_at_the_median_and_is_neither_flooded_nor_starved():
    pool, balancer, clock = setup(1, 1, 1)
    latency = dict(zip(pool, (0.010, 0.020, 0.030)))
    sim = Simulation(balancer, clock, lambda s, at: latency[s])
    sim.run(5)
    newcomer = Server("new", None)
    pool.append(newcomer)
    balancer.update(pool)
    estimates = balancer._estimates
    now = clock.now
    assert estimates[newcomer].at(now) == pytest.approx(
        sorted(estimates[s].at(now) for s in pool[:3])[1])
    latency[newcomer] = 0.020
    chosen = sim.run(2)
    share = chosen[newcomer] / sum(chosen.values())
    assert 0.10 < share < 0.40


def test_the_same_seed_makes_the_same_picks():
    runs = []
    for _ in range(2):
        pool, balancer, clock = setup(1, 1, 1, 1, seed=11)
        sim = Simulation(balancer, clock, constant(pool, slow=pool[2]))
        sim.run(2)
        runs.append([pool.index(server) for _, server in sim.picks])
    assert runs[0] == runs[1]
