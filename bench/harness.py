"""Process plumbing shared by the benchmarks: free ports, pinned children, CPU time, machine facts.

Also what every benchmark does the same way: its setting (`Session`: work directory,
CPU layout, machine facts), demo backends (`start_backends`), a target checked to proxy
before it is measured (`start_checked`) within `noted` (a failure becomes a note in the
report, and the next target runs), and the command-line options (`add_common_options`).

Every child runs in its own session (process group) so that stopping it also stops what
it forked (nginx's worker, a shell's grandchildren), and its output goes to files, never
to pipes that could fill up and stall it mid-run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import TracebackType

from bench.targets import nginx_backend_argv, nginx_origin_argv

REPO = Path(__file__).resolve().parent.parent   # children run here, so `python -m bench.x` resolves
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 15.0   # python -m lbproxy imports a lot on a cold cache; haproxy/nginx need < 1 s


class StartError(Exception):
    """A child that exited or never opened its port; the message carries its stderr tail."""


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1; free unless something races us for it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: the sockets stay bound until all are chosen, so the
    kernel cannot hand out one port twice."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def raise_fd_limit() -> None:
    """500 client plus 500 server connections per proxy outgrow the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def pinned(argv: list[str], cpus: str | None) -> list[str]:
    """`argv` under `taskset -c CPUS` (taskset execs, so the pid stays that of the program)."""
    return ["taskset", "-c", cpus, *argv] if cpus and shutil.which("taskset") else argv


class Proc:
    """A benchmark child: started pinned, in its own process group, always stopped on exit."""

    def __init__(self, name: str, argv: list[str], logdir: Path, cpus: str | None = None) -> None:
        self.name = name
        self.argv = pinned(argv, cpus)
        self.stdout_path = logdir / f"{name}.out"
        self.stderr_path = logdir / f"{name}.err"
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._popen is not None, "not started"
        return self._popen.pid

    def start(self) -> Proc:
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self._popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                           cwd=REPO, start_new_session=True)
        return self

    def wait_for_port(self, port: int, timeout: float = START_TIMEOUT) -> None:
        """Poll until `port` accepts a connection; StartError if the child dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exit_code() is not None:
                raise StartError(f"{self.name} exited with status {self.exit_code()}\n{self.stderr_tail()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise StartError(f"{self.name} did not listen on 127.0.0.1:{port} within {timeout:.0f}s\n"
                         f"{self.stderr_tail()}")

    def exit_code(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def stderr_tail(self, lines: int = 15) -> str:
        text = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the whole group (graceful shutdown), then SIGKILL whatever is left of it."""
        if self._popen is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self._signal_group(signal.SIGKILL)     # a leader that ignored SIGTERM, or orphaned workers
        self._popen.wait()

    def kill(self) -> None:
        """SIGKILL the whole group, as a crashed host vanishes, and reap it; `start` may
        run it again (on the same port: the demo backend binds with SO_REUSEADDR)."""
        if self._popen is not None:
            self._signal_group(signal.SIGKILL)
            self._popen.wait()

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def __enter__(self) -> Proc:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime of `pid` and its live descendants, plus what their reaped children used."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # fields after "(comm)": state ppid ... utime(14) stime cutime cstime, 1-based overall
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue                       # exited while we looked
            ticks = sum(int(value) for value in fields[11:15])
            stats[int(entry.name)] = (int(fields[1]), ticks / CLK_TCK)
    total, frontier = 0.0, [pid]
    while frontier:
        current = frontier.pop()
        total += stats.get(current, (0, 0.0))[1]
        frontier.extend(child for child, (parent, _) in stats.items() if parent == current)
    return total


def memory_kb(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM (peak RSS) of `pid`, in KiB, from /proc/PID/status."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":" in line)
    return int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])   # "  123456 kB"


