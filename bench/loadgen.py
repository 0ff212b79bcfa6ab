"""Closed-loop HTTP load: wrk when installed, else this module's own asyncio client.

Both hold N keep-alive connections, each sending `GET PATH` as soon as its previous reply is
complete, for a fixed duration, and report the same `LoadResult`. The built-in client is a
fallback: one Python process saturates a core well below what HAProxy or nginx can serve,
so prefer wrk for comparing fast proxies. Either runs as its own (pinned) process.

The built-in client also does what the scenario benchmarks need and wrk cannot: cycle
through several paths (so `balance uri` spreads), open each connection from its own
127.0.0.x source address (so `balance source` spreads), and save every reply's completion
time, latency and outcome (`--samples`) to see what happened around an event. Both send
`Connection: close` with `--close` (a new connection, and over https a new TLS handshake,
per request), any header given with `--header`, and POST a body of N bytes with every
request with `--upload N`.

`measure` runs one load the way the comparisons do: a warm-up, then several runs, each
with the CPU per reply of the watched process trees, summed up as median and range.

    python -m bench.loadgen http://127.0.0.1:8080/ -c 50 -d 10 [--json] [--close]
        [--header "Accept-Encoding: gzip" ...] [--path /a --path /b ...] [--source 127.0.0.2 --source 127.0.0.3 ...]
        [--samples FILE] [--upload BYTES]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import re
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import httptools
import uvloop

from bench.harness import REPO, Proc, pinned, tree_cpu_seconds
from bench.report import Spread

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


@dataclass(frozen=True)
class Variety:
    """What the built-in client varies: paths cycled per request, source addresses per connection."""

    paths: Sequence[str] = ()
    sources: Sequence[str] = ()
    close: bool = False                       # `Connection: close` on every request (wrk too)
    headers: Sequence[str] = ()               # "Name: value" lines added to every request (wrk too)
    samples: Path | None = None               # where the built-in client saves its Samples
    upload: int = 0                           # bytes of body POSTed with every request (wrk too)

    @property
    def argv(self) -> list[str]:
        """The same, as `python -m bench.loadgen` options."""
        return [*(arg for path in self.paths for arg in ("--path", path)),
                *(arg for source in self.sources for arg in ("--source", source)),
                *(["--close"] if self.close else []),
                *(arg for header in self.headers for arg in ("--header", header)),
                *(["--samples", str(self.samples)] if self.samples else []),
                *(["--upload", str(self.upload)] if self.upload else [])]

    @property
    def needs_builtin(self) -> bool:
        return bool(self.paths or self.sources or self.samples)


PLAIN = Variety()


def run_load(url: str, connections: int, duration: float, cpus: str | None, tool: str,
             variety: Variety = PLAIN) -> LoadResult:
    """Drive `url` with `tool` ("wrk" or "builtin") pinned to `cpus`; RuntimeError if it fails."""
    if tool == "wrk":
        if variety.needs_builtin:
            raise ValueError("paths, sources and samples need the built-in load generator")
        headers = [*variety.headers, *(["Connection: close"] if variety.close else [])]
        seconds = max(1, round(duration))   # wrk takes whole seconds only
        with tempfile.TemporaryDirectory(prefix="lbproxy-wrk-") as tmp:
            script = ["-s", _upload_script(Path(tmp), variety.upload)] if variety.upload else []
            argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", WRK_TIMEOUT,
                    *(arg for header in headers for arg in ("-H", header)), *script, url]
            done = subprocess.run(pinned(argv, cpus), capture_output=True, text=True, timeout=duration + 60,
                                  cwd=REPO)
    else:
        argv = [sys.executable, "-m", "bench.loadgen", url, "-c", str(connections), "-d", str(duration), "--json",
                *variety.argv]
        done = subprocess.run(pinned(argv, cpus), capture_output=True, text=True, timeout=duration + 60, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    return parse_wrk(done.stdout) if tool == "wrk" else LoadResult(**json.loads(done.stdout))


def _upload_script(directory: Path, size: int) -> str:
    """A wrk script POSTing `size` bytes with every request (wrk adds the Content-Length)."""
    path = directory / "upload.lua"
    path.write_text(f'wrk.method = "POST"\nwrk.body = string.rep("x", {size})\n'
                    'wrk.headers["Content-Type"] = "application/octet-stream"\n')
    return str(path)


def run_metered(url: str, connections: int, duration: float, cpus: str | None, tool: str,
                watched: Sequence[Proc], variety: Variety = PLAIN) -> tuple[LoadResult, list[float]]:
    """`run_load`, plus the CPU µs per reply each watched process tree spent over the run."""
    before = [tree_cpu_seconds(proc.pid) for proc in watched]
    load = run_load(url, connections, duration, cpus, tool, variety)
    after = [tree_cpu_seconds(proc.pid) for proc in watched]
    return load, [(end - start) / max(load.requests, 1) * 1e6 for start, end in zip(before, after)]


@dataclass(frozen=True)
class Repeated:
    """Several metered runs of one load: the run with the median CPU/req of the first watched
    tree (its result and every tree's CPU), that first tree's CPU/req over all runs, and the
    replies of all runs."""

    load: LoadResult
    cpu_us: list[float]
    runs_cpu_us: list[float]
    requests: int

    def spread(self) -> str:
        return f"{min(self.runs_cpu_us):.1f}–{max(self.runs_cpu_us):.1f}"


def run_repeated(url: str, connections: int, duration: float, cpus: str | None, tool: str,
                 watched: Sequence[Proc], repeat: int, variety: Variety = PLAIN) -> Repeated:
    """`run_metered` `repeat` times (on a shared machine one run can be an outlier), no
    warm-up: `measure`'s runs, told by the run with the median CPU of the first tree."""
    runs = measure(url, connections, Schedule(duration, repeat, 0.0, tool, cpus), watched, variety)
    first = runs.cpu_us[0]
    middle = sorted(range(len(first)), key=first.__getitem__)[len(first) // 2]
    return Repeated(runs.runs[middle], [tree[middle] for tree in runs.cpu_us], first,
                    sum(run.requests for run in runs.runs))


@dataclass(frozen=True)
class Schedule:
    """How a load is measured: `warmup` s whose figures are dropped (fills pools, opens the
    connections), then `runs` runs of `duration` s each, from `tool` pinned to `cpus`."""

    duration: float
    runs: int
    warmup: float
    tool: str
    cpus: str | None


@dataclass(frozen=True)
class Runs:
    """The runs of one load: each run's result, and each watched process tree's CPU µs per
    reply in each run (`cpu_us[tree][run]`)."""

    runs: list[LoadResult]
    cpu_us: list[list[float]]
    warmups: tuple[LoadResult, ...] = ()

    def joined(self, other: Runs) -> Runs:
        """These runs and `other`'s: the same load measured again, in a later round."""
        return Runs(self.runs + other.runs, [mine + theirs for mine, theirs in zip(self.cpu_us, other.cpu_us)],
                    self.warmups + other.warmups)

    def cpu(self, tree: int = 0) -> Spread:
        return Spread.of(self.cpu_us[tree])

    def busy(self, tree: int = 0) -> Spread:
        """How much of one CPU the tree used over each run (1.0 = all of it)."""
        return Spread.of([cpu * run.rps / 1e6 for cpu, run in zip(self.cpu_us[tree], self.runs)])

    @property
    def rps(self) -> Spread:
        return Spread.of([run.rps for run in self.runs])

    @property
    def p50_ms(self) -> float:
        return Spread.of([run.p50_ms for run in self.runs]).median

    @property
    def p99_ms(self) -> float:
        return Spread.of([run.p99_ms for run in self.runs]).median

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)

    @property
    def replies(self) -> int:
        """Replies completed in the runs and the warm-ups."""
        return sum(run.requests for run in self.runs + list(self.warmups))


def measure(url: str, connections: int, schedule: Schedule, watched: Sequence[Proc],
            variety: Variety = PLAIN) -> Runs:
    """`schedule`'s warm-up, then its runs of `run_metered`, each on fresh client connections."""
    warmup = run_load(url, connections, schedule.warmup, schedule.cpus, schedule.tool, variety) \
        if schedule.warmup > 0 else None
    metered = [run_metered(url, connections, schedule.duration, schedule.cpus, schedule.tool, watched, variety)
               for _ in range(schedule.runs)]
    return Runs([load for load, _ in metered], [list(tree) for tree in zip(*(cpu for _, cpu in metered))],
                (warmup,) if warmup else ())


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

    def __init__(self, load: _Load, source: str | None) -> None:
        self._load = load
        self._source = source
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
        self._transport.write(self._load.next_request())

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
        self._load.lost(self._source, failed=self._busy)


@dataclass
class Samples:
    """Every outcome of a run, by when it happened (seconds since `origin`, a time.time()): replies
    with their latency and status, and failed connections (status 0, latency NaN)."""

    origin: float = 0.0
    at: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)

    def add(self, at: float, latency_ms: float, status: int) -> None:
        self.at.append(at)
        self.latency_ms.append(latency_ms)
        self.status.append(status)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> Samples:
        return cls(**json.loads(path.read_text()))

    def window(self, start: float, end: float) -> Samples:
        """The outcomes within [start, end)."""
        kept = [i for i, at in enumerate(self.at) if start <= at < end]
        return Samples(self.origin, [self.at[i] for i in kept], [self.latency_ms[i] for i in kept],
                       [self.status[i] for i in kept])

    @property
    def errors(self) -> int:
        return sum(not 200 <= status < 400 for status in self.status)

    def percentile_ms(self, q: float) -> float:
        """Latency quantile of the replies (errors with a status included, failed connections not)."""
        replies = sorted(latency for latency in self.latency_ms if not math.isnan(latency))
        return replies[min(len(replies) - 1, int(q * len(replies)))] if replies else float("nan")


