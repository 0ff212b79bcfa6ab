"""Hashing: stable keys, consistent ring remapping, map-based shares, fallbacks."""

from __future__ import annotations

from collections import Counter

import pytest

from lbproxy.backends.server import Server
from lbproxy.balance.hashing import (HashBalancer, HeaderHash, SourceHash, UriHash,
                                     UrlParamHash)
from tests.fakes import FakeRequest
from tests.unit.test_balance_contract import make_pool

KEYS = [FakeRequest(src=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}") for i in range(10_000)]


def mapping(balancer: HashBalancer) -> list[Server | None]:
    return [balancer.pick(request) for request in KEYS]


def shares(balancer: HashBalancer) -> list[float]:
    counts = Counter(mapping(balancer))
    return [counts[server] / len(KEYS) for server in balancer.servers]


@pytest.mark.parametrize(("balancer", "same", "other"), [
    (SourceHash, FakeRequest(src="192.0.2.7", url="/a"), FakeRequest(src="192.0.2.7", url="/b")),
    (UriHash, FakeRequest(url="/img/1.png?v=1"), FakeRequest(url="/img/1.png?v=2", src="::1")),
    (lambda pool: UrlParamHash(pool, "user"),
     FakeRequest(url="/a?x=1&user=42"), FakeRequest(url="/b?user=42&userx=7")),
    (lambda pool: HeaderHash(pool, "X-Tenant"),
     FakeRequest(headers=[("X-Tenant", "acme")]), FakeRequest(headers=[("x-tenant", "acme")])),
])
def test_same_key_same_server(balancer, same, other):
    hashed = balancer(make_pool(*[1] * 10))
    first = hashed.pick(same)
    assert all(hashed.pick(request) is first for request in (same, other) * 5)


@pytest.mark.parametrize("url", ["/a", "/a?user=", "/a?username=42&x"])
def test_missing_key_falls_back_to_round_robin(url):
    hashed = UrlParamHash(make_pool(1, 1, 1), "user")
    assert Counter(hashed.pick(FakeRequest(url=url)).name for _ in range(30)) == {
        "s0": 10, "s1": 10, "s2": 10}


def test_missing_header_falls_back_to_round_robin():
    hashed = HeaderHash(make_pool(1, 1), "x-tenant")
    assert {hashed.pick(FakeRequest()).name for _ in range(4)} == {"s0", "s1"}


def test_consistent_removing_one_of_ten_moves_only_its_keys():
    pool = make_pool(*[1] * 10)
    hashed = SourceHash(pool)
    before = mapping(hashed)
    hashed.update(pool[:4] + pool[5:])
    after = mapping(hashed)
    moved = [old for old, new in zip(before, after) if old is not new]
    assert set(moved) == {pool[4]}
    assert len(moved) <= 0.15 * len(KEYS)


def test_consistent_adding_one_takes_about_its_share_from_everyone():
    pool = make_pool(*[1] * 10)
    hashed = SourceHash(pool)
    before = mapping(hashed)
    newcomer = Server("s10", None)
    hashed.update(pool + [newcomer])
    after = mapping(hashed)
    moved = [new for old, new in zip(before, after) if old is not new]
    assert set(moved) == {newcomer}
    assert 0.05 * len(KEYS) <= len(moved) <= 0.13 * len(KEYS)


def test_down_server_keys_spread_then_return():
    pool = make_pool(*[1] * 10)
    hashed = SourceHash(pool)
    before = mapping(hashed)
    pool[3].up = False
    during = mapping(hashed)
    assert all(old is new for old, new in zip(before, during) if old is not pool[3])
    assert len({new for old, new in zip(before, during) if old is pool[3]}) >= 4
    pool[3].up = True
    assert mapping(hashed) == before


@pytest.mark.parametrize("hash_type", ["consistent", "map-based"])
def test_shares_follow_weights(hash_type):
    equal = shares(SourceHash(make_pool(1, 1, 1, 1), hash_type))
    assert all(abs(share - 0.25) < 0.03 for share in equal)
    weighted = shares(SourceHash(make_pool(1, 2, 3, 4), hash_type))
    for share, weight in zip(weighted, (1, 2, 3, 4)):
        assert abs(share - weight / 10) < 0.25 * weight / 10


def test_reweighting_shifts_the_ring_share_proportionally():
    pool = make_pool(1, 1, 1, 1)
    hashed = SourceHash(pool)
    before = mapping(hashed)
    pool[0].weight = 4  # 4/7 of the weight
    hashed.update(pool)
    after = mapping(hashed)
    assert abs(shares(hashed)[0] - 4 / 7) < 0.06
    assert all(new is pool[0] for old, new in zip(before, after) if old is not new)


def test_map_based_modulo_over_weights():
    hashed = SourceHash(make_pool(1, 1, 1), "map-based")
    assert abs(shares(hashed)[0] - 1 / 3) < 0.02
    assert hashed.pick(KEYS[0]) is hashed.pick(KEYS[0])


def test_ring_after_any_history_is_the_ring_built_fresh():
    """Workers and restarts see different update histories but must map alike."""
    pool = make_pool(1, 2, 3, 1)
    hashed = SourceHash(pool)
    for weight in range(1, 9):  # a slowstart ramp
        pool[0].weight = weight
        hashed.update(pool)
    hashed.update(pool[1:])
    pool[2].weight = 1
    hashed.update([Server("s9", None)] + pool)
    fresh = SourceHash([Server(s.name, None, weight=s.weight) for s in hashed.servers])
    assert [s.name for s in mapping(hashed)] == [s.name for s in mapping(fresh)]
    assert list(hashed._ring) == sorted(hashed._ring)


def test_small_changes_in_a_large_ring_are_spliced_into_the_ring_built_fresh():
    pool = make_pool(*[1, 2] * 100)                     # 30,000 points
    hashed = SourceHash(pool)
    pool[7].weight = 5                                  # 2 -> 5, a slowstart step: +300
    hashed.refresh(pool[7])
    pool[11].weight = 1                                 # 2 -> 1: -100
    hashed.refresh(pool[11])
    pool[9].up = False                                  # health moves no point
    hashed.refresh(pool[9])
    assert pool[9] not in mapping(hashed)
    pool[9].up = True
    hashed.refresh(pool[9])
    hashed.update(pool[:50] + pool[51:] + [Server("new", None)])     # -100, +100
    fresh = SourceHash([Server(s.name, None, weight=s.weight) for s in hashed.servers])
    assert len(hashed._ring) == len(fresh._ring) == 30_200
    assert [hashed._server_at(i).name for i in range(30_200)] == [
        fresh._server_at(i).name for i in range(30_200)]
    assert [s.name for s in mapping(hashed)] == [s.name for s in mapping(fresh)]
