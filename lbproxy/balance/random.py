"""Weighted random with two choices (`balance: random`).

Algorithm (HAProxy's `balance random(<draws>)`, whose default of 2 `random` follows):
draw servers at random in proportion to their weights, with replacement, and keep the
least loaded, comparing in_flight/weight by cross-multiplication. Two draws, the "power
of two choices", spread load almost as evenly as leastconn without scanning the pool or
sharing state between workers; at equal loads the first draw wins, so an idle pool gets
exactly weighted random. `draws=1` is plain weighted random.

Pick cost: N draws, each a bisect over cumulative weights computed in `update()`,
O(N log n) without allocation. When a draw lands on an unavailable server or `avoid`,
the pick is redone over the available servers (O(n), one list).

The RNG is injectable for tests (`random.Random(seed)`).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import TYPE_CHECKING

from lbproxy.balance.base import Balancer
from lbproxy.balance.pool import candidates
from lbproxy.http.request import RequestInfo

if TYPE_CHECKING:
    from lbproxy.backends.server import Server

DEFAULT_DRAWS = 2


class WeightedRandom(Balancer):
    """Least loaded of `draws` weighted random draws."""

    name = "random"

    def __init__(self, servers: Sequence[Server], draws: int = DEFAULT_DRAWS,
                 rng: random.Random | None = None) -> None:
        if draws < 1:
            raise ValueError(f"random needs at least 1 draw, got {draws}")
        super().__init__(servers)
        self.draws = draws
        self._rng = rng or random.Random()
        self._cumulative = list(accumulate(server.weight for server in self.servers))

    def update(self, servers: Sequence[Server]) -> None:
        super().update(servers)
        self._cumulative = list(accumulate(server.weight for server in self.servers))

    def pick(self, request: RequestInfo, avoid: Server | None = None) -> Server | None:
        best = self._least_loaded_draw(self.servers, self._cumulative, avoid)
        if best is None:
            pool = candidates(self.servers, avoid)
            best = self._least_loaded_draw(pool, list(accumulate(s.weight for s in pool)), None)
        return best

    def _least_loaded_draw(self, servers: Sequence[Server], cumulative: list[int],
                           avoid: Server | None) -> Server | None:
        """None if the pool is empty or a draw is unusable (the caller then narrows it)."""
        total = cumulative[-1] if cumulative else 0
        if total <= 0:
            return None
        draw = self._rng.random
        best: Server | None = None
        for _ in range(self.draws):
            server = servers[bisect_right(cumulative, draw() * total)]
            if server is avoid or not server.available:
                return None
            if best is None or server.in_flight * best.weight < best.in_flight * server.weight:
                best = server
        return best
