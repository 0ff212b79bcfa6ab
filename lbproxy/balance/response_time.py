"""Least response time: peak EWMA with power of two choices (`balance: least_response_time`).

Algorithm (Finagle's PeakEwma balancer, Linkerd/tower's `PeakEwma` + P2C): each server
keeps an estimate of its response time. A response slower than the estimate replaces it
at once (peak: a server that turns slow is noticed on its first slow answer); a faster
one is blended in with weight 1 - exp(-elapsed/TAU), so the estimate forgets in time,
not in number of requests. A pick draws two distinct available servers uniformly and
keeps the cheaper by

    cost = estimate × (1 + in_flight / (mean in_flight + 1)) / weight

so a slow server and a server piling up more requests than the others both look
expensive. The load term is relative to the pool's mean (Finagle and Linkerd use plain
in_flight + 1, which models servers that queue requests one by one): with 30 requests in
flight over three fast async servers, an idle server 10× slower must not look cheaper
than a fast one with 10 in flight. Queueing at a server still shows, through the
latency it adds to the estimate. While a server
has nothing in flight its estimate decays towards 0 at pick time, which sends it an
occasional probe: a server that was slow can earn its traffic back.

Edge cases, each of which would otherwise skew the pool:
- A new server starts at the median estimate of the others (or DEFAULT_ESTIMATE in a
  new pool): neither flooded for looking free nor starved for looking slow.
- A failed request (ok=False) counts as max(latency, FAILURE_FLOOR, FAILURE_FACTOR ×
  the others' median), so a server answering 502 in 1 ms does not look fast.

Pick cost: two draws, two costs (one exp each), no allocation; O(n) with one list when a
draw lands on an unavailable server or `avoid`. The RNG and the clock are injectable.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from math import exp
from statistics import median
from typing import TYPE_CHECKING

from lbproxy.balance.base import Balancer
from lbproxy.balance.pool import candidates
from lbproxy.http.request import RequestInfo

if TYPE_CHECKING:
    from lbproxy.backends.server import Server

# Seconds for an old observation to fade to 1/e: a slow spell is forgotten within
# ~30 s, while one slow response does not flip the choice (Finagle's default is 10 s).
TAU = 10.0
# Estimate of a server nobody knows anything about yet. Any positive value works when
# all servers share it (only ratios matter); small, so real measurements win at once.
DEFAULT_ESTIMATE = 0.001
# A failure weighs at least 1 s and 10× what the pool takes: worse than any healthy
# server, so it gets only the probes that let it prove it recovered.
FAILURE_FLOOR = 1.0
FAILURE_FACTOR = 10.0


class _Estimate:
    __slots__ = ("value", "stamp")

    def __init__(self, value: float, stamp: float) -> None:
        self.value = value  # seconds
        self.stamp = stamp  # clock() of the last observation


class LeastResponseTime(Balancer):
    """Cheaper of two random servers by peak-EWMA latency × load / weight."""

    name = "least_response_time"

    def __init__(self, servers: Sequence[Server], rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(servers)
        self._rng = rng or random.Random()
        self._clock = clock
        self._estimates: dict[Server, _Estimate] = {}
        self._in_flight = 0       # requests in flight over the pool (on_start/on_finish)
        self._track()

    def update(self, servers: Sequence[Server]) -> None:
        super().update(servers)
        self._track()

    def _track(self) -> None:
        """Keep the remaining servers' estimates; start new ones at the pool's median."""
        estimates = {server: self._estimates[server] for server in self.servers
                     if server in self._estimates}
        self._estimates = estimates
        neutral = self._typical()
        now = self._clock()
        for server in self.servers:
            if server not in estimates:
                estimates[server] = _Estimate(neutral, now)

    def _typical(self, exclude: Server | None = None) -> float:
        """Median estimate of the pool (without `exclude`): what a normal server takes."""
        values = [e.value for server, e in self._estimates.items() if server is not exclude]
        return median(values) if values else DEFAULT_ESTIMATE

    def pick(self, request: RequestInfo, avoid: Server | None = None) -> Server | None:
        best = self._cheaper_of_two(self.servers, avoid)
        if best is None:
            best = self._cheaper_of_two(candidates(self.servers, avoid), None)
        return best

    def _cheaper_of_two(self, servers: Sequence[Server],
                        avoid: Server | None) -> Server | None:
        """None if the pool is empty or a draw is unusable (the caller then narrows it)."""
        size = len(servers)
        if size < 2:
            only = servers[0] if size else None
            return only if only is not None and only is not avoid and only.available else None
        draw = self._rng.random
        first = int(draw() * size)
        second = int(draw() * (size - 1))
        a, b = servers[first], servers[second + (second >= first)]
        if a is avoid or b is avoid or not (a.available and b.available):
            return None
        now = self._clock()
        return b if self._cost(b, now) < self._cost(a, now) else a

    def _cost(self, server: Server, now: float) -> float:
        estimate = self._estimates[server]
        value = estimate.value
        if not server.in_flight:
            value *= exp((estimate.stamp - now) / TAU)
        mean = self._in_flight / len(self.servers)
        return value * (1.0 + server.in_flight / (mean + 1.0)) / server.weight

    def on_start(self, server: Server) -> None:
        self._in_flight += 1

    def on_finish(self, server: Server, latency: float, ok: bool) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        estimate = self._estimates.get(server)
        if estimate is None:  # removed while the request was in flight
            return
        if not ok:
            latency = max(latency, FAILURE_FLOOR,
                          FAILURE_FACTOR * self._typical(exclude=server))
        now = self._clock()
        if latency >= estimate.value:
            estimate.value = latency
        else:
            keep = exp((estimate.stamp - now) / TAU)
            estimate.value = estimate.value * keep + latency * (1.0 - keep)
        estimate.stamp = now
