"""Throughput by response size and connection reuse: lbproxy against HAProxy and nginx.

One demo backend serves `/bytes/N` (N bytes with Content-Length) and `/`; each target
proxies to it, pinned to its own CPU as in bench.throughput, and is driven by `wrk -t1`
(or bench.loadgen) with each load in turn:

- 1 KiB, 100 KiB and 10 MiB replies over 50 keep-alive connections;
- 1 KiB with `Connection: close` (a new client connection per request) over 50 connections;
- `GET /` (16 bytes) over 5000 keep-alive connections (the fd limit is raised to the hard one).

    python -m bench.bodies [--quick] [--duration 10] [--targets lbproxy,haproxy,nginx]

Writes bench/results/bodies.md.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from bench import throughput
from bench.harness import Proc, Session, add_common_options, choose, noted, resolve_loadgen, start_backends
from bench.loadgen import PLAIN, LoadResult, Variety, run_load, run_metered
from bench.report import RESULTS, Report, now_utc
from bench.targets import PROXIES

TARGETS = [name for name in PROXIES if name != "naive-aiohttp"]
ROOT_BODY = len(b"hello from app1\n")
# what a proxy logs when its generated config's connection limit is too small for a load
LIMIT_WARNINGS = ["worker_connections are not enough"]


@dataclass(frozen=True)
class Load:
    """One load: a path, its reply's body size, how many connections and whether they are reused."""

    name: str
    path: str
    body_bytes: int
    connections: int
    variety: Variety = PLAIN


LOADS = [
    Load("1 KiB keep-alive, 50 conns", "/bytes/1024", 1024, 50),
    Load("100 KiB keep-alive, 50 conns", "/bytes/102400", 102400, 50),
    Load("10 MiB keep-alive, 50 conns", "/bytes/10485760", 10485760, 50),
    Load("1 KiB Connection: close, 50 conns", "/bytes/1024", 1024, 50, Variety(close=True)),
    Load("`/` keep-alive, 5000 conns", "/", ROOT_BODY, 5000),
]


@dataclass(frozen=True)
class Row:
    target: str
    load: Load
    result: LoadResult
    proxy_cpu_us: float

    @property
    def megabytes_per_second(self) -> float:
        """Reply bodies only (headers excluded), in 10^6 bytes per second."""
        return self.result.rps * self.load.body_bytes / 1e6


@dataclass
class Bench(throughput.Bench):
    """bench.throughput's per-target start (pinned, checked, failures noted), measuring `LOADS` instead."""

    sized: list[Row] = field(default_factory=list)

    def _measure_all(self, name: str, port: int, proxy: Proc | None, loadgen_cpus: str | None) -> None:
        assert proxy is not None, "bodies has no direct target"
        base = f"http://127.0.0.1:{port}"
        if self.warmup > 0:
            run_load(f"{base}/", 50, self.warmup, loadgen_cpus, self.tool)
        for load in LOADS:
            # each load on its own: one that fails (e.g. 5000 connections) is noted, the next runs
            with noted(self.notes, f"{name}, {load.name}"):
                self._check_alive(proxy.exit_code(), name)
                result, cpu = run_metered(base + load.path, load.connections, self.duration, loadgen_cpus,
                                          self.tool, [proxy], load.variety)
                self.sized.append(Row(name, load, result, cpu[0]))
        self._note_limits(name, proxy)

    def _note_limits(self, name: str, proxy: Proc) -> None:
        """Say so when the proxy logged that it ran out of connections (its errors come from that)."""
        log = proxy.stderr_path.read_text(errors="replace")
        for warning in LIMIT_WARNINGS:
            if (count := log.count(warning)) > 0:
                self.notes.append(f"**{name}** logged \"{warning}\" {count} times: its generated config's "
                                  "connection limit (bench/targets.py) is too small for 5000 clients plus their "
                                  "upstream connections, so it closed keep-alive connections under load")

    @staticmethod
    def _check_alive(code: int | None, name: str) -> None:
        if code is not None:
            raise RuntimeError(f"{name} exited with status {code} during an earlier load")


def report(bench: Bench, command: str, info: dict[str, str]) -> Report:
    tool = "`wrk -t1`" if bench.tool == "wrk" else "`bench.loadgen` (wrk not installed)"
    page = Report(
        "Response size and connection reuse: lbproxy, HAProxy, nginx",
        [f"`{command}` on {now_utc()}: {bench.duration:g} s per load after a {bench.warmup:g} s warm-up, "
         f"load from {tool}, one proxy in front of one demo backend process (keep-alive to it). "
         "`/bytes/N` returns N bytes with Content-Length.",
         f"{bench.cpus.describe()} MB/s counts reply bodies only (rps × body size, 10^6 bytes). CPU µs/req is "
         "utime+stime of the proxy's process tree over the run divided by the replies. Errors are socket "
         "errors, timeouts (a reply slower than 5 s) and non-2xx/3xx replies. HAProxy (maxconn 9000) and nginx "
         "(worker_connections 12000) are configured for more than 5000 clients and their "
         "server connections."],
        ["target", "load", "rps", "MB/s", "p50 ms", "p99 ms", "proxy CPU µs/req", "errors"],
        "llrrrrrr", notes=bench.notes, info=info)
    for row in bench.sized:
        result = row.result
        page.rows.append([row.target, row.load.name, f"{result.rps:,.0f}", f"{row.megabytes_per_second:,.1f}",
                          f"{result.p50_ms:.2f}", f"{result.p99_ms:.2f}", f"{row.proxy_cpu_us:.1f}",
                          str(result.errors)])
    return page


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bodies", description=__doc__.split("\n")[0])
    add_common_options(parser, duration=10.0, quick=2.0, output=RESULTS / "bodies.md")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated from {','.join(TARGETS)}")
    args = parser.parse_args(argv)
    args.targets = choose(parser, args.targets, TARGETS, "target")
    args.loadgen = resolve_loadgen(args.loadgen)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with Session.open("bench.bodies", argv) as run:   # raises the fd limit, which the children inherit
        backend = start_backends(run.stack, run.workdir, [0.0], run.cpus.backend)[0]
        bench = Bench(args.duration, args.warmup, [50], args.loadgen, run.cpus, backend.proc, backend.port,
                      run.workdir, [], [])
        for name in args.targets:
            run.step(name)
            bench.run_target(name)
    report(bench, run.command, run.info).publish(args.output)


if __name__ == "__main__":
    main()
