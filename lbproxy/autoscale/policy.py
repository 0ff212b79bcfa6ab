"""The autoscaler's decision: how many servers a pool should have now, and why.

`Policy.decide(observation)` runs, for one pool, in this order:
1. reactive recommendation by the pool's `policy` (recommend.py). An empty pool with any
   load (a metric or the request rate above 0) wants max(min, 1) servers;
2. predictive (either policy, when enabled): the total request rate of the last `window`
   seconds is judged by forecast.py (enough of the window filled, the recent segment of a
   piecewise trend, R² >= min_r2, a slope significant at `confidence`). A trusted rising
   trend asks for the count the reactive policy would want at the rate forecast
   `horizon` ahead (the lower end of the forecast's confidence interval, so a projection
   is damped by its uncertainty): ceil(forecast / capacity), capacity being the
   requests_per_second_per_server metric's target (policy target, where a forecast within
   `tolerance` of what the pool serves now keeps the count, as the reactive formula does)
   or threshold_high (policy threshold). The result is max(reactive, predictive).
   A trusted falling trend releases the scale-down stabilisation (step 4): the load is
   going down, not dipping, so the pool follows the reactive recommendation of now
   instead of the highest one of the window (never below it: prediction never removes
   more than the reactive policy asks for);
3. clamp to [min, max]; the result is remembered for stabilisation;
4. stabilisation (Kubernetes HPA behaviour): a scale-up goes to the MIN recommendation
   over the last scale_up.stabilization seconds, a scale-down to the MAX over the last
   scale_down.stabilization seconds, so flapping load never removes servers early. Until
   the policy has seen that much history (a fresh start) the current count counts as a
   recommendation too: a restart during a dip does not shrink the pool;
5. max_step per direction, then cooldowns: a scale-up waits scale_up.cooldown after the
   last scale-up; a scale-down waits scale_down.cooldown after the last scaling action in
   either direction (like HPA's old downscale delay: capacity just added is not taken back
   before the load it was added for has been watched for a while), whereas rising load
   may add servers right after a scale-down;
6. a count outside [min, max] is corrected to the nearest bound at once, ignoring
   stabilisation, steps and cooldowns (HPA does the same).

`decide` assumes the controller carries out every action it returns and records its
time for the cooldowns; a failed action still starts the cooldown, so a failing provider
is not retried every interval. The policy is pure: time comes from Observation.time (any
monotonic origin, never going backwards); no clocks, I/O or logging.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from lbproxy.autoscale.forecast import SampleWindow, forecast
from lbproxy.autoscale.recommend import (
    CAPACITY_FIELD,
    RECOMMENDERS,
    RPS_PER_SERVER,
    Recommendation,
    ceil_count,
    within_tolerance,
)

if TYPE_CHECKING:
    from lbproxy.config.schema import PoolConfig, ScaleConfig

Action = Literal["scale_up", "scale_down", "none"]


@dataclass(frozen=True, slots=True)
class Observation:
    """What the controller saw of one pool at one tick."""

    time: float  # seconds on a monotonic clock
    current: int  # servers in the pool
    metrics: Mapping[str, float | None]  # metric type -> value; None or absent: unavailable
    request_rate: float | None = None  # total requests per second into the pool


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision with everything the controller logs.

    `inputs` is JSON-serialisable: policy, metrics, per_metric_desired (target) or
    per_metric_deviation + score_up + score_down (threshold), request_rate, reactive,
    predictive (None when disabled, else samples, fill, bend, segment_samples, slope, r2,
    t, t_crit, forecast, forecast_low, trend, desired, applied, releases_scale_down, note),
    recommended, stabilized {scale_up, scale_down}, cooldown {scale_up, scale_down}
    (seconds left, 0 = ready).
    """

    current: int
    desired: int
    action: Action
    reason: str
    inputs: dict[str, Any]


def _remaining(last: float | None, cooldown: float, now: float) -> float:
    return 0.0 if last is None else max(0.0, last + cooldown - now)


def _step(
    current: int, target: int, why: str, direction: str, scale: ScaleConfig, left: float
) -> tuple[int, str]:
    """Move towards `target` by at most `scale.max_step`, unless cooling down."""
    if left > 0:
        return current, f"{why}; {direction} to {target} waits for cooldown ({left:g}s left)"
    step = min(abs(target - current), scale.max_step)
    desired = current + step if target > current else current - step
    if desired != target:
        why += f"; {direction} limited to {step} per step by max_step"
    return desired, why


