"""The request rate's trend, for the autoscaler's predictive mode: whether there is enough
evidence to trust one, and how high it says the rate will be `horizon` from now.

`forecast` judges the (time, rate) samples of the last `window` seconds in this order:
1. enough evidence: the samples must span at least `min_fill` of the window and number
   at least MIN_SAMPLES. A fresh start waits: three samples of a flat noisy rate fit a
   line with R² >= 0.6 44 % of the time;
2. the recent trend (`fit_trend`): with `trend: piecewise` (the default), the least-
   squares line with one bend (continuous, two slopes) when that explains the window
   clearly better than one straight line, by the Bayesian information criterion; the
   trend now is the slope after the bend. A rate that rises and then levels off bends:
   a few samples into the plateau the slope after the bend is flat and the forecast
   stops rising, where one line over the window (`trend: linear`, kept to measure
   against) keeps projecting the ramp's average slope over the plateau for most of a
   window. A bend also shows a ramp starting sooner than one line would;
3. trust: R² of the fit >= `min_r2`, and a significant slope, |t| = |slope / standard
   error| at least the one-sided Student t quantile at `confidence` (n - 2 degrees of
   freedom for a line, n - 3 with a bend). R² alone says how well a line fits, not
   whether there is a trend: a few noisy samples can fit well;
4. the forecast: the fitted trend at now + horizon, and `low`, the lower end of its
   one-sided confidence interval at `confidence`. Sizing the pool by `low` damps a
   projection by its own uncertainty: a long clean ramp is projected almost in full, a
   short or noisy segment (a bend just found) much less.
A trusted trend is "rising" or "falling"; anything short of that is "none", with a note
saying which test failed. Cost: O(n) per window (running sums; every bend is tried).

Fits use times relative to the last sample and values centred on their mean, so
epoch-sized timestamps and large rates keep their precision.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

MIN_FIT = 3  # two points always lie on a line, with no residual to measure noise by
# Fewest samples a trend is judged on, whatever the window: with 5 samples a line's t test
# has 3 degrees of freedom (critical value 2.35 at 95 %).
MIN_SAMPLES = 5
# Fewest samples on each side of a bend: a rate that levels off is seen as a bend (and its
# rise stops being projected) about this many intervals after it did. With two, a single
# outlier at either end of the window would make a bend and a "trend" of its own.
MIN_SEGMENT = 3
# A bend must lower n·ln(SS_res) by more than this many ln(n) to be used: BIC, for its two
# extra parameters (the second slope, where it starts), plus one as it is chosen as the
# best among n places. With 2 s samples in a 30 s window, flat Poisson noise then shows a
# trusted trend in 0.7 % of windows (one line: 0.06 %), and a ramp of 15 req/s per second
# is found 4 s after it starts and its end 6 s after (one line: 12 s and 20 s).
BEND_PENALTY = 3.0
# Slopes this small relative to the values (times the span) are rounding, not a trend.
_ROUNDING = 1e-9

Direction = Literal["rising", "falling", "none"]


@dataclass(frozen=True, slots=True)
class Trend:
    """A least-squares fit: value ≈ a + b·d + c·max(0, d - bend), d = time - origin.

    Without a bend c = 0 and it is a straight line. `cov` is the coefficients'
    covariance (residual variance × (X'X)⁻¹), for the standard errors."""

    samples: int
    segment: int  # samples after the bend (all of them without one)
    bend: float | None  # the time where the last segment starts; None: one line
    slope: float  # of the last segment (b + c), value per second
    r2: float
    stderr: float  # of that slope
    df: int  # residual degrees of freedom
    origin: float  # the time of the last sample
    coef: tuple[float, float, float]  # (a, b, c)
    cov: tuple[tuple[float, ...], ...]

    @property
    def t(self) -> float:
        """slope / stderr: 0 without a slope, ±inf for a slope without residuals."""
        if self.slope == 0.0:
            return 0.0
        if self.stderr == 0.0:
            return math.copysign(math.inf, self.slope)
        return self.slope / self.stderr

    def _x(self, at: float) -> tuple[float, float, float]:
        d = at - self.origin
        return (1.0, d, 0.0 if self.bend is None else max(0.0, at - self.bend))

    def value(self, at: float) -> float:
        """The fitted value at time `at`."""
        return math.fsum(c * x for c, x in zip(self.coef, self._x(at)))

    def value_stderr(self, at: float) -> float:
        """Standard error of the fitted value at `at` (of the trend, not of one sample)."""
        x = self._x(at)
        var = math.fsum(x[i] * self.cov[i][j] * x[j] for i in range(3) for j in range(3))
        return math.sqrt(max(0.0, var))


# Sums over a run of samples: (n, Σd, Σd², Σv, Σdv, Σv²).
_Sums = tuple[float, float, float, float, float, float]


def _suffix_sums(ds: Sequence[float], vs: Sequence[float]) -> list[_Sums]:
    """sums[k] = the sums over samples k..n-1 (sums[n] = zeros)."""
    sums = [(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)]
    for d, v in zip(reversed(ds), reversed(vs)):
        n, sd, sdd, sv, sdv, svv = sums[-1]
        sums.append((n + 1, sd + d, sdd + d * d, sv + v, sdv + d * v, svv + v * v))
    sums.reverse()
    return sums


def _solve3(m: list[list[float]], r: list[float]) -> tuple[list[float], list[list[float]]] | None:
    """(M⁻¹ r, M⁻¹) for a symmetric 3×3 M by cofactors; None when M is singular."""
    (a, b, c), (_, e, f), (_, _, i) = m
    co = [[e * i - f * f, c * f - b * i, b * f - c * e],
          [c * f - b * i, a * i - c * c, b * c - a * f],
          [b * f - c * e, b * c - a * f, a * e - b * b]]
    det = a * co[0][0] + b * co[0][1] + c * co[0][2]
    scale = max(abs(x) for row in m for x in row)
    if abs(det) <= 1e-12 * scale**3:
        return None
    inv = [[x / det for x in row] for row in co]
    return [math.fsum(inv[k][j] * r[j] for j in range(3)) for k in range(3)], inv


def _bent(whole: _Sums, after: _Sums, tau: float
          ) -> tuple[float, list[float], list[list[float]]] | None:
    """(SS_res, (a, b, c), (X'X)⁻¹) of v ≈ a + b·d + c·max(0, d - tau), from the sums over
    all samples and over those after the bend (d > tau, where the third column is not 0)."""
    n, sd, sdd, sv, sdv, svv = whole
    na, sda, sdda, sva, sdva, _ = after
    sz = sda - na * tau
    szz = sdda - 2 * tau * sda + na * tau * tau
    sdz = sdda - tau * sda
    svz = sdva - tau * sva
    solved = _solve3([[n, sd, sz], [sd, sdd, sdz], [sz, sdz, szz]], [sv, sdv, svz])
    if solved is None:
        return None
    beta, inv = solved
    return max(0.0, svv - (beta[0] * sv + beta[1] * sdv + beta[2] * svz)), beta, inv


def fit_trend(samples: Sequence[tuple[float, float]], bend: bool = True) -> Trend | None:
    """The least-squares line through (time, value) samples or, with `bend`, the line
    with one bend when it passes BIC against the straight line (its SS_res must be
    below the line's by a factor n^(-BEND_PENALTY/n)). A bend is tried at every sample
    that leaves MIN_SEGMENT samples up to it (itself included) and MIN_SEGMENT after it.
    None with fewer than MIN_FIT samples, or all of them at one instant."""
    n = len(samples)
    if n < MIN_FIT:
        return None
    origin = samples[-1][0]
    ds = [t - origin for t, _ in samples]
    raw = [v for _, v in samples]
    # An exactly flat series is flat: a computed mean one ulp off must not make noise.
    flat = min(raw) == max(raw)
    v_mean = raw[0] if flat else math.fsum(raw) / n
    vs = [0.0] * n if flat else [v - v_mean for v in raw]
    sums = _suffix_sums(ds, vs)
    whole = sums[0]
    _, sd, sdd, sv, sdv, svv = whole
    sxx = sdd - sd * sd / n
    if sxx <= 0.0:
        return None
    syy = svv - sv * sv / n
    sxy = sdv - sd * sv / n
    line_slope = sxy / sxx
    line_sse = max(0.0, syy - line_slope * sxy)
    tiny = _ROUNDING * max(1.0, max(abs(v) for v in raw))
    span = -ds[0]

    best: tuple[float, float, int, list[float], list[list[float]]] | None = None
    if bend:
        for k in range(MIN_SEGMENT, n - MIN_SEGMENT + 1):
            tau = ds[k - 1]
            if ds[k] == tau:
                continue
            fit = _bent(whole, sums[k], tau)
            if fit is not None and (best is None or fit[0] < best[0]):
                best = (fit[0], tau, n - k, fit[1], fit[2])
    exact = (tiny * tiny) * n  # SS_res at this level is rounding
    if best is not None and line_sse > exact and (
            best[0] <= exact or n * math.log(best[0] / line_sse) < -BEND_PENALTY * math.log(n)):
        sse, tau, after, beta, inv = best
        df = n - 3
        var = sse / df
        cov = tuple(tuple(var * x for x in row) for row in inv)
        slope = beta[1] + beta[2]
        slope_var = cov[1][1] + 2 * cov[1][2] + cov[2][2]
        if abs(slope) * span <= tiny:
            slope = 0.0
        r2 = 1.0 if syy <= exact else max(0.0, min(1.0, 1 - sse / syy))
        return Trend(n, after, tau + origin, slope, r2, math.sqrt(max(0.0, slope_var)), df,
                     origin, (beta[0] + v_mean, beta[1], beta[2]), cov)

    # One line: level at the origin v̄ + slope·(0 - d̄); Var(level + slope·d) is
    # var·(1/n + (d - d̄)²/Sxx), written as a covariance over (1, d).
    d_mean = sd / n
    df = n - 2
    var = line_sse / df if df > 0 else math.inf
    slope = 0.0 if abs(line_slope) * span <= tiny else line_slope
    cov = ((var * (1 / n + d_mean * d_mean / sxx), -var * d_mean / sxx, 0.0),
           (-var * d_mean / sxx, var / sxx, 0.0),
           (0.0, 0.0, 0.0))
    r2 = 1.0 if syy <= exact else max(0.0, min(1.0, 1 - line_sse / syy))
    level = v_mean + sv / n - line_slope * d_mean
    return Trend(n, n, None, slope, r2, math.sqrt(var / sxx), df, origin, (level, slope, 0.0),
                 cov)


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (p in [0.5, 1)).

    Exact for 1 and 2 degrees of freedom; from 3 on the Cornish-Fisher expansion of
    Abramowitz & Stegun 26.7.5 (within 0.4 % at p = 0.99 and 3 df, closer above)."""
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


@dataclass(frozen=True, slots=True)
class Forecast:
    """What the window says, with the evidence behind it."""

    samples: int  # in the window
    fill: float  # share of the window the samples span
    trend: Trend | None
    t_crit: float | None
    value: float | None  # the trend at now + horizon
    low: float | None  # the lower end of its one-sided confidence interval
    direction: Direction  # the trusted trend; "none" when not trusted
    note: str

    def inputs(self) -> dict[str, object]:
        """For the decision log (JSON: an infinite t is written as a string)."""
        trend = self.trend
        t = trend.t if trend else None
        return {
            "samples": self.samples,
            "fill": round(self.fill, 3),
            "bend": trend.bend if trend else None,
            "segment_samples": trend.segment if trend else None,
            "slope": trend.slope if trend else None,
            "r2": trend.r2 if trend else None,
            "t": str(t) if t is not None and math.isinf(t) else t,
            "t_crit": self.t_crit,
            "forecast": self.value,
            "forecast_low": self.low,
            "trend": self.direction,
        }


def forecast(samples: Sequence[tuple[float, float]], now: float, *, window: float,
             horizon: float, min_r2: float, min_fill: float, confidence: float,
             piecewise: bool = True) -> Forecast:
    """Judge the samples of the last `window` seconds (see the module doc)."""
    n = len(samples)
    span = samples[-1][0] - samples[0][0] if n else 0.0
    fill = min(1.0, span / window) if window > 0 else 1.0
    if n < MIN_SAMPLES or fill < min_fill:
        return Forecast(n, fill, None, None, None, None, "none",
                        f"forecast needs {min_fill:.0%} of the {window:g}s window and "
                        f"{MIN_SAMPLES} samples: {n} over {span:g}s so far")
    trend = fit_trend(samples, bend=piecewise)
    if trend is None:
        return Forecast(n, fill, None, None, None, None, "none",
                        "forecast needs samples at different times")
    t_crit = t_quantile(confidence, trend.df)
    at = now + horizon
    value = trend.value(at)
    low = value - t_crit * trend.value_stderr(at)
    since = "" if trend.bend is None else f" since {now - trend.bend:g}s ago"

    def judged(direction: Direction, note: str) -> Forecast:
        return Forecast(n, fill, trend, t_crit, value, low, direction, note)

    if trend.r2 < min_r2:
        return judged("none", f"forecast ignored: R² {trend.r2:.3f} < min_r2 {min_r2:g}"
                              f"{since}")
    if abs(trend.t) < t_crit:
        return judged("none", f"no significant trend{since}: |t| {abs(trend.t):.2f} < "
                              f"{t_crit:.2f} ({confidence:.0%}, {trend.df} df)")
    direction: Direction = "rising" if trend.slope > 0 else "falling"
    return judged(direction, f"{direction} {abs(trend.slope):.3g} req/s per s{since} "
                             f"(R² {trend.r2:.3f}, t {trend.t:.3g})")


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

    def samples(self) -> list[tuple[float, float]]:
        return list(self._samples)
