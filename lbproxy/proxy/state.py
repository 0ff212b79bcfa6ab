"""Shared state of one proxy process, and the sweeper that enforces every timeout.

Protocols do not arm a loop timer per request (a TimerHandle per event costs more than
the request's own work). Each keeps a `deadline` (loop time, 0 = none); one sweeper
visits all live protocols every TICK seconds and calls `timed_out()` on the late ones,
as HAProxy does with its coarse clock. Timeouts are therefore precise to TICK.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

TICK = 0.1  # seconds; timeout precision, and 10k idle connections cost ~5 ms CPU per second


class Expiring(Protocol):
    deadline: float

    def timed_out(self) -> None: ...


class ProxyState:
    """What every protocol of the process shares: the loop, live protocols, stop flag."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_connections: int) -> None:
        self.loop = loop
        self.time = loop.time
        self.clients: set = set()      # ClientProtocol objects
        self.upstreams: set = set()    # UpstreamProtocol objects
        self.frontends: list = []      # Frontend objects, paused together at max_connections
        self.dispatchers: list = []    # Dispatcher objects, ticked by the sweeper (queue, slowstart)
        self.connections = 0
        self.max_connections = max_connections
        self.stopping = False          # set by graceful stop: answer in-flight, then close
        self._sweeper: asyncio.Task | None = None

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.sweep(self.time())

    def sweep(self, now: float) -> None:
        for dispatcher in self.dispatchers:
            dispatcher.tick(now)
        late = [p for group in (self.clients, self.upstreams) for p in group
                if 0.0 < p.deadline <= now]
        for protocol in late:
            if 0.0 < protocol.deadline <= now:   # an earlier callback may have moved it
                protocol.deadline = 0.0
                protocol.timed_out()
