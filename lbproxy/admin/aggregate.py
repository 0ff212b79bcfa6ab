"""One view of N workers (`global.workers` > 1): pure merges of every worker's admin answers.

Each worker counts its own traffic, so the supervisor (admin/fanout.py) asks all of them and
merges here, with one rule everywhere: what measures work or load is summed (requests,
bytes, responses, sessions in flight, rates); what describes shared state is taken once,
from the first worker that has it (a server's health, weight, address and settings are the
same in every worker: API writes go to all of them and worker 0's checks are copied to the
others). Two families need a choice:

- peaks (`smax`, `qmax`, `rate_max`, `max_sessions`, `max_queue`, `*_max_sessions` gauges)
  are summed. The whole's true peak lies between the largest worker's and the sum; only the
  sum is never below the summed current value, so a page never shows scur > smax.
- response times (CSV `rtime`/`qtime`/... and their `_max`, JSON `avg`/`p95`) cannot be
  rebuilt from per-worker results, so the worst (largest) is shown: the merged average and
  p95 are never above it, and one slow worker is not hidden. /metrics keeps the histogram,
  whose buckets are summed, for exact quantiles.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from html import escape
from typing import Any, TypeGuard, TypeVar

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from lbproxy.admin.html import CSS, badge, byte_count, integer, table_row, table_section
from lbproxy.admin.stats_csv import Row, to_csv

K = TypeVar("K", bound=Hashable)
Labels = tuple[tuple[str, str], ...]
SampleKey = tuple[str, Labels]          # sample name (with its suffix), sorted labels

# --- /metrics ---------------------------------------------------------------------------------

# Gauges that report state every worker shares, not per-worker load: summing them would
# count each UP server N times. Every other gauge of metrics.py is load (sessions, queue).
SHARED_GAUGES = frozenset({
    "lbproxy_server_up", "lbproxy_server_weight", "lbproxy_backend_active_servers",
    "lbproxy_autoscale_current_servers", "lbproxy_autoscale_desired_servers",
})


class _Families(Collector):
    """Hands merged families to generate_latest, so the output is written exactly as a
    worker's own /metrics is (names, escaping, number format)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def merge_metrics(texts: Sequence[str]) -> str:
    """Every worker's /metrics as one exposition: same name and labels → one sample, summed
    (counters, histogram buckets/_sum/_count, load gauges) or the maximum (SHARED_GAUGES).
    Families come in first-seen order; timestamps and exemplars are dropped."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[SampleKey, float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
            combine: Callable[[float, float], float] = (
                max if family.name in SHARED_GAUGES else operator.add)
            series = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                series[key] = combine(series[key], sample.value) if key in series else sample.value
    for name, family in families.items():
        for sample_name, labels in _sample_order(values[name]):
            family.add_sample(sample_name, dict(labels), values[name][sample_name, labels])
    return generate_latest(_Families(families.values())).decode()


def _sample_order(series: dict[SampleKey, float]) -> list[SampleKey]:
    """Label sets in first-seen order; inside one, histogram buckets by increasing `le`
    (ending with +Inf), then _count and _sum as first seen."""
    groups: dict[Labels, int] = {}
    ranks: dict[SampleKey, tuple[int, bool, float]] = {}
    for seen, (name, labels) in enumerate(series):
        le = dict(labels).get("le")
        group = groups.setdefault(tuple(kv for kv in labels if kv[0] != "le"), len(groups))
        ranks[name, labels] = (group, le is None, seen if le is None else float(le))
    return sorted(series, key=ranks.__getitem__)


# --- stats rows: `/stats;csv` and `/stats?format=json` -------------------------------------

SUM_COLUMNS = frozenset((
    "qcur qmax scur smax slim stot bin bout dreq dresp ereq econ eresp wretr wredis chkfail "
    "qlimit lbtot rate rate_lim rate_max hrsp_1xx hrsp_2xx hrsp_3xx hrsp_4xx hrsp_5xx "
    "hrsp_other req_rate req_rate_max req_tot cli_abrt srv_abrt comp_in comp_out comp_byp "
    "comp_rsp conn_rate conn_rate_max conn_tot intercepted dcon dses wrew connect reuse "
    "cache_lookups cache_hits srv_icur src_ilim eint idle_conn_cur safe_conn_cur "
    "used_conn_cur need_conn_est sess_other h1sess h2sess h3sess req_other h1req h2req h3req"
).split())
# Limits (slim, qlimit, rate_lim, src_ilim) are summed too: every worker enforces its own,
# so the proxy as a whole admits up to the sum.
WORST_COLUMNS = frozenset("qtime ctime rtime ttime qtime_max ctime_max rtime_max ttime_max"
                          .split())
LATEST_COLUMNS = frozenset({"lastsess"})       # seconds since the last session: the newest
# Every other column is shared state, taken from the first worker that has the row: names,
# status, weight/uweight, act/bck, check_*, last_chk, lastchg, downtime, chkdown, iid, sid,
# type, addr, cookie, algo, mode, and pid (HAProxy's relative process number, 1 in every
# worker: the merged view is one logical process).
_COMBINE: dict[str, Callable[[list[int]], int]] = {
    **dict.fromkeys(SUM_COLUMNS, sum), **dict.fromkeys(WORST_COLUMNS, max),
    **dict.fromkeys(LATEST_COLUMNS, min)}


def merge_rows(rows_per_worker: Sequence[list[Row]]) -> list[Row]:
    """Every worker's stat rows (stats_csv.stat_rows, or its JSON) as one list, matched by
    (pxname, svname). Order is the first worker's; a row only later workers have goes after
    the row that precedes it there, so it stays in its proxy's block. A column no worker
    filled stays absent (an empty CSV cell)."""
    matched: dict[tuple[str, str], list[Row]] = {}
    for rows in rows_per_worker:
        for row in rows:
            matched.setdefault((str(row["pxname"]), str(row["svname"])), []).append(row)
    order = _union_order([[(str(row["pxname"]), str(row["svname"])) for row in rows]
                          for rows in rows_per_worker])
    return [_merge_row(matched[key]) for key in order]


def _merge_row(rows: list[Row]) -> Row:
    merged: Row = {}
    for column in dict.fromkeys(column for row in rows for column in row):
        values = [row[column] for row in rows if column in row]
        numbers = [value for value in values if isinstance(value, int)]
        combine = _COMBINE.get(column)
        merged[column] = combine(numbers) if combine and len(numbers) == len(values) else values[0]
    return merged


def merge_csv(texts: Sequence[str]) -> str:
    """Every worker's `/stats;csv` as one, in the same layout (merge_rows does the work)."""
    return to_csv(merge_rows([_parse_csv(text) for text in texts]))


