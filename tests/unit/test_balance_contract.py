"""The Balancer contract, checked for every algorithm; also the pool helper other
test_balance_* modules import."""

from __future__ import annotations

import random
from itertools import count

import pytest

from lbproxy.backends.server import DRAIN, MAINT, Server
from lbproxy.balance import ALGORITHMS, Balancer, make_balancer
from lbproxy.balance.hashing import HASH_TYPES
from lbproxy.balance.response_time import LeastResponseTime
from lbproxy.config import schema
from tests.fakes import FakeRequest

REQUESTS = [FakeRequest(url=f"/page/{i}?id={i}", src=f"10.0.{i // 200}.{i % 200}",
                        headers=[("x-user", f"user{i}")]) for i in range(300)]
HASHED = ("source", "uri", "url_param", "hdr")
CASES = [(name, hash_type) for name in sorted(ALGORITHMS)
         for hash_type in (HASH_TYPES if name in HASHED else HASH_TYPES[:1])]


def make_pool(*weights: int) -> list[Server]:
    """Servers s0, s1, ... with the given weights, all up and ready."""
    return [Server(f"s{i}", None, weight=weight) for i, weight in enumerate(weights)]


def names(balancer: Balancer, count: int) -> str:
    """Successive picks as server indexes: "0010" is s0 s0 s1 s0."""
    return "".join(getattr(balancer.pick(REQUESTS[0]), "name", "-")[1:] for _ in range(count))


def build(algorithm: str, servers: list[Server], hash_type: str = "consistent") -> Balancer:
    if algorithm == LeastResponseTime.name:
        # It learns from the clock: on the real one, a preemption between on_start and
        # on_finish is a server answering slowly, rightly avoided for a while. Here time
        # moves 1 ms per reading, so every request takes as long and the picks repeat.
        ticks = count()
        return LeastResponseTime(servers, rng=random.Random(1), clock=lambda: next(ticks) / 1000)
    arg = {"url_param": "id", "hdr": "x-user"}.get(algorithm)
    return make_balancer(algorithm, arg, hash_type, servers)


def picks(balancer: Balancer, count: int = 300, avoid: Server | None = None) -> list:
    """Sequential requests, bracketed by the hooks as the backend does (10 ms each)."""
    chosen = []
    for i in range(count):
        server = balancer.pick(REQUESTS[i % len(REQUESTS)], avoid)
        if server is not None:
            server.in_flight += 1
            balancer.on_start(server)
            server.in_flight -= 1
            balancer.on_finish(server, 0.01, True)
        chosen.append(server)
    return chosen


def make_unavailable(server: Server, how: str) -> None:
    if how == "down":
        server.up = False
    elif how == "full":
        server.maxconn, server.in_flight = 2, 2
    elif how == "weight0":
        server.weight = 0
    else:
        server.admin = how


@pytest.fixture
def pool() -> list[Server]:
    return make_pool(1, 1, 1)


@pytest.mark.parametrize(("algorithm", "hash_type"), CASES)
@pytest.mark.parametrize("how", ["down", DRAIN, MAINT, "full", "weight0"])
def test_unavailable_server_gets_nothing(pool, algorithm, hash_type, how):
    balancer = build(algorithm, pool, hash_type)
    make_unavailable(pool[1], how)
    balancer.update(pool)
    chosen = picks(balancer)
    assert pool[1] not in chosen
    assert None not in chosen


@pytest.mark.parametrize(("algorithm", "hash_type"), CASES)
def test_avoid_is_respected_until_it_is_the_last_one(pool, algorithm, hash_type):
    balancer = build(algorithm, pool, hash_type)
    chosen = picks(balancer, avoid=pool[0])
    assert pool[0] not in chosen and None not in chosen
    pool[1].up = pool[2].up = False
    assert set(picks(balancer, 20, avoid=pool[0])) == {pool[0]}


@pytest.mark.parametrize(("algorithm", "hash_type"), CASES)
def test_nothing_available_is_none(pool, algorithm, hash_type):
    balancer = build(algorithm, pool, hash_type)
    for server in pool:
        server.up = False
    assert set(picks(balancer, 20)) == {None}
    assert set(picks(balancer, 20, avoid=pool[0])) == {None}
    assert build(algorithm, [], hash_type).pick(REQUESTS[0]) is None


@pytest.mark.parametrize(("algorithm", "hash_type"), CASES)
def test_every_server_gets_traffic_and_a_new_one_joins(pool, algorithm, hash_type):
    balancer = build(algorithm, pool, hash_type)
    if algorithm == "first":
        pytest.skip("first fills the first server by design")
    assert set(picks(balancer)) == set(pool)
    pool.append(Server("new", None))
    balancer.update(pool)
    assert set(picks(balancer)) == set(pool)


def test_registry_names_match_config_names():
    assert set(ALGORITHMS) == {"roundrobin", "static-rr", "leastconn", "first", "source",
                               "uri", "url_param", "hdr", "random", "least_response_time"}
    assert all(cls.name == name for name, cls in ALGORITHMS.items())


def test_config_accepts_exactly_the_registered_algorithms():
    assert set(schema.ALGORITHMS) == set(ALGORITHMS)
    assert set(schema.HASH_TYPES) == set(HASH_TYPES)


@pytest.mark.parametrize(("algorithm", "arg", "error"), [
    ("roundrobbin", None, "unknown algorithm"),
    ("hdr", None, "needs an argument"),
    ("leastconn", "x", "takes no argument"),
    ("source", None, "hash_type"),
])
def test_make_balancer_errors(algorithm, arg, error):
    with pytest.raises(ValueError, match=error):
        make_balancer(algorithm, arg, "ketama", [])
