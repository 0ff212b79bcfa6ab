"""Autoscaler decisions: HPA target math, threshold scores, bounds, steps, cooldowns,
stabilisation and prediction, with exact counts."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from lbproxy.autoscale.policy import Decision, Observation, Policy

RPS = "requests_per_second_per_server"
P95 = "response_time_p95"
INFLIGHT = "in_flight_per_server"
CPU = "cpu_utilization"
MEM = "memory_utilization"


def metric(type_: str, target: float | None = None, high: float | None = None,
           low: float | None = None, weight: float = 1.0) -> SimpleNamespace:
    return SimpleNamespace(type=type_, target=target, threshold_high=high,
                           threshold_low=low, weight=weight)


def scale(cooldown: float = 0.0, max_step: int = 100, factor: float = 1.0,
          stabilization: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(cooldown=cooldown, max_step=max_step, factor=factor,
                           stabilization=stabilization)


def pool(**overrides: Any) -> SimpleNamespace:
    """A PoolConfig look-alike with no cooldowns, steps or stabilisation unless asked."""
    config = dict(
        backend="app", min=1, max=100, interval=5.0, policy="target",
        metrics=(metric(RPS, target=200),), tolerance=0.1,
        scale_up=scale(factor=1.5), scale_down=scale(factor=0.5),
        predictive=SimpleNamespace(enabled=False, window=600.0, horizon=60.0, min_r2=0.6),
        drain_timeout=30.0, score_trigger=0.5,
    )
    config.update(overrides)
    return SimpleNamespace(**config)


def predictive(**overrides: Any) -> SimpleNamespace:
    return SimpleNamespace(**{"enabled": True, "window": 600.0, "horizon": 60.0,
                              "min_r2": 0.6, "min_fill": 0.5, "confidence": 0.95,
                              "trend": "piecewise", **overrides})


def observe(time: float, current: int, rate: float | None = None,
            **metrics: float | None) -> Observation:
    return Observation(time=time, current=current, metrics=metrics, request_rate=rate)


def decide(policy: Policy, time: float, current: int, rate: float | None = None,
           **metrics: float | None) -> Decision:
    return policy.decide(observe(time, current, rate, **metrics))


# --- policy: target (HPA) -------------------------------------------------------------

def test_hpa_worked_example() -> None:
    d = decide(Policy(pool()), 0, 3, **{RPS: 300})
    assert (d.current, d.desired, d.action) == (3, 5, "scale_up")  # ceil(3 × 1.5)
    assert d.inputs["per_metric_desired"] == {RPS: 5}
    assert d.inputs["metrics"] == {RPS: 300}
    assert d.reason == f"scale up 3 -> 5: {RPS} 300 vs target 200 wants 5"


@pytest.mark.parametrize("value", [215.0, 220.0, 180.0])
def test_within_tolerance_keeps_the_count(value: float) -> None:
    # 220/200 - 1 is 0.10000000000000009 in floats: exactly at the tolerance is within.
    d = decide(Policy(pool()), 0, 3, **{RPS: value})
    assert (d.desired, d.action) == (3, "none")
    assert d.reason.startswith("no change at 3: ")


def test_just_outside_tolerance_scales() -> None:
    d = decide(Policy(pool()), 0, 10, **{RPS: 222})  # ceil(10 × 1.11) = 12
    assert d.desired == 12


def test_float_noise_does_not_add_a_server() -> None:
    d = decide(Policy(pool(tolerance=0.05)), 0, 10, **{RPS: 220})  # 10 × 1.1 = 11.000000000000002
    assert d.desired == 11


def test_max_over_metrics() -> None:
    config = pool(metrics=(metric(RPS, target=200), metric(P95, target=0.25),
                           metric(INFLIGHT, target=20)))
    d = decide(Policy(config), 0, 3, **{RPS: 300, P95: 0.5, INFLIGHT: 10})
    assert d.inputs["per_metric_desired"] == {RPS: 5, P95: 6, INFLIGHT: 2}
    assert d.desired == 6
    assert f"{P95} 0.5 vs target 0.25 wants 6" in d.reason


def test_target_scales_down_when_all_metrics_are_low() -> None:
    d = decide(Policy(pool()), 0, 4, **{RPS: 100})
    assert (d.desired, d.action) == (2, "scale_down")


def test_missing_metrics_are_skipped() -> None:
    config = pool(metrics=(metric(RPS, target=200), metric(P95, target=0.25)))
    d = decide(Policy(config), 0, 3, **{RPS: None, P95: 0.5})
    assert d.inputs["per_metric_desired"] == {RPS: None, P95: 6}
    assert d.desired == 6


def test_no_metric_data_keeps_the_count() -> None:
    config = pool(metrics=(metric(RPS, target=200), metric(P95, target=0.25)))
    d = decide(Policy(config), 0, 3, **{P95: None})
    assert (d.desired, d.action) == (3, "none")
    assert d.inputs["per_metric_desired"] == {RPS: None, P95: None}
    assert d.inputs["metrics"] == {RPS: None, P95: None}
    assert d.reason == "no change at 3: no metric data"


@pytest.mark.parametrize(("minimum", "expected"), [(0, 1), (3, 3)])
def test_empty_pool_with_load_starts_min_servers(minimum: int, expected: int) -> None:
    d = decide(Policy(pool(min=minimum)), 0, 0, rate=5.0, **{RPS: None})
    assert (d.desired, d.action) == (expected, "scale_up")


def test_empty_pool_without_load_stays_empty() -> None:
    d = decide(Policy(pool(min=0)), 0, 0, rate=0.0, **{RPS: 0.0})
    assert (d.desired, d.action) == (0, "none")
    assert d.reason == "no change at 0: empty pool without load"


# --- bounds, steps, cooldowns ---------------------------------------------------------

def test_recommendation_is_clamped_to_min_and_max() -> None:
    config = pool(min=2, max=10)
    assert decide(Policy(config), 0, 3, **{RPS: 5000}).desired == 10
    d = decide(Policy(config), 0, 3, **{RPS: 20})
    assert (d.desired, d.inputs["reactive"], d.inputs["recommended"]) == (2, 1, 2)


def test_max_step_limits_each_direction() -> None:
    config = pool(scale_up=scale(max_step=4), scale_down=scale(max_step=1))
    up = decide(Policy(config), 0, 2, **{RPS: 1000})  # wants 10
    assert up.desired == 6
    assert "scale_up limited to 4 per step by max_step" in up.reason
    down = decide(Policy(config), 0, 8, **{RPS: 50})  # wants 2
    assert down.desired == 7


def test_bounds_are_corrected_despite_cooldown_and_step() -> None:
    config = pool(min=3, max=10, scale_up=scale(cooldown=300, max_step=1),
                  scale_down=scale(cooldown=300, max_step=1))
    policy = Policy(config)
    assert decide(policy, 0, 3, **{RPS: 400}).action == "scale_up"  # starts both cooldowns
    low = decide(policy, 1, 1, **{RPS: 200})
    assert (low.desired, low.reason) == (3, "scale up 1 -> 3: below min 3")
    high = decide(policy, 2, 14, **{RPS: 200})
    assert (high.desired, high.reason) == (10, "scale down 14 -> 10: above max 10")


def test_scale_up_cooldown_blocks_then_allows() -> None:
    policy = Policy(pool(scale_up=scale(cooldown=15)))
    assert decide(policy, 0, 3, **{RPS: 300}).desired == 5
    blocked = decide(policy, 5, 5, **{RPS: 300})  # wants ceil(7.5) = 8
    assert (blocked.desired, blocked.action) == (5, "none")
    assert blocked.inputs["cooldown"] == {"scale_up": 10.0, "scale_down": 0.0}
    assert "scale_up to 8 waits for cooldown (10s left)" in blocked.reason
    allowed = decide(policy, 15, 5, **{RPS: 300})
    assert (allowed.desired, allowed.inputs["cooldown"]["scale_up"]) == (8, 0.0)


def test_scale_down_waits_its_cooldown_after_a_scale_up() -> None:
    policy = Policy(pool(scale_up=scale(cooldown=15), scale_down=scale(cooldown=60)))
    assert decide(policy, 0, 3, **{RPS: 300}).desired == 5
    blocked = decide(policy, 30, 5, **{RPS: 50})  # wants 2
    assert (blocked.desired, blocked.inputs["cooldown"]["scale_down"]) == (5, 30.0)
    assert decide(policy, 60, 5, **{RPS: 50}).desired == 2


def test_scale_up_does_not_wait_after_a_scale_down() -> None:
    policy = Policy(pool(scale_up=scale(cooldown=15), scale_down=scale(cooldown=60)))
    assert decide(policy, 0, 5, **{RPS: 50}).desired == 2
    assert decide(policy, 1, 2, **{RPS: 500}).desired == 5
    blocked = decide(policy, 2, 5, **{RPS: 50})
    assert blocked.inputs["cooldown"] == {"scale_up": 14.0, "scale_down": 59.0}


# --- stabilisation --------------------------------------------------------------------

def test_scale_down_uses_the_max_recommendation_of_the_window() -> None:
    policy = Policy(pool(scale_down=scale(stabilization=120, max_step=1)))
    assert decide(policy, 0, 5, **{RPS: 200}).desired == 5
    dip = decide(policy, 30, 5, **{RPS: 80})  # wants 2
    assert (dip.desired, dip.inputs["recommended"]) == (5, 2)
    assert dip.inputs["stabilized"]["scale_down"] == 5
    assert dip.reason.endswith("held by stabilization (max recommendation 5 over the last 120s)")
    assert decide(policy, 60, 5, **{RPS: 200}).desired == 5  # load back up
    assert decide(policy, 90, 5, **{RPS: 80}).desired == 5
    assert decide(policy, 150, 5, **{RPS: 80}).desired == 5  # t=60 still in the window
    after = decide(policy, 181, 5, **{RPS: 80})  # window (61, 181]: all want 2
    assert (after.desired, after.action) == (4, "scale_down")  # by max_step 1
    assert after.inputs["stabilized"]["scale_down"] == 2


def test_fresh_policy_counts_the_current_size_until_a_window_has_passed() -> None:
    policy = Policy(pool(scale_down=scale(stabilization=120)))
    assert decide(policy, 1000, 5, **{RPS: 80}).desired == 5
    assert decide(policy, 1119, 5, **{RPS: 80}).desired == 5
    assert decide(policy, 1120, 5, **{RPS: 80}).desired == 2


def test_scale_up_uses_the_min_recommendation_of_its_window() -> None:
    policy = Policy(pool(scale_up=scale(stabilization=30)))
    assert decide(policy, 0, 4, **{RPS: 200}).desired == 4
    held = decide(policy, 10, 4, **{RPS: 400})  # wants 8
    assert held.desired == 4
    assert held.reason.endswith("held by stabilization (min recommendation 4 over the last 30s)")
    assert decide(policy, 20, 4, **{RPS: 400}).desired == 4
    assert decide(policy, 31, 4, **{RPS: 400}).desired == 8


# --- policy: threshold ----------------------------------------------------------------

SEEDS_METRICS = (
    metric(CPU, high=70, low=30, weight=0.4),
    metric(MEM, high=80, low=40, weight=0.3),
    metric(RPS, high=1000, low=100, weight=0.2),
    metric(P95, high=2.0, low=0.5, weight=0.1),
)


def threshold_pool(**overrides: Any) -> SimpleNamespace:
    return pool(policy="threshold", metrics=SEEDS_METRICS, **overrides)


def test_threshold_score_is_the_weighted_mean_over_metrics_above_high() -> None:
    # cpu (140-70)/70 = 1.0 w 0.4, mem (100-80)/80 = 0.25 w 0.3; rps and p95 in band do
    # not dilute: (0.4 + 0.075) / 0.7 = 0.6786 > 0.5 (over all four weights it would be 0.475).
    d = decide(Policy(threshold_pool()), 0, 2, **{CPU: 140, MEM: 100, RPS: 500, P95: 1.0})
    assert d.inputs["per_metric_deviation"] == {CPU: 1.0, MEM: 0.25, RPS: 0.0, P95: 0.0}
    assert d.inputs["score_up"] == pytest.approx(0.475 / 0.7)
    assert d.inputs["score_down"] == 0.0
    assert (d.desired, d.action) == (3, "scale_up")  # 2 × 1.5
    assert "scale-up score 0.679 > 0.5, × 1.5 wants 3" in d.reason


def test_threshold_score_under_trigger_keeps_the_count() -> None:
    d = decide(Policy(threshold_pool()), 0, 2, **{CPU: 100, MEM: 60, RPS: 500, P95: 1.0})
    assert d.inputs["score_up"] == pytest.approx(30 / 70)
    assert (d.desired, d.action) == (2, "none")


def test_threshold_scale_down_rounds_away_from_current() -> None:
    # cpu 20/30 w 0.4, mem 20/40 w 0.3, rps 50/100 w 0.2 → 0.51667 / 0.9 = 0.574 > 0.5
    d = decide(Policy(threshold_pool()), 0, 3, **{CPU: 10, MEM: 20, RPS: 50, P95: 1.0})
    assert d.inputs["score_down"] == pytest.approx((0.4 * 2 / 3 + 0.15 + 0.1) / 0.9)
    assert d.inputs["per_metric_deviation"][MEM] == -0.5
    assert (d.desired, d.action) == (1, "scale_down")  # floor(3 × 0.5)


@pytest.mark.parametrize(("current", "up", "down"), [(3, 5, 1), (5, 8, 2), (1, 2, 0)])
def test_threshold_factor_rounding(current: int, up: int, down: int) -> None:
    config = threshold_pool(min=0)
    assert decide(Policy(config), 0, current, **{CPU: 200}).inputs["reactive"] == up
    assert decide(Policy(config), 0, current, **{CPU: 1}).inputs["reactive"] == down


def test_threshold_factor_one_still_moves_by_one_server() -> None:
    config = threshold_pool(scale_up=scale(factor=1.0), scale_down=scale(factor=1.0))
    assert decide(Policy(config), 0, 4, **{CPU: 200}).desired == 5
    assert decide(Policy(config), 0, 4, **{CPU: 1}).desired == 3


def test_threshold_no_scale_down_while_a_metric_is_above_high() -> None:
    # cpu 90 → up score 0.286 (no trigger); rps 10 → down score 0.9 (would trigger).
    d = decide(Policy(threshold_pool()), 0, 4, **{CPU: 90, RPS: 10})
    assert (d.desired, d.action) == (4, "none")
    assert "above its high mark" in d.reason


def test_threshold_scale_up_wins_when_both_trigger() -> None:
    d = decide(Policy(threshold_pool()), 0, 4, **{CPU: 140, RPS: 10})
    assert (d.inputs["score_up"], d.inputs["score_down"]) == (1.0, 0.9)
    assert d.desired == 6


def test_threshold_missing_metrics_are_skipped() -> None:
    d = decide(Policy(threshold_pool()), 0, 2, **{CPU: None, MEM: 200})
    assert d.inputs["per_metric_deviation"] == {CPU: None, MEM: 1.5, RPS: None, P95: None}
    assert d.desired == 3
    assert decide(Policy(threshold_pool()), 0, 2).reason == "no change at 2: no metric data"


# --- predictive -----------------------------------------------------------------------

def ramp(policy: Policy, times: tuple[float, ...], current: int, **metrics: float) -> Decision:
    """Feed a request rate of 1000 + 10·t at each time; return the last decision."""
    for t in times:
        d = decide(policy, t, current, rate=1000 + 10 * t, **metrics)
    return d


EVERY_10S = (0, 10, 20, 30, 40)  # five samples filling a 40 s window


def test_perfect_ramp_scales_ahead_of_reactive() -> None:
    config = pool(metrics=(metric(RPS, target=100),), predictive=predictive(window=40))
    policy = Policy(config)
    early = ramp(policy, EVERY_10S[:4], 13, **{RPS: 100})
    assert early.action == "none"
    assert early.inputs["predictive"]["note"] == (
        "forecast needs 50% of the 40s window and 5 samples: 4 over 30s so far")
    d = decide(policy, 40, 14, rate=1400, **{RPS: 100})  # reactive: ratio 1 → keep 14
    p = d.inputs["predictive"]
    assert (p["samples"], p["slope"], p["r2"], p["t"]) == (5, 10.0, 1.0, "inf")
    assert (p["forecast"], p["forecast_low"], p["trend"]) == (2000.0, 2000.0, "rising")
    assert (p["desired"], p["applied"]) == (20, True)
    assert (d.inputs["reactive"], d.desired, d.action) == (14, 20, "scale_up")
    assert d.reason == ("scale up 14 -> 20: forecast 2000 req/s in 60s (rising 10 req/s "
                        "per s (R² 1.000, t inf)) at 100 per server wants 20")


def test_startup_noise_does_not_scale() -> None:
    # Like the log right after a start at a flat 30 req/s: three samples on a line
    # with R² 0.993 and slope 1.75 would forecast 53.7 req/s 10 s ahead, two servers at 45.
    config = pool(metrics=(metric(RPS, target=45),),
                  predictive=predictive(window=30, horizon=10))
    policy = Policy(config)
    for t, rate in ((0, 29.5), (2, 33.5), (4, 36.5)):
        d = decide(policy, t, 1, rate=rate, **{RPS: rate})
        assert (d.desired, d.inputs["predictive"]["applied"]) == (1, False)
    assert d.inputs["predictive"]["forecast"] is None
    assert d.inputs["predictive"]["note"].startswith("forecast needs 50% of the 30s window")


def test_noisy_rate_below_min_r2_is_ignored() -> None:
    config = pool(metrics=(metric(RPS, target=100),), predictive=predictive(window=40))
    policy = Policy(config)
    for t, rate in ((0, 1000), (10, 1400), (20, 900), (30, 1300), (40, 1000)):
        d = decide(policy, t, 13, rate=rate, **{RPS: 100})
    p = d.inputs["predictive"]
    assert (p["desired"], p["applied"], p["trend"]) == (None, False, "none")
    assert p["note"].startswith("forecast ignored: R² 0.0")
    assert (d.desired, d.action) == (13, "none")


def test_a_trend_that_is_not_significant_is_ignored() -> None:
    config = pool(metrics=(metric(RPS, target=100),), predictive=predictive(window=40))
    policy = Policy(config)
    for t, rate in zip(EVERY_10S, (1000, 1040, 1010, 1070, 1060)):
        d = decide(policy, t, 11, rate=rate, **{RPS: 100})
    p = d.inputs["predictive"]
    assert p["r2"] > 0.6
    assert p["note"].startswith("no significant trend: |t| 2.")
    assert (p["applied"], d.desired) == (False, 11)


def test_predictive_never_lowers_the_reactive_count() -> None:
    config = pool(metrics=(metric(RPS, target=100), metric(P95, target=0.25)),
                  predictive=predictive(window=40))
    d = ramp(Policy(config), EVERY_10S, 13, **{RPS: 100, P95: 1.0})
    assert d.inputs["predictive"]["desired"] == 20
    assert d.inputs["predictive"]["applied"] is False
    assert d.desired == 52  # p95 ratio 4
    assert f"{P95} 1 vs target 0.25 wants 52" in d.reason


def test_a_forecast_within_tolerance_keeps_the_count() -> None:
    # 1450 req/s at 100 per server on 14 servers is 3.6 % over target: the reactive
    # policy would keep 14 then, so prediction does not add a 15th now.
    config = pool(metrics=(metric(RPS, target=100),),
                  predictive=predictive(window=40, horizon=5))
    d = ramp(Policy(config), EVERY_10S, 14, **{RPS: 100})
    p = d.inputs["predictive"]
    assert (p["forecast_low"], p["desired"], p["applied"]) == (1450.0, 14, False)
    assert d.desired == 14


def test_threshold_policy_sizes_the_forecast_by_threshold_high() -> None:
    config = threshold_pool(predictive=predictive(window=40))
    d = ramp(Policy(config), EVERY_10S, 2, **{RPS: 600})  # in band: reactive keeps 2
    assert (d.inputs["reactive"], d.inputs["predictive"]["desired"], d.desired) == (2, 2, 2)
    d = ramp(Policy(config), (60, 70, 80, 90, 100), 2, **{RPS: 600})  # 2600 → 3
    assert (d.inputs["predictive"]["desired"], d.desired) == (3, 3)


def test_forecast_without_a_rate_metric_is_ignored() -> None:
    config = pool(metrics=(metric(P95, target=0.25),), predictive=predictive(window=40))
    d = ramp(Policy(config), EVERY_10S, 3, **{P95: 0.25})
    assert d.inputs["predictive"]["note"] == f"forecast ignored: no {RPS} metric to size it"
    assert d.desired == 3


def test_predictive_disabled_reports_none() -> None:
    d = decide(Policy(pool()), 0, 3, rate=600, **{RPS: 200})
    assert d.inputs["predictive"] is None


def test_a_falling_trend_releases_the_scale_down_stabilization() -> None:
    # 1000 req/s falling by 20 per second on 10 servers of 100: the reactive recommendation
    # falls with it, and stabilization alone would hold 10 for its whole 60 s window.
    def run(enabled: bool) -> list[int]:
        config = pool(metrics=(metric(RPS, target=100),),
                      scale_down=scale(stabilization=60, max_step=1),
                      predictive=predictive(enabled=enabled, window=40))
        policy = Policy(config)
        counts, current = [], 10
        for t in range(0, 50, 5):
            rate = 1000.0 - 20 * t
            d = decide(policy, 100 + t, current, rate=rate, **{RPS: rate / current})
            counts.append(current := d.desired)
        return counts
    assert run(False) == [10] * 10
    assert run(True) == [10, 10, 10, 10, 9, 8, 7, 6, 5, 4]


def test_a_released_scale_down_still_waits_for_its_cooldown_and_step() -> None:
    config = pool(metrics=(metric(RPS, target=100),),
                  scale_down=scale(stabilization=60, max_step=1, cooldown=15),
                  predictive=predictive(window=40))
    policy = Policy(config)
    for t in EVERY_10S:
        d = decide(policy, t, 10, rate=1000.0 - 10 * t, **{RPS: 100 - t})
    p = d.inputs["predictive"]
    assert (p["trend"], p["releases_scale_down"]) == ("falling", True)
    assert d.inputs["stabilized"]["scale_down"] == 6
    assert (d.desired, d.action) == (9, "scale_down")  # max_step 1
    d = decide(policy, 50, 9, rate=500.0, **{RPS: 500 / 9})
    assert d.desired == 9
    assert d.reason.endswith("scale_down to 5 waits for cooldown (5s left)")


def test_decision_inputs_are_json_and_complete() -> None:
    config = pool(scale_up=scale(cooldown=15), predictive=predictive(window=40))
    d = ramp(Policy(config), EVERY_10S, 7, **{RPS: 200})
    logged = json.loads(json.dumps(d.inputs))
    assert set(logged) == {"policy", "metrics", "per_metric_desired", "request_rate", "reactive",
                           "predictive", "recommended", "stabilized", "cooldown"}
    assert logged["request_rate"] == 1400
    assert logged["cooldown"] == {"scale_up": 0.0, "scale_down": 0.0}
    assert logged["stabilized"] == {"scale_up": 10, "scale_down": 10}
    assert set(logged["predictive"]) == {
        "samples", "fill", "bend", "segment_samples", "slope", "r2", "t", "t_crit",
        "forecast", "forecast_low", "trend", "desired", "applied", "releases_scale_down",
        "note"}
    assert logged["predictive"]["desired"] == 10  # 2000 / 200