def _parse_csv(text: str) -> list[Row]:
    """HAProxy CSV back into rows: empty cells left out, merged columns read as integers."""
    lines = [line for line in text.splitlines() if line]
    if not lines:
        return []
    header = lines[0].removeprefix("# ").split(",")
    return [{column: int(cell) if column in _COMBINE and cell.lstrip("-").isdigit() else cell
             for column, cell in zip(header, line.split(",")) if cell}
            for line in lines[1:]]


def _union_order(orders: Sequence[Sequence[K]]) -> list[K]:
    """The first order, with each key only a later one has inserted after its predecessor
    there (at the front when it has none)."""
    merged: list[K] = []
    known: set[K] = set()
    for order in orders:
        previous: K | None = None
        for key in order:
            if key not in known:
                if previous is None:
                    merged.insert(0, key)
                elif previous == merged[-1]:
                    merged.append(key)
                else:
                    merged.insert(merged.index(previous) + 1, key)
                known.add(key)
            previous = key
    return merged


# --- the aggregated HTML page ---------------------------------------------------------------

def render_rows_page(rows: list[Row], refresh: float, workers: int) -> str:
    """The stats page from merged rows: a table per proxy (FRONTEND, servers, BACKEND), with
    the single-process page's style and helpers so both look alike. No admin controls: they
    need the live objects, and the API (which the supervisor fans out) does the same."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(str(row["pxname"]), []).append(row)
    refresh_tag = (f'<meta http-equiv="refresh" content="{max(1, math.ceil(refresh))}">'
                   if refresh > 0 else "")
    refreshing = f"refresh {refresh:g}s" if refresh > 0 else "no auto-refresh"
    nav = "".join(f'<a href="{href}">{label}</a>' for label, href in (
        ("CSV", "?format=csv"), ("JSON", "?format=json"), ("metrics", "/metrics")))
    title = f"lbproxy statistics ({workers} workers)"
    now = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh_tag}<title>{title}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{title}</h1><span>{now} · {refreshing}</span><nav>{nav}</nav></header>"
        f"<main>{''.join(_proxy_section(name, group) for name, group in groups.items())}</main>"
        "</body></html>")


def _proxy_section(name: str, rows: list[Row]) -> str:
    names = {row["svname"] for row in rows}
    kind = ("frontend" if names == {"FRONTEND"} else
            "backend" if "FRONTEND" not in names else "proxy")
    total = next((row for row in reversed(rows) if row["svname"] in ("FRONTEND", "BACKEND")),
                 rows[0])
    summary = ""
    if total["svname"] == "BACKEND":
        summary = escape(f"{total.get('algo', '')} · {total.get('act', 0)} active, "
                         f"{total.get('bck', 0)} backup servers usable")
    cells = [_cells(row) for row in rows]
    html_rows = [table_row(cell, "total" if row["svname"] in ("FRONTEND", "BACKEND")
                      else escape(f"s-{row.get('status', '')}"))
                 for row, cell in zip(rows, cells)]
    return "".join(table_section(kind, name, escape(str(total.get("status", ""))), summary,
                                 [label for label, _ in cells[0]], html_rows))


def _cells(row: Row) -> list[tuple[str, str]]:
    address = f"<small>{escape(str(row['addr']))}</small>" if "addr" in row else ""
    sessions = str(row.get("scur", 0)) + "".join(
        f" / {row[column]}" for column in ("smax", "slim") if column in row)
    reason = f"<small>{escape(str(row['last_chk']))}</small>" if row.get("last_chk") else ""
    return [
        ("Name", escape(str(row["svname"])) + address),
        ("Status", badge(escape(str(row.get("status", ""))))),
        ("Weight", escape(str(row.get("weight", "")))),
        ("Sessions", sessions),
        ("Total", integer(int(row.get("stot", 0)))),
        *[(f"{n}xx", integer(int(row.get(f"hrsp_{n}xx", 0)))) for n in range(1, 6)],
        ("Bytes in", byte_count(int(row.get("bin", 0)))),
        ("Bytes out", byte_count(int(row.get("bout", 0)))),
        ("Check", f"<span>{escape(str(row.get('check_status', '')))}{reason}</span>"),
    ]


# --- runtime API reads ----------------------------------------------------------------------

# Keys of model.py's server_json/backend_json and api.py's other answers that describe shared
# state or settings, taken from the first worker: configured/effective weight (the same
# slow-start clock everywhere), maxconn as configured, the time of the last state change
# (worker 0 runs the checks), usable servers, the autoscaler's report (posted to every
# worker), stick-table settings, and map files (every worker gets the same edits).
SHARED_KEYS = frozenset({"weight", "effective_weight", "maxconn", "last_change", "servers_up",
                         "current", "desired", "reported", "size", "expire", "edits",
                         "offset"})
WORST_KEYS = frozenset({"avg", "p95"})      # response times: the largest, see the docstring


def merge_json(values: Sequence[object]) -> object:
    """Every worker's answer to one API GET (one value per worker, at least one), as one.

    Objects merge key by key (SHARED_KEYS from the first, WORST_KEYS the largest non-null);
    numbers are summed (sessions, queue, max_queue, requests, responses, bytes, rps...);
    strings, booleans and null come from the first; lists whose items are all objects with
    a string `name` (backends, servers, tables) merge item by item, by name, ordered as
    merge_rows orders rows; any other list (a table's `store` and `top`) is the first's.
    """
    first = values[0]
    if isinstance(first, dict):
        merged: dict[str, object] = {}
        for key in dict.fromkeys(key for value in values if isinstance(value, dict)
                                 for key in value):
            present = [value[key] for value in values if isinstance(value, dict) and key in value]
            merged[key] = (present[0] if key in SHARED_KEYS else
                           max((v for v in present if _number(v)), default=None)
                           if key in WORST_KEYS else merge_json(present))
        return merged
    lists = [value for value in values if _named(value)]
    if isinstance(first, list) and len(lists) == len(values):
        items: dict[str, list[object]] = {}
        for value in lists:
            for item in value:
                items.setdefault(item["name"], []).append(item)
        order = _union_order([[item["name"] for item in value] for value in lists])
        return [merge_json(items[name]) for name in order]
    if _number(first):
        total = sum(value for value in values if _number(value))
        return round(total, 6) if isinstance(total, float) else total   # no 0.30000000000000004
    return first


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _named(value: object) -> TypeGuard[list[dict[str, Any]]]:
    return isinstance(value, list) and all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in value)
