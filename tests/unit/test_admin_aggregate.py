"""The supervisor's merges of N workers' admin answers: /metrics, stats rows (CSV and JSON),
the aggregated page and API reads."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lbproxy.admin.aggregate import (merge_csv, merge_json, merge_metrics, merge_rows,
                                     render_rows_page)
from lbproxy.admin.metrics import render
from lbproxy.admin.stats_csv import COLUMNS, to_csv
from lbproxy.backends.server import LATENCY_BUCKETS


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition, parsed as Prometheus would."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def fake_engine(requests: int, up: bool, latency: list[int], pool: int = 2) -> SimpleNamespace:
    """Just the attributes metrics.EngineCollector reads."""
    server = SimpleNamespace(
        name="a", state="UP" if up else "DOWN", usable=up, weight=10, in_flight=2,
        max_in_flight=5, requests=requests, bytes_in=100, bytes_out=1000, failures=1,
        responses=[0, 0, requests, 0, 0, 1], latency_counts=latency, latency_sum=0.5)
    backend = SimpleNamespace(name="app", servers=[server], requests=requests, retried=1,
                              redispatched=0, in_flight=2, responses=server.responses)
    frontend = SimpleNamespace(name="web", requests=requests, bytes_in=10, bytes_out=20,
                               connections_total=3, connections=1, max_connections_seen=4,
                               rejected=0, responses=server.responses, h2_connections=1,
                               h2_requests=requests // 2, h2_protocol_errors=0,
                               h2_abuse={"rapid_reset": 1})
    return SimpleNamespace(frontends={"web": frontend}, backends={"app": backend},
                           autoscale={"app": {"current": pool, "desired": pool + 1}},
                           log_lines_dropped=requests,
                           state=SimpleNamespace(out_of_fds=1, max_connections=100,
                                                 fd_limit=1024),
                           caches={"web": SimpleNamespace(hits=requests, misses=1, stale=0,
                                                          revalidated=0, entries=2, bytes=10)})


def test_merge_metrics_of_two_real_workers():
    slots = len(LATENCY_BUCKETS) + 1
    first = [1] * slots
    second = [2] * slots
    texts = [render(fake_engine(7, True, first)).decode(),
             render(fake_engine(5, False, second)).decode()]
    merged = merge_metrics(texts)
    got = samples(merged)
    server = (("backend", "app"), ("server", "a"))
    assert got["lbproxy_server_http_requests_total", server] == 12
    assert got["lbproxy_server_up", server] == 1                  # max, not 1 + 0
    assert got["lbproxy_server_weight", server] == 10             # max, not 20
    assert got["lbproxy_backend_active_servers", (("backend", "app"),)] == 1
    assert got["lbproxy_autoscale_desired_servers", (("pool", "app"),)] == 3
    assert got["lbproxy_server_current_sessions", server] == 4     # load: summed
    assert got["lbproxy_access_log_dropped_lines_total", ()] == 12
    assert got["lbproxy_cache_hits_total", (("cache", "web"),)] == 12
    assert got["lbproxy_frontend_max_sessions", (("frontend", "web"),)] == 8
    assert got["lbproxy_server_http_responses_total", (*server[:1], ("code", "5xx"),
                                                        *server[1:])] == 2
    assert got["lbproxy_server_response_time_seconds_count", server] == 3 * slots
    assert got["lbproxy_server_response_time_seconds_sum", server] == 1.0
    buckets = [(s.labels["le"], s.value) for family in text_string_to_metric_families(merged)
               for s in family.samples if s.name.endswith("_bucket")]
    assert [le for le, _ in buckets][-1] == "+Inf"
    assert [float(le) for le, _ in buckets] == sorted(float(le) for le, _ in buckets)
    assert [value for _, value in buckets] == [3.0 * i for i in range(1, slots + 1)]
    # the same names, HELP/TYPE lines and order as one worker's own exposition
    assert [line for line in merged.splitlines() if line.startswith("#")] == [
        line for line in texts[0].splitlines() if line.startswith("#")]
    assert merged.count("# TYPE lbproxy_server_http_requests_total counter\n") == 1


HAND_WRITTEN = [
    """# HELP lbproxy_x_requests_total Requests.
# TYPE lbproxy_x_requests_total counter
lbproxy_x_requests_total{server="a"} 3.0
# HELP lbproxy_server_up Up.
# TYPE lbproxy_server_up gauge
lbproxy_server_up{server="a"} 0.0
# HELP lbproxy_t_seconds Latency.
# TYPE lbproxy_t_seconds histogram
lbproxy_t_seconds_bucket{le="0.1",server="a"} 1.0
lbproxy_t_seconds_bucket{le="+Inf",server="a"} 2.0
lbproxy_t_seconds_count{server="a"} 2.0
lbproxy_t_seconds_sum{server="a"} 0.25
""",
    """# HELP lbproxy_t_seconds Latency.
