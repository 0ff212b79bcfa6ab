"""TLS termination with SNI, TLS to servers, PROXY protocol, trusted proxies, WebSocket."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading

import aiohttp
import pytest
import trustme
import uvloop
from aiohttp import web

from tests.h2raw import RawH2
from tests.harness import Reader, cert_files, connect, get, request, simple_config, wait_for


def tls_get(port: int, ca: trustme.CA, sni: str | None, path: str = "/echo"):
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=sni) as sock:
            names = [v for k, v in sock.getpeercert()["subjectAltName"] if k == "DNS"]
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {sni or 'x'}\r\n\r\n".encode())
            return names, Reader(sock).read_response()


def test_tls_termination_picks_the_certificate_by_sni(ca, tmp_path, backends, proxy):
    (app,) = backends(1)
    config = simple_config([app.port], acls={"b_site": "ssl_fc_sni -i b.test"},
                           http_response=[{"set_header": {"name": "X-SNI",
                                                          "value": "%[ssl_fc_sni]"}}])
    port = int(config["frontends"]["web"]["bind"][0].rsplit(":", 1)[1])
    config["frontends"]["web"]["bind"] = [{"address": f"127.0.0.1:{port}", "tls": {
        "certificates": [cert_files(ca, tmp_path, "a.test"), cert_files(ca, tmp_path, "b.test")],
        "min_version": "TLSv1.2"}}]
    p = proxy(config)
    names, response = tls_get(p.port, ca, "b.test")
    assert names == ["b.test"]
    assert response.header("x-sni") == "b.test"
    headers = {k.lower(): v for k, v in json.loads(response.body)["headers"]}
    assert headers["x-forwarded-proto"] == "https"
    assert tls_get(p.port, ca, "a.test")[0] == ["a.test"]
    assert tls_get(p.port, ca, None)[0] == ["a.test"]          # no SNI: the first one
    with connect(p.port) as sock:                             # not TLS at all
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert Reader(sock).closed()
    wait_for(lambda: p.engine.frontends["web"].tls_handshake_failures >= 1)
    assert tls_get(p.port, ca, "b.test")[1].status == 200     # others are unaffected


def test_tls_config_errors_name_the_file(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "tls.yaml"
    path.write_text("frontends:\n  web:\n    bind:\n      - address: 127.0.0.1:1\n"
                    "        tls: {certificates: [{cert: missing.pem, key: missing.key}]}\n"
                    "    default_backend: app\nbackends:\n  app: {servers: []}\n")
    result = subprocess.run([sys.executable, "-m", "lbproxy", "check", "-c", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"{path}:5: frontends.web.bind[0].tls.certificates[0].cert: cannot read " \
           f"{tmp_path / 'missing.pem'}: No such file or directory" in result.stderr


class TLSServer:
    """A one-response HTTPS server on 127.0.0.1 (a server behind `tls:`)."""

    def __init__(self, ca: trustme.CA) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("app.internal", "127.0.0.1").configure_cert(context)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.context = context
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(raw, server_side=True) as sock:
                    sock.recv(65536)
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n"
                                 b"Connection: close\r\n\r\nsecure")
            except (ssl.SSLError, OSError):
                pass


def test_tls_to_servers_verifies_the_certificate(ca, tmp_path, proxy):
    server = TLSServer(ca)
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    good = simple_config([server.port])
    good["backends"]["app"]["servers"][0]["tls"] = {"verify": "required",
                                                    "sni": "app.internal", "ca": str(ca_path)}
    assert get(proxy(good).port).body == b"secure"
    untrusted = simple_config([server.port], backend={"retries": 0})
    untrusted["backends"]["app"]["servers"][0]["tls"] = {"verify": "required",
                                                         "sni": "app.internal"}
    assert get(proxy(untrusted).port).status == 503      # the system store does not know it


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\n",
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + socket.inet_aton("203.0.113.7")
    + socket.inet_aton("10.0.0.1") + (56324).to_bytes(2, "big") + (443).to_bytes(2, "big"),
])
def test_proxy_protocol_sets_src(backends, proxy, header):
    (app,) = backends(1)
    p = proxy(simple_config([app.port], accept_proxy=True,
                            acls={"blocked": "src 203.0.113.0/24"},
                            http_request=[{"deny": {"status": 403},
                                           "if": "blocked { path_beg /deny }"}]))
    response = request(p.port, header + b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    headers = {k.lower(): v for k, v in json.loads(response.body)["headers"]}
    assert headers["x-forwarded-for"] == "203.0.113.7"
    assert request(p.port, header + b"GET /deny HTTP/1.1\r\nHost: t\r\n\r\n").status == 403
    with connect(p.port) as sock:                         # no header: dropped
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert Reader(sock).closed()
    assert app.stats.requests == 1


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\n",
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + socket.inet_aton("203.0.113.7")
    + socket.inet_aton("10.0.0.1") + (56324).to_bytes(2, "big") + (443).to_bytes(2, "big"),
], ids=["v1", "v2"])
def test_proxy_protocol_before_tls(ca, tmp_path, backends, proxy, header):
    """Behind an L4 balancer: the PROXY header in clear, then the TLS handshake, on one
    bind; HTTP/1.1 and HTTP/2 (by ALPN) both see the balancer's client address."""
    (app,) = backends(1)
    config = simple_config([app.port], accept_proxy=True, timeouts={"http_request": "1s"})
    port = int(config["frontends"]["web"]["bind"][0].rsplit(":", 1)[1])
    config["frontends"]["web"]["bind"] = [{"address": f"127.0.0.1:{port}", "tls": {
        "certificates": [cert_files(ca, tmp_path, "a.test")]}}]
    p = proxy(config)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as raw:
        raw.sendall(header)
        with context.wrap_socket(raw, server_hostname="a.test") as sock:
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: a.test\r\n\r\n")
            h1 = Reader(sock).read_response()
    context.set_alpn_protocols(["h2"])
    client = RawH2(p.port, tls=context, preamble=header, server_hostname="a.test")
    h2 = client.response(client.request("/echo"))
    for response in (h1, h2):
        headers = {k.lower(): v for k, v in json.loads(response.body)["headers"]}
        assert headers["x-forwarded-for"] == "203.0.113.7"
        assert headers["x-forwarded-proto"] == "https"
    with connect(p.port) as sock:                 # TLS without a header: closed
        sock.sendall(b"\x16\x03\x01\x00\x05hello")
        assert Reader(sock).closed()
    with connect(p.port) as sock:                 # nothing at all: closed after http_request
        assert Reader(sock).closed(timeout=3)
    with connect(p.port) as sock:                 # a header, then no handshake: the same
        sock.sendall(header)
        assert Reader(sock).closed(timeout=3)
    assert p.call(lambda: p.engine.frontends["web"].rejected) == 2
    assert app.stats.requests == 2
    config["frontends"]["web"]["accept_proxy"] = False       # a reload changes the kind
    p.rewrite(config)
    assert asyncio.run_coroutine_threadsafe(p.engine.reload(), p.loop).result(5) == []
    assert tls_get(p.port, ca, "a.test")[1].status == 200


