"""Throughput and CPU per request: lbproxy against HAProxy, nginx, Caddy and a naive aiohttp proxy.

The backend is nginx answering a fixed ~100-byte 200 (one worker, keep-alive without a
request limit): fast enough that the proxy, not the backend, is the bottleneck. nginx and
`wrk -t1` share CPU 0; each proxy runs alone on CPU 1, one process and one thread, and the
targets run one after the other. lbproxy runs twice: with `format: off` (the access log
off, as the other proxies) and with its default config (a JSON access log line per
request to stdout, which goes to a file).

For each target and connection count: a warm-up whose figures are dropped, then `--runs`
runs of `--duration` s. CPU per request is the utime+stime of the proxy's whole process
tree over a run divided by the replies completed; the table gives its median over the runs,
its range, and the median as a multiple of HAProxy's at the same connection count. "proxy
CPU" is the share of its core the proxy used: near 100 % the proxy is the bottleneck; well
below, the load generator or the backend is, and the CPU per request of an event loop
that wakes up for fewer requests at a time is inflated.

    python -m bench.throughput [--quick] [--duration 5] [--runs 3] [--rounds 1] [--warmup 2] [--connections 50,500]
        [--targets direct,lbproxy,lbproxy-default,haproxy,nginx,caddy,naive-aiohttp] [--backend nginx|demo]

Writes the Markdown table to stdout and to bench/results/throughput.md. bench.bodies and
bench.tls start their targets through `Bench` and measure other loads.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.harness import (Backend, Cpus, Proc, Session, add_common_options, choose, free_port, noted,
                           resolve_loadgen, start_backends, start_checked, start_nginx_backend)
from bench.loadgen import PLAIN, Runs, Schedule, Variety, measure
from bench.report import RESULTS, Report, now_utc, times
from bench.targets import PROXIES, Target, Tls

TARGETS = ["direct", *PROXIES]
REFERENCE = "haproxy"          # the "× HAProxy" column divides by its CPU per request
LOGGING = "lbproxy-default"    # writes an access log line per request to its stdout


@dataclass(frozen=True)
class Row:
    target: str
    load: str                  # the connection count here; a load's name in bench.bodies and bench.tls
    measured: Runs             # CPU of the proxy's tree; none for direct


@dataclass
class Bench:
    """One run's settings, its backend and what it has gathered so far. A target is started
    pinned, checked to proxy (over TLS given `tls`), measured by `measure_target`, stopped;
    a target that fails becomes a note and the next one runs."""

    schedule: Schedule
    connections: list[int]
    cpus: Cpus
    backend: Backend
    workdir: Path
    tls: Tls | None = None
    rounds: int = 1
    known: dict[str, Target] = field(default_factory=lambda: dict(PROXIES))   # by name
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    log_lines: dict[str, int] = field(default_factory=dict)   # access log lines written, by target

    def run_target(self, name: str) -> None:
        if name == "direct":
            self.measure_target(name, self.backend.port, None)
            return
        target = self.known[name]
        if reason := target.missing():
            self.notes.append(f"**{name}** skipped: {reason}")
            return
        port = free_port()
        with noted(self.notes, name) as stack:
            argv = target.command(self.workdir, port, [self.backend.port], self.tls)
            proxy = start_checked(stack, name, argv, self.workdir, self.cpus.proxy, port, https=self.tls is not None)
            self.measure_target(name, port, proxy)

    def measure_target(self, name: str, port: int, proxy: Proc | None) -> None:
        """Every connection count in turn. Direct (no proxy) runs wrk on the proxy's free CPU."""
        schedule = self.schedule if proxy else replace(self.schedule, cpus=self.cpus.proxy)
        for connections in self.connections:
            self.measure_load(name, str(connections), self.url(port), connections, proxy, schedule=schedule)
        if name == LOGGING and proxy is not None:
            self.log_lines[name] = self.log_lines.get(name, 0) + proxy.stdout_path.read_bytes().count(b"\n")

    def log_notes(self) -> list[str]:
        """How many access log lines each logging target wrote: a log that drops lines under load
        would be cheap."""
        return [f"**{name}** wrote {lines:,} access log lines to its stdout (a file) for the "
                f"{sum(row.measured.replies for row in self.rows if row.target == name):,} replies wrk counted, "
                "warm-ups included (the start check and the requests cut off at the end of each run are "
                "logged, not counted)." for name, lines in self.log_lines.items()]

    def run_rounds(self, session: Session, targets: list[str]) -> None:
        """Every target in turn, `rounds` times over, each round's runs joining the earlier
        ones: a drift of the machine's speed then touches every target alike, where one
        target's runs all in a row would catch it alone."""
        for round_number in range(1, self.rounds + 1):
            for name in targets:
                session.step(name if self.rounds == 1 else f"{name}, round {round_number} of {self.rounds}")
                self.run_target(name)
        self.notes[:] = dict.fromkeys(self.notes)        # a round's notes repeat the first's

    def measure_load(self, name: str, load: str, url: str, connections: int, proxy: Proc | None,
                     variety: Variety = PLAIN, schedule: Schedule | None = None) -> None:
        """One load, added as a row; a failure becomes a note and the next load runs."""
        with noted(self.notes, f"{name}, {load}"):
            if proxy is not None and (code := proxy.exit_code()) is not None:
                raise RuntimeError(f"{name} exited with status {code} during an earlier load")
            measured = measure(url, connections, schedule or self.schedule, [proxy] if proxy else [], variety)
            self.add(Row(name, load, measured))

    def add(self, row: Row) -> None:
        """A measured load, joined to its runs of earlier rounds."""
        for index, earlier in enumerate(self.rows):
            if (earlier.target, earlier.load) == (row.target, row.load):
                self.rows[index] = replace(earlier, measured=earlier.measured.joined(row.measured))
                return
        self.rows.append(row)

    def url(self, port: int, path: str = "/") -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}{path}"

    def reference_cpu(self, load: str) -> float | None:
        """HAProxy's median CPU µs per request for `load`, when it ran."""
        return next((row.measured.cpu().median for row in self.rows
                     if row.target == REFERENCE and row.load == load), None)

    def figures(self, row: Row) -> list[str]:
        """rps, p50, p99, then CPU µs/req: median, range, × HAProxy (dashes without a proxy)."""
        measured = row.measured
        load = [f"{measured.rps.median:,.0f}", f"{measured.p50_ms:.2f}", f"{measured.p99_ms:.2f}"]
        if not measured.cpu_us:
            return [*load, "–", "–", "–"]
        cpu = measured.cpu()
        return [*load, f"{cpu.median:.1f}", cpu.range(), times(cpu.median, self.reference_cpu(row.load))]

    @property
    def backend_text(self) -> str:
        if self.backend.name == "nginx":
            return "nginx (1 worker, a fixed ~100-byte answer, keep-alive without a request limit)"
        return "one Python demo backend process (`lbproxy.demo.backend`, 16-byte answer)"

    def describe(self) -> str:
        """The measuring, for a report's intro."""
        schedule = self.schedule
        tool = "`wrk -t1`" if schedule.tool == "wrk" else "`bench.loadgen` (wrk not installed)"
        rounds = (f"; the targets ran one after the other {self.rounds} times over (a warm-up in each round), "
                  f"and each figure is over all {self.rounds * schedule.runs} runs" if self.rounds > 1 else "")
        return (f"Load from {tool}; per target and load a {schedule.warmup:g} s warm-up, then {schedule.runs} "
                f"runs of {schedule.duration:g} s{rounds}. Backend: {self.backend_text}. {self.cpus.describe()} "
                "CPU µs/req is utime+stime of the proxy's process tree over a run divided by the replies: the "
                "median of the runs, their range (min–max) "
                f"and the median over {REFERENCE}'s for the same load. rps, p50 and p99 are medians of the runs; "
                "errors (socket errors, timeouts over 5 s, non-2xx/3xx replies) are summed.")


def positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return number


def add_rounds_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=positive, default=1,
                        help="run the targets one after the other this many times over, each figure over all "
                        "rounds (default 1): on a machine whose speed drifts, compare with 3 or more")


def schedule(args: argparse.Namespace, cpus: Cpus) -> Schedule:
    return Schedule(args.duration, args.runs, args.warmup, args.loadgen, cpus.loadgen)


def report(bench: Bench, command: str, info: dict[str, str]) -> Report:
    page = Report(
        "Throughput: lbproxy, HAProxy, nginx, Caddy and a naive aiohttp proxy",
        [f"`{command}` on {now_utc()}: `GET /` through one proxy to the backend, keep-alive on both sides. "
         "lbproxy: `format: off` (no access log, as the others); lbproxy-default: its default config, a JSON "
         "access log line per request on stdout (to a file). HAProxy: nbthread 1, `http-reuse always`, "
         "`option forwardfor`; nginx: 1 worker, upstream keepalive; Caddy: GOMAXPROCS=1, `reverse_proxy`. "
         "Direct is wrk to the backend, wrk on the proxies' CPU.",
         bench.describe() + " proxy CPU: the share of its core the proxy used (median)."],
        ["target", "conns", "rps", "p50 ms", "p99 ms", "CPU µs/req", "min–max", "× HAProxy", "proxy CPU",
         "errors"],
        "lrrrrrrrrr", notes=bench.notes + bench.log_notes(), info=info)
    for row in bench.rows:
        busy = f"{row.measured.busy().median:.0%}" if row.measured.cpu_us else "–"
        page.rows.append([row.target, row.load, *bench.figures(row), busy, str(row.measured.errors)])
    return page


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n")[0])
    add_common_options(parser, duration=5.0, quick=2.0, output=RESULTS / "throughput.md", warmup=2.0, runs=3)
    add_rounds_option(parser)
    parser.add_argument("--connections", default="50,500", help="comma-separated (default 50,500)")
    parser.add_argument("--backend", choices=["nginx", "demo"], default="nginx",
                        help="demo: the Python demo backend instead, the easy case where it, not the proxy, "
                        "is the bottleneck (what this benchmark measured before issue 15)")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated from {','.join(TARGETS)}")
    args = parser.parse_args(argv)
    args.targets = choose(parser, args.targets, TARGETS, "target")
    args.connections = [int(c) for c in args.connections.split(",")]
    args.loadgen = resolve_loadgen(args.loadgen)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with Session.open("bench.throughput", argv) as run:
        backend = start_nginx_backend(run.stack, run.workdir, run.cpus.backend) if args.backend == "nginx" \
            else start_backends(run.stack, run.workdir, [0.0], run.cpus.backend)[0]
        bench = Bench(schedule(args, run.cpus), args.connections, run.cpus, backend, run.workdir,
                      rounds=args.rounds)
        bench.run_rounds(run, args.targets)
    report(bench, run.command, run.info).publish(args.output)


if __name__ == "__main__":
    main()
