"""The demo backend over real sockets on 127.0.0.1: framing, keep-alive, pipelining, controls."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httptools
import pytest
import uvloop

from lbproxy.demo.backend import BackendThread, pattern_bytes, start_backend

TIMEOUT = 5.0


@dataclass
class Reply:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunks: int = 0

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> dict:
        return json.loads(self.body)


class Client:
    """A blocking HTTP/1.1 client on one connection; parses every reply the server sends."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.replies: list[Reply] = []
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._reply = Reply()

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def request(self, method: str, url: str, headers: str = "", body: bytes = b"") -> Reply:
        length = f"Content-Length: {len(body)}\r\n" if body else ""
        self.send(f"{method} {url} HTTP/1.1\r\nHost: test\r\n{headers}{length}\r\n".encode() + body)
        return self.read()

    def read(self) -> Reply:
        """The next complete reply; a close-delimited body ends at EOF."""
        while not self.replies:
            data = self.sock.recv(65536)
            if not data:
                self.closed = True
                if self._reply.status:           # headers seen: the body was close-delimited
                    self.replies.append(self._reply)
                    self._reply = Reply()
                    break
                raise ConnectionError("server closed the connection without a reply")
            self._parser.feed_data(data)
        return self.replies.pop(0)

    def wait_closed(self) -> bool:
        """True if the server closes the connection (EOF) within TIMEOUT."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._reply.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._reply.status = self._parser.get_status_code()

    def on_chunk_header(self) -> None:
        self._reply.chunks += 1

    def on_body(self, body: bytes) -> None:
        self._reply.body += body

    def on_message_complete(self) -> None:
        self.replies.append(self._reply)
        self._reply = Reply()


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


@pytest.fixture
def backend() -> Iterator[BackendThread]:
    with BackendThread(name="app1") as running:
        yield running


@pytest.fixture
def client(backend: BackendThread) -> Iterator[Client]:
    conn = Client(backend.port)
    yield conn
    conn.close()


def test_keep_alive_serves_two_requests_on_one_connection(backend: BackendThread, client: Client) -> None:
    first = client.request("GET", "/")
    second = client.request("GET", "/anything/else")
    assert (first.status, first.body) == (200, b"hello from app1\n")
    assert (second.status, second.body) == (200, b"hello from app1\n")
    assert first.header("Connection") == "keep-alive"
    assert first.header("X-Server") == "app1"
    assert backend.stats.connections_opened == 1
    assert backend.stats.requests == 2


def test_pipelined_requests_are_answered_in_order(client: Client) -> None:
    client.send(b"GET /slow/100 HTTP/1.1\r\nHost: t\r\n\r\nGET /status/201 HTTP/1.1\r\nHost: t\r\n\r\n"
                b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\nHost: t\r\n\r\n")
    replies = [client.read() for _ in range(3)]
    assert [r.status for r in replies] == [200, 201, 200]
    assert replies[0].body == b"slept 100 ms\n"
    assert replies[2].json()["url"] == "/echo"
    assert replies[2].header("Connection") == "close"
    assert client.wait_closed()


def test_chunked_response_has_several_chunks(client: Client) -> None:
    reply = client.request("GET", "/chunked/1000")
    assert reply.header("Transfer-Encoding") == "chunked"
    assert reply.header("Content-Length") is None
    assert reply.chunks >= 3
    assert reply.body == pattern_bytes(1000)
    assert client.request("GET", "/chunked/0").body == b""


def test_close_delimited_body_ends_with_the_connection(client: Client) -> None:
    client.send(b"GET /close/200000 HTTP/1.1\r\nHost: t\r\n\r\n")
    reply = client.read()
    assert reply.status == 200
    assert reply.header("Content-Length") is None and reply.header("Transfer-Encoding") is None
    assert reply.header("Connection") == "close"
    assert reply.body == pattern_bytes(200_000)
    assert client.closed


def test_echo_of_chunked_upload_reports_length_sha256_and_raw_headers(client: Client) -> None:
    parts = [os.urandom(1000), os.urandom(70_000), b"x"]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    client.send(b"POST /echo?q=1 HTTP/1.1\r\nHost: t\r\nX-MiXeD-Case: a\r\nx-dup: 1\r\nX-Dup: 2\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + framed)
    echo = client.read().json()
    body = b"".join(parts)
    assert echo["server"] == "app1"
    assert (echo["method"], echo["url"], echo["http_version"]) == ("POST", "/echo?q=1", "1.1")
    assert echo["headers"] == [["Host", "t"], ["X-MiXeD-Case", "a"], ["x-dup", "1"], ["X-Dup", "2"],
                               ["Transfer-Encoding", "chunked"]]
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_large_content_length_upload_is_counted(backend: BackendThread, client: Client) -> None:
    body = b"z" * (8 << 20)
    echo = client.request("POST", "/echo", body=body).json()
    assert echo["body_length"] == len(body)
    assert backend.stats.bytes_received > len(body)
    assert backend.stats.last_head is not None and backend.stats.last_head.header("content-length") == str(len(body))


def test_bytes_and_statuses(client: Client) -> None:
    big = client.request("GET", f"/bytes/{3 << 20}")
    assert big.header("Content-Length") == str(3 << 20) and big.body == pattern_bytes(3 << 20)
    assert client.request("GET", "/status/503").body == b"503 Service Unavailable\n"
    assert client.request("GET", "/status/99").status == 400
    assert client.request("GET", "/bytes/abc").status == 400


@pytest.mark.parametrize("request_line", [b"HEAD /bytes/10", b"GET /status/204", b"GET /status/304"])
def test_bodyless_replies_send_no_body(backend: BackendThread, request_line: bytes) -> None:
    # a body after these heads would be read as the start of the next (pipelined) reply
    with socket.create_connection(("127.0.0.1", backend.port), timeout=TIMEOUT) as sock:
        sock.sendall(request_line + b" HTTP/1.1\r\nHost: t\r\n\r\nGET /status/201 HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while data.count(b"\r\n\r\n") < 2:
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            data += chunk
    first, rest = data.split(b"\r\n\r\n", 1)
    assert rest.startswith(b"HTTP/1.1 201 Created\r\n")
    assert (b"Content-Length: 10" in first) == request_line.startswith(b"HEAD")


def test_headers_endpoint_sets_response_headers_but_not_framing(client: Client) -> None:
    reply = client.request("GET", "/headers?Set-Cookie=a%3D1&X-Hop=yes&Content-Length=999")
    assert reply.header("Set-Cookie") == "a=1"
    assert reply.header("X-Hop") == "yes"
    assert reply.header("Content-Length") == "3"
    assert client.request("GET", "/headers?X-Split=a%0d%0aInjected:%201").status == 400
    assert client.request("GET", "/headers?X-Latin=caf%E9").header("X-Latin") == "caf\u00e9"


def test_health_flips_down_and_up(backend: BackendThread, client: Client) -> None:
    assert client.request("GET", "/health").status == 200
    assert client.request("POST", "/health/down").status == 200
    assert (down := client.request("GET", "/health")).status == 503 and down.body == b"down\n"
    assert not backend.healthy
    assert client.request("GET", "/health/up").status == 405
    assert client.request("POST", "/health/up").status == 200
    assert client.request("GET", "/health").status == 200
    backend.healthy = False
    assert client.request("GET", "/health").status == 503


def test_stats_counts_requests_and_connections_but_not_itself(backend: BackendThread) -> None:
    for _ in range(3):
        conn = Client(backend.port)
        conn.request("GET", "/")
        conn.close()
    wait_until(lambda: backend.stats.connections_open == 0)
    probe = Client(backend.port)
    stats = probe.request("GET", "/_stats").json()
    probe.close()
    assert stats["server"] == "app1"
    assert stats["requests"] == 3
    assert stats["connections_opened"] == 4
    assert stats["connections_open"] == 1
    assert [h.url for h in backend.stats.heads] == ["/", "/", "/", "/_stats"]


def test_malformed_request_gets_400_and_close(client: Client) -> None:
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert client.read().status == 400
    assert client.wait_closed()


def read_head(sock: socket.socket) -> bytes:
    """Bytes up to the end of a response head (a test sends nothing that would follow it early)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"closed before the end of the head: {data!r}"
        data += piece
    return data


