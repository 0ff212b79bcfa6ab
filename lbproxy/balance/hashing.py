"""Hash-based balancing: `source`, `uri`, `url_param(NAME)`, `hdr(NAME)`.

The key (client IP, path, a query parameter's value, a header's value) is hashed with
zlib.crc32: stable across processes and restarts (unlike `hash()`), ~100 ns, and on
the structured keys it meets (sequential IPs, numbered paths) at least as uniform as a
cryptographic hash. A missing or empty key falls back to smooth round robin, as in
HAProxy.

`hash_type: consistent` (default; HAProxy lb_chash.c): a ring of 2^32 positions holding
RING_POINTS_PER_WEIGHT points per unit of each server's effective weight, placed by
blake2b of "name#i" (blake2b, not crc32: crc32's linearity would make two servers'
points shifted copies of each other). A key goes to the first point clockwise, bisect
O(log P). Removing, adding or reweighting a server moves only the keys whose arc
changes owner, ≈ 1/N of them for one server of N. Points depend only on a server's
name and weight, so every worker and every restart builds the same ring.

`hash_type: map-based` (HAProxy lb_map.c): a table in which each server appears
weight/gcd times, spread evenly; the key goes to entry hash % len(table), O(1). Any
change of membership or weight remaps most keys.

In both, an unavailable entry (down, drain, maint, full, or the retry's `avoid`) is
stepped over to the next entry, so its keys spread over the other servers while the
rest of the mapping stays put; a server's keys come back when it does. Weight-0
servers have no entries.

`update()` cost: map-based rebuilds its table, O(T log T) for T = sum(weights)/gcd.
The ring is changed in place by the points that come and go: a slowstart step on one
server adds 100 points per weight unit and merges them in (0.2 ms for a 4,000-point
ring, 1.5 ms for 50,000).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from hashlib import blake2b
from typing import TYPE_CHECKING
from zlib import crc32

from lbproxy.balance.base import Balancer
from lbproxy.balance.pool import fallback, walk, weighted_order
from lbproxy.balance.roundrobin import RoundRobin
from lbproxy.http.request import RequestInfo

if TYPE_CHECKING:
    from lbproxy.backends.server import Server

CONSISTENT = "consistent"
MAP_BASED = "map-based"
HASH_TYPES = (CONSISTENT, MAP_BASED)

# Each server's share of the ring is off by ~1/sqrt(points): 100 points per weight
# unit keeps a weight-1 server within ~10% of its share (HAProxy's 16 gives ~25%),
# while a pool of total weight 100 is still a 10,000-entry ring (< 1 MB).
RING_POINTS_PER_WEIGHT = 100
# A ring entry is (position << SLOT_BITS) | the server's slot: one sortable int.
SLOT_BITS = 16
SLOT_MASK = (1 << SLOT_BITS) - 1


def point_hash(name: str, index: int) -> int:
    """Ring position of a server's index-th point."""
    return int.from_bytes(blake2b(f"{name}#{index}".encode(), digest_size=4).digest(), "big")


class _Arcs:
    """One server's points on the ring: the first `count` distinct positions of the
    sequence point_hash(name, 0), point_hash(name, 1), ..."""

    __slots__ = ("slot", "positions", "drawn", "count")

    def __init__(self, slot: int) -> None:
        self.slot = slot                # stable while the server stays in the pool
        self.positions: list[int] = []  # distinct, in the order they were drawn
        self.drawn = 0                  # indexes of point_hash used so far
        self.count = 0                  # points on the ring now

    def resize(self, name: str, count: int) -> tuple[list[int], list[int]]:
        """Move to `count` points; return the ring entries to add and to remove."""
        if len(self.positions) < count:
            known = set(self.positions)
            while len(self.positions) < count:
                position = point_hash(name, self.drawn)
                self.drawn += 1
                if position not in known:
                    known.add(position)
                    self.positions.append(position)
        old, self.count = self.count, count
        return ([point << SLOT_BITS | self.slot for point in self.positions[old:count]],
                [point << SLOT_BITS | self.slot for point in self.positions[count:old]])


