"""The HTML stats page, in the spirit of HAProxy's: a table per frontend and backend, a row
per server, state in colour, auto-refresh.

One self-contained document: inline CSS, no external assets, no framework, so it works on
an isolated host and costs one request. On a narrow screen (a phone) each table row turns
into a two-column card of label/value pairs instead of a table that scrolls sideways.
The admin controls are plain forms; a few lines of inline script send them to the
runtime API as PATCH requests (the browser reuses the page's basic-auth credentials).
Every value from the config, the API or a health check is HTML-escaped.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

from lbproxy.admin.html import CSS, Cell, badge, byte_count, integer, table_row, table_section
from lbproxy.slicing import Sliced, mapped
from lbproxy.admin.model import (STATUS_CLASSES, Recent, Sampler, ago, backend_up, frontend_status,
                                 queue_length)
from lbproxy.backends.server import ADMIN_STATES
from lbproxy.config.backend import MAX_WEIGHT

if TYPE_CHECKING:
    from lbproxy.backends.backend import Backend
    from lbproxy.backends.server import Server
    from lbproxy.proxy.cache_store import Cache
    from lbproxy.proxy.frontend import Frontend
    from lbproxy.runtime.engine import Engine

SCRIPT = """
document.addEventListener("submit", async (e) => {
  const form = e.target, body = {};
  if (!form.dataset.api) return;
  e.preventDefault();
  if (form.state.value !== form.dataset.state) body.state = form.state.value;
  if (form.weight.value !== form.dataset.weight) body.weight = Number(form.weight.value);
  if (!Object.keys(body).length) return;
  const r = await fetch(form.dataset.api, {method: "PATCH", body: JSON.stringify(body),
                                           headers: {"Content-Type": "application/json"}});
  if (!r.ok) alert((await r.json()).error);
  location.reload();
});
"""


def render_page(engine: Engine, sampler: Sampler, refresh: float, links: Sequence[str],
                controls: bool) -> Sliced[list[str]]:
    """The whole page, in parts (a sliced renderer: lbproxy/slicing.py). `controls` adds
    the admin forms (admin on and user authenticated)."""
    refresh_tag = (f'<meta http-equiv="refresh" content="{max(1, math.ceil(refresh))}">'
                   if refresh > 0 else "")
    sections = [part for frontend in engine.frontends.values()
                for part in _frontend_section(frontend, sampler.recent(frontend))]
    for backend in list(engine.backends.values()):
        sections += yield from _backend_section(backend, sampler, controls)
    if engine.caches:
        sections.append(_cache_section(engine.caches))
    if engine.autoscale:
        sections.append(_autoscale_section(engine.autoscale))
    nav = "".join(f'<a href="{escape(href)}">{escape(label)}</a>'
                  for label, href in zip(("CSV", "JSON", "metrics"), links))
    now = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    refreshing = f"refresh {refresh:g}s" if refresh > 0 else "no auto-refresh"
    return [
        ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
         '<meta name="viewport" content="width=device-width, initial-scale=1">'
         f"{refresh_tag}<title>lbproxy statistics</title><style>{CSS}</style></head><body>"
         f"<header><h1>lbproxy statistics</h1><span>pid {os.getpid()} · {now} · "
         f"{refreshing}</span><nav>{nav}</nav></header><main>"),
        *sections,
        "</main>" + (f"<script>{SCRIPT}</script>" if controls else "") + "</body></html>",
    ]


def _cache_section(caches: dict[str, Cache]) -> str:
    """Each response cache: how often it answers, and how full it is."""
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{_ratio(cache.hits, cache.hits + cache.misses)}</td>"
        f"<td>{integer(cache.hits)}</td><td>{integer(cache.misses)}</td>"
        f"<td>{integer(cache.stale)}</td><td>{integer(cache.entries)}</td>"
        f"<td>{byte_count(cache.bytes)} of {byte_count(cache.size)}</td></tr>"
        for name, cache in sorted(caches.items()))
    return ("<section><h2><span>caches</span></h2><div class=\"scroll\"><table><thead><tr>"
            "<th>cache</th><th>hit ratio</th><th>hits</th><th>misses</th><th>stale</th>"
            f"<th>entries</th><th>bytes</th></tr></thead><tbody>{rows}</tbody></table></div>"
            "</section>")


def _ratio(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def _autoscale_section(pools: dict[str, dict]) -> str:
    """What the autoscaler sidecar last reported for each pool."""
    rows = "".join(
        f"<tr><td>{escape(pool)}</td><td>{status['current']}</td><td>{status['desired']}</td>"
        f"<td>{escape(status['action'])}</td><td>{escape(status['reason'])}</td>"
        f"<td>{ago(time.time() - status['reported'])}</td></tr>"
        for pool, status in sorted(pools.items()))
    return ("<section><h2><span>autoscaler</span></h2><div class=\"scroll\"><table><thead><tr>"
            "<th>pool</th><th>current</th><th>desired</th><th>action</th><th>reason</th>"
            f"<th>reported</th></tr></thead><tbody>{rows}</tbody></table></div></section>")


def _headers(cells: Sequence[Cell]) -> list[str]:
    return [label for label, _ in cells]


def _responses(responses: Sequence[int]) -> list[Cell]:
    return [(STATUS_CLASSES[i], integer(responses[i])) for i in range(1, 6)]


def _traffic(requests: int, recent: Recent, responses: Sequence[int], bytes_in: int,
             bytes_out: int) -> list[Cell]:
    """The columns every table has, in one order: requests, rate, responses, bytes."""
    return [("Requests", integer(requests)), ("Rate", f"{recent.rps:.1f}/s"),
            *_responses(responses), ("Bytes in", byte_count(bytes_in)),
            ("Bytes out", byte_count(bytes_out))]


def _frontend_section(frontend: Frontend, recent: Recent) -> list[str]:
    status = frontend_status(frontend)
    limit = f" / {frontend.maxconn}" if frontend.maxconn else ""
    cells: list[Cell] = [
        ("Frontend", "FRONTEND"),
        ("Sessions", f"{frontend.connections} / {frontend.max_connections_seen}{limit}"),
        ("Total sessions", integer(frontend.connections_total)),
        *_traffic(frontend.requests, recent, frontend.responses, frontend.bytes_in,
                  frontend.bytes_out),
        ("Denied", integer(frontend.rejected)),
    ]
    binds = ", ".join(str(bind.address) for bind in frontend.config.bind)
    return table_section("frontend", frontend.name, status, escape(binds), _headers(cells),
                    [table_row(cells)])


def _backend_section(backend: Backend, sampler: Sampler, controls: bool) -> Sliced[list[str]]:
    servers = list(backend.servers)
    rows = yield from mapped(servers, lambda server: table_row(
        _server_cells(backend, server, sampler.recent(server), controls),
        f"s-{server.state}"))
    recent = yield from sampler.backend_recent(backend)
    total = [
        ("Server", "BACKEND"), ("State", ""), ("Weight", ""),
        ("Sessions", str(backend.in_flight)),
        ("Queue", f"{queue_length(backend)} / {backend.max_queued}"),
        *_traffic(backend.requests, recent, backend.responses,
                  sum(server.bytes_in for server in servers),
                  sum(server.bytes_out for server in servers)),
        ("Failures", integer(sum(server.failures for server in servers))),
        ("Avg / p95", _times(recent)),
        ("Check", ""), ("Cookie", ""),
    ]
    if controls:
        total.append(("Admin", ""))
    rows.append(table_row(total, "total"))
    up = sum(server.usable for server in servers)
    status = "UP" if backend_up(backend) else "DOWN"
    summary = (f"{escape(backend.config.balance)} · {up}/{len(servers)} servers usable · "
               f"retries {backend.retried} · redispatches {backend.redispatched}")
    return table_section("backend", backend.name, status, summary, _headers(total), rows)


def _server_cells(backend: Backend, server: Server, recent: Recent,
                  controls: bool) -> list[Cell]:
    limit = f" / {server.maxconn}" if server.maxconn else ""
    weight = str(server.weight)
    if server.weight != server.config_weight:
        weight += f" <small>of {server.config_weight}</small>"
    details = [escape(server.reason)] if server.reason else []
    if server.last_change:
        details.append("changed " + ago(time.time() - server.last_change))
    check = (escape(server.check) if server.check != "none" else "no check") + (
        f"<small>{' · '.join(details)}</small>" if details else "")
    check = f"<span>{check}</span>"      # one flex item on a phone card: label left, text right
    cells: list[Cell] = [
        ("Server", f"{escape(server.name)}<small>{escape(str(server.address))}"
                   f"{' · backup' if server.backup else ''}</small>"),
        ("State", badge(server.state)), ("Weight", weight),
        ("Sessions", f"{server.in_flight} / {server.max_in_flight}{limit}"),
        ("Queue", str(queue_length(server))),
        *_traffic(server.requests, recent, server.responses, server.bytes_in,
                  server.bytes_out),
        ("Failures", integer(server.failures)),
        ("Avg / p95", _times(recent)),
        ("Check", check),
        ("Cookie", escape(server.cookie)),
    ]
    if controls:
        cells.append(("Admin", _controls(backend, server)))
    return cells


def _controls(backend: Backend, server: Server) -> str:
    api = escape(f"/api/backends/{backend.name}/servers/{server.name}")
    options = "".join(f'<option{" selected" if state == server.admin else ""}>{state}</option>'
                      for state in ADMIN_STATES)
    return (f'<form class="ctl" data-api="{api}" data-state="{server.admin}" '
            f'data-weight="{server.config_weight}">'
            f'<select name="state" aria-label="state">{options}</select>'
            f'<input name="weight" type="number" min="0" max="{MAX_WEIGHT}" '
            f'value="{server.config_weight}" aria-label="weight"><button>apply</button></form>')


def _times(recent: Recent) -> str:
    """"0.4 / 2.1 ms": average and p95, in the unit of the larger."""
    if recent.avg is None or recent.p95 is None:
        return "-"
    scale, unit = (1000, "ms") if max(recent.avg, recent.p95) < 1 else (1, "s")
    return f"{recent.avg * scale:.1f} / {recent.p95 * scale:.1f} {unit}"
