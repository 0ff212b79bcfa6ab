"""Active health checks: probe every server of a backend on its own schedule.

One task per server, so a slow or hanging server delays nobody else's checks and a
server added at run time is picked up (through `Backend.listeners`) without a restart.
A probe is one fresh connection, never a pooled one: check traffic is independent of
client traffic. HTTP probes are written by hand on an asyncio stream (one request line,
one status line read, then close) because that is all a check needs; the whole probe,
connect included, is cut at `timeout`.

Rise/fall follow HAProxy: a server changes state only after `rise` consecutive successes
or `fall` consecutive failures. Servers in the configuration start UP (a restart causes no
outage); servers added at run time with `up=False` start CHECKING and get traffic only
after `rise` successes. Servers in MAINT are not probed. `Backend.set_health` is called on
transitions only, and logs them once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from lbproxy.backends.server import MAINT
from lbproxy.config.schema import Address, HealthCheckConfig
from lbproxy.health.grpc import grpc_probe
from lbproxy.proxy.state import OUT_OF_FDS

if TYPE_CHECKING:
    from lbproxy.backends.backend import Backend
    from lbproxy.backends.server import Server

log = logging.getLogger("lbproxy.health")

USER_AGENT = "lbproxy-check"


class Health:
    """The rise/fall counter of one server, free of I/O.

    `record(current, ok)` takes the server's current state (True = UP, False = DOWN,
    None = CHECKING, never decided) and a probe result; it returns the new state when
    this result crosses a threshold, else None. When the state was changed by someone
    else (passive ejection, the API) the counters restart, so e.g. a server ejected by
    passive checks needs `rise` fresh successes to come back.
    """

    __slots__ = ("rise", "fall", "state", "successes", "failures")

    def __init__(self, rise: int, fall: int) -> None:
        self.rise = rise
        self.fall = fall
        self.state: bool | None = None
        self.successes = 0
        self.failures = 0

    def record(self, current: bool | None, ok: bool) -> bool | None:
        if current is not self.state:
            self.state = current
            self.successes = self.failures = 0
        if ok:
            self.successes += 1
            self.failures = 0
            if current is not True and self.successes >= self.rise:
                self.state = True
                return True
        else:
            self.failures += 1
            self.successes = 0
            if current is not False and self.failures >= self.fall:
                self.state = False
                return False
        return None


def http_request(check: HealthCheckConfig, address: Address) -> bytes:
    """The probe request for `address`: Host is the configured one or the probed address."""
    if check.host is not None:
        host = check.host
    elif address.unix is not None:
        host = "localhost"
    else:
        host = str(Address(address.host, check.port or address.port))
    return (f"{check.method} {check.path} HTTP/1.1\r\nHost: {host}\r\n"
            f"User-Agent: {USER_AGENT}\r\nConnection: close\r\n\r\n").encode("latin-1")


def status_verdict(line: bytes, expect: tuple[int, int]) -> tuple[bool, str]:
    """Judge an HTTP status line against the expected (inclusive) status range."""
    if not line:
        return False, "Layer7 invalid response: connection closed"
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False, "Layer7 invalid response"
    status = int(parts[1])
    if expect[0] <= status <= expect[1]:
        return True, f"Layer7 check passed ({status})"
    return False, f"Layer7 wrong status {status}"


async def probe(address: Address, timeout: float, request: bytes | None = None,
                expect: tuple[int, int] = (200, 399),
                port: int | None = None) -> tuple[bool, str]:
    """One check: a TCP connect, plus an HTTP exchange when `request` is given.

    Returns (passed, reason) with HAProxy's wording: "Layer4 connection refused",
    "Layer4 timeout", "Layer7 timeout", "Layer7 wrong status 500"...
    """
    layer = 4
    try:
        async with asyncio.timeout(timeout):
            if address.unix is not None:
                reader, writer = await asyncio.open_unix_connection(address.unix)
            else:
                reader, writer = await asyncio.open_connection(address.host,
                                                               port or address.port)
            try:
                if request is None:
                    return True, "Layer4 check passed"
                layer = 7
                writer.write(request)
                line = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        return False, f"Layer{layer} timeout"
    except ConnectionRefusedError:
        return False, "Layer4 connection refused"
    except OSError as exc:
        if exc.errno in OUT_OF_FDS:
            raise                   # the proxy's own trouble: no verdict on the server
        return False, f"Layer{layer} connection problem: {exc.strerror or exc}"
    except ValueError:              # a status line over the stream's 64 KiB limit
        return False, "Layer7 invalid response"
    return status_verdict(line, expect)


class ActiveChecker:
    """Periodic probes of every server of one backend, per its `health_check`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.config: HealthCheckConfig = backend.config.health_check
        self._tasks: dict[Server, asyncio.Task] = {}

    def start(self) -> None:
        """Probe the servers present now (first probe after a random jitter, so that
        many servers are not probed in the same millisecond) and watch for new ones."""
        self.backend.listeners.append(self._changed)
        for server in self.backend.servers:
            self._watch(server, random.uniform(0.0, self.config.interval))

    async def stop(self) -> None:
        if self._changed in self.backend.listeners:
            self.backend.listeners.remove(self._changed)
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _changed(self, backend: Backend, server: Server | None, what: str) -> None:
        if what == "added":
            self._watch(server, 0.0)        # checked at once: it waits for its first UP
        elif what == "removed":
            task = self._tasks.pop(server, None)
            if task is not None:
                task.cancel()

    def _watch(self, server: Server, delay: float) -> None:
        if server not in self._tasks:
            self._tasks[server] = self.backend.state.loop.create_task(self._run(server, delay))

    async def _run(self, server: Server, delay: float) -> None:
        check = self.config
        request = http_request(check, server.address) if check.type == "http" else None
        health = Health(check.rise, check.fall)
        loop = asyncio.get_running_loop()
        await asyncio.sleep(delay)
        while True:
            started = loop.time()
            if server.admin != MAINT:
                try:
                    if check.type == "grpc":
                        ok, reason = await grpc_probe(server.address, check.timeout,
                                                      check.service, check.port)
                    else:
                        ok, reason = await probe(server.address, check.timeout, request,
                                                 check.expect_status, check.port)
                except OSError as exc:          # out of descriptors: counted, not recorded
                    self.backend.state.out_of_fds_in(exc, server)
                else:
                    self._record(server, health, ok, reason)
            await asyncio.sleep(max(0.0, started + check.interval - loop.time()))

    def _record(self, server: Server, health: Health, ok: bool, reason: str) -> None:
        current = None if server.check == "checking" else server.up
        verdict = health.record(current, ok)
        if verdict is not None:
            if current is None and not verdict:     # set_health logs UP/DOWN flips only
                log.warning("backend %s: server %s is DOWN (%s)", self.backend.name,
                            server.name, reason)
            self.backend.set_health(server, verdict, reason)
        elif server.check == "none" and ok == server.up:
            self.backend.set_health(server, ok, reason)     # first verdict: show it
