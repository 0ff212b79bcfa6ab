"""Response compression through a real proxy: each algorithm's output decompressed and
compared, negotiation by Accept-Encoding q-values, every skip rule, the head edits
(Content-Length, Vary, ETag), streaming, HTTP/2 clients, and bounded memory."""

from __future__ import annotations

import gzip
import http.client
import signal
import zlib

import brotli
import httpx
import pytest
import zstandard

from tests.harness import Reader, connect, free_port, simple_config, write_config
from tests.origin import Origin, body_of
from tests.process import LbproxyProcess

DECODE = {"gzip": gzip.decompress, "br": brotli.decompress,
          "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data)}
TEXT_TYPES = ["text/*", "application/json"]


@pytest.fixture
def origin():
    with Origin() as server:
        yield server


def compressing_proxy(proxy, origin, **compression):
    settings = {"algorithms": ["zstd", "br", "gzip"], "types": TEXT_TYPES, "min_size": "1k",
                **compression}
    return proxy(simple_config([origin.port], compression=settings))


def fetch(port: int, path: str, accept: str | None = None, method: str = "GET",
          headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sent = {**({"Accept-Encoding": accept} if accept is not None else {}), **(headers or {})}
    conn.request(method, path, headers=sent)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_each_algorithm_compresses_and_decompresses_to_the_same_bytes(proxy, origin, coding):
    p = compressing_proxy(proxy, origin)
    for query in ("size=50000", "size=50000&chunks=7"):        # a known length, and streamed
        response, body = fetch(p.port, f"/page?{query}", accept=coding)
        assert response.status == 200
        assert response.getheader("Content-Encoding") == coding
        assert response.getheader("Content-Length") is None
        assert response.getheader("Vary") == "Accept-Encoding"
        assert DECODE[coding](body) == body_of(50000)
        assert len(body) < 5000                                  # it is very compressible


@pytest.mark.parametrize(("accept", "chosen"), [
    ("gzip, br, zstd", "zstd"),                        # ties: the configured order
    ("gzip;q=0.5, br;q=0.9", "br"),                    # the client's highest q-value
    ("gzip", "gzip"),
    ("x-gzip", "gzip"),
    ("*;q=0.2, zstd;q=0", "br"),                       # * for the others; q=0 refuses
    ("deflate, identity", None),
    ("gzip;q=0", None),
    ("GZIP;Q=1.0", "gzip"),
    ("", None),
])
def test_the_coding_follows_accept_encoding(proxy, origin, accept, chosen):
    p = compressing_proxy(proxy, origin)
    response, body = fetch(p.port, "/page?size=5000", accept=accept)
    assert response.getheader("Content-Encoding") == chosen
    assert response.getheader("Vary") == "Accept-Encoding"    # compressible either way
    if chosen is None:
        assert body == body_of(5000) and response.getheader("Content-Length") == "5000"


def test_no_accept_encoding_is_no_compression(proxy, origin):
    p = compressing_proxy(proxy, origin)
    response, body = fetch(p.port, "/page?size=5000")
    assert response.getheader("Content-Encoding") is None and body == body_of(5000)


@pytest.mark.parametrize("query", [
    "size=5000&h=Content-Encoding:gzip",                  # already encoded
    "size=5000&h=Cache-Control:no-transform",
    "size=5000&status=206",
    "size=5000&status=204",
    "size=500",                                           # a known length under min_size
    "size=5000&type=image/png",                           # a type not listed
    "size=5000&type=",                                    # no usable type
], ids=["content-encoding", "no-transform", "206", "204", "small", "type", "no-type"])
def test_responses_that_are_not_compressed(proxy, origin, query):
    p = compressing_proxy(proxy, origin)
    response, body = fetch(p.port, f"/page?{query}", accept="gzip")
    assert response.getheader("Content-Encoding") in (None, "gzip")
    assert response.getheader("Vary") is None
    if "Content-Encoding" not in query:
        assert response.getheader("Content-Encoding") is None


def test_head_304_and_client_no_transform_are_not_compressed(proxy, origin):
    p = compressing_proxy(proxy, origin)
    head, _ = fetch(p.port, "/page?size=5000", accept="gzip", method="HEAD")
    assert head.getheader("Content-Encoding") is None
    not_modified, _ = fetch(p.port, '/page?size=5000&etag="v1"', accept="gzip",
                            headers={"If-None-Match": '"v1"'})
    assert not_modified.status == 304 and not_modified.getheader("Content-Encoding") is None
    asked, body = fetch(p.port, "/page?size=5000", accept="gzip",
                        headers={"Cache-Control": "no-transform"})
    assert asked.getheader("Content-Encoding") is None and body == body_of(5000)


def test_vary_is_extended_and_a_strong_etag_becomes_weak(proxy, origin):
    p = compressing_proxy(proxy, origin)
    response, _ = fetch(p.port, '/page?size=5000&h=Vary:Cookie&etag="abc"', accept="br")
    assert response.getheader("Vary") == "Cookie, Accept-Encoding"
    assert response.getheader("ETag") == 'W/"abc"'
    weak, _ = fetch(p.port, '/page?size=5000&etag=W/"w"', accept="br")
    assert weak.getheader("ETag") == 'W/"w"'
    identity, _ = fetch(p.port, '/page?size=5000&etag="abc"', accept="identity")
    assert identity.getheader("ETag") == '"abc"'                # not compressed: unchanged


def test_the_backends_setting_replaces_the_frontends(proxy, origin):
    config = simple_config([origin.port], compression={"algorithms": ["gzip"],
                                                       "types": ["text/*"]},
                           backend={"compression": {"algorithms": ["br"],
                                                    "types": ["application/json"],
                                                    "level": {"br": 9}}})
    p = proxy(config)
    text, _ = fetch(p.port, "/page?size=5000", accept="gzip, br")
    assert text.getheader("Content-Encoding") is None          # text/* was the frontend's
    json_, body = fetch(p.port, "/page?size=5000&type=application/json", accept="gzip, br")
    assert json_.getheader("Content-Encoding") == "br"
    assert brotli.decompress(body) == body_of(5000)


def test_a_slow_servers_first_piece_reaches_the_client_compressed(proxy, origin):
    p = compressing_proxy(proxy, origin)
    with connect(p.port, timeout=10) as sock:
        sock.sendall(b"GET /page?size=40000&chunks=4&hold=1 HTTP/1.1\r\nHost: t\r\n"
                     b"Accept-Encoding: gzip\r\n\r\n")
        reader = Reader(sock)
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        received = b""
        while len(received) < 10000:              # the first piece, before the rest exists
            if b"\r\n\r\n" in reader.buf:
                head, _, chunks = reader.buf.partition(b"\r\n\r\n")
                received = decoder.decompress(_dechunk(chunks))
                decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
            if len(received) < 10000:
                reader._fill()                    # noqa: SLF001
        assert received == body_of(40000)[:10000]
        origin.release()
        sock.settimeout(10)
        while not reader.buf.endswith(b"0\r\n\r\n"):
            reader._fill()                        # noqa: SLF001
    head, _, chunks = reader.buf.partition(b"\r\n\r\n")
    assert gzip.decompress(_dechunk(chunks)) == body_of(40000)


def _dechunk(data: bytes) -> bytes:
    """The complete chunks of `data`, joined."""
    out = b""
    while b"\r\n" in data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0 or len(rest) < size + 2:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


def test_http2_clients_get_compressed_responses(proxy, origin):
    config = simple_config([origin.port], compression={"types": TEXT_TYPES})
    h2c = free_port()
    config["frontends"]["web"]["bind"].append({"address": f"127.0.0.1:{h2c}", "h2c": True})
    proxy(config)
    with httpx.Client(http1=False, http2=True) as client:
        response = client.get(f"http://127.0.0.1:{h2c}/page?size=20000",
                              headers={"Accept-Encoding": "gzip"})
    assert response.http_version == "HTTP/2"
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == body_of(20000)                # httpx decoded it


def test_a_100_mb_response_streams_compressed_in_bounded_memory(tmp_path, origin):
    config = simple_config([origin.port], compression={"algorithms": ["gzip"],
                                                       "types": TEXT_TYPES})
    port = int(config["frontends"]["web"]["bind"][0].rsplit(":", 1)[1])
    path = write_config(config, str(tmp_path))
    size = 100 * 1024 * 1024
    with LbproxyProcess("run", "-c", path, wait_port=port) as lb:
        rss_before = peak = lb.rss_kb()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", f"/big?size={size}&chunks=1600", headers={"Accept-Encoding": "gzip"})
        response = conn.getresponse()
        assert response.getheader("Content-Encoding") == "gzip"
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        total = 0
        while piece := response.read(1 << 20):
            total += len(decoder.decompress(piece))
            peak = max(peak, lb.rss_kb())
        conn.close()
        lb.signal(signal.SIGTERM)
        assert lb.wait() == 0
    assert total == size
    assert peak - rss_before < 30 * 1024, f"RSS grew {peak - rss_before} KB"