def fd_links(pid: int) -> list[str]:
    """What each open fd of `pid` points to (`socket:[INODE]`, a path, `anon_inode:[eventpoll]`)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    links = []
    for fd in os.listdir(fd_dir):
        try:
            links.append(os.readlink(fd_dir / fd))
        except OSError:
            pass                                   # closed while we looked
    return links


def http_get(port: int, path: str = "/", timeout: float = 5.0, https: bool = False) -> tuple[int, bytes]:
    """One request through a target, to prove it proxies before it is measured (https: unverified)."""
    context = ssl._create_unverified_context() if https else None   # throwaway self-signed certificates
    url = f"{'https' if https else 'http'}://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass(frozen=True)
class Cpus:
    """taskset CPU lists; the load generator shares the backends' CPU so the proxy has one alone.

    The proxy gets CPU 1: CPU 0 is where the kernel tends to run what is not bound elsewhere."""

    proxy: str | None
    backend: str | None
    loadgen: str | None

    @classmethod
    def for_machine(cls) -> Cpus:
        return cls("1", "0", "0") if (os.cpu_count() or 1) >= 2 else cls(None, None, None)

    def describe(self) -> str:
        return (f"CPUs: proxy {self.proxy or 'any'}, backends {self.backend or 'any'}, "
                f"load generator {self.loadgen or 'any'}.")


@dataclass(frozen=True)
class Backend:
    """A backend process and where it listens: a demo backend (`lbproxy.demo.backend`), or
    nginx as a fast one (`start_nginx_backend`, which has no /_stats for `requests`)."""

    name: str
    port: int
    proc: Proc

    def requests(self) -> int:
        """Requests it has answered so far, from its /_stats (which it does not count)."""
        return int(json.loads(http_get(self.port, "/_stats")[1])["requests"])


def start_backends(stack: ExitStack, workdir: Path, latencies: list[float], cpus: str | None) -> list[Backend]:
    """Demo backends app1..appN, one process each, `latencies[i]` seconds added to every reply;
    stopped when `stack` closes."""
    backends = []
    for i, latency in enumerate(latencies, 1):
        name, port = f"app{i}", free_port()
        argv = [sys.executable, "-m", "lbproxy.demo.backend", "--port", str(port), "--name", name,
                "--latency", str(latency)]
        backends.append(Backend(name, port, stack.enter_context(Proc(name, argv, workdir, cpus))))
    for backend in backends:      # started all at once: their imports overlap
        backend.proc.wait_for_port(backend.port)
    return backends


def start_nginx_backend(stack: ExitStack, workdir: Path, cpus: str | None, sizes: Sequence[int] = ()) -> Backend:
    """`targets.nginx_backend_argv` started: a fixed ~100-byte answer, and `/bytes/N` for each of
    `sizes`; stopped when `stack` closes."""
    port = free_port()
    proc = stack.enter_context(Proc("nginx-backend", nginx_backend_argv(workdir, port, sizes), workdir, cpus))
    proc.wait_for_port(port)
    return Backend("nginx", port, proc)


@dataclass(frozen=True)
class Origin:
    """An nginx origin serving files (bench.targets.nginx_origin_argv) and where it listens."""

    port: int
    proc: Proc

    def requests(self) -> int:
        """Requests it has served so far (its stub_status; each reading counts one)."""
        status = http_get(self.port, "/_status")[1].decode()
        return int(status.split("requests")[1].split()[2])


def start_origin(stack: ExitStack, workdir: Path, files: dict[str, bytes], cpus: str | None) -> Origin:
    """nginx serving `files` (name -> content; `index.html` answers `GET /` as a demo backend
    would) with Cache-Control max-age; stopped when `stack` closes."""
    root = workdir / "origin"
    root.mkdir()
    for name, content in {"index.html": b"hello from the nginx origin\n", **files}.items():
        (root / name).write_bytes(content)
    port = free_port()
    proc = stack.enter_context(Proc("nginx-origin", nginx_origin_argv(workdir, port, root), workdir, cpus))
    proc.wait_for_port(port)
    return Origin(port, proc)


def start_checked(stack: ExitStack, name: str, argv: list[str], workdir: Path, cpus: str | None, port: int,
                  https: bool = False) -> Proc:
    """Start a proxy and prove `GET /` comes back from a demo backend; StartError otherwise."""
    proc = stack.enter_context(Proc(name, argv, workdir, cpus))
    proc.wait_for_port(port)
    status, body = http_get(port, https=https)
    if status != 200 or not body.startswith(b"hello from"):
        raise StartError(f"GET / answered {status} {body[:80]!r}\n{proc.stderr_tail()}")
    return proc


def add_common_options(parser: argparse.ArgumentParser, duration: float, quick: float, output: Path,
                       loadgen: bool = True, warmup: float = 1.0, runs: int | None = None) -> None:
    """--duration, --quick, --warmup, --output, (unless the scenario needs the built-in client)
    --loadgen, and (when `runs` is given) --runs, as every benchmark takes them."""
    parser.add_argument("--duration", type=float, default=duration, help=f"seconds per measured run "
                        f"(default {duration:g})")
    parser.add_argument("--quick", action="store_const", dest="duration", const=quick, help=f"{quick:g} s runs")
    parser.add_argument("--warmup", type=float, default=warmup, help="seconds of unmeasured load before each "
                        f"load (default {warmup:g})")
    if runs is not None:
        parser.add_argument("--runs", type=int, default=runs, help=f"measured runs per load, reported as median "
                            f"and range (default {runs})")
    if loadgen:
        parser.add_argument("--loadgen", choices=["auto", "wrk", "builtin"], default="auto",
                            help="auto: wrk when installed")
    parser.add_argument("--output", type=Path, default=output, help="the Markdown report (a PNG goes beside it)")


def choose(parser: argparse.ArgumentParser, text: str, choices: list[str], what: str) -> list[str]:
    """A comma-separated option's items, all among `choices`, or a usage error naming the others."""
    chosen = text.split(",")
    if unknown := set(chosen) - set(choices):
        parser.error(f"unknown {what}(s) {', '.join(sorted(unknown))}; choose from {', '.join(choices)}")
    return chosen


