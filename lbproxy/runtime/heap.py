"""Garbage collection on a large heap: what the configuration built is frozen.

At 5,000 servers the heap holds well over a million objects, and a full collection of
CPython's cyclic garbage collector walks all of them: 30-75 ms during which nothing else
runs. Those objects live as long as their configuration, so they are moved out of the
collector's reach (gc.freeze) once the process has started. A reload replaces them: they
are handed back (gc.unfreeze) so the old configuration's cycles can be freed, and frozen
again right after the next full collection, which the reload's own allocations bring
about soon.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any


class HeapFreezer:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.refreeze = False
        gc.callbacks.append(self._collected)

    def started(self) -> None:
        gc.collect()
        gc.freeze()

    async def reloaded(self, _old: object, _new: object) -> None:
        """An Engine.on_reload callback."""
        gc.unfreeze()
        self.refreeze = True

    def close(self) -> None:
        if self._collected in gc.callbacks:
            gc.callbacks.remove(self._collected)

    def _collected(self, phase: str, info: dict[str, Any]) -> None:
        """After a full collection (in whatever thread it ran), freeze again on the loop."""
        if phase == "stop" and info["generation"] == 2 and self.refreeze:
            self.refreeze = False
            self.loop.call_soon_threadsafe(gc.freeze)
