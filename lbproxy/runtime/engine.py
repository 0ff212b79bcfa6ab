"""Builds the live objects from a Config and runs them: listeners, frontends, backends.

`start()` binds every listener before it serves any, so a config whose port is taken
fails whole. `stop()` is the graceful stop of CONFIG.md: stop accepting, close idle
connections, let in-flight requests finish up to a deadline, then cut the rest.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from lbproxy.backends.backend import Backend
from lbproxy.config.errors import ConfigError
from lbproxy.config.schema import Config
from lbproxy.proxy.client import IDLE
from lbproxy.proxy.frontend import Frontend
from lbproxy.proxy.listener import Listener, bind_socket
from lbproxy.proxy.state import ProxyState
from lbproxy.routing.runtime import RuleRuntime
from lbproxy.runtime.accesslog import AccessLog, make_access_log
from lbproxy.runtime.validate import bind_contexts, compile_frontends, table_configs
from lbproxy.tables import open_store

log = logging.getLogger("lbproxy")

STOP_GRACE = 30.0          # seconds in-flight requests get on SIGTERM
LOG_FLUSH_INTERVAL = 0.5   # access log lines reach a pipe within this delay


class Engine:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.config = config
        self.loop = loop or asyncio.get_running_loop()
        self.state = ProxyState(self.loop, config.global_.max_connections)
        self.access_log: AccessLog | None = make_access_log(config.global_.log)
        self.backends: dict[str, Backend] = {
            name: Backend(backend_config, self.state)
            for name, backend_config in config.backends.items()}
        self.store = open_store(config.global_.stick_store)
        table_list, errors = table_configs(config)
        self.tables = self.store.sync(table_list)
        rules, rule_errors = compile_frontends(config, RuleRuntime(self.backends), self.tables)
        if errors or rule_errors:
            raise ConfigError(errors + rule_errors)
        self.frontends: dict[str, Frontend] = {
            name: Frontend(frontend_config, self.state, self.backends, self.access_log,
                           rules[name])
            for name, frontend_config in config.frontends.items()}
        self.state.frontends = list(self.frontends.values())
        self.state.backends = list(self.backends.values())
        self.listeners: list[Listener] = []
        self.admin = None         # lbproxy.admin.app.AdminServer when `stats:` is configured
        self._housekeeping: asyncio.Task | None = None

    async def start(self) -> None:
        """Bind all listeners (all or none), then serve."""
        bound: list[tuple[Frontend, socket.socket, ssl.SSLContext | None]] = []
        try:
            for frontend in self.frontends.values():
                contexts, errors = bind_contexts(frontend.config)
                if errors:
                    raise ConfigError(errors)
                for bind, context in zip(frontend.config.bind, contexts):
                    bound.append((frontend, bind_socket(bind.address), context))
        except (OSError, ConfigError):
            for _, sock, _ in bound:
                sock.close()
            raise
        for frontend, sock, ssl_context in bound:
            listener = Listener(sock, frontend.protocol, ssl_context)
            await listener.start()
            frontend.listeners.append(listener)
            self.listeners.append(listener)
        await self.store.start()
        for backend in self.backends.values():
            backend.start()
        if self.config.stats is not None:
            from lbproxy.admin.app import AdminServer
            self.admin = AdminServer(self)
            await self.admin.start()
        self.state.start()
        if self.access_log is not None:
            self._housekeeping = self.loop.create_task(self._flush_logs())

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the listeners are bound (useful when a config asked for port 0)."""
        return [listener.address for listener in self.listeners]

    async def _flush_logs(self) -> None:
        while True:
            await asyncio.sleep(LOG_FLUSH_INTERVAL)
            self.access_log.flush()

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Graceful stop: no new connections, in-flight requests finish, then exit."""
        state = self.state
        state.stopping = True
        for listener in self.listeners:
            listener.close()
        for client in list(state.clients):
            if client.phase == IDLE and client.current is None:
                client.close()
        deadline = self.loop.time() + grace
        while state.clients and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for client in list(state.clients):
            client.abort()
        for backend in self.backends.values():
            await backend.stop()
        if self.admin is not None:
            await self.admin.stop()
        await self.store.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self.access_log is not None:
            self.access_log.flush()
        await state.close()
