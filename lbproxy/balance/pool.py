"""Small views of a server pool that several algorithms share.

They implement the parts of the Balancer contract that are the same everywhere: a
server must be `available` and not `avoid`, and `avoid` is the last resort when nothing
else is left. Keeping them in one place keeps each algorithm down to its own data
structure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from math import gcd
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lbproxy.backends.server import Server


def fallback(avoid: Server | None) -> Server | None:
    """The contract's last resort: a retry may go back to `avoid` rather than get a 503."""
    return avoid if avoid is not None and avoid.available else None


def candidates(servers: Iterable[Server], avoid: Server | None) -> list[Server]:
    """Available servers other than `avoid`, else `[avoid]` if it is available, else []."""
    pool = [server for server in servers if server is not avoid and server.available]
    if not pool and avoid is not None and avoid.available:
        pool.append(avoid)
    return pool


def walk(server_at: Callable[[int], Server], size: int, start: int,
         avoid: Server | None, members: int) -> int:
    """Index of the first usable entry at or after `start` in a circular table, or -1.

    The table (a hash ring, a weighted sequence) has `size` entries, read through
    `server_at`, and repeats `members` distinct servers. The walk stops once every
    member has been seen, so a pool with nothing available costs one lap at most; the
    common case (the first entry is fine) allocates nothing. `avoid` is skipped; the
    caller applies `fallback`.
    """
    server = server_at(start)
    if server is not avoid and server.available:
        return start
    seen = {server}
    index = start
    while len(seen) < members:
        index = index + 1 if index + 1 < size else 0
        server = server_at(index)
        if server in seen:
            continue
        if server is not avoid and server.available:
            return index
        seen.add(server)
    return -1


def weighted_order(weighted: Iterable[tuple[Server, int]]) -> list[Server]:
    """Each server `weight / gcd` times, spread evenly (Sainte-Laguë/Webster order).

    The j-th copy of a server of weight w sits at (j + 1/2) / w of the cycle, so every
    prefix of the sequence is within one pick of each server's exact share. Cost:
    O(T log T) for T = sum of reduced weights; weight-0 servers are left out.
    """
    pairs = [(server, weight) for server, weight in weighted if weight > 0]
    divisor = 0
    for _, weight in pairs:
        divisor = gcd(divisor, weight)
    slots = [((2 * j + 1) / (2 * (weight // divisor)), index, server)
             for index, (server, weight) in enumerate(pairs)
             for j in range(weight // divisor)]
    slots.sort(key=lambda slot: slot[:2])
    return [server for _, _, server in slots]