def test_websocket_upgrade_switches_to_an_echo(client: Client) -> None:
    # the key and accept value are RFC 6455's own example (section 1.3)
    client.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nearly")
    head, _, rest = read_head(client.sock).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    assert b"Content-Length" not in head
    echoed = rest
    while len(echoed) < len(b"early"):
        echoed += client.sock.recv(65536)
    assert echoed == b"early"                  # bytes sent right behind the head are echoed too
    for _ in range(16):                        # 1 MiB, a piece at a time: each comes back before the next
        piece = os.urandom(1 << 16)
        client.send(piece)
        back = b""
        while len(back) < len(piece):
            data = client.sock.recv(1 << 16)
            assert data, "closed mid-echo"
            back += data
        assert back == piece


def test_upgrade_elsewhere_is_answered_then_closed(client: Client) -> None:
    client.send(b"GET /other HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nmore")
    head = read_head(client.sock)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert client.wait_closed()


def test_error_rate_and_latency_spare_the_control_endpoints() -> None:
    # 1 s of latency against a 0.5 s bound: far apart, so a busy machine cannot blur them
    with BackendThread(name="bad", latency=1.0, error_rate=1.0) as backend:
        conn = Client(backend.port)
        started = time.monotonic()
        assert conn.request("GET", "/").status == 500
        assert time.monotonic() - started >= 1.0
        started = time.monotonic()
        assert conn.request("GET", "/health").status == 200
        assert time.monotonic() - started < 0.5
        conn.close()


def test_start_backend_in_process_and_close_drops_idle_connections() -> None:
    async def scenario() -> None:
        backend = await start_backend(name="inproc")
        assert backend.port != 0 and backend.name == "inproc"
        reader, writer = await asyncio.open_connection("127.0.0.1", backend.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert await asyncio.wait_for(reader.readexactly(18), TIMEOUT) == b"hello from inproc\n"
        assert backend.stats.requests == 1
        await asyncio.wait_for(backend.close(), TIMEOUT)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        writer.close()

    uvloop.run(scenario())


def test_start_backend_rejects_bad_options() -> None:
    with pytest.raises(ValueError):
        uvloop.run(start_backend(error_rate=2.0))
