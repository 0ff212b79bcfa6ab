"""A server that records what a proxy forwards, split by a strict parser (h11).

Every complete request it receives gets an id and is answered 200 with an `x-seen`
header naming the id and what the server read (method, target, host, body length), so a
client can tell which forwarded request each response answers. Bytes h11 refuses are
recorded as errors: a proxy must never forward what a strict parser splits differently.
A request for /ws101 that asks to upgrade is answered 101, and the connection then
echoes what it receives, as a WebSocket server would talk back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from dataclasses import dataclass, field

import h11

MAX_EVENT = 1 << 20
UPGRADE_PATH = b"/ws101"


@dataclass
class Seen:
    """One complete request as the server read it."""

    id: int
    connection: int
    method: str
    target: str
    host: str | None
    body: int
    headers: list[tuple[str, str]]

    def summary(self) -> dict:
        return {"id": self.id, "method": self.method, "target": self.target,
                "host": self.host, "body": self.body}


@dataclass
class Recording:
    requests: dict[int, Seen] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)        # bytes h11 refused
    tunnels: dict[int, bytearray] = field(default_factory=dict)   # connection -> bytes after 101


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


class RecorderProtocol(asyncio.Protocol):
    def __init__(self, recording: Recording, ids: itertools.count,
                 connections: itertools.count) -> None:
        self.recording = recording
        self.ids = ids
        self.connection = next(connections)
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_EVENT)
        self.transport: asyncio.Transport | None = None
        self.request: h11.Request | None = None
        self.body = 0
        self.tunnel: bytearray | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self._tunnel(data)
            return
        self.h11.receive_data(data)
        self._events()

    def eof_received(self) -> bool:
        if self.tunnel is None:
            self.h11.receive_data(b"")
            self._events(at_eof=True)
        return False

    def _tunnel(self, data: bytes) -> None:
        self.tunnel += data
        self.transport.write(data)

    def _events(self, at_eof: bool = False) -> None:
        while self.transport is not None and not self.transport.is_closing():
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                if not at_eof:   # a proxy may cut a request it refused: not a framing error
                    self.recording.errors.append(f"connection {self.connection}: {exc}")
                self.transport.close()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                if (event is h11.PAUSED
                        and self.h11.their_state is h11.MIGHT_SWITCH_PROTOCOL):
                    self._answer()
                    continue
                return
            if isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return
            if isinstance(event, h11.Request):
                if event.method == b"CONNECT":
                    self.recording.errors.append(f"connection {self.connection}: CONNECT "
                                                 f"{event.target!r} was forwarded")
                    self.transport.close()
                    return
                self.request, self.body = event, 0
            elif isinstance(event, h11.Data):
                self.body += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                if self.h11.their_state is not h11.MIGHT_SWITCH_PROTOCOL:
                    self._answer()

    def _answer(self) -> None:
        request = self.request
        if request is None:
            return
        self.request = None
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers]
        host = header(request.headers, b"host")
        seen = Seen(next(self.ids), self.connection, request.method.decode("latin-1"),
                    request.target.decode("latin-1"),
                    host.decode("latin-1") if host is not None else None, self.body, headers)
        self.recording.requests[seen.id] = seen
        h = self.h11
        upgrade = header(request.headers, b"upgrade")
        if (h.their_state is h11.MIGHT_SWITCH_PROTOCOL and upgrade is not None
                and request.target.split(b"?")[0] == UPGRADE_PATH):
            self.transport.write(h.send(h11.InformationalResponse(
                status_code=101, headers=[("upgrade", upgrade), ("connection", "upgrade"),
                                          ("x-seen", json.dumps(seen.summary()))])))
            self.tunnel = self.recording.tunnels[self.connection] = bytearray()
            rest, _ = h.trailing_data
            if rest:
                self._tunnel(bytes(rest))
            return
        body = b"ok\n"
        out = h.send(h11.Response(status_code=200, headers=[
            ("content-length", str(len(body))), ("x-seen", json.dumps(seen.summary()))]))
        if request.method != b"HEAD":
            out += h.send(h11.Data(data=body))
        out += h.send(h11.EndOfMessage())
        self.transport.write(out)
        if h.our_state is h11.MUST_CLOSE:
            self.transport.close()
        else:
            h.start_next_cycle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class RecordingServer:
    """The recorder on 127.0.0.1 in a daemon thread: `with RecordingServer() as server:`."""

    def __init__(self) -> None:
        self.recording = Recording()
        self.port = 0
        self._ids = itertools.count(1)
        self._connections = itertools.count(1)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()),
                                        name="desync-recorder", daemon=True)

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        if not self._ready.wait(5):
            raise TimeoutError("recording server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(5)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await self._loop.create_server(
            lambda: RecorderProtocol(self.recording, self._ids, self._connections),
            "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
