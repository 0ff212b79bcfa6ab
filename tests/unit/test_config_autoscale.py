"""The `predictive:` keys of an autoscale pool: defaults, values and errors."""

from __future__ import annotations

from lbproxy.config import load_config
from lbproxy.config.schema import PredictiveConfig
from tests.config_helpers import Write, errors

POOL = """\
    frontends: {web: {bind: ["127.0.0.1:8080"], default_backend: app}}
    backends: {app: {}}
    autoscale:
      api: {url: "http://127.0.0.1:8404"}
      pools:
        app:
          provider: {command: "x --port {port}", ports: 9100-9199}
          metrics: [{type: requests_per_second_per_server, target: 60}]
          predictive: %s
    """


def test_predictive_defaults() -> None:
    assert PredictiveConfig() == PredictiveConfig(
        enabled=False, window=600.0, horizon=60.0, min_r2=0.6, min_fill=0.5,
        confidence=0.95, trend="piecewise")


def test_predictive_keys(write: Write) -> None:
    text = POOL % ("{enabled: true, window: 30s, horizon: 10s, min_r2: 0.5, min_fill: 0.75, "
                   "confidence: 0.99, trend: linear}")
    config = load_config(write(text), {})
    assert config.autoscale is not None
    assert config.autoscale.pools["app"].predictive == PredictiveConfig(
        enabled=True, window=30.0, horizon=10.0, min_r2=0.5, min_fill=0.75, confidence=0.99,
        trend="linear")


def test_predictive_errors(write: Write) -> None:
    text = POOL % "{min_fill: 1.5, confidence: 0.3, trend: piecewize}"
    assert errors(write(text)) == [
        "lb.yaml:9: autoscale.pools.app.predictive.min_fill: must be between 0 and 1, got 1.5",
        "lb.yaml:9: autoscale.pools.app.predictive.confidence: must be between 0.5 and 0.999, "
        "got 0.3",
        "lb.yaml:9: autoscale.pools.app.predictive.trend: unknown trend 'piecewize' "
        "(did you mean 'piecewise'?)",
    ]
