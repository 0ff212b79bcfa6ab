"""Smooth weighted round robin: exact shares, interleaving, live weights, kept rotation."""

from __future__ import annotations

from collections import Counter

from lbproxy.backends.server import Server
from lbproxy.balance.roundrobin import RoundRobin
from tests.unit.test_balance_contract import make_pool, names


def test_weights_3_1_give_3_and_1_in_4_picks_interleaved():
    balancer = RoundRobin(make_pool(3, 1))
    assert names(balancer, 4) == "0010"
    assert names(balancer, 8) == "00100010"


def test_weights_5_1_1_is_nginx_smooth_sequence():
    assert names(RoundRobin(make_pool(5, 1, 1)), 14) == "00102000010200"


def test_exact_shares_every_cycle():
    balancer = RoundRobin(make_pool(4, 3, 2, 1))
    for _ in range(50):
        assert Counter(names(balancer, 10)) == {"0": 4, "1": 3, "2": 2, "3": 1}


def test_weight_change_mid_rotation_applies_at_once_without_restart():
    pool = make_pool(1, 1, 1)
    balancer = RoundRobin(pool)
    assert names(balancer, 2) == "01"
    pool[2].weight = 4
    balancer.update(pool)
    assert names(balancer, 1) == "2"  # s2 is still next: rotation not reset
    assert Counter(names(balancer, 600)) == {"0": 100, "1": 100, "2": 400}


def test_update_keeps_the_rotation_of_remaining_servers():
    pool = make_pool(1, 1, 1)
    balancer = RoundRobin(pool)
    assert names(balancer, 2) == "01"
    balancer.update(pool + [Server("s3", None)])
    assert names(balancer, 2) == "23"
    balancer.update(pool[1:])
    assert Counter(names(balancer, 20)) == {"1": 10, "2": 10}


def test_slowstart_ramp_steps_apply_at_once():
    pool = make_pool(10, 1)
    balancer = RoundRobin(pool)
    shares = []
    for weight in (1, 4, 10):
        pool[1].weight = weight
        balancer.refresh(pool[1])
        shares.append(Counter(names(balancer, 10 + weight))["1"])
    assert shares == [1, 4, 10]


def test_skipped_server_keeps_no_credit_and_rejoins_smoothly():
    pool = make_pool(1, 1)
    balancer = RoundRobin(pool)
    pool[1].up = False
    assert names(balancer, 5) == "00000"
    pool[1].up = True
    assert names(balancer, 6) in ("101010", "010101")