# TYPE lbproxy_t_seconds histogram
lbproxy_t_seconds_bucket{le="+Inf",server="b"} 1.0
lbproxy_t_seconds_bucket{le="1.0",server="b"} 1.0
lbproxy_t_seconds_count{server="b"} 1.0
lbproxy_t_seconds_sum{server="b"} 0.5
lbproxy_t_seconds_bucket{le="+Inf",server="a"} 4.0
lbproxy_t_seconds_bucket{le="0.1",server="a"} 3.0
lbproxy_t_seconds_count{server="a"} 4.0
lbproxy_t_seconds_sum{server="a"} 0.75
# HELP lbproxy_x_requests_total Requests.
# TYPE lbproxy_x_requests_total counter
lbproxy_x_requests_total{server="a"} 4.0
lbproxy_x_requests_total{server="b"} 1.0
# HELP lbproxy_server_up Up.
# TYPE lbproxy_server_up gauge
lbproxy_server_up{server="a"} 1.0
""",
]


def test_merge_metrics_hand_written_orders_families_and_buckets():
    merged = merge_metrics(HAND_WRITTEN)
    assert merged == """# HELP lbproxy_x_requests_total Requests.
# TYPE lbproxy_x_requests_total counter
lbproxy_x_requests_total{server="a"} 7.0
lbproxy_x_requests_total{server="b"} 1.0
# HELP lbproxy_server_up Up.
# TYPE lbproxy_server_up gauge
lbproxy_server_up{server="a"} 1.0
# HELP lbproxy_t_seconds Latency.
# TYPE lbproxy_t_seconds histogram
lbproxy_t_seconds_bucket{le="0.1",server="a"} 4.0
lbproxy_t_seconds_bucket{le="+Inf",server="a"} 6.0
lbproxy_t_seconds_count{server="a"} 6.0
lbproxy_t_seconds_sum{server="a"} 1.0
lbproxy_t_seconds_bucket{le="1.0",server="b"} 1.0
lbproxy_t_seconds_bucket{le="+Inf",server="b"} 1.0
lbproxy_t_seconds_count{server="b"} 1.0
lbproxy_t_seconds_sum{server="b"} 0.5
"""
    assert samples(merge_metrics([merged])) == samples(merged)     # parses back, stable
    assert merge_metrics([]) == ""


def worker_rows(stot: int, status: str, rtime: int | None, extra: bool) -> list[dict]:
    server = {"pxname": "app", "svname": "a", "iid": 2, "sid": 1, "type": 2, "status": status,
              "weight": 10, "act": 1, "bck": 0, "scur": 1, "smax": 3, "slim": 50, "stot": stot,
              "bin": 100, "bout": 1000, "hrsp_2xx": stot, "lastchg": 40 + stot, "pid": 1,
              "addr": "127.0.0.1:9001", "rate_max": 4, "last_chk": "HTTP 200"}
    if rtime is not None:
        server["rtime"] = rtime
    rows = [{"pxname": "web", "svname": "FRONTEND", "status": "OPEN", "scur": 2, "stot": 9},
            server,
            {"pxname": "app", "svname": "BACKEND", "status": "UP", "weight": 10, "act": 1,
             "stot": stot, "qmax": 1, "algo": "roundrobin"}]
    if extra:               # a server added to this worker only (so far)
        rows.insert(2, {**server, "svname": "b", "stot": 1})
    return rows


def test_merge_rows_sums_load_and_keeps_shared_state():
    merged = merge_rows([worker_rows(5, "UP", None, False), worker_rows(7, "DOWN", 30, True)])
    assert [(r["pxname"], r["svname"]) for r in merged] == [
        ("web", "FRONTEND"), ("app", "a"), ("app", "b"), ("app", "BACKEND")]
    frontend, a, b, backend = merged
    assert frontend == {"pxname": "web", "svname": "FRONTEND", "status": "OPEN", "scur": 4,
                        "stot": 18}
    assert a["stot"] == 12 and a["hrsp_2xx"] == 12 and a["bin"] == 200 and a["scur"] == 2
    assert a["smax"] == 6 and a["slim"] == 100 and a["rate_max"] == 8     # per-worker bounds
    assert a["status"] == "UP" and a["weight"] == 10 and a["act"] == 1    # the first's
    assert a["lastchg"] == 45 and a["pid"] == 1 and a["addr"] == "127.0.0.1:9001"
    assert a["rtime"] == 30                                      # only one worker had it
    assert b["stot"] == 1 and b["status"] == "DOWN"
    assert backend["stot"] == 12 and backend["qmax"] == 2 and backend["weight"] == 10
    assert merge_rows([]) == []


def test_merge_csv_is_merge_rows_in_haproxy_layout():
    workers = [worker_rows(5, "UP", 20, False), worker_rows(7, "DOWN", 30, True)]
    merged = merge_csv([to_csv(rows) for rows in workers])
    assert merged == to_csv(merge_rows(workers))
    lines = merged.splitlines()
    assert lines[0] == "# " + ",".join(COLUMNS) + ","
    assert all(line.endswith(",") for line in lines)
    a = dict(zip(COLUMNS, lines[2].split(",")))
    assert (a["svname"], a["stot"], a["status"], a["rtime"], a["weight"]) == (
        "a", "12", "UP", "30", "10")
    assert a["qcur"] == "" and a["check_status"] == ""             # empty stays empty
    assert merge_csv([merged]) == merged


def test_render_rows_page():
    rows = merge_rows([worker_rows(5, "UP", None, True), worker_rows(7, "UP", None, False)])
    rows[1]["last_chk"] = "<script>"
    page = render_rows_page(rows, 2.5, 2)
    assert "<title>lbproxy statistics (2 workers)</title>" in page
    assert '<meta http-equiv="refresh" content="3">' in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("<section>") == 2 and 'class="s-UP"' in page
    assert 'data-label="Sessions">2 / 6 / 100<' in page
    assert "http-equiv" not in render_rows_page(rows, 0, 2)


def server_doc(name: str, requests: int, weight: int, p95: float | None) -> dict:
    return {"name": name, "address": "127.0.0.1:9001", "state": "UP", "up": True,
            "last_change": 1000.0 + weight, "weight": weight, "effective_weight": weight,
            "maxconn": 100, "sessions": 1, "max_sessions": 2, "requests": requests,
            "responses": {"2xx": requests, "5xx": 1}, "rps": 0.1,
            "response_time": {"avg": p95 and p95 / 2, "p95": p95}}


def test_merge_json_backends():
    first = {"backends": [{"name": "app", "status": "UP", "servers_up": 2, "requests": 10,
                           "max_queue": 1, "servers": [server_doc("a", 4, 10, None),
                                                       server_doc("b", 6, 10, 0.2)]}]}
    second = {"backends": [{"name": "app", "status": "DOWN", "servers_up": 1, "requests": 5,
                            "max_queue": 0, "servers": [server_doc("b", 5, 20, 0.3),
                                                        server_doc("c", 1, 5, None)]}]}
    (app,) = merge_json([first, second])["backends"]
    assert (app["status"], app["servers_up"], app["requests"], app["max_queue"]) == (
        "UP", 2, 15, 1)
    a, b, c = app["servers"]
    assert [a["name"], b["name"], c["name"]] == ["a", "b", "c"]
    assert a == server_doc("a", 4, 10, None)                     # only in the first worker
    assert (b["requests"], b["responses"], b["sessions"], b["max_sessions"]) == (
        11, {"2xx": 11, "5xx": 2}, 2, 4)
    assert (b["weight"], b["effective_weight"], b["maxconn"], b["last_change"]) == (
        10, 10, 100, 1010.0)
    assert b["rps"] == 0.2                                       # rounded, not 0.2000000001
    assert b["response_time"] == {"avg": 0.15, "p95": 0.3}      # the worst
    assert c["response_time"] == {"avg": None, "p95": None}


@pytest.mark.parametrize("values, merged", [
    ([{"pools": {"app": {"current": 2, "desired": 3, "reported": 5.0, "action": "up"}}}] * 3,
     {"pools": {"app": {"current": 2, "desired": 3, "reported": 5.0, "action": "up"}}}),
    ([{"name": "t", "size": 100, "entries": 4, "store": ["conn_cur"], "top": [{"key": "x"}]},
      {"name": "t", "size": 100, "entries": 3, "store": ["conn_cur"], "top": [{"key": "y"}]}],
     {"name": "t", "size": 100, "entries": 7, "store": ["conn_cur"], "top": [{"key": "x"}]}),
    ([{"up": True, "n": 1}, {"up": False, "n": 2}], {"up": True, "n": 3}),
])
def test_merge_json_shared_keys_and_plain_lists(values, merged):
    assert merge_json(values) == merged
