"""From two looks at the proxy, the load one pool saw in between.

The runtime API and /metrics only expose counters (requests, histogram buckets) and
gauges (in-flight). `PoolMeter` keeps the previous look and turns the difference into
the request rate and the p95 response time of the last interval, so a load change shows
in the next decision instead of being diluted by the proxy's whole history (and
without depending on the proxy's own averaging window).

Counter rules, as Prometheus' rate(): a server seen for the first time counts from 0
(it was just added, or the proxy restarted); a counter that went down was reset by a
proxy restart and counts from 0 too. The first look gives no rate at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

BUCKET = "lbproxy_server_response_time_seconds_bucket"

Buckets = dict[float, float]    # upper bound ("le") -> cumulative count


def latency_buckets(text: str, backend: str) -> dict[str, Buckets]:
    """Per server of `backend`, its response-time histogram from a /metrics page
    (matched by sample name, so a page without `# TYPE` lines reads the same)."""
    servers: dict[str, Buckets] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == BUCKET and labels.get("backend") == backend:
                servers.setdefault(labels["server"], {})[float(labels["le"])] = sample.value
    return servers


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """The q-quantile of cumulative buckets, interpolated linearly inside the bucket it
    falls in (Prometheus' histogram_quantile); None without observations. A rank in the
    +Inf bucket answers the highest finite bound, the most that is known."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return bound if inside <= 0 else lower + (bound - lower) * (rank - below) / inside
        lower, below = bound, count
    return lower


def _delta(now: float, before: float | None) -> float:
    return now if before is None or now < before else now - before


@dataclass(frozen=True, slots=True)
class Look:
    """One poll of a backend: counters by server name, at a monotonic time."""

    time: float
    backend_requests: float | None
    server_requests: Mapping[str, float]
    latency: Mapping[str, Buckets]


@dataclass(frozen=True, slots=True)
class Load:
    """What happened in the pool since the previous look (None: not measurable yet)."""

    request_rate: float | None
    p95: float | None


def look(time: float, backend: Mapping[str, Any], metrics_text: str | None) -> Look:
    """A Look from `GET /api/backends/{b}` and, when available, the /metrics page."""
    servers = backend.get("servers") or []
    latency = latency_buckets(metrics_text, backend["name"]) if metrics_text else {}
    return Look(time, backend.get("requests"),
                {s["name"]: float(s.get("requests") or 0) for s in servers}, latency)


class PoolMeter:
    """Rates and p95 between successive looks at one backend."""

    def __init__(self) -> None:
        self._last: Look | None = None

    def update(self, new: Look) -> Load:
        last, self._last = self._last, new
        if last is None or new.time <= last.time:
            return Load(None, None)
        elapsed = new.time - last.time
        if new.backend_requests is not None and last.backend_requests is not None:
            requests = _delta(new.backend_requests, last.backend_requests)
        else:
            requests = math.fsum(_delta(n, last.server_requests.get(s))
                                 for s, n in new.server_requests.items())
        return Load(requests / elapsed, histogram_quantile(0.95, self._latency(last, new)))

    @staticmethod
    def _latency(last: Look, new: Look) -> Buckets:
        """The pool's histogram of the interval: per-server bucket deltas, summed."""
        total: Buckets = {}
        for server, buckets in new.latency.items():
            before = last.latency.get(server, {})
            if any(count < before.get(bound, 0.0) for bound, count in buckets.items()):
                before = {}                 # reset: the proxy restarted
            for bound, count in buckets.items():
                total[bound] = total.get(bound, 0.0) + count - before.get(bound, 0.0)
        return total


def per_server(total: float | None, count: int) -> float | None:
    return None if total is None or count <= 0 else total / count


def mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return math.fsum(known) / len(known) if known else None
