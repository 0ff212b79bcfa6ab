"""The configuration's objects leave the collector's reach after the start, and what a
reload built joins them right after it; nothing is handed back."""

from __future__ import annotations

import asyncio
import gc

from lbproxy.runtime.heap import freeze_reloaded, freeze_started


def test_frozen_at_start_and_again_after_a_reload_without_unfreezing():
    class Built:
        """Stands for an object a reload builds (tracked by the collector)."""

    try:
        freeze_started()
        started = gc.get_freeze_count()
        built = [Built() for _ in range(1000)]
        asyncio.run(freeze_reloaded(None, None))
        reloaded = gc.get_freeze_count()
        gc.collect()                            # a full collection hands nothing back
        after_collection = gc.get_freeze_count()
    finally:
        gc.unfreeze()
    assert started > 0
    assert reloaded >= started + len(built)
    assert after_collection == reloaded
