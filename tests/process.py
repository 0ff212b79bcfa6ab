"""Running lbproxy as a real subprocess, for signals, exit codes and memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

from tests.harness import free_port, wait_for

__all__ = ["LbproxyProcess", "free_port", "port_open"]


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class LbproxyProcess:
    """`python -m lbproxy ARGS` in its own process group; killed on exit if still alive."""

    def __init__(self, *args: str, wait_port: int | None = None,
                 preexec_fn: Callable[[], None] | None = None,
                 cwd: str | os.PathLike[str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "lbproxy", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, preexec_fn=preexec_fn, cwd=cwd)
        if wait_port is not None:
            wait_for(lambda: port_open(wait_port) or self.proc.poll() is not None, 15)
            if self.proc.poll() is not None:
                raise AssertionError(f"lbproxy exited: {self.proc.stderr.read().decode()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kb(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 15) -> int:
        return self.proc.wait(timeout)

    def __enter__(self) -> LbproxyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
