"""Autoscaling through issue 21's compressed day: reactive, reactive + predictive and
HPA-like defaults side by side, several runs each, with SLO kept, errors and server-seconds.

The setting, as an operator would run it:
- app servers that serve one request at a time in --service (10 ms): 100 req/s each, so
  latency climbs as soon as one is saturated (`python -m bench.autoscale serve`, started
  by the autoscaler's process provider; /health is answered at once, outside the queue);
- lbproxy (leastconn, health checks every 500 ms, rise 1) in front of an empty backend;
- `lbproxy autoscale`, min 1, max 8, `requests_per_second_per_server` target 60;
- an open-loop Poisson load from this process following a trace, after --warmup seconds
  at 30 req/s (the sidecar has been running all night: its windows are full; scaling
  actions during the warm-up are counted, and must be 0):
  - day: 30 req/s rising as a half cosine to 450 at t = 60 s, held to 90 s, back to 30
    at 150 s;
  - steep: 30 req/s for 20 s, to 450 in 20 s, held 30 s, back to 30 in 20 s, then 20 s.

Configurations (every run starts afresh; runs of the configurations are interleaved):
- reactive: policy target, tolerance 0.1, interval 2 s, scale_up {cooldown 5 s,
  max_step 4}, scale_down {cooldown 10 s, stabilization 15 s, max_step --down-step (2:
  with 1, one server per 10 s cannot follow the wave down, 4 servers are left at its end)};
- predictive: the same with `predictive: {enabled: true, window: 30s, horizon: 10s}`
  (min_r2 0.6 and the other keys at their defaults);
- predictive-linear: the same with `trend: linear`, the plain line fit (on request);
- hpa: Kubernetes HPA's defaults compressed like the day: interval 5 s (sync period
  15 s), scale_up {cooldown 15 s, max_step 4} (4 pods or 100 % per 15 s), scale_down
  {stabilization 60 s (300 s), cooldown 15 s, max_step 8 (100 % per 15 s)}.

Per second from t = 0: the client's p95 (over the requests sent in that second), errors
(non-200, failed or timed out), and the servers in the backend (sampled 4 times a second
through the runtime API, in any state: starting, up or draining, as they all cost).
SLO kept is the share of seconds with p95 <= --slo; server-seconds integrate the count.

Before the live runs, a replay of the forecast alone (no processes, seeded Poisson
samples of the same traces every 2 s) measures the piecewise trend against the plain
line fit: how often flat noise shows a trusted trend, how soon a ramp is trusted, how
long a rise is still trusted once the rate levels off, and how many servers too many
the forecast asks for at the plateau.

    python -m bench.autoscale [--quick] [--runs 3] [--traces day,steep]
                              [--configs reactive,predictive,hpa] [--down-step 2]
                              [--output bench/results/autoscale.md]

Writes the report to --output, and beside it the plots NAME.png (day) and
NAME-steep.png, NAME being the report's name without .md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# This module is also the app server the provider starts many times: the load generator's
# and the harness's imports wait for main().

SERVICE = 0.010         # seconds per request: 100 req/s per server
BASE, PEAK = 30.0, 450.0
TARGET = 60.0           # requests_per_second_per_server
MAX_SERVERS = 8
AUTH = ("admin", "bench")
MAX_IN_FLIGHT = 2000    # an open-loop client must still be bounded
REQUEST_TIMEOUT = 5.0
SAMPLE_EVERY = 0.25     # seconds between reads of the backend's servers


# --- the app server ---------------------------------------------------------------------

class OneAtATime(asyncio.Protocol):
    """HTTP/1.1 keep-alive, GET only: requests join the process's single FIFO queue."""

    def __init__(self, queue: asyncio.Queue[OneAtATime]) -> None:
        self.queue = queue
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
            if path.startswith(b"/health"):
                self.respond(b"ok\n")
            else:
                self.queue.put_nowait(self)

    def respond(self, body: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


async def serve(port: int, service: float) -> None:
    queue: asyncio.Queue[OneAtATime] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: OneAtATime(queue), "127.0.0.1", port)
    async with server:
        while True:
            protocol = await queue.get()
            await asyncio.sleep(service)
            protocol.respond(b"hello\n")


# --- traces -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Trace:
    name: str
    duration: float
    rate: Callable[[float], float]
    ramp: tuple[float, float]       # the rise: start, end (the plateau starts at its end)
    plateau_end: float
    fall_end: float