def test_x_forwarded_for_is_believed_only_from_trusted_proxies(backends, proxy):
    (app,) = backends(1)
    rules = {"acls": {"office": "src 198.51.100.0/24"},
             "http_request": [{"return": {"status": 200, "body": "office"}, "if": "office"}]}
    untrusted = proxy(simple_config([app.port], **rules))
    forged = {"X-Forwarded-For": "198.51.100.1"}
    assert get(untrusted.port, "/", forged).body != b"office"
    trusted = proxy(simple_config([app.port], forwarded={"trusted_proxies": ["127.0.0.0/8"]},
                                  **rules))
    assert get(trusted.port, "/", forged).body == b"office"
    # the client can prepend anything; only the entry the trusted proxy added counts
    chain = {"X-Forwarded-For": "198.51.100.1, 203.0.113.5"}
    assert get(trusted.port, "/", chain).body != b"office"


class EchoWebSocketServer:
    """An aiohttp WebSocket echo server on its own loop (a real RFC 6455 peer)."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.port = 0
        threading.Thread(target=lambda: uvloop.run(self._serve()), daemon=True).start()
        self.ready.wait(5)

    async def _serve(self) -> None:
        async def echo(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for message in ws:
                await ws.send_str("echo:" + message.data)
            return ws

        app = web.Application()
        app.router.add_get("/ws", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.ready.set()
        await asyncio.Event().wait()


def test_websocket_round_trip(proxy):
    server = EchoWebSocketServer()
    p = proxy(simple_config([server.port]))

    async def client() -> list[str]:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{p.port}/ws") as ws:
                replies = []
                for text in ("hello", "x" * 70000, "bye"):
                    await ws.send_str(text)
                    replies.append((await ws.receive(timeout=5)).data)
                return replies

    replies = asyncio.run(client())
    assert replies == ["echo:hello", "echo:" + "x" * 70000, "echo:bye"]
    assert p.engine.frontends["web"].responses[1] == 1


def test_upgrade_refused_by_the_server_is_a_normal_response(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port]))
    response = request(p.port, b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
                               b"Upgrade: websocket\r\n\r\n")
    assert response.status == 200
    headers = {k.lower(): v for k, v in json.loads(response.body)["headers"]}
    assert headers["upgrade"] == "websocket" and headers["connection"] == "upgrade"
