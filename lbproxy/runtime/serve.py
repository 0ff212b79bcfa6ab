"""Running the proxy as a process: event loop, signals, pidfile.

SIGTERM/SIGINT stop gracefully, SIGHUP reloads the configuration, SIGUSR1 reopens the
access log (CONFIG.md "Signals").
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
from collections.abc import Awaitable, Callable

from lbproxy.config.schema import Config
from lbproxy.runtime.engine import Engine, WorkerRole

log = logging.getLogger("lbproxy")


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
    """Run an Engine for `config` (read from `path`, which SIGHUP reads again) until
    SIGTERM or SIGINT; returns the exit code. A `worker` tells its supervisor it is
    ready by creating `worker-INDEX.ready` in the control directory."""
    loop = asyncio.get_running_loop()
    raise_fd_limit()
    engine = Engine(config, loop, path, worker)
    try:
        await engine.start()
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        return 1
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(engine.reload()))
    loop.add_signal_handler(signal.SIGUSR1, lambda: engine.access_log and engine.access_log.reopen())
    pidfile = config.global_.pidfile if worker is None else None   # the supervisor's
    if worker is not None:
        open(os.path.join(worker.control, f"worker-{worker.index}.ready"), "w").close()
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    log.info("lbproxy serving on %s", ", ".join(f"{h}:{p}" for h, p in engine.addresses))
    try:
        if on_ready is not None:
            await on_ready(engine)
        await stop.wait()
        log.info("stopping: finishing in-flight requests")
        await engine.stop()
    finally:
        if pidfile and os.path.exists(pidfile):
            os.unlink(pidfile)
    log.info("stopped")
    return 0