def _day(t: float) -> float:
    if t < 60:
        return BASE + (PEAK - BASE) * (1 - math.cos(math.pi * t / 60)) / 2
    if t < 90:
        return PEAK
    if t < 150:
        return BASE + (PEAK - BASE) * (1 + math.cos(math.pi * (t - 90) / 60)) / 2
    return BASE


def _steep(t: float) -> float:
    if t < 20:
        return BASE
    if t < 40:
        return BASE + (PEAK - BASE) * (1 - math.cos(math.pi * (t - 20) / 20)) / 2
    if t < 70:
        return PEAK
    if t < 90:
        return BASE + (PEAK - BASE) * (1 + math.cos(math.pi * (t - 70) / 20)) / 2
    return BASE


TRACES = {"day": Trace("day", 150.0, _day, (0.0, 60.0), 90.0, 150.0),
          "steep": Trace("steep", 110.0, _steep, (20.0, 40.0), 70.0, 90.0)}


# --- configurations ---------------------------------------------------------------------

def pool_settings(name: str, down_step: int) -> dict[str, Any]:
    if name == "hpa":
        return {"interval": "5s", "scale_up": {"cooldown": "15s", "max_step": 4},
                "scale_down": {"cooldown": "15s", "stabilization": "60s", "max_step": 8}}
    pool: dict[str, Any] = {
        "interval": "2s", "scale_up": {"cooldown": "5s", "max_step": 4},
        "scale_down": {"cooldown": "10s", "stabilization": "15s", "max_step": down_step}}
    if name.startswith("predictive"):
        pool["predictive"] = {"enabled": True, "window": "30s", "horizon": "10s",
                              "min_r2": 0.6}
        if name == "predictive-linear":
            pool["predictive"]["trend"] = "linear"
    return pool


CONFIGS = ("reactive", "predictive", "predictive-linear", "hpa")


def write_config(workdir: Path, name: str, args: argparse.Namespace) -> tuple[Path, int, int]:
    import yaml

    from bench.harness import free_port
    port, stats, low = free_port(), free_port(), free_port()
    config = {
        "global": {"log": {"format": "off"}},
        "stats": {"bind": f"127.0.0.1:{stats}", "admin": True,
                  "auth": {"username": AUTH[0], "password": AUTH[1]}},
        "frontends": {"web": {"bind": [f"127.0.0.1:{port}"], "default_backend": "app"}},
        "backends": {"app": {"balance": "leastconn", "health_check": {
            "path": "/health", "interval": "500ms", "timeout": "400ms", "rise": 1, "fall": 2}}},
        "autoscale": {
            "api": {"url": f"http://127.0.0.1:{stats}", "username": AUTH[0],
                    "password": AUTH[1]},
            "pools": {"app": {
                "provider": {"command": f"{sys.executable} -m bench.autoscale serve "
                                        f"--port {{port}} --service {args.service}",
                             "ports": f"{low}-{low + 40}"},
                "min": 1, "max": MAX_SERVERS,
                "metrics": [{"type": "requests_per_second_per_server", "target": TARGET}],
                "drain_timeout": "5s",
                **pool_settings(name, args.down_step)}}},
    }
    path = workdir / "autoscale.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port, stats


# --- one live run -----------------------------------------------------------------------

@dataclass
class Second:
    t: int
    offered: float
    done: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    servers: list[int] = field(default_factory=list)    # backend size at each sample
    up: list[int] = field(default_factory=list)

    @property
    def p95(self) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class Run:
    trace: str
    config: str
    seconds: list[Second]
    warmup_actions: int
    first_up: float | None          # seconds after t = 0 of the first scale-up
    load_average: float
    logs: Path

    def measured(self) -> list[Second]:
        return [s for s in self.seconds if s.p95 is not None]

    def slo_kept(self, slo: float) -> float:
        measured = self.measured()
        return sum(s.p95 <= slo for s in measured) / max(1, len(measured))  # type: ignore[operator]

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.seconds)

    @property
    def server_seconds(self) -> float:
        return sum(statistics.fmean(s.servers) for s in self.seconds if s.servers)

    @property
    def servers_at_end(self) -> int:
        tail = [s for s in self.seconds if s.servers]
        return tail[-1].servers[-1] if tail else 0