def resolve_loadgen(choice: str) -> str:
    return "wrk" if choice == "auto" and shutil.which("wrk") else "builtin" if choice == "auto" else choice


def first_line(exc: BaseException) -> str:
    return str(exc).partition("\n")[0]


def failure_note(name: str, exc: BaseException) -> str:
    """A Markdown note for a target that failed: its first line, then the rest (stderr) as a block."""
    rest = str(exc).partition("\n")[2].strip() or "(no stderr)"
    return f"**{name}** failed: {first_line(exc)}\n\n```\n{rest}\n```"


def tool_version(argv: list[str]) -> str:
    """First line a tool prints about its version (nginx and wrk print it to stderr)."""
    if not shutil.which(argv[0]):
        return "not installed"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    return {
        "CPU": model.group(1) if model else platform.processor() or "unknown",
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "load average before the run": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "Python": sys.version.split()[0],
        "uvloop": package_version("uvloop"),
        "httptools": package_version("httptools"),
        "aiohttp": package_version("aiohttp"),
        "haproxy": tool_version(["haproxy", "-v"]),
        "nginx": tool_version(["nginx", "-v"]),
        "caddy": tool_version(["caddy", "version"]),
        "wrk": tool_version(["wrk", "-v"]),
        "lbproxy/ measured at": lbproxy_commit(),
    }


def lbproxy_commit() -> str:
    """The last commit that changed lbproxy/ (what a run measures), and whether it has local changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()
    if not shutil.which("git"):
        return "unknown (no git)"
    commit = git("log", "-1", "--format=%h %s", "--", "lbproxy")
    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--", "lbproxy") else ""
    return f"{commit}{dirty}" if commit else "unknown (not a git checkout)"


@contextmanager
def noted(notes: list[str], name: str) -> Iterator[ExitStack]:
    """An ExitStack for one target's processes; failing to start or to load it becomes a note."""
    try:
        with ExitStack() as stack:
            yield stack
    except (StartError, OSError) as exc:
        notes.append(failure_note(name, exc))
    except RuntimeError as exc:
        notes.append(f"**{name}** load run failed: {first_line(exc)}")


@dataclass(frozen=True)
class Session:
    """What one benchmark run shares: how it was invoked, the machine as it started, the CPU
    layout, a work directory and an ExitStack for processes living through the whole run."""

    command: str
    info: dict[str, str]
    cpus: Cpus
    workdir: Path
    stack: ExitStack

    @classmethod
    @contextmanager
    def open(cls, prog: str, argv: list[str] | None) -> Iterator[Session]:
        raise_fd_limit()
        command = " ".join([f"python -m {prog}", *(sys.argv[1:] if argv is None else argv)])
        info = machine_info()   # now, so the load average is the one the run started under
        with tempfile.TemporaryDirectory(prefix="lbproxy-bench-") as tmp, ExitStack() as stack:
            yield cls(command, info, Cpus.for_machine(), Path(tmp), stack)

    @staticmethod
    def step(name: str) -> None:
        """Say on stderr what runs now: a full run takes minutes."""
        print(f"-- {name}", file=sys.stderr, flush=True)
