"""`global.stick_store: redis://host:port/db`: stick-table counters shared by workers and instances.

The data plane sees the same synchronous `StickTable`/`Entry` API as with the memory store
and never waits on Redis. Each `RedisEntry` counts locally, like any entry, and remembers
its *base*: the shared totals it last read. Every `interval` (100 ms) the background task
takes every entry tracked or counted since the last flush and, in ONE pipelined round
trip, runs a Lua script per entry that atomically adds "counts now minus base" to the
entry's Redis keys, refreshes their TTLs and returns the new totals. Those become the
base, and the entry's counts become them plus whatever was counted during the round trip.

Redis keys, one hash slot per entry (the `{table:key}` tag):

- rates: a bucket per period index, ``lbproxy:{table:key}:http_req_rate:<floor(t/period)>``,
  TTL 2 periods (+1 s of clock skew). Indexes come from the wall clock, so every instance
  agrees on the windows; the view rebuilds HAProxy's curr + prev interpolation from the
  current and previous buckets.
- counters and conn_cur: ``lbproxy:{table:key}:http_req_cnt``, TTL `expire`, refreshed by
  each flush that touches the entry; entries with open connections are re-flushed every
  expire/3 so their conn_cur does not lapse while a long connection is idle.

Caveats: a key's first requests on an instance see only the local counts until the first
flush (at most `interval` later), and an entry nobody tracks here keeps its last view.
conn_cur is shared by INCRBY/DECRBY, clamped at 0: an instance that crashes with open
connections leaves its share counted until no instance touches the entry for `expire`.
Redis restarted empty: the totals restart from what instances push next (connections
opened before are no longer counted; their close is clamped at 0). Rates self-heal within
two periods.

Redis down: counting goes on locally (the unpushed increments are kept, rates for the last
two periods), one warning is logged, flushes are retried with exponential backoff up to
`max_backoff`, and one line is logged when Redis answers again; the request path never
sees an exception.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, Hashable
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from lbproxy.tables.freq import FreqCounter
from lbproxy.tables.stick_table import Entry, Layout, StickTable
from lbproxy.tables.store import StickStore

log = logging.getLogger("lbproxy.tables")

# KEYS[i] gets ARGV[2i-1] added and its TTL set to ARGV[2i] ms; returns the values.
# Negative results (conn_cur after a Redis restart or an expired lease) are clamped to 0.
_SCRIPT = """
local values = {}
for i, key in ipairs(KEYS) do
  local delta = tonumber(ARGV[2 * i - 1])
  local value
  if delta ~= 0 then
    value = redis.call('INCRBY', key, delta)
    if value < 0 then
      redis.call('SET', key, 0)
      value = 0
    end
  else
    value = tonumber(redis.call('GET', key) or '0')
  end
  redis.call('PEXPIRE', key, ARGV[2 * i])
  values[i] = value
end
return values
"""
_SCRIPT_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()

# Rate buckets outlive their two periods by this much, for instances whose clocks lag.
_CLOCK_SKEW_MS = 1000
# Connection-level failures mean "Redis unreachable"; OSError covers refused/timeouts.
_REDIS_ERRORS = (RedisError, OSError)


# An entry's counts at some instant, item by item in layout order: an int for counters,
# FreqCounter.state() for rates. `base` is the shared totals last read, so the increments
# still to push are always "now minus base".
Snapshot = list[Any]


def _snapshot(layout: Layout, entry: Entry) -> Snapshot:
    return [getattr(entry, item).state() if period else getattr(entry, item)
            for item, period in layout]


class RedisEntry(Entry):
    """An Entry that asks the next flush to push its increments and refresh it."""

    __slots__ = ("base", "queued")
    _table: RedisTable

    def __init__(self, key: Hashable, table: StickTable, now: float) -> None:
        super().__init__(key, table, now)
        self.base = _snapshot(table.layout, self)
        self.queued = False      # in table.dirty, waiting for the next flush

    def on_request(self) -> None:
        Entry.on_request(self)
        self.queue()

    def on_error(self) -> None:
        Entry.on_error(self)
        self.queue()

    def on_connect(self) -> None:
        Entry.on_connect(self)
        if self.refs == 1:
            self._table.in_use.add(self)
        self.queue()

    def on_disconnect(self) -> None:
        Entry.on_disconnect(self)
        if not self.refs:
            self._table.in_use.discard(self)
        self.queue()

    def queue(self) -> None:
        """Have the next flush push this entry and refresh its view."""
        if not self.queued:
            self.queued = True
            self._table.dirty.append(self)


class RedisTable(StickTable):
    """A StickTable of RedisEntry, on the wall clock so period indexes agree across hosts."""

    entry_class = RedisEntry

    def __init__(self, config: Any, clock: Callable[[], float] = time.time) -> None:
        super().__init__(config, clock)
        self.dirty: list[RedisEntry] = []
        self.in_use: set[RedisEntry] = set()
        self.lease_due = 0.0     # next time in-use entries are re-flushed

    def track(self, key: Hashable) -> Entry:
        """As StickTable.track; the next flush also refreshes the entry's view of the totals."""
        entry = super().track(key)
        if isinstance(entry, RedisEntry):       # not a detached, local-only entry
            entry.queue()
        return entry


