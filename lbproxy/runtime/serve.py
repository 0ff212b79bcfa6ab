"""A proxy process assembled: the engine (data plane) and its admin server, the event
loop, signals and pidfile.

SIGTERM/SIGINT stop gracefully, SIGHUP reloads the configuration, SIGUSR1 reopens the
access log (docs/configuration.md, "Signals"). With `global.workers` > 1 the supervisor
(lbproxy/runtime/workers.py) runs one such process per worker.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
from collections.abc import Awaitable, Callable

from lbproxy.admin.app import AdminServer
from lbproxy.config.schema import Config
from lbproxy.proxy.openssl_ctx import ticket_secret
from lbproxy.runtime.control import WorkerRole, remove_pidfile, write_pidfile
from lbproxy.runtime.engine import STOP_GRACE, Engine
from lbproxy.runtime.heap import freeze_started, reloading

log = logging.getLogger("lbproxy")


class ProxyProcess:
    """The engine and the admin server of one process, started, reloaded and stopped
    together. The admin server runs when `stats:` is configured, and always in a worker
    (privately, for its supervisor)."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop | None = None,
                 path: str | None = None, worker: WorkerRole | None = None) -> None:
        self.engine = Engine(config, loop, path, worker)
        self.admin: AdminServer | None = None
        self.engine.on_reload.append(self._reloaded)

    async def start(self) -> None:
        """Listen (all binds or none), then serve the admin app; a port that cannot be
        bound fails the whole start."""
        await self.engine.start()
        try:
            await self._start_admin()
        except OSError:
            self.engine.close_listeners()
            raise

    async def _start_admin(self) -> None:
        engine = self.engine
        worker = engine.worker
        if engine.config.stats is not None or worker is not None:
            self.admin = AdminServer(engine, worker.socket if worker else None)
            await self.admin.start()

    async def _reloaded(self, old: Config, new: Config) -> None:
        if new.stats != old.stats and self.engine.worker is None:
            if self.admin is not None:
                await self.admin.stop()
                self.admin = None
            await self._start_admin()

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Graceful stop; the admin app answers /health 503 until in-flight requests end."""
        await self.engine.stop(grace)
        if self.admin is not None:
            await self.admin.stop()


def raise_fd_limit() -> int:
    """Raise the open-files soft limit to the hard limit: every client and server
    connection is a descriptor, and the common default of 1024 caps a proxy at a few
    hundred clients. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d: %s", soft, exc)
    return soft


def run_loop(main: Awaitable[int]) -> int:
    """Run `main` on uvloop (the default loop only if uvloop is missing)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def serve(config: Config, path: str | None = None,
                on_ready: Callable[[Engine], Awaitable[None]] | None = None,
                worker: WorkerRole | None = None) -> int:
    """Run a ProxyProcess for `config` (read from `path`, which SIGHUP reads again) until
    SIGTERM or SIGINT; returns the exit code. A `worker` tells its supervisor it is
    ready through the control directory."""
    loop = asyncio.get_running_loop()
    raise_fd_limit()
    ticket_secret()     # out of the environment before a plugin or a reload could start a process
    try:
        process = ProxyProcess(config, loop, path, worker)   # opens the access log
        await process.start()
    except OSError as exc:   # says which address it could not bind, or which log file
        log.error("%s", exc)
        return 1
    engine = process.engine
    freeze_started()
    engine.around_reload = reloading
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(engine.reload()))
    loop.add_signal_handler(signal.SIGUSR1, lambda: engine.access_log and engine.access_log.reopen())
    pidfile = config.global_.pidfile if worker is None else None   # the supervisor's
    if worker is not None:
        worker.announce_ready()
    write_pidfile(pidfile)
    log.info("lbproxy serving on %s", ", ".join(f"{h}:{p}" for h, p in engine.addresses))
    try:
        if on_ready is not None:
            await on_ready(engine)
        await stop.wait()
        log.info("stopping: finishing in-flight requests")
        await process.stop()
    finally:
        remove_pidfile(pidfile)
    log.info("stopped")
    return 0
