"""One tcp or http health probe on a raw non-blocking socket, driven by one epoll set.

A check needs a connect, at most one small write and the first line of the answer, so
it gets no transport, stream, task or timeout context: a socket, watched for writing
until the connect completes and for reading until the status line is in, and a callback
with the verdict. That is most of what made a probe cost three times HAProxy's CPU.

The sockets are not handed to the event loop one by one: uvloop's add_writer makes a
libuv poll handle per socket (allocated, two epoll_ctl calls, a deferred close). A
`Poller` keeps them in an epoll set of its own that the loop watches as one reader: a
socket joins with one epoll_ctl, leaves it when closed, and all the sockets ready in one
loop iteration are served by one callback. Where there is no epoll (other Unix systems),
a `LoopPoller` hands each socket to the loop as before.

As HAProxy does, the connect is made with delayed ACKs (TCP_QUICKACK off): a tcp check
then closes before its handshake's last ACK is sent, so the server's kernel never queues
the connection for accept (the SYN-ACK is the proof of life), and an http check's ACK
rides on its request. Every probe is closed with a reset (SO_LINGER 0), so checks leave
no TIME_WAIT behind on either side. Timeouts belong to the caller (`expire`): the
checker sweeps many probes with one timer; `probe()` arms one for a single probe.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import struct
from collections.abc import Callable

from lbproxy.config.schema import Address, HealthCheckConfig
from lbproxy.proxy.state import OUT_OF_FDS

USER_AGENT = "lbproxy-check"
MAX_HEAD = 65536                 # a status line longer than this is not HTTP
RECV_SIZE = 4096                 # the status line and then some; the rest is never read
RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, no TIME_WAIT
PENDING = frozenset({errno.EINPROGRESS, errno.EAGAIN})
EPOLL = hasattr(select, "epoll")                   # Linux
WRITABLE = getattr(select, "EPOLLOUT", 4)           # the events a poller reports
READABLE = getattr(select, "EPOLLIN", 1)
FAILED = getattr(select, "EPOLLERR", 8)
QUICKACK = getattr(socket, "TCP_QUICKACK", None)   # Linux only

Done = Callable[[bool, str], None]
Endpoint = tuple[int, "str | tuple"]     # (address family, sockaddr)


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


def endpoint(address: Address, port: int | None = None) -> Endpoint | None:
    """Where to connect, worked out once: None when the host is a name (resolved per probe)."""
    if address.unix is not None:
        return socket.AF_UNIX, address.unix
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            address.host, port or address.port, type=socket.SOCK_STREAM,
            flags=socket.AI_NUMERICHOST)[0]
    except socket.gaierror:
        return None
    return family, sockaddr


class Poller:
    """The sockets of many probes in one epoll set, watched by the loop as one reader."""

    __slots__ = ("epoll", "loop", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.epoll = select.epoll()
        self.waiting: dict[int, Probe] = {}      # by descriptor
        loop.add_reader(self.epoll.fileno(), self._ready)

    def watch(self, probe: Probe, events: int) -> None:
        """Call `probe.ready(events)` when its socket is ready (until it is closed)."""
        if probe.fd in self.waiting:
            self.epoll.modify(probe.fd, events)
        else:
            self.epoll.register(probe.fd, events)
            self.waiting[probe.fd] = probe

    def forget(self, fd: int) -> None:
        """The socket is being closed: closing it takes it out of the set."""
        self.waiting.pop(fd, None)

    def close(self) -> None:
        self.loop.remove_reader(self.epoll.fileno())
        self.epoll.close()
        self.waiting.clear()

    def _ready(self) -> None:
        waiting = self.waiting
        for fd, events in self.epoll.poll(0):
            probe = waiting.get(fd)
            if probe is not None:           # not closed by a callback before it in this batch
                probe.ready(events)


class LoopPoller:
    """Poller's stand-in without epoll: each socket is the loop's reader or writer."""

    __slots__ = ("loop", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: set[int] = set()

    def watch(self, probe: Probe, events: int) -> None:
        self.forget(probe.fd)
        self.waiting.add(probe.fd)
        if events == WRITABLE:      # the connect's outcome: FAILED makes it read SO_ERROR
            self.loop.add_writer(probe.fd, probe.ready, WRITABLE | FAILED)
        else:
            self.loop.add_reader(probe.fd, probe.ready, events)

    def forget(self, fd: int) -> None:
        if fd in self.waiting:
            self.waiting.discard(fd)
            self.loop.remove_writer(fd)
            self.loop.remove_reader(fd)

    def close(self) -> None:
        for fd in list(self.waiting):
            self.forget(fd)


def make_poller(loop: asyncio.AbstractEventLoop) -> Poller | LoopPoller:
    return Poller(loop) if EPOLL else LoopPoller(loop)


class Probe:
    """One check in flight: connect, maybe write `request` and read a status line, verdict.

    `done(ok, reason)` is called exactly once (HAProxy's wording: "Layer4 connection
    refused", "Layer7 wrong status 500"...), unless the probe is `abort`ed first.
    `start` raises OSError only when the proxy is out of descriptors: then there is no
    verdict on the server.
    """

    __slots__ = ("done", "expect", "fd", "head", "layer", "poller", "request", "resolving", "sock")

    def __init__(self, poller: Poller | LoopPoller, request: bytes | None,
                 expect: tuple[int, int], done: Done) -> None:
        self.poller = poller
        self.request = request
        self.expect = expect
        self.done: Done | None = done
        self.sock: socket.socket | None = None
        self.fd = -1
        self.layer = 4
        self.head = b""
        self.resolving: asyncio.Future | None = None

    @property
    def finished(self) -> bool:
        return self.done is None

    def start(self, where: Endpoint | None, address: Address, port: int | None = None) -> None:
        if where is None:           # a host name: resolved now, as a fresh connection would
            loop = self.poller.loop
            self.resolving = asyncio.ensure_future(loop.getaddrinfo(
                address.host, port or address.port, type=socket.SOCK_STREAM), loop=loop)
            self.resolving.add_done_callback(self._resolved)
        else:
            self._connect(*where)

    def _connect(self, family: int, sockaddr: str | tuple) -> None:
        sock = self.sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        self.fd = sock.fileno()
        if family != socket.AF_UNIX and QUICKACK is not None:
            sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 0)
        code = sock.connect_ex(sockaddr)
        if code == 0:
            self._connected(WRITABLE)
        elif code in PENDING:
            self.poller.watch(self, WRITABLE)
        else:
            self._failed(code)

    def ready(self, events: int) -> None:
        """The poller's call: the connect completed (or failed), or the answer arrived."""
        if self.layer == 4:
            self._connected(events)
        else:
            self._readable()

    def expire(self) -> None:
        """The caller's timeout has come."""
        if self.done is not None:
            self._finish(False, f"Layer{self.layer} timeout")

    def abort(self) -> None:
        """Stop without a verdict (the checker stops, the server was removed)."""
        self.done = None
        self._close()

    def _resolved(self, future: asyncio.Future) -> None:
        self.resolving = None
        if self.done is None or future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self._finish(False, f"Layer4 connection problem: {error}")
            return
        family, _, _, _, sockaddr = future.result()[0]
        try:
            self._connect(family, sockaddr)
        except OSError as exc:      # out of descriptors: no verdict, the probe just ends
            self.abort()
            if exc.errno not in OUT_OF_FDS:
                raise

    def _connected(self, events: int) -> None:
        sock = self.sock
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if events & FAILED else 0
        if code:
            self._failed(code)
        elif self.request is None:
            self._finish(True, "Layer4 check passed")
        else:
            self.layer = 7
            try:
                sent = sock.send(self.request)
            except OSError as exc:
                self._failed(exc.errno)
                return
            if sent != len(self.request):   # a few hundred bytes into an empty buffer
                self._finish(False, "Layer7 connection problem: short write")
                return
            self.poller.watch(self, READABLE)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._failed(exc.errno)
            return
        head = self.head = self.head + data
        end = head.find(b"\n")
        if end >= 0:
            self._finish(*status_verdict(head[:end + 1], self.expect))
        elif not data:
            self._finish(*status_verdict(head, self.expect))
        elif len(head) > MAX_HEAD:
            self._finish(False, "Layer7 invalid response")

    def _failed(self, code: int | None) -> None:
        if code == errno.ECONNREFUSED:
            self._finish(False, "Layer4 connection refused")
        else:
            self._finish(False, f"Layer{self.layer} connection problem: "
                                f"{os.strerror(code) if code else 'unknown error'}")

    def _finish(self, ok: bool, reason: str) -> None:
        done, self.done = self.done, None
        self._close()
        if done is not None:
            done(ok, reason)

    def _close(self) -> None:
        if self.resolving is not None:
            self.resolving.cancel()
            self.resolving = None
        sock, self.sock = self.sock, None
        if sock is None:
            return
        self.poller.forget(self.fd)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
        except OSError:
            pass                    # e.g. a Unix socket that never connected
        sock.close()


async def probe(address: Address, timeout: float, request: bytes | None = None,
                expect: tuple[int, int] = (200, 399),
                port: int | None = None) -> tuple[bool, str]:
    """One check on its own, cut at `timeout` (passive re-probes use it).

    Raises OSError when the proxy is out of descriptors: no verdict on the server.
    """
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[tuple[bool, str]] = loop.create_future()
    poller = make_poller(loop)
    one = Probe(poller, request, expect, lambda ok, reason: answer.set_result((ok, reason)))
    try:
        one.start(endpoint(address, port), address, port)
        timer = loop.call_later(timeout, one.expire)
        try:
            return await answer
        finally:
            timer.cancel()
    finally:
        one.abort()
        poller.close()