class HashBalancer(Balancer):
    """Maps `key(request)` onto the servers; subclasses say what the key is."""

    def __init__(self, servers: Sequence[Server], hash_type: str = CONSISTENT) -> None:
        if hash_type not in HASH_TYPES:
            raise ValueError(f"unknown hash_type {hash_type!r} (expected one of {HASH_TYPES})")
        super().__init__(servers)
        self.consistent = hash_type == CONSISTENT
        self._fallback = RoundRobin(self.servers)
        self._arcs: dict[Server, _Arcs] = {}
        self._ring: list[int] = []  # consistent: sorted entries
        self._size = self._members = 0
        self._server_at: Callable[[int], Server] = self.servers.__getitem__
        self._build()

    def key(self, request: RequestInfo) -> str | None:
        raise NotImplementedError

    def update(self, servers: Sequence[Server]) -> None:
        super().update(servers)
        self._fallback.update(self.servers)
        self._build()

    def _build(self) -> None:
        if self.consistent:
            self._build_ring()
            return
        table = weighted_order((server, server.weight) for server in self.servers)
        self._size, self._members = len(table), len(set(table))
        self._server_at = table.__getitem__

    def _build_ring(self) -> None:
        """Apply the change in points to the sorted ring: O(changed points × log) plus
        a merge, so a slowstart ramp (points only added) stays cheap in a large ring."""
        added: list[int] = []
        removed: set[int] = set()
        arcs = {}
        members = set(self.servers)
        for server, arc in self._arcs.items():
            if server in members:
                arcs[server] = arc
            else:
                removed.update(arc.resize(server.name, 0)[1])
        taken = {arc.slot for arc in arcs.values()}
        free = (slot for slot in range(len(self.servers)) if slot not in taken)
        for server in self.servers:
            arc = arcs.get(server) or arcs.setdefault(server, _Arcs(next(free)))
            grown, shrunk = arc.resize(server.name, max(server.weight, 0) * RING_POINTS_PER_WEIGHT)
            added += grown
            removed.update(shrunk)
        ring = [entry for entry in self._ring if entry not in removed] if removed else self._ring
        ring += sorted(added)
        ring.sort()  # two sorted runs: one merge
        owners = {arc.slot: server for server, arc in arcs.items()}
        self._arcs, self._ring, self._size = arcs, ring, len(ring)
        self._members = sum(1 for arc in arcs.values() if arc.count)
        self._server_at = lambda index: owners[ring[index] & SLOT_MASK]

    def pick(self, request: RequestInfo, avoid: Server | None = None) -> Server | None:
        key = self.key(request)
        if not key:
            return self._fallback.pick(request, avoid)
        if not self._size:
            return None
        digest = crc32(key.encode())
        if self.consistent:
            start = bisect_left(self._ring, digest << SLOT_BITS)
            if start == self._size:
                start = 0
        else:
            start = digest % self._size
        index = walk(self._server_at, self._size, start, avoid, self._members)
        return self._server_at(index) if index >= 0 else fallback(avoid)


class SourceHash(HashBalancer):
    """`source`: the client IP, so one client keeps its server without cookies."""

    name = "source"

    def key(self, request: RequestInfo) -> str | None:
        return request.src


class UriHash(HashBalancer):
    """`uri`: the path without the query (HAProxy's default), for cache affinity."""

    name = "uri"

    def key(self, request: RequestInfo) -> str | None:
        return request.path


class UrlParamHash(HashBalancer):
    """`url_param(NAME)`: the raw value of query parameter NAME (e.g. a user id)."""

    name = "url_param"

    def __init__(self, servers: Sequence[Server], param: str,
                 hash_type: str = CONSISTENT) -> None:
        self.needle = f"&{param}="
        super().__init__(servers, hash_type)

    def key(self, request: RequestInfo) -> str | None:
        query = "&" + request.query
        start = query.find(self.needle)
        if start < 0:
            return None
        start += len(self.needle)
        end = query.find("&", start)
        return query[start:end] if end >= 0 else query[start:]


class HeaderHash(HashBalancer):
    """`hdr(NAME)`: the first value of request header NAME."""

    name = "hdr"

    def __init__(self, servers: Sequence[Server], header: str,
                 hash_type: str = CONSISTENT) -> None:
        self.header = header.lower()
        super().__init__(servers, hash_type)

    def key(self, request: RequestInfo) -> str | None:
        return request.header(self.header)
