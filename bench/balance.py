"""Balancing scenarios: client-side p99 and each server's share, per algorithm.

Four backends behind lbproxy, driven by a closed loop of keep-alive connections (the
built-in client: each connection from its own 127.0.1.x source address, requests cycling
through 64 paths, so `source` and `uri` hashing spread as they would in real traffic).

- `static` (issue 4): app4 is `--slow-factor` times slower than the others, all run long.
  Every algorithm; fast servers at 10 ms with 32 connections (at 2 ms, 32 connections ask
  several times what one lbproxy process serves and p99 would measure its queue).
- `moving` (issue 19): one server is slow and which one moves every `--period` (2 s):
  app1, app2, app3, app4, app1... Also reports the share of requests that went to the
  server that was slow at the time.
- `recovery` (issue 19): app4 is slow until 40 % into the measured run, then as fast as
  the others; reports when its share came back (first 200 ms window after the recovery
  in which it got at least 80 % of a fair share).
- `failfast` (issue 19): app4 answers 500 after 1 ms: errors must not look cheap.
- `uniform` (issue 19): four equal servers; the reference is round robin itself.

The dynamic scenarios follow the issue: 5 ms servers, the slow one 10× slower, 16
connections, a 2 s warm-up (the slow server already moves during it). The "oracle" is
round robin over three always-fast servers: what a balancer that knew which server to
avoid could reach. p99 / oracle is what the bad server costs clients through an
algorithm; least_response_time's targets are ≤ 1.1 (static) and ≤ 1.5 (moving).

Backends are the demo app (`lbproxy.demo.backend`'s App) with two behaviours, switched by
SIGUSR1 (the slow or failing one) and SIGUSR2 (normal); a conductor thread sends the
signals on the scenario's schedule and reads every backend's request counter each 100 ms,
which gives the share over time. `--repeat N` runs every algorithm N times, interleaved,
and reports the median and range of p99 / oracle (each repeat against its own oracle).
`--baseline DIR` adds a least_response_time row run from the lbproxy package in DIR (a
`git archive` of another commit), for a before/after in the same run.

    python -m bench.balance [--scenario static,moving,recovery,failfast,uniform] [--repeat 3]
        [--quick] [--duration 10] [--connections N] [--fast-ms MS] [--slow-factor F]
        [--period 2] [--algorithms roundrobin,leastconn,...] [--baseline DIR]

Writes bench/results/balance.md (static) and balance_<scenario>.md (others), each with a PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import random
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from bench.harness import (Backend, Cpus, Proc, Session, add_common_options, choose, free_port, noted,
                           start_checked)
from bench.loadgen import LoadResult, Samples, Variety, run_load
from bench.report import RESULTS, Report, now_utc
from bench.targets import lbproxy_argv, lbproxy_config
from lbproxy.demo.backend import App, DemoProtocol

ALGORITHMS = ["roundrobin", "static-rr", "leastconn", "first", "source", "uri", "random", "least_response_time"]
DYNAMIC_ALGORITHMS = ["roundrobin", "leastconn", "random", "least_response_time"]
LRT = "least_response_time"
BASELINE = "least_response_time (baseline)"
ORACLE = "oracle (roundrobin, 3 always-fast servers)"
PATHS = 64                 # distinct URIs: enough for `uri` hashing to reach every server
SAMPLE_EVERY = 0.1         # seconds between two readings of the backends' counters
RECOVER_AT = 0.4           # recovery: app4 recovers this far into the measured run
SHARE_WINDOW = 0.2         # recovery: the share is "back" in the first window this long...
SHARE_BACK = 0.8           # ...in which app4 gets this fraction of a fair share
FAIL_LATENCY = 0.001       # failfast: app4's 500s take 1 ms


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    fast_ms: float
    connections: int
    warmup: float
    algorithms: list[str]
    oracle: bool = True                      # uniform: round robin itself is the reference
    target: float | None = None              # least_response_time's p99 / oracle target


SCENARIOS = {s.name: s for s in [
    Scenario("static", "Balancing with one slow server", 10.0, 32, 1.0, ALGORITHMS, target=1.1),
    Scenario("moving", "Balancing with a slow server that moves", 5.0, 16, 2.0, DYNAMIC_ALGORITHMS, target=1.5),
    Scenario("recovery", "Balancing while a slow server recovers", 5.0, 16, 2.0, DYNAMIC_ALGORITHMS),
    Scenario("failfast", "Balancing with a server that fails fast", 5.0, 16, 2.0, DYNAMIC_ALGORITHMS),
    Scenario("uniform", "Balancing over equal servers", 5.0, 16, 2.0, DYNAMIC_ALGORITHMS, oracle=False),
]}


# backends with two behaviours

def backend_main(argv: list[str]) -> None:
    """`python -m bench.balance backend ...`: a demo app server that SIGUSR1 switches to its
    alternative behaviour (--alt-latency, --alt-error-rate) and SIGUSR2 back."""
    parser = argparse.ArgumentParser(prog="python -m bench.balance backend")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--latency", type=float, required=True)
    parser.add_argument("--alt-latency", type=float, required=True)
    parser.add_argument("--alt-error-rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    uvloop.run(_serve_backend(args))


async def _serve_backend(args: argparse.Namespace) -> None:
    normal, alternative = (args.latency, 0.0), (args.alt_latency, args.alt_error_rate)
    app = App(args.name, args.latency, 0.0, random.Random(0))
    loop = asyncio.get_running_loop()
    connections: set[DemoProtocol] = set()
    server = await loop.create_server(lambda: DemoProtocol(app, connections), "127.0.0.1", args.port,
                                      backlog=1024)

    def switch(behaviour: tuple[float, float]) -> None:
        app.latency, app.error_rate = behaviour

    loop.add_signal_handler(signal.SIGUSR1, switch, alternative)
    loop.add_signal_handler(signal.SIGUSR2, switch, normal)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def start_switchable(stack: Any, workdir: Path, fast: float, alternative: tuple[float, float],
                     cpus: str | None) -> list[Backend]:
    backends = []
    for i in range(1, 5):
        name, port = f"app{i}", free_port()
        argv = [sys.executable, "-m", "bench.balance", "backend", "--port", str(port), "--name", name,
                "--latency", str(fast), "--alt-latency", str(alternative[0]),
                "--alt-error-rate", str(alternative[1])]
        backends.append(Backend(name, port, stack.enter_context(Proc(name, argv, workdir, cpus))))
    for backend in backends:
        backend.proc.wait_for_port(backend.port)
    return backends


class Conductor(threading.Thread):
    """Switches backends on a schedule of (wall time, backend index, alternative?) and reads
    their request counters every SAMPLE_EVERY s (keep-alive, /_stats is not counted)."""

    def __init__(self, backends: list[Backend], cpus: str | None) -> None:
        super().__init__(name="balance-conductor", daemon=True)
        self.backends, self.cpus = backends, cpus
        self.plan: list[tuple[float, int, bool]] = []
        self.switches: list[tuple[float, int, bool]] = []    # what was done, when
        self.samples: list[tuple[float, list[int]]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()

    def switch(self, index: int, alternative: bool) -> None:
        os.kill(self.backends[index].proc.pid, signal.SIGUSR1 if alternative else signal.SIGUSR2)
        self.switches.append((time.time(), index, alternative))

    def schedule(self, events: list[tuple[float, int, bool]]) -> None:
        with self._lock:
            self.plan = sorted(self.plan + events)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def run(self) -> None:
        if self.cpus:                       # this thread only: it must not take the proxy's CPU
            os.sched_setaffinity(0, {int(cpu) for cpu in self.cpus.split(",")})
        connections = [http.client.HTTPConnection("127.0.0.1", b.port, timeout=5) for b in self.backends]
        next_sample = time.time()
        while True:
            with self._lock:
                upcoming = self.plan[0][0] if self.plan else next_sample
            if self._done.wait(max(0.0, min(upcoming, next_sample) - time.time())):
                break
            now = time.time()
            with self._lock:
                due = [event for event in self.plan if event[0] <= now]
                self.plan = self.plan[len(due):]
            for _, index, alternative in due:
                self.switch(index, alternative)
            if now >= next_sample:
                self.samples.append((now, [_requests(connection) for connection in connections]))
                next_sample += SAMPLE_EVERY
        for connection in connections:
            connection.close()


def _requests(connection: http.client.HTTPConnection) -> int:
    connection.request("GET", "/_stats")
    return int(json.loads(connection.getresponse().read())["requests"])


# runs and what they measured

@dataclass
class Row:
    name: str
    repeat: int
    load: LoadResult
    shares: list[float]                                # over the run, from the counters
    timeline: list[tuple[float, list[int]]]            # (s since the run began, requests per backend)
    switches: list[tuple[float, int, bool]]            # (s since the run began, backend, alternative)
    load_average: float

    def share_series(self) -> tuple[list[float], list[list[float]]]:
        """Window midpoints and each backend's share of the requests answered in the window."""
        times, shares = [], []
        for (t0, c0), (t1, c1) in zip(self.timeline, self.timeline[1:]):
            counts = [b - a for a, b in zip(c0, c1)]
            total = sum(counts)
            if total:
                times.append((t0 + t1) / 2)
                shares.append([count / total for count in counts])
        return times, shares

    def slow_at(self, t: float) -> int | None:
        """The backend in its alternative behaviour at `t`, if any."""
        current = None
        for at, index, alternative in self.switches:
            if at > t:
                break
            if alternative:
                current = index
            elif current == index:
                current = None
        return current

    def to_slow(self) -> float:
        """Fraction of the requests answered by the backend that was slow at the time."""
        slow = total = 0
        for (t0, c0), (t1, c1) in zip(self.timeline, self.timeline[1:]):
            counts = [b - a for a, b in zip(c0, c1)]
            index = self.slow_at((t0 + t1) / 2)
            total += sum(counts)
            slow += counts[index] if index is not None else 0
        return slow / total if total else float("nan")

    def recovered_after(self) -> float | None:
        """Seconds from app4's recovery to the first SHARE_WINDOW in which it got
        SHARE_BACK of a fair share; None if it never did."""
        app4 = [(at, alternative) for at, index, alternative in self.switches if index == 3]
        recovery = next((at for (_, was), (at, now) in zip(app4, app4[1:]) if was and not now), None)
        if recovery is None:
            return None
        fair = 1 / len(self.shares)
        points = [(t, counts) for t, counts in self.timeline if t >= recovery - SAMPLE_EVERY]
        for i, (t0, c0) in enumerate(points):
            end = next(((t1, c1) for t1, c1 in points[i:] if t1 - t0 >= SHARE_WINDOW - 1e-3), None)
            if end is None:
                return None
            counts = [b - a for a, b in zip(c0, end[1])]
            if sum(counts) and counts[3] / sum(counts) >= SHARE_BACK * fair:
                return max(0.0, t0 - recovery)
        return None


