"""`lbproxy autoscale`: watch each pool through the runtime API, decide, act, reconcile.

Every `interval`, for each pool, `PoolController.tick`:
1. reads the backend (`GET /api/backends/{b}`) and /metrics, and turns the difference
   from the previous read into the request rate and p95 of the interval (metrics.py);
2. reconciles: a server the provider runs but the backend lacks (the proxy restarted
   or reloaded) is POSTed again; a server named like ours (`{pool}-as-…`) that the
   provider no longer runs (it died) is removed from the backend;
3. builds an Observation, asks the Policy, logs the decision with its inputs as one
   JSON line, and acts unless --dry-run:
   - scale-up: provider.create() → address, then POST the server (the proxy health-checks
     it before traffic when the backend has checks);
   - scale-down: the provider's least-loaded server (newest on ties) is DELETEd with
     `?drain=drain_timeout`; in the background we wait until the proxy has dropped it
     (or drain_timeout + DRAIN_MARGIN), and only then provider.destroy() it. So the
     proxy never sends a request to a server that is going away;
4. reports `{pool, current, desired, last_decision}` to `POST /api/autoscale/status`
   when the proxy has it.

The pool's current size is the backend's servers that may serve: all but DRAIN (being
removed) and MAINT (switched off by an operator), static servers included; only the
provider's own servers are ever removed. Per-server metrics are pool totals divided by
that size, so the target policy's ceil(current × value / target) is ceil(total / target).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from lbproxy.autoscale.api_client import ApiError, ProxyApi
from lbproxy.autoscale.metrics import PoolMeter, look, mean, per_server
from lbproxy.autoscale.policy import Decision, Observation, Policy
from lbproxy.autoscale.providers import make_provider
from lbproxy.autoscale.providers.base import Instance, NotSupported, Provider, ProviderError
from lbproxy.config.schema import AutoscaleConfig, Config, PoolConfig

log = logging.getLogger("lbproxy.autoscale")

DRAIN_MARGIN = 5.0      # seconds past drain_timeout we wait for the proxy to drop a server
GONE_POLL = 0.25        # seconds between reads of the backend while a server drains
INACTIVE = ("DRAIN", "MAINT")
USAGE_METRICS = ("cpu_utilization", "memory_utilization")


class PoolController:
    """The loop of one pool. `tick` is one interval's work; `run` repeats it."""

    gone_poll = GONE_POLL

    def __init__(self, pool: PoolConfig, api: ProxyApi, provider: Provider, *,
                 dry_run: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        self.name = pool.backend
        self.api = api
        self.provider = provider
        self.dry_run = dry_run
        self.clock = clock
        self.policy = Policy(pool)
        self.meter = PoolMeter()
        self.last_decision: Decision | None = None
        self._retiring: dict[str, asyncio.Task[None]] = {}   # server name -> drain + destroy
        self._usage = any(m.type in USAGE_METRICS for m in pool.metrics)

    async def start(self) -> None:
        """Start the provider (adopting what an earlier run started); say once whether
        CPU and memory can be measured."""
        await self.provider.start()
        if self._usage and not self.provider.measures_usage:
            log.warning("autoscale %s: the %s provider cannot measure cpu or memory: "
                        "cpu_utilization and memory_utilization are left out", self.name,
                        self.pool.provider.type)
            self._usage = False

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every interval until `stop` is set, then shut down."""
        while not stop.is_set():
            started = self.clock()
            try:
                await self.tick()
            except Exception:       # a bug must not stop the scaling of every pool
                log.exception("autoscale %s: interval failed", self.name)
            left = self.pool.interval - (self.clock() - started)
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, left))
            except TimeoutError:
                pass
        await self.shutdown()

    async def tick(self) -> Decision | None:
        """One interval; None when the proxy or the provider could not be read."""
        try:
            backend = await self.api.backend(self.name)
            metrics_text = await self.api.metrics()
            instances = await self.provider.list()
        except (ApiError, ProviderError) as exc:
            log.warning("autoscale %s: skipping this interval: %s", self.name, exc)
            return None
        load = self.meter.update(look(self.clock(), backend, metrics_text))
        servers = {s["name"]: s for s in backend.get("servers") or []}
        owned = {self.provider.server_name(i): i for i in instances}
        active = await self._reconcile(servers, owned)
        current = len(active)
        in_flight = sum(s.get("sessions") or 0 for s in servers.values()) + (
            backend.get("queue") or 0)
        metrics: dict[str, float | None] = {
            "requests_per_second_per_server": per_server(load.request_rate, current),
            "response_time_p95": load.p95,
            "in_flight_per_server": per_server(in_flight, current),
        }
        if self._usage:
            metrics.update(await self._usage_metrics([owned[n] for n in active if n in owned]))
        decision = self.policy.decide(Observation(self.clock(), current, metrics,
                                                  load.request_rate))
        self.last_decision = decision
        self._log_decision(decision)
        if not self.dry_run:
            if decision.action == "scale_up":
                await self._scale_up(decision.desired - current)
            elif decision.action == "scale_down":
                self._scale_down(current - decision.desired, active, servers, owned)
        await self._report(decision)
        return decision

    async def _reconcile(self, servers: Mapping[str, Any],
                         owned: Mapping[str, Instance]) -> list[str]:
        """Make the backend hold exactly the provider's servers; the active names after."""
        active = [n for n, s in servers.items() if s.get("state") not in INACTIVE
                  and n not in self._retiring]
        for name, instance in owned.items():
            if name not in servers and name not in self._retiring:
                log.warning("autoscale %s: %s (%s) is running but not in the backend: %s",
                            self.name, name, instance.address,
                            "would add it (dry run)" if self.dry_run else "adding it")
                if self.dry_run or await self._add(name, instance):
                    active.append(name)
        for name in [n for n in active if self.provider.owns_name(n) and n not in owned]:
            log.warning("autoscale %s: %s is in the backend but its server is gone: %s",
                        self.name, name, "would remove it (dry run)" if self.dry_run
                        else "removing it")
            active.remove(name)
            if not self.dry_run:
                await self._api_call(self.api.remove_server(self.name, name,
                                                            self.pool.drain_timeout))
        return active

    async def _api_call(self, call: Awaitable[bool]) -> bool:
        try:
            return bool(await call)
        except ApiError as exc:
            log.error("autoscale %s: %s", self.name, exc)
            return False

    async def _add(self, name: str, instance: Instance) -> bool:
        """POST one server; a 409 means it is there already, which is what we want."""
        try:
            await self.api.add_server(self.name, name, instance.address)
        except ApiError as exc:
            log.error("autoscale %s: could not add %s (%s): %s; will retry next interval",
                      self.name, name, instance.address, exc)
            return False
        log.info("autoscale %s: added server %s (%s)", self.name, name, instance.address)
        return True

    async def _usage_metrics(self, instances: list[Instance]) -> dict[str, float | None]:
        """Mean CPU and memory percent over the provider's active servers."""
        readings = []
        for instance in instances:
            try:
                readings.append(await self.provider.usage(instance.id))
            except NotSupported as exc:
                log.warning("autoscale %s: %s: cpu and memory are left out", self.name, exc)
                self._usage = False
                break
            except ProviderError as exc:
                log.warning("autoscale %s: usage of %s: %s", self.name, instance.id, exc)
        return {"cpu_utilization": mean([r.cpu for r in readings]),
                "memory_utilization": mean([r.memory for r in readings])}

    async def _scale_up(self, count: int) -> None:
        results = await asyncio.gather(*(self._create() for _ in range(count)),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, ProviderError):
                log.error("autoscale %s: scale-up: %s", self.name, result)
            elif isinstance(result, BaseException):
                raise result

    async def _create(self) -> None:
        instance = await self.provider.create()
        await self._add(self.provider.server_name(instance), instance)

    def _scale_down(self, count: int, active: list[str], servers: Mapping[str, Any],
                    owned: Mapping[str, Instance]) -> None:
        """Start retiring `count` of our active servers: least in flight, newest first."""
        order = list(owned)
        ours = sorted((n for n in active if n in owned),
                      key=lambda n: ((servers.get(n) or {}).get("sessions") or 0,
                                     -order.index(n)))
        if len(ours) < count:
            log.warning("autoscale %s: scale-down wants %d fewer servers but only %d are the "
                        "provider's (static servers are never removed)", self.name, count,
                        len(ours))
        for name in ours[:count]:
            self._retiring[name] = asyncio.create_task(self._retire(name, owned[name]))

    async def _retire(self, name: str, instance: Instance, exiting: bool = False) -> None:
        """Drain `name` in the proxy, wait until the proxy dropped it, then destroy it.

        If the proxy cannot be asked to drain it, the server is kept (it may still get
        traffic) and the next reconcile sorts it out; except on exit, when the provider's
        servers are stopped whatever the proxy says.
        """
        drain = self.pool.drain_timeout
        try:
            try:
                present = await self.api.remove_server(self.name, name, drain)
            except ApiError as exc:
                if not exiting:
                    log.error("autoscale %s: could not drain %s, keeping it: %s", self.name,
                              name, exc)
                    return
                log.warning("autoscale %s: could not drain %s (%s); stopping it anyway",
                            self.name, name, exc)
                present = False
            log.info("autoscale %s: draining %s (up to %gs)", self.name, name, drain)
            if present:
                await self._wait_gone(name, drain + DRAIN_MARGIN)
            await self.provider.destroy(instance.id)
            log.info("autoscale %s: removed %s (%s)", self.name, name, instance.address)
        except ProviderError as exc:
            log.error("autoscale %s: could not destroy %s: %s", self.name, name, exc)
        finally:
            self._retiring.pop(name, None)

    async def _wait_gone(self, name: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                backend = await self.api.backend(self.name)
            except ApiError as exc:
                log.warning("autoscale %s: waiting for %s to drain: %s", self.name, name, exc)
            else:
                if all(s["name"] != name for s in backend.get("servers") or []):
                    return
            await asyncio.sleep(self.gone_poll)
        log.warning("autoscale %s: %s still in the backend after %gs; stopping it", self.name,
                    name, timeout)

    def _log_decision(self, decision: Decision) -> None:
        log.info({"event": "decision", "pool": self.name, "current": decision.current,
                  "desired": decision.desired, "action": decision.action,
                  "reason": decision.reason, "dry_run": self.dry_run,
                  "inputs": decision.inputs})

    async def _report(self, decision: Decision) -> None:
        status = {"pool": self.name, "current": decision.current, "desired": decision.desired,
                  "last_decision": {"time": time.time(), "action": decision.action,
                                    "reason": decision.reason}}
        try:
            await self.api.report_status(status)
        except ApiError as exc:
            log.debug("autoscale %s: status report failed: %s", self.name, exc)

    async def shutdown(self) -> None:
        """Let retirements finish; drain and stop our servers when the provider says so."""
        if self._retiring:
            await asyncio.gather(*self._retiring.values(), return_exceptions=True)
        if self.provider.stop_on_exit and not self.dry_run:
            try:
                instances = await self.provider.list()
            except ProviderError as exc:
                log.error("autoscale %s: cannot list servers to stop: %s", self.name, exc)
                instances = []
            log.info("autoscale %s: stopping %d servers", self.name, len(instances))
            await asyncio.gather(*(self._retire(self.provider.server_name(i), i, exiting=True)
                                   for i in instances))
        await self.provider.close()


class JsonLines(logging.Formatter):
    """One JSON object per record; a dict message (a decision) is merged in as is."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname.lower(),
        }
        if isinstance(record.msg, dict):
            data.update(record.msg)
        else:
            data["message"] = record.getMessage()
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def _json_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLines())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


async def autoscale(config: AutoscaleConfig, dry_run: bool, stop: asyncio.Event) -> int:
    """Run every pool until `stop` is set; 1 when a provider cannot start."""
    api = ProxyApi(config.api)
    controllers = [PoolController(pool, api, make_provider(pool.provider, name), dry_run=dry_run)
                   for name, pool in config.pools.items()]
    started: list[PoolController] = []
    try:
        for controller in controllers:
            try:
                await controller.start()
            except ProviderError as exc:
                log.error("autoscale %s: the %s provider cannot start: %s", controller.name,
                          controller.pool.provider.type, exc)
                stop.set()
                await asyncio.gather(*(c.run(stop) for c in started))
                await controller.provider.close()
                return 1
            started.append(controller)
        log.info("autoscale: watching %s at %s%s", ", ".join(config.pools) or "no pool",
                 api.url, " (dry run)" if dry_run else "")
        await asyncio.gather(*(c.run(stop) for c in controllers))
    finally:
        await api.close()
    return 0


def run_autoscaler(config: Config, dry_run: bool = False) -> int:
    """The `lbproxy autoscale` command: decisions as JSON lines on stdout, until SIGTERM."""
    _json_logging()
    settings = config.autoscale
    assert settings is not None     # the CLI refuses a file without an autoscale: section

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await autoscale(settings, dry_run, stop)

    return asyncio.run(main())
