"""Roundrobin and leastconn under incremental changes: every pick checked against a
plain scan of the pool while weights, states, maxconn and membership change."""

from __future__ import annotations

import random
from collections import Counter, deque

import pytest

from lbproxy.backends.server import DRAIN, MAINT, READY, Server
from lbproxy.balance.leastconn import LeastConn
from lbproxy.balance.pool import candidates, fallback
from lbproxy.balance.roundrobin import RoundRobin
from lbproxy.balance.tracked import Tracked
from tests.unit.test_balance_contract import make_pool, names

REQUEST = None


class ScanRoundRobin:
    """The oracle: nginx's smooth WRR as one scan of the pool per pick (lbproxy before
    issue 22), reading every server live."""

    def __init__(self) -> None:
        self.servers: list[Server] = []
        self.current: dict[Server, int] = {}

    def update(self, servers: list[Server]) -> None:
        self.servers = list(servers)
        self.current = {server: self.current.get(server, 0) for server in servers}

    def pick(self, avoid: Server | None) -> Server | None:
        best, total = None, 0
        for server in self.servers:
            if server is avoid or not server.available:
                continue
            self.current[server] += server.weight
            total += server.weight
            if best is None or self.current[server] > self.current[best]:
                best = server
        if best is None:
            return fallback(avoid)
        self.current[best] -= total
        return best


def load(server: Server) -> float:
    return server.in_flight / server.weight


class Driver:
    """Random traffic and changes, told to the balancer as lbproxy's Backend and
    dispatcher tell it: refresh after a weight or state change, update after a change
    of membership, on_start/on_finish around each request."""

    def __init__(self, balancer: Tracked, pool: list[Server], seed: int) -> None:
        self.balancer, self.pool = balancer, pool
        self.rng = random.Random(seed)
        self.in_flight: deque[Server] = deque()
        self.spare = 0

    def request(self, avoid: Server | None) -> Server | None:
        server = self.balancer.pick(REQUEST, avoid)
        if server is not None:
            server.in_flight += 1
            self.balancer.on_start(server)
            self.in_flight.append(server)
        return server

    def finish(self) -> None:
        if self.in_flight:
            server = self.in_flight[self.rng.randrange(len(self.in_flight))]
            self.in_flight.remove(server)
            server.in_flight -= 1
            self.balancer.on_finish(server, 0.01, True)

    def change(self) -> list[Server] | None:
        """One random change; returns the new member list when membership changed."""
        rng, pool = self.rng, self.pool
        server = rng.choice(pool)
        kind = rng.randrange(7)
        if kind == 0:
            server.weight = rng.choice((0, 1, 1, 2, 3, 10))
        elif kind == 1:
            server.up = not server.up
        elif kind == 2:
            server.admin = rng.choice((READY, READY, DRAIN, MAINT))
        elif kind == 3:
            server.maxconn = rng.choice((0, 1, 2))
        elif kind == 4 and len(pool) > 2:
            pool.remove(server)
            return pool
        elif kind == 5:
            self.spare += 1
            pool.insert(rng.randrange(len(pool) + 1),
                        Server(f"n{self.spare}", None, weight=rng.randint(1, 4)))
            return pool
        else:
            rng.shuffle(pool)
            return pool
        self.balancer.refresh(server)
        return None


@pytest.mark.parametrize("seed", range(6))
def test_roundrobin_picks_exactly_as_the_scan_under_any_changes(seed):
    pool = make_pool(5, 1, 1, 3, 2, 1, 4)
    balancer, oracle = RoundRobin(pool), ScanRoundRobin()
    oracle.update(pool)
    driver = Driver(balancer, pool, seed)
    rng = driver.rng
    for _ in range(3_000):
        step = rng.random()
        if step < 0.05:
            members = driver.change()
            if members is not None:
                balancer.update(members)
                oracle.update(members)
        elif step < 0.5:
            driver.finish()
        else:
            avoid = rng.choice(pool) if rng.random() < 0.1 else None
            expected = oracle.pick(avoid)
            assert driver.request(avoid) is expected


