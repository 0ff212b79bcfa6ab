"""`/metrics`: Prometheus exposition built at scrape time from the data plane's counters.

The data plane never calls prometheus_client: a custom Collector walks the frontends,
backends and servers when scraped and yields metric families from the plain counters
they keep, so a request costs nothing extra and needs no lock (the scrape runs on the
proxy's own loop, between callbacks). It has its own CollectorRegistry, not the global
one, so two engines in one process (tests) do not collide. Labels are only frontend,
backend and server names (from the config or the runtime API) and status classes, so
cardinality is bounded by what the operator declared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from lbproxy.admin.model import STATUS_CLASSES, queue_length
from lbproxy.backends.server import LATENCY_BUCKETS

if TYPE_CHECKING:
    from lbproxy.runtime.engine import Engine

_BOUNDS = [floatToGoString(bound) for bound in LATENCY_BUCKETS] + ["+Inf"]
Rows = list[tuple[list[str], Any]]       # (label values, live object) per series


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric: its name after `lbproxy_`, whether it only grows, and how to read it."""

    name: str
    counter: bool
    doc: str
    read: Callable[[Any], float]


FRONTEND = (
    Spec("frontend_http_requests_total", True, "HTTP requests received.", lambda f: f.requests),
    Spec("frontend_bytes_in_total", True, "Request bytes received from clients.",
         lambda f: f.bytes_in),
    Spec("frontend_bytes_out_total", True, "Response bytes sent to clients.",
         lambda f: f.bytes_out),
    Spec("frontend_sessions_total", True, "Client connections accepted.",
         lambda f: f.connections_total),
    Spec("frontend_current_sessions", False, "Client connections open now.",
         lambda f: f.connections),
    Spec("frontend_max_sessions", False, "Most client connections open at once.",
         lambda f: f.max_connections_seen),
    Spec("frontend_denied_requests_total", True,
         "Requests refused by the proxy (rules, limits, bad input).", lambda f: f.rejected),
    Spec("frontend_http2_sessions_total", True, "Client connections that spoke HTTP/2.",
         lambda f: f.h2_connections),
    Spec("frontend_http2_protocol_errors_total", True,
         "Malformed HTTP/2 streams and connections.", lambda f: f.h2_protocol_errors),
)
BACKEND = (
    Spec("backend_http_requests_total", True, "HTTP requests sent to the backend.",
         lambda b: b.requests),
    Spec("backend_retries_total", True, "Requests retried.", lambda b: b.retried),
    Spec("backend_redispatches_total", True, "Retries sent to another server.",
         lambda b: b.redispatched),
    Spec("backend_queue_length", False, "Requests waiting for a server slot.", queue_length),
    Spec("backend_current_sessions", False, "Requests in flight to its servers.",
         lambda b: b.in_flight),
    Spec("backend_active_servers", False, "Servers that may receive traffic.",
         lambda b: sum(server.usable for server in b.servers)),
)
SERVER = (
    Spec("server_up", False, "1 when the server is UP (healthy and ready), else 0.",
         lambda s: s.state == "UP"),
    Spec("server_weight", False, "Effective weight.", lambda s: s.weight),
    Spec("server_current_sessions", False, "Requests in flight.", lambda s: s.in_flight),
    Spec("server_max_sessions", False, "Most requests in flight at once.",
         lambda s: s.max_in_flight),
    Spec("server_http_requests_total", True, "HTTP requests sent.", lambda s: s.requests),
    Spec("server_bytes_in_total", True, "Request bytes sent to the server.",
         lambda s: s.bytes_in),
    Spec("server_bytes_out_total", True, "Response bytes received from it.",
         lambda s: s.bytes_out),
    Spec("server_check_failures_total", True,
         "Connect errors, timeouts and invalid responses.", lambda s: s.failures),
)


PROCESS = (
    Spec("access_log_dropped_lines_total", True,
         "Access-log lines lost: the target did not take them in time, or refused them.",
         lambda e: e.log_lines_dropped),
    Spec("out_of_fds_total", True,
         "Connections to servers and health checks that failed: no file descriptor left.",
         lambda e: e.state.out_of_fds),
    Spec("max_connections", False, "Client connections accepted at once: "
         "global.max_connections, capped by the open-files limit.",
         lambda e: e.state.max_connections),
    Spec("open_files_limit", False, "The process's open-files limit.",
         lambda e: e.state.fd_limit),
)


