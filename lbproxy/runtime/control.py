"""Where a supervisor and its workers meet, and the pidfile.

With `global.workers` > 1 the supervisor makes a private control directory (mode 0700);
worker K serves its admin app on `worker-K.sock` there and creates `worker-K.ready` once
it listens. The pidfile names the process that takes SIGHUP: the supervisor's, or the
single process's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def socket_path(control: str, index: int) -> str:
    return os.path.join(control, f"worker-{index}.sock")


def ready_path(control: str, index: int) -> str:
    return os.path.join(control, f"worker-{index}.ready")


@dataclass(frozen=True)
class WorkerRole:
    """This process is worker `index` of `count` under a supervisor: its listeners share
    their ports (SO_REUSEPORT), its admin app is private on its control socket, and only
    worker 0 runs active health checks (the supervisor passes their results on)."""

    index: int
    count: int
    control: str

    @property
    def socket(self) -> str:
        return socket_path(self.control, self.index)

    def announce_ready(self) -> None:
        open(ready_path(self.control, self.index), "w").close()


def write_pidfile(path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")


def remove_pidfile(path: str | None) -> None:
    if path and os.path.exists(path):
        os.unlink(path)
