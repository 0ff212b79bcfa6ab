"""A small, fast HTTP/1.1 app server for `lbproxy demo`, the tests and bench/.

It is a raw `asyncio.Protocol` + httptools server (no aiohttp) so that a benchmark
measures the proxy in front of it, not this backend. It keeps connections alive,
answers pipelined requests in order, streams request bodies (counts and hashes them,
never keeps them) and streams large responses with back-pressure.

Endpoints:
    /                  200 "hello from NAME\\n" (also any path not listed here)
    /health            200 "ok", or 503 "down" after POST /health/down
    /health/down|up    POST: flip what /health answers
    /echo              JSON: server, method, url, http_version, headers as received
                       ([[name, value], ...], order and case kept), body_length, body_sha256
    /bytes/N           N bytes with Content-Length
    /chunked/N         N bytes in several chunks
    /close/N           N bytes, no Content-Length, delimited by closing the connection
    /slow/MS           200 after MS milliseconds
    /status/NNN        that status (204 and 304 without a body)
    /headers?k=v&...   200 with those response headers set (framing headers excluded)
    /ws                with `Upgrade: websocket`: 101 (Sec-WebSocket-Accept as RFC 6455 computes
                       it), then every byte that follows is echoed as it came: a tunnel to
                       test a proxy's Upgrade path, not a WebSocket server (frames are not parsed)
    /_stats            JSON counters; not itself counted
`latency` delays and `error_rate` turns into 500 every request except the control
endpoints (/health, /health/up, /health/down, /_stats), so health checks and tooling
see the state that was set, not the injected noise.

Run it with `python -m lbproxy.demo.backend --port 9001 --name app1`, in-process with
`await start_backend(...)`, or from blocking tests with `BackendThread`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import hashlib
import json
import random
import signal
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast
from urllib.parse import parse_qsl

import httptools
import uvloop

HEADS_KEPT = 100          # recent request heads kept for tests; bounded so a bench run stays small
BODY_BLOCK = 64 * 1024    # size of the slices a large response is written in
MAX_BODY_SIZE = 1 << 30   # /bytes, /chunked, /close: a typo must not ask for terabytes
MAX_SLOW_MS = 3_600_000
CONTROL_PATHS = frozenset({"/health", "/health/down", "/health/up", "/_stats"})
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
BODYLESS_STATUSES = frozenset({101, 204, 304})
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"   # RFC 6455 section 1.3
Pieces = Iterator[bytes | memoryview]
_PATTERN = (b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_" * (BODY_BLOCK // 64))


def pattern_bytes(n: int) -> bytes:
    """The body /bytes/N, /chunked/N and /close/N send: deterministic, so tests can compare it."""
    whole, rest = divmod(n, BODY_BLOCK)
    return _PATTERN * whole + _PATTERN[:rest]


def _pattern_pieces(n: int) -> Iterator[memoryview]:
    block = memoryview(_PATTERN)
    while n > 0:
        size = min(n, BODY_BLOCK)
        yield block[:size]
        n -= size


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A request line and its headers exactly as received (latin-1 decoded)."""

    method: str
    url: str
    http_version: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """First value of header `name`, compared case-insensitively."""
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)


@dataclass(slots=True)
class Stats:
    """Counters a test or the autoscaler reads; written only by the backend's loop."""

    requests: int = 0              # complete requests answered, /_stats excluded
    connections_opened: int = 0
    connections_open: int = 0
    bytes_received: int = 0        # every byte read from clients, heads included
    heads: deque[RequestHead] = field(default_factory=lambda: deque(maxlen=HEADS_KEPT))

    @property
    def last_head(self) -> RequestHead | None:
        return self.heads[-1] if self.heads else None

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "connections_opened": self.connections_opened,
                "connections_open": self.connections_open, "bytes_received": self.bytes_received}


