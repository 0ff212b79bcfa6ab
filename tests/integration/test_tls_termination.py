"""TLS termination: what a client sees of it through the proxy (both variants), and the
compiled layer that does it without asyncio's TLS (lbproxy/proxy/tls_layer.pyx) on its
own, under the cases a proxy meets: flow control, close_notify either way, garbage and
a handshake that never ends."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import select
import socket
import ssl
import threading
import time

import pytest
import trustme
import uvloop

from lbproxy.config.schema import Address
from lbproxy.proxy.listener import Listener, bind_socket
from lbproxy.proxy.tls import c_termination
from tests.harness import Reader, cert_files, connect, simple_config, tls_request, wait_for
from tests.loop_thread import LoopThread

PAYLOAD = bytes(range(256)) * 16384          # 4 MiB


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(context)
    return context


def tls_connect(port: int, ca: trustme.CA) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    # ragged EOFs raise: a clean end must come with close_notify
    return client_context(ca).wrap_socket(raw, server_hostname="localhost",
                                          suppress_ragged_eofs=False)


# --- through the proxy --------------------------------------------------------------------

def tls_config(servers: list[int], ca: trustme.CA, tmp_path, **options) -> dict:
    """simple_config (with `options`) with TLS on its bind (a certificate for localhost
    from `ca`)."""
    config = simple_config(servers, **options)
    port = int(config["frontends"]["web"]["bind"][0].rsplit(":", 1)[1])
    config["frontends"]["web"]["bind"] = [{"address": f"127.0.0.1:{port}", "tls": {
        "certificates": [cert_files(ca, tmp_path, "localhost")]}}]
    return config


def test_keep_alive_pipelining_and_a_large_upload_over_tls(ca, tmp_path, backends, proxy):
    (app,) = backends(1)
    config = tls_config([app.port], ca, tmp_path)
    p = proxy(config)
    with tls_connect(p.port, ca) as sock:
        reader = Reader(sock)
        for _ in range(5):
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            assert reader.read_response().status == 200
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n" * 3)      # one record, three
        assert [reader.read_response().status for _ in range(3)] == [200, 200, 200]
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                     % len(PAYLOAD) + PAYLOAD)
        response = reader.read_response()
        assert response.status == 200
        assert hashlib.sha256(PAYLOAD).hexdigest().encode() in response.body
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert reader.read_response().status == 200
        assert sock.recv(1) == b""               # close_notify, then the FIN
    assert p.engine.frontends["web"].tls_handshake_failures == 0


def test_a_handshake_must_finish_within_http_request(ca, tmp_path, backends, proxy):
    """A client that connects and stalls in (or before) the handshake holds its slot for
    the frontend's http_request timeout, not asyncio's 60 s; the bind goes on serving."""
    (app,) = backends(1)
    config = tls_config([app.port], ca, tmp_path)
    config["frontends"]["web"]["timeouts"] = {"http_request": "300ms"}
    p = proxy(config)
    with connect(p.port) as silent, connect(p.port) as stalled:
        stalled.sendall(b"\x16\x03\x01\x02\x00\x01")              # half a ClientHello
        assert Reader(silent).closed(timeout=5.0)
        assert Reader(stalled).closed(timeout=1.0)
    with tls_connect(p.port, ca) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert Reader(sock).read_response().status == 200


def test_maxconn_holds_new_tls_clients_in_the_backlog(ca, tmp_path, backends, proxy):
    """At maxconn the bind stops accepting: a new client's handshake waits in the
    backlog, and completes as soon as a connection closes."""
    (app,) = backends(1)
    p = proxy(tls_config([app.port], ca, tmp_path, maxconn=1))
    first = tls_connect(p.port, ca)
    waiting = client_context(ca).wrap_socket(connect(p.port), server_hostname="localhost",
                                             do_handshake_on_connect=False)
    try:
        first.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert Reader(first).read_response().status == 200
        waiting.settimeout(0.5)
        with pytest.raises(TimeoutError):
            waiting.do_handshake()             # no ServerHello while one is open...
        first.close()
        waiting.settimeout(5)
        waiting.do_handshake()                 # ...and served once it closed
        waiting.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert Reader(waiting).read_response().status == 200
    finally:
        first.close()
        waiting.close()


def test_session_tickets_expire_at_the_hourly_key_change(ca, tmp_path, backends, proxy,
                                                         monkeypatch):
    """The proxy changes its ticket keys at each period's end (an hour; a second here): a
    session from before is not resumed after it, a new one is."""
    from lbproxy.proxy import openssl_ctx

    monkeypatch.setattr(openssl_ctx, "TICKET_KEY_LIFETIME", 1.0)
    (app,) = backends(1)
    config = tls_config([app.port], ca, tmp_path)
    p = proxy(config)
    context = client_context(ca)
    _, before = tls_request(p.port, context)
    period = int(time.time())
    wait_for(lambda: time.time() > period + 1.3)           # the next period, keys changed
    assert not tls_request(p.port, context, before)[0]
    for _ in range(3):                # a new session resumes (unless a period ends between)
        period = int(time.time())
        resumed = tls_request(p.port, context, tls_request(p.port, context)[1])[0]
        if resumed or int(time.time()) == period:
            break
    assert resumed


# --- the compiled layer on its own ----------------------------------------------------------

compiled_only = pytest.mark.skipif(c_termination() is None,
                                   reason="the compiled TLS layer is not built here")


class Recorder(asyncio.Protocol):
    """The client protocol on a C TLS connection: records what it hears and echoes data
    back (answers "bye" with "bye!" and closes, "flood" with PAYLOAD); with `pause` it
    stops reading after each read and resumes on the next loop turn."""

    def __init__(self, pause: bool = False) -> None:
        self.events: list[str] = []
        self.received = 0
        self.pause = pause
        self.paused = False
        self.read_while_paused = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport              # type: ignore[assignment]
        self.events.append("made")
        self.addresses = (transport.get_extra_info("peername"),
                          transport.get_extra_info("sockname"))

    def data_received(self, data: bytes) -> None:
        self.read_while_paused |= self.paused
        self.received += len(data)
        if data == b"bye":
            self.transport.writelines([b"by", b"e!"])
            self.transport.close()
            return
        if data == b"flood":
            self.transport.write(PAYLOAD)
            return
        self.transport.write(data)
        if self.pause:
            self.paused = True
            self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._resume)

    def _resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> None:
        self.events.append("eof")

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.transport = None


class LayerServer(LoopThread):
    """A TLS Listener serving Recorders on uvloop, as the proxy does."""

    def __init__(self, context: ssl.SSLContext, timeout: float = 10.0, pause: bool = False):
        super().__init__()
        self._thread = threading.Thread(target=lambda: uvloop.run(self._serve()), daemon=True)
        self.context, self.timeout, self.pause = context, timeout, pause
        self.apps: list[Recorder] = []

    async def listen(self):
        def accept() -> asyncio.Protocol:
            self.apps.append(Recorder(self.pause))
            return self.apps[-1]

        self.listener = listener = Listener(bind_socket(Address("127.0.0.1", 0)), accept,
                                            self.context, self.timeout)
        await listener.start()
        assert listener.tls_server is not None
        self.port = listener.address[1]

        async def close() -> None:
            listener.close()
        return close

    def close_bind(self) -> None:
        """Close the listener (as a reload that drops the bind, or a stop, does)."""
        self._loop.call_soon_threadsafe(self.listener.close)


def exchange(sock: ssl.SSLSocket, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send `payload` while reading what comes back until as much came, in one thread (an
    SSL object must not be used by two threads at once)."""
    sock.setblocking(False)
    view, sent, received = memoryview(payload), 0, bytearray()
    deadline = time.monotonic() + timeout
    while len(received) < len(payload) and time.monotonic() < deadline:
        readable, writable, _ = select.select([sock], [sock] if sent < len(payload) else [],
                                              [], 0.5)
        if writable:
            with contextlib.suppress(ssl.SSLWantWriteError, ssl.SSLWantReadError):
                sent += sock.send(view[sent:sent + 65536])
        while readable or sock.pending():
            readable = []
            try:
                received += sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
    sock.setblocking(True)
    return bytes(received)


