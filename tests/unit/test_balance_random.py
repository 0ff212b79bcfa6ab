"""Weighted random with N draws: weighted shares, preference for the less loaded."""

from __future__ import annotations

import random
from collections import Counter

from lbproxy.balance.random import WeightedRandom
from tests.fakes import FakeRequest
from tests.unit.test_balance_contract import make_pool

PICKS = 30_000


def shares(balancer: WeightedRandom) -> list[float]:
    counts = Counter(balancer.pick(FakeRequest()) for _ in range(PICKS))
    return [counts[server] / PICKS for server in balancer.servers]


def test_one_draw_is_weighted_random():
    balancer = WeightedRandom(make_pool(1, 2, 3), draws=1, rng=random.Random(1))
    for share, expected in zip(shares(balancer), (1 / 6, 2 / 6, 3 / 6)):
        assert abs(share - expected) < 0.015


def test_two_draws_at_equal_load_keep_the_weights():
    balancer = WeightedRandom(make_pool(1, 2, 3), rng=random.Random(2))
    for share, expected in zip(shares(balancer), (1 / 6, 2 / 6, 3 / 6)):
        assert abs(share - expected) < 0.015


def test_two_draws_avoid_the_loaded_server():
    pool = make_pool(1, 1, 1)
    pool[0].in_flight = 10
    loaded = shares(WeightedRandom(pool, rng=random.Random(3)))[0]
    assert abs(loaded - 1 / 9) < 0.015  # only when both draws land on it


def test_load_is_compared_per_weight():
    pool = make_pool(4, 1)
    pool[0].in_flight, pool[1].in_flight = 4, 2  # 1 per weight unit vs 2
    heavy = shares(WeightedRandom(pool, rng=random.Random(4)))[0]
    assert abs(heavy - (1 - 0.2 * 0.2)) < 0.01


def test_unavailable_draw_redraws_among_available_with_weights():
    pool = make_pool(1, 1, 2)
    pool[0].up = False
    balancer = WeightedRandom(pool, draws=1, rng=random.Random(5))
    assert [round(share, 1) for share in shares(balancer)] == [0.0, 0.3, 0.7]
