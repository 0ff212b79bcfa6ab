"""What a balancing algorithm costs per request as the pool grows, measured in process.

    python -m bench.balancers                       # N = 10, 100, 1,000, 5,000 servers
    python -m bench.balancers --baseline d0ec10f    # the same for a git revision, side by side
    python -m bench.balancers --callgrind           # + instructions per request (valgrind)

One request, as the dispatcher sees it (lbproxy/proxy/dispatch.py): `pick`, in_flight + 1
and `on_start`, and later in_flight - 1 and `on_finish` (the two hooks only when the
algorithm overrides them, as `Backend.lb_hooks` decides), with 50 requests in flight at
once as under `wrk -c50`: each step picks and starts one request and finishes the oldest.
Servers all have weight 1 (`--weights 1,2,3,4` cycles those); `source` sees 1,000 client
addresses in turn. The row "loop alone" is the same loop around a balancer that always
returns the first server: the part of each figure that is not the algorithm's.

Time: the best of 5 runs of about 0.2 s each, in a fresh process per algorithm and N (so
that one pool's garbage does not slow the next). Instructions: callgrind's total for two
runs of different lengths; the difference divided by the extra steps cancels start-up and
pool building, and does not move with the machine's load as time does.

Ring: `source` (consistent) built over N servers in a fresh process: the time of the
constructor, and RSS (VmRSS) after it minus before it, with the servers already built.

`--baseline REV` exports REV's `lbproxy/` with git into a temporary directory and runs
the same children against it, so both columns come from one run on one machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import deque
from pathlib import Path

from bench.harness import REPO, machine_info
from bench.report import RESULTS, Report, now_utc

SIZES = [10, 100, 1_000, 5_000]
ALGORITHMS = ["roundrobin", "leastconn", "source"]
IN_FLIGHT = 50          # requests in flight at once (wrk -c50 in issue 22's measurements)
CLIENTS = 1_000         # distinct client addresses `source` sees
RUN_SECONDS = 0.2       # length of one timed run
RUNS = 5                # timed runs; the best counts (noise only ever adds time)
CALLGRIND_STEPS = (200, 1_200)   # the two run lengths under callgrind (+ per-size scaling)


class _Request:
    """The little of lbproxy.http.request.RequestInfo the measured algorithms read."""

    __slots__ = ("src", "path", "query")

    def __init__(self, src: str) -> None:
        self.src, self.path, self.query = src, "/", ""

    def header(self, name: str) -> str | None:
        return None


class _First:
    """The "loop alone" reference: no algorithm at all."""

    def __init__(self, servers: list) -> None:
        self.server = servers[0]

    def pick(self, request: object, avoid: object = None) -> object:
        return self.server


# --- one measurement, in a child process -------------------------------------------------------

def _setup(algorithm: str, size: int, weights: list[int]) -> tuple[object, list, bool]:
    from lbproxy.backends.server import Server
    from lbproxy.balance import make_balancer
    from lbproxy.balance.base import Balancer

    servers = [Server(f"app{i}", None, weight=weights[i % len(weights)]) for i in range(size)]
    if algorithm == "loop":
        return _First(servers), servers, False
    balancer = make_balancer(algorithm, None, "consistent", servers)
    cls = type(balancer)
    hooks = cls.on_start is not Balancer.on_start or cls.on_finish is not Balancer.on_finish
    return balancer, servers, hooks


def _steps(balancer: object, hooks: bool, requests: list, count: int, window: deque) -> None:
    """`count` requests through `balancer` as the dispatcher sends them."""
    pick = balancer.pick
    on_start = getattr(balancer, "on_start", None)
    on_finish = getattr(balancer, "on_finish", None)
    clients = len(requests)
    for i in range(count):
        server = pick(requests[i % clients], None)
        server.in_flight += 1
        if hooks:
            on_start(server)
        window.append(server)
        if len(window) > IN_FLIGHT:
            done = window.popleft()
            done.in_flight -= 1
            if hooks:
                on_finish(done, 0.001, True)


def child(spec: dict) -> dict:
    requests = [_Request(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}") for i in range(CLIENTS)]
    if spec["kind"] == "ring":
        return _ring(spec["size"])
    if spec["kind"] == "where":
        import lbproxy
        return {"lbproxy": lbproxy.__file__}
    balancer, _, hooks = _setup(spec["algorithm"], spec["size"], spec["weights"])
    window: deque = deque()
    _steps(balancer, hooks, requests, 2 * IN_FLIGHT, window)          # warm up, fill the window
    if spec["kind"] == "count":                                         # under callgrind
        _steps(balancer, hooks, requests, spec["steps"], window)
        return {}
    started = time.perf_counter()
    _steps(balancer, hooks, requests, 100, window)
    per_step = (time.perf_counter() - started) / 100
    count = max(100, min(200_000, int(RUN_SECONDS / per_step)))
    best = float("inf")
    gc.disable()
    for _ in range(RUNS):
        started = time.perf_counter()
        _steps(balancer, hooks, requests, count, window)
        best = min(best, time.perf_counter() - started)
    return {"us": best / count * 1e6}


def _rss_kb() -> tuple[int, int]:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines()
                  if ":" in line)
    return int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])


def _ring(size: int) -> dict:
    from lbproxy.backends.server import Server
    from lbproxy.balance.hashing import SourceHash

    servers = [Server(f"app{i}", None) for i in range(size)]
    gc.collect()
    before, _ = _rss_kb()
    started = time.perf_counter()
    balancer = SourceHash(servers)
    seconds = time.perf_counter() - started
    gc.collect()
    after, peak = _rss_kb()
    assert balancer.servers
    return {"ms": seconds * 1e3, "rss_mb": (after - before) / 1024, "peak_mb": (peak - before) / 1024}


# --- the parent: children per (code, algorithm, N) ----------------------------------------------

def _run_child(spec: dict, pythonpath: str, callgrind: bool = False) -> dict | int:
    argv = [sys.executable, "-m", "bench.balancers", "--child", json.dumps(spec)]
    env = dict(os.environ, PYTHONPATH=pythonpath, PYTHONHASHSEED="0")
    if callgrind:
        argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + argv
    done = subprocess.run(argv, cwd=pythonpath.split(os.pathsep)[0], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{spec}: exit {done.returncode}: {done.stderr.strip()[-800:]}")
    if callgrind:
        return int(re.search(r"Collected : (\d+)", done.stderr).group(1))
    return json.loads(done.stdout)


def _instructions(spec: dict, pythonpath: str) -> float:
    """Instructions per request: two runs whose lengths differ, so fixed costs cancel."""
    short, long = CALLGRIND_STEPS
    scale = max(1, spec["size"] // 1_000)      # the O(n) picks of old code: fewer steps
    short, long = short // scale + 50, long // scale + 50
    counts = [_run_child(dict(spec, kind="count", steps=steps), pythonpath, callgrind=True)
              for steps in (short, long)]
    return (counts[1] - counts[0]) / (long - short)


def _export(revision: str, into: Path) -> None:
    """REV's lbproxy/ package into `into`, without touching the work tree."""
    archive = into / "lbproxy.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), revision, "lbproxy"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")