@dataclass(slots=True)
class Response:
    """What the app decided; `encode` turns it into bytes. `delay` is seconds before sending."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    headers: list[tuple[str, str]] = field(default_factory=list)
    framing: str = "length"        # length | chunked | close
    stream_size: int = -1          # >= 0: body is pattern_bytes(stream_size), streamed
    delay: float = 0.0


class App:
    """The endpoints, free of I/O: a completed request in, a Response out."""

    def __init__(self, name: str, latency: float, error_rate: float, rng: random.Random) -> None:
        self.name = name
        self.latency = latency
        self.error_rate = error_rate
        self.healthy = True
        self.stats = Stats()
        self._rng = rng
        self.hello = f"hello from {name}\n".encode()

    def respond(self, req: _Exchange) -> Response:
        path, _, query = req.url.partition("?")
        if path in CONTROL_PATHS:
            return self._control(path, req.method)
        if req.tunnel:
            return _switching(req)
        if self.error_rate and self._rng.random() < self.error_rate:
            return Response(500, b"injected error\n", delay=self.latency)
        response = self._route(path, query, req)
        response.delay += self.latency
        return response

    def _control(self, path: str, method: str) -> Response:
        if path == "/_stats":
            stats = {"server": self.name, "healthy": self.healthy, **self.stats.as_dict()}
            return Response(200, json.dumps(stats).encode(), "application/json")
        if path == "/health":
            return Response(200, b"ok\n") if self.healthy else Response(503, b"down\n")
        if method != "POST":
            return Response(405, b"use POST\n", headers=[("Allow", "POST")])
        self.healthy = path == "/health/up"
        return Response(200, b"ok\n" if self.healthy else b"down\n")

    def _route(self, path: str, query: str, req: _Exchange) -> Response:
        parts = path.split("/")            # "/bytes/10" -> ["", "bytes", "10"]
        first, arg = (parts[1] if len(parts) > 1 else ""), parts[2:]
        if first == "echo" and not arg:
            return Response(200, self._echo(req), "application/json")
        if first == "headers" and not arg:
            pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True, encoding="latin-1")
                     if k.lower() not in FRAMING_HEADERS]
            if any(not k or "\r" in k + v or "\n" in k + v for k, v in pairs):
                return Response(400, b"header names must be non-empty, without CR or LF\n")
            return Response(200, b"ok\n", headers=pairs)
        if first in ("bytes", "chunked", "close", "slow", "status") and len(arg) == 1:
            number = _parse_number(arg[0])
            if number is None:
                return Response(400, f"not a number: {arg[0]!r}\n".encode())
            return self._numbered(first, number)
        return Response(200, self.hello)

    def _numbered(self, kind: str, number: int) -> Response:
        if kind == "slow":
            if number > MAX_SLOW_MS:
                return Response(400, f"at most {MAX_SLOW_MS} ms\n".encode())
            return Response(200, f"slept {number} ms\n".encode(), delay=number / 1000)
        if kind == "status":
            if not 200 <= number <= 599:
                return Response(400, b"status must be 200-599\n")
            return Response(number, b"" if number in BODYLESS_STATUSES else _reason_line(number))
        if number > MAX_BODY_SIZE:
            return Response(400, f"at most {MAX_BODY_SIZE} bytes\n".encode())
        framing = {"bytes": "length", "chunked": "chunked", "close": "close"}[kind]
        return Response(200, content_type="application/octet-stream", framing=framing, stream_size=number)

    def _echo(self, req: _Exchange) -> bytes:
        return json.dumps({
            "server": self.name, "method": req.method, "url": req.url,
            "http_version": req.http_version, "headers": [list(pair) for pair in req.headers],
            "body_length": req.body_length, "body_sha256": req.digest.hexdigest() if req.digest else None,
        }).encode()


def _switching(req: _Exchange) -> Response:
    """The 101 that opens /ws's echo tunnel."""
    key = next((v for k, v in req.headers if k.lower() == "sec-websocket-key"), "")
    accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode("latin-1")).digest()).decode()
    return Response(101, headers=[("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                  ("Sec-WebSocket-Accept", accept)])


def wants_tunnel(path: str, headers: list[tuple[str, str]]) -> bool:
    """`GET /ws` with `Upgrade: websocket`: the only request answered by switching protocols."""
    return path == "/ws" and any(k.lower() == "upgrade" and v.lower() == "websocket" for k, v in headers)


def _parse_number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None


def _reason_line(status: int) -> bytes:
    return f"{status} {_reason(status)}\n".encode()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def encode(app_name: str, response: Response, keep_alive: bool, head_only: bool) -> tuple[Pieces, bool]:
    """Serialize `response`; returns (pieces to write, close the connection afterwards)."""
    custom = tuple(response.headers)
    keep_alive = keep_alive and response.framing != "close" and not any(
        name.lower() == "connection" and "close" in value.lower() for name, value in custom)
    size = response.stream_size if response.stream_size >= 0 else len(response.body)
    head = _head(app_name, response.status, response.content_type, response.framing, size, custom, keep_alive)
    if head_only or response.status in BODYLESS_STATUSES:
        return iter((head,)), not keep_alive
    if response.stream_size < 0:
        return iter((head + response.body,)), not keep_alive
    pieces = _pattern_pieces(size)
    if response.framing == "chunked":
        pieces = _chunked(pieces, size)
    return _prepend(head, pieces), not keep_alive


@functools.lru_cache(maxsize=1024)   # most responses repeat a head exactly; formatting one costs µs
def _head(app_name: str, status: int, content_type: str, framing: str, size: int,
          custom: tuple[tuple[str, str], ...], keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}", "Server: lbproxy-demo", f"X-Server: {app_name}"]
    if status not in BODYLESS_STATUSES:
        lines.append(f"Content-Type: {content_type}")
        if framing == "length":
            lines.append(f"Content-Length: {size}")
        elif framing == "chunked":
            lines.append("Transfer-Encoding: chunked")
    lines.extend(f"{name}: {value}" for name, value in custom)
    if not any(name.lower() == "connection" for name, _ in custom):
        lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunked(pieces: Iterator[memoryview], size: int) -> Pieces:
    """Re-frame as chunks of at most a quarter of the body, so even a small body has several."""
    chunk = max(1, min(BODY_BLOCK, -(-size // 4)))
    for piece in pieces:
        for start in range(0, len(piece), chunk):
            part = piece[start:start + chunk]
            yield b"%x\r\n" % len(part)
            yield part
            yield b"\r\n"
    yield b"0\r\n\r\n"


def _prepend(head: bytes, pieces: Pieces) -> Pieces:
    yield head
    yield from pieces


class _Exchange:
    """One request on a connection, and its response once the app has decided it."""

    __slots__ = ("method", "url", "http_version", "headers", "body_length", "digest",
                 "pieces", "close_after", "timer", "tunnel")

    def __init__(self) -> None:
        self.method = ""
        self.url = ""
        self.http_version = ""
        self.headers: list[tuple[str, str]] = []
        self.body_length = 0
        self.digest: hashlib._Hash | None = None
        self.pieces: Pieces | None = None   # None: the app has not answered yet
        self.close_after = False
        self.timer: asyncio.TimerHandle | None = None
        self.tunnel = False                 # /ws with Upgrade: a 101, then an echo


class DemoProtocol(asyncio.Protocol):
    """One client connection: parse with httptools, answer in order, respect back-pressure."""

    def __init__(self, app: App, connections: set[DemoProtocol]) -> None:
        # shared
        self._app = app
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        # per connection
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._pipeline: deque[_Exchange] = deque()   # answered strictly in arrival order
        self._write_paused = False
        self._closing = False
        self._echoing = False                        # after a 101: every byte read is written back
        # per request being parsed
        self._current = _Exchange()
        self._url_parts: list[bytes] = []

    # connection events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._connections.add(self)
        self._app.stats.connections_opened += 1
        self._app.stats.connections_open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._app.stats.connections_open -= 1
        for exchange in self._pipeline:
            if exchange.timer:
                exchange.timer.cancel()
        self._pipeline.clear()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return                             # after a closing response nothing more is answered
        self._app.stats.bytes_received += len(data)
        if self._echoing:
            self._echo_back(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self._current.tunnel:           # its 101 is written: from here on, an echo
                self._echoing = True
                self._echo_back(data[exc.args[0]:])
            else:
                self._closing = True           # no other tunnels: answer what was asked, then close
                self._flush()
                if not self._pipeline and self._transport:
                    self._transport.close()    # already answered: nothing left to close after
        except httptools.HttpParserError as exc:
            self._reject(exc)

    def _echo_back(self, data: bytes) -> None:
        if data and self._transport:
            self._transport.write(data)        # a paused writer pauses reading (pause_writing)

    def _reject(self, exc: Exception) -> None:
        """Answer 400 in turn (after earlier pipelined requests) and close."""
        current = self._current
        if self._pipeline and self._pipeline[-1] is current and current.pieces is None and current.timer is None:
            self._pipeline.pop()               # its head arrived but the rest was malformed
        failed = _Exchange()
        failed.pieces, failed.close_after = encode(
            self._app.name, Response(400, f"bad request: {exc}\n".encode()), False, False)
        self._pipeline.append(failed)
        self._closing = True
        self._flush()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._transport:
            self._transport.pause_reading()  # no new requests while the client is not reading

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._transport and not self._closing:
            self._transport.resume_reading()
        self._flush()

    def close(self) -> None:
        if self._transport:
            self._transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._current = _Exchange()
        self._url_parts.clear()

    def on_url(self, url: bytes) -> None:
        self._url_parts.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._current.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        req = self._current
        req.method = self._parser.get_method().decode("latin-1")
        req.url = b"".join(self._url_parts).decode("latin-1")
        req.http_version = self._parser.get_http_version()
        self._app.stats.heads.append(RequestHead(req.method, req.url, req.http_version, tuple(req.headers)))
        path = req.url.partition("?")[0]
        if path == "/echo":
            req.digest = hashlib.sha256()
        req.tunnel = self._parser.should_upgrade() and wants_tunnel(path, req.headers)
        self._pipeline.append(req)
        if len(self._pipeline) == 1 and _expects_continue(req.headers) and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._current.body_length += len(body)
        if self._current.digest:
            self._current.digest.update(body)

    def on_message_complete(self) -> None:
        req = self._current
        app = self._app
        if req.url.partition("?")[0] != "/_stats":
            app.stats.requests += 1
        response = app.respond(req)
        keep_alive = self._parser.should_keep_alive()
        if response.delay > 0:
            req.timer = self._loop.call_later(response.delay, self._ready, req, response, keep_alive)
        else:
            self._ready(req, response, keep_alive)

    # writing
    def _ready(self, req: _Exchange, response: Response, keep_alive: bool) -> None:
        req.timer = None
        req.pieces, req.close_after = encode(self._app.name, response, keep_alive, req.method == "HEAD")
        self._closing = self._closing or req.close_after
        self._flush()

    def _flush(self) -> None:
        """Write ready responses from the front of the pipeline until one is not ready."""
        transport = self._transport
        while transport and self._pipeline and self._pipeline[0].pieces is not None:
            head = self._pipeline[0]
            for piece in head.pieces:
                transport.write(piece)
                if self._write_paused:
                    return                     # resume_writing continues this iterator
            self._pipeline.popleft()
            if head.close_after or (self._closing and not self._pipeline):
                transport.close()
                return


def _expects_continue(headers: list[tuple[str, str]]) -> bool:
    return any(k.lower() == "expect" and v.lower() == "100-continue" for k, v in headers)


class DemoBackend:
    """A running backend: `.port`, `.name`, `.stats`, `.healthy` (settable) and `close()`."""

    def __init__(self, server: asyncio.Server, app: App, connections: set[DemoProtocol]) -> None:
        self._server = server
        self._app = app
        self._connections = connections
        sockname = server.sockets[0].getsockname()
        self.host: str = sockname[0]
        self.port: int = sockname[1]

    @property
    def name(self) -> str:
        return self._app.name

    @property
    def stats(self) -> Stats:
        return self._app.stats

    @property
    def healthy(self) -> bool:
        return self._app.healthy

    @healthy.setter
    def healthy(self, value: bool) -> None:
        self._app.healthy = value

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        """Stop listening and drop every connection, idle or not (a test wants a clean slate)."""
        self._server.close()
        for conn in list(self._connections):
            conn.close()
        await self._server.wait_closed()


async def start_backend(host: str = "127.0.0.1", port: int = 0, name: str = "app", latency: float = 0.0,
                        error_rate: float = 0.0, seed: int | None = None) -> DemoBackend:
    """Listen on host:port (0 = a free port) in the running loop. `seed` makes error_rate repeatable."""
    if latency < 0 or not 0.0 <= error_rate <= 1.0:
        raise ValueError("latency must be >= 0 and error_rate within 0..1")
    app = App(name, latency, error_rate, random.Random(seed))
    connections: set[DemoProtocol] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: DemoProtocol(app, connections), host, port, backlog=1024)
    return DemoBackend(server, app, connections)


class BackendThread:
    """A backend on its own uvloop in a daemon thread, for tests that use blocking sockets.

    `with BackendThread(name="app1") as b: ... b.port ... b.stats.requests`. Stats are
    written by the backend's thread; reading plain ints from another one is safe.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, name: str = "app", latency: float = 0.0,
                 error_rate: float = 0.0, seed: int | None = None) -> None:
        self._options = dict(host=host, port=port, name=name, latency=latency, error_rate=error_rate, seed=seed)
        self._thread = threading.Thread(target=self._run, name=f"demo-backend-{name}", daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.backend: DemoBackend | None = None

    @property
    def port(self) -> int:
        return self._started().port

    @property
    def stats(self) -> Stats:
        return self._started().stats

    @property
    def healthy(self) -> bool:
        return self._started().healthy

    @healthy.setter
    def healthy(self, value: bool) -> None:
        self._started().healthy = value

    def start(self, timeout: float = 5.0) -> BackendThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"demo backend did not start within {timeout}s")
        if self._error:
            raise self._error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._loop and self._stop and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def __enter__(self) -> BackendThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _started(self) -> DemoBackend:
        if self.backend is None:
            raise RuntimeError("BackendThread not started")
        return self.backend

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.backend = await start_backend(**self._options)
        except BaseException as exc:  # handed to start() in the caller's thread
            self._error = exc
            return
        finally:
            self._ready.set()
        await self._stop.wait()
        await self.backend.close()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lbproxy.demo.backend", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001, help="0 picks a free port (printed at start)")
    parser.add_argument("--name", default="app")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests answered 500")
    parser.add_argument("--seed", type=int, default=None, help="seed for --error-rate")
    return parser.parse_args(argv)


async def _serve_until_signal(args: argparse.Namespace) -> None:
    backend = await start_backend(args.host, args.port, args.name, args.latency, args.error_rate, args.seed)
    print(f"demo backend {backend.name} listening on {backend.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await backend.close()


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    try:
        uvloop.run(_serve_until_signal(args))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"demo backend: {exc}") from None


if __name__ == "__main__":
    main()
