"""First available server (`balance: first`).

Algorithm (HAProxy's `balance first`): the first server in configured order that is
available, i.e. up, ready and under its maxconn. Traffic fills one server up to its
maxconn before spilling to the next, so the last servers can idle or be scaled down;
it only makes sense with `maxconn` set. Weights play no part (0 still means none).

Pick cost: O(k) for the k servers ahead of the pick; no allocation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lbproxy.balance.base import Balancer
from lbproxy.balance.pool import fallback
from lbproxy.http.request import RequestInfo

if TYPE_CHECKING:
    from lbproxy.backends.server import Server


class First(Balancer):
    """Fill servers in configured order."""

    name = "first"

    def pick(self, request: RequestInfo, avoid: Server | None = None) -> Server | None:
        for server in self.servers:
            if server is not avoid and server.available:
                return server
        return fallback(avoid)
