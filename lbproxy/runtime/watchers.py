"""What watches a backend's servers: active health checks, passive ejection, DNS discovery.

The engine starts them with their backend and, on a reload that changes their settings,
stops and starts them again; the backend itself only holds them (it is the layer below).
Active checks run in one process only: with `global.workers` > 1, worker 0 probes and the
supervisor passes the results on (lbproxy/runtime/health_share.py).
"""

from __future__ import annotations

from lbproxy.backends.backend import Backend
from lbproxy.backends.discovery import Discovery
from lbproxy.config.schema import BackendConfig
from lbproxy.health.active import ActiveChecker
from lbproxy.health.passive import PassiveMonitor


def start_watchers(backend: Backend, active_checks: bool) -> None:
    config = backend.config
    if config.health_check is not None and active_checks:
        backend.checker = ActiveChecker(backend)
        backend.checker.start()
    if config.passive is not None:
        backend.passive = PassiveMonitor(backend)
    if config.server_template is not None:
        backend.discovery = Discovery(backend)
        backend.discovery.start()


async def stop_watchers(backend: Backend) -> None:
    for watcher in (backend.checker, backend.passive, backend.discovery):
        if watcher is not None:
            await watcher.stop()
    backend.checker = backend.passive = backend.discovery = None


def watchers_changed(old: BackendConfig, new: BackendConfig) -> bool:
    """Whether a reload from `old` to `new` must restart the watchers."""
    return ((old.health_check, old.passive, old.server_template)
            != (new.health_check, new.passive, new.server_template))
