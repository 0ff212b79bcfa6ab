"""HeapFreezer: the configuration's objects leave the collector's reach after start, come
back on a reload, and are frozen again after the next full collection."""

from __future__ import annotations

import asyncio
import gc

from lbproxy.runtime.heap import HeapFreezer


def test_frozen_at_start_handed_back_on_reload_and_frozen_after_the_next_collection():
    async def run() -> list[int]:
        heap = HeapFreezer(asyncio.get_running_loop())
        counts = []
        try:
            heap.started()
            counts.append(gc.get_freeze_count())
            await heap.reloaded(None, None)
            counts.append(gc.get_freeze_count())
            gc.collect(1)                       # not a full one: nothing changes
            await asyncio.sleep(0)
            counts.append(gc.get_freeze_count())
            gc.collect()
            await asyncio.sleep(0)
            counts.append(gc.get_freeze_count())
            gc.collect()                        # only the first full one after a reload
            gc.unfreeze()
            await asyncio.sleep(0)
            counts.append(gc.get_freeze_count())
        finally:
            heap.close()
            gc.unfreeze()
        return counts

    started, reloaded, partial, refrozen, later = asyncio.run(run())
    assert started > 0 and refrozen > 0
    assert reloaded == partial == later == 0
