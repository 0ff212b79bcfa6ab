"""Garbage collection on a large heap: what the configuration built is frozen.

At 5,000 servers the heap holds well over a hundred thousand containers, and a full
collection of CPython's cyclic garbage collector walks all of them: 30-150 ms during
which nothing else runs. Those objects live as long as their configuration, so they are
moved out of the collector's reach (gc.freeze) once the process has started, and the
objects a reload built join them right after it.

Nothing is ever handed back: a retired configuration (its config objects, removed
backends, servers, balancers, frontends) and a closed connection are freed by reference
counting alone, which is why they hold no reference cycles
(tests/integration/test_retired_garbage.py keeps it so). A cycle left among frozen objects
would never be collected. (One known exception: replacing the admin server, when a reload
changes `stats:`, leaves aiohttp's application cycles behind, a few hundred objects.)
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Up to this many new containers (a configuration of a few hundred servers), a reload's
# young objects are collected before they join the frozen heap (1-2 ms), so the cyclic
# garbage of that half second is freed instead of kept; above it the walk would stall
# traffic as a full collection did, and that garbage stays frozen.
YOUNG_COLLECT_LIMIT = 50_000


def freeze_started() -> None:
    """After the start: collect what building the configuration left, freeze the rest."""
    gc.collect()
    gc.freeze()


@contextmanager
def reloading() -> Iterator[None]:
    """Around a reload (Engine.around_reload): no automatic collection while the new
    configuration is read and applied, since each one would walk the thousands of objects
    being built while holding the GIL (a full one took 20-90 ms on the loop at 5,000
    servers); then everything alive, the new configuration with it, joins the frozen
    heap. What became garbage meanwhile was freed by reference counting; the young
    cyclic garbage of that half second is collected first when there is little of it
    (YOUNG_COLLECT_LIMIT), else it stays frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_count()[0] <= YOUNG_COLLECT_LIMIT:
            gc.collect(0)
        gc.freeze()
        if enabled:
            gc.enable()
