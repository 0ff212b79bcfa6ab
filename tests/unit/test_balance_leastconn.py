"""Least connections: in_flight/weight, rotation among equals."""

from __future__ import annotations

from lbproxy.balance.leastconn import LeastConn
from tests.fakes import FakeRequest
from tests.unit.test_balance_contract import make_pool, names

REQUEST = FakeRequest()


def test_fewest_in_flight_wins():
    pool = make_pool(1, 1, 1)
    for server, in_flight in zip(pool, (5, 2, 3)):
        server.in_flight = in_flight
    assert names(LeastConn(pool), 3) == "111"


def test_in_flight_is_divided_by_weight():
    pool = make_pool(3, 1, 1)
    for server, in_flight in zip(pool, (5, 2, 2)):
        server.in_flight = in_flight  # 5/3 < 2/1
    assert LeastConn(pool).pick(REQUEST) is pool[0]
    pool[0].in_flight = 6  # 6/3 == 2/1: a three-way tie
    assert names(LeastConn(pool), 3) == "012"


def test_idle_servers_take_turns():
    assert names(LeastConn(make_pool(1, 1, 1)), 7) == "0120120"


def test_ties_rotate_among_the_least_loaded_only():
    pool = make_pool(1, 1, 1)
    pool[0].in_flight = 1
    assert names(LeastConn(pool), 4) == "1212"


def test_concurrent_requests_spread_by_weight():
    pool = make_pool(3, 1)
    balancer = LeastConn(pool)
    for _ in range(40):
        balancer.pick(REQUEST).in_flight += 1
    assert [server.in_flight for server in pool] == [30, 10]
