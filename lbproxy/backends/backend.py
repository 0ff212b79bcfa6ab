"""A backend pool as the data plane sees it: servers, their balancers, retry policy.

The balancing algorithm only orders servers (lbproxy/balance/). This class owns what
is around the choice: the split between normal and backup servers, the retry settings
the exchange follows, and the changes made while running (servers added, drained and
removed, weights and states set by the runtime API, health checks, DNS discovery and
the autoscaler). Every change goes through `changed()`, which tells the balancers and
the listeners (stats, health). Each server's connection pool comes from the `make_pool`
the engine hands in: this layer knows no sockets, and the watchers (health checks,
discovery) are started by the engine.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from lbproxy.backends.persistence import CookiePersistence
from lbproxy.backends.server import ADMIN_STATES, DRAIN, MAINT, READY, Server
from lbproxy.balance import make_balancer
from lbproxy.balance.base import Balancer
from lbproxy.config.backend import MAX_WEIGHT
from lbproxy.config.schema import BackendConfig, ServerConfig
from lbproxy.http.request import RequestInfo
from lbproxy.slicing import Sliced, each, mapped

if TYPE_CHECKING:
    from lbproxy.proxy.state import ProxyState

log = logging.getLogger("lbproxy.backend")

# Builds a server's connection pool (lbproxy/proxy/upstream.py's make_pool, in the engine).
MakePool = Callable[[Server, ServerConfig, BackendConfig], object]

DRAIN_POLL = 0.05      # seconds between checks that a draining server is idle
RAMP_INTERVAL = 0.5    # seconds between slowstart weight steps (each moves the ramping servers)
FEW_MOVED = 8          # a reload that changes more servers' weights updates the balancers whole


class Backend:
    def __init__(self, config: BackendConfig, state: ProxyState, make_pool: MakePool) -> None:
        self.name = config.name
        self.state = state
        self.make_pool = make_pool
        self._settings(config)
        self.servers: list[Server] = [self._make_server(c) for c in config.servers]
        self._new_balancers()
        self.listeners: list[Callable[[Backend, Server | None, str], None]] = []
        self._removals: dict[str, asyncio.Task] = {}
        # watchers, set by the engine (lbproxy/runtime/watchers.py) when configured
        self.passive = None       # lbproxy.health.passive.PassiveMonitor
        self.checker = None       # lbproxy.health.active.ActiveChecker
        self.discovery = None     # lbproxy.backends.discovery.Discovery
        self.in_flight = 0
        self.queued = 0           # requests waiting for a slot (kept by the dispatcher)
        self.max_queued = 0
        self._ramping: dict[Server, float] = {}                # slowstart: server -> since
        self._next_ramp = 0.0
        # counters
        self.requests = 0
        self.responses = [0] * 6
        self.retried = 0
        self.redispatched = 0

    def _settings(self, config: BackendConfig) -> None:
        self.config = config
        self.server_timeout = config.timeouts.server
        self.retries = config.retries
        self.redispatch = config.redispatch
        self.retry_on = frozenset(config.retry_on)
        self.maxconn = config.maxconn
        self.queue_timeout = config.timeouts.queue
        self.persistence = CookiePersistence(config.cookie) if config.cookie else None

    def reconfigure(self, config: BackendConfig) -> Sliced[None]:
        """Apply a reloaded config in place: servers are matched by name and keep their
        health, counters, pool and slowstart; servers gone from the config drain and go;
        new ones start CHECKING when there are health checks; servers added while
        running (API, discovery) stay. Thousands of servers take milliseconds, so this is
        done in slices (lbproxy/slicing.py) between which traffic goes on; the balancers
        hear of the changes at the end: a few servers moved one by one (O(log n) each),
        new members or many changes in one update."""
        old = self.config
        self._settings(config)
        wanted = {server.name: server for server in config.servers}
        checked = config.health_check is not None
        moved: list[Server] = []         # weight, maxconn or backup changed
        regrouped: list[Server] = []     # backup changed
        yield from each(list(self.servers),
                        lambda server: self._reconcile(server, wanted, moved, regrouped))
        added = yield from mapped(list(wanted.values()),
                                  lambda server_config: self._join(server_config, up=not checked,
                                                                   dynamic=False))
        if (old.balance, old.balance_arg, old.hash_type) != (
                config.balance, config.balance_arg, config.hash_type):
            self._retire_balancers()
            self._new_balancers()
        elif added or regrouped or len(moved) > FEW_MOVED:
            normal, backups = self._split()
            self.balancer.update(normal)
            self.backup_balancer.update(backups)
        else:
            for server in moved:
                self.balancer_for(server).refresh(server)
        self._hooks()                       # (a server's maxconn may have come or gone)
        for server in added:
            self._notify(server, "added")
        self._notify(None, "reload")

    def _reconcile(self, server: Server, wanted: dict[str, ServerConfig],
                   moved: list[Server], regrouped: list[Server]) -> None:
        """A reload meets `server`: updated from its config (taken out of `wanted`) and
        noted if it moved in or between its balancers, or drained if the config dropped it."""
        server_config = wanted.pop(server.name, None)
        if server_config is None:
            if not server.dynamic:
                self.remove_server(server, drain=self.server_timeout)
            return
        backup, before = server.backup, (server.weight, server.maxconn)
        self._update_server(server, server_config)
        if server.backup != backup:
            regrouped.append(server)
        elif (server.weight, server.maxconn) != before:
            moved.append(server)

    def _update_server(self, server: Server, config: ServerConfig) -> None:
        """New settings for an existing server; a new address, TLS or connection setting
        of the backend gets a new pool."""
        if (config.address, self._pool_key(config)) != (server.address, server.pool_config):
            old_pool = server.pool
            server.address = config.address
            self._attach_pool(server, config)
            old_pool.close_idle()
        if server.config_weight != config.weight:
            server.config_weight = config.weight
            if server not in self._ramping:
                server.weight = config.weight
        server.maxconn = config.maxconn
        server.backup = config.backup
        server.cookie = config.cookie or config.name
        server.slowstart = config.slowstart
        if server.admin != config.state:
            self.set_admin(server, config.state)

    def _make_server(self, config: ServerConfig) -> Server:
        server = Server(config.name, config.address, weight=config.weight,
                        maxconn=config.maxconn, backup=config.backup, cookie=config.cookie,
                        slowstart=config.slowstart, admin=config.state)
        server.last_change = time.time()
        self._attach_pool(server, config)
        return server

    def _attach_pool(self, server: Server, config: ServerConfig) -> None:
        server.pool = self.make_pool(server, config, self.config)
        server.pool_config = self._pool_key(config)

    def _pool_key(self, config: ServerConfig) -> tuple:
        """What a server's connection pool is built from, besides its address."""
        backend = self.config
        return (config.tls, backend.proto, backend.http_reuse, backend.timeouts.connect,
                backend.max_response_header_size)

    def _split(self) -> tuple[list[Server], list[Server]]:
        """The normal servers and the backup servers, each in configured order."""
        return ([s for s in self.servers if not s.backup],
                [s for s in self.servers if s.backup])

    def _new_balancers(self) -> None:
        normal, backups = self._split()
        self.balancer: Balancer = self._balancer(normal)
        self.backup_balancer: Balancer = self._balancer(backups)
        self._hooks()

    def _retire_balancers(self) -> None:
        """Balancers no longer used get no members: their structures (a heap entry and
        its slot point at each other) hold no reference cycles then, so they are freed by
        reference counting (lbproxy/runtime/heap.py)."""
        self.balancer.update(())
        self.backup_balancer.update(())

    def _balancer(self, servers: list[Server]) -> Balancer:
        config = self.config
        return make_balancer(config.balance, config.balance_arg, config.hash_type, servers)

    def _hooks(self) -> None:
        """Most algorithms ignore on_start/on_finish: the data plane skips those calls."""
        self.lb_hooks = (self.balancer.wants_hooks(self.servers)
                         or self.backup_balancer.wants_hooks(self.servers))

    # the hot path

    def pick(self, request: RequestInfo, avoid: Server | None) -> Server | None:
        """A server for `request`: the sticky one, else the balancer's choice; backups
        only when no normal server is usable; None when full or nothing is usable."""
        if 0 < self.maxconn <= self.in_flight:
            return None
        if self.persistence is not None and avoid is None:
            server = self.persistence.stuck_server(request.sticky_id, self.servers)
            if server is not None:
                return server
        server = self.balancer.pick(request, avoid)
        if server is None and self.backup_balancer.servers:
            server = self._backup(request, avoid)
        return server

    def _backup(self, request: RequestInfo, avoid: Server | None) -> Server | None:
        """A backup server, when no normal server is usable."""
        if any(server.usable for server in self.balancer.servers):
            return None
        return self.backup_balancer.pick(request, avoid)

    def tick(self, now: float) -> None:
        """Called by the sweeper (through the dispatcher): step slowstart ramps."""
        if self._ramping and now >= self._next_ramp:
            self._next_ramp = now + RAMP_INTERVAL
            self._ramp(now)

    def _ramp(self, now: float) -> None:
        """Slowstart: a server that came up gets weight x elapsed/slowstart (at least 1).
        Only the ramping servers are moved in their balancer: O(k log n) for k of them."""
        for server, since in list(self._ramping.items()):
            elapsed = now - since
            if elapsed >= server.slowstart or server.config_weight == 0:
                server.weight = server.config_weight
                del self._ramping[server]
            else:
                server.weight = max(1, math.ceil(server.config_weight * elapsed
                                                 / server.slowstart))
            self.balancer_for(server).refresh(server)
        self._notify(None, "weight")

    def _start_ramp(self, server: Server) -> None:
        if server.slowstart > 0 and server.config_weight > 0:
            self._ramping[server] = self.state.time()
            server.weight = max(1, math.ceil(server.config_weight * 0.01))

    def balancer_for(self, server: Server) -> Balancer:
        return self.backup_balancer if server.backup else self.balancer

    # changes while running

    def server(self, name: str) -> Server | None:
        for server in self.servers:
            if server.name == name:
                return server
        return None

    def changed(self, server: Server | None, what: str) -> None:
        """`server` changed (added, removed, state, weight, health; None: several at once,
        a reload): tell the balancers, then the listeners (health checks, the dispatcher,
        whose queue may move now). A change of one server's state or weight is applied
        to its balancer alone, O(log n) for roundrobin and leastconn; a change of
        membership gives both balancers their new lists, which they diff."""
        if server is not None and what in ("state", "health", "weight"):
            self.balancer_for(server).refresh(server)
        else:
            normal, backups = self._split()
            self.balancer.update(normal)
            self.backup_balancer.update(backups)
            self._hooks()                   # (a server's maxconn may have come or gone)
        self._notify(server, what)

    def _notify(self, server: Server | None, what: str) -> None:
        if server is not None:
            server.last_change = time.time()
        for listener in self.listeners:
            listener(self, server, what)

    def add_server(self, config: ServerConfig, up: bool = True, dynamic: bool = True) -> Server:
        """Add a server; `up=False` keeps it out of rotation until health checks pass.
        `dynamic` servers (API, discovery) are not config's to remove on a reload."""
        if self.server(config.name) is not None:
            raise ValueError(f"backend {self.name!r} already has a server {config.name!r}")
        server = self._join(config, up, dynamic)
        self.changed(server, "added")
        return server

    def _join(self, config: ServerConfig, up: bool, dynamic: bool) -> Server:
        """A new member, not yet in the balancers (the caller tells them)."""
        server = self._make_server(config)
        server.dynamic = dynamic
        server.up = up
        if not up:
            server.check = "checking"
        self.servers.append(server)
        log.info("backend %s: server %s added (%s)", self.name, server.name, server.address)
        return server

    def set_admin(self, server: Server, admin: str) -> None:
        if admin not in ADMIN_STATES:
            raise ValueError(f"state must be one of {', '.join(ADMIN_STATES)}")
        if server.admin != admin:
            log.info("backend %s: server %s %s -> %s", self.name, server.name,
                     server.admin, admin)
            if admin == READY and server.admin == MAINT:
                self._start_ramp(server)
            server.admin = admin
            if admin == MAINT:
                server.pool.close_idle()
            self.changed(server, "state")

    def set_weight(self, server: Server, weight: int) -> None:
        if not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"weight must be an integer from 0 to {MAX_WEIGHT}")
        server.config_weight = server.weight = weight
        self.changed(server, "weight")

    def set_health(self, server: Server, up: bool, reason: str) -> None:
        """Health checks (active or passive) decided `server` is up or down."""
        server.reason = reason
        server.check = "up" if up else "down"
        if server.up != up:
            server.up = up
            if up:
                self._start_ramp(server)
            log.warning("backend %s: server %s is %s (%s)", self.name, server.name,
                        "UP" if up else "DOWN", reason)
            if not up:
                server.pool.close_idle()
            self.changed(server, "health")

    def remove_server(self, server: Server, drain: float) -> None:
        """Drain `server` (no new requests, in-flight ones finish), then remove it once
        it is idle or `drain` seconds have passed."""
        if server.name in self._removals:
            return
        self.set_admin(server, DRAIN)
        task = self.state.loop.create_task(self._remove_when_idle(server, drain))
        self._removals[server.name] = task

    async def _remove_when_idle(self, server: Server, drain: float) -> None:
        deadline = self.state.time() + drain
        try:
            while server.in_flight > 0 and self.state.time() < deadline:
                await asyncio.sleep(DRAIN_POLL)
        finally:
            self._removals.pop(server.name, None)
            if server in self.servers:
                self.servers.remove(server)
                self._ramping.pop(server, None)
                server.pool.close_idle()
                log.info("backend %s: server %s removed", self.name, server.name)
                self.changed(server, "removed")

    # life cycle

    def stop(self) -> None:
        """Cancel pending removals and close idle connections (the engine stops watchers);
        the balancers are retired: a retry of a request still in flight finds no server."""
        for task in self._removals.values():
            task.cancel()
        for server in self.servers:
            server.pool.close_idle()
        self._retire_balancers()
