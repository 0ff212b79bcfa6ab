"""What rules cost: rps and CPU µs/request of lbproxy with ACL rules, stick-table tracking
and routing by map files.

One demo backend, lbproxy pinned to its own CPU, wrk (or the built-in client) on the
backend's CPU, as in bench.throughput, and the same `GET /` through these configurations:

- no rules;
- 50 `http_request` deny rules whose ACLs never match, a mix of `path_beg`, `hdr_sub(host)`,
  `src` (CIDRs) and `path_reg`, so every request evaluates all 50;
- tracking: `track_sc0: src` and a deny on `sc_http_req_rate(0) gt 1000000` (never true),
  with `stick_store: memory`;
- the same with `stick_store: redis://…`, against a throwaway redis-server (no persistence)
  started on a free port on the backend's CPU and stopped after;
- a Python plugin action that does nothing, plain and `async def` (what a plugin costs
  before it does any work), and `auth_request` whose allow answer is cached (no subrequest);
- one `use_backend` rule naming the backend (no condition), the baseline of the rest;
- 10, 1,000 and 10,000 `use_backend` rules `{ host hN.example.com }`, the last one
  matching the requests' host (127.0.0.1), so each request tests them all;
- one `use_backend` rule by template over a map file, each a hit for the requests sent
  (Host `127.0.0.1:PORT`, source 127.0.0.1): `host,map(...)` over 10, 1,000 and 100,000
  host names, and `hdr(host),lower,map(...)` over 100,000; `host,map_dom(...)` over
  100,000 domains (found as a parent domain, `0.1`, after three dict lookups, as
  `a.b.example.com` finds `example.com`); `src,map_ip(...)` over 90,000 IPv4 networks of
  17 prefix lengths (/16 to /32) and 10,000 IPv6 ones.

For the routing rows it also times the routing decision in process (the compiled
use_backend rules over a request object, best of 5 × 200,000 calls, fewer for thousands of
rules), which load-test noise does not blur: for `map_ip` both with one client (its memo
hit) and with 10,000 clients in turn.

    python -m bench.rules [--quick] [--duration 10] [--connections 50] [--loadgen auto|wrk|builtin]
                          [--only use_backend,plugin]

Writes bench/results/rules.md and rules.png.
"""

from __future__ import annotations

import argparse
import random
import shutil
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.harness import (Backend, Cpus, Proc, Session, add_common_options, free_port, noted, resolve_loadgen,
                           start_backends, start_checked, tool_version)
from bench.loadgen import LoadResult, run_load, run_metered
from bench.report import RESULTS, Report, now_utc
from bench.targets import lbproxy_argv, lbproxy_config
from lbproxy.proxy.request import Request
from lbproxy.routing.actions import FrontendRules
from lbproxy.routing.runtime import RuleRuntime
from lbproxy.runtime.validate import load_checked

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


MAP_ENTRIES = 100_000


def host_map(entries: int) -> Callable[[int], str]:
    """`entries` host names `hN.example.com`, the last the load generator's (`host` gives
    127.0.0.1, `hdr(host)` 127.0.0.1:PORT: both are there)."""
    def text(port: int) -> str:
        lines = [f"h{i}.example.com app" for i in range(entries - 2)]
        return "\n".join([*lines, f"127.0.0.1:{port} app", "127.0.0.1 app"]) + "\n"
    return text


def domain_map(_port: int) -> str:
    """MAP_ENTRIES domains; 127.0.0.1 is found as its parent `0.1` after three lookups."""
    lines = [f"d{i}.example.com app" for i in range(MAP_ENTRIES - 1)]
    return "\n".join([*lines, "0.1 app"]) + "\n"


def network_map(_port: int) -> str:
    """90% IPv4 networks of /16 to /32 (none holding 127.0.0.1), 10% IPv6 ones, and
    127.0.0.0/8, the clients' (seeded: the same file every run)."""
    rng = random.Random(18)
    lines = []
    while len(lines) < MAP_ENTRIES * 9 // 10:
        bits, number = rng.randrange(16, 33), rng.getrandbits(32)
        number &= ~((1 << (32 - bits)) - 1) & 0xFFFFFFFF
        if number >> 24 != 127:
            lines.append(f"{number >> 24}.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"
                         f"/{bits} app")
    while len(lines) < MAP_ENTRIES - 1:
        lines.append(f"2001:db8:{rng.getrandbits(16):x}:{rng.getrandbits(16):x}::/64 app")
    return "\n".join([*lines, "127.0.0.0/8 app"]) + "\n"


