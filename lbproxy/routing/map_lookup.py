"""How each kind of map converter finds a value: one structure per kind, built once from a
map file's entries and kept up to date when the runtime API edits them.

Every structure reads values from the file's `entries` dict (key -> value, in file order,
the first of two equal keys kept), so an edit of a value changes nothing here; only adding
or removing a key does. Costs per lookup, for n entries:

- `map` (exact): one dict lookup (`entries.get` itself, no Python frame).
- `map_dom`: one dict lookup per label of the input: `a.b.example.com`, then
  `b.example.com`, `example.com`, `com`; the longest (most specific) key wins.
- `map_beg` / `map_end`: keys grouped by length; one slice and one dict lookup per
  distinct key length (≤ the input's length), longest first, so the longest prefix or
  suffix wins. 100,000 host names have a few dozen distinct lengths.
- `map_ip`: networks grouped by prefix length, as the `src` ACL matcher does: one shift
  and one dict lookup per distinct prefix length, longest first (IPv4 and IPv6 apart;
  IPv4-mapped IPv6 counts as IPv4); the result per address memoised, as there.
- `map_sub`: a scan of the keys in file order, the first contained in the input wins:
  linear in n (as HAProxy's), for small maps.
- `map_reg`: the keys as compiled regexes, searched in file order, the first match wins:
  linear in n (as HAProxy's).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping

from lbproxy.routing.matchers import ADDRESS_CACHE, address_number, network_number

Lookup = Callable[[str], "str | None"]


class Index:
    """What a kind keeps besides the entries. `check(key)` raises ValueError for a key the
    kind cannot use (before anything changes); `add`/`remove` follow new and deleted keys."""

    def check(self, key: str) -> None:
        """A key every kind accepts."""

    def add(self, key: str) -> None:
        """Nothing to do for a new key."""

    def remove(self, key: str) -> None:
        """Nothing to do for a deleted key."""


class BadKey(ValueError):
    """A key of the file that a kind cannot use; `key` tells which, for its line."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def add_all(index: Index, keys: Iterable[str]) -> None:
    """`index.add` each key in turn; BadKey for the first one it refuses."""
    for key in keys:
        try:
            index.add(key)
        except ValueError as exc:
            raise BadKey(key, str(exc)) from None


class Lengths(Index):
    """The distinct key lengths, longest first (map_beg, map_end)."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self.count: dict[int, int] = {}
        for key in keys:
            self.count[len(key)] = self.count.get(len(key), 0) + 1
        self.longest_first = sorted(self.count, reverse=True)

    def add(self, key: str) -> None:
        length = len(key)
        self.count[length] = self.count.get(length, 0) + 1
        if self.count[length] == 1:
            self.longest_first = sorted(self.count, reverse=True)

    def remove(self, key: str) -> None:
        length = len(key)
        self.count[length] -= 1
        if not self.count[length]:
            del self.count[length]
            self.longest_first = sorted(self.count, reverse=True)


class Patterns(Index):
    """The keys compiled as regexes, in file order (map_reg)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.order: list[tuple[Callable[[str], object], str]] = []
        add_all(self, keys)

    def check(self, key: str) -> None:
        _compile(key)

    def add(self, key: str) -> None:
        self.order.append((_compile(key).search, key))

    def remove(self, key: str) -> None:
        self.order = [item for item in self.order if item[1] != key]


def _compile(key: str) -> re.Pattern[str]:
    try:
        return re.compile(key)
    except re.error as exc:
        raise ValueError(f"bad regex '{key}': {exc}") from None


class Networks(Index):
    """Networks by prefix length (map_ip): version -> free bits -> network -> key, and per
    version the free bits in use, fewest first (longest prefix first). Two keys naming the
    same network (10.0.0.1/8 and 10.0.0.0/8): the first counts, the later waits in
    `shadowed` in case the first is deleted. The key found for an address is memoised
    (clients send many requests; an edit clears the memo)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.tables: dict[int, dict[int, dict[int, str]]] = {4: {}, 6: {}}
        self.order: dict[int, list[int]] = {4: [], 6: []}
        self.shadowed: dict[tuple[int, int, int], list[str]] = {}
        self.key_of = functools.lru_cache(maxsize=ADDRESS_CACHE)(self._key_of)
        add_all(self, keys)

    def check(self, key: str) -> None:
        network_number(key)

    def add(self, key: str) -> None:
        version, bits, number = network_number(key)
        self.key_of.cache_clear()
        table = self.tables[version].get(bits)
        if table is None:
            table = self.tables[version][bits] = {}
            self.order[version] = sorted(self.tables[version])
        if number in table:
            self.shadowed.setdefault((version, bits, number), []).append(key)
        else:
            table[number] = key

    def remove(self, key: str) -> None:
        version, bits, number = network_number(key)
        self.key_of.cache_clear()
        table = self.tables[version][bits]
        waiting = self.shadowed.get((version, bits, number))
        if table.get(number) != key:             # a shadowed one goes
            if waiting is not None and key in waiting:
                waiting.remove(key)
            return
        if waiting:
            table[number] = waiting.pop(0)
            return
        del table[number]
        if not table:
            del self.tables[version][bits]
            self.order[version] = sorted(self.tables[version])

    def _key_of(self, address: str) -> str | None:
        """The key of the longest network holding `address`, None when none does (or it
        is no address)."""
        parsed = address_number(address)
        if parsed is None:
            return None
        version, number = parsed
        tables = self.tables[version]
        for bits in self.order[version]:
            key = tables[bits].get(number >> bits)
            if key is not None:
                return key
        return None


# --- the lookups ----------------------------------------------------------------------------

def affix_lookup(entries: dict[str, str], lengths: Lengths, at_end: bool) -> Lookup:
    """map_beg, or map_end when `at_end`: the value of the longest key that begins (ends)
    the input."""
    get = entries.get

    def map_affix(value: str) -> str | None:
        size = len(value)
        for length in lengths.longest_first:
            if length <= size:
                found = get(value[size - length:] if at_end else value[:length])
                if found is not None:
                    return found
        return None
    return map_affix


def domain_lookup(entries: dict[str, str]) -> Lookup:
    get = entries.get

    def map_dom(value: str) -> str | None:
        while True:
            found = get(value)
            if found is not None:
                return found
            dot = value.find(".")
            if dot < 0:
                return None
            value = value[dot + 1:]
    return map_dom


def substring_lookup(entries: dict[str, str]) -> Lookup:
    def map_sub(value: str) -> str | None:
        for key, found in entries.items():
            if key in value:
                return found
        return None
    return map_sub


def pattern_lookup(entries: dict[str, str], patterns: Patterns) -> Lookup:
    def map_reg(value: str) -> str | None:
        for search, key in patterns.order:
            if search(value) is not None:
                return entries[key]
        return None
    return map_reg


def network_lookup(entries: dict[str, str], networks: Networks) -> Lookup:
    key_of = networks.key_of

    def map_ip(value: str) -> str | None:
        key = key_of(value)
        return None if key is None else entries[key]
    return map_ip
