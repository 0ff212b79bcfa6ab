"""Frontend rules end to end: ACL routing, deny/return/redirect, header and path rules."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.harness import free_port, get, request, simple_config


def two_backends(api_port: int, app_port: int, **frontend) -> dict:
    config = simple_config([app_port], **frontend)
    config["backends"]["api"] = {"servers": [{"name": "api1",
                                              "address": f"127.0.0.1:{api_port}"}]}
    return config


def echo_headers(response) -> dict:
    assert response.status == 200, response.body[:300]
    return {k.lower(): v for k, v in json.loads(response.body)["headers"]}


def test_host_and_path_routing(backends, proxy):
    api, app = backends(2)
    p = proxy(two_backends(api.port, app.port,
                           acls={"is_api": "path_beg /api /v1",
                                 "api_host": "host -i api.example.com"},
                           use_backend=[{"backend": "api", "if": "is_api || api_host"}]))
    assert get(p.port, "/api/users").header("x-server") == "app1"
    assert get(p.port, "/v1").header("x-server") == "app1"
    assert get(p.port, "/", {"Host": "API.example.com:8080"}).header("x-server") == "app1"
    assert get(p.port, "/web").header("x-server") == "app2"
    assert api.stats.requests == 3 and app.stats.requests == 1


ADMIN_RULES = {
    "acls": {"is_admin": "path_beg -i /admin", "office": "src 10.0.0.0/8"},
    "http_request": [{"deny": {"status": 403, "body": "no admin here\n"},
                      "if": "is_admin !office"}],
}


@pytest.mark.parametrize("path", ["/admin", "/ADMIN/x", "/a/../admin", "/%61dmin", "//admin",
                                  "/admin;x", "/./admin", "/%2e%2e/admin"])
def test_deny_cannot_be_bypassed(backends, proxy, path):
    (app,) = backends(1)
    p = proxy(simple_config([app.port], **ADMIN_RULES))
    response = get(p.port, path)
    assert response.status == 403 and response.body == b"no admin here\n"
    assert app.stats.requests == 0
    assert p.engine.frontends["web"].denied == 1


def test_allowed_path_is_forwarded_unchanged(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port], **ADMIN_RULES))
    assert get(p.port, "/public/../x%2Fy?q=%2e").status == 200
    assert app.stats.last_head.url == "/public/../x%2Fy?q=%2e"


def test_return_and_redirects(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port], acls={"old": "path_beg /old"}, http_request=[
        {"return": {"status": 200, "body": "pong", "content_type": "text/plain",
                    "headers": {"X-Pong": "1"}}, "if": "{ path /ping }"},
        {"redirect": {"prefix": "https://new.example.com", "code": 301}, "if": "old"},
        {"redirect": {"scheme": "https"}, "if": "{ path_beg /secure }"},
        {"redirect": {"location": "/login?from=%[path]", "code": 303},
         "if": "{ path /account }"},
    ]))
    pong = get(p.port, "/ping")
    assert (pong.status, pong.body, pong.header("x-pong")) == (200, b"pong", "1")
    moved = get(p.port, "/old/page?a=1")
    assert moved.status == 301
    assert moved.header("location") == "https://new.example.com/old/page?a=1"
    secure = get(p.port, "/secure/x", {"Host": "shop.example.com"})
    assert (secure.status, secure.header("location")) == (302, "https://shop.example.com/secure/x")
    login = get(p.port, "/account")
    assert (login.status, login.header("location")) == (303, "/login?from=/account")
    assert app.stats.requests == 0


def test_header_rules_both_ways(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port], http_request=[
        {"set_header": {"name": "X-Client", "value": "ip=%[src]"}},
        {"add_header": {"name": "X-Added", "value": "1"}},
        {"del_header": {"name": "X-Secret"}},
        {"set_header": {"name": "X-Forwarded-For", "value": "cleared"}},
    ], http_response=[
        {"del_header": {"name": "Server"}},
        {"set_header": {"name": "X-Served-By", "value": "%[srv_name]"}},
        {"add_header": {"name": "X-Error", "value": "yes"}, "if": "{ status ge 500 }"},
    ]))
    headers = echo_headers(request(p.port, b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Secret: s\r\n"
                                           b"X-Forwarded-For: 6.6.6.6\r\n\r\n"))
    assert headers["x-client"] == "ip=127.0.0.1"
    assert headers["x-added"] == "1"
    assert "x-secret" not in headers
    assert headers["x-forwarded-for"] == "cleared, 127.0.0.1"
    response = get(p.port, "/")
    assert response.header("server") is None
    assert response.header("x-served-by") == "app1"
    assert response.header("x-error") is None
    assert get(p.port, "/status/503").header("x-error") == "yes"


def test_dst_port_is_the_port_of_the_bind_each_client_reached(backends, proxy):
    (app,) = backends(1)
    config = simple_config([app.port], http_request=[
        {"set_header": {"name": "X-Dst", "value": "%[dst_port]"}}])
    ports = [free_port(), free_port()]
    config["frontends"]["web"]["bind"] = [f"127.0.0.1:{port}" for port in ports]
    p = proxy(config)
    for port in ports:
        assert echo_headers(get(port, "/echo"))["x-dst"] == str(port)
    config["frontends"]["web"]["http_request"].append(     # a reload keeps the listeners
        {"set_header": {"name": "X-Reloaded", "value": "1"}})
    p.rewrite(config)
    assert asyncio.run_coroutine_threadsafe(p.engine.reload(), p.loop).result(5) == []
    for port in ports:
        headers = echo_headers(get(port, "/echo"))
        assert (headers["x-dst"], headers["x-reloaded"]) == (str(port), "1")


def test_a_bind_moved_to_another_frontend_by_a_reload_serves_with_it(backends, proxy):
    """The listener stays (its socket and backlog), its new connections go to the
    frontend the bind now belongs to."""
    (app,) = backends(1)
    config = simple_config([app.port])
    p = proxy(config)
    assert "x-frontend" not in echo_headers(get(p.port, "/echo"))
    site = config["frontends"].pop("web")
    site["http_request"] = [{"set_header": {"name": "X-Frontend", "value": "site"}}]
    config["frontends"]["site"] = site
    p.rewrite(config)
    assert asyncio.run_coroutine_threadsafe(p.engine.reload(), p.loop).result(5) == []
    assert echo_headers(get(p.port, "/echo"))["x-frontend"] == "site"


def test_set_path_and_replace_path(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port], http_request=[
        {"replace_path": {"regex": "^/api/v1/(.*)", "replace": "/\\1"},
         "if": "{ path_beg /api/v1/ }"},
        {"set_path": "/echo", "if": "{ path /whoami }"},
    ]))
    assert get(p.port, "/api/v1/bytes/3?x=1").body == b"012"
    assert app.stats.last_head.url == "/bytes/3?x=1"
    assert get(p.port, "/whoami?q=2").status == 200
    assert app.stats.last_head.url == "/echo?q=2"


def test_nbsrv_condition(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port], http_request=[
        {"return": {"status": 503, "body": "maintenance\n"}, "if": "{ nbsrv(app) lt 1 }"}]))
    assert get(p.port, "/").status == 200
    server = p.engine.backends["app"].servers[0]
    p.call(lambda: p.engine.backends["app"].set_admin(server, "maint"))
    response = get(p.port, "/")
    assert (response.status, response.body) == (503, b"maintenance\n")


def test_rule_errors_name_file_and_line(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "bad.yaml"
    path.write_text("frontends:\n  web:\n    bind: ['127.0.0.1:1']\n    acls:\n"
                    "      is_admin: path_beg /admin\n    http_request:\n"
                    "      - deny: {status: 403}\n        if: is_admn\n"
                    "    default_backend: app\nbackends:\n  app: {servers: []}\n")
    result = subprocess.run([sys.executable, "-m", "lbproxy", "check", "-c", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"{path}:7: frontends.web.http_request[0].if: unknown ACL 'is_admn' " \
           f"(did you mean 'is_admin'?)" in result.stderr
