"""Idle CPU of active health checks: lbproxy and HAProxy probing the same 1,000 or 5,000 servers.

    python -m bench.checks                       # 1,000 and 5,000 servers, none/tcp/http, 20 s each
    python -m bench.checks --quick --servers 1000   # 5 s windows
    python -m bench.checks --compare-src DIR     # also an older lbproxy (a checkout or `git archive`)

The servers are real listeners: one nginx worker (pinned to CPU 1) on `--ports` ports of
127.0.0.1 answers `200 ok` to every request, and server i of N points at port i mod
`--ports`. So every probe is a full TCP handshake (and, for `http`, a request and an
answer) as in production; a refused connect would be cheaper and flatter the figure.
Each proxy (pinned to CPU 0, alone on it) gets one backend of N servers with the same
checks: `interval` 2 s, timeout 1 s, rise 2, fall 3 (HAProxy: `check inter 2s`,
`timeout check 1s`, `option httpchk` with `http-check send ... ver HTTP/1.1 hdr Host`),
and no traffic. After `--warmup` seconds (the first checks are spread over the first
interval) its utime+stime is read from /proc/PID/stat over `--duration` seconds.

Probes are counted by the kernel, not assumed: the benchmark re-runs itself in a network
namespace of its own (as root, with `unshare`), where the TCP counters of /proc/net/snmp
see only its processes, and a probe is a connection the proxy opened whose handshake was
answered (ActiveOpens − AttemptFails, with the listeners' EmbryonicRsts given back). So
a proxy that probes less often than it should is not credited with a cheap probe, and a
tcp check that closes at the SYN-ACK, before the listener could accept it (HAProxy's, and
now lbproxy's), still counts. Without a namespace, nginx's stub_status `accepts` are
counted instead, which misses such tcp checks (their rows then say so). "µs per probe" is
the proxy's CPU over the window divided by those probes; "net" first subtracts the same
proxy's CPU with the same servers and no checks (its idle loop and timers), which is
what checks cost on top. On loopback, part of the kernel's TCP work for both ends runs in
the connecting process's context (softirq), so both proxies' figures include some of the
listener's share of the handshake, equally. Also reported: sockets in TIME_WAIT towards
the listener ports at the end of the window (a proxy that closes its checks with a FIN
keeps one per probe for 60 s on its side; RST keeps none; only those of the window count).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (CLK_TCK, REPO, Proc, Session, StartError, add_common_options, choose, free_port,
                           free_ports, noted, tree_cpu_seconds)
from bench.report import RESULTS, Report, now_utc
from bench.targets import lbproxy_argv, lbproxy_config

CHECKS = ["none", "tcp", "http"]
TARGETS = ["lbproxy", "haproxy"]
INTERVAL = 2.0          # seconds between two checks of a server, as in issue 22's table
TIMEOUT = 1.0
TIME_WAIT = "06"        # the state column of /proc/net/tcp
TIME_WAIT_SECONDS = 60     # Linux's TCP_TIMEWAIT_LEN
NETNS_ENV = "BENCH_CHECKS_NETNS"    # set in the re-run inside the benchmark's own namespace


@dataclass(frozen=True)
class Run:
    target: str
    servers: int
    check: str
    cpu_percent: float
    probes: int           # counted during the window (see ProbeCounter)
    seconds: float
    time_wait: int
    start_seconds: float  # from exec to its port accepting
    rss_mb: float         # at the end of the window

    @property
    def probes_per_second(self) -> float:
        return self.probes / self.seconds


# --- the listeners -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Listeners:
    """The nginx ports the servers point at, and its stub_status port."""

    ports: list[int]
    status_port: int


def listeners_argv(workdir: Path, listeners: Listeners) -> list[str]:
    """One nginx worker answering `200 ok` on every listener port, and its stub_status."""
    temp_paths = "".join(f"  {kind}_temp_path {workdir}/listeners-{kind};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""
    listens = "".join(f"    listen 127.0.0.1:{port} backlog=4096;\n" for port in listeners.ports)
    config = workdir / "listeners.conf"
    config.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {workdir}/listeners.pid;\nerror_log stderr error;\n"
        "worker_rlimit_nofile 40000;\nevents { worker_connections 20000; }\n"
        "http {\n  access_log off;\n" + temp_paths +
        f"  server {{\n{listens}    location / {{ return 200 \"ok\\n\"; }}\n  }}\n"
        f"  server {{\n    listen 127.0.0.1:{listeners.status_port};\n    location / {{ stub_status; }}\n  }}\n}}\n")
    return ["nginx", "-e", "stderr", "-p", str(workdir), "-c", str(config)]


def accepted(status_port: int) -> int:
    """nginx's `accepts` counter (this request included)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/", timeout=5) as response:
        text = response.read().decode()
    return int(text.splitlines()[2].split()[0])      # " accepts handled requests" then the numbers


