"""Static round robin: a precomputed sequence from configured weights."""

from __future__ import annotations

from collections import Counter

from lbproxy.balance.pool import weighted_order
from lbproxy.balance.static_rr import StaticRoundRobin
from tests.unit.test_balance_contract import make_pool, names


def test_weights_3_1_give_3_and_1_in_4_picks():
    balancer = StaticRoundRobin(make_pool(3, 1))
    for _ in range(10):
        assert Counter(names(balancer, 4)) == {"0": 3, "1": 1}


def test_weighted_order_is_spread_and_reduced_by_gcd():
    a, b, c, zero = make_pool(20, 10, 10, 0)
    order = weighted_order([(a, 20), (b, 10), (c, 10), (zero, 0)])
    assert order == [a, b, c, a]
    a, b = make_pool(5, 2)
    assert weighted_order([(a, 5), (b, 2)]) == [a, b, a, a, a, b, a]


def test_effective_weight_is_ignored_configured_weight_rebuilds():
    pool = make_pool(2, 2)
    balancer = StaticRoundRobin(pool)
    pool[1].weight = 1  # slowstart lowers the effective weight only
    balancer.update(pool)
    assert Counter(names(balancer, 4)) == {"0": 2, "1": 2}
    pool[1].config_weight = pool[1].weight = 3
    balancer.update(pool)
    assert Counter(names(balancer, 40)) == {"0": 16, "1": 24}


def test_unavailable_server_is_stepped_over_in_order():
    pool = make_pool(1, 1, 1)
    balancer = StaticRoundRobin(pool)
    pool[1].up = False
    assert names(balancer, 6) == "020202"