class _Load:
    """Shared state of one run: the request bytes, samples, errors and the deadline."""

    def __init__(self, host: str, port: int, paths: Sequence[str], duration: float, close: bool,
                 tls: ssl.SSLContext | None, headers: Sequence[str] = (), upload: int = 0) -> None:
        extra = "".join(f"{header}\r\n" for header in [*headers, *(["Connection: close"] if close else [])])
        method, body = ("POST", f"Content-Length: {upload}\r\n") if upload else ("GET", "")
        requests = [f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}{body}\r\n".encode()
                    + b"x" * upload for path in paths]
        self.next_request = itertools.cycle(requests).__next__
        self._host, self._port, self._tls = host, port, tls
        self._started = time.perf_counter()
        self.samples = Samples(origin=time.time())
        self._deadline = self._started + duration
        self._reconnects: set[asyncio.Task[None]] = set()

    def record(self, latency: float, status: int) -> bool:
        """Count one reply; False once the run is over (the caller then stops)."""
        now = time.perf_counter()
        if now > self._deadline:
            return False
        self.samples.add(now - self._started, latency * 1e3, status)
        return True

    def lost(self, source: str | None, failed: bool) -> None:
        now = time.perf_counter()
        if now > self._deadline:
            return
        if failed:
            self.samples.add(now - self._started, math.nan, 0)
        task = asyncio.get_running_loop().create_task(self.connect(source))
        self._reconnects.add(task)
        task.add_done_callback(self._reconnects.discard)

    async def connect(self, source: str | None) -> None:
        try:
            await asyncio.get_running_loop().create_connection(
                lambda: _Connection(self, source), self._host, self._port, ssl=self._tls,
                local_addr=(source, 0) if source else None)
        except OSError:
            self.samples.add(time.perf_counter() - self._started, math.nan, 0)
            await asyncio.sleep(0.01)          # a refusing target must not turn this into a busy loop
            self.lost(source, failed=False)


