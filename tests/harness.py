"""Test harness: a real proxy on 127.0.0.1 in its own thread and event loop, plus raw
HTTP helpers. Everything binds port 0 (a free port) and stops at the end of a test."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trustme
import uvloop
import yaml

from lbproxy.runtime.engine import Engine
from lbproxy.runtime.serve import ProxyProcess
from lbproxy.runtime.validate import load_checked


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Poll `predicate` until it returns a truthy value or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def write_config(config: dict | str, directory: str | None = None) -> str:
    fd, path = tempfile.mkstemp(suffix=".yaml", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


def cert_files(ca: trustme.CA, directory: Path, *names: str) -> dict:
    """A certificate of `ca` for `names` and its key, written to `directory`: a bind's
    `certificates` entry."""
    cert = ca.issue_cert(*names)
    stem = names[0].replace("*", "star")
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return {"cert": str(cert_path), "key": str(key_path)}


def tls_request(port: int, context: ssl.SSLContext, session: ssl.SSLSession | None = None
                ) -> tuple[bool, ssl.SSLSession]:
    """`GET /` with `Connection: close` on a new TLS connection to localhost offering
    `session` (as wrk and browsers do): whether it was resumed, and the session to offer
    next."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost", session=session) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while conn.recv(65536):          # to the end: TLS 1.3 tickets come after the handshake
            pass
        return conn.session_reused, conn.session


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def simple_config(backend_ports: list[int], **frontend: Any) -> dict:
    """One frontend on a free port, one roundrobin backend over `backend_ports`."""
    backend = frontend.pop("backend", {})
    global_ = frontend.pop("global", {"log": {"format": "off"}})
    return {
        "global": global_,
        "frontends": {"web": {"bind": [f"127.0.0.1:{free_port()}"], "default_backend": "app",
                              **frontend}},
        "backends": {"app": {"balance": "roundrobin", **backend, "servers": [
            {"name": f"app{i + 1}", "address": f"127.0.0.1:{p}"}
            for i, p in enumerate(backend_ports)]}},
    }


class ProxyThread:
    """A proxy process (engine and admin server) on its own uvloop in a daemon thread."""

    def __init__(self, config: dict | str) -> None:
        self.path = write_config(config)        # kept, so that a reload can read it again
        try:
            self.config = load_checked(self.path)
        except BaseException:
            os.unlink(self.path)
            raise
        self.process: ProxyProcess | None = None
        self.engine: Engine | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProxyThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("proxy did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self.engine.addresses[0][1]

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the proxy's loop and return its result (to read live state)."""
        result: list[Any] = []
        done = threading.Event()

        def run() -> None:
            result.append(fn())
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(5)
        return result[0]

    def rewrite(self, config: dict | str) -> None:
        """Replace the configuration file the proxy reloads from."""
        with open(self.path, "w") as f:
            f.write(config if isinstance(config, str) else yaml.safe_dump(config))

    def stop(self, grace: float = 5.0) -> None:
        if self.loop is not None and not self._stopped.is_set():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(grace + 5)
        if os.path.exists(self.path):
            os.unlink(self.path)

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(self._serve())
        self._stopped.set()

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.process = ProxyProcess(self.config, self.loop, self.path)
            self.engine = self.process.engine
            await self.process.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.process.stop(grace=2.0)


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Response:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


class Reader:
    """Reads HTTP/1.1 responses from a blocking socket (CL, chunked, or close)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise EOFError("connection closed")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("connection closed")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self, head_only: bool = False) -> Response:
        while True:
            status_line = self._line()
            status = int(status_line.split()[1])
            headers = []
            while True:
                line = self._line()
                if not line:
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers.append((name.strip(), value.strip()))
            if status >= 200 or status == 101:
                break
        response = Response(status, headers, b"")
        if head_only or status in (204, 304):
            return response
        length = response.header("content-length")
        if (response.header("transfer-encoding") or "").lower() == "chunked":
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._exact(size)
                self._line()
            response.body = body
        elif length is not None:
            response.body = self._exact(int(length))
        else:
            while self._fill():
                pass
            response.body, self.buf = self.buf, b""
        return response

    def closed(self, timeout: float = 3.0) -> bool:
        """True when the peer closes the connection (EOF or reset) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


def request(port: int, raw: bytes) -> Response:
    """Send one raw request on a fresh connection and read its response."""
    with connect(port) as sock:
        sock.sendall(raw)
        return Reader(sock).read_response()


def get(port: int, path: str = "/", headers: dict[str, str] | None = None) -> Response:
    headers = {"Host": "test", **(headers or {})}
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return request(port, ("\r\n".join(lines) + "\r\n\r\n").encode())
