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
    cyclic garbage of that half second, if any, stays frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