def kernel_counters(path: str, prefix: str) -> dict[str, int]:
    """One table of /proc/net/snmp or /proc/net/netstat: its header line, then its values."""
    lines = [line.split() for line in Path(path).read_text().splitlines() if line.startswith(prefix)]
    return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))


def tcp_opened() -> int:
    """Connections opened from this network namespace whose handshake was answered: the
    connects, less those that failed. The listeners' side counts a failed attempt too when a
    check resets a connection it has not accepted yet (EmbryonicRsts): that is no failure."""
    tcp, ext = kernel_counters("/proc/net/snmp", "Tcp:"), kernel_counters("/proc/net/netstat", "TcpExt:")
    return tcp["ActiveOpens"] - (tcp["AttemptFails"] - ext["EmbryonicRsts"])


@dataclass(frozen=True)
class ProbeCounter:
    """How probes are counted here, and what the counting itself adds to a window."""

    label: str
    read: Callable[[], int]
    own: int                # counted per window that is no probe


def probe_counter(status_port: int) -> ProbeCounter:
    """The namespace's TCP counters when in one of its own, else the listeners' accepts."""
    if os.environ.get(NETNS_ENV):
        return ProbeCounter("TCP connections opened (and answered) in the benchmark's own network "
                            "namespace", tcp_opened, 0)
    # the second stub_status request is counted in the window
    return ProbeCounter("connections nginx accepted (this misses tcp checks that close at the "
                        "SYN-ACK, as HAProxy's do)", lambda: accepted(status_port), 1)


def rerun_in_own_netns(argv: list[str] | None) -> None:
    """Exec this benchmark again in a new network namespace with loopback up, when
    allowed (root, `unshare`); return (and count accepts) when not."""
    if os.environ.get(NETNS_ENV) or os.geteuid() != 0 or not shutil.which("unshare"):
        return
    if subprocess.run(["unshare", "--net", "true"], check=False, capture_output=True).returncode != 0:
        return
    os.environ[NETNS_ENV] = "1"
    command = shlex.join([sys.executable, "-m", "bench.checks", *(sys.argv[1:] if argv is None else argv)])
    os.execvp("unshare", ["unshare", "--net", "sh", "-c", f"ip link set lo up && exec {command}"])


