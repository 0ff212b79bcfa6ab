"""`lbproxy autoscale` end to end: a real proxy with its runtime API, the autoscaler as a
subprocess driving it over HTTP only, demo backends started by the process provider, and
a paced load that rises and falls. No client request may fail while servers come and go,
and nothing started is left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lbproxy.autoscale.providers.base import STATE_DIR_ENV
from tests.harness import Reader, connect, free_port, wait_for, write_config

AUTH = {"username": "admin", "password": "s3cret"}
TARGET_RPS = 25           # per server: 2 servers hold 50 req/s, 150 req/s wants the max of 4
MAX_REQUESTS = 5000       # the load generator's hard bounds
MAX_SECONDS = 40.0


class PacedLoad:
    """A few keep-alive connections sending GET / at `rate` requests/s in total."""

    def __init__(self, port: int, connections: int = 3) -> None:
        self.port = port
        self.rate = 0.0
        self.ok = 0
        self.failures: list[str] = []
        self._sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + MAX_SECONDS
        self._threads = [threading.Thread(target=self._connection, args=(connections,),
                                          daemon=True) for _ in range(connections)]

    def __enter__(self) -> PacedLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _take(self) -> bool:
        with self._lock:
            self._sent += 1
            return self._sent <= MAX_REQUESTS

    def _connection(self, share: int) -> None:
        sock, reader = None, None
        due = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            if self.rate <= 0:
                time.sleep(0.05)
                due = time.monotonic()
                continue
            due = max(due + share / self.rate, time.monotonic() - 1.0)
            time.sleep(max(0.0, due - time.monotonic()))
            if not self._take():
                return
            try:
                if sock is None:
                    sock = connect(self.port)
                    reader = Reader(sock)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
                response = reader.read_response()
                if response.status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"status {response.status}")
                if (response.header("connection") or "").lower() == "close":
                    sock.close()
                    sock = None
            except OSError as exc:
                self.failures.append(repr(exc))
                sock = None
        if sock is not None:
            sock.close()


def demo_command() -> str:
    return f"{sys.executable} -m lbproxy.demo.backend --port {{port}} --name as{{port}}"


def config(stats_port: int, low: int, **pool: Any) -> dict:
    return {
        "global": {"log": {"format": "off"}},
        "stats": {"bind": f"127.0.0.1:{stats_port}", "admin": True, "auth": AUTH},
        "frontends": {"web": {"bind": [f"127.0.0.1:{free_port()}"], "default_backend": "app"}},
        "backends": {"app": {"health_check": {"path": "/health", "interval": "200ms",
                                              "timeout": "500ms", "rise": 1, "fall": 2}}},
        "autoscale": {
            "api": {"url": f"http://127.0.0.1:{stats_port}", **AUTH},
            "pools": {"app": {
                "provider": {"type": "process", "command": demo_command(),
                             "ports": f"{low}-{low + 40}"},
                "min": 2, "max": 4, "interval": "500ms",
                "metrics": [{"type": "requests_per_second_per_server", "target": TARGET_RPS}],
                "scale_up": {"cooldown": "1s", "max_step": 4},
                "scale_down": {"cooldown": "2s", "stabilization": "2s", "max_step": 1},
                "drain_timeout": "2s", **pool}}},
    }


class Autoscaler:
    """`python -m lbproxy autoscale -c PATH` with its state dir and stdout in `tmp`."""

    def __init__(self, path: str, tmp: Path, *args: str) -> None:
        self.out = tmp / "autoscale.out"
        self.err = tmp / "autoscale.err"
        env = {**os.environ, STATE_DIR_ENV: str(tmp)}
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lbproxy", "autoscale", "-c", path, *args],
                stdout=out, stderr=err, env=env, start_new_session=True)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line]

    def decisions(self) -> list[dict]:
        return [line for line in self.lines() if line.get("event") == "decision"]


def active(proxy: Any) -> list[str]:
    """The names of servers that take traffic now (UP and ready)."""
    return proxy.call(lambda: [s.name for s in proxy.engine.backends["app"].servers
                               if s.usable])


def demo_pids(low: int) -> list[int]:
    """Demo backends on our port range still running (processes we started)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"lbproxy.demo.backend" in cmdline and any(
                arg.startswith(b"as") and arg[2:].isdigit() and low <= int(arg[2:]) <= low + 40
                for arg in cmdline):
            found.append(int(entry.name))
    return found


