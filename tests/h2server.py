"""An HTTP/2 server for upstream tests, on the `h2` library (an implementation independent
of the proxy's): it records every request and answers as the test sets it up, including
the ways servers misbehave that a proxy must survive (refused streams, GOAWAY)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events

from tests.loop_thread import LoopThread


@dataclass
class Request:
    connection: int
    stream_id: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)


class H2Server(LoopThread):
    """`with H2Server(max_streams=2) as server:`; answers 200 echoing the request body
    with response trailers `x-trailer: done`, after `delay` seconds."""

    def __init__(self, max_streams: int = 100, delay: float = 0.0) -> None:
        self.max_streams = max_streams
        self.delay = delay
        self.requests: list[Request] = []
        self.connections = 0
        self.refuse = 0            # streams to refuse with REFUSED_STREAM, then serve
        self.goaway_last: int | None = None   # send GOAWAY(last) on the next request
        self.pings = 0
        self.most_open = 0         # most streams open at once on one connection
        self.extra_headers: list[tuple[str, str]] = []   # added to every response head
        LoopThread.__init__(self)

    async def listen(self) -> Callable[[], Awaitable[None]]:
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]

        async def close() -> None:
            server.close()
            await server.wait_closed()
        return close

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve_connection(reader, writer)
        except (asyncio.CancelledError, ConnectionError):
            writer.close()

    async def _serve_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS:
                              self.max_streams})
        writer.write(conn.data_to_send())
        open_: dict[int, Request] = {}
        answering = [0]              # streams of this connection not yet answered
        while True:
            data = await reader.read(65536)
            if not data:
                break
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                writer.write(conn.data_to_send())
                break
            for event in events:
                if isinstance(event, h2.events.PingReceived):
                    self.pings += 1
                elif isinstance(event, h2.events.RequestReceived):
                    if self.refuse:
                        self.refuse -= 1
                        conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                        continue
                    if self.goaway_last is not None:
                        conn.close_connection(last_stream_id=self.goaway_last)
                        self.goaway_last = None
                        continue
                    request = Request(number, event.stream_id,
                                      {k.decode(): v.decode() for k, v in event.headers})
                    open_[event.stream_id] = request
                    self.requests.append(request)
                    answering[0] += 1
                    self.most_open = max(self.most_open, answering[0])
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if event.stream_id in open_:
                        open_[event.stream_id].body += event.data
                elif isinstance(event, h2.events.TrailersReceived):
                    if event.stream_id in open_:
                        open_[event.stream_id].trailers = {k.decode(): v.decode()
                                                           for k, v in event.headers}
                elif isinstance(event, h2.events.StreamEnded):
                    request = open_.pop(event.stream_id, None)
                    if request is not None:
                        asyncio.get_running_loop().create_task(
                            self._answer(conn, writer, request, answering))
            writer.write(conn.data_to_send())
        writer.close()

    async def _answer(self, conn: h2.connection.H2Connection, writer: asyncio.StreamWriter,
                      request: Request, answering: list[int]) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        answering[0] -= 1
        body = request.body or b"ok"
        try:
            conn.send_headers(request.stream_id, [(":status", "200"),
                                                  ("content-type", "text/plain"),
                                                  *self.extra_headers])
            conn.send_data(request.stream_id, body)
            conn.send_headers(request.stream_id, [("x-trailer", "done")], end_stream=True)
            writer.write(conn.data_to_send())
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
            pass
