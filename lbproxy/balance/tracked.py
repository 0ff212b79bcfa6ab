"""The shell of an algorithm that keeps its available servers in an ordered structure.

Round robin and leastconn keep the available servers in heaps so that a pick costs
O(log n) instead of a scan of the pool (HAProxy's lb_fwrr.c/lb_fwlc.c keep trees for
the same reason). A structure like that must hear of every change instead of reading
the pool live, and this class is where it hears: `update()` diffs a new member list
(O(n) dictionary lookups, no rebuild), `refresh(server)` moves one server in or out or
to its new weight (O(log n)), and `on_start`/`on_finish` do the same when a request
makes a server reach or leave its maxconn. The subclass owns the structure, through
`_place(slot)` (put an available server in at its live weight, or move it there) and
`_remove(slot)` (take it out, keeping what it needs to rejoin), and implements
`_next()`, the pick among the servers in.

Changes nobody announced (a test flipping `server.up`, a caller forgetting `refresh`)
cost exactness, never correctness: `_next()` checks its winner live and parks it when
unusable, and each pick looks again at one parked server (at all of them when nothing
else is left), so such a server is back within as many picks as there are parked
servers. The hashing algorithms' round-robin fallback relies on this for maxconn, as it
gets no hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lbproxy.balance.base import Balancer
from lbproxy.balance.pool import fallback
from lbproxy.http.request import RequestInfo

if TYPE_CHECKING:
    from lbproxy.backends.server import Server

# A heap is compacted when its dead entries (servers that left it, old keys) outnumber
# the live ones by this much: amortised O(1) per change, and memory stays O(n).
SLACK = 16


class Slot:
    """A member server as the structure holds it; the fields after `weight` are the
    subclass's. `entry` is the server's live heap entry (a list ending with the slot);
    an entry whose slot no longer points at it is dead."""

    __slots__ = ("server", "order", "weight", "entry", "credit")

    def __init__(self, server: Server, order: int) -> None:
        self.server = server
        self.order = order      # rank in the member list: breaks ties like a scan would
        self.weight = 0         # the weight it is in with; 0 = out of the structure
        self.entry: list | None = None
        self.credit = 0

    def __lt__(self, other: Slot) -> bool:
        """Heap entries compare by their keys; only a server's dead entry and its live
        one can tie on all of them, and either may go first."""
        return False


class Tracked(Balancer):
    """Membership and change notifications around a subclass's ordered structure."""

    def __init__(self, servers: Sequence[Server]) -> None:
        super().__init__(())
        self._slots: dict[Server, Slot] = {}
        self._parked: dict[Server, Slot] = {}   # found unusable without being told
        self._order = 0                         # the next member's rank
        self.update(servers)

    # the structure, in the subclass

    def _place(self, slot: Slot) -> None:
        raise NotImplementedError

    def _remove(self, slot: Slot) -> None:
        raise NotImplementedError

    def _next(self) -> Server | None:
        raise NotImplementedError

    def _reorder(self) -> None:
        """Members changed their relative order: rebuild keys that embed `order`."""
        placed = [slot for slot in self._slots.values() if slot.weight]
        for slot in placed:
            self._remove(slot)
        for slot in placed:
            self._place(slot)

    # changes

    def update(self, servers: Sequence[Server]) -> None:
        """New member list: O(n) lookups; members that stay keep their state."""
        self.servers = list(servers)
        old = self._slots
        slots: dict[Server, Slot] = {}
        last = -1
        reordered = False
        for server in self.servers:
            slot = old.pop(server, None)
            if slot is None:
                slot = Slot(server, self._order)
                self._order += 1
            reordered = reordered or slot.order < last
            last = slot.order
            slots[server] = slot
        for slot in old.values():
            self._parked.pop(slot.server, None)
            if slot.weight:
                self._remove(slot)
        self._slots = slots
        if reordered:
            for order, slot in enumerate(slots.values()):
                slot.order = order
            self._order = len(slots)
            self._reorder()
        for slot in slots.values():
            self._sync(slot)

    def refresh(self, server: Server) -> None:
        """`server`'s weight or state changed: O(log n)."""
        slot = self._slots.get(server)
        if slot is not None:
            self._sync(slot)

    def _sync(self, slot: Slot) -> None:
        self._parked.pop(slot.server, None)
        if slot.server.available:
            self._place(slot)
        elif slot.weight:
            self._remove(slot)

    def wants_hooks(self, servers: Sequence[Server]) -> bool:
        """These hooks only follow servers in and out of `maxconn`: needed when one has it."""
        cls = type(self)
        return (cls.on_start is not Tracked.on_start or cls.on_finish is not Tracked.on_finish
                or any(server.maxconn for server in servers))

    def on_start(self, server: Server) -> None:
        if server.maxconn and server.in_flight >= server.maxconn:   # it just became full
            self.refresh(server)

    def on_finish(self, server: Server, latency: float, ok: bool) -> None:
        if server.maxconn:                                          # it may have room again
            self.refresh(server)

    # the pick

    def pick(self, request: RequestInfo, avoid: Server | None = None) -> Server | None:
        if self._parked:
            self._look_again(1)
        slot = self._slots.get(avoid) if avoid is not None else None
        if slot is not None and slot.weight:
            self._remove(slot)          # out for this one pick: it neither wins nor gains
        else:
            slot = None
        server = self._next()
        if server is None and self._parked:     # nothing else left: look at them all
            self._look_again(len(self._parked))
            server = self._next()
        if slot is not None:
            self._sync(slot)
        return server or fallback(avoid)

    def _park(self, slot: Slot) -> None:
        """`_next()` found its winner unusable: out until a look shows it usable again."""
        self._remove(slot)
        self._parked[slot.server] = slot

    def _look_again(self, count: int) -> None:
        """`count` parked servers, in turn: back in if usable, else to the end."""
        parked = self._parked
        for _ in range(count):
            server, slot = next(iter(parked.items()))
            del parked[server]
            if server.available:
                self._place(slot)
            else:
                parked[server] = slot
