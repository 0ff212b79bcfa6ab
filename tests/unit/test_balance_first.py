"""First: fill servers in configured order up to their maxconn."""

from __future__ import annotations

from lbproxy.balance.first import First
from tests.fakes import FakeRequest
from tests.unit.test_balance_contract import make_pool


def test_fills_in_order_up_to_maxconn():
    pool = make_pool(1, 1, 1)
    for server in pool:
        server.maxconn = 2
    balancer = First(pool)
    chosen = []
    for _ in range(6):
        server = balancer.pick(FakeRequest())
        server.in_flight += 1
        chosen.append(server.name)
    assert chosen == ["s0", "s0", "s1", "s1", "s2", "s2"]
    assert balancer.pick(FakeRequest()) is None
    pool[0].in_flight -= 1
    assert balancer.pick(FakeRequest()) is pool[0]
