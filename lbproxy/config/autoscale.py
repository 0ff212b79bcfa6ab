"""Reading `autoscale:`: the runtime API to drive, and one pool per scaled backend.

The proxy ignores this section, but `lbproxy check` validates it like the rest so the
autoscaler sidecar never starts on a config it would misread. Which metric keys are needed
depends on the pool's policy, and which provider keys apply depends on the provider type,
so those checks live here rather than in the field tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from lbproxy.config.errors import unknown
from lbproxy.config.fields import (Conv, Section, boolean, choice, duration, int_range, integer,
                                   mapping_of, nonempty, number, positive_duration, section,
                                   string_map, text, tuple_of)
from lbproxy.config.nodes import Node
from lbproxy.config.schema import (DURATION_METRICS, METRIC_TYPES, POLICIES, PROVIDER_TYPES,
                                   SCALE_DOWN, SCALE_UP, TRENDS, AutoscaleApiConfig,
                                   AutoscaleConfig, MetricConfig, PoolConfig, PredictiveConfig,
                                   ProviderConfig, ScaleConfig)

# Keys that only mean something for one provider type, and those that type cannot do without.
_PROVIDER_KEYS = {
    "process": ("command",),
    "exec": ("create", "destroy"),
    "docker": ("image", "socket", "network", "env"),
    "kubernetes": ("namespace", "deployment", "api_url"),
}
_PROVIDER_NEEDS = {
    "process": ("command", "ports"),
    "exec": ("create", "destroy"),
    "docker": ("image",),
    "kubernetes": ("deployment",),
}
_POLICY_NEEDS = {"target": ("target",), "threshold": ("threshold_high", "threshold_low")}


def autoscale(backends: Sequence[str]) -> Conv[AutoscaleConfig]:
    return section(AutoscaleConfig, {
        "api": section(AutoscaleApiConfig, {"url": _http_url, "username": nonempty,
                                            "password": text}),
        "pools": mapping_of(lambda name, node: _pool(backends, name, node)),
    })


def _http_url(node: Node) -> str:
    value = text(node)
    url = urlsplit(value)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ValueError(f"expected an http:// or https:// URL, got '{value}'")
    return value


def _pool(backends: Sequence[str], name: str, node: Node) -> PoolConfig:
    s = Section(node)
    if name not in backends:
        s.node.report(unknown("backend", name, backends))
    # None when the policy given is invalid (reported): then no per-policy metric checks.
    policy = s.get("policy", choice("policy", POLICIES), None if s.has("policy") else "target")
    pool = s.build(PoolConfig, {
        "provider": _provider,
        "min": integer(0),
        "max": integer(1),
        "interval": positive_duration,
        "metrics": tuple_of(_metric(policy), allow_empty=False, unique_by="type"),
        "tolerance": number(0, 1),
        "scale_up": _scale(SCALE_UP, number(1, 100)),
        "scale_down": _scale(SCALE_DOWN, number(0, 1)),
        "predictive": _PREDICTIVE,
        "drain_timeout": duration,
        "score_trigger": number(0),
    }, backend=name, policy=policy or "target")
    if pool.min > pool.max:
        s.report("min", f"min ({pool.min}) is greater than max ({pool.max})")
    return pool


def _scale(base: ScaleConfig, factor: Conv[float]) -> Conv[ScaleConfig]:
    return section(ScaleConfig, {"cooldown": duration, "max_step": integer(1), "factor": factor,
                                 "stabilization": duration}, base)


_PREDICTIVE = section(PredictiveConfig, {
    "enabled": boolean, "window": positive_duration, "horizon": positive_duration,
    "min_r2": number(0, 1), "min_fill": number(0, 1), "confidence": number(0.5, 0.999),
    "trend": choice("trend", TRENDS)})


def _metric(policy: str | None) -> Conv[MetricConfig]:
    """A metric; its values are durations for response_time_p95, plain numbers otherwise."""
    def conv(node: Node) -> MetricConfig:
        s = Section(node)
        kind = s.get("type", choice("metric type", METRIC_TYPES))
        value = positive_duration if kind in DURATION_METRICS else number(0)
        metric = s.build(MetricConfig, {"target": value, "threshold_high": value,
                                        "threshold_low": value, "weight": number(0)}, type=kind)
        for key in _POLICY_NEEDS.get(policy or "", ()):
            if not s.has(key):
                s.report(key, f"missing required key '{key}' (policy {policy})")
        if metric.target == 0:
            s.report("target", "must be greater than 0")
        high, low = metric.threshold_high, metric.threshold_low
        if high is not None and low is not None and not low < high:
            s.report("threshold_low", f"must be below threshold_high ({low} >= {high})")
        return metric
    return conv


def _provider(node: Node) -> ProviderConfig:
    s = Section(node)
    kind = s.get("type", choice("provider type", PROVIDER_TYPES),
                 None if s.has("type") else "process")     # None: invalid (reported)
    provider = s.build(ProviderConfig, {
        "command": nonempty, "host": nonempty, "ports": int_range(1, 65535),
        "keep_on_exit": boolean, "create": nonempty, "destroy": nonempty,
        "image": nonempty, "socket": nonempty, "network": nonempty, "env": string_map,
        "namespace": nonempty, "deployment": nonempty, "api_url": _http_url,
    }, type=kind or "process")
    if kind is None:
        return provider             # nothing to compare an unknown type with
    for other, keys in _PROVIDER_KEYS.items():
        for key in keys:
            if other != provider.type and s.has(key):
                s.report(key, f"only used by provider type '{other}'")
    for key in _PROVIDER_NEEDS[provider.type]:
        if not s.has(key):
            s.report(key, f"missing required key '{key}' (provider type {provider.type})")
    return provider
