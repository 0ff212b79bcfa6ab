"""`type: process`: servers are local processes started from `command` on ports of `ports`.

Each server runs `command` with `{port}` and `{host}` filled in, without a shell, in a
session of its own, so destroying it signals its whole process group (a wrapper script
and its children go together). It counts as created once `host:{port}` accepts a
connection. Every start and stop rewrites the state file (pid, process start time,
port), so a restarted autoscaler adopts the servers that are still running; the start
time (field 22 of /proc/PID/stat) guards against a recycled pid.

CPU and memory come from /proc: the summed utime+stime and RSS of every process in the
server's process group. CPU is percent of one core over the time since the last
reading (None on the first); memory is percent of MemTotal.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from lbproxy.autoscale.providers.base import (Instance, ProviderError, RecordedProvider,
                                              StateFile, Usage, free_port_in, log,
                                              wait_port)
from lbproxy.config.schema import ProviderConfig

START_TIMEOUT = 20.0    # seconds a new server gets to accept connections
STOP_TIMEOUT = 5.0      # seconds between SIGTERM and SIGKILL
STOP_POLL = 0.02
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PROC = Path("/proc")


def _stat_fields(pid: int | str) -> list[str] | None:
    """/proc/PID/stat from field 3 on (after the parenthesised command), or None."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot): with the pid, a process identity."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def group_usage(pgid: int) -> tuple[int, int]:
    """(utime+stime ticks, RSS bytes) summed over the live processes of group `pgid`."""
    ticks = rss = 0
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            ticks += int(fields[11]) + int(fields[12])
            rss += int(fields[21]) * PAGE_SIZE
    return ticks, rss


def mem_total() -> int:
    for line in (PROC / "meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise ProviderError("no MemTotal in /proc/meminfo")


class ProcessProvider(RecordedProvider):
    measures_usage = True

    def __init__(self, config: ProviderConfig, pool: str, state: StateFile | None = None) -> None:
        super().__init__(config, pool, state)
        self.stop_on_exit = not config.keep_on_exit
        self._children: dict[str, asyncio.subprocess.Process] = {}
        self._cpu: dict[str, tuple[float, int]] = {}     # id -> (monotonic time, ticks)
        self._starting: set[int] = set()     # ports picked by creates still in progress

    def _adoptable(self, record: dict[str, Any]) -> bool:
        return (super()._adoptable(record) and "pid" in record
                and start_ticks(record["pid"]) == record.get("started"))

    async def create(self) -> Instance:
        host = self.config.host
        ours = self._starting | {int(key) for key in self._records}
        port = free_port_in(host, self.config.ports, ours)
        command = (self.config.command or "").format(port=port, host=host)
        self._starting.add(port)
        try:
            proc = await asyncio.create_subprocess_exec(
                *shlex.split(command), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True)
        except OSError as exc:
            self._starting.discard(port)
            raise ProviderError(f"cannot run {command!r}: {exc}") from None
        try:
            await wait_port(host, port, START_TIMEOUT, alive=lambda: proc.returncode is None)
            if proc.returncode is not None:     # someone else answered on that port
                raise ProviderError(f"{command!r} exited with status {proc.returncode}")
        except BaseException:
            await self._stop_group(proc.pid, proc)
            raise
        finally:
            self._starting.discard(port)
        self._children[str(port)] = proc
        log.info("autoscale %s: started pid %d on %s:%d: %s", self.pool, proc.pid, host, port,
                 command)
        return self._remember({"id": str(port), "address": f"{host}:{port}", "pid": proc.pid,
                               "started": start_ticks(proc.pid), "command": command})

    async def destroy(self, instance_id: str) -> None:
        record = self._forget(instance_id)
        self._cpu.pop(instance_id, None)
        proc = self._children.pop(instance_id, None)
        if proc is None and start_ticks(record["pid"]) != record["started"]:
            return                      # already gone, and the pid may be someone else's now
        await self._stop_group(record["pid"], proc)
        log.info("autoscale %s: stopped pid %d (%s)", self.pool, record["pid"],
                 record["address"])

    async def _stop_group(self, pgid: int, proc: asyncio.subprocess.Process | None) -> None:
        """SIGTERM the group, SIGKILL it after STOP_TIMEOUT; reap our own child."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            if await self._exited(pgid, proc, STOP_TIMEOUT):
                break
        if proc is not None:
            await proc.wait()

    @staticmethod
    async def _exited(pid: int, proc: asyncio.subprocess.Process | None, timeout: float) -> bool:
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), timeout)
                return True
            except TimeoutError:
                return False
        deadline = time.monotonic() + timeout        # adopted: not our child, init reaps it
        while time.monotonic() < deadline:
            fields = _stat_fields(pid)
            if fields is None or fields[0] == "Z":
                return True
            await asyncio.sleep(STOP_POLL)
        return False

    async def list(self) -> list[Instance]:
        """Our servers, after forgetting those whose process has died."""
        for key, record in list(self._records.items()):
            proc = self._children.get(key)
            alive = (proc.returncode is None if proc is not None
                     else start_ticks(record["pid"]) == record["started"])
            if not alive:
                log.warning("autoscale %s: server %s (pid %d) exited%s", self.pool,
                            record["address"], record["pid"],
                            f" with status {proc.returncode}" if proc is not None else "")
                self._children.pop(key, None)
                self._cpu.pop(key, None)
                self._forget(key)
        return await super().list()

    async def usage(self, instance_id: str) -> Usage:
        record = self._records.get(instance_id)
        if record is None:
            return Usage(None, None)
        ticks, rss = group_usage(record["pid"])
        now = time.monotonic()
        previous = self._cpu.get(instance_id)
        self._cpu[instance_id] = (now, ticks)
        cpu = None
        if previous is not None and now > previous[0]:
            cpu = 100.0 * (ticks - previous[1]) / CLK_TCK / (now - previous[0])
        return Usage(cpu, 100.0 * rss / mem_total())
