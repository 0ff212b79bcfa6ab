"""Differential desync fuzz: the same mutated requests through lbproxy, HAProxy and nginx.

Each proxy forwards to a recording server that splits what it receives with h11 (a strict
parser) and answers every request with what it read; a client sends each case (one to
three pipelined requests, seeded) on its own connection and reads the answers with h11.
The rules (tests/desync/check.py): nothing forwarded that a strict parser splits
differently, every forwarded request answered once, on its own connection, each answer
pairing with the request a strict parser reads at that position, requests before a bad
one answered, tunnels carrying exactly what followed a real upgrade. "Stricter" (refused
what h11 accepts) and "lenient" (forwarded, rebuilt, what h11 refuses) are counts, not
failures. The suite runs 2,000 cases through lbproxy; this runs 20,000 through each proxy.

    python -m bench.desync [--quick] [--cases 20000] [--seed 1] [--targets lbproxy,haproxy,nginx]

Writes bench/results/desync.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from bench.harness import REPO, Proc, Session, choose, free_port, noted
from bench.report import RESULTS, Report, now_utc
from bench.targets import haproxy_argv, lbproxy_argv, lbproxy_config, nginx_argv

sys.path.insert(0, str(REPO))
from tests.desync import check, generate  # noqa: E402
from tests.desync.recorder import RecordingServer  # noqa: E402

TARGETS = ["lbproxy", "haproxy", "nginx"]
KINDS = ["server-framing-error", "unanswered", "answered-twice", "mismatch", "refused-after-valid",
         "tunnel", "bad-response", "hang"]


def lbproxy(workdir: Path, port: int, server: int) -> list[str]:
    config = lbproxy_config(port, [server], frontend={
        "timeouts": {"http_request": "1s", "client": "2s"}})
    return lbproxy_argv(workdir, config)


def haproxy(workdir: Path, port: int, server: int) -> list[str]:
    return haproxy_argv(
        workdir, "haproxy-desync.cfg",
        f"frontend web\n    bind 127.0.0.1:{port}\n    default_backend app\n"
        f"backend app\n    server app1 127.0.0.1:{server}\n",
        defaults="    mode http\n    option http-keep-alive\n    http-reuse safe\n"
                 "    timeout connect 5s\n    timeout client 2s\n    timeout server 5s\n"
                 "    timeout http-request 1s\n    timeout tunnel 5s\n")


def nginx(workdir: Path, port: int, server: int) -> list[str]:
    """nginx with the WebSocket settings its documentation gives, so Upgrade can pass."""
    return nginx_argv(
        workdir, "nginx-desync",
        "  client_header_timeout 1s;\n  client_body_timeout 2s;\n"
        "  map $http_upgrade $connection_upgrade { default upgrade; '' ''; }\n"
        f"  upstream app {{\n    server 127.0.0.1:{server};\n    keepalive 16;\n  }}\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n"
        "    location / {\n      proxy_pass http://app;\n      proxy_http_version 1.1;\n"
        "      proxy_set_header Upgrade $http_upgrade;\n"
        "      proxy_set_header Connection $connection_upgrade;\n"
        "      proxy_set_header Host $http_host;\n    }\n  }\n", connections=4000, errors="crit")


COMMANDS = {"lbproxy": lbproxy, "haproxy": haproxy, "nginx": nginx}


def run_target(name: str, run: Session, cases: list[list[bytes]], notes: list[str]) -> list[str] | None:
    with RecordingServer() as recorder, noted(notes, name) as stack:
        port = free_port()
        proc = stack.enter_context(Proc(name, COMMANDS[name](run.workdir, port, recorder.port),
                                        run.workdir, run.cpus.proxy))
        proc.wait_for_port(port)
        started = time.monotonic()
        report = asyncio.run(check.run_cases(port, cases, recorder.recording))
        elapsed = time.monotonic() - started
        notes.extend(f"{name}: {violation}" for violation in report.violations[::3])
        counts = report.counts
        return [name, f"{report.cases:,}", f"{report.forwarded:,}", f"{counts['served']:,}",
                f"{counts['stricter']:,}", f"{counts['lenient']:,}", f"{counts['refused']:,}",
                *(str(counts[kind]) for kind in KINDS), f"{elapsed:.0f}"]
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.desync", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--quick", action="store_const", dest="cases", const=2_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--output", type=Path, default=RESULTS / "desync.md")
    args = parser.parse_args(argv)
    targets = choose(parser, args.targets, TARGETS, "target")
    cases = generate.cases(args.seed, args.cases)
    requests = sum(len(parts) for parts in cases)
    notes: list[str] = []
    with Session.open("bench.desync", argv) as run:
        page = Report(
            "Differential desync fuzz",
            [f"`{run.command}` on {now_utc()}: {args.cases:,} cases ({requests:,} requests, seed "
             f"{args.seed}), each on its own connection, through each proxy to a recording server "
             "that splits what it receives with h11. Violation columns must be 0 for lbproxy; the "
             "anchors' counts show where they differ from lbproxy's rules (see the module docstring)."],
            ["proxy", "cases", "forwarded", "served", "stricter", "lenient", "refused", *KINDS, "s"],
            "l" + "r" * (7 + len(KINDS)), notes=notes, info=run.info)
        for name in targets:
            run.step(name)
            row = run_target(name, run, cases, notes)
            if row is not None:
                page.rows.append(row)
    page.publish(args.output)


if __name__ == "__main__":
    main()
