"""The autoscaler's loop against an in-memory runtime API and provider, on a fake clock:
what it observes, what it decides and in which order it acts."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine
from typing import Any

import pytest

from lbproxy.autoscale.api_client import ApiError
from lbproxy.autoscale.controller import JsonLines, PoolController
from lbproxy.autoscale.providers.base import Instance, Provider, ProviderError
from lbproxy.config.schema import (MetricConfig, PoolConfig, ProviderConfig, ScaleConfig)

RPS = "requests_per_second_per_server"


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def pool(**overrides: Any) -> PoolConfig:
    quick = ScaleConfig(cooldown=0.0, max_step=4, factor=1.5, stabilization=0.0)
    settings: dict[str, Any] = dict(
        backend="app", provider=ProviderConfig(), min=1, max=5, interval=1.0,
        metrics=(MetricConfig(type=RPS, target=10.0),), scale_up=quick,
        scale_down=ScaleConfig(cooldown=0.0, max_step=1, factor=0.5, stabilization=0.0),
        drain_timeout=2.0)
    settings.update(overrides)
    return PoolConfig(**settings)


class FakeApi:
    """The runtime API's contract in memory: DELETE drains, the server disappears after
    `drain_reads` more reads of the backend; every call is written to `events`."""

    def __init__(self) -> None:
        self.servers: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.events: list[str] = []
        self.statuses: list[dict[str, Any]] = []
        self.drain_reads = 2
        self.draining: dict[str, int] = {}
        self.down = False
        self.latency: dict[str, dict[str, int]] = {}

    def server(self, name: str, sessions: int = 0, state: str = "UP") -> None:
        self.servers[name] = {"name": name, "address": f"10.0.0.1:{len(self.servers)}",
                              "state": state, "sessions": sessions, "requests": 0}

    async def backend(self, name: str) -> dict[str, Any]:
        if self.down:
            raise ApiError(0, "connection refused")
        for server, left in list(self.draining.items()):
            if left <= 0:
                del self.draining[server], self.servers[server]
                self.events.append(f"gone {server}")
            else:
                self.draining[server] = left - 1
        return {"name": name, "requests": self.requests, "queue": 0,
                "servers": [dict(s) for s in self.servers.values()]}

    async def metrics(self) -> str | None:
        lines = []
        for server, buckets in self.latency.items():
            for le, count in buckets.items():
                lines.append(f'lbproxy_server_response_time_seconds_bucket{{backend="app",'
                             f'server="{server}",le="{le}"}} {count}')
        return "\n".join(lines) + "\n"

    async def add_server(self, backend: str, name: str, address: str) -> bool:
        self.events.append(f"add {name}")
        if name in self.servers:
            return False
        self.server(name)
        self.servers[name]["address"] = address
        return True

    async def remove_server(self, backend: str, name: str, drain: float) -> bool:
        if self.down:
            raise ApiError(0, "connection refused")
        self.events.append(f"drain {name} {drain:g}")
        if name not in self.servers:
            return False
        self.servers[name]["state"] = "DRAIN"
        self.draining[name] = self.drain_reads
        return True

    async def report_status(self, status: dict[str, Any]) -> None:
        self.statuses.append(status)


class FakeProvider(Provider):
    def __init__(self, events: list[str], stop_on_exit: bool = True) -> None:
        super().__init__(ProviderConfig(), "app")
        self.events = events
        self.stop_on_exit = stop_on_exit
        self.running: dict[str, Instance] = {}
        self.next = 1
        self.fail = False
        self.closed = False

    def start_one(self) -> str:
        instance = Instance(str(self.next), f"127.0.0.1:{9100 + self.next}")
        self.next += 1
        self.running[instance.id] = instance
        return self.server_name(instance)

    async def create(self) -> Instance:
        if self.fail:
            raise ProviderError("out of capacity")
        name = self.start_one()
        self.events.append(f"create {name}")
        return list(self.running.values())[-1]

    async def destroy(self, instance_id: str) -> None:
        self.events.append(f"destroy {instance_id}")
        del self.running[instance_id]

    async def list(self) -> list[Instance]:
        return list(self.running.values())

    async def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def controller(api: FakeApi, provider: FakeProvider, clock: Clock, **kwargs: Any) -> PoolController:
    c = PoolController(pool(**kwargs.pop("config", {})), api, provider, clock=clock, **kwargs)
    c.gone_poll = 0.001
    return c


def with_servers(n: int) -> tuple[FakeApi, FakeProvider, Clock]:
    api = FakeApi()
    provider = FakeProvider(api.events)
    for _ in range(n):
        api.server(provider.start_one())
    return api, provider, Clock()


def second_tick(c: PoolController, api: FakeApi, clock: Clock, requests: int,
                seconds: float = 1.0) -> Any:
    """Two ticks `seconds` apart with `requests` served in between: the second decision."""
    async def scenario() -> Any:
        await c.tick()
        api.requests += requests
        clock.now += seconds
        return await c.tick()

    return run(scenario())


async def settle(c: PoolController) -> None:
    """Wait for background retirements (drain, wait, destroy) to finish."""
    await asyncio.gather(*list(c._retiring.values()))


def test_first_look_has_no_rate_so_nothing_changes() -> None:
    api, provider, clock = with_servers(1)
    decision = run(controller(api, provider, clock).tick())
    assert decision.action == "none"
    assert decision.inputs["metrics"][RPS] is None
    assert api.events == []


def test_load_creates_servers_and_posts_them() -> None:
    api, provider, clock = with_servers(1)
    decision = second_tick(controller(api, provider, clock), api, clock, 300)   # target 10
    assert (decision.current, decision.desired, decision.action) == (1, 5, "scale_up")
    assert decision.inputs["metrics"][RPS] == 300.0
    assert decision.inputs["request_rate"] == 300.0
    assert sorted(api.servers) == [f"app-as-{i}" for i in range(1, 6)]
    for i in range(2, 6):
        assert api.events.index(f"create app-as-{i}") < api.events.index(f"add app-as-{i}")


def test_rate_per_server_divides_by_active_servers_only() -> None:
    api, provider, clock = with_servers(2)
    api.server("static", state="MAINT")
    decision = second_tick(controller(api, provider, clock), api, clock, 30, seconds=2)
    assert decision.current == 2
    assert decision.inputs["metrics"][RPS] == 7.5


def test_scale_down_drains_then_destroys_least_loaded_newest() -> None:
    api, provider, clock = with_servers(3)
    api.servers["app-as-3"]["sessions"] = 4      # busy: spared although newest

    async def scenario() -> Any:
        c = controller(api, provider, clock)
        await c.tick()
        clock.now += 1
        decision = await c.tick()                # no load: min 1, one step of 1
        await settle(c)
        return decision

    decision = run(scenario())
    assert (decision.current, decision.desired) == (3, 2)
    assert api.events == ["drain app-as-2 2", "gone app-as-2", "destroy 2"]
    assert sorted(provider.running) == ["1", "3"]


def test_draining_server_is_not_counted_nor_readded() -> None:
    api, provider, clock = with_servers(3)
    api.drain_reads = 100

    async def scenario() -> list[Any]:
        c = controller(api, provider, clock)
        await c.tick()
        clock.now += 1
        first = await c.tick()
        clock.now += 1
        second = await c.tick()
        for task in c._retiring.values():
            task.cancel()
        return [first, second]

    first, second = run(scenario())
    assert (first.current, second.current) == (3, 2)
    assert "add app-as-2" not in api.events


def test_server_missing_from_backend_is_added_again() -> None:
    api, provider, clock = with_servers(2)
    del api.servers["app-as-1"]                  # the proxy restarted without it

    decision = run(controller(api, provider, clock).tick())
    assert api.events == ["add app-as-1"]
    assert decision.current == 2
    assert api.servers["app-as-1"]["address"] == "127.0.0.1:9101"


def test_server_of_ours_that_died_is_removed_from_backend() -> None:
    api, provider, clock = with_servers(2)
    api.server("app-as-77")                      # named like ours, provider has no such
    api.server("static")                         # not ours: left alone

    decision = run(controller(api, provider, clock).tick())
    assert api.events == ["drain app-as-77 2"]
    assert decision.current == 3


def test_dry_run_decides_and_logs_but_acts_on_nothing(caplog: pytest.LogCaptureFixture) -> None:
    api, provider, clock = with_servers(1)
    del api.servers["app-as-1"]
    api.server("other")
    with caplog.at_level(logging.INFO, "lbproxy.autoscale"):
        decision = second_tick(controller(api, provider, clock, dry_run=True), api, clock, 300)
    assert decision.action == "scale_up"
    assert api.events == [] and len(provider.running) == 1
    logged = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    assert logged[-1]["dry_run"] is True and logged[-1]["action"] == "scale_up"
    assert any("would add it (dry run)" in r.getMessage() for r in caplog.records)


def test_every_decision_is_one_json_line_with_its_inputs(
        caplog: pytest.LogCaptureFixture) -> None:
    api, provider, clock = with_servers(2)
    with caplog.at_level(logging.INFO, "lbproxy.autoscale"):
        run(controller(api, provider, clock).tick())
    record = next(r for r in caplog.records if isinstance(r.msg, dict))
    line = JsonLines().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["event"] == "decision" and data["pool"] == "app"
    assert data["current"] == 2 and data["desired"] == 2
    assert set(data["inputs"]) >= {"metrics", "cooldown", "stabilized", "reactive"}


def test_p95_comes_from_histogram_deltas_between_reads() -> None:
    api, provider, clock = with_servers(1)
    p95 = "response_time_p95"
    api.latency = {"app-as-1": {"0.1": 1000, "0.5": 1000, "+Inf": 1000}}

    async def scenario() -> Any:
        c = controller(api, provider, clock, config={"metrics": (
            MetricConfig(type=p95, target=0.25),)})
        await c.tick()
        api.latency = {"app-as-1": {"0.1": 1000, "0.5": 1100, "+Inf": 1100}}
        clock.now += 1
        return await c.tick()

    decision = run(scenario())
    assert decision.inputs["metrics"][p95] == pytest.approx(0.48)
    assert decision.action == "scale_up"


def test_unreachable_proxy_skips_the_interval() -> None:
    api, provider, clock = with_servers(1)
    api.down = True
    assert run(controller(api, provider, clock).tick()) is None
    assert api.events == []


def test_failed_create_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    api, provider, clock = with_servers(1)
    provider.fail = True
    decision = second_tick(controller(api, provider, clock), api, clock, 100)
    assert decision.action == "scale_up"
    assert list(api.servers) == ["app-as-1"]
    assert any("out of capacity" in r.getMessage() for r in caplog.records)


def test_status_is_reported_after_each_decision() -> None:
    api, provider, clock = with_servers(2)
    run(controller(api, provider, clock).tick())
    assert api.statuses[0]["pool"] == "app"
    assert (api.statuses[0]["current"], api.statuses[0]["desired"]) == (2, 2)
    assert api.statuses[0]["last_decision"]["action"] == "none"


def test_stop_drains_and_destroys_what_the_provider_must_not_leave_running() -> None:
    api, provider, clock = with_servers(2)
    api.server("static")
    stop = asyncio.Event()
    stop.set()
    run(controller(api, provider, clock).run(stop))
    assert provider.running == {} and provider.closed
    assert list(api.servers) == ["static"]
    for name, instance in (("app-as-1", "1"), ("app-as-2", "2")):
        assert api.events.index(f"gone {name}") < api.events.index(f"destroy {instance}")


def test_stop_keeps_servers_when_the_provider_keeps_them() -> None:
    api, provider, clock = with_servers(2)
    provider.stop_on_exit = False
    stop = asyncio.Event()
    stop.set()
    run(controller(api, provider, clock).run(stop))
    assert len(provider.running) == 2 and len(api.servers) == 2 and provider.closed


def test_a_server_the_proxy_cannot_drain_is_kept() -> None:
    api, provider, clock = with_servers(2)

    async def scenario() -> None:
        c = controller(api, provider, clock)
        await c.tick()
        api.down = True
        c._scale_down(1, list(api.servers), api.servers, {
            provider.server_name(i): i for i in provider.running.values()})
        await settle(c)

    run(scenario())
    assert len(provider.running) == 2
