"""One probe on real sockets: verdicts of tcp and http checks, Unix sockets, host names, timeouts."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest
import uvloop

from lbproxy.config.schema import Address
from lbproxy.health import probe as probe_module
from lbproxy.health.probe import probe
from tests.harness import free_port

REQUEST = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


class Answering:
    """Accepts connections, reads the request and answers `chunks` (with a pause between
    them), then closes; or, with `chunks` None, never answers."""

    def __init__(self, chunks: list[bytes] | None, family: int = socket.AF_INET) -> None:
        self.chunks = chunks
        if family == socket.AF_UNIX:
            self.path = os.path.join(tempfile.mkdtemp(), "s.sock")
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(self.path)
            self.sock.listen()
        else:
            self.sock = socket.create_server(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn = self.sock.accept()[0]
            except OSError:
                return
            self.conns.append(conn)
            if self.chunks is None:
                continue
            try:
                conn.recv(65536)
                for chunk in self.chunks:
                    conn.sendall(chunk)
                    time.sleep(0.02)
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def serve() -> Iterator:
    started: list[Answering] = []

    def start(chunks: list[bytes] | None, family: int = socket.AF_INET) -> Answering:
        started.append(Answering(chunks, family))
        return started[-1]

    yield start
    for server in started:
        server.close()


def check(address: Address, request: bytes | None = REQUEST, timeout: float = 2.0) -> tuple[bool, str]:
    return uvloop.run(probe(address, timeout, request, (200, 399)))


@pytest.mark.parametrize(("chunks", "verdict"), [
    ([b"HTTP/1.1 204 No Content\r\n\r\n"], (True, "Layer7 check passed (204)")),
    ([b"HTTP/1.1 2", b"00 OK\r\nContent-Length: 0\r\n\r\n"], (True, "Layer7 check passed (200)")),
    ([b"HTTP/1.0 503 Unavailable\r\n\r\n"], (False, "Layer7 wrong status 503")),
    ([], (False, "Layer7 invalid response: connection closed")),
    ([b"SSH-2.0-OpenSSH\r\n"], (False, "Layer7 invalid response")),
])
def test_http_verdicts(serve, chunks: list[bytes], verdict: tuple[bool, str]) -> None:
    server = serve(chunks)
    assert check(Address("127.0.0.1", server.port)) == verdict


def test_refused_tcp_and_http() -> None:
    closed = Address("127.0.0.1", free_port())
    assert check(closed, None) == (False, "Layer4 connection refused")
    assert check(closed) == (False, "Layer4 connection refused")


def test_tcp_check_passes_on_a_listening_port(serve) -> None:
    assert check(Address("127.0.0.1", serve(None).port), None) == (True, "Layer4 check passed")


def test_without_epoll_each_socket_is_the_loops(serve, monkeypatch) -> None:
    """Other Unix systems: the same verdicts with the loop's own add_writer/add_reader."""
    monkeypatch.setattr(probe_module, "EPOLL", False)
    answering = serve([b"HTTP/1.1 200 OK\r\n\r\n"])
    assert check(Address("127.0.0.1", answering.port)) == (True, "Layer7 check passed (200)")
    assert check(Address("127.0.0.1", serve(None).port), None) == (True, "Layer4 check passed")
    closed = Address("127.0.0.1", free_port())
    assert check(closed, None) == (False, "Layer4 connection refused")


def test_host_names_are_resolved(serve) -> None:
    server = serve([b"HTTP/1.1 200 OK\r\n\r\n"])
    assert check(Address("localhost", server.port)) == (True, "Layer7 check passed (200)")


def test_unix_sockets(serve) -> None:
    server = serve([b"HTTP/1.1 200 OK\r\n\r\n"], socket.AF_UNIX)
    assert check(Address("", 0, server.path)) == (True, "Layer7 check passed (200)")
    assert check(Address("", 0, server.path), None) == (True, "Layer4 check passed")
    missing = Address("", 0, server.path + ".gone")
    assert check(missing, None) == (False, "Layer4 connection problem: No such file or directory")


def test_a_silent_server_is_cut_at_the_timeout_and_hung_up_on(serve) -> None:
    server = serve(None)
    started = time.monotonic()
    assert check(Address("127.0.0.1", server.port), timeout=0.2) == (False, "Layer7 timeout")
    assert 0.15 < time.monotonic() - started < 1.5
    conn = server.conns[0]
    conn.settimeout(2.0)
    with pytest.raises(ConnectionResetError):   # closed with a reset (no TIME_WAIT left)
        while conn.recv(65536):
            pass
