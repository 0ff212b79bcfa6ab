"""`/metrics`: Prometheus exposition written at scrape time from the data plane's counters.

The data plane never calls a metrics library: a scrape walks the frontends, backends and
servers and writes the text format straight from the plain counters they keep, so a
request costs nothing extra and needs no lock (the scrape runs on the proxy's own loop,
between callbacks). With thousands of servers the text is megabytes, so it is written in
chunks and the scrape yields to the loop between them: traffic goes on while it runs.
Labels are only frontend, backend and server names (from the config or the runtime API)
and status classes, so cardinality is bounded by what the operator declared.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

from lbproxy.admin.model import STATUS_CLASSES, queue_length
from lbproxy.backends.server import LATENCY_BUCKETS
from lbproxy.slicing import SLICE, pause

if TYPE_CHECKING:
    from lbproxy.runtime.engine import Engine


def _go_float(value: float) -> str:
    """prometheus_client's floatToGoString, not imported: the package costs 2 MB of memory
    for these lines. `+Inf`, `NaN`, and exponents from 1e+07 up as Go writes them."""
    value = float(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:           # Go switches to exponents sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


_BOUNDS = [_go_float(bound) for bound in LATENCY_BUCKETS] + ["+Inf"]
Rows = list[tuple[str, Any]]       # ("{labels}" as written, live object) per series


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


# --- writing the exposition ------------------------------------------------------------------

# The exposition's media type, as prometheus_client 0.26 names it (CONTENT_TYPE_LATEST)
METRICS_TYPE = "text/plain; version=1.0.0; charset=utf-8"


def _number(value: float) -> str:
    """As prometheus_client writes a sample: `12.0`, `1.5`, `1.234567e+06`."""
    if type(value) is int and -1_000_000 < value < 1_000_000:
        return f"{value}.0"
    return _go_float(value)


def _label(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return f'{name}="{escaped}"'


class _Exposition:
    """The text format, written straight from the live objects (the prometheus_client
    object model costs 5-10x more per sample), in chunks of about SLICE seconds of work
    (lbproxy/slicing.py)."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.until = perf_counter() + SLICE

    def family(self, name: str, counter: bool, doc: str) -> None:
        self.out.append(f"# HELP {name} {doc}\n# TYPE {name} "
                        f"{'counter' if counter else 'gauge'}\n")

    def sample(self, line: str) -> bool:
        """Add a sample line; True when a chunk is full (the caller yields it)."""
        self.out.append(line)
        return perf_counter() >= self.until

    def take(self) -> str:
        chunk = "".join(self.out)
        self.out.clear()
        self.until = perf_counter() + SLICE
        return chunk


def _specs(w: _Exposition, specs: Sequence[Spec], rows: Rows) -> Iterator[str]:
    for spec in specs:
        name = f"lbproxy_{spec.name}"
        w.family(name, spec.counter, spec.doc)
        read = spec.read
        for labels, obj in rows:
            if w.sample(f"{name}{labels} {_number(read(obj))}\n"):
                yield w.take()


def _by_class(w: _Exposition, kind: str, rows: list[tuple[str, str, Any]]) -> Iterator[str]:
    """Responses by status class; `rows`: labels before and after `code`, and the object."""
    name = f"lbproxy_{kind}_http_responses_total"
    w.family(name, True, "HTTP responses by status class.")
    for before, after, obj in rows:
        for code, count in zip(STATUS_CLASSES, obj.responses):
            if w.sample(f"{name}{{{before}code=\"{code}\"{after}}} {_number(count)}\n"):
                yield w.take()


def _latency(w: _Exposition, servers: list[tuple[str, str, Any]]) -> Iterator[str]:
    """Each server's histogram; Prometheus buckets are cumulative, the server's are not."""
    name = "lbproxy_server_response_time_seconds"
    w.out.append(f"# HELP {name} Response time, headers sent to last byte.\n"
                 f"# TYPE {name} histogram\n")
    for backend, server_label, server in servers:
        cumulative = 0
        lines = []
        for bound, count in zip(_BOUNDS, server.latency_counts):
            cumulative += count
            lines.append(f'{name}_bucket{{{backend},le="{bound}",{server_label}}} '
                         f"{_number(cumulative)}\n")
        lines.append(f"{name}_count{{{backend},{server_label}}} {_number(cumulative)}\n"
                     f"{name}_sum{{{backend},{server_label}}} {_number(server.latency_sum)}\n")
        if w.sample("".join(lines)):
            yield w.take()


