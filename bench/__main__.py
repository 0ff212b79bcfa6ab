"""`python -m bench [--quick] [SCENARIO ...]`: every scenario in turn, one after the other
(they would disturb each other's CPU measurements if run together). Each writes its own
Markdown table and plot to bench/results/. --quick takes a few minutes in all."""

from __future__ import annotations

import argparse
import importlib
import time

SCENARIOS = ["throughput", "workers", "balance", "failover", "rules", "tls", "autoscale",
             "idle_connections", "bodies", "reload", "desync", "http2", "scale", "pick", "cache",
             "compression", "soak"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"some of: {', '.join(SCENARIOS)} (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r} (choose from {', '.join(SCENARIOS)})")
    for name in args.scenarios or SCENARIOS:
        started = time.monotonic()
        print(f"== bench.{name}", flush=True)
        importlib.import_module(f"bench.{name}").main(["--quick"] if args.quick else [])
        print(f"== bench.{name}: {time.monotonic() - started:.0f} s, "
              f"results in bench/results/{name}.md", flush=True)


main()
