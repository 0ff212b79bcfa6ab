"""A scriptable origin server for compression and caching tests (aiohttp, in a thread).

Every response is described by the request's query, so a test says what it wants in the
URL: `/any?size=5000&type=text/html&h=Cache-Control:max-age=60&etag="v1"&chunks=4`.

    size=N          body of N bytes (a repeating text, compressible)
    type=T          Content-Type (default text/plain)
    status=N        status (default 200)
    h=Name:value    an extra response header (repeatable)
    etag=E          ETag E; a matching If-None-Match gets 304
    lm=HTTP-date    Last-Modified; an If-Modified-Since not older gets 304
    chunks=N        stream the body in N pieces (no Content-Length)
    delay=S         wait S seconds before answering
    pause=S         wait S seconds between streamed pieces
    hold=1          after the first streamed piece, wait for `release()`
    fail=1          answer 503

Each request is recorded (method, path with query, headers) in `requests`. A test may
instead give its own `handler(request) -> web.Response` (an async aiohttp handler).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.loop_thread import LoopThread

TEXT = b"lbproxy compresses and caches responses; " * 4


def body_of(size: int) -> bytes:
    return (TEXT * (size // len(TEXT) + 1))[:size]


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: dict[str, str] = field(default_factory=dict)


class Origin(LoopThread):
    def __init__(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 | None = None) -> None:
        self.handler = handler
        self.requests: list[Seen] = []
        self.failing = False            # when set, every request gets 503
        self.headers: dict[str, str] = {}   # added to every response, over the query's
        self._held: asyncio.Event | None = None
        LoopThread.__init__(self)

    def release(self) -> None:
        """Let a `hold=1` response go on after its first piece."""
        self._loop.call_soon_threadsafe(self._held.set)

    def count(self, path: str) -> int:
        """Requests received whose path (without query) is `path`."""
        return sum(1 for seen in self.requests if seen.path_qs.split("?")[0] == path)

    async def listen(self) -> Callable[[], Awaitable[None]]:
        self._held = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]       # noqa: SLF001
        return runner.cleanup

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Seen(request.method, request.path_qs, dict(request.headers)))
        await request.read()
        if self.handler is not None:
            return await self.handler(request)
        query = request.query
        if "delay" in query:
            await asyncio.sleep(float(query["delay"]))
        if self.failing or query.get("fail"):
            return web.Response(status=503, text="failing")
        headers = {"Content-Type": query.get("type", "text/plain")}
        for item in query.getall("h", []):
            name, _, value = item.partition(":")
            headers[name] = value
        headers.update(self.headers)
        etag, last_modified = query.get("etag"), query.get("lm")
        if etag:
            headers["ETag"] = etag
        if last_modified:
            headers["Last-Modified"] = last_modified
        if (etag and request.headers.get("If-None-Match") == etag) or (
                last_modified and request.headers.get("If-Modified-Since") == last_modified):
            return web.Response(status=304, headers={k: v for k, v in headers.items()
                                                     if k != "Content-Type"})
        status = int(query.get("status", "200"))
        body = body_of(int(query.get("size", "0")))
        if "chunks" not in query:
            return web.Response(status=status, body=body, headers=headers)
        response = web.StreamResponse(status=status, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        pieces = int(query["chunks"])
        step = -(-len(body) // pieces) if body else 1
        for start in range(0, len(body), step):
            await response.write(body[start:start + step])
            if start == 0 and query.get("hold"):
                await self._held.wait()
            if "pause" in query:
                await asyncio.sleep(float(query["pause"]))
        await response.write_eof()
        return response
