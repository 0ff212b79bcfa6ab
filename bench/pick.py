"""The CPU cost of one balancing decision, per algorithm, in a small and a large pool.

No sockets: each algorithm's balancer over N servers (weight 1, a few requests in flight
each, least_response_time with a latency learned for every server), then the time of
`pick` alone and of the cycle a request makes (pick, on_start, on_finish): the best of
`--rounds` rounds of `--round` seconds each, on one pinned CPU. The ratio of the large pool's
time to the small one's shows which algorithms stay O(1) in the number of servers
(issue 19 asks it of least_response_time: two random choices, whatever the pool).

    python -m bench.pick [--quick] [--sizes 10,5000] [--round 0.2] [--rounds 5]

Writes bench/results/pick.md.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness import Cpus, Session, choose
from bench.report import RESULTS, Report, now_utc
from lbproxy.backends.server import Server
from lbproxy.balance import make_balancer
from lbproxy.balance.base import Balancer

ALGORITHMS = ["roundrobin", "static-rr", "leastconn", "first", "source", "uri", "random",
              "least_response_time"]
IN_FLIGHT = 3              # requests in flight at every server while we measure


class Request:
    """The RequestInfo fields the hashing algorithms read; one of 64 paths and sources."""

    def __init__(self, index: int) -> None:
        self.method, self.host, self.query = "GET", "example.test", ""
        self.path = self.url = f"/item/{index}"
        self.src, self.src_port, self.dst_port = f"10.0.{index // 256}.{index % 256}", 40000, 80
        self.ssl_fc, self.ssl_fc_sni = False, None

    def header(self, name: str) -> str | None:
        return None

    def header_values(self, name: str) -> list[str]:
        return []

    def cookie(self, name: str) -> str | None:
        return None


def busy_pool(algorithm: str, size: int) -> tuple[Balancer, list[Server]]:
    """A balancer over `size` servers with requests in flight and latencies learned."""
    servers = [Server(f"s{i}", ("127.0.0.1", 10000 + i)) for i in range(size)]
    balancer = make_balancer(algorithm, None, "consistent", servers)
    rng = random.Random(1)
    for server in servers:
        for _ in range(IN_FLIGHT + 1):
            server.in_flight += 1
            balancer.on_start(server)
        server.in_flight -= 1
        balancer.on_finish(server, rng.uniform(0.004, 0.006), True)
    return balancer, servers


def timed(loop: Callable[[int], None], n: int) -> float:
    started = time.perf_counter()
    loop(n)
    return time.perf_counter() - started


def best_ns(loop: Callable[[int], None], budget: float, rounds: int) -> float:
    """Nanoseconds per iteration in the fastest of `rounds` rounds (the others lost the
    CPU), each round as many iterations as take `budget` seconds: an O(n) pick of a
    large pool gets fewer iterations, not minutes."""
    n = 16
    while timed(loop, n) < budget / 4:
        n *= 4
    return min(timed(loop, n) for _ in range(rounds)) / n * 1e9


def measure(algorithm: str, size: int, budget: float, rounds: int) -> tuple[float, float]:
    """(ns per pick, ns per pick + on_start + on_finish)."""
    balancer, _ = busy_pool(algorithm, size)
    requests = [Request(i) for i in range(64)]
    pick, on_start, on_finish = balancer.pick, balancer.on_start, balancer.on_finish

    def picks(n: int) -> None:
        for i in range(n):
            pick(requests[i & 63])

    def cycles(n: int) -> None:
        for i in range(n):
            server = pick(requests[i & 63])
            server.in_flight += 1
            on_start(server)
            server.in_flight -= 1
            on_finish(server, 0.005, True)

    return best_ns(picks, budget, rounds), best_ns(cycles, budget, rounds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pick", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,5000", help="two pool sizes, comma-separated")
    parser.add_argument("--round", type=float, default=0.2, help="seconds per round (default 0.2)")
    parser.add_argument("--quick", action="store_const", dest="round", const=0.05)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--output", type=Path, default=RESULTS / "pick.md")
    args = parser.parse_args(argv)
    small, large = (int(size) for size in args.sizes.split(","))
    algorithms = choose(parser, args.algorithms, ALGORITHMS, "algorithm")
    cpu = Cpus.for_machine().proxy
    if cpu is not None:
        os.sched_setaffinity(0, {int(cpu)})
    with Session.open("bench.pick", argv) as run:
        page = Report(
            "Cost of one balancing decision",
            [(f"`{run.command}` on {now_utc()}: each algorithm over {small:,} and {large:,} servers "
              f"(weight 1, {IN_FLIGHT} requests in flight each, latencies learned), rounds of "
              f"{args.round:g} s, the best of {args.rounds} rounds, on CPU {cpu or 'any'}. Cycle: pick, "
              "on_start and on_finish, what each request costs the balancer. Ratio: the large pool's "
              "time over the small one's; 1.0 is O(1) in the number of servers.")],
            ["algorithm", f"pick ns ({small:,})", f"pick ns ({large:,})", "pick ratio",
             f"cycle ns ({small:,})", f"cycle ns ({large:,})", "cycle ratio"],
            "lrrrrrr", info=run.info)
        for algorithm in algorithms:
            run.step(algorithm)
            (pick_small, cycle_small), (pick_large, cycle_large) = (
                measure(algorithm, size, args.round, args.rounds) for size in (small, large))
            page.rows.append([algorithm, f"{pick_small:,.0f}", f"{pick_large:,.0f}",
                              f"{pick_large / pick_small:.2f}", f"{cycle_small:,.0f}",
                              f"{cycle_large:,.0f}", f"{cycle_large / cycle_small:.2f}"])
    page.publish(args.output)


if __name__ == "__main__":
    main()