def measure(codes: dict[str, str], sizes: list[int], weights: list[int],
            callgrind: bool) -> dict:
    """{(code, algorithm, size): figures}; `codes` maps a column name to a PYTHONPATH."""
    results: dict = {}
    for code, path in codes.items():
        print(f"{code}: {_run_child({'kind': 'where'}, path)['lbproxy']}", file=sys.stderr)
        for algorithm in ["loop"] + ALGORITHMS:
            for size in sizes:
                spec = {"kind": "time", "algorithm": algorithm, "size": size, "weights": weights}
                figures = _run_child(spec, path)
                if callgrind:
                    figures["instructions"] = _instructions(spec, path)
                results[code, algorithm, size] = figures
                print(f"{code} {algorithm} N={size}: {figures}", file=sys.stderr, flush=True)
        results[code, "ring"] = _run_child({"kind": "ring", "size": sizes[-1]}, path)
        print(f"{code} ring N={sizes[-1]}: {results[code, 'ring']}", file=sys.stderr, flush=True)
    return results


def report(results: dict, codes: list[str], sizes: list[int], weights: list[int],
           callgrind: bool) -> Report:
    columns = [f"{code} N={size:,}" for code in codes for size in sizes]
    page = Report(
        title="Balancer cost per request",
        intro=[f"`python -m bench.balancers` on {now_utc()}: µs per request (pick and the "
               f"dispatcher's hooks, {IN_FLIGHT} in flight), best of {RUNS} runs"
               + (", and instructions per request under callgrind" if callgrind else "")
               + f"; server weights {','.join(map(str, weights))}."],
        header=["algorithm", "measure"] + columns, align="ll" + "r" * len(columns))
    for algorithm in ["loop"] + ALGORITHMS:
        name = "loop alone" if algorithm == "loop" else algorithm
        page.rows.append([name, "µs"] + [f"{results[code, algorithm, size]['us']:.2f}"
                                         for code in codes for size in sizes])
        if callgrind:
            page.rows.append([name, "instructions"] + [
                f"{results[code, algorithm, size]['instructions']:,.0f}"
                for code in codes for size in sizes])
    for code in codes:
        ring = results[code, "ring"]
        page.notes.append(f"{code}: `source` ring over {sizes[-1]:,} servers: built in "
                          f"{ring['ms']:,.0f} ms, RSS +{ring['rss_mb']:.1f} MB "
                          f"(peak +{ring['peak_mb']:.1f} MB)")
    page.info = machine_info()
    return page


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.balancers",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="pool sizes, comma-separated (default: %(default)s)")
    parser.add_argument("--weights", default="1", help="server weights, cycled (default: 1)")
    parser.add_argument("--baseline", metavar="REV", help="also measure this git revision")
    parser.add_argument("--callgrind", action="store_true",
                        help="also count instructions with valgrind (slow: minutes)")
    parser.add_argument("--quick", action="store_true", help="N = 10 and 1,000 only")
    parser.add_argument("--output", type=Path, default=RESULTS / "balancers.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    sizes = [10, 1_000] if args.quick else [int(size) for size in args.sizes.split(",")]
    weights = [int(weight) for weight in args.weights.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        codes = {}
        if args.baseline:
            _export(args.baseline, Path(tmp))
            codes[args.baseline] = f"{tmp}{os.pathsep}{REPO}"
        codes["this"] = str(REPO)
        results = measure(codes, sizes, weights, args.callgrind)
    report(results, list(codes), sizes, weights, args.callgrind).publish(args.output)


if __name__ == "__main__":
    main()
