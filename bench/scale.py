"""Scale: what a request, a reload, a scrape and a start cost as the estate grows.

One backend of N servers (N = 10, 100, 1,000, 5,000 by default), all served by one nginx
listening on 50 ports (the fast backend of bench.throughput), so that the proxy is what the
figures measure. The proxy is pinned alone to one CPU, nginx and wrk share the other; the
access log is off.

- CPU per request for each balancing algorithm (roundrobin, leastconn,
  least_response_time, source), HAProxy beside it for roundrobin, leastconn and source.
- Start: seconds from spawn until the port answers, and RSS then (HAProxy beside it).
- Stalls: p99 of a 50-connection keep-alive load while, once a second, something heavy
  runs on the proxy's event loop: a SIGHUP reload with one weight changed, a `/metrics`
  scrape, the stats page, its CSV and JSON, the runtime API's backend; against the p99 of
  the same load undisturbed. The issue's bar: p99 within 2x of undisturbed, 0 errors.
- Rules: R `use_backend` rules (`path_beg`), the request matching the last one, against
  HAProxy with the same rules: CPU per request at R = 10, 100, 1,000.

    python -m bench.scale [--quick] [--servers 10,100,1000,5000] [--rules 10,100,1000]

Writes bench/results/scale.md.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as LoadRunning
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (Proc, Session, add_common_options, free_port, free_ports, noted,
                           resolve_loadgen)
from bench.loadgen import LoadResult, run_load, run_metered
from bench.report import RESULTS, Report, now_utc
from bench.targets import lbproxy_argv

ALGORITHMS = ["roundrobin", "leastconn", "least_response_time", "source"]
HAPROXY_HAS = {"roundrobin", "leastconn", "source"}
BACKEND_PORTS = 50
STATS_USER = ("admin", "scale-bench")
# the reload last: what it leaves behind (a heap to collect) must not count against others
DISTURBANCES = ["/metrics", "/stats", "/stats;csv", "/stats?format=json", "/api/backends/app",
                "reload"]
CONFIG_FILE = "scale.yaml"


def nginx_ports_argv(workdir: Path, ports: list[int]) -> list[str]:
    """One nginx worker answering a fixed ~100-byte 200 on every port, keep-alive unbounded."""
    listens = "".join(f"    listen 127.0.0.1:{port};\n" for port in ports)
    temps = "".join(f"  {kind}_temp_path {workdir}/ngx-{kind};\n"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""
    path = workdir / "nginx-scale.conf"
    path.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {workdir}/nginx-scale.pid;\n"
        "error_log stderr warn;\nworker_rlimit_nofile 60000;\nevents { worker_connections 50000; }\n"
        "http {\n  access_log off;\n" + temps + "  server {\n" + listens +
        "    keepalive_requests 1000000000;\n"
        '    location / { return 200 "hello from nginx: a fixed answer of about one hundred '
        'bytes, so that the proxy is measured\\n"; }\n  }\n}\n')
    return ["nginx", "-e", "stderr", "-p", str(workdir), "-c", str(path)]


def addresses(ports: list[int], count: int) -> list[str]:
    return [f"127.0.0.1:{ports[i % len(ports)]}" for i in range(count)]


def lbproxy_scale_config(port: int, stats_port: int, servers: list[str], balance: str,
                         weight_of_first: int = 1, rules: int = 0) -> dict[str, Any]:
    frontend: dict[str, Any] = {"bind": [f"127.0.0.1:{port}"], "default_backend": "app"}
    if rules:
        frontend["acls"] = {f"r{i}": f"path_beg /r{i}/" for i in range(rules)}
        frontend["use_backend"] = [{"backend": "app", "if": f"r{i}"} for i in range(rules)]
    listed = [{"name": f"s{i}", "address": address} for i, address in enumerate(servers)]
    listed[0]["weight"] = weight_of_first
    return {
        "global": {"log": {"access": "stdout", "format": "off"}, "max_connections": 20000},
        "stats": {"bind": f"127.0.0.1:{stats_port}",
                  "auth": {"username": STATS_USER[0], "password": STATS_USER[1]}},
        "frontends": {"web": frontend},
        "backends": {"app": {"balance": balance, "servers": listed}},
    }


def haproxy_argv(workdir: Path, port: int, servers: list[str], balance: str, rules: int = 0) -> list[str]:
    listed = "".join(f"    server s{i} {address}\n" for i, address in enumerate(servers))
    routing = "".join(f"    use_backend app if {{ path_beg /r{i}/ }}\n" for i in range(rules))
    path = workdir / "haproxy-scale.cfg"
    path.write_text(
        "global\n    nbthread 1\n    maxconn 9000\n"
        "defaults\n    mode http\n    option http-keep-alive\n    option forwardfor\n"
        "    http-reuse always\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"
        f"frontend web\n    bind 127.0.0.1:{port}\n{routing}    default_backend app\n"
        f"backend app\n    balance {balance}\n{listed}")
    return ["haproxy", "-db", "-f", str(path)]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Started:
    proc: Proc
    seconds: float
    rss_mb: float
    loaded_rss_mb: float = float("nan")     # after its roundrobin load: counters, samples, pools


@dataclass
class Bench:
    args: argparse.Namespace
    run: Session
    ports: list[int]
    notes: list[str]
    cpu: dict[tuple[int, str, str], tuple[LoadResult, float]] = field(default_factory=dict)
    starts: dict[tuple[int, str], Started] = field(default_factory=dict)
    stalls: dict[tuple[int, str], LoadResult] = field(default_factory=dict)
    rules: dict[tuple[int, str], tuple[LoadResult, float]] = field(default_factory=dict)

    def start(self, stack: Any, name: str, argv: list[str], port: int) -> Started:
        began = time.monotonic()
        proc = stack.enter_context(Proc(name, argv, self.run.workdir, self.run.cpus.proxy))
        proc.wait_for_port(port, timeout=120.0)
        return Started(proc, time.monotonic() - began, rss_mb(proc.pid))

    def metered(self, url: str, proc: Proc) -> tuple[LoadResult, float]:
        args, cpus = self.args, self.run.cpus
        if args.warmup > 0:
            run_load(url, args.connections, args.warmup, cpus.loadgen, args.loadgen)
        load, cpu = run_metered(url, args.connections, args.duration, cpus.loadgen, args.loadgen, [proc])
        return load, cpu[0]

    def per_request(self, count: int) -> None:
        servers = addresses(self.ports, count)
        for balance in ALGORITHMS:
            Session.step(f"{count} servers, lbproxy {balance}")
            with noted(self.notes, f"lbproxy {balance} at {count}") as stack:
                port, stats = free_port(), free_port()
                argv = lbproxy_argv(self.run.workdir, lbproxy_scale_config(port, stats, servers, balance),
                                    CONFIG_FILE)
                started = self.start(stack, "lbproxy", argv, port)
                if balance == "roundrobin":
                    self.starts[(count, "lbproxy")] = started
                self.cpu[(count, "lbproxy", balance)] = self.metered(f"http://127.0.0.1:{port}/", started.proc)
                started.loaded_rss_mb = rss_mb(started.proc.pid)
                if balance == "roundrobin" and count in self.args.stall_servers:
                    self.stall_runs(count, started.proc, port, stats, servers)
            if balance in HAPROXY_HAS:
                Session.step(f"{count} servers, haproxy {balance}")
                with noted(self.notes, f"haproxy {balance} at {count}") as stack:
                    port = free_port()
                    started = self.start(stack, "haproxy",
                                         haproxy_argv(self.run.workdir, port, servers, balance), port)
                    if balance == "roundrobin":
                        self.starts[(count, "haproxy")] = started
                    self.cpu[(count, "haproxy", balance)] = self.metered(
                        f"http://127.0.0.1:{port}/", started.proc)
                    started.loaded_rss_mb = rss_mb(started.proc.pid)

    def stall_runs(self, count: int, proc: Proc, port: int, stats: int, servers: list[str]) -> None:
        """The undisturbed p99, then one run per disturbance, each repeated once a second."""
        url = f"http://127.0.0.1:{port}/"
        weight = [1]

        def reload() -> None:
            weight[0] = 3 - weight[0]
            lbproxy_argv(self.run.workdir, lbproxy_scale_config(port, stats, servers, "roundrobin",
                                                                weight[0]), CONFIG_FILE)
            os.kill(proc.pid, signal.SIGHUP)

        credentials = base64.b64encode(":".join(STATS_USER).encode()).decode()

        def fetch(path: str) -> Callable[[], None]:
            request = urllib.request.Request(f"http://127.0.0.1:{stats}{path}",
                                             headers={"Authorization": f"Basic {credentials}"})
            return lambda: urllib.request.urlopen(request, timeout=30).read()

        with ThreadPoolExecutor(max_workers=1) as pool:
            for name in ["undisturbed", *DISTURBANCES]:
                Session.step(f"{count} servers, stall: {name}")
                action = None if name == "undisturbed" else reload if name == "reload" else fetch(name)
                future = pool.submit(run_load, url, self.args.connections, self.args.duration,
                                     self.run.cpus.loadgen, self.args.loadgen)
                self.stalls[(count, name)] = disturbed(future, action)

    def rule_runs(self, count: int) -> None:
        servers = addresses(self.ports, 10)
        path = f"/r{count - 1}/x"
        Session.step(f"{count} use_backend rules, lbproxy")
        with noted(self.notes, f"lbproxy with {count} rules") as stack:
            port, stats = free_port(), free_port()
            argv = lbproxy_argv(self.run.workdir, lbproxy_scale_config(
                port, stats, servers, "roundrobin", rules=count), CONFIG_FILE)
            started = self.start(stack, "lbproxy", argv, port)
            self.rules[(count, "lbproxy")] = self.metered(f"http://127.0.0.1:{port}{path}", started.proc)
        Session.step(f"{count} use_backend rules, haproxy")
        with noted(self.notes, f"haproxy with {count} rules") as stack:
            port = free_port()
            started = self.start(stack, "haproxy", haproxy_argv(self.run.workdir, port, servers,
                                                                "roundrobin", rules=count), port)
            self.rules[(count, "haproxy")] = self.metered(f"http://127.0.0.1:{port}{path}", started.proc)


def disturbed(load: Future[LoadResult], action: Callable[[], None] | None) -> LoadResult:
    """Wait for `load`, running `action` once a second meanwhile."""
    while True:
        try:
            return load.result(timeout=1.0)
        except LoadRunning:
            if action is not None:
                action()


def _ms(value: float) -> str:
    return f"{value:.1f}"


def report(bench: Bench, command: str, info: dict[str, str]) -> list[Report]:
    args = bench.args
    intro = [f"`{command}` on {now_utc()}: {args.duration:g} s per load after a {args.warmup:g} s "
             f"warm-up, {args.connections} keep-alive connections from wrk; one nginx on "
             f"{BACKEND_PORTS} ports behind; access log off. {bench.run.cpus.describe()}"]
    pages = []
    cpu = Report("Scale: CPU per request by number of servers", intro,
                 ["servers", "proxy", "balance", "rps", "CPU µs / request", "p99 ms", "errors"],
                 "rllrrrr", notes=bench.notes)
    for (count, proxy, balance), (load, us) in bench.cpu.items():
        cpu.rows.append([f"{count:,}", proxy, balance, f"{load.rps:,.0f}", f"{us:.1f}",
                         _ms(load.p99_ms), str(load.errors)])
    pages.append(cpu)
    start = Report("Scale: start time and memory",
                   ["RSS when the port first accepts, and again after the roundrobin load run."],
                   ["servers", "proxy", "start s", "RSS MB", "RSS MB after load"], "rlrrr")
    for (count, proxy), started in bench.starts.items():
        start.rows.append([f"{count:,}", proxy, f"{started.seconds:.2f}", f"{started.rss_mb:.0f}",
                           f"{started.loaded_rss_mb:.0f}"])
    pages.append(start)
    stall = Report("Scale: p99 while the event loop has heavy work, once a second",
                   ["lbproxy roundrobin; each row is one run with that disturbance repeated every "
                    "second; the bar is p99 within 2x of undisturbed and 0 errors."],
                   ["servers", "disturbance", "p50 ms", "p99 ms", "p99 / undisturbed", "errors"],
                   "rlrrrr")
    for (count, name), load in bench.stalls.items():
        base = bench.stalls.get((count, "undisturbed"))
        ratio = load.p99_ms / base.p99_ms if base and base.p99_ms else float("nan")
        stall.rows.append([f"{count:,}", name, _ms(load.p50_ms), _ms(load.p99_ms), f"{ratio:.2f}",
                           str(load.errors)])
    pages.append(stall)
    rules = Report("Scale: use_backend rules (the request matches the last)", [],
                   ["rules", "proxy", "rps", "CPU µs / request", "errors"], "rlrrr", info=info)
    for (count, proxy), (load, us) in bench.rules.items():
        rules.rows.append([f"{count:,}", proxy, f"{load.rps:,.0f}", f"{us:.1f}", str(load.errors)])
    pages.append(rules)
    return pages


def counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    add_common_options(parser, duration=5.0, quick=2.0, output=RESULTS / "scale.md")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--servers", type=counts, default=[10, 100, 1000, 5000])
    parser.add_argument("--stall-servers", type=counts, default=[1000, 5000],
                        help="server counts at which the stall runs are made")
    parser.add_argument("--rules", type=counts, default=[10, 100, 1000])
    args = parser.parse_args(argv)
    args.loadgen = resolve_loadgen(args.loadgen)
    if args.loadgen != "wrk":
        parser.error("bench.scale needs wrk")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    notes: list[str] = []
    with Session.open("bench.scale", argv) as run:
        ports = free_ports(BACKEND_PORTS)
        nginx = run.stack.enter_context(Proc("nginx", nginx_ports_argv(run.workdir, ports), run.workdir,
                                             run.cpus.backend))
        nginx.wait_for_port(ports[-1])
        bench = Bench(args, run, ports, notes)
        for count in args.servers:
            bench.per_request(count)
        for count in args.rules:
            bench.rule_runs(count)
        pages = report(bench, run.command, run.info)
    text = "\n".join(page.render() for page in pages)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
