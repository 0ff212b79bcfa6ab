"""Static weighted round robin (`balance: static-rr`).

Algorithm: a sequence in which each server appears `config_weight / gcd` times, spread
evenly (Sainte-Laguë order, see `pool.weighted_order`), walked with a cursor; like
HAProxy's static-rr, the effective weight is ignored, so slowstart does not ramp.

Pick cost: O(1) when the next entry is available; when servers are skipped, the walk
stops after seeing each server once, but may step over up to sum(weights)/gcd entries.

Fairness: exact shares over one sequence. The sequence is rebuilt only when membership
or a configured weight changes, and the cursor is kept, so `update()` calls made for a
slowstart ramp or a health flip cost one comparison of the weight list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lbproxy.balance.base import Balancer
from lbproxy.balance.pool import fallback, walk, weighted_order
from lbproxy.http.request import RequestInfo

if TYPE_CHECKING:
    from lbproxy.backends.server import Server


class StaticRoundRobin(Balancer):
    """Walks a weighted sequence built from the configured weights."""

    name = "static-rr"

    def __init__(self, servers: Sequence[Server]) -> None:
        super().__init__(servers)
        self._built_from: list[tuple[Server, int]] = []
        self._sequence: list[Server] = []
        self._members = 0
        self._position = 0
        self._build()

    def update(self, servers: Sequence[Server]) -> None:
        super().update(servers)
        self._build()

    def _build(self) -> None:
        weighted = [(server, server.config_weight) for server in self.servers]
        if weighted == self._built_from:
            return
        self._built_from = weighted
        self._sequence = weighted_order(weighted)
        self._members = len(set(self._sequence))
        self._position = self._position % len(self._sequence) if self._sequence else 0

    def pick(self, request: RequestInfo, avoid: Server | None = None) -> Server | None:
        sequence = self._sequence
        if not sequence:
            return None
        index = walk(sequence.__getitem__, len(sequence), self._position, avoid, self._members)
        if index < 0:
            return fallback(avoid)
        self._position = index + 1 if index + 1 < len(sequence) else 0
        return sequence[index]
