"""Sliced work: slices end after SLICE seconds of work, and the loop is then left to
other work for YIELDED times as long as the slice took."""

from __future__ import annotations

import asyncio
import time

import pytest

from lbproxy import slicing
from lbproxy.slicing import SLICE, YIELDED, at_once, each, json_parts, mapped, sliced


class Clock:
    """perf_counter for the module: time passes only in the work (`work`)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, n: int) -> int:
        self.now += SLICE / 4
        return n * n


def test_slices_end_after_slice_seconds_and_the_loop_gets_twice_as_long(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(slicing, "perf_counter", clock)
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(slicing.asyncio, "sleep", sleep)
    assert asyncio.run(sliced(mapped(range(10), clock.work))) == [n * n for n in range(10)]
    assert pauses == [pytest.approx(YIELDED * SLICE)] * 2     # after items 4 and 8


def test_each_and_json_parts_give_what_they_would_at_once() -> None:
    seen: list[int] = []
    at_once(each(range(5), seen.append))
    parts: list[str] = []
    at_once(json_parts({"a": [1, {"b": [2, 3]}], "c": "d"}, parts))
    assert seen == [0, 1, 2, 3, 4]
    assert "".join(parts) == '{"a":[1,{"b":[2,3]}],"c":"d"}'


def test_paced_work_in_a_thread_leaves_the_gil_two_thirds_of_the_time():
    """pace() sleeps inside `paced` (twice as long as the work since the last sleep) and
    does nothing elsewhere."""
    def busy(seconds: float) -> None:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            slicing.pace()

    before = time.thread_time()
    with slicing.paced():
        start = time.perf_counter()
        busy(0.06)
        elapsed = time.perf_counter() - start
    worked = time.thread_time() - before
    assert elapsed >= 0.06                    # the wall time it took, sleeps included
    assert worked < elapsed * 0.6             # it ran at most about a third of the time
    start = time.perf_counter()
    busy(0.02)                                # outside `paced`: no sleeps
    assert time.perf_counter() - start < 0.04
