"""bench.soak's verdict and error attribution: what its closing table claims rests on these."""

from __future__ import annotations

from collections import Counter

from bench.soak import Row, attribute, judge, unexplained


def row(elapsed: float, rss_mb: float, fds: int) -> Row:
    return Row(elapsed, Counter(ok=100), int(rss_mb * 1024), fds, 10, 0, 0)


def test_flat_run_is_judged_flat_from_the_warm_up_on() -> None:
    rows = [row(30, 40, 20)] + [row(t, 60 + t / 1000, 70 + t % 3) for t in range(60, 330, 30)]
    verdict = judge(rows, warmup=60)
    assert verdict is not None
    assert verdict.rows_before == (60, 90) and verdict.rows_after == (270, 300)
    assert verdict.rss_flat and verdict.fds_flat          # the 40 MB start-up row is left out


def test_growth_beyond_the_limits_is_not_flat() -> None:
    rows = [row(t, 60 + t / 10, 70 + t // 10) for t in range(60, 330, 30)]
    verdict = judge(rows, warmup=60)
    assert not verdict.rss_flat and not verdict.fds_flat
    assert "GROWING" in verdict.line()


def test_too_few_rows_give_no_verdict() -> None:
    assert judge([row(t, 60, 70) for t in (30, 60, 90)], warmup=60) is None


def test_errors_are_placed_by_kill_window_then_reload_grace() -> None:
    errors = [(10.5, "reset", "a"), (21.0, "5xx", "b"), (40.0, "reset", "c"), (51.0, "timeout", "d")]
    kills, reloads = [(10.0, 16.0)], [20.0, 50.0]
    found = attribute(errors, kills, reloads)
    assert found == Counter({("reset", "kill"): 1, ("5xx", "reload"): 1, ("reset", "elsewhere"): 1,
                             ("timeout", "reload"): 1})
    assert unexplained(errors, kills, reloads, started=0.0, most=2) == [
        "21.0 s (1.0 s after a reload): b", "40.0 s (20.0 s after a reload): c"]
