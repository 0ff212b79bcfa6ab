"""A connection closed while the client is still sending its request lingers: the
response, then a FIN, and what the client still sends is read and dropped. Closed at
once, the kernel would answer those bytes with a reset, and a reset can destroy the
response before the client reads it."""

from __future__ import annotations

import socket
import threading

from tests.harness import Reader, connect, simple_config, wait_for

BODY = 4 * 1024 * 1024


class EarlyAnswer:
    """A server that answers 200 as soon as it has a request head, then reads and drops
    the body at its own pace, as nginx's `return` does."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    @staticmethod
    def _one(conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
            while conn.recv(65536):
                pass

    def close(self) -> None:
        self.listener.close()


def answered_mid_upload(port: int, head: bytes) -> tuple[socket.socket, Reader]:
    """Send `head` and the first 64 KiB of its body, then read the response, which comes
    before the rest of the body: the connection and its reader."""
    sock = connect(port, timeout=10)
    sock.sendall(head + b"x" * 65536)
    return sock, Reader(sock)


def test_a_response_before_the_end_of_the_upload_reaches_the_client_whole(proxy):
    server = EarlyAnswer()
    try:
        p = proxy(simple_config([server.port]))
        sock, reader = answered_mid_upload(
            p.port, b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % BODY)
        with sock:
            response = reader.read_response()
            assert (response.status, response.body) == (200, b"early")
            assert response.header("connection") == "close"
            sock.sendall(b"x" * (BODY - 65536))   # read and dropped: no reset
            assert reader.closed(timeout=10) and reader.buf == b""   # the FIN came first
        wait_for(lambda: p.engine.frontends["web"].connections == 0)
    finally:
        server.close()


def test_a_refused_upload_gets_its_413_and_a_fin(backends, proxy):
    (app,) = backends(1)
    p = proxy(simple_config([app.port], limits={"max_body_size": 1000}))
    sock, reader = answered_mid_upload(
        p.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % BODY)
    with sock:
        assert reader.read_response().status == 413
        sock.sendall(b"x" * (BODY - 65536))
        assert reader.closed(timeout=10) and reader.buf == b""
    assert app.stats.requests == 0                # nothing of it reached the server


def test_a_client_that_goes_quiet_is_closed_after_the_linger(backends, proxy):
    """The linger ends when the client is quiet for LINGER s (or after LINGER_MAX s)."""
    (app,) = backends(1)
    p = proxy(simple_config([app.port], limits={"max_body_size": 1000}))
    with connect(p.port, timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        assert Reader(sock).read_response().status == 413
        sock.sendall(b"x" * 2000)                 # more of the body, then silence
        wait_for(lambda: p.engine.frontends["web"].connections == 0, timeout=10)
    with connect(p.port) as sock:                 # the proxy serves on
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert Reader(sock).read_response().status == 200