def by_template(template: str) -> dict[str, Any]:
    return {"use_backend": [{"backend": template}]}


def host_rules(count: int) -> dict[str, Any]:
    """`count` use_backend rules `{ host hN.example.com }`, the last one the load
    generator's host: every request tests them all, as a map hit does its lookup."""
    hosts = [f"h{i}.example.com" for i in range(count - 1)] + ["127.0.0.1"]
    return {"use_backend": [{"backend": "app", "if": f"{{ host {host} }}"} for host in hosts]}


NOOP_PLUGIN = """\
from lbproxy import ext

@ext.action("bench_noop")
def noop(req, args):
    return None

@ext.action("bench_noop_async")
async def noop_async(req, args):
    return None
"""
AUTH_CACHED = {"http_request": [{"auth_request": {
    "backend": "auth", "path": "/", "cache": {"ttl": "1h", "key": "%[hdr(host)]"}}}]}


@dataclass(frozen=True)
class Setup:
    name: str
    frontend: dict[str, Any]
    redis: bool = False       # stick tables in a throwaway redis-server
    files: dict[str, Callable[[int], str]] | None = None   # beside the YAML: name -> text for a port
    plugins: tuple[str, ...] = ()                          # of those files, the plugins to load
    auth_backend: bool = False    # a backend `auth` (the same demo server) for auth_request

    @property
    def routes(self) -> bool:
        """A routing setup: its use_backend decision is timed in process too."""
        return "use_backend" in self.name


PLAIN_RULE = "1 use_backend rule naming the backend"
HOST_COUNTS = (10, 1_000, 10_000)
MAP_SIZES = (10, 1_000, 100_000)
SETUPS = [
    Setup("no rules", {}),
    Setup(f"{RULES} ACL rules, none matching", acl_rules(RULES)),
    Setup("track_sc0 src + rate deny, stick_store: memory", TRACKING),
    Setup("track_sc0 src + rate deny, stick_store: redis", TRACKING, redis=True),
    Setup("a no-op plugin action", {"http_request": [{"bench_noop": None}]},
          files={"noop_plugin.py": lambda _port: NOOP_PLUGIN}, plugins=("noop_plugin.py",)),
    Setup("a no-op async plugin action", {"http_request": [{"bench_noop_async": None}]},
          files={"noop_plugin.py": lambda _port: NOOP_PLUGIN}, plugins=("noop_plugin.py",)),
    Setup("auth_request, the allow answer cached", AUTH_CACHED, auth_backend=True),
    Setup(PLAIN_RULE, {"use_backend": [{"backend": "app"}]}),
    *[Setup(f"{count:,} `host` use_backend rules, the last matching", host_rules(count))
      for count in HOST_COUNTS],
    *[Setup(f"use_backend by `host,map`, {size:,} hosts", by_template("%[host,map(hosts.map)]"),
            files={"hosts.map": host_map(size)}) for size in MAP_SIZES],
    Setup("use_backend by `hdr(host),lower,map`, 100,000 hosts",
          by_template("%[hdr(host),lower,map(hosts.map)]"), files={"hosts.map": host_map(MAP_ENTRIES)}),
    Setup("use_backend by `map_dom`, 100,000 domains", by_template("%[host,map_dom(domains.map)]"),
          files={"domains.map": domain_map}),
    Setup("use_backend by `map_ip`, 100,000 networks", by_template("%[src,map_ip(networks.map)]"),
          files={"networks.map": network_map}),
]


@dataclass(frozen=True)
class Row:
    setup: str
    load: LoadResult
    proxy_cpu_us: float
    redis_cpu_us: float | None
    route_us: str = "–"       # the routing decision timed in process


