"""Health checks run once with `global.workers` > 1: worker 0 probes, the others hear.

Every HEALTH_SYNC the supervisor reads worker 0's servers and passes each result that
changed since its last copy to each other worker (PUT /internal/health on the worker's
private admin socket). A restarted worker is forgotten, so it gets every result again.
"""

from __future__ import annotations

import asyncio
import json
import logging

from lbproxy.runtime.worker_client import WorkerClient

log = logging.getLogger("lbproxy.workers")

HEALTH_SYNC = 0.5           # seconds between two copies of worker 0's results

ServerKey = tuple[str, str]                 # backend, server
HealthState = tuple[bool, str, str]         # up, check, reason


class HealthShare:
    def __init__(self, workers: WorkerClient) -> None:
        self.workers = workers
        self.pushed: list[dict[ServerKey, HealthState]] = [{} for _ in range(workers.count)]

    async def run(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_SYNC)
            try:
                await self.share()
            except Exception:                  # a worker restarting: try again next time
                log.debug("health sharing failed", exc_info=True)

    async def share(self) -> None:
        """Copy worker 0's health results to the other workers (what changed only)."""
        status, body, _ = await self.workers.ask(0, "GET", "/api/backends")
        if status != 200:
            return
        states = {(backend["name"], server["name"]): (server["up"], server["check"],
                                                      server["reason"])
                  for backend in json.loads(body)["backends"] for server in backend["servers"]}
        for index in range(1, self.workers.count):
            pushed = self.pushed[index]
            for (backend, server), state in states.items():
                if pushed.get((backend, server)) == state:
                    continue
                up, check, reason = state
                payload = json.dumps({"backend": backend, "server": server, "up": up,
                                      "check": check, "reason": reason}).encode()
                reply, _, _ = await self.workers.ask(index, "PUT", "/internal/health",
                                                     body=payload)
                if reply == 200:
                    pushed[(backend, server)] = state

    def forget(self, index: int) -> None:
        """Worker `index` restarted: it needs every health result again."""
        self.pushed[index] = {}
