"""The data plane end to end: real sockets on 127.0.0.1, demo backends, a real proxy."""

from __future__ import annotations

import hashlib
import json

from lbproxy.demo.backend import pattern_bytes
from tests.harness import Reader, connect, get, request, simple_config


def echo(response) -> dict:
    assert response.status == 200, response.body[:200]
    return json.loads(response.body)


def test_roundrobin_over_two_servers(backends, proxy):
    apps = backends(2)
    p = proxy(simple_config([a.port for a in apps]))
    servers = [get(p.port).header("x-server") for _ in range(4)]
    assert servers == ["app1", "app2", "app1", "app2"]


def test_keep_alive_both_sides(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port]))
    with connect(p.port) as sock:
        reader = Reader(sock)
        for i in range(20):
            sock.sendall(f"GET /bytes/{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            response = reader.read_response()
            assert response.status == 200 and response.body == pattern_bytes(i)
    for _ in range(5):                       # new clients reuse the pooled connection
        assert get(p.port).status == 200
    assert app.stats.requests == 25
    assert app.stats.connections_opened == 1


def test_pipelined_requests_answered_in_order(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port]))
    with connect(p.port) as sock:
        sock.sendall(b"".join(f"GET /slow/{ms} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
                              for ms in (60, 0, 30)))
        reader = Reader(sock)
        bodies = [reader.read_response().body for _ in range(3)]
    assert bodies == [b"slept 60 ms\n", b"slept 0 ms\n", b"slept 30 ms\n"]


def test_chunked_both_ways(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port]))
    body = b"x" * 100_000
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7000]), body[i:i + 7000])
                      for i in range(0, len(body), 7000))
    raw = (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
           + chunks + b"0\r\n\r\n")
    data = echo(request(p.port, raw))
    assert data["body_length"] == len(body)
    assert data["body_sha256"] == hashlib.sha256(body).hexdigest()
    response = get(p.port, "/chunked/50000")
    assert response.header("transfer-encoding") == "chunked"
    assert response.body == pattern_bytes(50000)


def test_close_delimited_response(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port]))
    with connect(p.port) as sock:               # HTTP/1.1: re-chunked, connection kept
        reader = Reader(sock)
        sock.sendall(b"GET /close/3000 HTTP/1.1\r\nHost: t\r\n\r\n")
        response = reader.read_response()
        assert response.body == pattern_bytes(3000)
        assert response.header("transfer-encoding") == "chunked"
        sock.sendall(b"GET /bytes/5 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read_response().body == pattern_bytes(5)
    with connect(p.port) as sock:               # HTTP/1.0: delimited by close
        sock.sendall(b"GET /close/3000 HTTP/1.0\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        response = reader.read_response()
        assert response.body == pattern_bytes(3000)
        assert reader.closed()


def test_head_204_304(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port]))
    with connect(p.port) as sock:
        reader = Reader(sock)
        sock.sendall(b"HEAD /bytes/100 HTTP/1.1\r\nHost: t\r\n\r\n")
        head = reader.read_response(head_only=True)
        assert head.status == 200 and head.header("content-length") == "100"
        for status in (204, 304):
            sock.sendall(f"GET /status/{status} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            assert reader.read_response().status == status
        sock.sendall(b"GET /bytes/4 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read_response().body == pattern_bytes(4)   # nothing was left over


def test_expect_100_continue(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port]))
    with connect(p.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        reader = Reader(sock)
        assert reader._line() == b"HTTP/1.1 100 Continue"
        assert reader._line() == b""
        sock.sendall(b"hello")
        assert echo(reader.read_response())["body_length"] == 5


def test_forwarded_and_hop_by_hop_headers(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port]))
    raw = (b"GET /echo HTTP/1.1\r\nHost: shop.example:8080\r\nConnection: keep-alive, X-Secret\r\n"
           b"X-Secret: 1\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"
           b"Trailer: X-T\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n"
           b"X-Keep: yes\r\n\r\n")
    headers = {k.lower(): v for k, v in echo(request(p.port, raw))["headers"]}
    for hop in ("connection", "x-secret", "keep-alive", "proxy-connection", "te", "trailer"):
        assert hop not in headers
    assert headers["x-keep"] == "yes"
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "shop.example:8080"


def test_request_forwarded_unchanged(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port]))
    data = echo(request(p.port, b"GET /echo?a=%2F..%2F&b=1 HTTP/1.1\r\nHost: t\r\n"
                                b"X-Case-Kept: AbC\r\n\r\n"))
    assert data["url"] == "/echo?a=%2F..%2F&b=1"
    assert ["X-Case-Kept", "AbC"] in data["headers"]


def test_response_hop_by_hop_removed(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port]))
    response = get(p.port, "/headers?Connection=X-Internal&X-Internal=1&Keep-Alive=5&X-Ok=1")
    assert response.header("x-ok") == "1"
    assert response.header("x-internal") is None
    assert response.header("keep-alive") is None
