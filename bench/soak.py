"""Soak: ten minutes of mixed traffic, kills and reloads through one lbproxy; RSS and fds must stay flat.

One `lbproxy run -c FILE` (pinned like the other benchmarks, a stats bind for /metrics, the
JSON access log written to a file, h2c beside HTTP/1.1 on its bind) balances four demo
backends with retries, redispatch, passive ejection and active checks (bench.failover's
"active + passive" setup). For `--duration` seconds (600; `--quick`: 60):

- the clients of `bench.mixed` run all the time: keep-alive, a connection per request, POST
  bodies, slow and stalled request heads, slow and stalled readers, one HTTP/2 connection;
- every `--kill-every` s (60; quick 20), half a period in, one backend in turn gets SIGKILL and
  is started again `DOWN` s later on the same port;
- every `--reload-every` s (10) the config is rewritten with app1's weight flipped 1↔2 and
  lbproxy gets SIGHUP (bench.reload's `Reloader`);
- every `--row-every` s (30; quick 10), a row: the outcomes of the interval by kind, and
  lbproxy's RSS (VmRSS), open fds (/proc/PID/fd), client connections (/metrics), reloads
  applied ("configuration reloaded" lines) and kills so far.

The verdict compares the mean RSS and fds of the last `WINDOW` rows with those of the first
`WINDOW` rows at or after `--warmup` (2 rows in): flat is RSS within `RSS_GROWTH` and fds
within `FD_GROWTH`. Errors are attributed to the kill windows (from a kill until `KILL_GRACE`
s after its restart), to the `RELOAD_GRACE` s after a reload, or to neither. Also reported:
the fds and RSS with no load before and after (pooled server connections closed), the
access log's lines, and lbproxy's warnings and errors.

    python -m bench.soak [--quick] [--duration 600] [--row-every 30] [--kill-every 60]

Only 127.0.0.1, bounded in time; every process it starts is stopped at the end, also on
Ctrl-C or an error. Writes bench/results/soak.md.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

from bench import mixed
from bench.failover import ACTIVE, PASSIVE, RETRIES
from bench.harness import (Backend, Proc, Session, StartError, add_common_options, fd_links, free_port,
                           http_get, memory_kb, start_backends, start_checked)
from bench.mixed import KINDS, Error, Mix, Traffic
from bench.reload import RELOADED, Reloader, log_count
from bench.report import RESULTS, Report, now_utc
from bench.targets import lbproxy_config

HTTP_REQUEST_TIMEOUT = "5s"  # stalled heads get their 408 this soon; slow heads take ~1.4 s
SERVER_TIMEOUT = "10s"       # stalled readers are cut this soon (the server side waits on them)
DOWN = 3.0                   # seconds a killed backend stays dead: active checks (500 ms, fall 2) see it
KILL_GRACE = 3.0             # after its restart, errors still belong to a kill (checks rise in ~1 s)
RELOAD_GRACE = 2.0
IDLE_SETTLE = 6.0            # after the load: over the pool's 4 s idle timeout, so server connections close
RSS_GROWTH = 0.10            # flat: the last rows' RSS within 10 % of the rows after warm-up
FD_GROWTH = 10               # and their fds within 10: client connections come and go between samples
WINDOW = 2                   # rows averaged at each end
CONNECTIONS = re.compile(r'^lbproxy_frontend_current_sessions\{frontend="web"\} (\S+)$', re.M)
UNEXPECTED_ANYWHERE = ("connect", "timeout", "other", "hung")   # errors no kill or reload explains


# --- rows and the verdict (pure) ---------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    elapsed: float
    counts: Counter[str]     # outcomes in the interval, by bench.mixed kind
    rss_kb: int
    fds: int
    connections: int         # lbproxy_frontend_current_sessions
    reloads: int             # applied so far
    kills: int               # so far

    @property
    def requests(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Verdict:
    rows_before: tuple[float, ...]   # elapsed of the rows after warm-up that are compared
    rows_after: tuple[float, ...]
    rss_before_kb: float
    rss_after_kb: float
    fds_before: float
    fds_after: float

    @property
    def rss_flat(self) -> bool:
        return self.rss_after_kb <= self.rss_before_kb * (1 + RSS_GROWTH)

    @property
    def fds_flat(self) -> bool:
        return self.fds_after - self.fds_before <= FD_GROWTH

    def line(self) -> str:
        growth = (self.rss_after_kb / self.rss_before_kb - 1) * 100
        words = {True: "flat", False: "**GROWING**"}
        at = lambda rows: "/".join(f"{elapsed:.0f}" for elapsed in rows)
        return (f"RSS {words[self.rss_flat]}: {self.rss_before_kb / 1024:.1f} MB at {at(self.rows_before)} s → "
                f"{self.rss_after_kb / 1024:.1f} MB at {at(self.rows_after)} s ({growth:+.1f} %, limit "
                f"+{RSS_GROWTH:.0%}); fds {words[self.fds_flat]}: {self.fds_before:.1f} → {self.fds_after:.1f} "
                f"({self.fds_after - self.fds_before:+.1f}, limit +{FD_GROWTH}).")


def judge(rows: list[Row], warmup: float, window: int = WINDOW) -> Verdict | None:
    """Mean RSS and fds of the first `window` rows at or after `warmup` s against the last
    `window` rows; None when there are not 2 × `window` rows from `warmup` on."""
    settled = [row for row in rows if row.elapsed >= warmup]
    if len(settled) < 2 * window:
        return None
    before, after = settled[:window], settled[-window:]
    mean = lambda values: sum(values) / len(values)
    return Verdict(tuple(r.elapsed for r in before), tuple(r.elapsed for r in after),
                   mean([r.rss_kb for r in before]), mean([r.rss_kb for r in after]),
                   mean([r.fds for r in before]), mean([r.fds for r in after]))


def when(at: float, kills: list[tuple[float, float]], reloads: list[float]) -> tuple[str, float]:
    """"kill" inside a kill window, "reload" within RELOAD_GRACE s after a reload (`reloads`
    sorted), else "elsewhere"; and the seconds since the last reload (-1: none yet)."""
    last = bisect.bisect_right(reloads, at) - 1
    since = at - reloads[last] if last >= 0 else -1.0
    if any(start <= at <= end for start, end in kills):
        return "kill", since
    return ("reload" if 0 <= since <= RELOAD_GRACE else "elsewhere"), since


def attribute(errors: list[Error], kills: list[tuple[float, float]], reloads: list[float]) -> Counter[tuple[str, str]]:
    """(kind, "kill" | "reload" | "elsewhere") per error, as `when` places it."""
    return Counter((kind, when(at, kills, reloads)[0]) for at, kind, _ in errors)


def unexplained(errors: list[Error], kills: list[tuple[float, float]], reloads: list[float], started: float,
                most: int = 12) -> list[str]:
    """The first `most` errors outside every kill window: when, how long after a reload, why."""
    lines = []
    for at, _, reason in errors:
        where, since = when(at, kills, reloads)
        if where != "kill" and len(lines) < most:
            lines.append(f"{at - started:.1f} s ({since:.1f} s after a reload): {reason}")
    return lines


# --- the run ------------------------------------------------------------------------------------

def soak_config(port: int, stats_port: int, servers: list[int], workdir: Path) -> dict:
    config = lbproxy_config(
        port, servers, frontend={"timeouts": {"http_request": HTTP_REQUEST_TIMEOUT}},
        backend={**RETRIES, **PASSIVE, **ACTIVE, "timeouts": {"server": SERVER_TIMEOUT}},
        # max_connections under the fd limit, or every reload logs a warning about it
        global_={"pidfile": str(workdir / "lbproxy.pid"), "max_connections": 5000,
                 "log": {"access": str(workdir / "access.log"), "format": "json"}})
    config["frontends"]["web"]["bind"] = [{"address": f"127.0.0.1:{port}", "h2c": True}]
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}"}
    return config


@dataclass
class Soak:
    """The processes of one run, its schedule, and what it has seen so far."""

    args: argparse.Namespace
    backends: list[Backend]
    proxy: Proc
    stats_port: int
    reloader: Reloader
    traffic: Traffic
    rows: list[Row] = field(default_factory=list)
    kill_windows: list[tuple[float, float]] = field(default_factory=list)   # time.monotonic()
    reload_times: list[float] = field(default_factory=list)
    errors: list[Error] = field(default_factory=list)               # within the rows
    reasons: Counter[str] = field(default_factory=Counter)          # "kind: client: why" within the rows
    notes: list[str] = field(default_factory=list)
    idle: dict[str, tuple[int, int, int]] = field(default_factory=dict)   # when -> (rss kB, fds, conns)
    started: float = 0.0

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()

    async def run(self) -> None:
        self.idle["before the load"] = await asyncio.to_thread(self.sample)
        self.started = time.monotonic()
        self.traffic.start()
        events = [asyncio.create_task(self.kills()), asyncio.create_task(self.reloads())]
        try:
            await self.sample_rows()
        finally:
            self._stop.set()
            await asyncio.gather(*events)      # a restart under way completes: no orphan backend
            await self.traffic.stop()
        if self.proxy.exit_code() is None:
            await asyncio.sleep(IDLE_SETTLE)
            self.idle[f"{IDLE_SETTLE:g} s after the load"] = await asyncio.to_thread(self.sample)

    async def _pause_until(self, at: float) -> bool:
        """Sleep until time.monotonic() reaches `at`; True when the run is stopping."""
        try:
            await asyncio.wait_for(self._stop.wait(), max(0.0, at - time.monotonic()))
        except TimeoutError:
            pass
        return self._stop.is_set()

    def sample(self) -> tuple[int, int, int]:
        """lbproxy's RSS (kB), open fds and client connections (from /metrics)."""
        rss_kb, _ = memory_kb(self.proxy.pid)
        fds = len(fd_links(self.proxy.pid))
        try:
            found = CONNECTIONS.search(http_get(self.stats_port, "/metrics")[1].decode())
        except OSError:                    # unanswered within 5 s: the row says -1
            found = None
        return rss_kb, fds, int(float(found.group(1))) if found else -1

    async def sample_rows(self) -> None:
        every = self.args.row_every
        for index in itertools.count(1):
            if index * every > self.args.duration + 1e-9:
                return
            await self._pause_until(self.started + index * every)
            taken = self.traffic.tally.take()
            counts = taken.counts
            self.errors += taken.errors
            self.reasons += taken.reasons
            if (code := self.proxy.exit_code()) is not None:
                self.notes.append(f"**lbproxy exited** with status {code} before {index * every:g} s; its "
                                  f"stderr ended with:\n\n  ```\n{self.proxy.stderr_tail()}\n  ```")
                return
            rss_kb, fds, connections = await asyncio.to_thread(self.sample)
            reloads = await asyncio.to_thread(log_count, self.proxy, RELOADED)
            row = Row(time.monotonic() - self.started, counts, rss_kb, fds, connections, reloads,
                      len(self.kill_windows))
            self.rows.append(row)
            Session.step(f"{row.elapsed:.0f} s: {row.requests:,} requests {dict(counts)}; RSS "
                         f"{rss_kb / 1024:.1f} MB, {fds} fds, {connections} connections, {reloads} reloads, "
                         f"{row.kills} kills")

    async def kills(self) -> None:
        """SIGKILL app2, app3, app4, app1, … one every kill_every s, half a period in; restart each."""
        victims = itertools.cycle(self.backends[1:] + self.backends[:1])
        for index in itertools.count():
            at = self.started + (index + 0.5) * self.args.kill_every
            if at + DOWN > self.started + self.args.duration or await self._pause_until(at):
                return
            victim = next(victims)
            killed = time.monotonic()
            victim.proc.kill()
            await asyncio.sleep(DOWN)
            try:
                await asyncio.to_thread(restart, victim)
            except StartError as exc:
                self.notes.append(f"{victim.name} did not come back after its kill at "
                                  f"{killed - self.started:.0f} s: {exc}")
            self.kill_windows.append((killed, time.monotonic() + KILL_GRACE))

    async def reloads(self) -> None:
        for index in itertools.count(1):
            if await self._pause_until(self.started + index * self.args.reload_every):
                return
            self.reloader.reload()
            self.reload_times.append(time.monotonic())


