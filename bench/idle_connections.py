"""Memory, file descriptors and CPU of lbproxy holding many idle keep-alive clients.

    python -m bench.idle_connections            # 10 000 clients, 10 s idle window
    python -m bench.idle_connections --quick    # 2 000 clients

One demo backend, one lbproxy worker (`python -m lbproxy run -c FILE`, stats on too, as
in a container). Clients connect to 127.0.0.1 and each sends one `GET /` first, so each
is a real keep-alive client the proxy has parsed a request on, then they all stay idle.
Measured from /proc: lbproxy's RSS (VmRSS, and its peak VmHWM), open fds, and the CPU
(utime+stime) it burns over `--idle` seconds doing nothing but sweep timeouts (the
sweeper visits every connection each 100 ms). The same window is measured before any
client connects, so the sweeper's cost is the difference. Afterwards every connection
sends a second request (they must all still work), all close, and the fd count must fall
back to where it started.

Bounded (connects give up after `--open-timeout`), loopback only, and everything started
is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (REPO, Session, fd_links, free_port, http_get, memory_kb, start_backends,
                           start_checked, tree_cpu_seconds)
from bench.report import RESULTS, Report, now_utc
from bench.targets import lbproxy_argv, lbproxy_config

TARGET_RSS_MB = 150
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
OPEN_CONCURRENCY = 256        # connects in flight at once: well under the listener's backlog (4096)
STEP_TIMEOUT = 10.0           # seconds one connect or one reply may take
PORTS_PER_SOURCE = 20_000     # of 28 232 ephemeral ports (32768-60999) per source address


# --- lbproxy seen through /proc ---------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    rss_kb: int
    hwm_kb: int
    fds: int
    server_conns: int       # of the fds, TCP connections to the backend (the keep-alive pool)


def sample(pid: int, backend_port: int) -> Sample:
    rss_kb, hwm_kb = memory_kb(pid)
    links = fd_links(pid)
    inodes = {link[8:-1] for link in links if link.startswith("socket:[")}
    return Sample(rss_kb, hwm_kb, len(links), tcp_peers(pid, inodes, backend_port))


def tcp_peers(pid: int, inodes: set[str], remote_port: int) -> int:
    """How many of the sockets `inodes` are TCP connections to `remote_port` (/proc/net/tcp*)."""
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()          # sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == remote_port:
                count += 1
    return count


def nofile_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return f"{soft} (hard {hard})"
    return "unknown"


def idle_cpu_percent(pid: int, seconds: float) -> float:
    before = tree_cpu_seconds(pid)
    time.sleep(seconds)
    return 100.0 * (tree_cpu_seconds(pid) - before) / seconds


# --- the clients -----------------------------------------------------------------------------

class Client(asyncio.Protocol):
    """One keep-alive connection that can send `GET /` and wait for the complete reply."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport        # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        status = reply_status(self.buffer)
        if status is not None and self.waiter is not None and not self.waiter.done():
            self.buffer.clear()
            self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed by the proxy"))

    async def get(self, timeout: float) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(REQUEST)
        return await asyncio.wait_for(self.waiter, timeout)


def reply_status(buffer: bytearray) -> int | None:
    """The status of the complete response in `buffer` (Content-Length or chunked), else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    body = len(buffer) - end - 4
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name == b"content-length" and body < int(value):
            return None
        if name == b"transfer-encoding" and not buffer.endswith(b"0\r\n\r\n"):
            return None
    return int(head[9:12])


async def bounded(coros: list, timeout: float) -> int:
    """Run `coros` within `timeout` seconds in all; cancel the rest; how many did not finish."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    if not tasks:
        return 0
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return len(pending)


