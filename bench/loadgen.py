"""Closed-loop HTTP load: wrk when installed, else this module's own asyncio client.

Both hold N keep-alive connections, each sending `GET PATH` as soon as its previous reply is
complete, for a fixed duration, and report the same `LoadResult`. The built-in client is a
fallback: one Python process saturates a core well below what HAProxy or nginx can serve,
so prefer wrk for comparing fast proxies. Either runs as its own (pinned) process.

    python -m bench.loadgen http://127.0.0.1:8080/ -c 50 -d 10 [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools
import uvloop

from bench.harness import REPO, pinned

WRK_TIMEOUT = "5s"   # a reply slower than this is a wrk timeout error, not a latency sample
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass(frozen=True)
class LoadResult:
    tool: str
    requests: int        # replies completed within the run
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int          # socket errors, timeouts and non-2xx/3xx replies


def run_load(url: str, connections: int, duration: float, cpus: str | None, tool: str) -> LoadResult:
    """Drive `url` with `tool` ("wrk" or "builtin") pinned to `cpus`; RuntimeError if it fails."""
    if tool == "wrk":
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "--timeout", WRK_TIMEOUT, url]
    else:
        argv = [sys.executable, "-m", "bench.loadgen", url, "-c", str(connections), "-d", str(duration), "--json"]
    done = subprocess.run(pinned(argv, cpus), capture_output=True, text=True, timeout=duration + 60, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    return parse_wrk(done.stdout) if tool == "wrk" else LoadResult(**json.loads(done.stdout))


def parse_wrk(text: str) -> LoadResult:
    """Read wrk's `--latency` report."""
    def number(pattern: str) -> float:
        found = re.search(pattern, text)
        if not found:
            raise RuntimeError(f"unexpected wrk output (no {pattern!r}):\n{text}")
        return float(found.group(1))

    def percentile(label: str) -> float:
        found = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        return float(found.group(1)) * _UNITS[found.group(2)] if found else float("nan")

    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    bad_status = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = sum(map(int, socket_errors.groups())) if socket_errors else 0
    return LoadResult(
        tool="wrk", requests=int(number(r"(\d+) requests in")), seconds=number(r"requests in ([\d.]+)s"),
        rps=number(r"Requests/sec:\s+([\d.]+)"), p50_ms=percentile("50"), p99_ms=percentile("99"),
        errors=errors + (int(bad_status.group(1)) if bad_status else 0))


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending the next request when a reply completes."""

    _transport: asyncio.Transport              # set by connection_made, before any other callback

    def __init__(self, load: _Load) -> None:
        self._load = load
        self._parser = httptools.HttpResponseParser(self)
        self._sent_at = 0.0
        self._status = 0
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send()

    def _send(self) -> None:
        self._busy = True
        self._sent_at = time.perf_counter()
        self._transport.write(self._load.request)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._transport.close()  # connection_lost counts it

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_message_complete(self) -> None:
        self._busy = False
        if not self._load.record(time.perf_counter() - self._sent_at, self._status):
            self._transport.close()
        elif self._parser.should_keep_alive():
            self._send()
        else:
            self._transport.close()  # connection_lost reconnects

    def connection_lost(self, exc: Exception | None) -> None:
        self._load.lost(failed=self._busy)


class _Load:
    """Shared state of one run: the request bytes, samples, errors and the deadline."""

    def __init__(self, host: str, port: int, path: str, duration: float) -> None:
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        self.latencies: list[float] = []
        self.errors = 0
        self._host, self._port = host, port
        self._deadline = time.perf_counter() + duration
        self._reconnects: set[asyncio.Task[None]] = set()

    def record(self, latency: float, status: int) -> bool:
        """Count one reply; False once the run is over (the caller then stops)."""
        if time.perf_counter() > self._deadline:
            return False
        self.latencies.append(latency)
        if not 200 <= status < 400:
            self.errors += 1
        return True

    def lost(self, failed: bool) -> None:
        if time.perf_counter() > self._deadline:
            return
        self.errors += failed
        task = asyncio.get_running_loop().create_task(self.connect())
        self._reconnects.add(task)
        task.add_done_callback(self._reconnects.discard)

    async def connect(self) -> None:
        try:
            await asyncio.get_running_loop().create_connection(lambda: _Connection(self), self._host, self._port)
        except OSError:
            self.errors += 1
            await asyncio.sleep(0.01)          # a refusing target must not turn this into a busy loop
            self.lost(failed=False)


async def builtin_load(url: str, connections: int, duration: float) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    load = _Load(host, port, parts.path or "/", duration)
    started = time.perf_counter()
    await asyncio.gather(*(load.connect() for _ in range(connections)))
    await asyncio.sleep(max(0.0, duration - (time.perf_counter() - started)))
    seconds = time.perf_counter() - started
    samples = sorted(load.latencies)

    def percentile(q: float) -> float:
        return samples[min(len(samples) - 1, int(q * len(samples)))] * 1e3 if samples else float("nan")

    return LoadResult("builtin", len(samples), seconds, len(samples) / seconds, percentile(0.5), percentile(0.99),
                      load.errors)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description="closed-loop HTTP/1.1 load")
    parser.add_argument("url")
    parser.add_argument("-c", "--connections", type=int, default=50)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = uvloop.run(builtin_load(args.url, args.connections, args.duration))
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print(f"{result.requests} requests in {result.seconds:.2f}s: {result.rps:.0f} rps, "
              f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, {result.errors} errors")


if __name__ == "__main__":
    main()