def restart(backend: Backend) -> None:
    backend.proc.start()
    backend.proc.wait_for_port(backend.port)


# --- what the proxy wrote -------------------------------------------------------------------------

def access_log_summary(path: Path) -> str:
    """Lines of the JSON access log by status class, and the termination states other than `--`."""
    statuses: Counter[str] = Counter()
    terminations: Counter[str] = Counter()
    unreadable = 0
    with open(path, errors="replace") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                unreadable += 1
                continue
            statuses[f"{entry.get('status', 0) // 100}xx"] += 1
            if entry.get("termination", "--") != "--":
                terminations[f"{entry['termination']} {entry.get('error')}"] += 1
    total = sum(statuses.values())
    text = (f"access log: {total:,} lines ({', '.join(f'{k} {v:,}' for k, v in sorted(statuses.items()))})"
            + (f", {unreadable} unreadable" if unreadable else ""))
    if terminations:
        text += "; not ended normally: " + ", ".join(f"`{k}` ×{v:,}" for k, v in terminations.most_common(8))
    return text + "."


def stderr_summary(proxy: Proc) -> str:
    """lbproxy's log lines by level (reload lines aside), and the distinct warnings and errors."""
    text = proxy.stderr_path.read_text(errors="replace")
    levels = Counter(found.group(1) for found in re.finditer(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) ", text, re.M))
    distinct = Counter(re.sub(r"\d+", "N", line.split(": ", 1)[-1])[:160]
                       for line in text.splitlines() if re.match(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) ", line))
    summary = (f"lbproxy's stderr: {sum(levels.values())} warning/error lines "
               f"({', '.join(f'{k} {v}' for k, v in sorted(levels.items())) or 'none'}), "
               f"{text.count('Traceback')} tracebacks")
    if distinct:
        summary += "; by message: " + "; ".join(f"`{message}` ×{count}" for message, count in distinct.most_common(6))
    return summary + "."


# --- the report -----------------------------------------------------------------------------------

HEADER = ["elapsed s", "requests", "ok", "connect", "5xx", "reset", "timeout", "other", "408/cut (meant)", "hung",
          "RSS MB", "fds", "conns", "reloads", "kills"]


def report(soak: Soak, command: str, cpus: str, info: dict[str, str]) -> Report:
    args = soak.args
    page = Report(
        "Soak: mixed traffic, kills and reloads",
        [f"`{command}` on {now_utc()}: {args.duration:g} s through one lbproxy (round robin over 4 demo "
         "backends; retries 3, redispatch, passive ejection, active checks every 500 ms; `http_request` "
         f"{HTTP_REQUEST_TIMEOUT}, server timeout {SERVER_TIMEOUT}; JSON access log to a file; /metrics on a stats "
         f"bind). Clients, all the time: {soak.traffic.mix.describe()} (`bench/mixed.py`). Every "
         f"{args.kill_every:g} s one backend in turn is SIGKILLed and restarted {DOWN:g} s later; every "
         f"{args.reload_every:g} s the config is rewritten (app1's weight 1↔2) and lbproxy gets SIGHUP.",
         f"{cpus} A row every {args.row_every:g} s: outcomes in the interval (requests = all of them; "
         "408/cut (meant) = stalled clients answered 408 or cut, as intended; hung = a stalled client never "
         "cut), then lbproxy's RSS (VmRSS), open fds, client connections from /metrics, reloads applied and "
         "kills so far."],
        HEADER, "r" * len(HEADER), notes=soak.notes, info=info)
    for row in soak.rows:
        counts = row.counts
        page.rows.append([f"{row.elapsed:.0f}", f"{row.requests:,}", *(f"{counts[kind]:,}" for kind in KINDS),
                          f"{row.rss_kb / 1024:.1f}", str(row.fds), str(row.connections), str(row.reloads),
                          str(row.kills)])
    notes = []
    verdict = judge(soak.rows, args.warmup)
    notes.append(f"**Verdict**: {verdict.line()}" if verdict else
                 f"**Verdict**: none, fewer than {2 * WINDOW} rows from {args.warmup:g} s on.")
    totals = sum((row.counts for row in soak.rows), Counter())
    where = attribute(soak.errors, soak.kill_windows, soak.reload_times)
    notes.append(f"totals: {sum(totals.values()):,} requests, " + ", ".join(
        f"{kind} {totals[kind]:,}" for kind in KINDS) + ".")
    notes.append(error_note(where))
    if soak.reasons:
        notes.append("errors by why: " + "; ".join(f"`{why}` ×{count:,}" for why, count in soak.reasons.most_common(10))
                     + ".")
    if outside := unexplained(soak.errors, soak.kill_windows, soak.reload_times, soak.started):
        notes.append("errors outside the kill windows: " + "; ".join(f"`{line}`" for line in outside) + ".")
    notes.append(f"kills: {len(soak.kill_windows)}; reloads sent: {len(soak.reload_times)}, applied: "
                 f"{soak.rows[-1].reloads if soak.rows else 0}; HTTP/2 GOAWAYs seen by the client: "
                 f"{soak.traffic.tally.notes['HTTP/2 GOAWAY']}.")
    for when, (rss_kb, fds, connections) in soak.idle.items():
        notes.append(f"no load, {when}: RSS {rss_kb / 1024:.1f} MB, {fds} fds, {connections} client connections.")
    page.notes[:0] = notes
    return page


def error_note(where: Counter[tuple[str, str]]) -> str:
    """Errors by kind and by when they came; which of them no kill explains."""
    if not where:
        return "errors: none."
    kinds = sorted({kind for kind, _ in where}, key=KINDS.index)
    parts = [f"{kind}: {where[kind, 'kill']} around a kill, {where[kind, 'reload']} within {RELOAD_GRACE:g} s "
             f"of a reload, {where[kind, 'elsewhere']} elsewhere" for kind in kinds]
    unexpected = sum(count for (kind, at), count in where.items()
                     if kind in UNEXPECTED_ANYWHERE or at != "kill")
    return (f"errors by when: {'; '.join(parts)}. Expected: 5xx and resets around a kill (requests in flight "
            f"to the killed server that cannot be retried); unexpected: {unexpected}.")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    add_common_options(parser, duration=600.0, quick=60.0, output=RESULTS / "soak.md", loadgen=False)
    parser.set_defaults(warmup=None)
    parser.add_argument("--row-every", type=float, help="seconds between rows (default 30; 10 under 300 s)")
    parser.add_argument("--kill-every", type=float, help="seconds between kills (default 60; 20 under 300 s)")
    parser.add_argument("--reload-every", type=float, default=10.0, help="seconds between reloads (default 10)")
    args = parser.parse_args(argv)
    long_run = args.duration >= 300
    args.row_every = args.row_every or (30.0 if long_run else 10.0)
    args.kill_every = args.kill_every or (60.0 if long_run else 20.0)
    if args.warmup is None:                # the verdict's baseline: rows from here on
        args.warmup = 2 * args.row_every
    if args.duration < args.warmup + 2 * WINDOW * args.row_every - args.row_every:
        parser.error(f"--duration leaves fewer than {2 * WINDOW} rows after the warm-up for the verdict")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with Session.open("bench.soak", argv) as run:
        if run.cpus.loadgen:               # the clients share the backends' CPU, as other benchmarks' do
            os.sched_setaffinity(0, {int(run.cpus.loadgen)})
        backends = start_backends(run.stack, run.workdir, [0.0] * 4, run.cpus.backend)
        port, stats_port = free_port(), free_port()
        reloader = Reloader(run.workdir, soak_config(port, stats_port, [b.port for b in backends], run.workdir))
        proxy = start_checked(run.stack, "lbproxy", reloader.argv(), run.workdir, run.cpus.proxy, port)
        soak = Soak(args, backends, proxy, stats_port, reloader, Traffic(port, Mix()))
        run.step(f"{args.duration:g} s of mixed traffic, a row every {args.row_every:g} s")
        uvloop.run(soak.run())
        page = report(soak, run.command, run.cpus.describe(), run.info)
        page.notes.append(access_log_summary(run.workdir / "access.log"))
        page.notes.append(stderr_summary(proxy))
        if not mixed.h2:
            page.notes.append("no HTTP/2 client: the `h2` package is missing (`pip install -e '.[test]'`).")
    page.publish(args.output)


if __name__ == "__main__":
    main()