@compiled_only
def test_megabytes_both_ways_while_the_protocol_pauses_reading(ca):
    with LayerServer(server_context(ca), pause=True) as server:
        with tls_connect(server.port, ca) as sock:
            assert exchange(sock, PAYLOAD) == PAYLOAD
            (app,) = server.apps
            assert app.received == len(PAYLOAD) and not app.read_while_paused
            assert app.events == ["made"]


@compiled_only
def test_writes_past_the_buffer_limit_pause_the_protocol_until_the_client_reads(ca):
    with LayerServer(server_context(ca)) as server:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)   # no autotuning
        raw.connect(("127.0.0.1", server.port))
        with client_context(ca).wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"flood")
            wait_for(lambda: server.apps and "pause" in server.apps[0].events)
            app = server.apps[0]
            assert app.events == ["made", "pause"]
            assert app.addresses == (sock.getsockname(), sock.getpeername())
            received = bytearray()
            while len(received) < len(PAYLOAD):
                received += sock.recv(65536)
            assert received == PAYLOAD
            wait_for(lambda: app.events == ["made", "pause", "resume"])


@compiled_only
def test_close_notify_either_way(ca):
    with LayerServer(server_context(ca)) as server:
        with tls_connect(server.port, ca) as sock:      # the server closes
            sock.sendall(b"bye")
            assert sock.recv(10) + sock.recv(10) == b"bye!"      # writelines: two records
            assert sock.recv(10) == b""                 # not ragged: close_notify came
        wait_for(lambda: server.apps[0].events == ["made", "lost"])
        with tls_connect(server.port, ca) as sock:      # the client closes
            sock.sendall(b"hello")
            assert sock.recv(10) == b"hello"
            sock.unwrap()                               # sends close_notify, waits for ours
        wait_for(lambda: server.apps[1].events == ["made", "eof", "lost"])


