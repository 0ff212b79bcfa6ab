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
The ring is an array of 8-byte entries (4 MB for 5,000 servers of weight 1, where a
list of ints took 20 MB and the points kept per server as much again); a server's
points are not stored but hashed again when their number changes. A change of a few
servers (a slowstart step, an API weight, one server added or removed) splices their
points in or out, copying the array's slices in C: O(P) bytes moved plus O(k log P) for k points,
~3 ms for 300 points into 500,000. Building from nothing hashes every point and sorts
once: about 0.5 s for 500,000 points (5,000 servers of weight 1).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from hashlib import blake2b
from struct import unpack
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
# while a pool of total weight 5,000 is still a 4 MB ring, built in about 0.5 s.
RING_POINTS_PER_WEIGHT = 100
# A ring entry is (position << SLOT_BITS) | the server's slot: one sortable int.
SLOT_BITS = 16
SLOT_MASK = (1 << SLOT_BITS) - 1
# Splicing k changed points into a ring of P costs O(P) bytes + O(k log P) Python steps;
# past P / SPLICE_RATIO points one sort of everything is quicker.
SPLICE_RATIO = 8


def ring_points(name: str, count: int) -> list[int]:
    """The first `count` distinct positions of blake2b("name#0"), ("name#1"), ...: the
    server's points, in the order they are drawn (~0.4 µs each)."""
    points: list[int] = []
    drawn = 0
    prefix = blake2b(f"{name}#".encode(), digest_size=4)     # hashed once, then copied
    while len(points) < count:
        more = count - len(points)
        digests = []
        for index in range(drawn, drawn + more):
            point = prefix.copy()
            point.update(b"%d" % index)
            digests.append(point.digest())
        points += unpack(f">{more}I", b"".join(digests))
        drawn += more
        if len(set(points)) < len(points):      # a position drawn twice (rare): once
            points = list(dict.fromkeys(points))
    return points


class _Arc:
    """One server's place on the ring: its slot (the low bits of its entries) and how
    many of its points are on the ring."""

    __slots__ = ("slot", "count")

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.count = 0

    def resize(self, name: str, count: int) -> tuple[list[int], list[int]]:
        """Move to `count` points; return the ring entries to add and to remove."""
        old, self.count = self.count, count
        if count == old:
            return [], []
        slot = self.slot
        points = ring_points(name, max(old, count))
        if count > old:
            return [point << SLOT_BITS | slot for point in points[old:count]], []
        return [], [point << SLOT_BITS | slot for point in points[count:old]]


def _spliced(ring: array, added: list[int], removed: list[int]) -> array:
    """`ring` without the entries `removed` and with `added`, still sorted."""
    if len(added) + len(removed) > len(ring) // SPLICE_RATIO:
        entries = ring.tolist()
        if removed:
            gone = set(removed)
            entries = [entry for entry in entries if entry not in gone]
        entries = entries + added if entries else added
        entries.sort()
        return array("Q", entries)
    for changes, keep in ((sorted(removed), False), (sorted(added), True)):
        if not changes:
            continue
        out = array("Q")
        start = 0
        for entry in changes:
            index = bisect_left(ring, entry, start)
            out += ring[start:index]
            if keep:
                out.append(entry)
                start = index
            elif index < len(ring) and ring[index] == entry:
                start = index + 1
            else:
                start = index
        out += ring[start:]
        ring = out
    return ring


class HashBalancer(Balancer):
    """Maps `key(request)` onto the servers; subclasses say what the key is."""

    def __init__(self, servers: Sequence[Server], hash_type: str = CONSISTENT) -> None:
        if hash_type not in HASH_TYPES:
            raise ValueError(f"unknown hash_type {hash_type!r} (expected one of {HASH_TYPES})")
        super().__init__(servers)
        self.consistent = hash_type == CONSISTENT
        self._fallback = RoundRobin(self.servers)
        self._arcs: dict[Server, _Arc] = {}
        self._owners: list[Server | None] = []      # consistent: slot -> server
        self._ring = array("Q")                     # consistent: sorted entries
        self._size = self._members = 0
        self._server_at: Callable[[int], Server] = self.servers.__getitem__
        self._build()

    def key(self, request: RequestInfo) -> str | None:
        raise NotImplementedError

    def update(self, servers: Sequence[Server]) -> None:
        super().update(servers)
        self._fallback.update(self.servers)
        self._build()

    def refresh(self, server: Server) -> None:
        """One server's weight or state changed: only a weight moves points."""
        self._fallback.refresh(server)
        arc = self._arcs.get(server)
        if not self.consistent:
            self._build()
        elif arc is not None and arc.count != self._points(server):
            added, removed = arc.resize(server.name, self._points(server))
            self._ring = _spliced(self._ring, added, removed)
            self._ringed()

    def _build(self) -> None:
        if self.consistent:
            self._build_ring()
            return
        table = weighted_order((server, server.weight) for server in self.servers)
        self._size, self._members = len(table), len(set(table))
        self._server_at = table.__getitem__

    @staticmethod
    def _points(server: Server) -> int:
        return max(server.weight, 0) * RING_POINTS_PER_WEIGHT

    def _build_ring(self) -> None:
        """Apply the change in points to the sorted ring: the points of the servers that
        left, came or changed weight are spliced out and in; the others cost a lookup."""
        added: list[int] = []
        removed: list[int] = []
        members = set(self.servers)
        arcs: dict[Server, _Arc] = {}
        owners = self._owners
        for server, arc in self._arcs.items():
            if server in members:
                arcs[server] = arc
            else:
                removed += arc.resize(server.name, 0)[1]
                owners[arc.slot] = None
        free = (slot for slot, owner in enumerate(owners) if owner is None)
        for server in self.servers:     # first the objects that stay: the many points
            if server not in arcs:      # hashed next are freed whole, and so is memory
                arc = arcs[server] = _Arc(next(free, len(owners)))
                if arc.slot == len(owners):
                    owners.append(server)
                else:
                    owners[arc.slot] = server
        for server, arc in arcs.items():
            points = self._points(server)
            if arc.count != points:
                grown, shrunk = arc.resize(server.name, points)
                added += grown
                removed += shrunk
        self._arcs = arcs
        if added or removed:
            self._ring = _spliced(self._ring, added, removed)
        self._ringed()

    def _ringed(self) -> None:
        """The ring changed: the figures `pick` reads."""
        ring, owners = self._ring, self._owners
        self._size = len(ring)
        self._members = sum(1 for arc in self._arcs.values() if arc.count)
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
