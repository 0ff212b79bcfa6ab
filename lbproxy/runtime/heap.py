"""Garbage collection on a large heap: what the configuration built is frozen.

At 5,000 servers the heap holds well over a hundred thousand containers, and a full
collection of CPython's cyclic garbage collector walks all of them: 30-150 ms during
which nothing else runs. Those objects live as long as their configuration, so they are
moved out of the collector's reach (gc.freeze) once the process has started, and the
objects a reload built join them right after it. Nothing is ever handed back: a retired
configuration (its config objects, removed backends, servers, balancers, frontends) and
a closed connection are freed by reference counting alone, which is why they hold no
reference cycles (tests/unit/test_heap.py keeps it so). A cycle left among frozen
objects would never be collected.
"""

from __future__ import annotations

import gc


def freeze_started() -> None:
    """After the start: collect what building the configuration left, freeze the rest."""
    gc.collect()
    gc.freeze()


async def freeze_reloaded(_old: object, _new: object) -> None:
    """An Engine.on_reload callback: the young generations' garbage is collected (a few
    thousand objects at most, unlike a full collection) and what the reload built is
    frozen with the rest."""
    gc.collect(1)
    gc.freeze()