async def open_clients(port: int, count: int, sources: int, timeout: float) -> tuple[list[Client], list[str]]:
    """`count` connections, each having had one 200 reply within `timeout` seconds in all; also
    the errors of those that failed."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    clients: list[Client] = []
    errors: list[str] = []

    async def one(i: int) -> None:
        # with several sources, bind 127.0.0.(2+k): each source address has its own ephemeral ports
        local = (f"127.0.0.{2 + i % sources}", 0) if sources > 1 else None
        async with gate:
            try:
                transport, client = await asyncio.wait_for(
                    loop.create_connection(Client, "127.0.0.1", port, local_addr=local), STEP_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as exc:
                errors.append(describe(exc))
                return
            try:
                status = await client.get(STEP_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as exc:
                errors.append(describe(exc))
                transport.close()
                return
            if status == 200:
                clients.append(client)
            else:
                errors.append(f"status {status}")
                transport.close()

    unfinished = await bounded([one(i) for i in range(count)], timeout)
    errors += ["not started in time"] * unfinished
    return clients, errors


def describe(exc: BaseException) -> str:
    return "timeout" if isinstance(exc, asyncio.TimeoutError) else str(exc)


async def reuse(clients: list[Client], timeout: float) -> int:
    """A second request on every connection; how many answered 200."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one(client: Client) -> None:
        async with gate:
            try:
                ok = not client.lost and await client.get(STEP_TIMEOUT) == 200
            except (OSError, asyncio.TimeoutError):
                ok = False
            answered.append(ok)

    answered: list[bool] = []
    await bounded([one(c) for c in clients], timeout)
    return sum(answered)


# --- the run ---------------------------------------------------------------------------------

def nofile_wrapped(argv: list[str], soft: int | None) -> list[str]:
    """`argv` started with RLIMIT_NOFILE soft limit `soft` (exec: the pid stays lbproxy's)."""
    if soft is None:
        return argv
    return ["sh", "-c", f'ulimit -S -n {soft} && exec "$@"', "sh", *argv]


