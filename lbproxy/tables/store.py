"""Where stick tables live: `StickStore` is `global.stick_store: memory`, the base of the Redis one.

The engine asks the store for its tables (`sync`, at start and on every reload) and runs
the store's background task (`start`/`close`), which purges dead entries in small batches
so the data plane never pays for expiry beyond a couple of entries per insert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from lbproxy.tables.stick_table import StickTable, layout_of

log = logging.getLogger("lbproxy.tables")


class StickStore:
    """Tables of this process only; purged every `interval` seconds."""

    table_class: type[StickTable] = StickTable

    def __init__(self, *, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.tables: dict[str, StickTable] = {}
        self._task: asyncio.Task[None] | None = None

    def sync(self, configs: Iterable[Any]) -> dict[str, StickTable]:
        """Hold exactly the tables of `configs` (StickTableConfig) and return them by name.

        A table whose type and stored items are unchanged keeps its entries (a reload must
        not reset rate limits); any other change starts the table empty.
        """
        tables: dict[str, StickTable] = {}
        for config in configs:
            old = self.tables.get(config.name)
            if old is not None and old.config.type == config.type and old.layout == layout_of(config):
                old.reconfigure(config)
                tables[config.name] = old
            else:
                tables[config.name] = self.table_class(config, self.clock)
        self.tables = tables
        return tables

    async def start(self) -> None:
        """Start the background task (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="stick-store")

    async def close(self) -> None:
        """Stop the background task."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def tick(self) -> float:
        """One round of background work; returns the delay before the next one."""
        now = self.clock()
        for table in list(self.tables.values()):
            table.purge(now)
        return self.interval

    async def _run(self) -> None:
        delay = self.interval
        while True:
            await asyncio.sleep(delay)
            try:
                delay = await self.tick()
            except Exception:          # a bug must not stop expiry and sharing for good
                log.exception("stick store background task failed; retrying")
                delay = self.interval
