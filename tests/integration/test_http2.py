"""HTTP/2 to clients: real clients (curl, httpx) over h2c and TLS with ALPN, and frame-level
cases written by a raw client (tests/h2raw.py) for limits and abuse, each checked for the
exact answer and for another connection being served meanwhile."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess

import httpx
import pytest
from hyperframe.frame import HeadersFrame

from tests.h2raw import RawH2, request_headers
from tests.harness import Reader, connect, free_port, simple_config, wait_for

PROTOCOL_ERROR, REFUSED_STREAM, ENHANCE_YOUR_CALM, NO_ERROR = 0x1, 0x7, 0xB, 0x0


@pytest.fixture
def h2(backends, proxy, ca, tmp_path):
    """A proxy with an h2c bind and a TLS bind (h2 by ALPN) in front of a demo backend."""
    (app,) = backends(1)
    cert = ca.issue_cert("localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "site.pem"))
    config = simple_config([app.port], http2={"max_concurrent_streams": 10,
                                              "max_header_list_size": "16k"},
                           http_response=[{"set_header": {"name": "X-Ver",
                                                          "value": "%[req_ver]"}}])
    h2c, tls = free_port(), free_port()
    config["frontends"]["web"]["bind"] = [
        {"address": f"127.0.0.1:{h2c}", "h2c": True},
        {"address": f"127.0.0.1:{tls}",
         "tls": {"certificates": [{"cert": str(tmp_path / "site.pem"),
                                   "key": str(tmp_path / "site.pem")}]}}]
    p = proxy(config)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["h2"])
    return p, app, h2c, tls, context


def echo_of(response) -> dict:
    return json.loads(response.body)


def test_a_request_over_h2c_reaches_the_server_as_http11(h2):
    p, app, h2c, _, _ = h2
    client = RawH2(h2c)
    stream = client.request("/echo?x=1", extra=[("user-agent", "raw"), ("cookie", "a=1"),
                                                ("cookie", "b=2")])
    response = client.response(stream)
    assert response.status == 200 and response.header("x-ver") == "2"
    seen = echo_of(response)
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert seen["url"] == "/echo?x=1" and seen["http_version"] == "1.1"
    assert headers["host"] == "h" and headers["cookie"] == "a=1; b=2"
    assert headers["x-forwarded-proto"] == "http"
    assert p.engine.frontends["web"].h2_requests == 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_over_h2c_and_tls(h2, ca, tmp_path):
    _, _, h2c, tls, _ = h2
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    for args in (["--http2-prior-knowledge", f"http://127.0.0.1:{h2c}/echo"],
                 ["--http2", "--cacert", str(tmp_path / "ca.pem"),
                  f"https://localhost:{tls}/echo"]):
        done = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w",
                               "%{http_version} %{http_code}", "-d", "hello", *args],
                              capture_output=True, text=True, timeout=20)
        assert done.stdout == "2 200", (args, done.stderr)


def test_httpx_multiplexes_many_requests_on_one_connection(h2):
    _, app, _, tls, context = h2

    async def run() -> list[tuple[str, int, int]]:
        async with httpx.AsyncClient(http2=True, verify=context) as client:
            async def one(i: int) -> tuple[str, int, int]:
                body = b"x" * (i * 997)
                r = await client.post(f"https://localhost:{tls}/echo", content=body)
                return r.http_version, r.status_code, r.json()["body_length"]
            return await asyncio.gather(*(one(i) for i in range(40)))

    results = asyncio.run(run())
    assert results == [("HTTP/2", 200, i * 997) for i in range(40)]


def test_a_large_download_and_upload_stream_through(h2):
    _, _, _, tls, context = h2
    with httpx.Client(http2=True, verify=context, timeout=30) as client:
        down = client.get(f"https://localhost:{tls}/bytes/5000000")
        assert down.status_code == 200 and len(down.content) == 5_000_000
        up = client.post(f"https://localhost:{tls}/echo", content=b"y" * 3_000_000)
        assert up.json()["body_length"] == 3_000_000


def test_h1_only_bind_closes_on_the_preface(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port]))
    with connect(p.port) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_response().status == 400
        assert reader.closed()


def test_more_streams_than_allowed_are_refused_and_the_others_served(h2):
    _, _, h2c, _, _ = h2
    client = RawH2(h2c)
    slow = [client.request("/slow/500") for _ in range(10)]
    extra = client.request("/")
    assert client.response(extra).reset == REFUSED_STREAM
    assert all(client.response(s).status == 200 for s in slow)
    again = client.request("/")                       # room again once they finished
    assert client.response(again).status == 200


@pytest.mark.parametrize("headers", [
    [(":method", "GET"), (":scheme", "http"), (":authority", "h")],             # no :path
    request_headers(extra=[("X-Upper", "1")]),
    request_headers(extra=[("connection", "keep-alive")]),
    request_headers(extra=[("te", "gzip")]),
    request_headers(extra=[(":fake", "1")]),
    request_headers(extra=[("x-a", " padded")]),
    [("x-first", "1"), *request_headers()],                                     # pseudo last
], ids=["no-path", "upper-case", "connection", "te", "unknown-pseudo", "whitespace",
        "pseudo-after-regular"])
def test_a_malformed_request_is_reset_and_the_connection_goes_on(h2, headers):
    p, app, h2c, _, _ = h2
    client = RawH2(h2c)
    bad = client.new_id()
    client.headers(bad, headers)
    assert client.response(bad).reset == PROTOCOL_ERROR
    good = client.request("/")
    assert client.response(good).status == 200
    assert app.stats.requests == 1


def test_content_length_contradicted_by_data_is_a_stream_error(h2):
    _, app, h2c, _, _ = h2
    client = RawH2(h2c)
    stream = client.new_id()
    client.headers(stream, request_headers("/echo", "POST", extra=[("content-length", "5")]),
                   end_stream=False)
    client.data(stream, b"abc", end_stream=True)
    assert client.response(stream).reset == PROTOCOL_ERROR
    good = client.request("/")
    assert client.response(good).status == 200


def test_header_list_over_the_limit_gets_431(h2):
    _, app, h2c, _, _ = h2
    client = RawH2(h2c)
    stream = client.request("/", extra=[("x-big", "v" * 20000)])
    assert client.response(stream).status == 431
    assert app.stats.requests == 0


def assert_calm_and_others_served(client: RawH2, h2c: int, reason: str, p) -> None:
    goaway = client.wait_goaway()
    assert goaway.error_code == ENHANCE_YOUR_CALM and reason.encode() in goaway.additional_data
    assert client.wait_closed()
    other = RawH2(h2c)
    stream = other.request("/")
    assert other.response(stream).status == 200
    assert p.engine.frontends["web"].h2_abuse.get(reason, 0) >= 1


def test_rapid_reset_is_stopped(h2):
    p, _, h2c, _, _ = h2
    client = RawH2(h2c)
    for _ in range(300):
        stream = client.request("/slow/1000")
        client.rst(stream)
    assert_calm_and_others_served(client, h2c, "rapid_reset", p)


def test_cancelled_grpc_like_clients_are_not_cut_off(h2):
    """Resets within the allowance (100 more than completed streams) are fine."""
    p, _, h2c, _, _ = h2
    client = RawH2(h2c)
    for _ in range(50):
        client.rst(client.request("/slow/1000"))
    stream = client.request("/")
    assert client.response(stream).status == 200 and client.goaway is None


def test_continuation_flood_is_stopped(h2):
    p, _, h2c, _, _ = h2
    client = RawH2(h2c)
    stream = client.new_id()
    client.headers(stream, request_headers(), end_stream=True, end_headers=False)
    for _ in range(200):
        client.continuation(stream, b"")
    assert_calm_and_others_served(client, h2c, "continuation", p)


def test_hpack_bomb_is_stopped(h2):
    p, _, h2c, _, _ = h2
    client = RawH2(h2c)
    stream = client.new_id()
    frame = HeadersFrame(stream)
    # one 4000-byte field enters the dynamic table, then is referenced 4000 times (index 62)
    big = client.encoder.encode([("x-bomb", "b" * 4000)])
    frame.data = client.block(request_headers()) + big + b"\xbe" * 4000
    frame.flags = {"END_STREAM", "END_HEADERS"}
    client.frame(frame)
    assert_calm_and_others_served(client, h2c, "hpack_bomb", p)


@pytest.mark.parametrize("flood,reason", [
    (lambda c: c.ping(), "ping_flood"),
    (lambda c: c.settings(), "settings_flood"),
    (lambda c: c.priority(c.new_id()), "priority_flood"),
    (lambda c: c.data(1, b""), "empty_data_flood"),
    (lambda c: c.window_update(0, 1), "window_update_flood"),
])
def test_floods_are_stopped(h2, flood, reason):
    p, _, h2c, _, _ = h2
    client = RawH2(h2c)
    if reason == "empty_data_flood":
        client.headers(1, request_headers("/slow/2000", "POST"), end_stream=False)
        client.next_id = 3
    for _ in range(1500):
        flood(client)
    assert_calm_and_others_served(client, h2c, reason, p)


def test_a_client_reset_cancels_the_server_request(h2):
    p, app, h2c, _, _ = h2
    client = RawH2(h2c)
    stream = client.request("/slow/3000")
    backend = p.engine.backends["app"]
    wait_for(lambda: p.call(lambda: backend.in_flight) == 1)
    client.rst(stream)
    wait_for(lambda: p.call(lambda: backend.in_flight) == 0, timeout=2)


def test_graceful_stop_sends_goaway_and_lets_streams_finish(h2):
    p, _, h2c, _, _ = h2
    client = RawH2(h2c)
    stream = client.request("/slow/500")
    wait_for(lambda: p.call(lambda: p.engine.backends["app"].in_flight) == 1)
    p.loop.call_soon_threadsafe(lambda: p.loop.create_task(p.process.stop(grace=5)))
    goaway = client.wait_goaway()
    assert goaway.error_code == NO_ERROR and goaway.last_stream_id == stream
    assert client.response(stream).status == 200
    assert client.wait_closed()


def test_every_stream_gets_one_log_line(backends, proxy, tmp_path):
    """Served, malformed (reset), over the header limit (431), reset by the client."""
    (app,) = backends(1)
    log_path = tmp_path / "access.log"
    config = simple_config([app.port], http2={"max_header_list_size": "16k"},
                           **{"global": {"log": {"access": str(log_path)}}})
    h2c = free_port()
    config["frontends"]["web"]["bind"] = [{"address": f"127.0.0.1:{h2c}", "h2c": True}]
    p = proxy(config)
    client = RawH2(h2c)
    assert client.response(client.request("/ok")).status == 200
    bad = client.new_id()
    client.headers(bad, request_headers("/Bad", extra=[("Upper", "x")]))
    assert client.response(bad).reset == PROTOCOL_ERROR
    assert client.response(client.request("/big", extra=[("x-big", "v" * 20000)])).status == 431
    slow = client.request("/slow/3000")
    wait_for(lambda: p.call(lambda: p.engine.backends["app"].in_flight) == 1)
    client.rst(slow)
    wait_for(lambda: p.call(lambda: p.engine.backends["app"].in_flight) == 0)
    p.stop()
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(line["status"], line["termination"], line["error"], line["proto"])
            for line in lines] == [(200, "--", None, "2"), (-1, "PR", "bad-request", "2"),
                                   (431, "PR", "header-too-large", "2"),
                                   (-1, "CH", "client-closed", "2")]
    assert lines[0]["url"] == "/ok" and lines[3]["url"] == "/slow/3000"


def test_the_close_after_a_reload_goaway_loses_no_response_data(h2):
    """After GOAWAY the last stream's end closes the connection; the client keeps sending
    WINDOW_UPDATEs for the data it reads. A plain close() turns those into a reset that
    drops what the kernel still had to send: the close must linger instead."""
    p, _, h2c, _, _ = h2
    size = 8 << 20                           # more than the kernel buffers between us hold
    client = RawH2(h2c, settings={0x4: 2**31 - 1})
    client.window_update(0, 2**31 - 1 - 65535)
    stream = client.request(f"/bytes/{size}")
    client.wait(lambda: stream in client.responses)
    asyncio.run_coroutine_threadsafe(p.engine.reload(), p.loop).result(5)
    response = client.response(stream, timeout=30)
    assert response.reset is None
    assert len(response.body) == size
    assert client.goaway is not None
