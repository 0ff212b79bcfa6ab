"""The configuration's objects leave the collector's reach after the start; a reload runs
without automatic collections and what it built joins them; nothing is handed back."""

from __future__ import annotations

import gc
import weakref

from lbproxy.runtime import heap
from lbproxy.runtime.heap import freeze_started, reloading


class Built:
    """Stands for an object a reload builds (tracked by the collector)."""


def _tracked(objects: list[object]) -> int:
    """How many of `objects` are in the collector's generations (not frozen)."""
    ids = {id(obj) for obj in gc.get_objects()}
    return sum(id(obj) in ids for obj in objects)


def test_frozen_at_start_and_after_a_reload_without_collections_meanwhile():
    collections = []

    def count(phase: str, _info: dict) -> None:
        if phase == "start":
            collections.append(phase)

    gc.callbacks.append(count)
    try:
        freeze_started()
        started = gc.get_freeze_count()
        before = len(collections)
        with reloading():
            enabled_inside = gc.isenabled()
            built = [Built() for _ in range(20000)]      # would set off collections
            during = len(collections) - before
        reloaded = gc.get_freeze_count()
        # checked object by object, not by the freeze count alone, which falls meanwhile
        # when an object frozen earlier dies (in another thread of the test process)
        unfrozen = _tracked(built)
        gc.collect()                                    # a full collection hands nothing back
        handed_back = _tracked(built)
    finally:
        gc.callbacks.remove(count)
        gc.unfreeze()
    assert started > 0
    assert not enabled_inside, "automatic collections stay off during a reload"
    assert during == 0, f"{during} collections ran during the reload"
    assert gc.isenabled(), "collections are back on after it"
    assert reloaded > started and unfrozen == 0, (started, reloaded, unfrozen)
    assert handed_back == 0, "a full collection handed frozen objects back"


def test_a_small_reloads_cyclic_garbage_is_collected_not_frozen(monkeypatch):
    """Few new objects: a young collection before the freeze frees the reload's cycles.
    Many: no walk of them on the loop (the cycle stays frozen)."""
    def reload_leaving_a_cycle() -> weakref.ref:
        with reloading():
            cycle = Built()
            cycle.me = cycle
            gone = weakref.ref(cycle)
            del cycle
        return gone

    freeze_started()
    try:
        assert reload_leaving_a_cycle()() is None
        monkeypatch.setattr(heap, "YOUNG_COLLECT_LIMIT", -1)
        assert reload_leaving_a_cycle()() is not None
    finally:
        gc.unfreeze()
