"""Reactive recommendations: how many servers the metrics observed right now call for.

One pure function per `policy:` value, registered in RECOMMENDERS. Each gets the pool
config, the current server count (> 0; Policy handles an empty pool) and the metric
values by type, and returns the wanted count before min/max, steps, cooldowns and
stabilisation (Policy applies those, identically for every policy).

- `target` (Kubernetes HPA): per metric, desired = ceil(current × value / target), or
  current when |value / target - 1| <= tolerance; the max over the metrics with data.
  Per-server metrics are already averages per server, so the formula applies as is.
- `threshold` (the seeds' reactive scaler): scale-up score = weighted mean of
  (value - high) / high over the metrics above their high mark — the weights are
  normalised over those metrics only, so a metric inside its band does not dilute the
  others. Scale-down score likewise, (low - value) / low over metrics below their low
  mark. A score over `score_trigger` scales by the direction's factor, rounded away from
  the current count (at least one server). Scale-up wins when both scores trigger, and
  nothing scales down while any metric is above its high mark.

Metrics without data (None or absent) are skipped; with none left the count stays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lbproxy.config.schema import PoolConfig

RPS_PER_SERVER = "requests_per_second_per_server"

# Digits kept before rounding a count or comparing a ratio: 10 × 1.1 is 11.000000000000002
# in floats and ceil must still say 11 (100 × 0.29 = 28.999999999999996 must floor to 29);
# 220 / 200 - 1 is 0.10000000000000009, and must count as within a tolerance of 0.1.
_DIGITS = 9


def ceil_count(x: float) -> int:
    return math.ceil(round(x, _DIGITS))


def floor_count(x: float) -> int:
    return math.floor(round(x, _DIGITS))


def within_tolerance(ratio: float, tolerance: float) -> bool:
    """Whether a metric at `ratio` × its target is close enough to keep the count."""
    return round(abs(ratio - 1), _DIGITS) <= tolerance


@dataclass(frozen=True, slots=True)
class Recommendation:
    desired: int
    reason: str
    inputs: dict[str, Any]  # merged into Decision.inputs


Metrics = Mapping[str, float | None]


def _observed(config: PoolConfig, metrics: Metrics) -> list[tuple[Any, float]]:
    """(metric config, value) for the configured metrics that have data."""
    return [(m, v) for m in config.metrics if (v := metrics.get(m.type)) is not None]


def recommend_target(config: PoolConfig, current: int, metrics: Metrics) -> Recommendation:
    per_metric: dict[str, int | None] = {m.type: None for m in config.metrics}
    best: tuple[int, str] | None = None
    for m, value in _observed(config, metrics):
        ratio = value / m.target
        wanted = current if within_tolerance(ratio, config.tolerance) else ceil_count(
            current * ratio)
        per_metric[m.type] = wanted
        if best is None or wanted > best[0]:
            best = (wanted, f"{m.type} {value:g} vs target {m.target:g} wants {wanted}")
    inputs: dict[str, Any] = {"per_metric_desired": per_metric}
    if best is None:
        return Recommendation(current, "no metric data", inputs)
    return Recommendation(best[0], best[1], inputs)


def _weighted_mean(parts: list[tuple[float, float]]) -> float:
    """Mean of (weight, value) pairs; 0 when there are none or all weights are 0."""
    total = math.fsum(w for w, _ in parts)
    return math.fsum(w * v for w, v in parts) / total if total > 0 else 0.0


def recommend_threshold(config: PoolConfig, current: int, metrics: Metrics) -> Recommendation:
    observed = _observed(config, metrics)
    deviation: dict[str, float | None] = {m.type: None for m in config.metrics}
    above: list[tuple[float, float]] = []
    below: list[tuple[float, float]] = []
    for m, value in observed:
        excess = 0.0
        if value > m.threshold_high:
            excess = (value - m.threshold_high) / m.threshold_high
            above.append((m.weight, excess))
        elif value < m.threshold_low:
            excess = -(m.threshold_low - value) / m.threshold_low
            below.append((m.weight, -excess))
        deviation[m.type] = excess
    score_up, score_down = _weighted_mean(above), _weighted_mean(below)
    inputs: dict[str, Any] = {
        "per_metric_deviation": deviation,  # > 0 above high, < 0 below low, 0 in band
        "score_up": score_up,
        "score_down": score_down,
    }
    trigger = config.score_trigger
    if not observed:
        return Recommendation(current, "no metric data", inputs)
    if score_up > trigger:
        factor = config.scale_up.factor
        wanted = max(current + 1, ceil_count(current * factor))
    elif score_down > trigger and not above:
        factor = config.scale_down.factor
        wanted = min(current - 1, floor_count(current * factor))
    elif score_down > trigger:
        why = f"scale-down score {score_down:.3g} > {trigger:g} but a metric is above its high mark"
        return Recommendation(current, why, inputs)
    else:
        why = f"scores up {score_up:.3g} / down {score_down:.3g} within trigger {trigger:g}"
        return Recommendation(current, why, inputs)
    direction, score = ("up", score_up) if wanted > current else ("down", score_down)
    why = f"scale-{direction} score {score:.3g} > {trigger:g}, × {factor:g} wants {wanted}"
    return Recommendation(wanted, why, inputs)


Recommender = Callable[["PoolConfig", int, Metrics], Recommendation]

RECOMMENDERS: dict[str, Recommender] = {
    "target": recommend_target,
    "threshold": recommend_threshold,
}

# The per-server request rate one server is sized for, by policy: predictive mode turns
# a forecast total rate into a server count with it.
CAPACITY_FIELD: dict[str, str] = {"target": "target", "threshold": "threshold_high"}