CACHE = (
    Spec("cache_hits_total", True, "Requests answered from the cache.", lambda c: c.hits),
    Spec("cache_misses_total", True, "Cacheable requests the cache could not answer.",
         lambda c: c.misses),
    Spec("cache_stale_total", True, "Stale entries served because the servers failed.",
         lambda c: c.stale),
    Spec("cache_revalidated_total", True, "Stale entries a server confirmed (304).",
         lambda c: c.revalidated),
    Spec("cache_entries", False, "Responses stored.", lambda c: c.entries),
    Spec("cache_bytes", False, "Bytes stored (heads and bodies).", lambda c: c.bytes),
)


def _families(specs: Sequence[Spec], labels: list[str], rows: Rows) -> Iterator[Metric]:
    for spec in specs:
        kind = CounterMetricFamily if spec.counter else GaugeMetricFamily
        family = kind(f"lbproxy_{spec.name}", spec.doc, labels=labels)
        for values, obj in rows:
            family.add_metric(values, float(spec.read(obj)))
        yield family


def _responses(kind: str, labels: list[str], rows: Rows) -> Metric:
    family = CounterMetricFamily(f"lbproxy_{kind}_http_responses_total",
                                 "HTTP responses by status class.", labels=[*labels, "code"])
    for values, obj in rows:
        for code, count in zip(STATUS_CLASSES, obj.responses):
            family.add_metric([*values, code], count)
    return family


def _by_protocol(rows: Rows) -> Metric:
    family = CounterMetricFamily("lbproxy_frontend_http_requests_by_protocol_total",
                                 "HTTP requests received, by protocol.",
                                 labels=["frontend", "protocol"])
    for values, frontend in rows:
        family.add_metric([*values, "h2"], frontend.h2_requests)
        family.add_metric([*values, "h1"], frontend.requests - frontend.h2_requests)
    return family


def _http2_abuse(rows: Rows) -> Metric:
    family = CounterMetricFamily("lbproxy_frontend_http2_abuse_total",
                                 "HTTP/2 connections ended (ENHANCE_YOUR_CALM) or streams "
                                 "refused, by reason.", labels=["frontend", "reason"])
    for values, frontend in rows:
        for reason, count in sorted(frontend.h2_abuse.items()):
            family.add_metric([*values, reason], count)
    return family


def _latency(labels: list[str], rows: Rows) -> Metric:
    """Each server's histogram; Prometheus buckets are cumulative, the server's are not."""
    family = HistogramMetricFamily("lbproxy_server_response_time_seconds",
                                   "Response time, headers sent to last byte.", labels=labels)
    for values, server in rows:
        cumulative, buckets = 0, []
        for bound, count in zip(_BOUNDS, server.latency_counts):
            cumulative += count
            buckets.append((bound, cumulative))
        family.add_metric(values, buckets, server.latency_sum)
    return family


class EngineCollector(Collector):
    """Reads the engine's live objects each time the registry is collected."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        backends = self.engine.backends.values()
        frontends: Rows = [([f.name], f) for f in self.engine.frontends.values()]
        backend_rows: Rows = [([b.name], b) for b in backends]
        servers: Rows = [([b.name, s.name], s) for b in backends for s in b.servers]
        for kind, specs, labels, rows in (
                ("frontend", FRONTEND, ["frontend"], frontends),
                ("backend", BACKEND, ["backend"], backend_rows),
                ("server", SERVER, ["backend", "server"], servers)):
            yield from _families(specs, labels, rows)
            yield _responses(kind, labels, rows)
        yield _by_protocol(frontends)
        yield _http2_abuse(frontends)
        yield _latency(["backend", "server"], servers)
        yield from _families(PROCESS, [], [([], self.engine)])
        yield from _families(CACHE, ["cache"], [([name], cache) for name, cache
                                                in self.engine.caches.items()])
        for field, text in (("current", "servers the autoscaler counted"),
                            ("desired", "servers the autoscaler wants")):
            family = GaugeMetricFamily(f"lbproxy_autoscale_{field}_servers",
                                       f"Per pool: {text} at its last decision.", labels=["pool"])
            for pool, status in self.engine.autoscale.items():
                family.add_metric([pool], status[field])
            yield family


def make_registry(engine: Engine) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine))
    return registry
