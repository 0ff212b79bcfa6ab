"""The admin server end to end: stats page, CSV/JSON, /metrics, /health, runtime API, auth.

Real sockets on 127.0.0.1: demo backends, a proxy with a `stats:` section on a free port,
traffic through the proxy, then questions to the admin port.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import threading

from prometheus_client.parser import text_string_to_metric_families

from tests.harness import (Reader, Response, connect, free_port, get, request, simple_config,
                           wait_for)

AUTH = ("admin", "s3cret")


def admin_config(ports: list[int], *, auth: bool = True, admin: bool = True) -> dict:
    """A proxy over `ports` with the stats server on a free port (`config["stats_port"]`
    is read back by `call`, then dropped before the config is loaded)."""
    config = simple_config(ports)
    stats: dict = {"bind": f"127.0.0.1:{free_port()}", "refresh": "5s", "admin": admin}
    if auth:
        stats["auth"] = {"username": AUTH[0], "password": AUTH[1]}
    config["stats"] = stats
    return config


def stats_port(p) -> int:
    return p.process.admin.addresses[0][1]


def call(p, method: str, path: str, body: object = None, auth: tuple[str, str] | None = AUTH,
         headers: dict[str, str] | None = None) -> Response:
    """One request to the admin port of proxy `p`."""
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             f"Content-Length: {len(data)}"]
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        lines.append(f"Authorization: Basic {token}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return request(stats_port(p), ("\r\n".join(lines) + "\r\n\r\n").encode() + data)


def call_json(p, method: str, path: str, body: object = None, status: int = 200, **kw) -> object:
    response = call(p, method, path, body, **kw)
    assert response.status == status, response.body[:300]
    assert (response.header("content-type") or "").startswith("application/json")
    return json.loads(response.body)


def csv_rows(text: str) -> dict[tuple[str, str], dict[str, str]]:
    assert text.startswith("# pxname,svname,")
    rows = csv.DictReader(io.StringIO(text[2:]))
    return {(row["pxname"], row["svname"]): row for row in rows}


def servers_hit(p, n: int) -> list[str | None]:
    return [get(p.port).header("x-server") for _ in range(n)]


# --- reading ----------------------------------------------------------------------------------

def test_stats_page_csv_and_json_after_traffic(backends, proxy):
    apps = backends(2)
    p = proxy(admin_config([a.port for a in apps]))
    assert servers_hit(p, 6) == ["app1", "app2"] * 3
    assert get(p.port, "/status/404").status == 404

    page = call(p, "GET", "/stats")
    assert page.status == 200 and page.header("content-type").startswith("text/html")
    html = page.body.decode()
    assert '<meta http-equiv="refresh" content="5">' in html
    assert html.count('<tr class="s-UP">') == 2
    assert "app1" in html and "app2" in html and "BACKEND" in html and "FRONTEND" in html
    assert 'data-label="Requests">7<' in html         # frontend and backend totals
    assert 'class="ctl"' in html                       # admin on and authenticated

    for path in ("/stats;csv", "/stats?format=csv"):
        response = call(p, "GET", path)
        assert response.status == 200
        text = response.body.decode()
        assert text.startswith("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,"
                               "dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,")
        rows = csv_rows(text)
        assert list(rows) == [("web", "FRONTEND"), ("app", "app1"), ("app", "app2"),
                              ("app", "BACKEND")]
        app1, app2, backend = rows["app", "app1"], rows["app", "app2"], rows["app", "BACKEND"]
        assert (app1["stot"], app1["hrsp_2xx"], app1["status"]) == ("4", "3", "UP")
        assert (app2["stot"], app2["hrsp_2xx"], app2["hrsp_4xx"]) == ("3", "3", "0")
        assert (backend["stot"], backend["hrsp_2xx"], backend["hrsp_4xx"]) == ("7", "6", "1")
        assert backend["act"] == "2" and backend["algo"] == "roundrobin"
        frontend = rows["web", "FRONTEND"]
        assert (frontend["stot"], frontend["req_tot"], frontend["status"]) == ("7", "7", "OPEN")
        assert app1["type"] == "2" and backend["type"] == "1" and frontend["type"] == "0"
        assert app1["addr"] == f"127.0.0.1:{apps[0].port}" and app1["cookie"] == "app1"

    rows = call_json(p, "GET", "/stats?format=json")
    assert [(row["pxname"], row["svname"]) for row in rows] == [
        ("web", "FRONTEND"), ("app", "app1"), ("app", "app2"), ("app", "BACKEND")]
    assert rows[1]["hrsp_2xx"] == 3 and rows[3]["stot"] == 7
    assert "unknown format" in call_json(p, "GET", "/stats?format=xml", status=400)["error"]


def test_metrics_count_requests_exactly(backends, proxy):
    apps = backends(2)
    p = proxy(admin_config([a.port for a in apps]))
    servers_hit(p, 5)
    response = call(p, "GET", "/metrics", auth=None)      # open even with auth configured
    assert response.status == 200 and response.header("content-type").startswith("text/plain")
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(response.body.decode())
               for s in family.samples}

    def value(name: str, **labels: str) -> float:
        return samples["lbproxy_" + name, frozenset(labels.items())]

    assert value("frontend_http_requests_total", frontend="web") == 5
    assert value("frontend_http_responses_total", frontend="web", code="2xx") == 5
    assert value("frontend_bytes_out_total", frontend="web") > 0
    assert value("frontend_current_sessions", frontend="web") == 0
    assert value("backend_http_responses_total", backend="app", code="2xx") == 5
    assert value("backend_retries_total", backend="app") == 0
    assert value("backend_queue_length", backend="app") == 0
    app1 = {"backend": "app", "server": "app1"}
    assert value("server_up", **app1) == 1
    assert value("server_weight", **app1) == 1
    assert value("server_http_responses_total", **app1, code="2xx") == 3
    assert value("server_response_time_seconds_count", **app1) == 3
    assert value("server_response_time_seconds_bucket", **app1, le="+Inf") == 3
    assert value("server_check_failures_total", **app1) == 0

def test_long_answers_carry_their_length_and_head_gets_none_of_the_body(backends, proxy):
    """Pages, CSV, JSON and metrics are written piece by piece (lbproxy/admin/base.py)."""
    p = proxy(admin_config([a.port for a in backends(2)]))
    servers_hit(p, 3)
    for path in ("/stats", "/stats;csv", "/stats?format=json", "/metrics", "/api/backends/app"):
        got = call(p, "GET", path)
        assert got.status == 200 and int(got.header("content-length")) == len(got.body) > 100
        with connect(stats_port(p)) as sock:
            token = base64.b64encode(":".join(AUTH).encode()).decode()
            sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Basic {token}"
                         "\r\n\r\n".encode() + b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
            reader = Reader(sock)
            head = reader.read_response(head_only=True)
            assert head.status == 200 and head.header("content-length") == got.header(
                "content-length")
            assert reader.read_response().body == b"ok"     # no stray body before it


def test_health_is_open_and_plain(backends, proxy):
    (app,) = backends(1)
    p = proxy(admin_config([app.port]))
    response = call(p, "GET", "/health", auth=None)
    assert (response.status, response.body) == (200, b"ok")
    p.call(lambda: setattr(p.engine.state, "stopping", True))     # as a graceful stop does
    assert call(p, "GET", "/health", auth=None).status == 503
    p.call(lambda: setattr(p.engine.state, "stopping", False))


def test_api_reads(backends, proxy):
    apps = backends(2)
    p = proxy(admin_config([a.port for a in apps]))
    servers_hit(p, 4)
    listing = call_json(p, "GET", "/api/backends")
    assert [b["name"] for b in listing["backends"]] == ["app"]
    backend = call_json(p, "GET", "/api/backends/app")
    assert (backend["status"], backend["requests"], backend["servers_up"]) == ("UP", 4, 2)
    app1 = backend["servers"][0]
    assert app1["name"] == "app1" and app1["address"] == f"127.0.0.1:{apps[0].port}"
    assert (app1["state"], app1["weight"], app1["sessions"], app1["requests"]) == ("UP", 1, 0, 2)
    assert app1["check"] == "none" and app1["last_change"] > 0 and app1["rps"] >= 0
    assert app1["response_time"]["avg"] is not None and app1["response_time"]["p95"] > 0
    assert call_json(p, "GET", "/api/backends/app/servers/app2")["requests"] == 2
    assert call_json(p, "GET", "/api/backends/nope", status=404) == {"error": "no backend 'nope'"}
    assert "no server" in call_json(p, "GET", "/api/backends/app/servers/x", status=404)["error"]
    assert call_json(p, "GET", "/nothing/here", status=404) == {"error": "Not Found"}


# --- access control ---------------------------------------------------------------------------

def test_auth_protects_reads_and_writes(backends, proxy):
    (app,) = backends(1)
    p = proxy(admin_config([app.port]))
    for method, path in (("GET", "/stats"), ("GET", "/stats;csv"), ("GET", "/api/backends"),
                         ("PATCH", "/api/backends/app/servers/app1"), ("POST", "/api/reload")):
        for auth in (None, ("admin", "wrong"), ("root", AUTH[1])):
            response = call(p, method, path, {"state": "maint"}, auth=auth)
            assert response.status == 401, (method, path, auth)
            assert response.header("www-authenticate") == 'Basic realm="lbproxy"'
            assert json.loads(response.body) == {"error": "authentication required"}
    assert call(p, "GET", "/api/backends/app/servers/app1").status == 200
    assert p.call(lambda: p.engine.backends["app"].server("app1").admin) == "ready"


def test_writes_need_admin(backends, proxy):
    (app,) = backends(1)
    p = proxy(admin_config([app.port], admin=False))
    error = call_json(p, "PATCH", "/api/backends/app/servers/app1", {"state": "maint"},
                      status=403)["error"]
    assert "stats.admin" in error
    assert call(p, "GET", "/api/backends/app").status == 200       # reads still work
    assert 'class="ctl"' not in call(p, "GET", "/stats").body.decode()


def test_without_auth_reads_are_open_and_writes_forbidden(backends, proxy):
    (app,) = backends(1)
    p = proxy(admin_config([app.port], auth=False))
    assert call(p, "GET", "/stats", auth=None).status == 200
    assert 'class="ctl"' not in call(p, "GET", "/stats", auth=None).body.decode()
    response = call(p, "DELETE", "/api/backends/app/servers/app1", auth=None)
    assert response.status == 403 and "stats.auth" in json.loads(response.body)["error"]
    assert p.call(lambda: len(p.engine.backends["app"].servers)) == 1


def test_cross_origin_write_is_refused(backends, proxy):
    (app,) = backends(1)
    p = proxy(admin_config([app.port]))
    path = "/api/backends/app/servers/app1"
    evil = call(p, "PATCH", path, {"state": "maint"}, headers={"Origin": "http://evil.example"})
    assert evil.status == 403
    same = call(p, "PATCH", path, {"state": "drain"}, headers={"Origin": "http://127.0.0.1"})
    assert same.status == 200 and json.loads(same.body)["state"] == "DRAIN"


# --- changing servers -------------------------------------------------------------------------

def test_add_server_gets_traffic(backends, proxy, caplog):
    caplog.set_level(logging.INFO, logger="lbproxy.api")
    app1, app2 = backends(2)
    p = proxy(admin_config([app1.port]))
    response = call(p, "POST", "/api/backends/app/servers",
                    {"name": "app2", "address": f"127.0.0.1:{app2.port}", "weight": 2,
                     "cookie": "c2"})
    assert response.status == 201, response.body
    assert response.header("location") == "/api/backends/app/servers/app2"
    added = json.loads(response.body)
    assert (added["name"], added["state"], added["weight"], added["cookie"]) == (
        "app2", "UP", 2, "c2")
    assert sorted(servers_hit(p, 6)) == ["app1"] * 2 + ["app2"] * 4
    audit = [r.getMessage() for r in caplog.records if r.name == "lbproxy.api"]
    assert audit == [f"api: backend app: added server app2 (127.0.0.1:{app2.port}, weight 2) "
                     "(by admin from 127.0.0.1)"]
    assert [s["name"] for s in call_json(p, "GET", "/api/backends/app")["servers"]] == [
        "app1", "app2"]


def test_add_server_errors(backends, proxy):
    (app,) = backends(1)
    p = proxy(admin_config([app.port]))
    path = "/api/backends/app/servers"
    good = {"name": "x", "address": "127.0.0.1:1"}
    assert call(p, "POST", "/api/backends/nope/servers", good).status == 404
    assert "already has" in call_json(p, "POST", path, {**good, "name": "app1"}, status=409)["error"]
    for body, message in [
        ({"address": "127.0.0.1:1"}, "name is required"),
        ({"name": "a b", "address": "127.0.0.1:1"}, "invalid name"),
        ({"name": "x"}, "address is required"),
        ({"name": "x", "address": "127.0.0.1"}, "missing port"),
        ({"name": "x", "address": "127.0.0.1:99999"}, "invalid port"),
        ({**good, "weight": 257}, "weight must be"),
        ({**good, "weight": "3"}, "weight must be"),
        ({**good, "cookie": ""}, "cookie must be"),
        ({**good, "backup": True}, "unknown key 'backup'"),
        ([good], "JSON object"),
        (b"{not json", "JSON object"),
    ]:
        assert message in call_json(p, "POST", path, body, status=400)["error"], body
    unix = call_json(p, "POST", path, {"name": "sock", "address": "unix:/tmp/x.sock"}, status=201)
    assert unix["address"] == "unix:/tmp/x.sock"


def test_added_server_waits_for_health_checks(backends, proxy):
    app1, app2 = backends(2)
    config = admin_config([app1.port])
    config["backends"]["app"]["health_check"] = {"interval": "100ms", "timeout": "500ms",
                                                 "rise": 2, "fall": 1}
    p = proxy(config)
    path = "/api/backends/app/servers"
    wait_for(lambda: call_json(p, "GET", f"{path}/app1")["state"] == "UP")
    for name, port in (("dead", free_port()), ("app2", app2.port)):
        added = call_json(p, "POST", path, {"name": name, "address": f"127.0.0.1:{port}"},
                          status=201)
        assert (added["state"], added["check"], added["up"]) == ("CHECKING", "checking", False)
    assert servers_hit(p, 4) == ["app1"] * 4          # nobody new before a check passes
    wait_for(lambda: call_json(p, "GET", f"{path}/app2")["state"] == "UP")
    assert sorted(servers_hit(p, 4)) == ["app1", "app1", "app2", "app2"]
    assert call_json(p, "GET", f"{path}/dead")["state"] in ("CHECKING", "DOWN")
    rows = csv_rows(call(p, "GET", "/stats;csv").body.decode())
    assert rows["app", "app2"]["check_status"] == "L7OK"
    assert (rows["app", "app2"]["check_rise"], rows["app", "app2"]["check_fall"]) == ("2", "1")


def test_patch_state_and_weight(backends, proxy):
    apps = backends(2)
    p = proxy(admin_config([a.port for a in apps]))
    path = "/api/backends/app/servers/app1"
    server = call_json(p, "PATCH", path, {"state": "maint"})
    assert (server["state"], server["admin"]) == ("MAINT", "maint")
    assert servers_hit(p, 4) == ["app2"] * 4
    assert apps[0].stats.requests == 0
    assert call_json(p, "PATCH", path, {"state": "ready", "weight": 3})["weight"] == 3
    assert sorted(servers_hit(p, 8)) == ["app1"] * 6 + ["app2"] * 2
    for body, message in [({"state": "up"}, "state must be one of"),
                          ({"weight": -1}, "weight must be"),
                          ({"weight": True}, "weight must be"),
                          ({"state": "drain", "weight": 300}, "weight must be"),
                          ({}, "nothing to change"),
                          ({"name": "x"}, "unknown key")]:
        assert message in call_json(p, "PATCH", path, body, status=400)["error"], body
    assert call_json(p, "GET", path)["state"] == "UP"       # the bad PATCHes changed nothing
    assert call(p, "PATCH", "/api/backends/app/servers/nope", {"state": "maint"}).status == 404


def test_delete_drains_in_flight_request_then_removes(backends, proxy):
    apps = backends(2)
    p = proxy(admin_config([a.port for a in apps]))
    backend = p.engine.backends["app"]
    slow: list = []
    client = threading.Thread(target=lambda: slow.append(get(p.port, "/slow/500")))
    client.start()                                       # roundrobin: the first goes to app1
    wait_for(lambda: p.call(lambda: backend.server("app1").in_flight) == 1)
    path = "/api/backends/app/servers/app1"
    assert call_json(p, "DELETE", path + "?drain=5s", status=202) == {
        "removing": "app1", "drain": 5.0}
    assert call_json(p, "GET", path)["state"] == "DRAIN"
    assert servers_hit(p, 3) == ["app2"] * 3              # no new requests while draining
    client.join(5)
    assert slow[0].status == 200 and slow[0].header("x-server") == "app1"
    wait_for(lambda: call(p, "GET", path).status == 404)
    assert [s["name"] for s in call_json(p, "GET", "/api/backends/app")["servers"]] == ["app2"]
    bad = call_json(p, "DELETE", "/api/backends/app/servers/app2?drain=soon", status=400)
    assert "invalid duration" in bad["error"]
    assert call(p, "DELETE", path).status == 404


def test_reload_endpoint(backends, proxy):
    (app,) = backends(1)
    config = admin_config([app.port])
    p = proxy(config)
    config["backends"]["app"]["servers"][0]["weight"] = 7
    p.rewrite(config)
    assert call_json(p, "POST", "/api/reload") == {"reloaded": True}
    assert p.call(lambda: p.engine.backends["app"].servers[0].config_weight) == 7
    p.rewrite("backends: {app: {balance: roundrobbin}}\n")
    errors = call_json(p, "POST", "/api/reload", status=400)["errors"]
    assert any("unknown algorithm 'roundrobbin'" in e for e in errors)
    assert p.call(lambda: p.engine.backends["app"].servers[0].config_weight) == 7
    assert call(p, "GET", "/api/reload").status == 405


def test_autoscaler_status_is_shown(backends, proxy):
    from prometheus_client.parser import text_string_to_metric_families

    (app,) = backends(1)
    p = proxy(admin_config([app.port]))
    body = {"pool": "app", "current": 2, "desired": 4,
            "last_decision": {"time": 0, "action": "scale_up", "reason": "rps 300 vs 200"}}
    assert call(p, "POST", "/api/autoscale/status", body).status == 202
    assert call_json(p, "GET", "/api/autoscale")["pools"]["app"]["desired"] == 4
    page = call(p, "GET", "/stats").body.decode()
    assert "autoscaler" in page and "rps 300 vs 200" in page
    metrics = {s.name: s.value for f in text_string_to_metric_families(
        call(p, "GET", "/metrics").body.decode()) for s in f.samples}
    assert metrics["lbproxy_autoscale_desired_servers"] == 4
    bad = dict(body, current="two")
    assert call(p, "POST", "/api/autoscale/status", bad).status == 400
