"""StickTable: LRU bound, expiry from the oldest end, in-use pinning, keys, store sync."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace as NS
from typing import Any

import pytest

from lbproxy.tables import StickStore, StickTable, is_http_error, open_store


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(name: str = "t", type: str = "ip", size: int = 100, expire: float = 30.0,
           store: tuple[tuple[str, float | None], ...] = (("http_req_rate", 10.0),
                                                          ("http_req_cnt", None),
                                                          ("conn_cur", None))) -> Any:
    return NS(name=name, type=type, size=size, expire=expire,
              store=tuple(NS(name=n, period=p) for n, p in store))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_track_counts_and_reads_only_stored_items(clock: FakeClock) -> None:
    table = StickTable(config(), clock)
    for _ in range(3):
        table.track("10.0.0.1").on_request()
    entry = table.track("10.0.0.1")
    entry.on_error()                                  # http_err_* not stored: ignored
    assert entry.get("http_req_rate") == 3
    assert entry.get("http_req_cnt") == 3
    assert entry.get("http_err_cnt") == 0
    assert entry.get("key") == 0                      # not an item name
    assert len(table) == 1 and table.get("10.0.0.1") is entry


def test_all_items_follow_their_events(clock: FakeClock) -> None:
    items = (("http_req_rate", 1.0), ("http_req_cnt", None), ("http_err_rate", 1.0),
             ("http_err_cnt", None), ("conn_cur", None), ("conn_rate", 1.0), ("conn_cnt", None))
    entry = StickTable(config(store=items), clock).track("10.0.0.1")
    entry.on_connect()
    entry.on_connect()
    entry.on_request()
    entry.on_error()
    entry.on_disconnect()
    assert {name: entry.get(name) for name, _ in items} == {
        "http_req_rate": 1, "http_req_cnt": 1, "http_err_rate": 1, "http_err_cnt": 1,
        "conn_cur": 1, "conn_rate": 2, "conn_cnt": 2}


def test_rate_rolls_over_and_decays(clock: FakeClock) -> None:
    clock.now = 1000.0                                # a period boundary (period 10 s)
    entry = StickTable(config(), clock).track("10.0.0.1")
    for _ in range(10):
        entry.on_request()
    clock.now = 1010.0
    for _ in range(4):
        entry.on_request()
    clock.now = 1015.0
    assert entry.get("http_req_rate") == 4 + 10 * 0.5
    clock.now = 1030.0
    assert entry.get("http_req_rate") == 0
    assert entry.get("http_req_cnt") == 14


def test_expired_entry_disappears_and_active_one_stays(clock: FakeClock) -> None:
    table = StickTable(config(expire=30.0), clock)
    table.track("10.0.0.1").on_request()
    clock.now += 20
    table.track("10.0.0.2").on_request()
    clock.now += 15                                   # .1 idle 35 s, .2 idle 15 s
    assert table.get("10.0.0.1") is None
    assert table.get("10.0.0.2") is not None
    table.track("10.0.0.3")                           # an insert drops dead entries
    assert len(table) == 2
    assert table.track("10.0.0.1").get("http_req_cnt") == 0   # back, afresh


def test_expiry_never_scans_past_a_live_entry(clock: FakeClock) -> None:
    table = StickTable(config(expire=30.0), clock)
    for i in range(50):
        table.track(f"10.0.0.{i}")
    clock.now += 31
    table.track("10.0.1.1")                           # one insert pays for two at most
    assert len(table) == 49
    assert table.purge(budget=10) == 10
    assert table.purge() == 38
    assert table.purge() == 0 and len(table) == 1


def test_lru_eviction_at_size(clock: FakeClock) -> None:
    table = StickTable(config(size=3), clock)
    for key in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        table.track(key)
        clock.now += 1
    table.track("10.0.0.1")                           # now .2 is the least recently used
    table.track("10.0.0.4")
    assert len(table) == 3
    assert table.get("10.0.0.2") is None
    assert table.get("10.0.0.1") is not None


def test_in_use_entry_is_neither_evicted_nor_expired(clock: FakeClock) -> None:
    table = StickTable(config(size=2, expire=30.0), clock)
    held = table.track("10.0.0.1")
    held.on_connect()
    table.track("10.0.0.2")
    table.track("10.0.0.3")                           # evicts .2, not the older but held .1
    assert table.get("10.0.0.1") is held and table.get("10.0.0.2") is None

    clock.now += 100
    table.purge()
    assert table.get("10.0.0.1") is held and held.get("conn_cur") == 1
    held.on_disconnect()                              # idle time starts at release
    clock.now += 29
    table.purge()
    assert table.get("10.0.0.1") is held
    clock.now += 2
    table.purge()
    assert table.get("10.0.0.1") is None


def test_table_full_of_in_use_entries_returns_detached_entry(clock: FakeClock) -> None:
    table = StickTable(config(size=2), clock)
    for key in ("10.0.0.1", "10.0.0.2"):
        table.track(key).on_connect()
    extra = table.track("10.0.0.3")
    extra.on_request()
    extra.on_connect()
    extra.on_disconnect()
    assert extra.get("http_req_cnt") == 1
    assert len(table) == 2 and table.get("10.0.0.3") is None


def test_top_lists_highest_live_keys(clock: FakeClock) -> None:
    table = StickTable(config(), clock)
    for i, hits in enumerate((5, 1, 9, 3)):
        entry = table.track(f"10.0.0.{i}")
        for _ in range(hits):
            entry.on_request()
    assert table.top(2, "http_req_cnt") == [("10.0.0.2", 9), ("10.0.0.0", 5)]
    assert table.top(10, "conn_cnt")[0][1] == 0


@pytest.mark.parametrize(("type", "raw", "key"), [
    ("ip", "::ffff:10.1.2.3", "10.1.2.3"),
    ("ip", "2001:DB8:0::1", "2001:db8::1"),
    ("ipv6", "10.1.2.3", "::ffff:a01:203"),
    ("integer", " 42", 42),
    ("integer", 42, 42),
    ("string", "x" * 1000, "x" * 256),
])
def test_keys_are_normalised(clock: FakeClock, type: str, raw: Any, key: Any) -> None:
    table = StickTable(config(type=type), clock)
    entry = table.track(raw)
    assert entry.key == key
    assert table.track(key) is entry and table.get(raw) is entry


def test_unusable_key_is_not_stored(clock: FakeClock) -> None:
    table = StickTable(config(type="ip"), clock)
    table.track("not-an-ip").on_request()
    assert len(table) == 0 and table.get("not-an-ip") is None


def test_bad_store_items_are_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="needs a period"):
        StickTable(config(store=(("http_req_rate", None),)), clock)
    with pytest.raises(ValueError, match="unknown store item"):
        StickTable(config(store=(("gpc0", None),)), clock)


def test_http_error_is_any_4xx() -> None:
    assert [s for s in (200, 302, 399, 400, 401, 404, 429, 499, 500, 503) if is_http_error(s)] \
        == [400, 401, 404, 429, 499]


def test_sync_keeps_entries_across_a_compatible_reload(clock: FakeClock) -> None:
    store = StickStore(clock=clock)
    table = store.sync([config("a", size=10), config("b")])["a"]
    for i in range(5):
        table.track(f"10.0.0.{i}").on_request()
    tables = store.sync([config("a", size=3)])
    assert tables["a"] is table and len(table) == 3 and set(store.tables) == {"a"}
    changed = store.sync([config("a", size=3, store=(("conn_cnt", None),))])["a"]
    assert changed is not table and len(changed) == 0


def test_store_tick_purges_and_background_task_stops(clock: FakeClock) -> None:
    store = StickStore(interval=0.01, clock=clock)
    table = store.sync([config()])["t"]
    table.track("10.0.0.1")
    clock.now += 31

    async def run() -> None:
        assert await store.tick() == store.interval
        assert len(table) == 0
        await store.start()
        await store.close()
        assert store._task is None

    asyncio.run(run())


def test_open_store_by_spec() -> None:
    assert type(open_store("memory")) is StickStore
    with pytest.raises(ValueError, match="stick_store"):
        open_store("mongodb://x")
