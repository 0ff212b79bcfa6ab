"""Scale-up and scale-down under a load ramp: servers, rps and p95 over time.

Starts lbproxy (runtime API on, an empty `app` backend with health checks) and
`lbproxy autoscale` with the process provider (demo backends, min 1), then offers an
open-loop load from this process: BASE req/s, a ramp to 5 × BASE, a hold, a ramp back
and a hold. Every second it records the offered and achieved rate, the client-side p95
and the number of servers taking traffic (read from the runtime API, as an operator
would). It prints and writes to results/autoscale.md:
- SLO kept: the share of seconds whose p95 is within --slo;
- errors: failed or non-2xx requests (must be 0: scaling never fails a request);
- time to converge: from the end of each ramp until the server count reaches the count
  the policy's target calls for at the new rate (and stays there).
and plots the three series to results/autoscale.png (needs matplotlib).

    python -m bench.autoscale [--quick] [--base 60] [--target 40] [--slo 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

from bench.harness import REPO, Proc, free_port
from lbproxy.autoscale.providers.base import STATE_DIR_ENV

RESULTS = REPO / "bench" / "results"
AUTH = ("admin", "bench")
MAX_IN_FLIGHT = 500     # an open-loop client must still be bounded
REQUEST_TIMEOUT = 5.0


@dataclass
class Second:
    t: float
    offered: float
    done: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    servers: int = 0

    @property
    def p95(self) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def schedule(base: float, phase: float) -> list[tuple[float, float, float]]:
    """(start, end, rate at start → rate at end) phases of the 1 → 5 → 1 ramp."""
    rates = [(base, base), (base, 5 * base), (5 * base, 5 * base), (5 * base, base), (base, base)]
    return [(i * phase, (i + 1) * phase, *r) for i, r in enumerate(rates)]


def rate_at(phases: list[tuple[float, float, float, float]], t: float) -> float:
    for start, end, r0, r1 in phases:
        if start <= t < end:
            return r0 + (r1 - r0) * (t - start) / (end - start)
    return 0.0


def write_configs(workdir: Path, args: argparse.Namespace) -> tuple[Path, int, int]:
    port, stats = free_port(), free_port()
    low = free_port()
    config = {
        "global": {"log": {"format": "off"}},
        "stats": {"bind": f"127.0.0.1:{stats}", "admin": True,
                  "auth": {"username": AUTH[0], "password": AUTH[1]}},
        "frontends": {"web": {"bind": [f"127.0.0.1:{port}"], "default_backend": "app"}},
        "backends": {"app": {"balance": "leastconn", "health_check": {
            "path": "/health", "interval": "500ms", "rise": 1, "fall": 2}}},
        "autoscale": {"api": {"url": f"http://127.0.0.1:{stats}", "username": AUTH[0],
                              "password": AUTH[1]},
                      "pools": {"app": {
                          "provider": {"command": f"{sys.executable} -m lbproxy.demo.backend "
                                                  f"--port {{port}} --latency {args.latency}",
                                       "ports": f"{low}-{low + 50}"},
                          "min": 1, "max": 10, "interval": "1s",
                          "metrics": [{"type": "requests_per_second_per_server",
                                       "target": args.target},
                                      {"type": "response_time_p95", "target": args.slo}],
                          "scale_up": {"cooldown": "3s", "max_step": 4},
                          "scale_down": {"cooldown": "5s", "stabilization": "10s",
                                         "max_step": 2},
                          "drain_timeout": "5s"}}},
    }
    path = workdir / "autoscale.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port, stats


async def drive(port: int, stats: int, phases: list, seconds: list[Second]) -> None:
    """Offer the load, one task per request, and sample the server count every second."""
    auth = {"Authorization": "Basic " + base64.b64encode(":".join(AUTH).encode()).decode()}
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        gate = asyncio.Semaphore(MAX_IN_FLIGHT)
        start = time.monotonic()
        end = phases[-1][1]

        async def one(second: Second) -> None:
            sent = time.monotonic()
            try:
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, OSError, TimeoutError):
                ok = False
            finally:
                gate.release()
            second.done += ok
            second.errors += not ok
            if ok:
                second.latencies.append(time.monotonic() - sent)

        async def sample() -> None:
            while (now := time.monotonic() - start) < end:
                try:
                    async with session.get(f"http://127.0.0.1:{stats}/api/backends/app",
                                           headers=auth) as response:
                        servers = (await response.json())["servers"]
                    seconds[min(int(now), len(seconds) - 1)].servers = sum(
                        s["state"] == "UP" for s in servers)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                    pass
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample())
        tasks, due = set(), 0.0
        while (now := time.monotonic() - start) < end:
            rate = rate_at(phases, now)
            if rate > 0 and now >= due:
                await gate.acquire()
                task = asyncio.create_task(one(seconds[int(now)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                due = max(due + 1 / rate, now - 0.1)
            await asyncio.sleep(max(0.0, min(due - (time.monotonic() - start), 0.01)))
        await asyncio.gather(*tasks)
        await sampler


def converge(seconds: list[Second], since: float, want: int) -> float | None:
    """Seconds from `since` until the server count reaches `want` and keeps it."""
    after = [s for s in seconds if s.t >= since]
    for i, s in enumerate(after):
        if all(x.servers == want for x in after[i:i + 5]):
            return s.t - since
    return None


def plot(seconds: list[Second], slo: float, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    t = [s.t for s in seconds]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, sharex=True, figsize=(9, 8))
    ax1.step(t, [s.servers for s in seconds], where="post")
    ax1.set_ylabel("servers UP")
    ax2.plot(t, [s.offered for s in seconds], label="offered")
    ax2.plot(t, [s.done for s in seconds], label="achieved")
    ax2.set_ylabel("requests/s")
    ax2.legend()
    ax3.plot(t, [1000 * (s.p95 or math.nan) for s in seconds], label="client p95")
    ax3.axhline(1000 * slo, color="red", linestyle="--", label="SLO")
    ax3.set_ylabel("p95 (ms)")
    ax3.set_xlabel("seconds")
    ax3.legend()
    fig.suptitle("lbproxy autoscale: 1x -> 5x -> 1x ramp")
    fig.tight_layout()
    fig.savefig(path)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=float, default=60.0, help="1x rate, requests/s")
    parser.add_argument("--target", type=float, default=40.0, help="rps per server target")
    parser.add_argument("--slo", type=float, default=0.1, help="p95 objective, seconds")
    parser.add_argument("--latency", type=float, default=0.005, help="demo backend latency")
    parser.add_argument("--phase", type=float, default=20.0, help="seconds per ramp phase")
    parser.add_argument("--quick", action="store_true", help="10 s phases")
    args = parser.parse_args(argv)
    phase = 10.0 if args.quick else args.phase
    phases = schedule(args.base, phase)
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="lbproxy-bench-autoscale-"))   # configs and logs
    config, port, stats = write_configs(workdir, args)
    os.environ[STATE_DIR_ENV] = str(workdir)     # the autoscaler's state file: ours alone
    seconds = [Second(float(i), rate_at(phases, i + 0.5)) for i in range(int(phases[-1][1]))]
    with Proc("lbproxy", [sys.executable, "-m", "lbproxy", "run", "-c", str(config)],
              workdir) as proxy:
        proxy.wait_for_port(port)
        scaler = Proc("autoscaler", [sys.executable, "-m", "lbproxy", "autoscale", "-c",
                                     str(config)], workdir).start()
        try:
            time.sleep(3.0)         # min servers up and health-checked
            asyncio.run(drive(port, stats, phases, seconds))
        finally:
            scaler.stop(timeout=30)
    # Where the target policy settles: the fewest servers within its 10 % tolerance.
    want = {rate: max(1, math.ceil(rate / (args.target * 1.1))) for rate in
            (args.base, 5 * args.base)}
    measured = [s for s in seconds if s.p95 is not None]
    kept = sum(s.p95 <= args.slo for s in measured) / max(1, len(measured))
    errors = sum(s.errors for s in seconds)
    up = converge(seconds, 2 * phase, want[5 * args.base])
    down = converge(seconds, 4 * phase, want[args.base])
    decisions = [json.loads(line) for line in scaler.stdout_path.read_text().splitlines()
                 if '"decision"' in line]
    lines = [
        f"# autoscale ramp {args.base:g} -> {5 * args.base:g} -> {args.base:g} req/s",
        "",
        f"- target {args.target:g} req/s per server, SLO p95 <= {args.slo * 1000:g} ms",
        f"- requests: {sum(s.done for s in seconds)} ok, {errors} errors",
        f"- SLO kept: {100 * kept:.1f}% of {len(measured)} seconds",
        f"- servers: max {max(s.servers for s in seconds)}, "
        f"{sum(d['action'] != 'none' for d in decisions)} scaling decisions",
        f"- time to converge: up to {want[5 * args.base]} servers "
        f"{'%.0f s' % up if up is not None else 'not reached'} after the ramp, "
        f"down to {want[args.base]} {'%.0f s' % down if down is not None else 'not reached'}",
    ]
    if plot(seconds, args.slo, RESULTS / "autoscale.png"):
        lines.append("- plot: bench/results/autoscale.png")
    lines.append(f"- configs and logs: {workdir}")
    report = "\n".join(lines) + "\n"
    (RESULTS / "autoscale.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
