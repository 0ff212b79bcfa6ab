"""Stick tables: a bounded, expiring map from a key (client IP, header value...) to counters.

After HAProxy's ``stick_table.c``. The data plane calls, per request,
``table.track(key).on_request()``; rules read ``entry.get("http_req_rate")``. Both are O(1)
and allocation-free for a known key.

Entries live in an ``OrderedDict`` kept in least-recently-used order (every track moves the
entry to the end), so both bounds are enforced from the oldest end without a scan:

- ``size``: inserting into a full table evicts the least recently used entry.
- ``expire``: an entry not tracked for ``expire`` seconds is dead. A lookup of a dead
  entry starts it afresh; inserts drop a few dead entries from the oldest end, and the store
  calls ``purge()`` periodically for the rest. Dead entries wait at most one purge interval,
  and ``len()`` counts them until then.
- In use (HAProxy's ref count): between ``on_connect()`` and ``on_disconnect()`` an entry
  is never expired nor evicted. Meeting one at the oldest end counts as a touch (it moves to
  the newest end), and releasing it refreshes it, so it expires ``expire`` after the last
  connection closed. A table whose oldest ``_EVICT_BUDGET`` entries are all in use is
  full: ``track`` then returns a detached entry that counts for this request only, as
  HAProxy does not track when it cannot allocate.

Keys the table type cannot hold (``not-an-ip`` in an ``ip`` table) also get a detached
entry, so callers never test for None.
"""

from __future__ import annotations

import heapq
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from operator import itemgetter
from typing import Any, Hashable

from lbproxy.http.addresses import parse_ip
from lbproxy.tables.freq import FreqCounter

# Items a table may store; rates need a period, the others must not have one.
RATE_ITEMS = frozenset({"http_req_rate", "http_err_rate", "conn_rate"})
ITEMS = RATE_ITEMS | {"http_req_cnt", "http_err_cnt", "conn_cur", "conn_cnt"}

# Long string keys (user agents, cookies) are cut: memory per entry stays bounded and
# HAProxy's string tables truncate at a fixed length too (32 by default).
MAX_STRING_KEY = 256

# Dead entries an insert may drop: enough to keep pace with inserts, small enough that
# one request never pays for a backlog (the periodic purge does that).
_INSERT_PURGE_BUDGET = 2
# In-use entries an eviction may skip before declaring the table full.
_EVICT_BUDGET = 8
# Entries one periodic purge call may drop, bounding the pause it causes.
PURGE_BUDGET = 10_000

Layout = tuple[tuple[str, float | None], ...]


def is_http_error(status: int) -> bool:
    """Whether a response counts in http_err_*: any 4xx, HAProxy's default http-err-codes."""
    return 400 <= status < 500


class Entry:
    """The counters of one key; holds exactly the items the table stores (others read 0).

    Slots named after items hold an int (counters, conn_cur), a FreqCounter (rates) or None
    (not stored), so `get` is one getattr.
    """

    __slots__ = ("key", "seen", "refs", "_table", "http_req_cnt", "http_req_rate",
                 "http_err_cnt", "http_err_rate", "conn_cur", "conn_cnt", "conn_rate")

    def __init__(self, key: Hashable, table: StickTable, now: float) -> None:
        self.key = key
        self.seen = now          # last track or release; the entry dies at seen + expire
        self.refs = 0            # open connections holding the entry (HAProxy ref_cnt)
        self._table = table
        self.http_req_cnt: int | None = None
        self.http_req_rate: FreqCounter | None = None
        self.http_err_cnt: int | None = None
        self.http_err_rate: FreqCounter | None = None
        self.conn_cur: int | None = None
        self.conn_cnt: int | None = None
        self.conn_rate: FreqCounter | None = None
        for name, period in table.layout:
            setattr(self, name, FreqCounter(period) if period else 0)

    def on_request(self) -> None:
        """An HTTP request was tracked with this entry."""
        if self.http_req_cnt is not None:
            self.http_req_cnt += 1
        if self.http_req_rate is not None:
            self.http_req_rate.add(self._table.clock())

    def on_error(self) -> None:
        """A tracked request got an error response (see `is_http_error`)."""
        if self.http_err_cnt is not None:
            self.http_err_cnt += 1
        if self.http_err_rate is not None:
            self.http_err_rate.add(self._table.clock())

    def on_connect(self) -> None:
        """A connection starts using this entry; it stays pinned until `on_disconnect`."""
        self.refs += 1
        if self.conn_cur is not None:
            self.conn_cur += 1
        if self.conn_cnt is not None:
            self.conn_cnt += 1
        if self.conn_rate is not None:
            self.conn_rate.add(self._table.clock())

    def on_disconnect(self) -> None:
        """The connection from `on_connect` closed; call exactly once per `on_connect`."""
        self.refs -= 1
        if self.conn_cur is not None:
            self.conn_cur -= 1
        if not self.refs:
            self._table.release(self)

    def get(self, item: str) -> int:
        """Value of `item` now: counters as counted, rates over their sliding window; 0 if not stored."""
        value = getattr(self, item, None) if item in ITEMS else None
        if value is None:
            return 0
        if type(value) is int:
            return value
        return value.rate(self._table.clock())