def time_wait_towards(ports: set[int], within: float) -> int:
    """Sockets in TIME_WAIT whose remote or local port is one of `ports` (either side of a
    probe) and that entered it in the last `within` seconds (their 60 s timer tells)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == TIME_WAIT and (int(fields[1].rsplit(":", 1)[1], 16) in ports
                                           or int(fields[2].rsplit(":", 1)[1], 16) in ports):
                left = int(fields[5].split(":")[1], 16) / CLK_TCK      # "tr:tm->when", clock ticks
                count += left > TIME_WAIT_SECONDS - within
    return count


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --- the proxies --------------------------------------------------------------------------------

def server_ports(ports: list[int], count: int) -> list[int]:
    return [ports[i % len(ports)] for i in range(count)]


def lbproxy_checks_argv(workdir: Path, port: int, servers: list[int], check: str, src: Path | None) -> list[str]:
    backend = {} if check == "none" else {"health_check": {
        "type": check, "interval": f"{INTERVAL:g}s", "timeout": f"{TIMEOUT:g}s", "rise": 2, "fall": 3}}
    argv = lbproxy_argv(workdir, lbproxy_config(port, servers, backend=backend),
                        filename=f"lbproxy-{check}-{len(servers)}.yaml")
    if src is None:
        return argv
    # another source tree: -P keeps the working directory (this checkout) off sys.path
    return ["env", f"PYTHONPATH={src}", argv[0], "-P", *argv[1:]]


def haproxy_checks_argv(workdir: Path, port: int, servers: list[int], check: str) -> list[str]:
    suffix = "" if check == "none" else f" check inter {INTERVAL:g}s rise 2 fall 3"
    listed = "".join(f"    server app{i} 127.0.0.1:{server}{suffix}\n" for i, server in enumerate(servers, 1))
    http = ("    option httpchk\n    http-check send meth GET uri /health ver HTTP/1.1 hdr Host 127.0.0.1\n"
            "    http-check expect status 200-399\n") if check == "http" else ""
    config = workdir / f"haproxy-{check}-{len(servers)}.cfg"
    config.write_text(
        "global\n    nbthread 1\n    maxconn 2000\n"   # 5,000 checked servers need fds too
        "defaults\n    mode http\n"
        f"    timeout connect {TIMEOUT:g}s\n    timeout check {TIMEOUT:g}s\n"
        "    timeout client 30s\n    timeout server 30s\n"
        f"frontend web\n    bind 127.0.0.1:{port}\n    default_backend app\n"
        f"backend app\n    balance roundrobin\n{http}{listed}")
    return ["haproxy", "-db", "-f", str(config)]


def measure(session: Session, args: argparse.Namespace, name: str, argv: list[str], port: int, servers: int,
            check: str, count: ProbeCounter) -> Run:
    """Start the proxy, warm up, read its CPU and the probes counted over the window, stop it."""
    launched = time.monotonic()
    proc = session.stack.enter_context(Proc(f"{name}-{check}-{servers}", argv, session.workdir,
                                            session.cpus.proxy))
    try:
        proc.wait_for_port(port, timeout=60.0)
        start_seconds = time.monotonic() - launched
        time.sleep(args.warmup)
        if proc.exit_code() is not None:
            raise StartError(f"{name} exited with status {proc.exit_code()}\n{proc.stderr_tail()}")
        before_probes, before_cpu, started = count.read(), tree_cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.duration)
        after_cpu, ended, after_probes = tree_cpu_seconds(proc.pid), time.monotonic(), count.read()
        time_wait = time_wait_towards(args.listener_ports, time.monotonic() - started)
        rss_mb = rss_kib(proc.pid) / 1024
    finally:
        proc.stop()
    seconds = ended - started
    return Run(name, servers, check, 100.0 * (after_cpu - before_cpu) / seconds,
               after_probes - before_probes - count.own, seconds, time_wait, start_seconds, rss_mb)


# --- the report ---------------------------------------------------------------------------------

def rows(runs: list[Run]) -> list[list[str]]:
    idle = {(r.target, r.servers): r.cpu_percent for r in runs if r.check == "none"}
    out = []
    for run in runs:
        if run.check == "none":
            out.append([run.target, f"{run.servers:,}", "none", f"{run.cpu_percent:.2f}", "—", "—", "—",
                        str(run.time_wait), f"{run.start_seconds:.2f}", f"{run.rss_mb:.0f}"])
            continue
        expected = run.servers / INTERVAL
        gross = 1e4 * run.cpu_percent / max(run.probes_per_second, 1e-9)    # % of a core → µs per second
        base = idle.get((run.target, run.servers))
        net = "—" if base is None else f"{1e4 * (run.cpu_percent - base) / max(run.probes_per_second, 1e-9):.0f}"
        out.append([run.target, f"{run.servers:,}", run.check, f"{run.cpu_percent:.2f}",
                    f"{run.probes_per_second:,.0f} / {expected:,.0f}", f"{gross:.0f}", net, str(run.time_wait),
                    f"{run.start_seconds:.2f}", f"{run.rss_mb:.0f}"])
    return out


def ratios(runs: list[Run]) -> list[str]:
    """lbproxy's µs per probe against HAProxy's, per server count and check type."""
    by = {(r.target, r.servers, r.check): r for r in runs}
    notes = []
    for (target, servers, check), run in sorted(by.items()):
        other = by.get(("haproxy", servers, check))
        if not target.startswith("lbproxy") or check == "none" or other is None or not other.probes:
            continue
        mine = run.cpu_percent / max(run.probes_per_second, 1e-9)
        theirs = other.cpu_percent / other.probes_per_second
        notes.append(f"{target}, {servers:,} servers, {check}: {mine / theirs:.2f}× HAProxy's CPU per probe "
                     f"(target ≤ 1.5×)")
    return notes


def run(args: argparse.Namespace) -> Report:
    runs: list[Run] = []
    notes: list[str] = []
    targets = [(name, None) for name in args.targets]
    if args.compare_src:
        targets.insert(0, (f"lbproxy {args.compare_label}", args.compare_src))
    with Session.open("bench.checks", args.argv) as session:
        listeners = Listeners(free_ports(args.ports), free_port())
        nginx = session.stack.enter_context(Proc("listeners", listeners_argv(session.workdir, listeners),
                                                 session.workdir, session.cpus.backend))
        nginx.wait_for_port(listeners.status_port)
        count = probe_counter(listeners.status_port)
        args.listener_ports = set(listeners.ports)
        for servers in args.servers:
            for (name, src) in targets:
                if name == "haproxy" and not shutil.which("haproxy"):
                    notes.append("HAProxy is not installed (apt-get install -y haproxy): its rows are missing")
                    continue
                for check in args.checks:
                    session.step(f"{name}: {servers:,} servers, checks {check}")
                    port, listed = free_port(), server_ports(listeners.ports, servers)
                    argv = (haproxy_checks_argv(session.workdir, port, listed, check) if name == "haproxy" else
                            lbproxy_checks_argv(session.workdir, port, listed, check, src))
                    with noted(notes, f"{name} {check} {servers}"):
                        runs.append(measure(session, args, name, argv, port, servers, check, count))
    report = Report(
        title="Idle CPU of active health checks",
        intro=[(f"`{session.command}` on {now_utc()}: one backend of N servers, no traffic, checks every "
               f"{INTERVAL:g} s (timeout {TIMEOUT:g} s); the servers are {args.ports} nginx ports on 127.0.0.1 "
               f"answering 200. CPU: the proxy's utime+stime over {args.duration:g} s after {args.warmup:g} s of "
               f"warm-up, in % of one core. Probes: {count.label} in the window, against "
               f"N / interval. µs per probe: the CPU over the probes; net: after subtracting the same proxy's "
               f"CPU with no checks. Start: from exec to the port accepting; RSS at the end of the window. "
                f"{session.cpus.describe()}")],
        header=["proxy", "servers", "check", "CPU % of a core", "probes/s (seen / expected)", "µs per probe",
                "net µs per probe", "TIME_WAIT", "start s", "RSS MB"],
        align="lrlrrrrrrr",
        info=session.info,
    )
    report.rows = rows(runs)
    report.notes = ratios(runs) + notes
    report.publish(args.output)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.checks", description=__doc__.split("\n")[0])
    add_common_options(parser, duration=20.0, quick=5.0, output=RESULTS / "checks.md", loadgen=False)
    parser.set_defaults(warmup=2 * INTERVAL + 2.0)
    parser.add_argument("--servers", default="1000,5000", help="server counts (default 1000,5000)")
    parser.add_argument("--checks", default="none,tcp,http", help=f"some of {','.join(CHECKS)}")
    parser.add_argument("--targets", default="lbproxy,haproxy", help=f"some of {','.join(TARGETS)}")
    parser.add_argument("--ports", type=int, default=8, help="listener ports the servers share (default 8)")
    parser.add_argument("--compare-src", type=Path, default=None,
                        help="also run the lbproxy package found in this directory (e.g. `git archive` of a "
                             "commit), before the current one")
    parser.add_argument("--compare-label", default="before", help="its name in the table (default: before)")
    args = parser.parse_args(argv)
    args.argv = argv
    args.servers = [int(n) for n in args.servers.split(",")]
    args.checks = choose(parser, args.checks, CHECKS, "check")
    args.targets = choose(parser, args.targets, TARGETS, "target")
    os.chdir(REPO)
    rerun_in_own_netns(argv)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
