"""A server dying under load: the errors clients see and p99 around the event, per health setup.

Four demo backends behind lbproxy (round robin, `retries: 3`, `redispatch: true`) under a
steady closed-loop GET load (built-in client, which keeps every outcome with its time);
`--kill-at` seconds into the run app2 is killed with SIGKILL, as a crashed host would
vanish. Each setup starts afresh (new backends, new lbproxy):

- no retries: `retries: 0`, no checks: what clients would see with no protection at all;
- no health checks: retries and redispatch only;
- passive: `passive: {max_fails: 3, fail_timeout: 10s}` ejects the server from real traffic;
- active + passive: also `health_check` on /health every 500 ms, `fall: 2`.

Errors are non-2xx/3xx replies plus failed connections; "p99 in event" is over the
`--window` seconds after the kill; "last error" is when, after the kill, the last one came.

    python -m bench.failover [--quick] [--duration 10] [--kill-at 3] [--window 2] [--connections 32]

Writes bench/results/failover.md and failover.png.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import Cpus, Proc, Session, add_common_options, free_port, noted, start_backends, start_checked
from bench.loadgen import LoadResult, Samples, Variety, run_load
from bench.report import RESULTS, Report, now_utc
from bench.targets import lbproxy_argv, lbproxy_config

RETRIES = {"retries": 3, "redispatch": True}
PASSIVE = {"passive": {"max_fails": 3, "fail_timeout": "10s"}}
ACTIVE = {"health_check": {"type": "http", "path": "/health", "interval": "500ms", "timeout": "300ms",
                           "rise": 2, "fall": 2}}
SETUPS: dict[str, dict[str, Any]] = {
    "no retries, no checks": {"retries": 0, "redispatch": False},
    "no health checks": RETRIES,
    "passive": {**RETRIES, **PASSIVE},
    "active + passive": {**RETRIES, **PASSIVE, **ACTIVE},
}
VICTIM = 1                 # app2: not the first server, whose position some algorithms favour
BUCKET = 0.1               # seconds per point of the plot's time line


@dataclass(frozen=True)
class Row:
    setup: str
    load: LoadResult
    samples: Samples
    killed_at: float       # seconds since samples.origin

    def after_kill(self, window: float) -> Samples:
        return self.samples.window(self.killed_at, self.killed_at + window)

    def last_error_after_kill(self) -> float:
        errors = [at for at, status in zip(self.samples.at, self.samples.status)
                  if at >= self.killed_at and not 200 <= status < 400]
        return errors[-1] - self.killed_at if errors else math.nan

    def error_kinds(self) -> str:
        """"502×7, conn×1": the errors by status, failed connections as `conn`."""
        kinds = Counter("conn" if status == 0 else str(status) for status in self.samples.status
                        if not 200 <= status < 400)
        return ", ".join(f"{kind}×{count}" for kind, count in sorted(kinds.items())) or "–"


@dataclass
class Bench:
    """One run's settings and what it has gathered so far."""

    args: argparse.Namespace
    cpus: Cpus
    workdir: Path
    rows: list[Row]
    notes: list[str]

    def run(self, setup: str, backend_config: dict[str, Any]) -> None:
        with noted(self.notes, setup) as stack:
            backends = start_backends(stack, self.workdir, [self.args.latency_ms / 1000] * 4, self.cpus.backend)
            port = free_port()
            config = lbproxy_config(port, [backend.port for backend in backends], backend=backend_config)
            start_checked(stack, "lbproxy", lbproxy_argv(self.workdir, config), self.workdir, self.cpus.proxy, port)
            self.rows.append(self._measure(setup, f"http://127.0.0.1:{port}/", backends[VICTIM].proc))

    def _measure(self, setup: str, url: str, victim: Proc) -> Row:
        args = self.args
        if args.warmup > 0:
            run_load(url, args.connections, args.warmup, self.cpus.loadgen, "builtin")
        samples_path = self.workdir / "samples.json"
        result: list[LoadResult | BaseException] = []

        def load() -> None:
            try:
                result.append(run_load(url, args.connections, args.duration, self.cpus.loadgen, "builtin",
                                       Variety(samples=samples_path)))
            except BaseException as exc:      # handed to the main thread below
                result.append(exc)

        thread = threading.Thread(target=load, name="failover-load")
        thread.start()
        time.sleep(args.kill_at)
        victim.kill()
        killed = time.time()
        thread.join()
        if isinstance(result[0], BaseException):
            raise result[0]
        samples = Samples.load(samples_path)
        return Row(setup, result[0], samples, killed - samples.origin)


