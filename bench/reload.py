"""Reload under load: lbproxy is sent SIGHUP every second while keep-alive load runs.

lbproxy (pinned as in bench.throughput, with a `global.pidfile`) balances two demo
backends. A baseline run drives it with steady keep-alive load and no reloads; then the
same load runs again while, every `--interval` (1 s), the config file is rewritten with
app1's weight flipped 1↔2 (so each reload applies a change) and SIGHUP goes to the pid in
the pidfile. Reloads applied are the "configuration reloaded" lines in lbproxy's stderr.
A reload must cost no request: any error is a failure, and p99 should stay near the baseline.

    python -m bench.reload [--quick] [--duration 10] [--connections 50] [--interval 1]

Writes bench/results/reload.md.
"""

from __future__ import annotations

import argparse
import copy
import os
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as LoadRunning
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import (Cpus, Proc, Session, add_common_options, free_port, noted, resolve_loadgen,
                           start_backends, start_checked)
from bench.loadgen import LoadResult, run_load
from bench.report import RESULTS, Report, now_utc
from bench.targets import lbproxy_argv, lbproxy_config

CONFIG_FILE = "reload.yaml"
RELOADED = "configuration reloaded"
REFUSED = "reload refused"


@dataclass(frozen=True)
class Row:
    run: str
    load: LoadResult
    sent: int
    applied: int
    refused: int


@dataclass
class Reloader:
    """Rewrites lbproxy's config with app1's weight flipped and SIGHUPs the pidfile's process.

    `base` is any `lbproxy_config` with `global.pidfile` set; its backend `app`'s first
    server's weight alternates 1 and 2, so each reload applies a change."""

    workdir: Path
    base: dict[str, Any]
    weight: int = 1

    def config(self) -> dict[str, Any]:
        config = copy.deepcopy(self.base)
        config["backends"]["app"]["servers"][0]["weight"] = self.weight
        return config

    def argv(self) -> list[str]:
        """Write the current config; the argv that runs lbproxy on it."""
        return lbproxy_argv(self.workdir, self.config(), CONFIG_FILE)

    def reload(self) -> None:
        self.weight = 3 - self.weight     # 1 <-> 2
        self.argv()
        os.kill(int(Path(self.base["global"]["pidfile"]).read_text().strip()), signal.SIGHUP)


def log_count(proc: Proc, text: str) -> int:
    """Lines of `proc`'s stderr containing `text`."""
    return sum(text in line for line in proc.stderr_path.read_text(errors="replace").splitlines())


def under_reloads(load: Future[LoadResult], reloader: Reloader, interval: float) -> int:
    """SIGHUP every `interval` seconds until `load` is done; how many were sent."""
    sent = 0
    while True:
        try:
            load.result(timeout=interval)
            return sent
        except LoadRunning:
            reloader.reload()
            sent += 1


def measure(args: argparse.Namespace, cpus: Cpus, proxy: Proc, port: int, reloader: Reloader) -> list[Row]:
    """The baseline run, then the run with reloads."""
    url = f"http://127.0.0.1:{port}/"
    if args.warmup > 0:
        run_load(url, args.connections, args.warmup, cpus.loadgen, args.loadgen)
    rows = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        for run, interval in (("baseline (no reloads)", None), (f"SIGHUP every {args.interval:g} s", args.interval)):
            before = (log_count(proxy, RELOADED), log_count(proxy, REFUSED))
            future = pool.submit(run_load, url, args.connections, args.duration, cpus.loadgen, args.loadgen)
            sent = under_reloads(future, reloader, interval) if interval else 0
            load = future.result()
            time.sleep(0.2)                   # the last reload's log line
            rows.append(Row(run, load, sent, log_count(proxy, RELOADED) - before[0],
                            log_count(proxy, REFUSED) - before[1]))
    return rows


def report(args: argparse.Namespace, rows: list[Row], cpus: Cpus, command: str, info: dict[str, str],
           notes: list[str]) -> Report:
    tool = "`wrk -t1`" if args.loadgen == "wrk" else "`bench.loadgen`"
    page = Report(
        "Reload under load",
        [f"`{command}` on {now_utc()}: {args.duration:g} s per run after a {args.warmup:g} s warm-up, "
         f"{args.connections} keep-alive connections from {tool} to `GET /` through lbproxy (round robin over "
         f"two demo backends). During the second run, every {args.interval:g} s the config is rewritten with "
         "app1's weight flipped 1↔2 and lbproxy gets SIGHUP (pid from its pidfile).",
         f"{cpus.describe()} Applied / refused: \"{RELOADED}\" / \"{REFUSED}\" lines in lbproxy's stderr "
         "during the run. Errors (socket errors, timeouts, non-2xx/3xx) must be 0."],
        ["run", "requests", "rps", "p50 ms", "p99 ms", "errors", "reloads sent", "applied", "refused"],
        "lrrrrrrrr", notes=notes, info=info)
    for row in rows:
        page.rows.append([row.run, f"{row.load.requests:,}", f"{row.load.rps:,.0f}", f"{row.load.p50_ms:.2f}",
                          f"{row.load.p99_ms:.2f}", str(row.load.errors), str(row.sent), str(row.applied),
                          str(row.refused)])
        if row.load.errors:
            notes.append(f"**FAIL**: {row.load.errors} errors in the run \"{row.run}\"")
        if row.applied != row.sent:
            notes.append(f"{row.run}: {row.sent} SIGHUP sent but {row.applied} reloads logged as applied")
    return page


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.reload", description=__doc__.split("\n")[0])
    add_common_options(parser, duration=10.0, quick=4.0, output=RESULTS / "reload.md")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between SIGHUPs (default 1)")
    args = parser.parse_args(argv)
    args.loadgen = resolve_loadgen(args.loadgen)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows: list[Row] = []
    notes: list[str] = []
    with Session.open("bench.reload", argv) as run:
        backends = start_backends(run.stack, run.workdir, [0.0, 0.0], run.cpus.backend)
        port = free_port()
        pidfile = run.workdir / "lbproxy.pid"
        reloader = Reloader(run.workdir, lbproxy_config(port, [b.port for b in backends],
                                                        global_={"pidfile": str(pidfile)}))
        with noted(notes, "lbproxy") as stack:
            proxy = start_checked(stack, "lbproxy", reloader.argv(), run.workdir, run.cpus.proxy, port)
            run.step("baseline, then reloads")
            rows = measure(args, run.cpus, proxy, port, reloader)
    report(args, rows, run.cpus, run.command, run.info, notes).publish(args.output)


if __name__ == "__main__":
    main()
