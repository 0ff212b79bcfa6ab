"""auth_request against a real auth server (allow with copied headers, deny, errors,
timeouts, cached allows, a client that leaves) and request ids with trace context, at the
server and in the access log."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import pytest
from aiohttp import web

from tests.harness import connect, get, simple_config, wait_for
from tests.origin import Origin


async def auth_answer(request: web.Request) -> web.Response:
    token = request.headers.get("Authorization", "")
    if token == "good":
        return web.Response(text="ok", headers={"X-User": "alice", "X-Other": "no"})
    if token == "slow":
        await asyncio.sleep(2)
        return web.Response(text="late")
    if token == "broken":
        return web.Response(status=502, text="upstream trouble")
    return web.Response(status=401, text="who are you?",
                        headers={"WWW-Authenticate": 'Bearer realm="x"'})


@pytest.fixture
def auth_server():
    with Origin(auth_answer) as server:
        yield server


def auth_config(app_port: int, auth_port: int, **action) -> dict:
    config = simple_config([app_port], http_request=[
        {"auth_request": {"backend": "auth", "path": "/verify", "copy_headers": ["X-User"],
                          **action}, "unless": "{ path_beg /public }"}])
    config["backends"]["auth"] = {"retries": 0, "timeouts": {"server": "1s"},
                                  "servers": [{"name": "a1", "address": f"127.0.0.1:{auth_port}"}]}
    return config


def echoed(response) -> dict[str, str]:
    return {name.lower(): value for name, value in json.loads(response.body)["headers"]}


def test_an_allowed_request_goes_on_with_the_copied_headers(backends, proxy, auth_server):
    (app,) = backends(1)
    p = proxy(auth_config(app.port, auth_server.port))
    response = get(p.port, "/echo", {"Authorization": "good", "X-User": "mallory"})
    assert response.status == 200
    headers = echoed(response)
    assert headers["x-user"] == "alice"                 # the auth answer's, not the client's
    assert "x-other" not in headers
    seen = auth_server.requests[-1]
    sent = {name.lower(): value for name, value in seen.headers.items()}
    assert seen.method == "GET" and seen.path_qs == "/verify"
    assert sent["x-original-method"] == "GET" and sent["x-original-uri"] == "/echo"
    assert sent["authorization"] == "good"
    assert get(p.port, "/public/echo").status == 200     # the rule's condition holds
    assert len(auth_server.requests) == 1


def test_401_and_403_go_back_to_the_client(backends, proxy, auth_server):
    (app,) = backends(1)
    p = proxy(auth_config(app.port, auth_server.port))
    response = get(p.port, "/echo", {"Authorization": "nope"})
    assert response.status == 401
    assert response.header("www-authenticate") == 'Bearer realm="x"'
    assert response.body == b"who are you?"
    assert app.stats.requests == 0


@pytest.mark.parametrize("token", ["broken", "slow"])
def test_errors_and_timeouts_of_the_auth_server_are_500(backends, proxy, auth_server, token):
    (app,) = backends(1)
    p = proxy(auth_config(app.port, auth_server.port))
    assert get(p.port, "/echo", {"Authorization": token}).status == 500
    assert app.stats.requests == 0


def test_no_auth_server_is_500(backends, proxy):
    (app,) = backends(1)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = unused.getsockname()[1]
    p = proxy(auth_config(app.port, dead))
    assert get(p.port, "/echo").status == 500


def test_cached_allows_skip_the_auth_server(backends, proxy, auth_server):
    (app,) = backends(1)
    p = proxy(auth_config(app.port, auth_server.port, cache={"ttl": "30s"}))
    for _ in range(3):
        response = get(p.port, "/echo", {"Authorization": "good"})
        assert echoed(response)["x-user"] == "alice"
    assert len(auth_server.requests) == 1
    assert get(p.port, "/echo", {"Authorization": "nope"}).status == 401   # another key
    assert get(p.port, "/echo", {"Authorization": "nope"}).status == 401   # never cached
    assert len(auth_server.requests) == 3


def test_a_client_that_leaves_cancels_the_subrequest(backends, proxy, auth_server):
    (app,) = backends(1)
    p = proxy(auth_config(app.port, auth_server.port))
    backend = p.engine.backends["auth"]
    with connect(p.port) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\nAuthorization: slow\r\n\r\n")
        wait_for(lambda: p.call(lambda: backend.in_flight) == 1)
    wait_for(lambda: p.call(lambda: backend.in_flight) == 0, timeout=2)
    assert app.stats.requests == 0


def test_request_ids_and_trace_context(backends, proxy, tmp_path):
    (app,) = backends(1)
    log_path = tmp_path / "access.log"
    config = simple_config([app.port], unique_id={"header": "X-Request-ID"},
                           http_response=[{"set_header": {"name": "X-Id",
                                                          "value": "%[unique_id]"}}],
                           **{"global": {"log": {"access": str(log_path)}}})
    p = proxy(config)
    response = get(p.port, "/echo", {"X-Request-ID": "forged"})
    headers = echoed(response)
    request_id = headers["x-request-id"]
    assert request_id != "forged"                             # not from a trusted peer
    assert re.fullmatch(r"[0-9a-f-]{36}", request_id)
    assert response.header("x-id") == request_id
    started = headers["traceparent"]
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", started)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    joined = echoed(get(p.port, "/echo", {"traceparent": parent, "tracestate": "k=v"}))
    trace, span, flags = joined["traceparent"].split("-")[1:]
    assert trace == "0af7651916cd43dd8448eb211c80319c" and flags == "00"
    assert span != "b7ad6b7169203331"                         # the proxy's own span
    assert joined["tracestate"] == "k=v"
    bad = echoed(get(p.port, "/echo", {"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"}))
    assert not bad["traceparent"].startswith("00-" + "0" * 32)
    p.stop()
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert lines[0]["unique_id"] == request_id
    assert len({line["unique_id"] for line in lines}) == 3


def test_a_trusted_peer_keeps_its_request_id(backends, proxy):
    (app,) = backends(1)
    config = simple_config([app.port], unique_id={},
                           forwarded={"trusted_proxies": ["127.0.0.1/32"]})
    p = proxy(config)
    headers = echoed(get(p.port, "/echo", {"X-Request-ID": "from-the-edge"}))
    assert headers["x-request-id"] == "from-the-edge"
