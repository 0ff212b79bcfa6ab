"""Builds the live objects from a Config, runs them, reloads them and stops them.

- `start()` binds every listener before it serves any, so a config whose port is taken
  fails whole.
- `reload()` (SIGHUP, the API) validates the new files first and changes nothing when
  they are wrong; then binds any new address (all or nothing), and only then
  reconciles by name: listeners on unchanged addresses keep their sockets, frontends
  and backends are reconfigured in place (counters, connections, pools, health state
  and stick-table entries stay), removed servers drain.
- `stop()` is the graceful stop (docs/configuration.md, Signals): stop accepting, close idle connections,
  let in-flight requests finish up to a deadline, then cut the rest.

The engine is the data plane only; lbproxy/runtime/serve.py assembles a process from it
and the admin server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial

from lbproxy.backends.backend import Backend
from lbproxy.config.errors import ConfigError, ListenError
from lbproxy.config.schema import BackendConfig, BindConfig, BindTLSConfig, Config
from lbproxy.proxy.cache_store import Cache
from lbproxy.proxy.dispatch import Dispatcher
from lbproxy.proxy.frontend import Frontend
from lbproxy.proxy.listener import Listener, bind_socket
from lbproxy.proxy.openssl_ctx import rotate_ticket_keys, seconds_to_rotation
from lbproxy.proxy.proxied_tls import ProxiedTLSListener
from lbproxy.proxy.state import ProxyState
from lbproxy.proxy.upstream import make_pool
from lbproxy.routing.actions import FrontendRules
from lbproxy.routing.maps import MapFiles
from lbproxy.routing.runtime import RuleRuntime
from lbproxy.runtime.accesslog import AccessLog, make_access_log
from lbproxy.runtime.control import WorkerRole
from lbproxy.runtime.validate import (bind_contexts, compile_frontends, load_checked_off_loop,
                                      table_configs)
from lbproxy.runtime.watchers import start_watchers, stop_watchers, watchers_changed
from lbproxy.slicing import sliced
from lbproxy.tables import open_store

log = logging.getLogger("lbproxy")

STOP_GRACE = 30.0          # seconds in-flight requests get on SIGTERM
LOG_CLOSE_TIMEOUT = 1.0    # then seconds the last access-log lines get to go out

ListenKey = tuple[str, int]


@dataclass
class _Bind:
    """One bind of the configuration on its way to a listener."""
    frontend: str
    config: BindConfig
    context: ssl.SSLContext | None
    listener: Listener | None        # the listener already on this address, if any
    sock: socket.socket | None       # a freshly bound socket otherwise


class Engine:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop | None = None,
                 path: str | os.PathLike[str] | None = None,
                 worker: WorkerRole | None = None) -> None:
        self.config = config
        self.path = path                 # what reload() reads again
        self.worker = worker
        self.loop = loop or asyncio.get_running_loop()
        self.started = time.time()
        self.state = ProxyState(self.loop, config.global_.max_connections)
        self.caches = {name: Cache(cache) for name, cache in config.caches.items()}
        self.access_log: AccessLog | None = make_access_log(config.global_.log, self.loop)
        self.backends: dict[str, Backend] = {}
        self.dispatchers: dict[str, Dispatcher] = {}
        for backend_config in config.backends.values():
            self._add_backend(backend_config)
        self.store = open_store(config.global_.stick_store)
        self.maps = MapFiles()           # the map files the rules read (runtime API edits)
        rules = self._sync_tables_and_compile(config, self.maps)
        self.frontends: dict[str, Frontend] = {
            name: Frontend(frontend_config, self.state, self.dispatchers, self.access_log,
                           rules[name])
            for name, frontend_config in config.frontends.items()}
        self.state.frontends = list(self.frontends.values())
        self.state.dispatchers = list(self.dispatchers.values())
        self.listeners: dict[ListenKey, Listener] = {}
        self._listener_tls: dict[ListenKey, BindTLSConfig | None] = {}
        self.autoscale: dict[str, dict] = {}   # pool -> what the autoscaler last reported
        # called with (old, new) after a reload was applied (the admin server's restart)
        self.on_reload: list[Callable[[Config, Config], Awaitable[None]]] = []
        # what the process does around a reload attempt (serve.py: the collector's policy,
        # lbproxy/runtime/heap.py)
        self.around_reload: Callable[[], AbstractContextManager[object]] = nullcontext
        self._reloading = asyncio.Lock()
        self._old_logs_dropped = 0       # lines dropped by access logs a reload replaced
        self._ticket_rotation: asyncio.Task | None = None

    def _add_backend(self, config: BackendConfig) -> Backend:
        """A backend, and the dispatcher that sends it its requests."""
        backend = self.backends[config.name] = Backend(config, self.state,
                                                       partial(make_pool, self.state))
        dispatcher = self.dispatchers[config.name] = Dispatcher(backend, self.state)
        dispatcher.cache = self.caches.get(config.cache) if config.cache else None
        return backend

    @property
    def active_checks(self) -> bool:
        """Whether this process probes servers: with workers, only worker 0 does."""
        return self.worker is None or self.worker.index == 0

    def _sync_tables_and_compile(self, config: Config,
                                 maps: MapFiles) -> dict[str, FrontendRules]:
        table_list, errors = table_configs(config)
        self.tables = self.store.sync(table_list)
        rules, rule_errors = compile_frontends(config, RuleRuntime(self.backends, maps),
                                               self.tables)
        if errors or rule_errors:
            raise ConfigError(errors + rule_errors)
        return rules

    # start

    async def start(self) -> None:
        """Bind all listeners (all or none), then serve."""
        await self._serve(self._bind(self.config))
        await self.store.start()
        for backend in self.backends.values():
            start_watchers(backend, self.active_checks)
        self.state.start()
        self._ticket_rotation = self.loop.create_task(self._rotate_ticket_keys())

    async def _rotate_ticket_keys(self) -> None:
        """TLS session ticket keys change every hour, in step with the other workers."""
        while True:
            await asyncio.sleep(seconds_to_rotation())
            rotate_ticket_keys()

    def close_listeners(self) -> None:
        """Stop listening at once (a start that failed after the listeners were bound)."""
        for listener in self.listeners.values():
            listener.close()

    def _bind(self, config: Config) -> list[_Bind]:
        """Every bind of `config`, with its TLS context, reusing listeners on the same
        address and binding new sockets for the rest. All or nothing: on an error the
        new sockets are closed and nothing running has changed."""
        binds: list[_Bind] = []
        try:
            for frontend in config.frontends.values():
                contexts, errors = bind_contexts(frontend)
                if errors:
                    raise ConfigError(errors)
                for bind, context in zip(frontend.bind, contexts):
                    listener = self.listeners.get(_key(bind))
                    sock = None if listener is not None else self._bind_socket(bind)
                    binds.append(_Bind(frontend.name, bind, context, listener, sock))
        except (OSError, ConfigError):
            for bind in binds:
                if bind.sock is not None:
                    bind.sock.close()
            raise
        return binds

    def _bind_socket(self, bind: BindConfig) -> socket.socket:
        try:
            return bind_socket(bind.address, reuse_port=self.worker is not None)
        except OSError as exc:
            raise ListenError(bind.address, exc) from exc

    async def _serve(self, binds: list[_Bind]) -> None:
        """Make the listeners match `binds`: start new ones, point kept ones at their
        (possibly new) frontend, restart those whose TLS or kind changed, close the rest."""
        listeners: dict[ListenKey, Listener] = {}
        for frontend in self.frontends.values():
            frontend.listeners = []
        for bind in binds:
            key = _key(bind.config)
            frontend = self.frontends[bind.frontend]
            listener, sock = bind.listener, bind.sock
            # a TLS bind of an accept_proxy frontend reads the PROXY header before TLS
            kind = (ProxiedTLSListener if frontend.config.accept_proxy
                    and bind.context is not None else Listener)
            if listener is not None and type(listener) is not kind:
                listener.pause()            # its socket goes on under the other kind
                listener, sock = None, listener.sock
            # a connection's local port is the bind's: given, not asked of each socket
            port = (sock if listener is None else listener.sock).getsockname()[1]
            factory = partial(frontend.protocol, bind.config.h2c, port)
            if listener is None:
                listener = kind(sock, factory, bind.context, frontend.timeout_http_request)
                await listener.start()
            else:
                listener.factory = factory
                listener.handshake_timeout = frontend.timeout_http_request
                if self._listener_tls.get(key) != bind.config.tls:
                    await listener.restart(bind.context)
            self._listener_tls[key] = bind.config.tls
            listeners[key] = listener
            frontend.listeners.append(listener)
        for key, listener in self.listeners.items():
            if key not in listeners:
                listener.close()
                self._listener_tls.pop(key, None)
        self.listeners = listeners

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the listeners are bound."""
        return [listener.address for listener in self.listeners.values()]

    @property
    def log_lines_dropped(self) -> int:
        """Access-log lines lost since the start (for /metrics)."""
        current = self.access_log.dropped if self.access_log is not None else 0
        return self._old_logs_dropped + current

    # reload

    async def reload(self) -> list[str]:
        """Re-read the configuration and apply it; returns the errors (empty: applied).
        With errors, the running configuration is left exactly as it was."""
        if self.path is None:
            return ["no configuration file to reload (the proxy was started without one)"]
        async with self._reloading:
            with self.around_reload():
                return await self._reload(self.path)

    async def _reload(self, path: str | os.PathLike[str]) -> list[str]:
        """reload() under its lock."""
        access_log = self.access_log
        maps = MapFiles()            # read again: runtime edits of the old ones are dropped
        try:
            config = await load_checked_off_loop(path, maps)
            access_log = self._reopen_log(config)
            binds = self._bind(config)
        except ConfigError as exc:
            self._discard_log(access_log)
            log.error("reload refused, the previous configuration keeps running:\n%s", exc)
            return exc.errors
        except OSError as exc:       # it names the address or the file
            self._discard_log(access_log)
            log.error("reload refused, the previous configuration keeps running: %s", exc)
            return [str(exc)]
        old_log = self.access_log
        await self._apply(config, binds, access_log, maps)
        if old_log is not None and old_log is not access_log:
            old_log.close(0.0)          # its thread writes what it has, then ends
            self._old_logs_dropped += old_log.dropped
        log.info("configuration reloaded from %s", path)
        return []

    def _reopen_log(self, config: Config) -> AccessLog | None:
        """The access log `config` asks for: the current one when unchanged, else a new
        one opened now, before anything is applied (a file that cannot be opened
        refuses the reload instead of leaving it half done)."""
        if config.global_.log == self.config.global_.log:
            return self.access_log
        return make_access_log(config.global_.log, self.loop)

    def _update_caches(self, config: Config) -> None:
        """Caches kept by name keep their entries (a smaller size trims them); new ones
        start empty, removed ones are dropped."""
        caches = {}
        for name, cache_config in config.caches.items():
            cache = self.caches.get(name)
            if cache is None:
                cache = Cache(cache_config)
            else:
                cache.configure(cache_config)
            caches[name] = cache
        self.caches = caches

    def _discard_log(self, access_log: AccessLog | None) -> None:
        """A refused reload: close the access log it had opened, if any."""
        if access_log is not None and access_log is not self.access_log:
            access_log.close(0.0)

    async def _apply(self, config: Config, binds: list[_Bind],
                     access_log: AccessLog | None, maps: MapFiles) -> None:
        old = self.config
        self._update_caches(config)
        for name, backend_config in config.backends.items():
            backend = self.backends.get(name)
            if backend is None:
                start_watchers(self._add_backend(backend_config), self.active_checks)
                continue
            restart = watchers_changed(backend.config, backend_config)
            await sliced(backend.reconfigure(backend_config))
            self.dispatchers[name].cache = (self.caches.get(backend_config.cache)
                                            if backend_config.cache else None)
            if restart:
                await stop_watchers(backend)
                start_watchers(backend, self.active_checks)
        for name in [name for name in self.backends if name not in config.backends]:
            backend = self.backends.pop(name)        # in-flight requests keep their objects
            self.dispatchers.pop(name).close()
            await stop_watchers(backend)
            backend.stop()
        self.access_log = access_log
        rules = self._sync_tables_and_compile(config, maps)
        self.maps = maps
        for name, frontend_config in config.frontends.items():
            frontend = self.frontends.get(name)
            if frontend is None:
                self.frontends[name] = Frontend(frontend_config, self.state, self.dispatchers,
                                                self.access_log, rules[name])
            else:
                frontend.configure(frontend_config, self.dispatchers, self.access_log,
                                   rules[name])
        for name in [name for name in self.frontends if name not in config.frontends]:
            # its open connections finish as they are; its listeners close or move to
            # another frontend (_serve), and hold no cycle back to it
            self.frontends.pop(name).listeners.clear()
        self.state.frontends = list(self.frontends.values())
        self.state.dispatchers = list(self.dispatchers.values())
        self.state.max_connections = self.state.connections_allowed(
            config.global_.max_connections)
        await self._serve(binds)
        self.config = config
        for client in list(self.state.clients):
            client.reloaded()
        for hook in self.on_reload:
            await hook(old, config)

    # stop

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Graceful stop: no new connections, in-flight requests finish, then exit."""
        state = self.state
        state.stopping = True
        for listener in self.listeners.values():
            listener.close()
        for client in list(state.clients):
            client.close_if_idle()
        deadline = self.loop.time() + grace
        while state.clients and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for client in list(state.clients):
            client.abort()
        for backend in self.backends.values():
            await stop_watchers(backend)
            backend.stop()
        await self.store.close()
        if self.access_log is not None:
            self.access_log.close(LOG_CLOSE_TIMEOUT)
        if self._ticket_rotation is not None:
            self._ticket_rotation.cancel()
        await state.close()


def _key(bind: BindConfig) -> ListenKey:
    return (bind.address.host, bind.address.port)
