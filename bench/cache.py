"""Cache hits: lbproxy's response cache against nginx `proxy_cache` and HAProxy `cache`.

An nginx origin (pinned with the load generator) serves two objects with `Cache-Control:
max-age=3600`, an ETag and Last-Modified: `/small.bin` (1 KiB) and `/large.bin` (100 KiB).
Each setup runs alone in front of it, pinned to its own CPU as in bench.throughput:

- lbproxy with a cache (`caches: {web: {size: 64m, max_object_size: 1m}}`, `cache: web`);
- lbproxy, HAProxy and nginx without a cache: every request goes to the origin;
- nginx `proxy_cache` (a keys_zone, bodies in files of the work directory: the page cache);
- HAProxy `cache` (`total-max-size 64`, `max-object-size 1048576`, `http-request cache-use`,
  `http-response cache-store`).

Each object is fetched once (a miss that fills the cache), then after the warm-up `--repeat`
runs of `wrk -t1` (or bench.loadgen) measure rps and the proxy's CPU µs per reply; the run
with the median CPU is reported. The origin's own request counter (stub_status) shows what
reached it: ~0 per 1000 replies for a cache that serves hits.

    python -m bench.cache [--quick] [--duration 5] [--repeat 3] [--setups ...]

Writes bench/results/cache.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (Cpus, Origin, Session, add_common_options, choose, free_port, noted, resolve_loadgen,
                           start_checked, start_origin)
from bench.loadgen import Repeated, run_load, run_repeated
from bench.report import RESULTS, Report, now_utc
from bench.targets import PROXIES, haproxy_command, lbproxy_argv, lbproxy_config, nginx_command

OBJECTS = {"1 KiB": ("/small.bin", 1024), "100 KiB": ("/large.bin", 100 * 1024)}
Command = Callable[[Path, int, list[int]], list[str]]    # (workdir, port, servers) -> argv


def lbproxy_cached(workdir: Path, port: int, servers: list[int]) -> list[str]:
    config = lbproxy_config(port, servers, backend={"cache": "web"})
    config["caches"] = {"web": {"size": "64m", "max_object_size": "1m"}}
    return lbproxy_argv(workdir, config)


def lbproxy_plain(workdir: Path, port: int, servers: list[int]) -> list[str]:
    return lbproxy_argv(workdir, lbproxy_config(port, servers))


def nginx_cached(workdir: Path, port: int, servers: list[int]) -> list[str]:
    return nginx_command(
        workdir, port, servers,
        http_extra=f"  proxy_cache_path {workdir}/nginx-cache levels=1:2 keys_zone=web:10m max_size=256m "
                   "inactive=1h use_temp_path=off;\n",
        location_extra="      proxy_cache web;\n      add_header X-Cache $upstream_cache_status;\n")


def nginx_plain(workdir: Path, port: int, servers: list[int]) -> list[str]:
    return nginx_command(workdir, port, servers)


def haproxy_cached(workdir: Path, port: int, servers: list[int]) -> list[str]:
    return haproxy_command(
        workdir, port, servers,
        sections="cache web\n    total-max-size 64\n    max-object-size 1048576\n    max-age 3600\n",
        backend_extra="    http-request cache-use web\n    http-response cache-store web\n")


def haproxy_plain(workdir: Path, port: int, servers: list[int]) -> list[str]:
    return haproxy_command(workdir, port, servers)


@dataclass(frozen=True)
class Setup:
    name: str
    proxy: str               # a key of bench.targets.PROXIES: whether it is installed
    command: Command
    cached: bool


SETUPS = {setup.name: setup for setup in [
    Setup("lbproxy cache", "lbproxy", lbproxy_cached, True),
    Setup("nginx proxy_cache", "nginx", nginx_cached, True),
    Setup("HAProxy cache", "haproxy", haproxy_cached, True),
    Setup("lbproxy (no cache)", "lbproxy", lbproxy_plain, False),
    Setup("nginx (no cache)", "nginx", nginx_plain, False),
    Setup("HAProxy (no cache)", "haproxy", haproxy_plain, False),
]}


@dataclass(frozen=True)
class Row:
    setup: Setup
    obj: str
    runs: Repeated
    origin_per_1000: float


@dataclass
class Bench:
    args: argparse.Namespace
    cpus: Cpus
    origin: Origin
    workdir: Path
    rows: list[Row]
    notes: list[str]

    def run(self, setup: Setup) -> None:
        if why := PROXIES[setup.proxy].missing():
            self.notes.append(f"**{setup.name}** skipped: {why}")
            return
        args = self.args
        with noted(self.notes, setup.name) as stack:
            port = free_port()
            proxy = start_checked(stack, setup.proxy, setup.command(self.workdir, port, [self.origin.port]),
                                  self.workdir, self.cpus.proxy, port)
            for obj, (path, _) in OBJECTS.items():
                url = f"http://127.0.0.1:{port}{path}"
                run_load(url, 1, 0.2, self.cpus.loadgen, args.loadgen)     # the miss that fills the cache
                if args.warmup > 0:
                    run_load(url, args.connections, args.warmup, self.cpus.loadgen, args.loadgen)
                before = self.origin.requests()
                runs = run_repeated(url, args.connections, args.duration, self.cpus.loadgen, args.loadgen,
                                    [proxy], args.repeat)
                reached = self.origin.requests() - before - 1            # the reading itself counts
                self.rows.append(Row(setup, obj, runs, reached / max(runs.requests, 1) * 1000))



def report(bench: Bench, command: str, info: dict[str, str]) -> Report:
    args = bench.args
    tool = "`wrk -t1`" if args.loadgen == "wrk" else "`bench.loadgen` (wrk not installed)"
    page = Report(
        "Cache hits: lbproxy, nginx proxy_cache, HAProxy cache",
        [f"`{command}` on {now_utc()}: per setup and object, one fetch that fills the cache, a "
         f"{args.warmup:g} s warm-up, then {args.repeat} × {args.duration:g} s of {args.connections} keep-alive "
         f"connections from {tool}; the run with the median proxy CPU is shown, with the range over the runs.",
         f"{bench.cpus.describe()} The origin is nginx serving files with `Cache-Control: max-age=3600` (on the "
         "load generator's CPU). CPU µs/req is utime+stime of the proxy's process tree over a run divided by "
         "its replies; × lbproxy hit is that over lbproxy's with a cache for the same object. Origin req/1000 "
         "counts the requests that reached the origin over all runs, per 1000 replies."],
        ["setup", "object", "rps", "p50 ms", "p99 ms", "proxy CPU µs/req", "range", "× lbproxy hit",
         "origin req/1000", "errors"],
        "llrrrrrrrr", notes=bench.notes, info=info)
    hit = {row.obj: row.runs.cpu_us[0] for row in bench.rows if row.setup.name == "lbproxy cache"}
    for row in sorted(bench.rows, key=lambda row: list(OBJECTS).index(row.obj)):
        load, cpu = row.runs.load, row.runs.cpu_us[0]
        relative = f"{cpu / hit[row.obj]:.2f}" if row.obj in hit else "–"
        page.rows.append([row.setup.name, row.obj, f"{load.rps:,.0f}", f"{load.p50_ms:.2f}", f"{load.p99_ms:.2f}",
                          f"{cpu:.1f}", row.runs.spread(), relative, f"{row.origin_per_1000:.1f}",
                          str(load.errors)])
    return page


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cache", description=__doc__.split("\n")[0])
    add_common_options(parser, duration=5.0, quick=2.0, output=RESULTS / "cache.md")
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per setup and object (default 3)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated from {','.join(SETUPS)}")
    args = parser.parse_args(argv)
    args.setups = choose(parser, args.setups, list(SETUPS), "setup")
    args.loadgen = resolve_loadgen(args.loadgen)
    if args.duration <= 2.0 and args.repeat == 3:
        args.repeat = 1                      # --quick: one run each
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with Session.open("bench.cache", argv) as run:
        origin = start_origin(run.stack, run.workdir, {path.lstrip("/"): bytes(range(256)) * (size // 256)
                                                       for path, size in OBJECTS.values()}, run.cpus.backend)
        bench = Bench(args, run.cpus, origin, run.workdir, [], [])
        for name in args.setups:
            run.step(name)
            bench.run(SETUPS[name])
    report(bench, run.command, run.info).publish(args.output)


if __name__ == "__main__":
    main()
