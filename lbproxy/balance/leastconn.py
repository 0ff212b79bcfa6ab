"""Least connections (`balance: leastconn`).

Algorithm: the available server with the fewest in-flight requests per unit of weight,
compared as `a.in_flight * b.weight < b.in_flight * a.weight` (integers, no floats).
Ties go to the first server at or after a rotating start, which then moves past the
winner, so idle servers take turns instead of the first one getting every request
(HAProxy's lb_fwlc.c gets the same effect by requeueing a server behind its equals).
As in HAProxy, weights break no ties among idle servers: at very low concurrency
leastconn behaves like plain round robin.

Pick cost: O(n), one pass, no allocation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lbproxy.balance.base import Balancer
from lbproxy.balance.pool import fallback
from lbproxy.http.request import RequestInfo

if TYPE_CHECKING:
    from lbproxy.backends.server import Server


class LeastConn(Balancer):
    """Fewest in-flight requests per weight; ties rotate."""

    name = "leastconn"

    def __init__(self, servers: Sequence[Server]) -> None:
        super().__init__(servers)
        self._start = 0

    def pick(self, request: RequestInfo, avoid: Server | None = None) -> Server | None:
        servers = self.servers
        size = len(servers)
        best: Server | None = None
        best_index = 0
        index = self._start if self._start < size else 0
        for _ in range(size):
            server = servers[index]
            if server is not avoid and server.available and (
                    best is None
                    or server.in_flight * best.weight < best.in_flight * server.weight):
                best, best_index = server, index
            index = index + 1 if index + 1 < size else 0
        if best is None:
            return fallback(avoid)
        self._start = best_index + 1
        return best