def _client_tls() -> ssl.SSLContext:
    """Encrypt but do not verify: the benchmarks use throwaway self-signed certificates."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def builtin_load(url: str, connections: int, duration: float, variety: Variety = PLAIN) -> LoadResult:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if https else 80)
    load = _Load(host, port, variety.paths or [parts.path or "/"], duration, variety.close,
                 _client_tls() if https else None, variety.headers, variety.upload)
    sources = itertools.cycle(variety.sources or [None])
    started = time.perf_counter()
    await asyncio.gather(*(load.connect(next(sources)) for _ in range(connections)))
    await asyncio.sleep(max(0.0, duration - (time.perf_counter() - started)))
    seconds = time.perf_counter() - started
    samples = load.samples
    if variety.samples:
        samples.save(variety.samples)
    replies = sum(status != 0 for status in samples.status)
    return LoadResult("builtin", replies, seconds, replies / seconds, samples.percentile_ms(0.5),
                      samples.percentile_ms(0.99), samples.errors)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description="closed-loop HTTP/1.1 load")
    parser.add_argument("url")
    parser.add_argument("-c", "--connections", type=int, default=50)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--close", action="store_true", help="send Connection: close (a new connection per request)")
    parser.add_argument("--header", action="append", default=[], help='add "Name: value" to every request '
                        "(repeatable)")
    parser.add_argument("--path", action="append", default=[], help="request these paths in turn (repeatable)")
    parser.add_argument("--source", action="append", default=[],
                        help="open connections from these local addresses in turn (repeatable)")
    parser.add_argument("--samples", type=Path, help="save every outcome's time, latency and status here (JSON)")
    parser.add_argument("--upload", type=int, default=0, help="POST this many bytes with every request")
    args = parser.parse_args(argv)
    variety = Variety(args.path, args.source, args.close, args.header, args.samples, args.upload)
    result = uvloop.run(builtin_load(args.url, args.connections, args.duration, variety))
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print(f"{result.requests} requests in {result.seconds:.2f}s: {result.rps:.0f} rps, "
              f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, {result.errors} errors")


if __name__ == "__main__":
    main()
