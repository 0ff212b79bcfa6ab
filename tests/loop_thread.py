"""A test server on its own asyncio loop in a thread (an origin, an HTTP/2 server)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable


class LoopThread:
    """`with Server() as server:` starts the loop, returns once it listens on
    `server.port`, and stops it at the end of the block. A subclass writes `listen`: start
    listening on 127.0.0.1, set `self.port`, return what closes it."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def __enter__(self) -> LoopThread:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    async def listen(self) -> Callable[[], Awaitable[None]]:
        raise NotImplementedError

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        close = await self.listen()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await close()