# One entry's flush: its Redis keys, the script's ARGV, and the bucket index of each rate.
_Call = tuple[list[str], list[int], list[int]]


def _script_call(table: RedisTable, entry: RedisEntry, now: float) -> _Call:
    """Keys and (increment, ttl) arguments that push what `entry` counted since its base."""
    base = f"lbproxy:{{{table.name}:{entry.key}}}:"
    keys: list[str] = []
    args: list[int] = []
    idxs: list[int] = []
    expire_ms = max(1, int(table.expire * 1000))
    for (item, period), old in zip(table.layout, entry.base):
        if period:
            buckets = FreqCounter(period)          # the increments, on the current period
            buckets.set(int(now // period), 0, 0)
            buckets.absorb(getattr(entry, item).since(old))
            ttl = int(period * 2000) + _CLOCK_SKEW_MS
            keys += (f"{base}{item}:{buckets.idx}", f"{base}{item}:{buckets.idx - 1}")
            args += (buckets.curr, ttl, buckets.prev, ttl)
            idxs.append(buckets.idx)
        else:
            keys.append(base + item)
            args += (getattr(entry, item) - old, expire_ms)
    return keys, args, idxs


def _apply(layout: Layout, entry: RedisEntry, then: Snapshot, values: list[int],
           idxs: list[int]) -> None:
    """Make the shared totals the base, and the view those plus what was counted since `then`."""
    value = iter(values)
    idx = iter(idxs)
    base: Snapshot = []
    shared: Any
    for (item, period), old in zip(layout, then):
        if period:
            counter = getattr(entry, item)
            during = counter.since(old)
            shared = (next(idx), next(value), next(value))
            counter.set(*shared)
            counter.absorb(during)
        else:
            shared = next(value)
            setattr(entry, item, shared + getattr(entry, item) - old)
        base.append(shared)
    entry.base = base


def _redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


class RedisStore(StickStore):
    """Tables whose counters are summed in Redis across processes and hosts."""

    table_class = RedisTable

    def __init__(self, url: str, *, interval: float = 0.1, max_backoff: float = 5.0,
                 timeout: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        super().__init__(interval=interval, clock=clock)
        self.url = _redacted(url)
        self.max_backoff = max_backoff
        # No client-side retries: a failed flush is retried by the next tick, with backoff.
        self._redis = aioredis.from_url(url, socket_timeout=timeout,
                                        socket_connect_timeout=timeout,
                                        retry=Retry(NoBackoff(), 0))
        self._backoff = 0.0      # > 0 while Redis is unreachable
        self.connected = True

    async def close(self) -> None:
        """Stop the flusher, push the last increments if Redis is up, close the client."""
        await super().close()
        if self.connected:
            await self.tick()
        await self._redis.aclose()

    async def tick(self) -> float:
        """Purge, then flush every touched entry in one round trip; never raises Redis errors."""
        await super().tick()
        batch = self._collect(self.clock())
        if not batch:
            return self.interval
        try:
            results = await self._execute([call for _, _, _, call in batch])
        except BaseException as exc:           # also cancelled: close() flushes them
            for _, entry, _, _ in batch:       # their base is unchanged: nothing is lost
                entry.queue()
            if not isinstance(exc, _REDIS_ERRORS):
                raise
            return self._failed(exc)
        for (table, entry, then, (_, _, idxs)), values in zip(batch, results):
            _apply(table.layout, entry, then, values, idxs)
        if not self.connected:
            self.connected = True
            self._backoff = 0.0
            log.info("stick_store %s reachable again: sharing counters", self.url)
        return self.interval

    def _collect(self, now: float) -> list[tuple[RedisTable, RedisEntry, Snapshot, _Call]]:
        """Take the queued entries (plus, every expire/3, the in-use ones) with their pushes."""
        batch = []
        table: Any
        for table in self.tables.values():
            entries, table.dirty = table.dirty, []
            if now >= table.lease_due:
                table.lease_due = now + table.expire / 3
                entries += [entry for entry in table.in_use if not entry.queued]
            for entry in entries:
                entry.queued = False
                batch.append((table, entry, _snapshot(table.layout, entry),
                              _script_call(table, entry, now)))
        return batch

    async def _execute(self, calls: list[_Call]) -> list[list[int]]:
        try:
            return await self._pipeline(calls)
        except NoScriptError:          # a fresh or restarted Redis: load the script once
            await self._redis.script_load(_SCRIPT)
            return await self._pipeline(calls)

    async def _pipeline(self, calls: list[_Call]) -> list[list[int]]:
        pipe = self._redis.pipeline(transaction=False)
        for keys, args, _ in calls:
            pipe.evalsha(_SCRIPT_SHA, len(keys), *keys, *args)
        return await pipe.execute()

    def _failed(self, exc: BaseException) -> float:
        """Log the first failure of an outage; returns the backoff before the next try."""
        if self.connected:
            self.connected = False
            log.warning("stick_store %s unreachable (%s): counting locally until it is back",
                        self.url, exc or type(exc).__name__)
        self._backoff = min(self.max_backoff, max(self.interval, self._backoff * 2))
        return self._backoff