async def drive(port: int, stats: int, trace: Trace, warmup: float, seed: int,
                seconds: list[Second]) -> float:
    """Warm-up, then the trace: Poisson arrivals, one task per request; the backend's
    servers are sampled meanwhile. Returns the wall-clock time of t = 0."""
    import base64

    import aiohttp
    auth = {"Authorization": "Basic " + base64.b64encode(":".join(AUTH).encode()).decode()}
    rng = random.Random(seed)
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        gate = asyncio.Semaphore(MAX_IN_FLIGHT)
        start = time.monotonic() + warmup          # t = 0
        zero_wall = time.time() + warmup
        end = trace.duration

        def slot(now: float) -> Second | None:
            return seconds[int(now)] if 0 <= now < len(seconds) else None

        async def one(second: Second | None) -> None:
            sent = time.monotonic()
            ok = False
            try:
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            finally:
                gate.release()
            if second is not None:
                second.done += ok
                second.errors += not ok
                if ok:
                    second.latencies.append(time.monotonic() - sent)

        async def sample() -> None:
            url = f"http://127.0.0.1:{stats}/api/backends/app"
            while (now := time.monotonic() - start) < end:
                try:
                    async with session.get(url, headers=auth) as response:
                        servers = (await response.json())["servers"]
                    if (second := slot(now)) is not None:
                        second.servers.append(len(servers))
                        second.up.append(sum(s["state"] == "UP" for s in servers))
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                    pass
                await asyncio.sleep(SAMPLE_EVERY)

        sampler = asyncio.create_task(sample())
        tasks: set[asyncio.Task[None]] = set()
        due = time.monotonic() - start
        while due < end:
            now = time.monotonic() - start
            if now < due:
                await asyncio.sleep(min(due - now, 0.01))
                continue
            await gate.acquire()
            task = asyncio.create_task(one(slot(due)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            rate = BASE if due < 0 else trace.rate(due)
            due += rng.expovariate(rate)
        await asyncio.gather(*tasks)
        await sampler
    return zero_wall


def wait_for_servers(stats: int, count: int, timeout: float) -> None:
    import base64
    import json
    import urllib.request
    request = urllib.request.Request(
        f"http://127.0.0.1:{stats}/api/backends/app",
        headers={"Authorization": "Basic "
                 + base64.b64encode(":".join(AUTH).encode()).decode()})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                servers = json.load(response)["servers"]
            if sum(s["state"] == "UP" for s in servers) >= count:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"fewer than {count} servers UP after {timeout:g}s")


def decisions(path: Path) -> list[dict[str, Any]]:
    import json
    found = []
    for line in path.read_text().splitlines():
        if '"decision"' in line:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def live_run(trace: Trace, config: str, args: argparse.Namespace, seed: int,
             workdir: Path) -> Run:
    from datetime import datetime

    import uvloop

    from bench.harness import Proc
    from lbproxy.autoscale.providers.base import STATE_DIR_ENV
    workdir.mkdir(parents=True)
    path, port, stats = write_config(workdir, config, args)
    os.environ[STATE_DIR_ENV] = str(workdir)     # the autoscaler's state file: ours alone
    seconds = [Second(i, trace.rate(i + 0.5)) for i in range(int(trace.duration))]
    load_average = os.getloadavg()[0]
    with Proc("lbproxy", [sys.executable, "-m", "lbproxy", "run", "-c", str(path)],
              workdir) as proxy:
        proxy.wait_for_port(port)
        scaler = Proc("autoscaler", [sys.executable, "-m", "lbproxy", "autoscale", "-c",
                                     str(path)], workdir).start()
        try:
            wait_for_servers(stats, 1, 30.0)
            zero = uvloop.run(drive(port, stats, trace, args.warmup, seed, seconds))
        finally:
            scaler.stop(timeout=30)
    logged = decisions(scaler.stdout_path)

    def at(d: dict[str, Any]) -> float:
        return datetime.fromisoformat(d["time"]).timestamp() - zero

    warm = [d for d in logged if -args.warmup <= at(d) < 0 and d["action"] != "none"]
    ups = [at(d) for d in logged if d["action"] == "scale_up" and at(d) >= 0]
    return Run(trace.name, config, seconds, len(warm), ups[0] if ups else None,
               load_average, workdir)


# --- the forecast replay ----------------------------------------------------------------

def replay(trace: Trace, piecewise: bool, seeds: int = 50, interval: float = 2.0,
           window: float = 30.0, horizon: float = 10.0) -> dict[str, float]:
    """The forecast alone on seeded Poisson samples of the trace (after a 30 s warm-up)."""
    from lbproxy.autoscale.forecast import forecast

    def rate(t: float) -> float:
        return BASE if t < 0 else trace.rate(t)

    flat = trusted_flat = 0
    first, late, over = [], [], []
    need = math.ceil(PEAK / TARGET)
    ramp_start, plateau = trace.ramp
    for seed in range(seeds):
        rng = random.Random(seed)
        samples: list[tuple[float, float]] = []
        found, last_rise, too_many = None, 0.0, 0.0
        t = -30.0 + rng.uniform(0, interval)
        while t < trace.duration:
            mean = (rate(t - interval) + rate(t)) / 2 * interval
            count = max(0, round(rng.gauss(mean, math.sqrt(mean))))
            samples.append((t, count / interval))
            recent = [s for s in samples if s[0] >= t - window]
            verdict = forecast(recent, t, window=window, horizon=horizon, min_r2=0.6,
                               min_fill=0.5, confidence=0.95, piecewise=piecewise)
            if t < ramp_start or trace.fall_end + window <= t:    # a flat window
                flat += 1
                trusted_flat += verdict.direction != "none"
            if verdict.direction == "rising" and verdict.low is not None:
                if found is None and t >= ramp_start:
                    found = t - ramp_start
                if plateau <= t < trace.plateau_end:
                    last_rise = t - plateau
                    too_many += max(0, math.ceil(verdict.low / TARGET) - need) * interval
            t += interval
        first.append(found if found is not None else math.inf)
        late.append(last_rise)
        over.append(too_many)
    return {"flat": 100 * trusted_flat / max(1, flat), "first": statistics.median(first),
            "late": statistics.median(late), "late_max": max(late),
            "over": statistics.median(over), "over_max": max(over)}


# --- the report -------------------------------------------------------------------------

def spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    middle = statistics.median(values)
    if len(values) == 1:
        return format(middle, fmt)
    return f"{format(middle, fmt)} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def plot(runs: list[Run], trace: Trace, slo: float, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(10, 7))
    configs = list(dict.fromkeys(r.config for r in runs))
    for config in configs:
        mine = sorted((r for r in runs if r.config == config), key=lambda r: r.server_seconds)
        run = mine[len(mine) // 2]                   # the median run by server-seconds
        t = [s.t for s in run.seconds]
        servers = [statistics.fmean(s.servers) if s.servers else math.nan for s in run.seconds]
        line, = ax1.step(t, servers, where="post",
                         label=f"{config} ({run.server_seconds:.0f} server-s)")
        ax2.plot(t, [1000 * (s.p95 if s.p95 is not None else math.nan) for s in run.seconds],
                 color=line.get_color(), label=f"{config} (SLO kept "
                                               f"{100 * run.slo_kept(slo):.1f}%)")
    rate = ax1.twinx()
    t = [i + 0.5 for i in range(int(trace.duration))]
    rate.fill_between(t, [trace.rate(x) for x in t], color="grey", alpha=0.15)
    rate.set_ylabel("offered req/s (grey)")
    ax1.plot(t, [min(MAX_SERVERS, math.ceil(trace.rate(x) / TARGET)) for x in t],
             color="grey", linestyle=":", label=f"ceil(rate / {TARGET:g})")
    ax1.set_ylabel("servers in the backend")
    ax1.legend(loc="upper left", fontsize="small")
    ax2.axhline(1000 * slo, color="red", linestyle="--", label="SLO")
    ax2.set_yscale("log")
    ax2.set_ylabel("client p95 per second (ms)")
    ax2.set_xlabel("seconds")
    ax2.legend(loc="upper right", fontsize="small")
    fig.suptitle(f"lbproxy autoscale, {trace.name} trace: the median run of each "
                 f"configuration")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.autoscale",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration")
    parser.add_argument("--traces", default="day,steep", help="day, steep or both")
    parser.add_argument("--configs", default="reactive,predictive,hpa",
                        help=f"some of: {', '.join(CONFIGS)}")
    parser.add_argument("--down-step", type=int, default=2,
                        help="scale_down.max_step of reactive and predictive")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds at 30 req/s first")
    parser.add_argument("--slo", type=float, default=0.1, help="p95 objective, seconds")
    parser.add_argument("--service", type=float, default=SERVICE,
                        help="seconds per request in an app server")
    parser.add_argument("--quick", action="store_true",
                        help="one run of reactive and predictive on the day trace")
    parser.add_argument("--output", type=Path, default=None, help="Markdown report path")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.traces, args.configs = 1, "day", "reactive,predictive"
    traces = [TRACES[name] for name in args.traces.split(",")]
    configs = args.configs.split(",")
    for config in configs:
        if config not in CONFIGS:
            parser.error(f"unknown configuration {config!r}")

    import tempfile

    from bench.harness import machine_info
    from bench.report import RESULTS, now_utc
    info = machine_info()
    output = args.output or RESULTS / "autoscale.md"
    root = Path(tempfile.mkdtemp(prefix="lbproxy-bench-autoscale-"))
    runs: list[Run] = []
    for trace in traces:
        for run in range(args.runs):
            for config in configs:
                print(f"-- {trace.name} {config} run {run + 1}/{args.runs} "
                      f"(load average {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
                runs.append(live_run(trace, config, args, seed=run,
                                     workdir=root / f"{trace.name}-{config}-{run + 1}"))
    loads = [r.load_average for r in runs]

    lines = [f"# Autoscaling through a compressed day ({now_utc()})", "",
             f"App servers serve one request at a time in {args.service * 1000:g} ms "
             f"({1 / args.service:.0f} req/s each); min 1, max {MAX_SERVERS}, "
             f"`requests_per_second_per_server` target {TARGET:g}; open-loop Poisson load "
             f"after {args.warmup:g} s at {BASE:g} req/s; SLO: p95 of each second "
             f"<= {args.slo * 1000:g} ms. Median (min–max) over {args.runs} run(s) per "
             "configuration, runs interleaved. Server-seconds count every server in the "
             "backend (starting, up or draining) over the trace. Scale-down max_step of "
             f"reactive and predictive: {args.down_step}. `python -m bench.autoscale --help` "
             "says how each configuration is set.", ""]
    for trace in traces:
        lines += [f"## {trace.name} trace ({trace.duration:g} s)", "",
                  "| configuration | SLO kept | errors | server-seconds | first scale-up | "
                  "servers at the end | actions in warm-up |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for config in configs:
            mine = [r for r in runs if r.trace == trace.name and r.config == config]
            firsts = [r.first_up for r in mine if r.first_up is not None]
            lines.append(
                f"| {config} | {spread([100 * r.slo_kept(args.slo) for r in mine], '.1f')} % | "
                f"{' / '.join(str(r.errors) for r in mine)} | "
                f"{spread([r.server_seconds for r in mine], '.0f')} | "
                f"{spread(firsts, '.1f')} s | "
                f"{spread([float(r.servers_at_end) for r in mine], '.0f')} | "
                f"{sum(r.warmup_actions for r in mine)} |")
        image = output.parent / (f"{output.stem}.png" if trace.name == "day"
                                 else f"{output.stem}-{trace.name}.png")
        if plot([r for r in runs if r.trace == trace.name], trace, args.slo, image):
            lines += ["", f"![{trace.name} trace]({image.name})"]
        lines.append("")

    lines += ["## The forecast alone: piecewise trend against the plain line fit", "",
              "Replayed on 50 seeded Poisson series of each trace, 2 s samples, window 30 s, "
              "horizon 10 s, min_r2 0.6, min_fill 0.5, confidence 0.95 (no processes). "
              "*Flat noise trusted*: windows of the flat parts showing a trusted trend; "
              "*ramp trusted after*: from the start of the rise to the first trusted "
              "rising trend; *rise still trusted*: from the start of the plateau to the "
              "last trusted rising trend on it (median, max); *server-seconds too many*: "
              f"ceil(forecast_low / {TARGET:g}) - {math.ceil(PEAK / TARGET)} summed over "
              "the plateau (× 2 s), before the max of 8 (median, max). Flat windows: "
              "before the rise (the first 30 s are the warm-up).", "",
              "| trace | trend | flat noise trusted | ramp trusted after | "
              "rise still trusted | server-seconds too many |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    for trace in TRACES.values():
        for name, piecewise in (("linear", False), ("piecewise", True)):
            r = replay(trace, piecewise)
            lines.append(f"| {trace.name} | {name} | {r['flat']:.1f} % | {r['first']:.0f} s | "
                         f"{r['late']:.0f} s ({r['late_max']:.0f}) | "
                         f"{r['over']:.0f} ({r['over_max']:.0f}) |")
    lines += ["", "Machine:", "",
              *(f"- {key}: {value}" for key, value in info.items()
                if key in ("CPU", "cores", "Python", "uvloop", "aiohttp")),
              f"- load average (1 min) at the start of the runs: {min(loads):.2f}–"
              f"{max(loads):.2f}; after the last: {os.getloadavg()[0]:.2f}",
              f"- configs, decision logs: {root}", ""]
    report = "\n".join(lines)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    print(report)


def serve_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.autoscale serve")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--service", type=float, default=SERVICE)
    args = parser.parse_args(argv)
    try:
        import uvloop
        uvloop.run(serve(args.port, args.service))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve_main(sys.argv[2:])
    else:
        main()
