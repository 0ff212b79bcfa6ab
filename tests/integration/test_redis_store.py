"""RedisStore against a real redis-server: sharing between workers, outage and recovery."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace as NS
from typing import Any

import pytest

from lbproxy.tables.redis_store import RedisStore
from lbproxy.tables.stick_table import StickTable
from tests.redis_server import RedisServer

# Long enough that a test rarely straddles a period boundary, and the assertions allow
# for one: the rate then loses a fraction of a request or two to the interpolation.
PERIOD = 60.0
DEADLINE = 10.0
CONFIG = NS(name="per_ip", type="ip", size=1000, expire=30.0,
            store=(NS(name="http_req_rate", period=PERIOD), NS(name="http_req_cnt", period=None),
                   NS(name="conn_cur", period=None)))


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Poll `predicate` (which may track entries, asking for a refresh) until true or the deadline."""
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def count(table: StickTable, key: str, n: int) -> None:
    entry = table.track(key)
    for _ in range(n):
        entry.on_request()


def sees(table: StickTable, key: str, total: int) -> bool:
    entry = table.track(key)
    return (entry.get("http_req_cnt") == total
            and total - 2 <= entry.get("http_req_rate") <= total)


def run_with_workers(url: str, n: int, scenario: Callable[..., Awaitable[None]]) -> None:
    """Run `scenario(*stores)` with `n` started stores (workers), always closed after."""
    async def main() -> None:
        stores = [RedisStore(url, interval=0.02, max_backoff=0.2) for _ in range(n)]
        for store in stores:
            store.sync([CONFIG])
            await store.start()
        try:
            await scenario(*stores)
        finally:
            for store in stores:
                await store.close()

    asyncio.run(main())


def test_two_workers_share_counts(redis_server: RedisServer) -> None:
    async def scenario(a: RedisStore, b: RedisStore) -> None:
        ta, tb = a.tables["per_ip"], b.tables["per_ip"]
        count(ta, "10.0.0.1", 60)
        count(tb, "::ffff:10.0.0.1", 60)         # the same key once normalised
        assert ta.track("10.0.0.1").get("http_req_cnt") == 60   # local at once, no waiting
        await until(lambda: sees(ta, "10.0.0.1", 120) and sees(tb, "10.0.0.1", 120),
                    "both workers to see 120")

    run_with_workers(redis_server.url, 2, scenario)


def test_different_keys_are_independent(redis_server: RedisServer) -> None:
    async def scenario(a: RedisStore, b: RedisStore) -> None:
        ta, tb = a.tables["per_ip"], b.tables["per_ip"]
        count(ta, "10.0.0.1", 10)
        count(tb, "10.0.0.2", 20)
        await until(lambda: sees(ta, "10.0.0.2", 20) and sees(tb, "10.0.0.1", 10),
                    "each worker to see the other's key")
        assert sees(ta, "10.0.0.1", 10) and sees(tb, "10.0.0.2", 20)

    run_with_workers(redis_server.url, 2, scenario)


def test_conn_cur_is_shared_and_released(redis_server: RedisServer) -> None:
    async def scenario(a: RedisStore, b: RedisStore) -> None:
        ea = a.tables["per_ip"].track("10.0.0.1")
        eb = b.tables["per_ip"].track("10.0.0.1")
        ea.on_connect()
        eb.on_connect()
        await until(lambda: a.tables["per_ip"].track("10.0.0.1").get("conn_cur") == 2,
                    "conn_cur 2")
        eb.on_disconnect()
        await until(lambda: a.tables["per_ip"].track("10.0.0.1").get("conn_cur") == 1,
                    "conn_cur back to 1")

    run_with_workers(redis_server.url, 2, scenario)


def test_outage_counts_locally_then_recovers(redis_server: RedisServer,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lbproxy.tables")

    def outage_lines(level: int) -> list[Any]:
        return [r for r in caplog.records if r.name == "lbproxy.tables" and r.levelno == level]

    async def scenario(a: RedisStore, b: RedisStore) -> None:
        ta, tb = a.tables["per_ip"], b.tables["per_ip"]
        count(ta, "10.0.0.1", 30)
        await until(lambda: sees(tb, "10.0.0.1", 30), "the first counts to be shared")

        redis_server.stop()
        count(ta, "10.0.0.1", 30)                 # must neither raise nor wait
        assert ta.track("10.0.0.1").get("http_req_cnt") == 60
        await until(lambda: all(not s.connected and s._backoff >= 0.16 for s in (a, b)),
                    "several failed flushes in each worker")
        count(ta, "10.0.0.1", 5)
        assert ta.track("10.0.0.1").get("http_req_cnt") == 65
        warnings = outage_lines(logging.WARNING)
        assert len(warnings) == 2 and all("unreachable" in r.getMessage() for r in warnings)

        redis_server.start()                      # empty: it kept nothing
        await until(lambda: a.connected and b.connected, "both workers to reconnect")
        assert len(outage_lines(logging.INFO)) == 2            # one "reachable again" per worker
        # A pushed what it counted since its last successful flush: 35 (the first 30 were lost
        # with the old server); B's new counts add up with them.
        count(tb, "10.0.0.1", 10)
        await until(lambda: sees(ta, "10.0.0.1", 45) and sees(tb, "10.0.0.1", 45),
                    "counts shared again after recovery")

    run_with_workers(redis_server.url, 2, scenario)


def test_close_pushes_the_last_increments(redis_server: RedisServer) -> None:
    async def scenario(a: RedisStore, b: RedisStore) -> None:
        count(a.tables["per_ip"], "10.0.0.9", 7)
        await a.close()                           # before any tick could run
        await until(lambda: sees(b.tables["per_ip"], "10.0.0.9", 7), "the pushed counts")

    run_with_workers(redis_server.url, 2, scenario)


def test_unreachable_from_the_start_counts_locally(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as unused:               # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{unused.getsockname()[1]}/0"

    async def scenario(a: RedisStore) -> None:
        table = a.tables["per_ip"]
        count(table, "10.0.0.1", 30)
        await until(lambda: not a.connected and a._backoff >= 0.16, "several failed flushes")
        count(table, "10.0.0.1", 5)
        assert table.track("10.0.0.1").get("http_req_cnt") == 35
        assert [r.levelname for r in caplog.records if r.name == "lbproxy.tables"] == ["WARNING"]

    run_with_workers(url, 1, scenario)