def _ip_key(raw: Any) -> str | None:
    """Canonical text of an IPv4 or IPv6 address; IPv4-mapped IPv6 becomes IPv4."""
    address = parse_ip(raw)
    return None if address is None else str(address)


def _ipv6_key(raw: Any) -> str | None:
    """Canonical IPv6 text; IPv4 addresses are stored IPv4-mapped, as HAProxy does."""
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        return None
    if addr.version == 4:
        addr = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + addr.packed)
    return str(addr)


def _integer_key(raw: Any) -> int | None:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _string_key(raw: Any) -> str:
    return str(raw)[:MAX_STRING_KEY]


KEY_TYPES: dict[str, Callable[[Any], Hashable | None]] = {
    "ip": _ip_key,
    "ipv6": _ipv6_key,
    "integer": _integer_key,
    "string": _string_key,
}


def layout_of(config: Any) -> Layout:
    """(item, period) pairs of a StickTableConfig, checked: the entry slots depend on them."""
    layout = tuple((item.name, item.period) for item in config.store)
    for name, period in layout:
        if name not in ITEMS:
            raise ValueError(f"stick table {config.name!r}: unknown store item {name!r}")
        if (name in RATE_ITEMS) != bool(period):
            raise ValueError(f"stick table {config.name!r}: {name} "
                             + ("needs a period" if name in RATE_ITEMS else "takes no period"))
    return layout


class StickTable:
    """A named table built from a StickTableConfig (name, type, size, expire, store)."""

    entry_class: type[Entry] = Entry

    def __init__(self, config: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.name: str = config.name
        self.clock = clock
        self.layout = layout_of(config)
        self._normalize = KEY_TYPES[config.type]
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self.reconfigure(config)

    def reconfigure(self, config: Any) -> None:
        """Adopt a new size and expire (a reload), keeping the entries; shrinks at once."""
        self.config = config
        self.size: int = config.size
        self.expire: float = config.expire
        now = self.clock()
        while len(self._entries) > self.size and self._evict(now):
            pass

    def track(self, key: Hashable) -> Entry:
        """The live entry for `key`, created if needed, marked as just used."""
        entries = self._entries
        now = self.clock()
        entry = entries.get(key)          # stored keys are normalised: most lookups hit here
        if entry is None:
            norm = self._normalize(key)
            if norm is None:
                return Entry(key, self, now)
            entry = entries.get(norm)
            if entry is None:
                return self._insert(norm, now)
            key = norm
        if entry.refs or now - entry.seen < self.expire:
            entry.seen = now
            entries.move_to_end(key)
            return entry
        del entries[key]
        return self._insert(key, now)

    def get(self, key: Hashable) -> Entry | None:
        """The live entry for `key` without touching it (stats, API), or None."""
        norm = self._normalize(key)
        entry = self._entries.get(norm) if norm is not None else None
        if entry is None or not self._alive(entry, self.clock()):
            return None
        return entry

    def __len__(self) -> int:
        """Entries held, including dead ones the next purge will drop."""
        return len(self._entries)

    def top(self, n: int, item: str) -> list[tuple[Hashable, int]]:
        """The `n` live keys with the highest `item`, highest first. O(len) — for stats only."""
        now = self.clock()
        live = ((key, entry.get(item)) for key, entry in self._entries.items()
                if self._alive(entry, now))
        return heapq.nlargest(n, live, key=itemgetter(1))

    def purge(self, now: float | None = None, budget: int = PURGE_BUDGET) -> int:
        """Drop up to `budget` dead entries from the oldest end; returns how many went.

        Stops at the first live entry, so the cost is the number of dead ones, never the size.
        """
        if now is None:
            now = self.clock()
        entries = self._entries
        limit = now - self.expire
        dropped = 0
        while budget > 0 and entries:
            key, entry = next(iter(entries.items()))
            if entry.seen > limit:
                break
            budget -= 1
            if entry.refs:
                entry.seen = now
                entries.move_to_end(key)
            else:
                del entries[key]
                dropped += 1
        return dropped

    def release(self, entry: Entry) -> None:
        """The last connection of `entry` closed: its idle time starts now."""
        entry.seen = self.clock()
        if self._entries.get(entry.key) is entry:
            self._entries.move_to_end(entry.key)

    def _alive(self, entry: Entry, now: float) -> bool:
        return bool(entry.refs) or now - entry.seen < self.expire

    def _insert(self, key: Hashable, now: float) -> Entry:
        self.purge(now, _INSERT_PURGE_BUDGET)
        if len(self._entries) >= self.size and not self._evict(now):
            return Entry(key, self, now)    # full of in-use entries: detached, local only
        entry = self._entries[key] = self.entry_class(key, self, now)
        return entry

    def _evict(self, now: float) -> bool:
        """Drop the least recently used entry not in use; False if none within the budget."""
        entries = self._entries
        for _ in range(min(_EVICT_BUDGET, len(entries))):
            key, victim = next(iter(entries.items()))
            if not victim.refs:
                del entries[key]
                return True
            victim.seen = now
            entries.move_to_end(key)
        return False