def route_us(config_path: Path, clients: int = 1) -> float:
    """µs per use_backend decision of the frontend `web` in `config_path`, over a request
    from Host 127.0.0.1:PORT and `clients` source addresses in turn (best of 5)."""
    config = load_checked(config_path)
    rules = FrontendRules(config.frontends["web"], RuleRuntime(config.backends), lambda _name: None)
    choices = rules.backend_choices({name: name for name in config.backends})
    port = config.frontends["web"].bind[0].address.port
    requests = []
    for index in range(clients):
        request = Request(SimpleNamespace(src=f"127.0.{(index + 1) >> 8 & 255}.{(index + 1) & 255}"))
        request.host_b = f"127.0.0.1:{port}".encode()
        requests.append(request)
    def decide(request: Request) -> str | None:
        for test, choose in choices:
            if test is None or test(request):
                backend = choose(request)
                if backend is not None:
                    return backend
        return None
    for request in requests:
        assert decide(request) == "app", "not a hit"
    calls = max(2_000, 200_000 // len(choices))      # 10,000 rules in a row take ~1 ms
    rounds = [request for _ in range(calls // clients) for request in requests]

    def route() -> None:
        for request in rounds:
            decide(request)
    return min(timeit.repeat(route, number=1, repeat=5)) / len(rounds) * 1e6


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
            if setup.plugins:
                global_["plugins"] = list(setup.plugins)
            port = free_port()
            config = lbproxy_config(port, [self.backend.port], frontend=setup.frontend, global_=global_)
            if setup.auth_backend:
                config["backends"]["auth"] = {"servers": [
                    {"name": "auth1", "address": f"127.0.0.1:{self.backend.port}"}]}
            for name, text in (setup.files or {}).items():      # beside the YAML that names them
                (self.workdir / name).write_text(text(port))
            argv = lbproxy_argv(self.workdir, config)
            route = "–"
            if setup.routes:
                route = f"{route_us(Path(argv[-1])):.2f}"
                if "map_ip" in setup.name:
                    route += f" ({route_us(Path(argv[-1]), clients=10_000):.2f} for 10,000 clients)"
            proxy = start_checked(stack, "lbproxy", argv, self.workdir, self.cpus.proxy, port)
            url = f"http://127.0.0.1:{port}/"
            if self.args.warmup > 0:
                run_load(url, self.args.connections, self.args.warmup, self.cpus.loadgen, self.args.loadgen)
            load, cpu = run_metered(url, self.args.connections, self.args.duration, self.cpus.loadgen,
                                    self.args.loadgen, [proxy, *([redis] if redis else [])])
            self.rows.append(Row(setup.name, load, cpu[0], cpu[1] if redis else None, route))


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
         "backends' CPU. Route µs is the use_backend decision alone, timed in this process (best of 5 × "
         "200,000): for `map_ip` with one client (the per-address memo hits) and with 10,000 in turn "
         "(it misses)."],
        ["setup", "rps", "p50 ms", "p99 ms", "lbproxy CPU µs/req", "+ µs/req", "redis CPU µs/req",
         "route µs", "errors"],
        "lrrrrrrrr", notes=bench.notes, info={**info, "redis": tool_version(["redis-server", "--version"])})
    for row in bench.rows:
        extra = row.proxy_cpu_us - base
        page.rows.append([row.setup, f"{row.load.rps:,.0f}", f"{row.load.p50_ms:.2f}", f"{row.load.p99_ms:.2f}",
                          f"{row.proxy_cpu_us:.1f}", "–" if extra != extra else f"{extra:+.1f}",
                          "–" if row.redis_cpu_us is None else f"{row.redis_cpu_us:.1f}", row.route_us,
                          str(row.load.errors)])
    plain = next((row for row in bench.rows if row.setup == PLAIN_RULE), None)
    for row in bench.rows:
        if plain is not None and "use_backend" in row.setup and row is not plain:
            page.notes.append(f"{row.setup}: {row.proxy_cpu_us - plain.proxy_cpu_us:+.1f} µs CPU per request "
                              f"against {PLAIN_RULE.lower()} in the load run; {float(row.route_us.split()[0]) - float(plain.route_us):+.2f} µs "
                              "per routing decision in process")
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
    parser.add_argument("--only", default="", help="run only the setups whose name holds one of "
                        "these comma-separated texts (e.g. use_backend or 'no rules,plugin')")
    args = parser.parse_args(argv)
    args.loadgen = resolve_loadgen(args.loadgen)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with Session.open("bench.rules", argv) as run:
        backend = start_backends(run.stack, run.workdir, [0.0], run.cpus.backend)[0]
        bench = Bench(args, run.cpus, backend, run.workdir, [], [])
        for setup in SETUPS:
            if not any(text in setup.name for text in args.only.split(",")):
                continue
            run.step(setup.name)
            bench.run(setup)
    report(bench, run.command, run.info).publish(args.output, plot(bench))


if __name__ == "__main__":
    main()
