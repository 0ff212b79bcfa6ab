"""What rules cost: rps and CPU µs/request of lbproxy with ACL rules and stick-table tracking.

One demo backend, lbproxy pinned to its own CPU, wrk (or the built-in client) on the
backend's CPU, as in bench.throughput, and the same `GET /` through four configurations:

- no rules;
- 50 `http_request` deny rules whose ACLs never match, a mix of `path_beg`, `hdr_sub(host)`,
  `src` (CIDRs) and `path_reg`, so every request evaluates all 50;
- tracking: `track_sc0: src` and a deny on `sc_http_req_rate(0) gt 1000000` (never true),
  with `stick_store: memory`;
- the same with `stick_store: redis://…`, against a throwaway redis-server (no persistence)
  started on a free port on the backend's CPU and stopped after.

    python -m bench.rules [--quick] [--duration 10] [--connections 50] [--loadgen auto|wrk|builtin]

Writes bench/results/rules.md and rules.png.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import (Backend, Cpus, Proc, Session, add_common_options, free_port, noted, resolve_loadgen,
                           start_backends, start_checked, tool_version)
from bench.loadgen import LoadResult, run_load, run_metered
from bench.report import RESULTS, Report, now_utc
from bench.targets import lbproxy_argv, lbproxy_config

RULES = 50
TRACKING = {
    "stick_table": {"type": "ip", "size": 100000, "expire": "30s", "store": ["http_req_rate(10s)"]},
    "http_request": [{"track_sc0": "src"},
                     {"deny": {"status": 429}, "if": "{ sc_http_req_rate(0) gt 1000000 }"}],
}


def acl_rules(count: int) -> dict[str, Any]:
    """`count` ACLs of four kinds, none matching `GET /` from 127.0.0.1, each guarding a deny."""
    kinds = ["path_beg /nomatch{i}/ /other{i}/", "hdr_sub(host) nomatch{i}.example",
             "src 10.{i}.0.0/16 192.168.{i}.0/24", r"path_reg ^/nomatch{i}/[a-z]+\.php$"]
    acls = {f"acl{i}": kinds[i % len(kinds)].format(i=i) for i in range(count)}
    return {"acls": acls, "http_request": [{"deny": {"status": 403}, "if": name} for name in acls]}


@dataclass(frozen=True)
class Setup:
    name: str
    frontend: dict[str, Any]
    redis: bool = False       # stick tables in a throwaway redis-server


SETUPS = [
    Setup("no rules", {}),
    Setup(f"{RULES} ACL rules, none matching", acl_rules(RULES)),
    Setup("track_sc0 src + rate deny, stick_store: memory", TRACKING),
    Setup("track_sc0 src + rate deny, stick_store: redis", TRACKING, redis=True),
]


@dataclass(frozen=True)
class Row:
    setup: str
    load: LoadResult
    proxy_cpu_us: float
    redis_cpu_us: float | None


@dataclass
class Bench:
    """One run's settings, its backend and what it has gathered so far."""

    args: argparse.Namespace
    cpus: Cpus
    backend: Backend
    workdir: Path
    rows: list[Row]
    notes: list[str]

    def run(self, setup: Setup) -> None:
        if setup.redis and not shutil.which("redis-server"):
            self.notes.append(f"**{setup.name}** skipped: `redis-server` not installed")
            return
        with noted(self.notes, setup.name) as stack:
            global_: dict[str, Any] = {}
            redis = None
            if setup.redis:
                redis_port = free_port()
                redis = stack.enter_context(Proc("redis", [
                    "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no"], self.workdir, self.cpus.backend))
                redis.wait_for_port(redis_port)
                global_["stick_store"] = f"redis://127.0.0.1:{redis_port}/0"
            port = free_port()
            config = lbproxy_config(port, [self.backend.port], frontend=setup.frontend, global_=global_)
            proxy = start_checked(stack, "lbproxy", lbproxy_argv(self.workdir, config), self.workdir,
                                  self.cpus.proxy, port)
            url = f"http://127.0.0.1:{port}/"
            if self.args.warmup > 0:
                run_load(url, self.args.connections, self.args.warmup, self.cpus.loadgen, self.args.loadgen)
            load, cpu = run_metered(url, self.args.connections, self.args.duration, self.cpus.loadgen,
                                    self.args.loadgen, [proxy, *([redis] if redis else [])])
            self.rows.append(Row(setup.name, load, cpu[0], cpu[1] if redis else None))


def report(bench: Bench, command: str, info: dict[str, str]) -> Report:
    args = bench.args
    base = bench.rows[0].proxy_cpu_us if bench.rows and bench.rows[0].setup == SETUPS[0].name else float("nan")
    tool = "`wrk -t1`" if args.loadgen == "wrk" else "`bench.loadgen`"
    page = Report(
        "What rules cost",
        [f"`{command}` on {now_utc()}: {args.duration:g} s per setup after a {args.warmup:g} s warm-up, "
         f"{args.connections} keep-alive connections from {tool} sending `GET /` through lbproxy to one demo "
         "backend.",
         f"{bench.cpus.describe()} CPU µs/req is utime+stime of lbproxy's process tree over the run divided by "
         "the replies; + µs/req is that minus the no-rules run's. Redis CPU is redis-server's, on the "
         "backends' CPU."],
        ["setup", "rps", "p50 ms", "p99 ms", "lbproxy CPU µs/req", "+ µs/req", "redis CPU µs/req", "errors"],
        "lrrrrrrr", notes=bench.notes, info={**info, "redis": tool_version(["redis-server", "--version"])})
    for row in bench.rows:
        extra = row.proxy_cpu_us - base
        page.rows.append([row.setup, f"{row.load.rps:,.0f}", f"{row.load.p50_ms:.2f}", f"{row.load.p99_ms:.2f}",
                          f"{row.proxy_cpu_us:.1f}", "–" if extra != extra else f"{extra:+.1f}",
                          "–" if row.redis_cpu_us is None else f"{row.redis_cpu_us:.1f}", str(row.load.errors)])
    return page


def plot(bench: Bench) -> Any:
    def draw(pyplot: Any) -> Any:
        figure, axes = pyplot.subplots(figsize=(9, 4))
        names = [row.setup.replace(", ", ",\n") for row in bench.rows]
        axes.barh(names, [row.proxy_cpu_us for row in bench.rows], color="tab:blue", label="lbproxy")
        axes.barh(names, [row.redis_cpu_us or 0.0 for row in bench.rows],
                  left=[row.proxy_cpu_us for row in bench.rows], color="tab:red", label="redis-server")
        axes.invert_yaxis()
        axes.set_xlabel("CPU µs per request")
        axes.legend()
        figure.suptitle("CPU per request by rule setup")
        return figure
    return draw


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.rules", description=__doc__.split("\n")[0])
    add_common_options(parser, duration=10.0, quick=3.0, output=RESULTS / "rules.md")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args(argv)
    args.loadgen = resolve_loadgen(args.loadgen)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with Session.open("bench.rules", argv) as run:
        backend = start_backends(run.stack, run.workdir, [0.0], run.cpus.backend)[0]
        bench = Bench(args, run.cpus, backend, run.workdir, [], [])
        for setup in SETUPS:
            run.step(setup.name)
            bench.run(setup)
    report(bench, run.command, run.info).publish(args.output, plot(bench))


if __name__ == "__main__":
    main()
