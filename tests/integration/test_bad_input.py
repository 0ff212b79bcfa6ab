"""Every bad-input row of the status table (docs/configuration.md, "What clients see"):
the status, the close, and that the server saw nothing. Raw bytes over a real socket."""

from __future__ import annotations

import pytest

from tests.harness import Reader, connect, simple_config

BAD_REQUESTS = {
    "content-length and transfer-encoding": (
        400, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "duplicate content-length": (
        400, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
    "invalid content-length": (
        400, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3x\r\n\r\nabc"),
    "negative content-length": (
        400, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n"),
    "invalid chunk size": (
        400, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
    "obs-fold": (400, b"GET / HTTP/1.1\r\nHost: t\r\nX-A: b\r\n c\r\n\r\n"),
    "space before colon": (400, b"GET / HTTP/1.1\r\nHost : t\r\n\r\n"),
    "bare CR": (400, b"GET / HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n"),
    "bare LF": (400, b"GET / HTTP/1.1\nHost: t\n\n"),
    "missing host": (400, b"GET / HTTP/1.1\r\nX: y\r\n\r\n"),
    "two hosts": (400, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    "transfer-encoding in HTTP/1.0": (
        400, b"POST / HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "transfer-encoding gzip": (
        501, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n"),
    "transfer-encoding gzip, chunked": (
        501, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    "invalid method": (400, b"G@T / HTTP/1.1\r\nHost: t\r\n\r\n"),
    "space in target": (400, b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n"),
    "NUL in header": (400, b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n"),
    "CONNECT": (501, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
    "header over max_header_size": (
        431, b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"),
    "too many headers": (
        431, b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(30))
             + b"\r\n"),
    "body over max_body_size": (
        413, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n" + b"a" * 2000),
    "chunked body over max_body_size": (
        413, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"7d0\r\n" + b"a" * 2000 + b"\r\n0\r\n\r\n"),
}

LIMITS = {"limits": {"max_header_size": "4k", "max_headers": 20, "max_body_size": 1000}}


@pytest.fixture
def limited(backends, proxy):
    (app,) = backends(1)
    return app, proxy(simple_config([app.port], **LIMITS))


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_is_refused_before_any_server(limited, case):
    app, p = limited
    status, raw = BAD_REQUESTS[case]
    with connect(p.port) as sock:
        sock.sendall(raw)
        reader = Reader(sock)
        response = reader.read_response()
        assert response.status == status
        assert response.header("connection") == "close"
        assert b"Traceback" not in response.body
        assert reader.closed()
    assert app.stats.requests == 0


def test_bad_request_after_a_good_one_on_the_same_connection(limited):
    app, p = limited
    with connect(p.port) as sock:
        sock.sendall(b"GET /slow/50 HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost : t\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_response().status == 200
        assert reader.read_response().status == 400
        assert reader.closed()
    assert app.stats.requests == 1


def test_head_split_across_packets_over_the_limit(limited):
    app, p = limited
    with connect(p.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Long: ")
        for _ in range(20):                 # 20 KB of one header value, never finished
            try:
                sock.sendall(b"a" * 1024)
            except (BrokenPipeError, ConnectionResetError):
                break
        reader = Reader(sock)
        assert reader.read_response().status == 431
    assert app.stats.requests == 0


def test_oversized_header_in_a_pipelined_request(limited):
    app, p = limited
    with connect(p.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
                     b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_response().status == 200
        assert reader.read_response().status == 431
        assert reader.closed()
    assert app.stats.requests == 1