def run(args: argparse.Namespace) -> Report:
    needed = args.connections + 256            # this process: its clients plus Python's own files
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with Session.open("bench.idle_connections", args.argv) as session:   # raises soft to hard
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < needed:
            raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} < {needed}: raise it (ulimit -Hn) "
                             "or use fewer --connections")
        sources = args.sources or max(1, math.ceil(args.connections / PORTS_PER_SOURCE))
        backend = start_backends(session.stack, session.workdir, [0.0], session.cpus.backend)[0]
        port, stats_port = free_port(), free_port()
        config = lbproxy_config(port, [backend.port], frontend={
            # idle clients must outlive the measurement; 5 minutes is plenty and still bounded
            "timeouts": {"client": "300s", "http_keep_alive": "300s"}})
        config["stats"] = {"bind": f"127.0.0.1:{stats_port}"}
        argv = nofile_wrapped(lbproxy_argv(session.workdir, config), args.proxy_nofile)
        proxy = start_checked(session.stack, "lbproxy", argv, session.workdir, session.cpus.proxy, port)
        pid = proxy.pid
        limit = nofile_limit(pid)

        session.step(f"baseline: {args.idle:g} s idle without clients")
        base = sample(pid, backend.port)
        base_cpu = idle_cpu_percent(pid, args.idle)

        session.step(f"opening {args.connections} keep-alive clients from {sources} source address(es)")
        # one loop for the whole run: the clients' transports belong to it (it is idle, not
        # running, while we measure; the kernel keeps the connections)
        loop = asyncio.new_event_loop()
        started = time.monotonic()
        clients, errors = loop.run_until_complete(open_clients(port, args.connections, sources, args.timeout))
        open_s = time.monotonic() - started
        try:
            time.sleep(1.0)                          # let the last replies' buffers settle
            session.step(f"holding {len(clients)} idle clients for {args.idle:g} s")
            held = sample(pid, backend.port)
            held_cpu = idle_cpu_percent(pid, args.idle)
            loop.run_until_complete(asyncio.sleep(0.2))   # deliver any close that came meanwhile
            still_open = sum(not c.lost for c in clients)
            session.step("a second request on every connection")
            reused = loop.run_until_complete(reuse(clients, args.timeout))
            try:
                health = str(http_get(stats_port, "/health")[0])
            except OSError as exc:
                health = f"nothing ({exc})"
        finally:
            for client in clients:
                if client.transport is not None:
                    client.transport.close()
            loop.run_until_complete(asyncio.sleep(0.1))    # the closes happen on the loop
            loop.close()
        time.sleep(2.0)                              # the proxy sees the FINs and frees the connections
        after = sample(pid, backend.port)
        alive = proxy.exit_code() is None
        proxy_log = proxy.stderr_tail(6) if errors or not alive else ""

    per_conn_kb = (held.rss_kb - base.rss_kb) / max(1, len(clients))
    verdict = "met" if held.rss_kb / 1024 < TARGET_RSS_MB else "**missed**"
    mb = lambda kb: f"{kb / 1024:.1f}"             # noqa: E731
    report = Report(
        title="Idle keep-alive connections",
        intro=[f"`{session.command}` on {now_utc()}: one lbproxy worker and one demo backend; "
               f"{args.connections:,} clients on 127.0.0.1 ({sources} source address(es)) each sent one "
               f"`GET /`, got 200 and stayed idle. CPU: lbproxy's utime+stime over {args.idle:g} s of idleness "
               f"(the timeout sweeper visits every connection each 100 ms), in % of one core. "
               f"{session.cpus.describe()}"],
        header=["phase", "client connections", "RSS MB", "peak RSS MB", "open fds", "of which server pool",
                "idle CPU %"],
        align="lrrrrrr",
        info=session.info,
    )
    report.rows = [
        ["started, before any client", "0", mb(base.rss_kb), mb(base.hwm_kb), str(base.fds), str(base.server_conns),
         f"{base_cpu:.2f}"],
        ["clients connected and idle", f"{len(clients):,}", mb(held.rss_kb), mb(held.hwm_kb), str(held.fds),
         str(held.server_conns), f"{held_cpu:.2f}"],
        ["clients closed", "0", mb(after.rss_kb), mb(after.hwm_kb), str(after.fds), str(after.server_conns), "—"],
    ]
    report.notes = [
        f"RSS per idle connection: {per_conn_kb:.1f} KiB; target < {TARGET_RSS_MB} MB RSS for one worker "
        f"at {args.connections:,} connections: {verdict} ({mb(held.rss_kb)} MB).",
        f"idle CPU per 1 000 connections: {(held_cpu - base_cpu) / max(1, len(clients)) * 1000:.2f} % of a core.",
        f"{len(clients):,} of {args.connections:,} clients connected and got 200 in {open_s:.1f} s"
        + (f"; {len(errors):,} failed: {summarise(errors)}" if errors else "") + ".",
        f"after the idle window {still_open:,} were still open; a second request succeeded on "
        f"{reused:,}; the proxy's /health answered {health}; the proxy {'was still running' if alive else 'had exited'}.",
        f"lbproxy's RLIMIT_NOFILE: {limit} (it does not raise it itself; inherited from this benchmark"
        + (f", set by --proxy-nofile {args.proxy_nofile}" if args.proxy_nofile else ", which raised its own soft "
           "limit to the hard one") + f"). It held {held.fds:,} fds: one per client, plus "
        f"{held.server_conns} idle server connections (the keep-alive pool: one per request that was in "
        f"flight at once while the clients connected, {OPEN_CONCURRENCY} at most) and "
        f"{held.fds - len(clients) - held.server_conns} others (listeners, epoll, the Python runtime).",
    ]
    if proxy_log:
        report.notes.append("lbproxy's stderr ended with:\n\n  ```\n" + "\n".join(
            "  " + line[:200] for line in proxy_log.splitlines()) + "\n  ```")
    if after.fds - after.server_conns > base.fds - base.server_conns + 2:
        report.notes.append(f"fds other than the server pool after the clients closed: "
                            f"{after.fds - after.server_conns} vs {base.fds - base.server_conns} before: a leak?")
    report.publish(args.output)
    return report


def summarise(errors: list[str]) -> str:
    counts: dict[str, int] = {}
    for error in errors:
        counts[error] = counts.get(error, 0) + 1
    return ", ".join(f"{error} ×{n}" for error, n in sorted(counts.items(), key=lambda kv: -kv[1])[:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_connections", description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=10_000, help="idle clients (default 10 000)")
    parser.add_argument("--quick", action="store_const", dest="connections", const=2_000, help="2 000 clients")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idleness measured (default 10)")
    parser.add_argument("--sources", type=int, default=0,
                        help=f"source addresses 127.0.0.2.. (default: one per {PORTS_PER_SOURCE:,} clients)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds for opening all clients, and again for the second requests (default 120)")
    parser.add_argument("--proxy-nofile", type=int, default=None,
                        help="start lbproxy with this RLIMIT_NOFILE soft limit (default: inherit ours, raised)")
    parser.add_argument("--output", type=Path, default=RESULTS / "idle_connections.md")
    args = parser.parse_args(argv)
    args.argv = argv
    os.chdir(REPO)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