@dataclass
class Bench:
    """One scenario's settings, its backends and what it has gathered so far."""

    scenario: Scenario
    args: argparse.Namespace
    cpus: Cpus
    backends: list[Backend]
    workdir: Path
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fast(self) -> float:
        return self.args.fast_ms / 1000

    def run(self, name: str, balance: str, repeat: int, tree: Path | None = None) -> None:
        backends = self.backends[:3] if name == ORACLE else self.backends
        port = free_port()
        config = lbproxy_config(port, [backend.port for backend in backends], balance=balance)
        argv = lbproxy_argv(self.workdir, config)
        if tree is not None:                 # the lbproxy package in `tree` wins over this one
            argv[1:3] = ["-c", f"import runpy, sys; sys.path.insert(0, {str(tree)!r}); "
                               "runpy.run_module('lbproxy', run_name='__main__', alter_sys=True)"]
        with noted(self.notes, f"{name} (run {repeat + 1})") as stack:
            conductor = Conductor(self.backends, self.cpus.backend)
            for index in range(4):           # all normal while start_checked proves the proxy works
                conductor.switch(index, False)
            start_checked(stack, "lbproxy", argv, self.workdir, self.cpus.proxy, port)
            self.rows.append(self._measure(name, repeat, f"http://127.0.0.1:{port}/", conductor))

    def _measure(self, name: str, repeat: int, url: str, conductor: Conductor) -> Row:
        args, scenario = self.args, self.scenario
        connections = args.connections
        variety = Variety(paths=[f"/item/{i}" for i in range(PATHS)],
                          sources=[f"127.0.1.{i}" for i in range(1, connections + 1)])
        oracle = name == ORACLE              # its three servers stay fast
        began = time.time()
        conductor.schedule([] if oracle else self._schedule(began))
        conductor.start()
        try:
            if args.warmup > 0:              # least_response_time learns the latencies; pools fill
                run_load(url, connections, args.warmup, self.cpus.loadgen, "builtin", variety)
            measured = time.time()
            if scenario.name == "recovery" and not oracle:
                conductor.schedule([(measured + RECOVER_AT * args.duration, 3, False)])
            before = [backend.requests() for backend in self.backends]
            samples_path = self.workdir / "samples.json"
            load = run_load(url, connections, args.duration, self.cpus.loadgen, "builtin",
                            Variety(variety.paths, variety.sources, samples=samples_path))
            served = [backend.requests() - start for backend, start in zip(self.backends, before)]
        finally:
            conductor.stop()
        origin = Samples.load(samples_path).origin
        end = origin + args.duration
        return Row(name, repeat, load, [count / max(sum(served), 1) for count in served],
                   [(t - origin, counts) for t, counts in conductor.samples if origin - 1 <= t <= end + 0.05],
                   [(t - origin, index, alternative) for t, index, alternative in conductor.switches],
                   os.getloadavg()[0])

    def _schedule(self, began: float) -> list[tuple[float, int, bool]]:
        """Switches from the start of the warm-up on (the recovery is added later)."""
        name, args = self.scenario.name, self.args
        if name in ("static", "recovery", "failfast"):
            return [(began, 3, True)]
        if name == "moving":
            events: list[tuple[float, int, bool]] = []
            for k in range(int((args.warmup + args.duration + 30) / args.period) + 1):
                at = began + k * args.period
                if k:
                    events.append((at, (k - 1) % 4, False))
                events.append((at, k % 4, True))
            return events
        return []


