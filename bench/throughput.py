"""Throughput and CPU per request: lbproxy against HAProxy, nginx and a naive aiohttp proxy.

One demo backend process serves `GET /`; each target proxies to it, pinned to its own
CPU, and is driven by wrk (or bench.loadgen when wrk is missing) at each connection count.
CPU per request is the utime+stime of the target's whole process tree over the run,
divided by the replies completed: on a shared, noisy machine it is steadier than rps,
and it is what the proxy costs whatever the load generator manages.

    python -m bench.throughput [--quick] [--duration 10] [--connections 50,500]
                               [--targets direct,lbproxy,haproxy,nginx,naive-aiohttp]

Writes the Markdown table to stdout and to bench/results/throughput.md.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (Cpus, Proc, Session, add_common_options, choose, free_port, noted, resolve_loadgen,
                           start_backends, start_checked)
from bench.loadgen import LoadResult, run_load, run_metered
from bench.report import RESULTS, Report, now_utc
from bench.targets import PROXIES

TARGETS = ["direct", *PROXIES]


@dataclass(frozen=True)
class Row:
    target: str
    connections: int
    load: LoadResult
    proxy_cpu_us: float | None       # None for direct: there is no proxy
    backend_cpu_us: float


@dataclass
class Bench:
    """One run's settings and what it has gathered so far."""

    duration: float
    warmup: float
    connections: list[int]
    tool: str
    cpus: Cpus
    backend: Proc
    backend_port: int
    workdir: Path
    rows: list[Row]
    notes: list[str]

    def run_target(self, name: str) -> None:
        if name == "direct":
            self._measure_all(name, self.backend_port, None, self.cpus.proxy)  # the proxy's CPU is free
            return
        target = PROXIES[name]
        if reason := target.missing():
            self.notes.append(f"**{name}** skipped: {reason}")
            return
        port = free_port()
        with noted(self.notes, name) as stack:
            proxy = start_checked(stack, name, target.command(self.workdir, port, [self.backend_port], None),
                                  self.workdir, self.cpus.proxy, port)
            self._measure_all(name, port, proxy, self.cpus.loadgen)

    def _measure_all(self, name: str, port: int, proxy: Proc | None, loadgen_cpus: str | None) -> None:
        url = f"http://127.0.0.1:{port}/"
        watched = [proxy, self.backend] if proxy else [self.backend]
        with noted(self.notes, name):
            if self.warmup > 0:  # fills pools and caches; its numbers are thrown away
                run_load(url, min(self.connections), self.warmup, loadgen_cpus, self.tool)
            for connections in self.connections:
                load, cpu = run_metered(url, connections, self.duration, loadgen_cpus, self.tool, watched)
                self.rows.append(Row(name, connections, load, cpu[0] if proxy else None, cpu[-1]))


def report(bench: Bench, command: str, info: dict[str, str]) -> Report:
    cpus = bench.cpus
    page = Report(
        "Throughput: lbproxy, HAProxy, nginx and a naive aiohttp proxy",
        [f"`{command}` on {now_utc()}: "
         f"{bench.duration:g} s per run after a {bench.warmup:g} s warm-up, `GET /` (16-byte reply) "
         f"through one proxy to one demo backend process, keep-alive on both sides, load from "
         f"{'`wrk -t1`' if bench.tool == 'wrk' else '`bench.loadgen` (wrk not installed)'}.",
         f"{cpus.describe()} Direct runs the load generator on CPU {cpus.proxy or 'any'}. CPU µs/req is "
         "utime+stime of the process tree over the run divided by the replies; rps is bounded by the backend "
         "and load generator sharing one CPU, so compare CPU per request across proxies."],
        ["target", "conns", "rps", "p50 ms", "p99 ms", "proxy CPU µs/req", "backend CPU µs/req", "errors"],
        "lrrrrrrr", notes=bench.notes, info=info)
    for row in bench.rows:
        proxy_cpu = "–" if row.proxy_cpu_us is None else f"{row.proxy_cpu_us:.1f}"
        page.rows.append([row.target, str(row.connections), f"{row.load.rps:,.0f}", f"{row.load.p50_ms:.2f}",
                          f"{row.load.p99_ms:.2f}", proxy_cpu, f"{row.backend_cpu_us:.1f}", str(row.load.errors)])
    return page


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n")[0])
    add_common_options(parser, duration=10.0, quick=3.0, output=RESULTS / "throughput.md")
    parser.add_argument("--connections", default="50,500", help="comma-separated (default 50,500)")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated from {','.join(TARGETS)}")
    args = parser.parse_args(argv)
    args.targets = choose(parser, args.targets, TARGETS, "target")
    args.connections = [int(c) for c in args.connections.split(",")]
    args.loadgen = resolve_loadgen(args.loadgen)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with Session.open("bench.throughput", argv) as run:
        backend = start_backends(run.stack, run.workdir, [0.0], run.cpus.backend)[0]
        bench = Bench(args.duration, args.warmup, args.connections, args.loadgen, run.cpus, backend.proc,
                      backend.port, run.workdir, [], [])
        for name in args.targets:
            run.step(name)
            bench.run_target(name)
    report(bench, run.command, run.info).publish(args.output)


if __name__ == "__main__":
    main()
