"""Throughput by body size, direction and connection reuse: lbproxy against HAProxy, nginx and Caddy.

The backend is nginx (bench.throughput's: one worker, keep-alive) serving `/bytes/N` (N
bytes from a file, with Content-Length) and answering ~100 bytes to anything else,
reading and dropping any request body. Each target proxies to it alone on its CPU, as in
bench.throughput, and is driven by `wrk -t1` (or bench.loadgen) with each load in turn:

- 1 KiB, 100 KiB and 10 MiB replies over 50 keep-alive connections;
- 100 KiB and 10 MiB uploads (POST bodies, ~100-byte replies) over 50 keep-alive connections;
- 1 KiB with `Connection: close` (a new client connection per request) over 50 connections;
- `GET /` (~100 bytes) over 5000 keep-alive connections (the fd limit is raised to the hard one).

Each load: a warm-up, then `--runs` runs; CPU µs per request as median, range and × HAProxy.

    python -m bench.bodies [--quick] [--duration 5] [--runs 3] [--rounds 1] [--targets lbproxy,haproxy,nginx,caddy]

Writes bench/results/bodies.md.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field

from bench import throughput
from bench.harness import Proc, Session, add_common_options, choose, resolve_loadgen, start_nginx_backend
from bench.loadgen import PLAIN, Variety
from bench.report import RESULTS, Report, now_utc
from bench.targets import PROXIES

CHOICES = [name for name in PROXIES if name != "naive-aiohttp"]
TARGETS = ["lbproxy", "haproxy", "nginx", "caddy"]
ROOT_BODY = 100   # bytes, about: nginx's fixed answer
# what a proxy logs when its generated config's connection limit is too small for a load
LIMIT_WARNINGS = ["worker_connections are not enough"]


@dataclass(frozen=True)
class Load:
    """One load: a path, the body size that crosses the proxy (the reply's, or the upload's with
    `variety.upload`), how many connections and whether they are reused."""

    name: str
    path: str
    body_bytes: int
    connections: int
    variety: Variety = PLAIN


LOADS = [
    Load("1 KiB keep-alive, 50 conns", "/bytes/1024", 1024, 50),
    Load("100 KiB keep-alive, 50 conns", "/bytes/102400", 102400, 50),
    Load("10 MiB keep-alive, 50 conns", "/bytes/10485760", 10485760, 50),
    Load("100 KiB upload, 50 conns", "/upload", 102400, 50, Variety(upload=102400)),
    Load("10 MiB upload, 50 conns", "/upload", 10485760, 50, Variety(upload=10485760)),
    Load("1 KiB Connection: close, 50 conns", "/bytes/1024", 1024, 50, Variety(close=True)),
    Load("`/` keep-alive, 5000 conns", "/", ROOT_BODY, 5000),
]
SIZES = sorted({load.body_bytes for load in LOADS if load.path.startswith("/bytes/")})
BY_NAME = {load.name: load for load in LOADS}


@dataclass
class Bench(throughput.Bench):
    """bench.throughput's per-target start (pinned, checked, failures noted), measuring `LOADS` instead."""

    limit_warnings: Counter[tuple[str, str]] = field(default_factory=Counter)   # (target, warning): times

    def measure_target(self, name: str, port: int, proxy: Proc | None) -> None:
        assert proxy is not None, "bodies has no direct target"
        for load in LOADS:   # each on its own: one that fails (e.g. 5000 connections) is noted, the next runs
            self.measure_load(name, load.name, self.url(port, load.path), load.connections, proxy, load.variety)
        self._note_limits(name, proxy)

    def _note_limits(self, name: str, proxy: Proc) -> None:
        """Count the times the proxy logged that it ran out of connections (its errors come from that)."""
        log = proxy.stderr_path.read_text(errors="replace")
        for warning in LIMIT_WARNINGS:
            self.limit_warnings[name, warning] += log.count(warning)

    def limit_notes(self) -> list[str]:
        return [f"**{name}** logged \"{warning}\" {count} times: its generated config's connection limit "
                "(bench/targets.py) is too small for 5000 clients plus their upstream connections, so it closed "
                "keep-alive connections under load"
                for (name, warning), count in self.limit_warnings.items() if count]


def report(bench: Bench, command: str, info: dict[str, str]) -> Report:
    page = Report(
        "Body sizes, uploads and connection reuse: lbproxy, HAProxy, nginx, Caddy",
        [f"`{command}` on {now_utc()}: one proxy in front of nginx (keep-alive to it). `/bytes/N` returns N "
         "bytes with Content-Length; uploads POST N bytes with Content-Length and get ~100 bytes back. "
         "MB/s counts the bodies that cross the proxy (rps × body size, 10^6 bytes). HAProxy (maxconn 9000) "
         "and nginx (worker_connections 12000) are configured for more than 5000 clients and their server "
         "connections. nginx as a proxy buffers request bodies before it forwards them (its default, "
         "`proxy_request_buffering on`: an upload over its 16 KiB `client_body_buffer_size` goes to a "
         "temporary file first), and a reply its `proxy_buffers` (8 × 4 KiB) cannot hold goes to a temporary "
         "file while the client reads slower than the backend writes; the others stream.",
         bench.describe()],
        ["target", "load", "rps", "MB/s", "p50 ms", "p99 ms", "CPU µs/req", "min–max", "× HAProxy", "errors"],
        "llrrrrrrrr", notes=bench.notes + bench.limit_notes(), info=info)
    for row in bench.rows:
        rps, *figures = bench.figures(row)
        megabytes = row.measured.rps.median * BY_NAME[row.load].body_bytes / 1e6
        page.rows.append([row.target, row.load, rps, f"{megabytes:,.1f}", *figures, str(row.measured.errors)])
    return page


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bodies", description=__doc__.split("\n")[0])
    add_common_options(parser, duration=5.0, quick=2.0, output=RESULTS / "bodies.md", warmup=2.0, runs=3)
    throughput.add_rounds_option(parser)
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated from {','.join(CHOICES)}")
    args = parser.parse_args(argv)
    args.targets = choose(parser, args.targets, CHOICES, "target")
    args.loadgen = resolve_loadgen(args.loadgen)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with Session.open("bench.bodies", argv) as run:   # raises the fd limit, which the children inherit
        backend = start_nginx_backend(run.stack, run.workdir, run.cpus.backend, SIZES)
        bench = Bench(throughput.schedule(args, run.cpus), [], run.cpus, backend, run.workdir,
                      rounds=args.rounds)
        bench.run_rounds(run, args.targets)
    report(bench, run.command, run.info).publish(args.output)


if __name__ == "__main__":
    main()
