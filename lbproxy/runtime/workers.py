"""`global.workers: N`: a supervisor running N worker processes on every core.

Each worker is a whole proxy (`lbproxy run --worker-index K`): its listeners share their
ports through SO_REUSEPORT, so the kernel spreads connections over the workers. The
supervisor serves no traffic. It:

- starts the workers and waits until each says it is ready (a worker that dies during
  start fails the whole start, as a single process would);
- restarts a worker that crashes, with a growing delay when it keeps crashing;
- forwards SIGHUP (reload), SIGUSR1 (reopen logs) and, on SIGTERM/SIGINT, stops them all
  gracefully and exits 0;
- passes worker 0's health-check results to the others, so servers are probed once
  (lbproxy/runtime/health_share.py);
- serves `stats.bind` itself, merging what every worker reports (lbproxy/admin/fanout.py).

Workers talk to the supervisor through their admin app on a unix socket in a private
directory (mode 0700) made for this run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile

from lbproxy.admin.fanout import FanoutServer
from lbproxy.config.errors import ListenError
from lbproxy.config.schema import Config
from lbproxy.proxy.openssl_ctx import TICKET_SECRET_ENV, ticket_secret
from lbproxy.runtime.control import ready_path, remove_pidfile, write_pidfile
from lbproxy.runtime.health_share import HealthShare
from lbproxy.runtime.worker_client import WorkerClient

log = logging.getLogger("lbproxy.workers")

READY_TIMEOUT = 30.0        # seconds a worker gets to bind and start
STOP_GRACE = 35.0           # a worker's own graceful stop takes up to 30 s
RESTART_DELAY = (0.5, 30.0) # first and largest delay before restarting a crashing worker
STABLE_AFTER = 60.0         # a worker that ran this long resets the delay


class Supervisor:
    def __init__(self, config: Config, path: str) -> None:
        self.config = config
        self.path = path
        self.count = config.global_.workers
        self.control = ""
        self.procs: list[asyncio.subprocess.Process | None] = [None] * self.count
        # SIGHUP/SIGUSR1 for a worker still starting wait here until it is ready: before
        # its handlers are in place they would kill it (and, during the first start, all)
        self.held: list[set[int] | None] = [set() for _ in range(self.count)]
        self.stopping = asyncio.Event()
        self.workers: WorkerClient | None = None
        self.fanout: FanoutServer | None = None
        self.health: HealthShare | None = None
        self._tasks: list[asyncio.Task] = []

    async def run(self) -> int:
        self.control = tempfile.mkdtemp(prefix="lbproxy-workers-")
        loop = asyncio.get_running_loop()
        # Handlers first: a SIGTERM during start must stop the workers, not orphan them.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        for signum in (signal.SIGHUP, signal.SIGUSR1):
            loop.add_signal_handler(signum, self._forward, signum)
        try:
            if not await self._start_all():
                return 1
            self._tasks = [loop.create_task(self._keep(index)) for index in range(self.count)]
            self.workers = WorkerClient(self.control, self.count)
            self.fanout = FanoutServer(self.config.stats, self.workers, self.stopping)
            try:
                await self.fanout.start()
            except ListenError as exc:
                log.error("%s; stopping the workers", exc)
                return 1
            if any(b.health_check for b in self.config.backends.values()):
                self.health = HealthShare(self.workers)
                self._tasks.append(loop.create_task(self.health.run()))
            write_pidfile(self.config.global_.pidfile)
            log.info("lbproxy supervisor: %d workers serving", self.count)
            await self.stopping.wait()
            log.info("stopping: workers finish their in-flight requests")
            await self._stop_all()
            return 0
        finally:
            for task in self._tasks:
                task.cancel()
            if self.fanout is not None:
                await self.fanout.stop()
            if self.workers is not None:
                await self.workers.close()
            self._kill_all()
            remove_pidfile(self.config.global_.pidfile)
            shutil.rmtree(self.control, ignore_errors=True)

    # workers

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        ready = ready_path(self.control, index)
        if os.path.exists(ready):
            os.unlink(ready)
        self.held[index] = set()
        # one TLS session ticket secret for all, so that tickets are good on every worker
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lbproxy", "run", "-c", self.path,
            "--worker-index", str(index), "--control-dir", self.control,
            env={**os.environ, TICKET_SECRET_ENV: ticket_secret().hex()})
        self.procs[index] = proc
        return proc

    async def _ready(self, index: int, proc: asyncio.subprocess.Process) -> bool:
        """Wait for worker `index` to say it is ready, then give it the signals held."""
        ready = ready_path(self.control, index)
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
        while not os.path.exists(ready):
            if proc.returncode is not None or asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.02)
        held = self.held[index] or set()
        self.held[index] = None
        for signum in sorted(held):
            proc.send_signal(signum)
        return True

    async def _start_all(self) -> bool:
        procs = [await self._spawn(index) for index in range(self.count)]
        ready = await asyncio.gather(*(self._ready(i, p) for i, p in enumerate(procs)))
        if all(ready):
            return True
        log.error("a worker could not start (see its errors above); stopping")
        self._kill_all()
        return False

    async def _keep(self, index: int) -> None:
        """Restart worker `index` whenever it dies while we are not stopping."""
        delay = RESTART_DELAY[0]
        loop = asyncio.get_running_loop()
        while True:
            proc = self.procs[index]
            started = loop.time()
            code = await proc.wait()
            if self.stopping.is_set():
                return
            log.error("worker %d exited with %s; restarting it in %.1fs", index, code, delay)
            await asyncio.sleep(delay)
            delay = RESTART_DELAY[0] if loop.time() - started > STABLE_AFTER \
                else min(delay * 2, RESTART_DELAY[1])
            proc = await self._spawn(index)
            if await self._ready(index, proc) and self.health is not None:
                self.health.forget(index)

    def _forward(self, signum: int, hold: bool = True) -> None:
        """`signum` to every worker; with `hold`, to those still starting once ready."""
        for proc, held in zip(self.procs, self.held):
            if hold and held is not None:
                held.add(signum)
            elif proc is not None and proc.returncode is None:
                proc.send_signal(signum)

    async def _stop_all(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._forward(signal.SIGTERM, hold=False)
        waits = [proc.wait() for proc in self.procs if proc is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), STOP_GRACE)
        except asyncio.TimeoutError:
            log.warning("workers still running after %.0fs: killing them", STOP_GRACE)

    def _kill_all(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.returncode is None:
                proc.kill()

