"""Process plumbing shared by the benchmarks: free ports, pinned children, CPU time, machine facts.

Every child runs in its own session (process group) so that stopping it also stops what
it forked (nginx's worker, a shell's grandchildren), and its output goes to files, never
to pipes that could fill up and stall it mid-run.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from types import TracebackType

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


def http_get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
    """One request through a target, to prove it proxies before it is measured."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


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
        "wrk": tool_version(["wrk", "-v"]),
    }
