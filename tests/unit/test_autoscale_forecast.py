"""Least-squares fit and sample window behind the autoscaler's predictive mode."""

from __future__ import annotations

import pytest

from lbproxy.autoscale.forecast import SampleWindow, fit_linear


def test_perfect_line_fits_exactly() -> None:
    fit = fit_linear([(t, 2.0 * t + 5.0) for t in range(10)])
    assert fit is not None
    assert fit.slope == pytest.approx(2.0)
    assert fit.intercept == pytest.approx(5.0)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.samples == 10
    assert fit.forecast(20.0) == pytest.approx(45.0)


def test_known_small_fit() -> None:
    # t̄ = 1, v̄ = 2, Sxy = 1, Sxx = 2, Syy = 2 → slope 0.5, R² = 1² / (2·2) = 0.25.
    fit = fit_linear([(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)])
    assert fit is not None
    assert fit.slope == 0.5
    assert fit.intercept == 1.5
    assert fit.r2 == 0.25
    assert fit.forecast(4.0) == 3.5


def test_epoch_timestamps_keep_precision() -> None:
    t0 = 1.7e9
    fit = fit_linear([(t0 + i, 100.0 + 3.0 * i) for i in range(6)])
    assert fit is not None
    assert fit.slope == pytest.approx(3.0, abs=1e-9)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.forecast(t0 + 20) == pytest.approx(160.0, abs=1e-6)


@pytest.mark.parametrize("samples", [[], [(0.0, 1.0)], [(0.0, 1.0), (1.0, 2.0)]])
def test_fewer_than_three_samples_give_no_fit(samples: list[tuple[float, float]]) -> None:
    assert fit_linear(samples) is None


def test_samples_all_at_one_instant_give_no_fit() -> None:
    assert fit_linear([(5.0, 1.0), (5.0, 2.0), (5.0, 3.0)]) is None


def test_flat_series_predicts_itself_with_full_confidence() -> None:
    # 0.1 three times has a float mean one ulp off; the fit must still be exactly flat.
    fit = fit_linear([(0.0, 0.1), (1.0, 0.1), (2.0, 0.1)])
    assert fit is not None
    assert (fit.slope, fit.r2, fit.forecast(100.0)) == (0.0, 1.0, 0.1)


def test_r2_is_low_for_noise() -> None:
    # Sxy = 2000, Sxx = 500, Syy = 170000 → R² = 4e6 / 8.5e7.
    fit = fit_linear([(0.0, 1000.0), (10.0, 1400.0), (20.0, 900.0), (30.0, 1300.0)])
    assert fit is not None
    assert fit.slope == 4.0
    assert fit.r2 == pytest.approx(4e6 / 8.5e7)


def test_window_drops_old_samples_and_keeps_the_boundary() -> None:
    window = SampleWindow(10.0)
    for t in (0.0, 5.0, 10.0):
        window.add(t, t)
    assert window.since(0.0) == [0.0, 5.0, 10.0]  # exactly 10 s old: still inside
    window.add(11.0, 11.0)
    assert window.since(-100.0) == [5.0, 10.0, 11.0]
    assert window.since(10.0) == [10.0, 11.0]


def test_zero_window_keeps_only_the_latest_instant() -> None:
    window = SampleWindow(0.0)
    window.add(1.0, 7.0)
    window.add(2.0, 8.0)
    window.add(2.0, 9.0)
    assert window.since(2.0) == [8.0, 9.0]
    assert window.fit() is None


def test_window_fit_uses_only_recent_samples() -> None:
    window = SampleWindow(20.0)
    window.add(0.0, 1000.0)  # an outlier that ages out
    for t in (10.0, 20.0, 30.0):
        window.add(t, 2.0 * t)
    fit = window.fit()
    assert fit is not None
    assert (fit.samples, fit.slope, fit.r2) == (3, 2.0, 1.0)
