"""Least connections (`balance: leastconn`).

Algorithm: the available server with the fewest in-flight requests per unit of weight.
Among equals, the one that has waited longest goes first: a server that is picked or whose
load changes (a request starts or ends) goes behind the servers of its new load, as in
HAProxy's lb_fwlc.c, so idle servers take turns instead of the first one getting every
request. As in HAProxy, weights break no ties among idle servers: at very low
concurrency leastconn behaves like plain round robin.

Pick cost: O(log n). The available servers sit in one heap keyed by
(in_flight / weight, arrival); a pick takes the top and puts it back behind its equals
(with the load `on_start` gives it, in one sift); `on_finish` moves a server whose load
changed with a heap push (the old entry is left dead and dropped when it surfaces or
the heap is compacted). The keys are floats: with in_flight < 2^20 and weights <= 256, two
different ratios never round to the same float, and equal ratios always do.

Changes of weight or state are told through `update`/`refresh` (lbproxy/balance/
tracked.py); a load the hooks did not see is corrected when the server reaches the top.
"""

from __future__ import annotations

from collections.abc import Sequence
from heapq import heapify, heappop, heappush, heapreplace
from typing import TYPE_CHECKING

from lbproxy.balance.tracked import SLACK, Slot, Tracked

if TYPE_CHECKING:
    from lbproxy.backends.server import Server


class LeastConn(Tracked):
    """Fewest in-flight requests per weight; equals in arrival order."""

    name = "leastconn"

    def __init__(self, servers: Sequence[Server]) -> None:
        self._heap: list[list] = []     # [in_flight / weight, arrival, slot]
        self._live = 0
        self._arrivals = 0
        self._picked: Slot | None = None    # the last winner, still on top (see _requeue)
        super().__init__(servers)

    def _requeue(self) -> None:
        """The last winner goes behind its equals, at its load now. Done at the next
        change or pick rather than in the pick, so that the on_start which follows a
        pick moves the top entry in one sift and leaves no dead entry behind."""
        slot, self._picked = self._picked, None
        entry = slot.entry
        if entry is not None:           # every change requeues first: it is on top
            server = slot.server
            entry = [server.in_flight / server.weight, self._arrivals, slot]
            self._arrivals += 1
            heapreplace(self._heap, entry)
            slot.entry = entry

    def _place(self, slot: Slot) -> None:
        if self._picked is not None:
            self._requeue()
        server = slot.server
        load = server.in_flight / server.weight
        entry = slot.entry
        if entry is None:
            self._live += 1
        elif entry[0] == load:
            return
        entry = [load, self._arrivals, slot]
        self._arrivals += 1
        heap = self._heap
        heappush(heap, entry)
        slot.weight, slot.entry = server.weight, entry
        if len(heap) > 2 * self._live + SLACK:
            heap[:] = [entry for entry in heap if entry[2].entry is entry]
            heapify(heap)

    def _remove(self, slot: Slot) -> None:
        if self._picked is not None:
            self._requeue()
        slot.weight, slot.entry = 0, None
        self._live -= 1

    def _next(self) -> Server | None:
        if self._picked is not None:
            self._requeue()
        heap = self._heap
        while self._live:
            entry = heap[0]
            slot = entry[2]
            if slot.entry is not entry:             # dead: the server left or moved
                heappop(heap)
                continue
            server = slot.server
            if not server.available:                # changed without a refresh
                self._park(slot)
                continue
            if server.in_flight / server.weight != entry[0]:
                self._place(slot)
                continue
            self._picked = slot
            return server
        return None

    def on_start(self, server: Server) -> None:
        self.refresh(server)

    def on_finish(self, server: Server, latency: float, ok: bool) -> None:
        self.refresh(server)