def report(bench: Bench, command: str, info: dict[str, str]) -> Report:
    args = bench.args
    window = args.window
    page = Report(
        "A server killed under load",
        [f"`{command}` on {now_utc()}: {args.duration:g} s of load after a {args.warmup:g} s warm-up, "
         f"{args.connections} keep-alive connections (closed loop, built-in client) sending `GET /` through "
         f"lbproxy (round robin) to 4 demo backends answering in {args.latency_ms:g} ms; app2 gets SIGKILL "
         f"about {args.kill_at:g} s into the run. Each setup starts with fresh processes.",
         f"{bench.cpus.describe()} Errors: non-2xx/3xx replies and failed connections. "
         f"p99 in event: replies in the {window:g} s after the kill. Last error: seconds from the kill to the "
         "last error of the run."],
        ["setup", "rps", "p99 ms before", f"p99 ms in event ({window:g} s)", "errors", "errors in event",
         "last error s", "errors by kind"],
        "lrrrrrrl", notes=bench.notes, info=info)
    for row in bench.rows:
        before, event = row.samples.window(0.0, row.killed_at), row.after_kill(window)
        last = row.last_error_after_kill()
        page.rows.append([row.setup, f"{row.load.rps:,.0f}", f"{before.percentile_ms(0.99):.1f}",
                          f"{event.percentile_ms(0.99):.1f}", str(row.load.errors), str(event.errors),
                          "–" if math.isnan(last) else f"{last:.2f}", row.error_kinds()])
    return page


def plot(bench: Bench) -> Any:
    def draw(pyplot: Any) -> Any:
        figure, (errors_axes, p99_axes) = pyplot.subplots(2, 1, figsize=(10, 6), sharex=True)
        for row in bench.rows:
            starts, errors, p99s = _timeline(row)
            errors_axes.plot(starts, errors, label=row.setup)
            p99_axes.plot(starts, p99s, label=row.setup)
        errors_axes.set_ylabel(f"errors per {BUCKET * 1000:g} ms")
        p99_axes.set_ylabel(f"p99 per {BUCKET * 1000:g} ms, ms")
        p99_axes.set_xlabel("seconds since app2 was killed")
        for axes in (errors_axes, p99_axes):
            axes.axvline(0, color="grey", linestyle="--")
        errors_axes.legend()
        figure.suptitle("Errors and p99 around a server's death")
        return figure
    return draw


def _timeline(row: Row) -> tuple[list[float], list[int], list[float]]:
    """Per BUCKET of the run, aligned on the kill: its start (relative to the kill), errors and p99."""
    starts, errors, p99s = [], [], []
    end = max(row.samples.at, default=0.0)
    for index in range(-int(row.killed_at / BUCKET), int((end - row.killed_at) / BUCKET) + 1):
        start = row.killed_at + index * BUCKET
        bucket = row.samples.window(start, start + BUCKET)
        starts.append(index * BUCKET)
        errors.append(bucket.errors)
        p99s.append(bucket.percentile_ms(0.99))
    return starts, errors, p99s


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.split("\n")[0])
    add_common_options(parser, duration=10.0, quick=5.0, output=RESULTS / "failover.md", loadgen=False)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=10.0, help="every backend's latency (default 10)")
    parser.add_argument("--kill-at", type=float, default=None, help="seconds into the run (default 30%%)")
    parser.add_argument("--window", type=float, default=2.0, help="seconds after the kill that count as the event")
    args = parser.parse_args(argv)
    if args.kill_at is None:
        args.kill_at = 0.3 * args.duration
    if not 0 < args.kill_at < args.duration:
        parser.error("--kill-at must fall within the run")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with Session.open("bench.failover", argv) as run:
        bench = Bench(args, run.cpus, run.workdir, [], [])
        for setup, backend_config in SETUPS.items():
            run.step(setup)
            bench.run(setup, backend_config)
    report(bench, run.command, run.info).publish(args.output, plot(bench))


if __name__ == "__main__":
    main()
