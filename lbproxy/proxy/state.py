"""Shared state of one proxy process, and the sweeper that enforces every timeout.

Protocols do not arm a loop timer per request (a TimerHandle per event costs more than
the request's own work). Each keeps a `deadline` (loop time, 0 = none); one sweeper
visits all live protocols every TICK seconds and calls `timed_out()` on the late ones,
as HAProxy does with its coarse clock. Timeouts are therefore precise to TICK.

It also keeps the process within its open-files limit: `max_connections` is capped to
what the limit allows (as HAProxy derives maxconn from ulimit -n), so that clients wait
in the kernel backlog instead of having an accept fail, and running out anyway is
counted and said (`ran_out_of_fds`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lbproxy.backends.server import Server

log = logging.getLogger("lbproxy")

TICK = 0.1  # seconds; timeout precision, and 10k idle connections cost ~5 ms CPU per second
OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE})
# Descriptors kept for all that is not a client connection or its server connection:
# listeners, the stats server, health checks, the log, Redis, DNS.
RESERVED_FDS = 64
FD_WARN_EVERY = 10.0   # seconds between two warnings about running out


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
        self.limits_hit = False        # a connection limit paused listeners: closes resume them
        self.dispatchers: list = []    # Dispatcher objects, ticked by the sweeper (queue, slowstart)
        self.connections = 0
        self.fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_connections = self.connections_allowed(max_connections)
        self.out_of_fds = 0            # connects and checks that failed for lack of one
        self._fd_warned = float("-inf")
        self.stopping = False          # set by graceful stop: answer in-flight, then close
        self._sweeper: asyncio.Task | None = None

    def connections_allowed(self, configured: int) -> int:
        """`global.max_connections`, capped to what the open-files limit allows: a client
        connection may hold two descriptors (its own and its server's). A cap is logged."""
        limit = self.fd_limit
        if limit == resource.RLIM_INFINITY or configured * 2 + RESERVED_FDS <= limit:
            return configured
        allowed = max(1, (limit - RESERVED_FDS) // 2)
        log.warning("global.max_connections is %d but the open-files limit is %d: at most %d "
                    "client connections at once, the others wait to be accepted; raise the "
                    "limit to %d (ulimit -n, systemd LimitNOFILE=)", configured, limit,
                    allowed, configured * 2 + RESERVED_FDS)
        return allowed

    def out_of_fds_in(self, error: BaseException, server: Server) -> bool:
        """Whether `error`, of a connect to `server` (a request's or a check's), is
        EMFILE or ENFILE; if so it is counted, idle server connections are closed to make
        room, and it is said at most every FD_WARN_EVERY."""
        if getattr(error, "errno", None) not in OUT_OF_FDS:
            return False
        self.out_of_fds += 1
        for upstream in [u for u in self.upstreams if u.exchange is None]:
            upstream.close()
        now = self.time()
        if now - self._fd_warned >= FD_WARN_EVERY:
            self._fd_warned = now
            log.warning("out of file descriptors (open-files limit %d, %d client connections): "
                        "a connection to %s failed; %d times so far. Raise the limit "
                        "(ulimit -n, systemd LimitNOFILE=) or lower global.max_connections",
                        self.fd_limit, self.connections, server.name, self.out_of_fds)
        return True

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