# the report

def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _spread(values: list[float], digits: int = 2) -> str:
    if not values or any(math.isnan(v) for v in values):
        return "–"
    middle = f"{_median(values):.{digits}f}"
    return middle if len(values) == 1 else f"{middle} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def ratios(bench: Bench) -> dict[str, tuple[list[float], list[float]]]:
    """Per algorithm: p99 / reference and rps / reference, one of each per repeat."""
    reference = ORACLE if bench.scenario.oracle else "roundrobin"
    by_repeat = {row.repeat: row for row in bench.rows if row.name == reference}
    out: dict[str, tuple[list[float], list[float]]] = {}
    for row in bench.rows:
        ref = by_repeat.get(row.repeat)
        p99s, rpss = out.setdefault(row.name, ([], []))
        if ref is not None:
            p99s.append(row.load.p99_ms / ref.load.p99_ms)
            rpss.append(row.load.rps / ref.load.rps)
    return out


def report(bench: Bench, command: str, info: dict[str, str]) -> Report:
    args, scenario = bench.args, bench.scenario
    names = [backend.name for backend in bench.backends]
    fast, slow = args.fast_ms, args.fast_ms * args.slow_factor
    what = {
        "static": f"{', '.join(names[:3])} answer in {fast:g} ms, app4 in {slow:g} ms.",
        "moving": f"one server answers in {slow:g} ms, the others in {fast:g} ms; the slow one moves every "
                  f"{args.period:g} s (app1, app2, app3, app4, app1...), from the start of the warm-up.",
        "recovery": f"app4 answers in {slow:g} ms until {RECOVER_AT:.0%} into the measured run, then in "
                    f"{fast:g} ms like the others.",
        "failfast": f"app1-app3 answer in {fast:g} ms; app4 answers 500 after {FAIL_LATENCY * 1000:g} ms.",
        "uniform": f"all four answer in {fast:g} ms.",
    }[scenario.name]
    reference = "the oracle (round robin over app1-app3, always fast)" if scenario.oracle else "round robin"
    repeats = f", each algorithm {args.repeat} times interleaved" if args.repeat > 1 else ""
    extra = {"moving": ["to the slow server"], "recovery": ["app4 share back after"]}.get(scenario.name, [])
    page = Report(
        scenario.title,
        [f"`{command}` on {now_utc()}: {args.duration:g} s per run after a {args.warmup:g} s warm-up{repeats}, "
         f"{args.connections} keep-alive connections (closed loop, built-in client, one 127.0.1.x source "
         f"each, {PATHS} paths in turn) through lbproxy to 4 demo backends: {what}",
         f"{bench.cpus.describe()} Shares are each backend's requests over the run (its own counter). "
         f"p99 / ref and rps / ref: against {reference} in the same repeat; with repeats, the median and "
         f"(range). Errors: summed over the repeats. Other columns: medians. Load: the 1-minute load "
         f"average after each run."],
        ["algorithm", "rps", "rps / ref", "p50 ms", "p99 ms", "p99 / ref", *(f"{n} share" for n in names),
         *extra, "errors", "load"],
        "lrrrrr" + "r" * len(names) + "r" * len(extra) + "rr", notes=bench.notes, info=info)
    ratio = ratios(bench)
    for name in dict.fromkeys(row.name for row in bench.rows):
        rows = [row for row in bench.rows if row.name == name]
        cells = [name, f"{_median([r.load.rps for r in rows]):,.0f}", _spread(ratio[name][1]),
                 f"{_median([r.load.p50_ms for r in rows]):.1f}", _spread([r.load.p99_ms for r in rows], 1),
                 _spread(ratio[name][0]),
                 *(f"{_median([r.shares[i] for r in rows]):.1%}" for i in range(len(names)))]
        if scenario.name == "moving":
            cells.append(_spread([100 * r.to_slow() for r in rows], 1) + " %")
        if scenario.name == "recovery":
            after = [r.recovered_after() for r in rows]
            cells.append(", ".join("never" if a is None else f"{a:.1f} s" for a in after))
        cells += [str(sum(r.load.errors for r in rows)), _spread([r.load_average for r in rows], 1)]
        page.rows.append(cells)
    if LRT in ratio and ratio[LRT][0]:
        p99s, rpss = ratio[LRT]
        summary = (f"least_response_time: p99 / {'oracle' if scenario.oracle else 'roundrobin'} "
                   f"**{_spread(p99s)}**, rps / {'oracle' if scenario.oracle else 'roundrobin'} "
                   f"**{_spread(rpss)}**")
        if scenario.target:
            verdict = "meets" if _median(p99s) <= scenario.target else "misses"
            summary += (f"; the median {verdict} issue 19's p99 target of ≤ {scenario.target} "
                        f"(p99 moves between repeats in every row, the oracle's included: see p99 ms)")
        page.notes.insert(0, summary + ".")
    if any(row.name == BASELINE for row in bench.rows):
        page.notes.append(f"{BASELINE}: least_response_time from the lbproxy package in `{args.baseline}`, "
                          "in the same session (before/after).")
    if scenario.name == "static":
        page.notes.append("`first` without `maxconn` sends everything to the first server; `source` and `uri` "
                          "keep a fixed share of sources/paths on the slow server by design.")
    if scenario.name == "recovery":
        page.notes.append(f"\"share back after\": from app4's recovery to the start of the first "
                          f"{SHARE_WINDOW * 1000:.0f} ms window in which it answered ≥ {SHARE_BACK * 25:.0f} % of "
                          f"the requests, per repeat (counters read every {SAMPLE_EVERY * 1000:.0f} ms).")
    page.notes.append(f"Load average after the scenario: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    return page


def plot(bench: Bench) -> Callable[[Any], Any]:
    scenario = bench.scenario

    def bars(axes: Any) -> None:
        ratio = ratios(bench)
        names = [n for n in dict.fromkeys(row.name for row in bench.rows) if ratio[n][0]]
        middle = [_median(ratio[n][0]) for n in names]
        low = [m - min(ratio[n][0]) for m, n in zip(middle, names)]
        high = [max(ratio[n][0]) - m for m, n in zip(middle, names)]
        axes.bar([n.replace(" (", "\n(") for n in names], middle, yerr=[low, high], capsize=4, color="tab:blue")
        axes.axhline(1.0, color="grey", linewidth=0.8)
        if scenario.target:
            axes.axhline(scenario.target, color="tab:red", linestyle="--", linewidth=0.8,
                         label=f"target {scenario.target}")
            axes.legend(loc="upper right")
        axes.set_ylabel("p99 / oracle" if scenario.oracle else "p99 / roundrobin")
        axes.set_ylim(bottom=0)
        axes.tick_params(axis="x", labelsize=8, rotation=20)

    def timeline(axes: Any, row: Row) -> None:
        times, shares = row.share_series()
        colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
        for i in range(4):
            axes.plot(times, [100 * s[i] for s in shares], color=colors[i], linewidth=1,
                      label=bench.backends[i].name)
        opened: dict[int, float] = {}
        spans: list[tuple[float, float, int]] = []
        for at, index, alternative in row.switches:
            if alternative:
                opened.setdefault(index, at)
            elif index in opened:
                spans.append((opened.pop(index), at, index))
        spans += [(start, bench.args.duration, index) for index, start in opened.items()]
        for start, end, index in spans:
            axes.axvspan(max(start, 0.0), max(end, 0.0), color=colors[index], alpha=0.12, linewidth=0)
        axes.set_xlim(0, bench.args.duration)
        axes.set_ylim(0, 60)
        axes.set_ylabel("share, %")
        axes.set_title(f"{row.name}: share per {SAMPLE_EVERY * 1000:.0f} ms (shaded: slow or failing server)",
                       fontsize=9)
        axes.legend(loc="upper right", fontsize=7, ncol=4)

    def draw(pyplot: Any) -> Any:
        first = {row.name: row for row in reversed(bench.rows)}   # the first repeat of each
        if scenario.name == "static":
            names = [row.name.split(" ")[0] for row in bench.rows if row.repeat == 0]
            figure, (p99_axes, share_axes) = pyplot.subplots(1, 2, figsize=(12, 4.5))
            bars(p99_axes)
            share_axes.bar(names, [row.shares[-1] * 100 for row in bench.rows if row.repeat == 0], color="tab:red")
            share_axes.set_ylabel("app4 (slow) share, %")
            share_axes.tick_params(axis="x", rotation=30)
        elif scenario.name in ("moving", "recovery"):
            shown = [n for n in (LRT, BASELINE, "leastconn") if n in first]
            figure, axes = pyplot.subplots(len(shown) + 1, 1, figsize=(11, 2.6 * (len(shown) + 1)))
            for ax, name in zip(axes, shown):
                timeline(ax, first[name])
            bars(axes[-1])
            axes[len(shown) - 1].set_xlabel("seconds into the measured run")
        else:
            figure, axes = pyplot.subplots(1, 1, figsize=(8, 4))
            bars(axes)
        figure.suptitle(scenario.title)
        return figure
    return draw


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.balance", description=__doc__.split("\n")[0])
    add_common_options(parser, duration=10.0, quick=3.0, output=RESULTS / "balance.md", loadgen=False)
    parser.add_argument("--scenario", default=",".join(SCENARIOS), help="comma-separated (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per algorithm, interleaved")
    parser.add_argument("--connections", type=int, help="default: 32 static, 16 others")
    parser.add_argument("--fast-ms", type=float, help="latency of the fast servers (default: 10 static, 5 others)")
    parser.add_argument("--slow-factor", type=float, default=10.0, help="how much slower the slow one is")
    parser.add_argument("--period", type=float, default=2.0, help="moving: seconds between two moves")
    parser.add_argument("--algorithms", help="comma-separated (default: the scenario's)")
    parser.add_argument("--baseline", type=Path, help="also run least_response_time from the lbproxy in DIR")
    parser.set_defaults(warmup=None)
    args = parser.parse_args(argv)
    args.scenarios = choose(parser, args.scenario, list(SCENARIOS), "scenario")
    if args.algorithms:
        args.algorithms = choose(parser, args.algorithms, ALGORITHMS, "algorithm")
    if args.connections is not None and not 1 <= args.connections <= 254:
        parser.error("--connections must be within 1..254 (one 127.0.1.x source each)")
    if args.baseline and not (args.baseline / "lbproxy" / "__init__.py").exists():
        parser.error(f"--baseline {args.baseline}: no lbproxy package there")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def run_scenario(scenario: Scenario, args: argparse.Namespace, argv: list[str] | None) -> None:
    args = argparse.Namespace(**vars(args))
    args.fast_ms = args.fast_ms or scenario.fast_ms
    args.connections = args.connections or scenario.connections
    args.warmup = scenario.warmup if args.warmup is None else args.warmup
    fast = args.fast_ms / 1000
    alternative = (FAIL_LATENCY, 1.0) if scenario.name == "failfast" else (fast * args.slow_factor, 0.0)
    algorithms = args.algorithms or scenario.algorithms
    runs = [(name, name, None) for name in algorithms]
    if args.baseline and LRT in algorithms:
        runs.insert(runs.index((LRT, LRT, None)) + 1, (BASELINE, LRT, args.baseline))
    if scenario.oracle:
        runs.append((ORACLE, "roundrobin", None))
    output = args.output if scenario.name == "static" else args.output.with_name(
        f"{args.output.stem}_{scenario.name}{args.output.suffix}")
    with Session.open("bench.balance", argv) as run:
        backends = start_switchable(run.stack, run.workdir, fast, alternative, run.cpus.backend)
        bench = Bench(scenario, args, run.cpus, backends, run.workdir)
        for repeat in range(args.repeat):
            for name, balance, tree in runs:
                run.step(f"{scenario.name}: {name} ({repeat + 1}/{args.repeat})")
                bench.run(name, balance, repeat, tree)
    report(bench, run.command, run.info).publish(output, plot(bench))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for name in args.scenarios:
        run_scenario(SCENARIOS[name], args, argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["backend"]:
        backend_main(sys.argv[2:])
    else:
        main()
