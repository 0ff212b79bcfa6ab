"""Least response time: peak EWMA, in-flight ages and two choices (`balance: least_response_time`).

Model. Each server has an estimate E of its response time (a value and the time it was
last updated) that forgets in time, not in number of requests, with time constant TAU:

- A response of latency x: if x ≥ E, E becomes x at once (peak: a server that turns
  slow is believed on its first slow answer); otherwise E = E·w + x·(1 - w), with
  w = exp(-Δ/TAU) and Δ the time since the last update: the time-weighted EWMA of
  Finagle's and Linkerd's peak EWMA.
- While a server has nothing in flight, E is read faded: E·exp(-(t - stamp)/TAU). An
  avoided server thus becomes the cheaper choice after a while and gets a probe, so a
  recovered server earns its traffic back: TAU × ln(how much slower it looked than the
  others' cost), 0.3–0.6 s for a 10× slower one. While a request is in flight there, E
  is read unfaded: one probe at a time, and a proxy-wide stall (every server's answers
  late at once, the others' estimates peaking) buys the avoided server one request,
  not a burst.
- Requests still in flight are evidence before they complete: if the oldest request in
  flight at a server is A seconds old, the server is taking at least A now, so its
  current latency is max(E, A). A server that stalls or turns 10× slower is avoided as
  soon as its oldest request is older than what the others answer in, a few
  milliseconds, instead of after its first slow answer (Finagle and Linkerd count
  pending requests, not their age).

  The balancer is told on_start(server) and on_finish(server, ...) but not which request
  finished, so each server keeps the start times of its in-flight requests in a FIFO and
  a finish removes the oldest. Whatever order requests really finish in, the FIFO then
  holds the most recent starts, so A is a lower bound of the true oldest age: it may
  notice a stall late, never invent one. In steady state it is the window in which the
  server received as many requests as it holds, its latency by Little's law. The start
  popped also bounds the latency reported (which counts from the request's arrival, so
  includes queueing and earlier attempts): x = min(latency, now - popped start).
  A request in flight longer than AGE_HORIZON (a WebSocket tunnel, a long poll) stops
  counting: on a quiet server it would otherwise keep the server avoided until it ends.

A pick draws two distinct available servers uniformly and keeps the cheaper by

    cost = max(E, A) × (1 + in_flight / (mean in_flight + 1)) / weight

The load term is relative to the pool's mean (Finagle and Linkerd use in_flight + 1,
which models servers that queue requests one by one): with 30 requests in flight over
three fast async servers, an idle server 10× slower must not look cheaper than a fast
one with 10 in flight. Queueing at a server still shows, through its latency.

Failures (ok=False: connect errors, timeouts, 5xx) must not look cheap: one counts as a
response of max(latency, FAILURE_FLOOR, FAILURE_FACTOR × the others' median, taken over
a random sample of TYPICAL_SAMPLE servers in a larger pool), and the
estimate does not start fading until a hold of FAILURE_HOLD × 2^(consecutive failures-1),
at most FAILURE_HOLD_MAX, has passed. A server answering 500 in 1 ms is probed about
1.4 s after its first failure, then less and less often, down to every ~11 s; a success
restarts the count (the penalty still fades, it is not erased).

Edge cases:
- A new server starts at the median estimate of the others (DEFAULT_ESTIMATE in a new
  pool): neither flooded for looking free nor starved for looking slow.
- Starts without a finish (a server moved to the backup balancer mid-request) would
  look like an ever older request: a FIFO longer than the server's in_flight is trimmed.

Pick cost: two draws and two costs (an exp only for an idle server, O(1) whatever the
pool size), no allocation; O(n) with one list when a draw lands on an unavailable server
or `avoid`. on_start/on_finish: O(1) (a deque append/popleft; on a failure, the median
of at most TYPICAL_SAMPLE estimates: a pool of 5,000 failing servers must not make each
error cost a pass over the pool). The RNG and the clock are injectable.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from math import exp
from statistics import median
from typing import TYPE_CHECKING

from lbproxy.balance.base import Balancer
from lbproxy.balance.pool import candidates
from lbproxy.http.request import RequestInfo

if TYPE_CHECKING:
    from lbproxy.backends.server import Server

# Seconds for what a server did to fade to 1/e. Short enough that a recovered server
# (10× slow before) is probed within ~0.6 s and gets its share back within a second;
# long enough to average over the hundreds of responses a busy server sends in that time.
TAU = 0.25
# Estimate of a server nobody knows anything about yet. Any positive value works when
# all servers share it (only ratios matter); small, so real measurements win at once.
DEFAULT_ESTIMATE = 0.001
# A failure weighs at least 1 s and 10× what the pool takes: worse than any healthy
# server, so it gets only the probes that let it prove it recovered.
FAILURE_FLOOR = 1.0
FAILURE_FACTOR = 10.0
# The penalty of n failures in a row starts fading after FAILURE_HOLD × 2^(n-1) s, at
# most FAILURE_HOLD_MAX (passive ejection's default fail_timeout): a server that keeps
# failing is asked less and less often, as clients see each of its errors.
FAILURE_HOLD = 0.25
FAILURE_HOLD_MAX = 10.0
# Doublings past which the hold is FAILURE_HOLD_MAX anyway (2.0 ** 1024 overflows).
FAILURE_DOUBLINGS_MAX = 32
# What a normal server takes is the median of at most this many estimates: the whole
# pool when it is small, a random sample of a large one.
TYPICAL_SAMPLE = 31
# A request in flight for longer than this (a WebSocket tunnel, a long poll, a stream)
# says nothing more about how fast its server answers: it stops counting as evidence.
AGE_HORIZON = 10.0


class _Estimate:
    __slots__ = ("value", "stamp", "starts", "failures")

    def __init__(self, value: float, stamp: float) -> None:
        self.value = value                # seconds, as of `stamp`
        self.stamp = stamp                # clock() of the last update; later while held
        self.starts: deque[float] = deque()   # clock() at on_start of in-flight requests
        self.failures = 0                 # consecutive failures

    def at(self, now: float) -> float:
        """The estimate at `now`, faded since the last update."""
        elapsed = now - self.stamp
        return self.value * exp(-elapsed / TAU) if elapsed > 0 else self.value


class LeastResponseTime(Balancer):
    """Cheaper of two random servers by max(peak EWMA, oldest in-flight age) × load / weight."""

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
        now = self._clock()
        neutral = self._typical(now)
        for server in self.servers:
            if server not in estimates:
                estimates[server] = _Estimate(neutral, now)

    def _typical(self, now: float, exclude: Server | None = None) -> float:
        """Median estimate of the pool (without `exclude`): what a normal server takes."""
        servers, estimates = self.servers, self._estimates
        if len(servers) > TYPICAL_SAMPLE:
            servers = self._rng.sample(servers, TYPICAL_SAMPLE)
        values = [estimates[server].at(now) for server in servers
                  if server is not exclude and server in estimates]
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
        spread = self._in_flight / len(self.servers) + 1.0
        return b if self._cost(b, now, spread) < self._cost(a, now, spread) else a

    def _cost(self, server: Server, now: float, spread: float) -> float:
        estimate = self._estimates[server]
        value = estimate.value
        in_flight = server.in_flight
        if not in_flight:
            elapsed = now - estimate.stamp
            if elapsed > 0:
                value *= exp(-elapsed / TAU)
        elif estimate.starts:
            starts = estimate.starts
            age = now - starts[0]
            if age > value:
                if age > AGE_HORIZON or len(starts) > in_flight:
                    self._trim(starts, in_flight, now)
                    age = now - starts[0] if starts else 0.0
                if age > value:
                    value = age
        return value * (1.0 + in_flight / spread) / server.weight

    @staticmethod
    def _trim(starts: deque[float], size: int, now: float) -> None:
        """Forget starts that no finish will remove and those too old to tell anything."""
        while len(starts) > size:
            starts.popleft()
        while starts and now - starts[0] > AGE_HORIZON:
            starts.popleft()

    def on_start(self, server: Server) -> None:
        self._in_flight += 1
        estimate = self._estimates.get(server)
        if estimate is not None:
            starts = estimate.starts
            if len(starts) >= server.in_flight:
                self._trim(starts, server.in_flight - 1, 0.0)
            starts.append(self._clock())

    def on_finish(self, server: Server, latency: float, ok: bool) -> None:
        if self._in_flight > 0:
            self._in_flight -= 1
        estimate = self._estimates.get(server)
        if estimate is None:  # removed while the request was in flight
            return
        now = self._clock()
        if estimate.starts:
            since = now - estimate.starts.popleft()
            if since < latency:
                latency = since
        elapsed = now - estimate.stamp
        keep = exp(-elapsed / TAU) if elapsed > 0 else 1.0
        current = estimate.value * keep
        if not ok:
            estimate.failures += 1
            penalty = max(latency, FAILURE_FLOOR,
                          FAILURE_FACTOR * self._typical(now, exclude=server))
            estimate.value = max(current, penalty)
            doublings = min(estimate.failures - 1, FAILURE_DOUBLINGS_MAX)
            estimate.stamp = now + min(FAILURE_HOLD_MAX, FAILURE_HOLD * 2.0 ** doublings)
            return
        estimate.failures = 0
        estimate.value = latency if latency >= current else current + latency * (1.0 - keep)
        if elapsed > 0:
            estimate.stamp = now
