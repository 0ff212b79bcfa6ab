"""Smooth weighted round robin (`balance: roundrobin`).

Algorithm (nginx's smooth WRR, ngx_http_upstream_round_robin.c): every available
server's `current` grows by its weight; the largest wins and gives back the total
weight of the servers that took part. Over a cycle of sum(weights) picks each server
gets exactly its weight, and the picks are interleaved rather than in bursts: weights
5, 1, 1 give a a b a c a a.

Pick cost: O(n), one pass and no allocation. HAProxy's lb_fwrr.c is O(log n) with a
tree, which pays off only for pools far larger than a backend usually has.

Fairness: weights are read live on every pick, so a slowstart ramp or an API weight
change takes effect at once; unavailable servers and `avoid` neither win nor
accumulate credit while skipped. `update()` carries every remaining server's `current`
over, so a change to one server does not restart the rotation of the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lbproxy.balance.base import Balancer
from lbproxy.balance.pool import fallback
from lbproxy.http.request import RequestInfo

if TYPE_CHECKING:
    from lbproxy.backends.server import Server


class RoundRobin(Balancer):
    """Smooth weighted round robin; `_current[i]` is the credit of `servers[i]`."""

    name = "roundrobin"

    def __init__(self, servers: Sequence[Server]) -> None:
        super().__init__(servers)
        self._current = [0] * len(self.servers)

    def update(self, servers: Sequence[Server]) -> None:
        current = dict(zip(self.servers, self._current))
        super().update(servers)
        self._current = [current.get(server, 0) for server in self.servers]

    def pick(self, request: RequestInfo, avoid: Server | None = None) -> Server | None:
        current = self._current
        best = -1
        best_current = total = 0
        for index, server in enumerate(self.servers):
            if server is avoid or not server.available:
                continue
            weight = server.weight
            credit = current[index] + weight
            current[index] = credit
            total += weight
            if best < 0 or credit > best_current:
                best, best_current = index, credit
        if best < 0:
            return fallback(avoid)
        current[best] = best_current - total
        return self.servers[best]
