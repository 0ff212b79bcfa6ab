"""lbproxy with 1 and with 2 worker processes (`global.workers`), same load.

Nothing is pinned here: with two workers the proxy may use both cores, which it then
shares with the backend and the load generator, so read rps together with the CPU per
request (the process tree: supervisor and workers).

    python -m bench.workers [--quick] [--duration 10] [--connections 50,500]

Writes bench/results/workers.md.
"""

from __future__ import annotations

import argparse

from bench.harness import (Session, add_common_options, free_port, noted, resolve_loadgen,
                           start_backends, start_checked)
from bench.loadgen import run_load, run_metered
from bench.report import RESULTS, Report, now_utc
from bench.targets import lbproxy_argv, lbproxy_config

WORKERS = (1, 2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split("\n")[0])
    add_common_options(parser, duration=10.0, quick=3.0, output=RESULTS / "workers.md")
    parser.add_argument("--connections", default="50,500", help="comma-separated (default 50,500)")
    args = parser.parse_args(argv)
    args.connections = [int(c) for c in args.connections.split(",")]
    args.loadgen = resolve_loadgen(args.loadgen)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with Session.open("bench.workers", argv) as run:
        backend = start_backends(run.stack, run.workdir, [0.0], None)[0]
        page = Report(
            "lbproxy with 1 and 2 workers",
            [f"`{run.command}` on {now_utc()}: {args.duration:g} s per run, `GET /` through lbproxy "
             "to one demo backend process, nothing pinned (2 cores shared by the proxy, the backend "
             "and the load generator). CPU µs/req covers the supervisor and all workers."],
            ["workers", "conns", "rps", "p50 ms", "p99 ms", "proxy CPU µs/req", "errors"], "rrrrrrr",
            info=run.info)
        for workers in WORKERS:
            run.step(f"{workers} worker(s)")
            port = free_port()
            config = lbproxy_config(port, [backend.port], global_={"workers": workers})
            with noted(page.notes, f"{workers} workers") as stack:
                proxy = start_checked(stack, "lbproxy", lbproxy_argv(run.workdir, config, f"w{workers}.yaml"),
                                      run.workdir, None, port)
                url = f"http://127.0.0.1:{port}/"
                if args.warmup > 0:
                    run_load(url, min(args.connections), args.warmup, None, args.loadgen)
                for connections in args.connections:
                    load, cpu = run_metered(url, connections, args.duration, None, args.loadgen, [proxy])
                    page.rows.append([str(workers), str(connections), f"{load.rps:,.0f}",
                                      f"{load.p50_ms:.2f}", f"{load.p99_ms:.2f}", f"{cpu[0]:.1f}",
                                      str(load.errors)])
    page.publish(args.output)


if __name__ == "__main__":
    main()