@pytest.fixture
def setup(tmp_path: Path, proxy: Any) -> Any:
    stats_port, low = free_port(), free_port()
    cfg = config(stats_port, low)
    path = write_config(cfg, str(tmp_path))
    p = proxy(cfg)
    yield p, path, low
    for pid in demo_pids(low):           # only if a test failed half-way
        os.killpg(pid, signal.SIGKILL)


def test_load_up_adds_servers_load_down_removes_them_without_a_failed_request(
        setup: Any, tmp_path: Path) -> None:
    p, path, low = setup
    scaler = Autoscaler(path, tmp_path)
    try:
        wait_for(lambda: len(active(p)) == 2, timeout=15)      # min 2 from an empty backend
        with PacedLoad(p.port) as load:
            load.rate = 20
            time.sleep(1.5)
            assert len(active(p)) == 2
            load.rate = 150                                    # wants 6, max 4
            wait_for(lambda: len(active(p)) == 4, timeout=12)
            time.sleep(1.0)
            load.rate = 10
            wait_for(lambda: len(p.call(lambda: p.engine.backends["app"].servers)) == 2,
                     timeout=20)
            time.sleep(0.5)
        assert load.failures == [], load.failures[:5]
        assert load.ok > 150                                   # the load really ran
        wait_for(lambda: len(demo_pids(low)) == 2, timeout=10)    # the drained ones stopped
        assert scaler.stop() == 0
    finally:
        scaler.kill()
    assert demo_pids(low) == []
    assert not (tmp_path / "lbproxy-autoscale-app.json").exists()
    decisions = scaler.decisions()
    actions = [d["action"] for d in decisions]
    assert "scale_up" in actions and "scale_down" in actions
    up = next(d for d in decisions if d["action"] == "scale_up" and d["current"] == 2)
    assert up["inputs"]["metrics"]["requests_per_second_per_server"] > TARGET_RPS
    assert "Traceback" not in scaler.err.read_text()


def test_restart_adopts_running_servers_and_a_proxy_restart_gets_them_back(
        setup: Any, tmp_path: Path, proxy: Any) -> None:
    p, path, low = setup
    first = Autoscaler(path, tmp_path)
    try:
        wait_for(lambda: len(active(p)) == 2, timeout=15)
        first.kill()                                   # SIGKILL: no cleanup at all
        pids = demo_pids(low)
        assert len(pids) == 2
        names = sorted(active(p))
        p.stop()                                       # the proxy restarts empty
        p2 = proxy(config_from(path))
        second = Autoscaler(path, tmp_path)
        try:
            wait_for(lambda: sorted(active(p2)) == names, timeout=15)
            assert sorted(demo_pids(low)) == sorted(pids)   # adopted, none started
            assert second.stop() == 0
        finally:
            second.kill()
    finally:
        first.kill()
    assert demo_pids(low) == []


def config_from(path: str) -> str:
    return Path(path).read_text()


def test_a_restart_under_steady_load_does_not_scale_on_startup_noise(
        tmp_path: Path, proxy: Any) -> None:
    """Issue 21: right after a start, three samples of a flat rate made a "trend" with a
    high R², and the forecast asked for servers. Restarted under a steady load, the
    sidecar now waits for half its window, and then sees no significant trend."""
    stats_port, low = free_port(), free_port()
    cfg = config(stats_port, low, min=2,
                 predictive={"enabled": True, "window": "5s", "horizon": "5s"})
    path = write_config(cfg, str(tmp_path))
    p = proxy(cfg)
    first = Autoscaler(path, tmp_path)
    second = None
    try:
        wait_for(lambda: len(active(p)) == 2, timeout=15)
        with PacedLoad(p.port) as load:
            load.rate = 30                           # 15 per server of 25: keep 2
            wait_for(lambda: load.ok >= 60, timeout=10)   # steady before the restart
            first.kill()                             # its servers stay; the next adopts them
            second = Autoscaler(path, tmp_path)
            wait_for(lambda: len(second.decisions()) >= 20, timeout=30)
        assert load.failures == [], load.failures[:5]
        assert second.stop() == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()
        for pid in demo_pids(low):
            os.killpg(pid, signal.SIGKILL)
    decisions = second.decisions()
    assert [d["desired"] for d in decisions] == [2] * len(decisions), [
        (i, d["desired"], d["inputs"]) for i, d in enumerate(decisions) if d["desired"] != 2]
    notes = [d["inputs"]["predictive"]["note"] for d in decisions]
    assert notes[0].startswith("forecast needs 50% of the 5s window")
    judged = [d["inputs"]["predictive"] for d in decisions
              if d["inputs"]["predictive"]["forecast"] is not None]
    assert judged, notes                             # the window did fill and was judged
    assert all(p["applied"] is False for p in judged)