@pytest.mark.parametrize("seed", range(6))
def test_leastconn_always_picks_a_least_loaded_server_under_any_changes(seed):
    pool = make_pool(5, 1, 1, 3, 2, 1, 4)
    driver = Driver(LeastConn(pool), pool, seed)
    rng = driver.rng
    for _ in range(3_000):
        step = rng.random()
        if step < 0.05:
            members = driver.change()
            if members is not None:
                driver.balancer.update(members)
        elif step < 0.45:
            driver.finish()
        else:
            avoid = rng.choice(pool) if rng.random() < 0.1 else None
            allowed = candidates(pool, avoid)
            least = min(map(load, allowed), default=None)
            server = driver.request(avoid)
            if not allowed:
                assert server is None
                continue
            assert server in allowed
            assert (server.in_flight - 1) / server.weight == least


def traffic(balancer: Tracked, picks: int, in_flight: int) -> Counter[int]:
    """Picks by server weight, with `in_flight` requests open, the oldest finishing."""
    window: deque[Server] = deque()
    counts: Counter[int] = Counter()
    for _ in range(picks):
        server = balancer.pick(REQUEST)
        server.in_flight += 1
        balancer.on_start(server)
        counts[server.weight] += 1
        window.append(server)
        if len(window) > in_flight:
            done = window.popleft()
            done.in_flight -= 1
            balancer.on_finish(done, 0.01, True)
    return counts


def test_roundrobin_weight_ratios_are_exact_in_a_large_pool():
    balancer = RoundRobin(make_pool(*[1, 2, 3, 4] * 250))   # 1,000 servers, weight 2,500
    assert traffic(balancer, 25_000, 500) == {1: 2_500, 2: 5_000, 3: 7_500, 4: 10_000}


def test_leastconn_loads_follow_weights_in_a_large_pool():
    pool = make_pool(*[1, 2, 3, 4] * 250)
    counts = traffic(LeastConn(pool), 50_000, 5_000)        # 2 in flight per weight unit
    for weight in (1, 2, 3, 4):
        assert abs(counts[weight] / 50_000 - weight / 10) < 0.01
    assert all(abs(server.in_flight - 2 * server.weight) <= 1 for server in pool)


def test_roundrobin_weight_change_in_a_large_pool_applies_at_once():
    """Credits stay within one total weight of 0, so over k cycles a server's count is
    within 2 of k times its weight, whatever the phase when its weight changed."""
    pool = make_pool(*[1] * 1_000)
    balancer = RoundRobin(pool)
    names(balancer, 500)                                     # halfway through a cycle
    pool[0].weight = 0
    balancer.refresh(pool[0])
    assert pool[0] not in [balancer.pick(REQUEST) for _ in range(999 * 3)]
    pool[0].weight = 1_000                                   # now half the pool's weight
    balancer.refresh(pool[0])
    picked = Counter(balancer.pick(REQUEST) for _ in range(1_999 * 4))
    assert abs(picked[pool[0]] - 4_000) <= 2
    assert len(picked) == 1_000 and all(abs(picked[server] - 4) <= 2 for server in pool[1:])


def test_a_full_server_is_out_until_its_request_finishes():
    pool = make_pool(1, 1)
    pool[0].maxconn = 1
    balancer = RoundRobin(pool)
    driver = Driver(balancer, pool, 0)
    assert driver.request(None) is pool[0]
    assert [driver.request(None) for _ in range(3)] == [pool[1]] * 3
    pool[0].in_flight -= 1
    balancer.on_finish(pool[0], 0.01, True)
    assert pool[0] in [balancer.pick(REQUEST) for _ in range(2)]


def test_a_change_nobody_announced_is_noticed():
    """Without refresh a server that went down is parked when it would win, and one
    that came back is seen again within a pick per parked server."""
    pool = make_pool(1, 1, 1)
    for balancer in (RoundRobin(pool), LeastConn(pool)):
        pool[1].up = False
        assert pool[1] not in [balancer.pick(REQUEST) for _ in range(10)]
        pool[1].up = True
        assert pool[1] in [balancer.pick(REQUEST) for _ in range(4)]


def test_without_hooks_a_server_that_frees_is_found_when_nothing_else_is_left():
    """The hashing algorithms' round-robin fallback sees maxconn only this way."""
    pool = make_pool(1, 1, 1)
    balancer = RoundRobin(pool)
    for server in pool:
        server.maxconn, server.in_flight = 1, 1         # all full, nobody told
    assert balancer.pick(REQUEST) is None
    pool[2].in_flight = 0
    assert balancer.pick(REQUEST) is pool[2]
