"""Smooth weighted round robin (`balance: roundrobin`).

Algorithm (nginx's smooth WRR, ngx_http_upstream_round_robin.c): every available
server's credit grows by its weight; the largest wins and gives back the total weight
of the servers that took part; ties go to the first in configured order. Over a cycle
of sum(weights) picks each server gets exactly its weight, and the picks are
interleaved rather than in bursts: weights 5, 1, 1 give a a b a c a a.

Pick cost: O(d + log n) for d distinct weights among the available servers (usually
1 to 3; a slowstart ramp adds one or two). The scan of nginx is avoided by never adding
the weights: after t picks a server's credit is `weight * t - key`, so within one weight
the order of credits is the order of `key`, which changes only for the winner (its key
grows by the total weight). Each weight keeps a heap of keys; a pick compares the d
heap tops and replaces the winner's entry. Integers throughout, so the sequence is
exactly nginx's.

Fairness: unavailable servers and `avoid` neither win nor accumulate credit while out
(their credit is frozen and becomes a new key when they come back). A weight change
(slowstart step, API) keeps the credit and moves the server to its new weight's heap;
membership changes keep every remaining server's credit. All of these are told through
`update`/`refresh`/the hooks (lbproxy/balance/tracked.py), each O(log n).
"""

from __future__ import annotations

from collections.abc import Sequence
from heapq import heapify, heappop, heappush, heapreplace
from typing import TYPE_CHECKING

from lbproxy.balance.tracked import SLACK, Slot, Tracked

if TYPE_CHECKING:
    from lbproxy.backends.server import Server

class RoundRobin(Tracked):
    """Smooth weighted round robin over per-weight heaps of [key, order, slot]."""

    name = "roundrobin"

    def __init__(self, servers: Sequence[Server]) -> None:
        self._picks = 0                             # t: picks with someone to pick
        self._total = 0                             # weight of the servers in
        self._heaps: dict[int, list[list]] = {}     # weight -> heap; no empty heaps
        self._live: dict[int, int] = {}             # weight -> servers in its heap
        super().__init__(servers)

    def _place(self, slot: Slot) -> None:
        weight = slot.server.weight
        if slot.weight == weight:
            return
        if slot.weight:
            self._remove(slot)
        entry = [weight * self._picks - slot.credit, slot.order, slot]
        heap = self._heaps.get(weight)
        if heap is None:
            heap = self._heaps[weight] = []
            self._live[weight] = 0
        heappush(heap, entry)
        self._live[weight] += 1
        self._total += weight
        slot.weight, slot.entry = weight, entry

    def _remove(self, slot: Slot) -> None:
        weight, entry = slot.weight, slot.entry
        slot.credit = weight * self._picks - entry[0]
        slot.weight, slot.entry = 0, None
        self._total -= weight
        live = self._live[weight] - 1
        if not live:
            del self._heaps[weight], self._live[weight]
            return
        self._live[weight] = live
        heap = self._heaps[weight]
        if len(heap) > 2 * live + SLACK:
            heap[:] = [entry for entry in heap if entry[2].entry is entry]
            heapify(heap)

    def _next(self) -> Server | None:
        while self._heaps:
            picks = self._picks + 1
            best: list | None = None
            best_heap: list[list] = []
            best_credit = best_weight = 0
            for weight, heap in self._heaps.items():
                entry = heap[0]
                while entry[2].entry is not entry:  # dead: the server left or moved
                    heappop(heap)
                    entry = heap[0]
                credit = weight * picks - entry[0]
                if best is None or credit > best_credit or (
                        credit == best_credit and entry[1] < best[1]):
                    best, best_heap, best_credit, best_weight = entry, heap, credit, weight
            slot = best[2]
            server = slot.server
            if not server.available:                # changed without a refresh
                self._park(slot)
                continue
            if server.weight != best_weight:
                self._place(slot)
                continue
            entry = [best[0] + self._total, best[1], slot]
            heapreplace(best_heap, entry)
            slot.entry = entry
            self._picks = picks
            return server
        return None
