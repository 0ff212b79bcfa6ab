"""What the autoscaler reads off two looks at the proxy: rates and p95 from counter deltas."""

from __future__ import annotations

import math

import pytest

from lbproxy.autoscale.metrics import (Look, PoolMeter, histogram_quantile, latency_buckets,
                                       look)

PAGE = """# HELP lbproxy_server_response_time_seconds Response time.
# TYPE lbproxy_server_response_time_seconds histogram
lbproxy_server_response_time_seconds_bucket{backend="app",server="a1",le="0.1"} 90.0
lbproxy_server_response_time_seconds_bucket{backend="app",server="a1",le="1.0"} 100.0
lbproxy_server_response_time_seconds_bucket{backend="app",server="a1",le="+Inf"} 100.0
lbproxy_server_response_time_seconds_count{backend="app",server="a1"} 100.0
lbproxy_server_response_time_seconds_sum{backend="app",server="a1"} 5.0
lbproxy_server_response_time_seconds_bucket{backend="api",server="b1",le="+Inf"} 7.0
"""


def test_buckets_are_read_per_server_of_one_backend() -> None:
    assert latency_buckets(PAGE, "app") == {"a1": {0.1: 90.0, 1.0: 100.0, math.inf: 100.0}}
    assert latency_buckets(PAGE, "nope") == {}


@pytest.mark.parametrize(("buckets", "q", "expected"), [
    ({0.1: 90.0, 1.0: 100.0, math.inf: 100.0}, 0.95, 0.55),   # inside (0.1, 1.0]
    ({0.1: 100.0, math.inf: 100.0}, 0.5, 0.05),               # from 0 in the first bucket
    ({0.1: 10.0, math.inf: 100.0}, 0.95, 0.1),                # in +Inf: highest known bound
    ({0.1: 0.0, math.inf: 0.0}, 0.95, None),                  # no observation
    ({}, 0.95, None),
])
def test_histogram_quantile_interpolates_like_prometheus(
        buckets: dict[float, float], q: float, expected: float | None) -> None:
    assert histogram_quantile(q, buckets) == (pytest.approx(expected) if expected else None)


def test_rate_uses_the_backend_counter_and_p95_the_bucket_deltas() -> None:
    meter = PoolMeter()
    first = look(10.0, {"name": "app", "requests": 1000, "servers": []}, PAGE)
    assert meter.update(first).request_rate is None
    later = PAGE.replace('le="1.0"} 100.0', 'le="1.0"} 200.0').replace(
        'le="+Inf"} 100.0', 'le="+Inf"} 200.0')
    load = meter.update(look(12.0, {"name": "app", "requests": 1400, "servers": []}, later))
    assert load.request_rate == 200.0
    assert load.p95 == pytest.approx(0.1 + 0.9 * 95 / 100)    # all 100 new ones in (0.1, 1]


def test_without_a_backend_counter_servers_are_summed_new_ones_from_zero() -> None:
    meter = PoolMeter()
    meter.update(Look(0.0, None, {"a": 10.0}, {}))
    load = meter.update(Look(2.0, None, {"a": 30.0, "b": 6.0}, {}))
    assert load.request_rate == 13.0
    assert load.p95 is None


def test_counters_that_went_down_were_reset_by_a_restart() -> None:
    meter = PoolMeter()
    meter.update(Look(0.0, 5000, {}, {"a": {0.1: 5000.0, math.inf: 5000.0}}))
    load = meter.update(Look(1.0, 40, {}, {"a": {0.1: 40.0, math.inf: 40.0}}))
    assert load.request_rate == 40.0
    assert load.p95 == pytest.approx(0.095)
