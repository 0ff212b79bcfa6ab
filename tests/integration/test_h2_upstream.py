"""HTTP/2 to servers (`proto: h2`) against a server on the independent `h2` library:
requests from HTTP/1.1 and HTTP/2 clients, trailers both ways, connections multiplexed up
to the server's stream limit, refused and GOAWAY'd streams retried, idle PINGs, reload."""

from __future__ import annotations

import threading

import pytest

from lbproxy.proxy import h2upstream
from tests.h2raw import RawH2
from tests.h2server import H2Server
from tests.harness import free_port, get, request, simple_config, wait_for


@pytest.fixture
def server():
    with H2Server() as s:
        yield s


def h2_proxy(proxy, port: int, **frontend):
    config = simple_config([port], backend={"proto": "h2"}, **frontend)
    h2c = free_port()
    config["frontends"]["web"]["bind"].append({"address": f"127.0.0.1:{h2c}", "h2c": True})
    return proxy(config), h2c


def test_an_http11_request_reaches_an_h2_server(server, proxy):
    p, _ = h2_proxy(proxy, server.port)
    response = request(p.port, b"POST /up?x=1 HTTP/1.1\r\nHost: site\r\nContent-Length: 5\r\n"
                               b"X-Mine: 1\r\n\r\nhello")
    assert response.status == 200 and response.body == b"hello"
    seen = server.requests[0]
    assert seen.headers[":path"] == "/up?x=1" and seen.headers[":authority"] == "site"
    assert seen.headers[":method"] == "POST" and seen.headers["x-mine"] == "1"
    assert seen.headers["x-forwarded-for"] == "127.0.0.1" and "host" not in seen.headers


def test_trailers_pass_both_ways_between_http2_peers(server, proxy):
    p, h2c = h2_proxy(proxy, server.port)
    client = RawH2(h2c)
    stream = client.new_id()
    client.headers(stream, [(":method", "POST"), (":scheme", "http"), (":path", "/t"),
                            (":authority", "h"), ("te", "trailers")], end_stream=False)
    client.data(stream, b"payload")
    client.headers(stream, [("x-request-trailer", "yes")], end_stream=True)
    response = client.response(stream)
    assert response.status == 200 and response.body == b"payload"
    assert ("x-trailer", "done") in response.trailers
    seen = server.requests[0]
    assert seen.trailers == {"x-request-trailer": "yes"} and seen.headers["te"] == "trailers"


def test_streams_share_connections_up_to_the_server_limit(proxy):
    with H2Server(max_streams=2, delay=1.0) as server:     # long enough to overlap
        p, _ = h2_proxy(proxy, server.port)
        assert get(p.port, "/warm").status == 200       # a connection that knows the limit
        results = []
        threads = [threading.Thread(target=lambda i=i: results.append(
            get(p.port, f"/{i}").status)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert results == [200] * 6
        assert server.most_open == 2 and server.connections >= 2


def test_a_refused_stream_is_retried_even_for_post(server, proxy):
    p, _ = h2_proxy(proxy, server.port)
    server.refuse = 1
    response = request(p.port, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
    assert response.status == 200 and response.body == b"hi"
    assert p.engine.backends["app"].retried == 1


def test_streams_above_goaway_are_retried_on_a_new_connection(server, proxy):
    p, _ = h2_proxy(proxy, server.port)
    assert get(p.port, "/warm").status == 200          # one connection, stream 1 used
    server.goaway_last = 1                             # stream 3 was never processed
    response = get(p.port, "/again")
    assert response.status == 200
    assert server.connections == 2 and server.requests[-1].headers[":path"] == "/again"


def test_idle_connections_are_pinged(server, proxy, monkeypatch):
    monkeypatch.setattr(h2upstream, "PING_INTERVAL", 0.2)
    p, _ = h2_proxy(proxy, server.port)
    assert get(p.port).status == 200
    wait_for(lambda: server.pings >= 2, timeout=5)
    assert get(p.port).status == 200 and server.connections == 1


def test_reload_sends_goaway_to_http2_clients(server, proxy):
    p, h2c = h2_proxy(proxy, server.port)
    client = RawH2(h2c)
    stream = client.request("/")
    assert client.response(stream).status == 200
    p.loop.call_soon_threadsafe(lambda: p.loop.create_task(p.engine.reload()))
    goaway = client.wait_goaway()
    assert goaway.error_code == 0 and goaway.last_stream_id == stream


def test_a_response_head_over_the_limit_is_a_502(server, proxy):
    p, _ = h2_proxy(proxy, server.port)
    server.extra_headers = [("x-big", "v" * 70000)]
    assert get(p.port, "/").status == 502
    assert p.call(lambda: p.engine.backends["app"].servers[0].failures) == 1
    server.extra_headers = []
    assert get(p.port, "/").status == 200