def exposition(engine: Engine) -> Iterator[str]:
    """The /metrics text of `engine`, in chunks: the caller may let other work run
    between two (a scrape of thousands of servers must not stall traffic)."""
    w = _Exposition()
    frontends = [(_label("frontend", f.name), f) for f in engine.frontends.values()]
    backends = list(engine.backends.values())
    servers = [(_label("backend", b.name), _label("server", s.name), s)
               for b in backends for s in b.servers]
    yield from _specs(w, FRONTEND, [(f"{{{labels}}}", f) for labels, f in frontends])
    yield from _by_class(w, "frontend", [("", f",{labels}", f) for labels, f in frontends])
    backend_rows = [(_label("backend", b.name), b) for b in backends]
    yield from _specs(w, BACKEND, [(f"{{{labels}}}", b) for labels, b in backend_rows])
    yield from _by_class(w, "backend", [(f"{labels},", "", b) for labels, b in backend_rows])
    yield from _specs(w, SERVER, [(f"{{{b},{s}}}", server) for b, s, server in servers])
    yield from _by_class(w, "server", [(f"{b},", f",{s}", server) for b, s, server in servers])
    by_protocol = "lbproxy_frontend_http_requests_by_protocol_total"
    w.family(by_protocol, True, "HTTP requests received, by protocol.")
    for labels, f in frontends:
        w.sample(f'{by_protocol}{{{labels},protocol="h2"}} {_number(f.h2_requests)}\n'
                 f'{by_protocol}{{{labels},protocol="h1"}} '
                 f"{_number(f.requests - f.h2_requests)}\n")
    abuse = "lbproxy_frontend_http2_abuse_total"
    w.family(abuse, True, "HTTP/2 connections ended (ENHANCE_YOUR_CALM) or streams refused, "
                          "by reason.")
    for labels, f in frontends:
        for reason, count in sorted(f.h2_abuse.items()):
            w.sample(f"{abuse}{{{labels},{_label('reason', reason)}}} {_number(count)}\n")
    yield from _latency(w, servers)
    yield from _specs(w, PROCESS, [("", engine)])
    yield from _specs(w, CACHE, [(f"{{{_label('cache', name)}}}", cache)
                                 for name, cache in engine.caches.items()])
    for field, text in (("current", "servers the autoscaler counted"),
                        ("desired", "servers the autoscaler wants")):
        name = f"lbproxy_autoscale_{field}_servers"
        w.family(name, False, f"Per pool: {text} at its last decision.")
        for pool, status in engine.autoscale.items():
            w.sample(f"{name}{{{_label('pool', pool)}}} {_number(status[field])}\n")
    yield w.take()


def render(engine: Engine) -> bytes:
    """The whole exposition at once (tests, tools)."""
    return "".join(exposition(engine)).encode()


class Scrapes:
    """Renders /metrics for the admin app, yielding to the loop between chunks (each
    encoded as it comes: the whole text is never one string of megabytes); scrapes that
    arrive while one is being written share its result."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: asyncio.Task[list[bytes]] | None = None

    async def get(self) -> list[bytes]:
        if self._pending is None:
            self._pending = asyncio.get_running_loop().create_task(self._render())
            self._pending.add_done_callback(self._done)
        return await asyncio.shield(self._pending)

    def _done(self, _task: asyncio.Task[list[bytes]]) -> None:
        self._pending = None

    async def _render(self) -> list[bytes]:
        chunks = []
        began = perf_counter()
        for chunk in exposition(self.engine):
            chunks.append(chunk.encode())
            await pause(began)
            began = perf_counter()
        return chunks
