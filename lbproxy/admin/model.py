"""What the stats page, the CSV, the metrics and the API all report, read off the live objects.

The data plane only increments plain counters. Rates and "recent" response times need a
time window, so a `Sampler` copies the counters once per TICK into a short ring per
object (frontend, backend, server) and answers from the difference between now and the
oldest sample: rps over the last WINDOW seconds, and avg/p95 response time from the
histogram counts added in that window (so a server that got slow shows it at once, not
diluted by hours of history). Rings are weakly keyed, so removed servers and objects
replaced by a reload disappear on their own.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from lbproxy.admin.slicing import Sliced, mapped
from lbproxy.backends.backend import Backend
from lbproxy.backends.server import LATENCY_BUCKETS, Server
from lbproxy.proxy.frontend import Frontend

if TYPE_CHECKING:
    from lbproxy.runtime.engine import Engine

TICK = 1.0        # seconds between samples: the resolution of rates
WINDOW = 10.0     # seconds of history behind rps and recent response times: smooths 1 s bursts
STATUS_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")   # index = status // 100


def quantile(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile (seconds) of a LATENCY_BUCKETS histogram, interpolated linearly inside
    its bucket as Prometheus' histogram_quantile does; None without observations. Counts in
    the overflow slot answer the highest bound, since nothing is known above it."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i == len(LATENCY_BUCKETS):
                return LATENCY_BUCKETS[-1]
            lower = LATENCY_BUCKETS[i - 1] if i else 0.0
            return lower + (LATENCY_BUCKETS[i] - lower) * (rank - seen) / n
        seen += n
    return LATENCY_BUCKETS[-1]


def queue_length(obj: Backend | Server) -> int:
    """Requests waiting for a slot: the backend's queue (a server has none of its own)."""
    return getattr(obj, "queued", 0)


def by_class(responses: Sequence[int]) -> dict[str, int]:
    """Response counters keyed "1xx".."5xx" and "other"."""
    return dict(zip(STATUS_CLASSES, responses))


def backend_up(backend: Backend) -> bool:
    return any(server.usable for server in backend.servers)


def frontend_status(frontend: Frontend) -> str:
    """HAProxy's words: OPEN, FULL (at maxconn, accepting paused) or STOP (stopping)."""
    if frontend.state.stopping:
        return "STOP"
    return "FULL" if frontend.paused else "OPEN"


