"""The data plane without sockets: protocols driven with raw bytes on fake transports.

`DataPlane(config)` builds the real engine objects (frontends, backends, dispatchers,
rules) on a fake loop whose clock the test moves; every server's pool is a `TestPool`,
the real ServerPool except that `connect` only records the exchange: the test then
`open`s a connection (a real UpstreamProtocol on a FakeTransport) or `refuse`s it.
Time passes with `advance`, which runs the sweeper like the running proxy does. As on a
real loop, a closed transport tells its protocol `connection_lost` later, not within
`close()`: `settle()` (also run by `advance`) delivers it.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from typing import Any

import yaml

from lbproxy.proxy.client import ClientProtocol
from lbproxy.proxy.exchange import Exchange
from lbproxy.proxy.upstream import ServerPool, UpstreamProtocol
from lbproxy.runtime.engine import Engine
from lbproxy.runtime.validate import load_checked


class FakeTransport:
    """Records what is written; says whether reading is paused and how it ended."""

    def __init__(self, lost: list[Any], peer: tuple[str, int] = ("10.0.0.1", 40000),
                 sock: tuple[str, int] = ("127.0.0.1", 8080)) -> None:
        self.lost = lost                # where a closed transport's protocol waits
        self.protocol: Any = None
        self.extra = {"peername": peer, "sockname": sock}
        self.written = bytearray()
        self.reading = True
        self.closed = False
        self.aborted = False
        self.eof = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.written += data

    def take(self) -> bytes:
        data = bytes(self.written)
        self.written.clear()
        return data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.lost.append(self.protocol)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """A lingering close's FIN: the client protocol reads on, then closes."""
        self.eof = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeLoop:
    """What ProxyState and Backend use of a loop: the time, and tasks (never run here)."""

    def __init__(self) -> None:
        self.time = Clock()
        self.tasks: list[Any] = []

    def create_task(self, coro: Any) -> Any:
        coro.close()
        self.tasks.append(coro)
        return coro

    def call_later(self, delay: float, callback: Any, *args: Any) -> Timer:
        """A timer that never fires (the access log's flush: tests flush themselves)."""
        return Timer()


class Timer:
    def cancel(self) -> None:
        pass


class TestPool(ServerPool):
    __test__ = False

    def __init__(self, lost: list[Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost = lost
        self.waiting: deque[Exchange] = deque()

    def connect(self, exchange: Exchange) -> None:
        exchange.connecting = self
        self.waiting.append(exchange)

    def open(self) -> tuple[UpstreamProtocol, FakeTransport]:
        """Complete the oldest pending connect: the exchange is attached to a new
        connection, whose transport shows what the server receives."""
        exchange = self.waiting.popleft()
        upstream = UpstreamProtocol(self)
        transport = FakeTransport(self.lost, peer=("127.0.0.1", 9000), sock=("127.0.0.1", 50000))
        transport.protocol = upstream
        upstream.connection_made(transport)
        if exchange.connecting is self:
            exchange.connecting = None
            exchange.attach(upstream)
        return upstream, transport

    def refuse(self, error: OSError | None = None) -> None:
        """Fail the oldest pending connect (with `error`, as the loop would raise it)."""
        exchange = self.waiting.popleft()
        if exchange.connecting is self:
            exchange.connecting = None
            exchange.connect_failed(error is not None and
                                    self.state.out_of_fds_in(error, self.server))


class Client:
    """A client connection: the protocol and its transport."""

    def __init__(self, protocol: ClientProtocol, transport: FakeTransport) -> None:
        self.protocol = protocol
        self.transport = transport

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def received(self) -> bytes:
        return self.transport.take()


class DataPlane:
    def __init__(self, config: dict) -> None:
        fd, path = tempfile.mkstemp(suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(config, f)
        try:
            loaded = load_checked(path)
        finally:
            os.unlink(path)
        self.loop = FakeLoop()
        self.lost: list[Any] = []       # protocols whose transport closed, not yet told
        self.engine = Engine(loaded, self.loop)      # type: ignore[arg-type]
        self.state = self.engine.state
        for backend in self.engine.backends.values():
            backend.make_pool = self._make_pool
            for server in backend.servers:
                server.pool = self._make_pool(server, None, backend.config)

    def _make_pool(self, server: Any, _config: Any, backend: Any) -> TestPool:
        return TestPool(self.lost, server, self.state, connect_timeout=backend.timeouts.connect,
                        reuse=backend.http_reuse != "never",
                        max_head=backend.max_response_header_size)

    def pool(self, server: str, backend: str = "app") -> TestPool:
        return self.engine.backends[backend].server(server).pool

    def connect(self, frontend: str = "web", peer: tuple[str, int] = ("10.0.0.1", 40000)
                ) -> Client:
        protocol = self.engine.frontends[frontend].protocol()
        transport = FakeTransport(self.lost, peer=peer)
        transport.protocol = protocol
        protocol.connection_made(transport)
        return Client(protocol, transport)

    def settle(self) -> None:
        """Tell the protocols of closed transports that their connection is lost."""
        while self.lost:
            self.lost.pop(0).connection_lost(None)

    def advance(self, seconds: float) -> None:
        """Let time pass and run the sweeper (timeouts, queue expiry, slowstart)."""
        self.settle()
        self.loop.time.now += seconds
        self.state.sweep(self.loop.time.now)
        self.settle()


def config(servers: int = 1, frontend: dict | None = None, backend: dict | None = None,
           server: dict | None = None) -> dict:
    """One frontend `web`, one backend `app` of `servers` servers app1..appN."""
    return {
        "global": {"log": {"format": "off"}},
        "frontends": {"web": {"bind": ["127.0.0.1:8080"], "default_backend": "app",
                              **(frontend or {})}},
        "backends": {"app": {"balance": "roundrobin", **(backend or {}), "servers": [
            {"name": f"app{i}", "address": f"127.0.0.1:{9000 + i}", **(server or {})}
            for i in range(1, servers + 1)]}},
    }


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def get(path: str = "/", host: bytes = b"h", extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"\r\n"
