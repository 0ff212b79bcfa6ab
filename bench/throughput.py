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
import datetime
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (REPO, Proc, StartError, free_port, http_get, machine_info, raise_fd_limit,
                           tree_cpu_seconds)
from bench.loadgen import LoadResult, run_load
from bench.targets import PROXIES

TARGETS = ["direct", *PROXIES]
RESULTS = REPO / "bench" / "results" / "throughput.md"


@dataclass(frozen=True)
class Cpus:
    """taskset CPU lists; the load generator shares the backend's CPU so the proxy has one alone."""

    proxy: str | None
    backend: str | None
    loadgen: str | None

    @classmethod
    def for_machine(cls) -> Cpus:
        return cls("0", "1", "1") if (os.cpu_count() or 1) >= 2 else cls(None, None, None)


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
        try:
            with Proc(name, target.command(self.workdir, port, [self.backend_port]), self.workdir,
                      self.cpus.proxy) as proxy:
                proxy.wait_for_port(port)
                status, body = http_get(port)
                if status != 200 or not body.startswith(b"hello from"):
                    raise StartError(f"GET / answered {status} {body[:80]!r}\n{proxy.stderr_tail()}")
                self._measure_all(name, port, proxy, self.cpus.loadgen)
        except (StartError, OSError) as exc:
            self.notes.append(f"**{name}** failed: {_first_line(exc)}\n\n```\n{_rest(exc)}\n```")

    def _measure_all(self, name: str, port: int, proxy: Proc | None, loadgen_cpus: str | None) -> None:
        url = f"http://127.0.0.1:{port}/"
        try:
            if self.warmup > 0:  # fills pools and caches; its numbers are thrown away
                run_load(url, min(self.connections), self.warmup, loadgen_cpus, self.tool)
            for connections in self.connections:
                self.rows.append(self._measure(name, url, proxy, connections, loadgen_cpus))
        except RuntimeError as exc:
            self.notes.append(f"**{name}** load run failed: {exc}")

    def _measure(self, name: str, url: str, proxy: Proc | None, connections: int,
                 loadgen_cpus: str | None) -> Row:
        before = (tree_cpu_seconds(proxy.pid) if proxy else 0.0, tree_cpu_seconds(self.backend.pid))
        load = run_load(url, connections, self.duration, loadgen_cpus, self.tool)
        after = (tree_cpu_seconds(proxy.pid) if proxy else 0.0, tree_cpu_seconds(self.backend.pid))
        per_request = [(end - start) / max(load.requests, 1) * 1e6 for start, end in zip(before, after)]
        return Row(name, connections, load, per_request[0] if proxy else None, per_request[1])


def _first_line(exc: BaseException) -> str:
    return str(exc).partition("\n")[0]


def _rest(exc: BaseException) -> str:
    return str(exc).partition("\n")[2].strip() or "(no stderr)"


def render(bench: Bench, command: str, info: dict[str, str]) -> str:
    cpus = bench.cpus
    lines = [
        "# Throughput: lbproxy, HAProxy, nginx and a naive aiohttp proxy",
        "",
        f"`{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: "
        f"{bench.duration:g} s per run after a {bench.warmup:g} s warm-up, `GET /` (16-byte reply) "
        f"through one proxy to one demo backend process, keep-alive on both sides, load from "
        f"{'`wrk -t1`' if bench.tool == 'wrk' else '`bench.loadgen` (wrk not installed)'}.",
        f"CPUs: proxy {cpus.proxy or 'any'}, backend {cpus.backend or 'any'}, load generator "
        f"{cpus.loadgen or 'any'} ({cpus.proxy or 'any'} for direct). CPU µs/req is utime+stime "
        "of the process tree over the run divided by the replies; rps is bounded by the backend "
        "and load generator sharing one CPU, so compare CPU per request across proxies.",
        "",
        "| target | conns | rps | p50 ms | p99 ms | proxy CPU µs/req | backend CPU µs/req | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in bench.rows:
        proxy_cpu = "–" if row.proxy_cpu_us is None else f"{row.proxy_cpu_us:.1f}"
        lines.append(f"| {row.target} | {row.connections} | {row.load.rps:,.0f} | {row.load.p50_ms:.2f} | "
                     f"{row.load.p99_ms:.2f} | {proxy_cpu} | {row.backend_cpu_us:.1f} | {row.load.errors} |")
    if bench.notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in bench.notes]
    lines += ["", "Machine:", ""] + [f"- {key}: {value}" for key, value in info.items()]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 s runs")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load per target")
    parser.add_argument("--connections", default="50,500", help="comma-separated (default 50,500)")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated from {','.join(TARGETS)}")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "builtin"], default="auto")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.targets = args.targets.split(",")
    if unknown := set(args.targets) - set(TARGETS):
        parser.error(f"unknown target(s) {', '.join(sorted(unknown))}; choose from {', '.join(TARGETS)}")
    args.connections = [int(c) for c in args.connections.split(",")]
    if args.quick:
        args.duration = 3.0
    if args.loadgen == "auto":
        args.loadgen = "wrk" if shutil.which("wrk") else "builtin"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = " ".join(["python -m bench.throughput", *(sys.argv[1:] if argv is None else argv)])
    raise_fd_limit()
    info = machine_info()   # now, so the load average is the one the run started under
    cpus = Cpus.for_machine()
    with tempfile.TemporaryDirectory(prefix="lbproxy-bench-") as tmp:
        workdir = Path(tmp)
        backend_port = free_port()
        backend_argv = [sys.executable, "-m", "lbproxy.demo.backend", "--port", str(backend_port), "--name", "app1"]
        with Proc("backend", backend_argv, workdir, cpus.backend) as backend:
            backend.wait_for_port(backend_port)
            bench = Bench(args.duration, args.warmup, args.connections, args.loadgen, cpus, backend,
                          backend_port, workdir, [], [])
            for name in args.targets:
                print(f"-- {name}", file=sys.stderr, flush=True)
                bench.run_target(name)
    report = render(bench, command, info)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)


if __name__ == "__main__":
    main()