def ago(seconds: float) -> str:
    """"12s ago", "2m ago", "3h ago", "4d ago": how operators read a last change."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


@dataclass(frozen=True, slots=True)
class Recent:
    """Activity over the last WINDOW seconds; times in seconds, None without responses."""

    rps: float
    rps_max: float          # highest rate seen since sampling began, >= rps
    avg: float | None
    p95: float | None

    def as_json(self) -> dict[str, object]:
        return {"rps": round(self.rps, 3),
                "response_time": {"avg": _round(self.avg), "p95": _round(self.p95)}}


@dataclass(frozen=True, slots=True)
class _Sample:
    time: float
    requests: int
    latency_counts: tuple[int, ...]     # empty for frontends and backends
    latency_sum: float


class _Ring:
    __slots__ = ("samples", "rps_max")

    def __init__(self) -> None:
        self.samples: deque[_Sample] = deque()
        self.rps_max = 0.0


class Sampler:
    """Counter history of every frontend, backend and server of `engine`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.clock = time.monotonic
        self._rings: WeakKeyDictionary[Frontend | Backend | Server, _Ring] = WeakKeyDictionary()

    def objects(self) -> Iterator[Frontend | Backend | Server]:
        yield from self.engine.frontends.values()
        for backend in self.engine.backends.values():
            yield backend
            yield from backend.servers

    def tick(self) -> None:
        """Take one sample of everything and forget samples older than WINDOW."""
        now = self.clock()
        for obj in self.objects():
            ring = self._rings.get(obj)
            if ring is None:
                ring = self._rings[obj] = _Ring()
            sample = _measure(obj, now)
            if ring.samples:
                last = ring.samples[-1]
                if now > last.time:
                    rate = (sample.requests - last.requests) / (now - last.time)
                    ring.rps_max = max(ring.rps_max, rate)
            ring.samples.append(sample)
            while now - ring.samples[0].time > WINDOW:
                ring.samples.popleft()

    def recent(self, obj: Frontend | Backend | Server) -> Recent:
        now = self.clock()
        ring = self._rings.get(obj)
        if ring is None or not ring.samples:     # not sampled yet: no rate, all-time latency
            rps, rps_max = 0.0, 0.0
        else:
            base = ring.samples[0]
            rps = (obj.requests - base.requests) / max(now - base.time, TICK)
            # The rate now counts requests since the last sample too: it is a rate seen,
            # so the maximum includes it (req_rate never shows above req_rate_max).
            rps_max = ring.rps_max = max(ring.rps_max, rps)
        if isinstance(obj, Frontend):
            return Recent(rps, rps_max, None, None)
        servers = obj.servers if isinstance(obj, Backend) else [obj]
        counts = [0] * (len(LATENCY_BUCKETS) + 1)
        total = 0.0
        for server in servers:
            server_counts, server_sum = self._latency_delta(server)
            counts = [a + b for a, b in zip(counts, server_counts)]
            total += server_sum
        n = sum(counts)
        return Recent(rps, rps_max, total / n if n else None, quantile(counts, 0.95))

    def _latency_delta(self, server: Server) -> tuple[list[int], float]:
        """Histogram counts and sum added since the oldest sample of `server`."""
        ring = self._rings.get(server)
        if ring is None or not ring.samples:
            return list(server.latency_counts), server.latency_sum
        base = ring.samples[0]
        return ([now - then for now, then in zip(server.latency_counts, base.latency_counts)],
                server.latency_sum - base.latency_sum)


def _measure(obj: Frontend | Backend | Server, now: float) -> _Sample:
    if isinstance(obj, Server):
        return _Sample(now, obj.requests, tuple(obj.latency_counts), obj.latency_sum)
    return _Sample(now, obj.requests, (), 0.0)


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)


# --- the JSON the runtime API answers -------------------------------------------------------

def server_json(server: Server, recent: Recent) -> dict[str, object]:
    return {
        "name": server.name,
        "address": str(server.address),
        "state": server.state,
        "admin": server.admin,
        "up": server.up,
        "check": server.check,
        "reason": server.reason,
        "last_change": server.last_change,
        "weight": server.config_weight,
        "effective_weight": server.weight,
        "backup": server.backup,
        "cookie": server.cookie,
        "maxconn": server.maxconn,
        "sessions": server.in_flight,
        "max_sessions": server.max_in_flight,
        "queue": queue_length(server),
        "requests": server.requests,
        "responses": by_class(server.responses),
        "failures": server.failures,
        "bytes_in": server.bytes_in,
        "bytes_out": server.bytes_out,
        **recent.as_json(),
    }


def backend_json(backend: Backend, sampler: Sampler) -> Sliced[dict[str, object]]:
    """A backend and its servers (a sliced renderer: lbproxy/admin/slicing.py)."""
    servers = list(backend.servers)
    server_list = yield from mapped(servers, lambda s: server_json(s, sampler.recent(s)))
    return {
        "name": backend.name,
        "balance": backend.config.balance,
        "status": "UP" if backend_up(backend) else "DOWN",
        "health_check": backend.config.health_check is not None,
        "servers_up": sum(server.usable for server in servers),
        "sessions": backend.in_flight,
        "queue": queue_length(backend),
        "max_queue": backend.max_queued,
        "requests": backend.requests,
        "responses": by_class(backend.responses),
        "retries": backend.retried,
        "redispatches": backend.redispatched,
        **sampler.recent(backend).as_json(),
        "servers": server_list,
    }
