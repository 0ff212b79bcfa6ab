"""Least-squares trend of a time series, for the autoscaler's predictive mode.

`fit_linear` is ordinary least squares of value on time. Times and values are centred
on their means before summing, so epoch-sized timestamps (1.7e9 s) do not swamp the
few seconds between samples, and a forecast is computed from the centre of the data
rather than from an intercept at t = 0 far away. Cost: O(n) per fit.

R² is the squared correlation of time and value, which for a straight-line fit equals
1 - SS_res / SS_tot, clamped to [0, 1]. Degenerate series:
- a flat series (all values equal) is predicted perfectly by its horizontal line:
  slope 0, R² 1 ("nothing is changing", with full confidence);
- fewer than MIN_SAMPLES samples, or all samples at one instant: there is no trend to
  measure, and `fit_linear` returns None.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

MIN_SAMPLES = 3  # two points always lie on a line (R² = 1): no evidence of a trend


@dataclass(frozen=True, slots=True)
class LinearFit:
    """value ≈ v_mean + slope × (t - t_mean), with its goodness of fit."""

    slope: float
    r2: float
    samples: int
    t_mean: float
    v_mean: float

    @property
    def intercept(self) -> float:
        """The fitted value at t = 0 (for display; `forecast` avoids it for precision)."""
        return self.v_mean - self.slope * self.t_mean

    def forecast(self, at: float) -> float:
        """The fitted value at time `at`."""
        return self.v_mean + self.slope * (at - self.t_mean)


def fit_linear(samples: Sequence[tuple[float, float]]) -> LinearFit | None:
    """Fit (time, value) samples; None when no trend can be measured (see module doc)."""
    n = len(samples)
    if n < MIN_SAMPLES:
        return None
    times = [t for t, _ in samples]
    values = [v for _, v in samples]
    t_mean = math.fsum(times) / n
    dts = [t - t_mean for t in times]
    sxx = math.fsum(d * d for d in dts)
    if sxx == 0.0:
        return None
    if min(values) == max(values):
        # Tested on the raw values: a computed mean may be off by one ulp, which would
        # turn an exactly flat series into rounding noise with a meaningless R².
        return LinearFit(slope=0.0, r2=1.0, samples=n, t_mean=t_mean, v_mean=values[0])
    v_mean = math.fsum(values) / n
    dvs = [v - v_mean for v in values]
    sxy = math.fsum(d * e for d, e in zip(dts, dvs))
    syy = math.fsum(e * e for e in dvs)
    r2 = min(1.0, sxy * sxy / (sxx * syy))
    return LinearFit(slope=sxy / sxx, r2=r2, samples=n, t_mean=t_mean, v_mean=v_mean)


class SampleWindow:
    """(time, value) samples of the last `window` seconds; times must not go backwards.

    A sample exactly `window` seconds old is still inside: a window of 0 keeps only the
    samples taken at the latest time.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, time: float, value: float) -> None:
        self._samples.append((time, value))
        horizon = time - self.window
        while self._samples[0][0] < horizon:
            self._samples.popleft()

    def since(self, start: float) -> list[float]:
        """Values of the samples taken at or after `start`, oldest first."""
        return [v for t, v in self._samples if t >= start]

    def fit(self) -> LinearFit | None:
        return fit_linear(self._samples)
