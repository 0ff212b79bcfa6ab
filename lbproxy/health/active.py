"""Active health checks: probe every server of a backend on its own schedule.

One scheduler per backend, not a task per server: a heap of the servers' next probe
times and a deque of the probes in flight (one timeout for all, so launch order is
deadline order), served by a single loop timer. Each probe is a few socket callbacks
(lbproxy/health/probe.py), its socket in one epoll set with those of all the backend's
probes in flight; gRPC checks, which speak HTTP/2, keep a task of their own. Servers
get evenly spaced phases over the interval (from a random offset per backend), so
5,000 servers every 2 s are 2,500 probes a second, never 5,000 at once; probes due
within a small slack of each other share one timer wake-up. A server's next probe is
due one interval after the last was due, whatever the loop's delays, so phases do not
drift together; a probe still running when its next is due delays that one until it
ends. A probe is one fresh connection, never a pooled one: check traffic is independent
of client traffic, and a fresh connect is what tells a listening server from a gone one.

Rise/fall follow HAProxy: a server changes state only after `rise` consecutive successes
or `fall` consecutive failures. Servers in the configuration start UP (a restart causes no
outage); servers added at run time with `up=False` start CHECKING, are probed at once and
get traffic only after `rise` successes. Servers in MAINT are not probed. Servers removed
are no longer probed. `Backend.set_health` is called on transitions only, and logs them once.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from lbproxy.backends.server import MAINT
from lbproxy.config.schema import HealthCheckConfig
from lbproxy.health.probe import (Endpoint, LoopPoller, Poller, Probe, endpoint, http_request,
                                  make_poller)

if TYPE_CHECKING:
    from lbproxy.backends.backend import Backend
    from lbproxy.backends.server import Server

log = logging.getLogger("lbproxy.health")

# Probes due within this share of the interval (at most MAX_SLACK) start together:
# one timer wake-up for many servers, none more than 0.5 % of an interval early.
SLACK_SHARE = 0.005
MAX_SLACK = 0.010


class Health:
    """The rise/fall counter of one server, free of I/O.

    `record(current, ok)` takes the server's current state (True = UP, False = DOWN,
    None = CHECKING, never decided) and a probe result; it returns the new state when
    this result crosses a threshold, else None. When the state was changed by someone
    else (passive ejection, the API) the counters restart, so e.g. a server ejected by
    passive checks needs `rise` fresh successes to come back.
    """

    __slots__ = ("failures", "fall", "rise", "state", "successes")

    def __init__(self, rise: int, fall: int) -> None:
        self.rise = rise
        self.fall = fall
        self.state: bool | None = None
        self.successes = 0
        self.failures = 0

    def record(self, current: bool | None, ok: bool) -> bool | None:
        if current is not self.state:
            self.state = current
            self.successes = self.failures = 0
        if ok:
            self.successes += 1
            self.failures = 0
            if current is not True and self.successes >= self.rise:
                self.state = True
                return True
        else:
            self.failures += 1
            self.successes = 0
            if current is not False and self.failures >= self.fall:
                self.state = False
                return False
        return None


class _Target:
    """One checked server: what its probes need, worked out once, and its schedule."""

    __slots__ = ("due", "health", "late", "probe", "removed", "request", "server", "where")

    def __init__(self, server: Server, check: HealthCheckConfig, due: float) -> None:
        self.server = server
        self.health = Health(check.rise, check.fall)
        self.request = http_request(check, server.address) if check.type == "http" else None
        self.where: Endpoint | None = endpoint(server.address, check.port)
        self.due = due
        self.probe: Probe | asyncio.Task | None = None    # in flight
        self.late = False           # its next probe came due while this one ran
        self.removed = False

    def remove(self) -> asyncio.Task | None:
        """No more probes; the one in flight is stopped (a gRPC task is returned, cancelled)."""
        self.removed = True
        if isinstance(self.probe, asyncio.Task):
            self.probe.cancel()
            return self.probe
        if self.probe is not None:
            self.probe.abort()
        return None


class ActiveChecker:
    """Periodic probes of every server of one backend, per its `health_check`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.config: HealthCheckConfig = backend.config.health_check
        self.loop = backend.state.loop
        self.slack = min(MAX_SLACK, self.config.interval * SLACK_SHARE)
        self._targets: dict[Server, _Target] = {}
        self._due: list[tuple[float, int, _Target]] = []       # a heap
        self._count = 0                                         # heap tie-breaker
        self._flying: deque[tuple[float, Probe]] = deque()      # (deadline, probe)
        self._timer: asyncio.TimerHandle | None = None
        self._wake = float("inf")                               # when _timer fires
        self._poller: Poller | LoopPoller | None = None         # while started
        self._grpc_probe: Callable[..., Awaitable[tuple[bool, str]]] | None = None
        if self.config.type == "grpc":      # imported only then: gRPC checks speak HTTP/2
            from lbproxy.health.grpc import grpc_probe
            self._grpc_probe = grpc_probe

    def start(self) -> None:
        """Probe the servers present now, evenly spread over one interval, and watch
        for new ones."""
        self.backend.listeners.append(self._changed)
        self._poller = make_poller(self.loop)
        servers = list(self.backend.servers)
        now, offset = self.loop.time(), random.random()
        for i, server in enumerate(servers):
            self._watch(server, now + self.config.interval * ((offset + i / len(servers)) % 1.0))
        self._arm()

    async def stop(self) -> None:
        if self._changed in self.backend.listeners:
            self.backend.listeners.remove(self._changed)
        if self._timer is not None:
            self._timer.cancel()
        tasks = [task for target in self._targets.values() if (task := target.remove())]
        self._targets.clear()
        self._due.clear()
        self._flying.clear()
        if self._poller is not None:
            self._poller.close()
            self._poller = None
        await asyncio.gather(*tasks, return_exceptions=True)

    def _changed(self, backend: Backend, server: Server | None, what: str) -> None:
        if what == "added":
            self._watch(server, self.loop.time())    # checked at once: it waits for its first UP
            self._arm()
        elif what == "removed":
            target = self._targets.pop(server, None)
            if target is not None:
                target.remove()

    def _watch(self, server: Server, due: float) -> None:
        if server not in self._targets:
            target = self._targets[server] = _Target(server, self.config, due)
            self._push(target)

    def _push(self, target: _Target) -> None:
        self._count += 1
        heapq.heappush(self._due, (target.due, self._count, target))

    def _arm(self) -> None:
        """Set the one timer to the next due probe or the next deadline, if sooner."""
        flying = self._flying
        while flying and flying[0][1].finished:     # most probes end long before their deadline
            flying.popleft()
        wake = self._due[0][0] if self._due else float("inf")
        if flying and flying[0][0] < wake:
            wake = flying[0][0]
        if wake == self._wake:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake = wake
        if wake != float("inf"):
            self._timer = self.loop.call_at(wake, self._tick)

    def _tick(self) -> None:
        self._timer, self._wake = None, float("inf")
        now = self.loop.time()
        flying = self._flying
        while flying and flying[0][0] <= now:
            flying.popleft()[1].expire()
        due, interval, soon = self._due, self.config.interval, now + self.slack
        while due and due[0][0] <= soon:
            target = heapq.heappop(due)[2]
            if target.removed:
                continue
            if target.probe is not None:
                target.late = True          # re-queued when the running probe ends
            elif target.server.admin != MAINT:
                self._launch(target, now)
            target.due = max(target.due + interval, now)
            if not target.late:
                self._push(target)
        self._arm()

    def _launch(self, target: _Target, now: float) -> None:
        check = self.config
        if check.type == "grpc":
            target.probe = self.loop.create_task(self._grpc(target))
            return
        one = target.probe = Probe(self._poller, target.request, check.expect_status,
                                   lambda ok, reason: self._done(target, ok, reason))
        try:
            one.start(target.where, target.server.address, check.port)
        except OSError as exc:          # out of descriptors: counted, not recorded
            one.abort()
            target.probe = None
            self.backend.state.out_of_fds_in(exc, target.server)
            return
        if not one.finished:
            self._flying.append((now + check.timeout, one))
        elif target.probe is one:
            target.probe = None

    async def _grpc(self, target: _Target) -> None:
        check = self.config
        try:
            ok, reason = await self._grpc_probe(target.server.address, check.timeout,
                                                check.service, check.port)
        except OSError as exc:          # out of descriptors: counted, not recorded
            target.probe = None
            self.backend.state.out_of_fds_in(exc, target.server)
            self._requeue(target)
        else:
            self._done(target, ok, reason)

    def _done(self, target: _Target, ok: bool, reason: str) -> None:
        target.probe = None
        if not target.removed:
            self._record(target.server, target.health, ok, reason)
            self._requeue(target)

    def _requeue(self, target: _Target) -> None:
        """A probe ended after its next came due: that one starts now."""
        if target.late and not target.removed:
            target.late = False
            target.due = self.loop.time()
            self._push(target)
            self._arm()

    def _record(self, server: Server, health: Health, ok: bool, reason: str) -> None:
        current = None if server.check == "checking" else server.up
        verdict = health.record(current, ok)
        if verdict is not None:
            if current is None and not verdict:     # set_health logs UP/DOWN flips only
                log.warning("backend %s: server %s is DOWN (%s)", self.backend.name,
                            server.name, reason)
            self.backend.set_health(server, verdict, reason)
        elif server.check == "none" and ok == server.up:
            self.backend.set_health(server, ok, reason)     # first verdict: show it
