"""bench.mixed's clients, one kind at a time, for a moment against a real proxy.

The soak (bench/soak.py) runs them for minutes and reports every unexpected outcome as
the proxy's; here each kind must get its intended answer at all, so that a soak's errors
are never a broken client's."""

from __future__ import annotations

import asyncio
import time

import pytest
import uvloop

from bench import mixed
from bench.mixed import Mix, Traffic
from tests.harness import simple_config

NONE = Mix(keep_alive=0, per_request=0, post=0, slow_head=0, stalled_head=0, slow_reader=0, stalled_reader=0,
           websocket=0, http2=0)
KINDS = [("keep_alive", "ok", 20), ("per_request", "ok", 5), ("post", "ok", 6), ("slow_head", "ok", 1),
         ("stalled_head", "cut", 1), ("slow_reader", "ok", 1), ("websocket", "ok", 10), ("http2", "ok", 16)]
DEADLINE = 8.0


async def drive(port: int, mix: Mix, outcome: str, wanted: int) -> mixed.Tally:
    """Run `mix` until `wanted` outcomes of `outcome` or DEADLINE; what was counted."""
    traffic = Traffic(port, mix)
    traffic.start()
    deadline = time.monotonic() + DEADLINE
    while traffic.tally.counts[outcome] < wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await traffic.stop()
    return traffic.tally


@pytest.mark.parametrize(("kind", "outcome", "wanted"), KINDS, ids=[kind for kind, _, _ in KINDS])
def test_a_client_kind_gets_its_intended_answers(backends, proxy, kind: str, outcome: str, wanted: int) -> None:
    if kind == "http2" and mixed.h2 is None:
        pytest.skip("the h2 package (test extra) is missing")
    apps = backends(2)
    # a stalled head waits for the http_request timeout: short here, long for the slow head's 1.4 s
    config = simple_config([app.port for app in apps],
                           timeouts={"http_request": "0.5s" if kind == "stalled_head" else "5s"})
    config["frontends"]["web"]["bind"] = [{"address": config["frontends"]["web"]["bind"][0], "h2c": True}]
    running = proxy(config)
    tally = uvloop.run(drive(running.port, Mix(**{**vars(NONE), kind: 1}), outcome, wanted))
    assert tally.counts[outcome] >= wanted, tally.counts
    assert not tally.errors, tally.reasons


def test_http2_client_finishes_the_streams_a_reload_lets_complete(backends, proxy) -> None:
    """A reload sends GOAWAY; the streams it names as taken still finish, and the client counts
    them, rather than the h2 package refusing their frames once it has seen the GOAWAY."""
    if mixed.h2 is None:
        pytest.skip("the h2 package (test extra) is missing")
    apps = backends(1, latency=0.05)           # streams in flight when the GOAWAY comes
    config = simple_config([app.port for app in apps])
    config["frontends"]["web"]["bind"] = [{"address": config["frontends"]["web"]["bind"][0], "h2c": True}]
    running = proxy(config)

    async def drive_through_reloads() -> mixed.Tally:
        traffic = Traffic(running.port, Mix(**{**vars(NONE), "http2": 1}))
        traffic.start()
        for _ in range(3):
            seen = traffic.tally.notes["HTTP/2 GOAWAY"]
            await asyncio.sleep(0.3)
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(running.engine.reload(), running.loop))
            deadline = time.monotonic() + DEADLINE
            while traffic.tally.notes["HTTP/2 GOAWAY"] == seen and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        await traffic.stop()
        return traffic.tally

    tally = uvloop.run(drive_through_reloads())
    assert tally.notes["HTTP/2 GOAWAY"] >= 3, tally.notes
    assert tally.counts["ok"] > 0
    assert not tally.errors, tally.reasons