@compiled_only
def test_garbage_and_stalled_handshakes_are_dropped_unheard(ca):
    with LayerServer(server_context(ca), timeout=0.3) as server:
        with connect(server.port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")     # not TLS
            assert Reader(sock).closed()
        with connect(server.port) as sock:
            sock.sendall(b"\x16\x03\x01\x02\x00\x01")              # half a ClientHello
            assert Reader(sock).closed()                           # the timeout ends it
        with connect(server.port) as sock:                         # nothing at all
            assert Reader(sock).closed()
        wait_for(lambda: len(server.apps) == 3)
        assert all(app.events == [] for app in server.apps)
        with tls_connect(server.port, ca) as sock:                 # others are served
            sock.sendall(b"hi")
            assert sock.recv(10) == b"hi"
            os.write(sock.fileno(), b"\x17\x03\x03\x00\x05hello")    # a forged record
            with pytest.raises(ssl.SSLError):                      # the alert, then the end
                sock.recv(10)
        wait_for(lambda: server.apps[3].events == ["made", "lost"])


@compiled_only
def test_closing_the_bind_drops_handshakes_under_way_not_connections(ca):
    with LayerServer(server_context(ca)) as server:
        with tls_connect(server.port, ca) as served, connect(server.port) as pending:
            served.sendall(b"hi")
            assert served.recv(10) == b"hi"
            wait_for(lambda: len(server.apps) == 2)
            server.close_bind()
            assert Reader(pending).closed()
            served.sendall(b"still here")
            assert served.recv(20) == b"still here"
        with pytest.raises(ConnectionRefusedError):
            connect(server.port)
        wait_for(lambda: server.apps[0].events[-1:] == ["lost"])
        assert server.apps[1].events == []
