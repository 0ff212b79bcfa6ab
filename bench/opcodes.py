"""Python opcodes per request, by function: where lbproxy's interpreter time goes.

Most of a proxied request's CPU is the interpreter running lbproxy's own code, and the
number of bytecodes each function runs per request is exact, repeatable and immune to a
busy machine (unlike a sampling profiler's percentages). This runs lbproxy under a small
wrapper that traces opcodes between two signals, sends a fixed number of keep-alive
requests through it to the fast nginx backend, and prints opcodes and calls per request
for each function. bench.instructions gives the total, C code included.
"""

from __future__ import annotations

import argparse
import collections
import os
import runpy
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

from bench.harness import REPO, Proc, free_port, start_nginx_backend
from bench.instructions import BROWSER, REQUEST, driver, requests_sent
from bench.targets import lbproxy_argv, lbproxy_config

START, STOP = signal.SIGUSR2, signal.SIGPWR     # lbproxy handles neither


def child(out: str, lbproxy_args: list[str]) -> None:
    """Run lbproxy, counting opcodes per code object from START to STOP (then written to `out`)."""
    opcodes: collections.Counter[CodeType] = collections.Counter()
    calls: collections.Counter[CodeType] = collections.Counter()

    def count(frame: FrameType, event: str, _arg: Any) -> Any:
        if event == "opcode":
            opcodes[frame.f_code] += 1
        return count

    def enter(frame: FrameType, _event: str, _arg: Any) -> Any:
        frame.f_trace_opcodes = True
        calls[frame.f_code] += 1
        return count

    def start(*_: Any) -> None:
        opcodes.clear()
        calls.clear()
        sys.settrace(enter)

    def stop(*_: Any) -> None:
        sys.settrace(None)
        with open(out, "w") as file:
            for code, n in opcodes.most_common():
                where = code.co_filename.replace(f"{REPO}/", "")
                file.write(f"{n}\t{calls[code]}\t{where}:{code.co_firstlineno}({code.co_name})\n")

    signal.signal(START, start)
    signal.signal(STOP, stop)
    sys.argv = ["lbproxy", *lbproxy_args]
    runpy.run_module("lbproxy", run_name="__main__", alter_sys=True)


def measure(workdir: Path, log: str, connections: int, requests: int, request: bytes = REQUEST,
            h2_streams: int = 0) -> list[tuple[float, float, str]]:
    """(opcodes, calls, function) per request, most opcodes first; `h2_streams`: HTTP/2
    (h2c, h2load's request) with this many streams per connection instead of HTTP/1.1."""
    out = workdir / "opcodes.tsv"
    with ExitStack() as stack:
        backend = start_nginx_backend(stack, workdir, None)
        port = free_port()
        config = lbproxy_config(port, [backend.port],
                                global_={"log": {"access": str(workdir / "access.log"), "format": log}})
        run = driver(config, port, connections, request, h2_streams)
        argv = lbproxy_argv(workdir, config)
        proxy = stack.enter_context(Proc("lbproxy", [argv[0], "-m", "bench.opcodes", "--child", str(out),
                                                     "--", *argv[3:]], workdir))
        proxy.wait_for_port(port)
        run(1000)                                                 # warm-up
        os.kill(proxy.pid, START)
        run(requests)
        os.kill(proxy.pid, STOP)
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    sent = requests_sent(requests, connections, h2_streams)
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    return [(int(ops) / sent, int(calls) / sent, where) for ops, calls, where in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.opcodes", description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000, help="measured requests (default 2000)")
    parser.add_argument("--log", choices=["off", "json", "clf"], default="off",
                        help="access log format (to a file), default off")
    parser.add_argument("--browser", action="store_true",
                        help="send a browser's request (14 headers) instead of a 3-header one")
    parser.add_argument("--h2", type=int, default=0, metavar="STREAMS",
                        help="HTTP/2 (h2c, h2load's request) with STREAMS streams per connection")
    parser.add_argument("--top", type=int, default=40, help="functions listed (default 40)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.rest)
        return
    with tempfile.TemporaryDirectory(prefix="lbproxy-opcodes-") as tmp:
        rows = measure(Path(tmp), args.log, args.connections, args.requests,
                       BROWSER if args.browser else REQUEST, args.h2)
    print(f"lbproxy, access log {args.log}: {sum(r[0] for r in rows):,.0f} opcodes and "
          f"{sum(r[1] for r in rows):,.1f} Python calls per request")
    print(f"{'opcodes':>8} {'calls':>6}  function")
    for opcodes, calls, where in rows[:args.top]:
        print(f"{opcodes:8.1f} {calls:6.2f}  {where}")


if __name__ == "__main__":
    main()