class Policy:
    """Scaling decisions for one pool; keeps the history they depend on."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self._recommend = RECOMMENDERS[config.policy]
        rps = next((m for m in config.metrics if m.type == RPS_PER_SERVER), None)
        self._capacity: float | None = (
            getattr(rps, CAPACITY_FIELD[config.policy]) if rps is not None else None
        )
        self._recommendations = SampleWindow(
            max(config.scale_up.stabilization, config.scale_down.stabilization)
        )
        self._rates = SampleWindow(config.predictive.window)
        self._first_time: float | None = None
        self._last_up: float | None = None  # last scale-up
        self._last_scale: float | None = None  # last scaling action in either direction

    def decide(self, obs: Observation) -> Decision:
        cfg, now, current = self.config, obs.time, obs.current
        if self._first_time is None:
            self._first_time = now
        reactive = self._reactive(obs)
        wanted, why = reactive.desired, reactive.reason
        predictive = self._predict(obs, wanted) if cfg.predictive.enabled else None
        if predictive is not None and predictive["applied"]:
            wanted, why = predictive["desired"], predictive["note"]
        recommended = min(max(wanted, cfg.min), cfg.max)
        self._recommendations.add(now, recommended)
        release = predictive is not None and predictive["releases_scale_down"]
        stabilized = self._stabilized(now, current, watched=now - self._first_time,
                                      release=recommended if release else None)
        cooldown = {
            "scale_up": _remaining(self._last_up, cfg.scale_up.cooldown, now),
            "scale_down": _remaining(self._last_scale, cfg.scale_down.cooldown, now),
        }
        desired, why = self._limit(current, recommended, why, stabilized, cooldown)
        action: Action = "none"
        if desired != current:
            action = "scale_up" if desired > current else "scale_down"
            self._last_scale = now
            if action == "scale_up":
                self._last_up = now
        verb = {"scale_up": "scale up", "scale_down": "scale down"}.get(action)
        head = f"{verb} {current} -> {desired}" if verb else f"no change at {current}"
        inputs: dict[str, Any] = {
            "policy": cfg.policy,
            "metrics": {m.type: obs.metrics.get(m.type) for m in cfg.metrics},
            **reactive.inputs,
            "request_rate": obs.request_rate,
            "reactive": reactive.desired,
            "predictive": predictive,
            "recommended": recommended,
            "stabilized": stabilized,
            "cooldown": cooldown,
        }
        return Decision(current, desired, action, f"{head}: {why}", inputs)

    def _reactive(self, obs: Observation) -> Recommendation:
        if obs.current > 0:
            return self._recommend(self.config, obs.current, obs.metrics)
        if (obs.request_rate or 0) > 0 or any(obs.metrics.values()):
            return Recommendation(max(self.config.min, 1), "load on an empty pool", {})
        return Recommendation(0, "empty pool without load", {})

    def _predict(self, obs: Observation, reactive: int) -> dict[str, Any]:
        """Forecast inputs; `desired` is set when a trusted rising forecast sizes the pool."""
        pcfg = self.config.predictive
        if obs.request_rate is not None:
            self._rates.add(obs.time, obs.request_rate)
        seen = self._rates.samples()
        trend = forecast(seen, obs.time, window=pcfg.window, horizon=pcfg.horizon,
                         min_r2=pcfg.min_r2, min_fill=pcfg.min_fill,
                         confidence=pcfg.confidence, piecewise=pcfg.trend == "piecewise")
        info: dict[str, Any] = {**trend.inputs(), "desired": None, "applied": False,
                                "releases_scale_down": False, "note": trend.note}
        value = trend.low
        if trend.direction == "falling":
            info["releases_scale_down"] = True
            info["note"] += "; scale-down follows it without stabilization"
        elif trend.direction != "rising" or value is None:
            pass
        elif self._capacity is None:
            info["note"] = f"forecast ignored: no {RPS_PER_SERVER} metric to size it"
        elif obs.request_rate is None or value <= obs.request_rate:
            info["note"] = "forecast not above the current request rate"
        else:
            info["desired"] = self._forecast_count(obs.current, value)
            info["applied"] = info["desired"] > reactive
            info["note"] = (
                f"forecast {value:.4g} req/s in {pcfg.horizon:g}s ({trend.note}) "
                f"at {self._capacity:g} per server wants {info['desired']}"
            )
        return info

    def _forecast_count(self, current: int, rate: float) -> int:
        """The count the reactive policy would want if the pool served `rate` now."""
        assert self._capacity is not None
        cfg = self.config
        if cfg.policy == "target" and current > 0 and within_tolerance(
                rate / (current * self._capacity), cfg.tolerance):
            return current
        return ceil_count(rate / self._capacity)

    def _stabilized(self, now: float, current: int, watched: float,
                    release: int | None = None) -> dict[str, int]:
        """Min recommendation over the scale-up window, max over the scale-down window.

        `watched` is how long this policy has been deciding: while shorter than the
        scale-down window, the current count stands in for the history it has not seen.
        `release` (the recommendation of now, when a trusted falling trend says so)
        replaces the scale-down window.
        """
        up, down = self.config.scale_up.stabilization, self.config.scale_down.stabilization
        downs = self._recommendations.since(now - down)
        if release is not None:
            downs = [release]
        elif watched < down:
            downs.append(current)
        ups = self._recommendations.since(now - up)
        return {"scale_up": int(min(ups)), "scale_down": int(max(downs))}

    def _limit(
        self,
        current: int,
        recommended: int,
        why: str,
        stabilized: dict[str, int],
        cooldown: dict[str, float],
    ) -> tuple[int, str]:
        """Apply bounds, stabilisation, steps and cooldowns; return (desired, reason)."""
        cfg = self.config
        if current < cfg.min:
            return cfg.min, f"below min {cfg.min}"
        if current > cfg.max:
            return cfg.max, f"above max {cfg.max}"
        up, down = stabilized["scale_up"], stabilized["scale_down"]
        if up > current:
            return _step(current, up, why, "scale_up", cfg.scale_up, cooldown["scale_up"])
        if down < current:
            return _step(current, down, why, "scale_down", cfg.scale_down, cooldown["scale_down"])
        if recommended != current:
            up_held = recommended > current
            kind, direction = ("min", "scale_up") if up_held else ("max", "scale_down")
            window = getattr(cfg, direction).stabilization
            why += (
                f"; held by stabilization ({kind} recommendation {stabilized[direction]} "
                f"over the last {window:g}s)"
            )
        return current, why
