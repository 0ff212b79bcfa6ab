"""Long work on the event loop (a stats page or a JSON of thousands of servers, a reload's
reconciliation of a big backend) done in slices.

The admin server and reloads run on the proxy's own event loop, so a page that takes 80 ms
to build would hold every client's traffic for 80 ms. Renderers are written as generators that
`yield` (nothing) once they have worked SLICE seconds since the last pass through the loop
and `return` their result: `sliced` runs one with a pass through the event loop at each
yield, `at_once` runs it in one go (tests, tools, small sets). Slices are measured in time,
not in items: a stats-page row costs ten times a CSV line, and a slice of either must stay
short next to a request's own latency. Between two slices the loop is left to traffic for
twice as long as the slice took, so long work takes a third of a busy proxy's CPU at most.
Work done in a thread beside the loop (reading a reloaded configuration) is paced the same
way: inside `paced`, `pace()` sleeps, GIL released, twice as long as it worked.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
Sliced = Generator[None, None, T]

SLICE = 0.002    # seconds of rendering between two passes through the event loop
YIELDED = 2.0    # then the loop is left to other work for twice as long


_thread = threading.local()      # `until`: when the paced thread sleeps next


@contextmanager
def paced() -> Iterator[None]:
    """In this thread, `pace()` calls leave the GIL to the event loop two thirds of the time."""
    _thread.until = perf_counter() + SLICE
    try:
        yield
    finally:
        _thread.until = None


def pace() -> None:
    """Called often by long Python work (reading a configuration): inside `paced`, sleep
    YIELDED times as long as the work since the last sleep; elsewhere nothing."""
    until = getattr(_thread, "until", None)
    if until is not None:
        now = perf_counter()
        if now >= until:
            time.sleep(YIELDED * (now - until + SLICE))    # the slice began at until - SLICE
            _thread.until = perf_counter() + SLICE


def mapped(items: Iterable[T], render: Callable[[T], R]) -> Sliced[list[R]]:
    """`[render(item) for item in items]`, pausing every SLICE seconds; use it with
    `yield from` inside a renderer."""
    out: list[R] = []
    until = perf_counter() + SLICE
    for item in items:
        out.append(render(item))
        if perf_counter() >= until:
            yield
            until = perf_counter() + SLICE
    return out


def each(items: Iterable[T], act: Callable[[T], object]) -> Sliced[None]:
    """`for item in items: act(item)`, pausing every SLICE seconds."""
    yield from mapped(items, act)


def json_parts(value: object, out: list[str]) -> Sliced[None]:
    """Compact JSON of `value`, appended to `out` in pieces (never one string of
    megabytes): containers holding lists are walked, pausing every SLICE seconds in a
    list; everything else is one json.dumps."""
    if isinstance(value, list):
        out.append("[")
        until = perf_counter() + SLICE
        for index, item in enumerate(value):
            if index:
                out.append(",")
            yield from json_parts(item, out)
            if perf_counter() >= until:
                yield
                until = perf_counter() + SLICE
        out.append("]")
    elif isinstance(value, dict) and any(isinstance(item, list) for item in value.values()):
        for index, (key, item) in enumerate(value.items()):
            out.append(("," if index else "{") + json.dumps(key) + ":")
            yield from json_parts(item, out)
        out.append("}")
    else:
        out.append(json.dumps(value, separators=(",", ":")))


def at_once(work: Sliced[T]) -> T:
    while True:
        try:
            next(work)
        except StopIteration as done:
            return done.value


async def sliced(work: Sliced[T]) -> T:
    """Run `work`, leaving the loop to everything else for YIELDED times as long as each
    slice took: long work gets at most a share of a busy proxy's CPU, so the traffic it
    runs beside slows down by that share, not by half (the cost is its own time: an
    answer of 150 ms of CPU takes about 450 ms)."""
    while True:
        began = perf_counter()
        try:
            next(work)
        except StopIteration as done:
            return done.value
        await pause(began)


async def pause(began: float) -> None:
    """After a slice that began at `began` (perf_counter): leave the loop to other work
    for YIELDED times as long."""
    await asyncio.sleep(YIELDED * (perf_counter() - began))
