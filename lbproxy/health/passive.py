"""Passive health: eject a server that fails real traffic (outlier ejection).

The exchange reports every outcome: an HTTP status, or a failure kind named as in
`retry_on`. `max_fails` failures (connect errors, timeouts, invalid or lost responses,
and the statuses in `on_status`) within `fail_timeout` mark the server DOWN, as nginx's
max_fails/fail_timeout do. `observe` is on the hot path: an outcome that is not a
failure costs one frozenset lookup; a failure costs a deque append.

Reinstatement: with active checks, they bring the server back after `rise` successes
(their counters restart when passive ejection changes the state). Without them, the
server is re-probed (a TCP connect) every `fail_timeout` until one probe passes.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from lbproxy.backends.outcomes import FAILURES
from lbproxy.backends.server import MAINT
from lbproxy.health.probe import probe

if TYPE_CHECKING:
    from lbproxy.backends.backend import Backend
    from lbproxy.backends.server import Server

log = logging.getLogger("lbproxy.health")


class PassiveMonitor:
    """Counts failures of real traffic per server and ejects at `max_fails`."""

    def __init__(self, backend: Backend, clock: Callable[[], float] | None = None) -> None:
        config = backend.config.passive
        self.backend = backend
        self.max_fails = config.max_fails
        self.fail_timeout = config.fail_timeout
        self.counted: frozenset[int | str] = frozenset(config.on_status) | FAILURES
        self.clock = clock or backend.state.time
        self.reprobe = backend.config.health_check is None
        # times of the last max_fails failures per server; weak so removed servers go
        self._failures: weakref.WeakKeyDictionary[Server, deque[float]] = (
            weakref.WeakKeyDictionary())
        self._reprobes: dict[Server, asyncio.Task] = {}

    def observe(self, server: Server, outcome: int | str) -> None:
        """One response (its status) or failure (its kind) from `server`."""
        if outcome in self.counted:
            self._failed(server, outcome)

    def _failed(self, server: Server, outcome: int | str) -> None:
        if not server.up:
            return
        now = self.clock()
        times = self._failures.get(server)
        if times is None:
            times = self._failures[server] = deque(maxlen=self.max_fails)
        times.append(now)
        if len(times) == self.max_fails and times[0] > now - self.fail_timeout:
            times.clear()
            self.backend.set_health(server, False, f"passive: {self.max_fails} failures in "
                                                   f"{self.fail_timeout:g}s (last: {outcome})")
            if self.reprobe and server not in self._reprobes:
                task = self.backend.state.loop.create_task(self._reinstate(server))
                self._reprobes[server] = task
                task.add_done_callback(lambda _: self._reprobes.pop(server, None))

    async def _reinstate(self, server: Server) -> None:
        """Without active checks: re-probe every fail_timeout until the server answers."""
        backend = self.backend
        while True:
            await asyncio.sleep(self.fail_timeout)
            if server.up or server not in backend.servers:
                return              # brought back by someone else, or gone
            if server.admin == MAINT:
                continue
            ok, reason = await probe(server.address, backend.config.timeouts.connect)
            backend.set_health(server, ok, f"passive: re-probe {'passed' if ok else 'failed'}"
                                           f" ({reason})")
            if ok:
                return

    async def stop(self) -> None:
        tasks = list(self._reprobes.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
