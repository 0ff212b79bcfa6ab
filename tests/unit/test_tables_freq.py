"""FreqCounter: HAProxy-style curr + prev interpolated rates, on a fake clock."""

from __future__ import annotations

from lbproxy.tables.freq import FreqCounter


def test_steady_rate_is_exact_within_a_few_percent() -> None:
    counter = FreqCounter(10.0)
    t = 1000.0
    for _ in range(600):                 # 20 events/s for 30 s
        counter.add(t)
        t += 0.05
    for probe in (t, t + 0.01, t + 0.025):
        assert abs(counter.rate(probe) - 200) <= 200 * 0.03


def test_burst_counts_fully_then_fades_linearly() -> None:
    counter = FreqCounter(10.0)
    counter.add(100.0, 50)
    assert counter.rate(100.0) == 50
    assert counter.rate(109.9) == 50      # still inside its own period
    assert counter.rate(110.0) == 50      # boundary: the whole previous period counts
    assert counter.rate(112.5) == 37      # 50 x 0.75, truncated like HAProxy
    assert counter.rate(119.99) == 0


def test_rollover_at_one_and_a_half_periods() -> None:
    counter = FreqCounter(10.0)
    counter.add(1.0, 10)                  # period 0
    counter.add(11.0, 5)                  # period 1
    assert counter.rate(15.0) == 5 + 10 * 0.5


def test_idle_counter_decays_to_zero() -> None:
    counter = FreqCounter(1.0)
    counter.add(5.2, 7)
    assert counter.rate(6.0) == 7
    assert counter.rate(7.0) == 0
    assert counter.rate(500.0) == 0
    counter.add(500.0)                    # a gap of many periods forgets everything
    assert (counter.curr, counter.prev) == (1, 0)


def test_set_and_absorb_align_by_period_index() -> None:
    shared = FreqCounter(10.0)
    shared.set(5, 30, 20)                 # totals read from elsewhere for periods 5 and 4
    local = FreqCounter(10.0)
    local.add(55.0, 3)                    # period 5
    shared.absorb(local)
    assert (shared.idx, shared.curr, shared.prev) == (5, 33, 20)

    older = FreqCounter(10.0)
    older.add(41.0, 4)                    # period 4 lands in prev
    shared.absorb(older)
    assert shared.prev == 24

    newer = FreqCounter(10.0)
    newer.add(61.0, 2)                    # period 6: shared rolls forward first
    shared.absorb(newer)
    assert (shared.idx, shared.curr, shared.prev) == (6, 2, 33)


def test_since_reports_events_added_after_a_state() -> None:
    counter = FreqCounter(10.0)
    counter.add(51.0, 4)                  # period 5
    then = counter.state()
    counter.add(52.0, 2)                  # same period
    assert counter.since(then).state() == (5, 2, 0)
    counter.add(61.0, 3)                  # next period: 2 more in 5 (now prev), 3 in 6
    assert counter.since(then).state() == (6, 3, 2)
    counter.add(95.0)                     # far later: everything since is what is left
    assert counter.since(then).state() == (9, 1, 0)
