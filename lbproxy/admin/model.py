"""What the stats page, the CSV, the metrics and the API all report, read off the live objects.

The data plane only increments plain counters. Rates and "recent" response times need a
time window, so a `Sampler` keeps two copies of every object's counters (frontend,
backend, server), as HAProxy's two-period frequency counters do: `base`, taken PERIOD to
WINDOW seconds ago, and `next`, which becomes the base one PERIOD later. rps is the
difference from the base over its age, and avg/p95 response time come from the histogram
counts added since it (so a server that got slow shows it within seconds, not diluted by
hours of history). Two copies, not one per second: at 5,000 servers a ring of ten cost
16 MB. A copy equal to the one before is that one, so idle servers share theirs. Every
TICK the request counters are also read for the highest rate seen. Histories are weakly
keyed, so removed servers and objects replaced by a reload disappear on their own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from lbproxy.slicing import Sliced, each, mapped
from lbproxy.backends.backend import Backend
from lbproxy.backends.server import LATENCY_BUCKETS, Server
from lbproxy.proxy.frontend import Frontend

if TYPE_CHECKING:
    from lbproxy.runtime.engine import Engine

TICK = 1.0        # seconds between two reads of the counters: the resolution of the maximum rate
WINDOW = 10.0     # at most this much history behind rps and recent response times
PERIOD = WINDOW / 2   # and at least this much (once sampling has run that long): smooths bursts
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
    """Activity over the last PERIOD to WINDOW seconds; times in seconds, None without responses."""

    rps: float
    rps_max: float          # highest rate seen since sampling began, >= rps
    avg: float | None
    p95: float | None

    def as_json(self) -> dict[str, object]:
        return {"rps": round(self.rps, 3),
                "response_time": {"avg": _round(self.avg), "p95": _round(self.p95)}}


@dataclass(frozen=True, slots=True)
class _Sample:
    requests: int
    latency_counts: tuple[int, ...]     # empty for frontends and backends
    latency_sum: float


# What objects without traffic yet share.
_UNUSED = _Sample(0, (), 0.0)
_UNUSED_SERVER = _Sample(0, (0,) * (len(LATENCY_BUCKETS) + 1), 0.0)


class _History:
    """The base and next copies of one object's counters, and its highest rate."""

    __slots__ = ("base", "base_time", "next", "next_time", "requests", "rps_max")

    def __init__(self, sample: _Sample, now: float, requests: int) -> None:
        self.base = self.next = sample
        self.base_time = self.next_time = now
        self.requests = requests        # at the last tick
        self.rps_max = 0.0


class Sampler:
    """Counter history of every frontend, backend and server of `engine`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.clock = time.monotonic
        self._histories: WeakKeyDictionary[Frontend | Backend | Server, _History] = \
            WeakKeyDictionary()
        self._ticked = 0.0                  # when the last tick ran
        self._turned = float("-inf")        # when the last `next` copies were taken

    def objects(self) -> Iterator[Frontend | Backend | Server]:
        yield from self.engine.frontends.values()
        for backend in self.engine.backends.values():
            yield backend
            yield from backend.servers

    def tick(self) -> Sliced[None]:
        """Read every request counter for the maximum rate; every PERIOD, the next copies
        become the bases and new ones are taken (in slices: lbproxy/slicing.py, as
        thousands of servers take milliseconds)."""
        now = self.clock()
        since, self._ticked = now - self._ticked, now
        turn = now - self._turned >= PERIOD
        if turn:
            self._turned = now
        histories = self._histories

        def read(obj: Frontend | Backend | Server) -> None:
            history = histories.get(obj)
            if history is None:
                histories[obj] = _History(_measure(obj, None), now, obj.requests)
                return
            if since > 0:
                history.rps_max = max(history.rps_max, (obj.requests - history.requests) / since)
            history.requests = obj.requests
            if turn:
                sample = _measure(obj, history.next)
                if now - history.next_time <= WINDOW:
                    history.base, history.base_time = history.next, history.next_time
                else:                       # no tick for a window (a stalled loop): start again
                    history.base, history.base_time = sample, now
                history.next, history.next_time = sample, now

        yield from each(list(self.objects()), read)

    def recent(self, obj: Frontend | Server) -> Recent:
        """Activity of a frontend or a server (a backend's: backend_recent)."""
        rps, rps_max = self._rates(obj)
        if isinstance(obj, Frontend):
            return Recent(rps, rps_max, None, None)
        counts, total = self._latency_delta(obj)
        return _recent(rps, rps_max, counts, total)

    def backend_recent(self, backend: Backend) -> Sliced[Recent]:
        """Activity of a backend: its servers' response times added up (a sliced renderer:
        lbproxy/slicing.py, as thousands of servers take milliseconds)."""
        rps, rps_max = self._rates(backend)
        deltas = yield from mapped(list(backend.servers), self._latency_delta)
        counts = [sum(column) for column in zip(*(counts for counts, _ in deltas))]
        return _recent(rps, rps_max, counts, sum(total for _, total in deltas))

    def _rates(self, obj: Frontend | Backend | Server) -> tuple[float, float]:
        """Requests per second since the base copy, and the highest rate seen."""
        history = self._histories.get(obj)
        if history is None:             # not sampled yet: no rate
            return 0.0, 0.0
        rps = (obj.requests - history.base.requests) / max(self.clock() - history.base_time, TICK)
        # The rate now counts requests since the last tick too: it is a rate seen,
        # so the maximum includes it (req_rate never shows above req_rate_max).
        history.rps_max = max(history.rps_max, rps)
        return rps, history.rps_max

    def _latency_delta(self, server: Server) -> tuple[list[int], float]:
        """Histogram counts and sum added since the base copy of `server`."""
        history = self._histories.get(server)
        if history is None:
            return list(server.latency_counts), server.latency_sum
        base = history.base
        return ([now - then for now, then in zip(server.latency_counts, base.latency_counts)],
                server.latency_sum - base.latency_sum)


def _recent(rps: float, rps_max: float, counts: Sequence[int], total: float) -> Recent:
    """Rates, and the mean and p95 response time of histogram `counts`."""
    n = sum(counts)
    return Recent(rps, rps_max, total / n if n else None, quantile(counts, 0.95))


def _measure(obj: Frontend | Backend | Server, last: _Sample | None) -> _Sample:
    """A copy of the counters of `obj`: `last` (or the shared unused one) when equal."""
    if isinstance(obj, Server):
        sample = _Sample(obj.requests, tuple(obj.latency_counts), obj.latency_sum)
        last = last or _UNUSED_SERVER
    else:
        sample = _Sample(obj.requests, (), 0.0)
        last = last or _UNUSED
    return last if sample == last else sample


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
    """A backend and its servers (a sliced renderer: lbproxy/slicing.py)."""
    servers = list(backend.servers)
    server_list = yield from mapped(servers, lambda s: server_json(s, sampler.recent(s)))
    recent = yield from sampler.backend_recent(backend)
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
        **recent.as_json(),
        "servers": server_list,
    }
