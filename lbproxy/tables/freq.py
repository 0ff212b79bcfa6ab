"""Period rate counter, after HAProxy's ``freq_ctr.c``.

A counter keeps the events of the current period and of the previous one, nothing more
(O(1) memory). The rate over the sliding window of one period ending now is

    curr + prev * (remaining fraction of the current period)

which assumes the previous period's events were spread evenly: exact when the traffic
is steady, and at worst off by the previous period's burstiness.

Periods are aligned on absolute time (period index = floor(now / period)), not on the
counter's first event, so counters fed by different processes from the same wall clock
agree on their windows: that is what lets the Redis store add up buckets by index.
Time is passed in, never read here, so tests drive it with plain floats.
"""

from __future__ import annotations

# Added to the interpolated part before truncating it, so that float noise in
# `1 - frac` (0.4999999 instead of 0.5) does not cost a whole event at exact fractions.
_ROUNDING_SLACK = 1e-9


class FreqCounter:
    """Events per `period` seconds over a sliding window; `rate()` is an int like HAProxy's."""

    __slots__ = ("period", "idx", "curr", "prev")

    def __init__(self, period: float) -> None:
        self.period = period
        self.idx = 0      # index of the period `curr` belongs to
        self.curr = 0
        self.prev = 0     # events of period idx - 1

    def add(self, now: float, n: int = 1) -> None:
        """Count `n` events at time `now`."""
        idx = int(now // self.period)
        if idx != self.idx:
            self._roll(idx)
        self.curr += n

    def rate(self, now: float) -> int:
        """Events in the window (now - period, now], prev interpolated."""
        pos = now / self.period
        idx = int(pos)
        if idx == self.idx:
            curr, prev = self.curr, self.prev
        elif idx == self.idx + 1:
            curr, prev = 0, self.curr
        else:
            return 0
        return curr + int(prev * (1.0 - (pos - idx)) + _ROUNDING_SLACK)

    def state(self) -> tuple[int, int, int]:
        """(idx, curr, prev), to tell later what was added since (`since`)."""
        return self.idx, self.curr, self.prev

    def since(self, state: tuple[int, int, int]) -> FreqCounter:
        """The events added since `state()` returned `state`, as a counter of their own."""
        idx, curr, prev = state
        delta = FreqCounter(self.period)
        delta.set(self.idx, self.curr, self.prev)
        gap = self.idx - idx
        if gap == 0:
            delta.curr -= curr
            delta.prev -= prev
        elif gap == 1:
            delta.prev -= curr
        return delta

    def set(self, idx: int, curr: int, prev: int) -> None:
        """Replace the state with counts known elsewhere (the shared Redis buckets)."""
        self.idx, self.curr, self.prev = idx, curr, prev

    def absorb(self, other: FreqCounter) -> None:
        """Add `other`'s events (same period) to ours, aligned by period index."""
        if other.idx > self.idx:
            self._roll(other.idx)
        gap = self.idx - other.idx
        if gap == 0:
            self.curr += other.curr
            self.prev += other.prev
        elif gap == 1:
            self.prev += other.curr

    def _roll(self, idx: int) -> None:
        """Move to period `idx`: curr becomes prev only if `idx` is the next period."""
        self.prev = self.curr if idx == self.idx + 1 else 0
        self.curr = 0
        self.idx = idx
