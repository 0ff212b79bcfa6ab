"""The access log: exactly one line per request, JSON or Common Log Format.

A line is formatted on the event loop into a list of strings (an f-string and a time
stamp cached per second: a few microseconds), and the list is handed to the writer
thread (lbproxy/runtime/logwriter.py) every FLUSH_INTERVAL or FLUSH_LINES lines, so the
loop never writes, never waits, and a stuck target costs dropped lines, counted, instead
of a frozen proxy. With `format: off` the frontends hold no AccessLog at all: a request
pays nothing for logging, not even a method call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from json.encoder import encode_basestring_ascii as quoted   # the C encoder
from typing import TYPE_CHECKING

from lbproxy.config.schema import LogConfig
from lbproxy.runtime.logwriter import LogWriter

if TYPE_CHECKING:
    from lbproxy.proxy.exchange import Exchange

log = logging.getLogger("lbproxy")

FLUSH_INTERVAL = 0.2     # seconds a line may wait before it is handed to the writer
FLUSH_LINES = 256        # or this many lines, whichever comes first
WARN_EVERY = 10.0        # seconds between two warnings about dropped lines
MAX_NAMES = 100_000      # frontend, backend and server names kept as JSON strings
MILLIS = [f"{i:03d}" for i in range(1000)]   # the three digits after a decimal point
METHODS = {method.encode(): quoted(method) for method in (
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class AccessLog:
    def __init__(self, config: LogConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.target = config.access
        self.loop = loop
        self.lines: list[str] = []
        self.timer: asyncio.TimerHandle | None = None
        self.warned = 0.0                  # when dropped lines were last reported
        self.reported = 0                  # dropped lines reported so far
        self.second = -1                   # the second the cached time stamp is for
        self.stamp = ""
        self.names: dict[str, str] = {}   # name -> the name as a JSON string
        self.log = self.clf_line if config.format == "clf" else self.json_line
        if self.target in ("stdout", "stderr"):
            stream = sys.stdout if self.target == "stdout" else sys.stderr
            stream.flush()                 # what was printed before goes out first
            self.writer = LogWriter(stream.fileno(), False, config.buffer)
        else:
            self.writer = LogWriter(self._open(), True, config.buffer)

    def _open(self) -> int:
        try:
            return os.open(self.target, _OPEN_FLAGS, 0o644)
        except OSError as exc:
            raise OSError(f"cannot open the access log {self.target}: "
                          f"{exc.strerror or exc}") from exc

    @property
    def dropped(self) -> int:
        """Lines that never reached the target: too many waiting, or refused by it."""
        return self.writer.dropped + self.writer.failed

    def reopen(self) -> None:
        """SIGUSR1: reopen a log file after rotation. When the file cannot be opened
        (say, its directory went away), the old one is kept and the error logged."""
        if self.target in ("stdout", "stderr"):
            return
        try:
            fd = self._open()
        except OSError as exc:
            log.error("%s; still writing to the file opened before", exc)
            return
        self.flush()
        self.writer.switch(fd)

    # one line per request (`log` is one of these two)

    def json_line(self, exchange: Exchange) -> None:
        now = time.time_ns() // 1_000_000            # milliseconds
        second = now // 1000
        if second != self.second:
            self.second = second
            self.stamp = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        client = exchange.downstream
        backend = exchange.backend
        server = exchange.server
        started = exchange.started
        error = exchange.error
        unique_id = exchange.unique_id
        names = self.names
        # microseconds: whole numbers format faster than floats
        duration = int((client.time() - started) * 1_000_000) if started else 0
        self._add(
            f'{{"time":"{self.stamp}{MILLIS[now % 1000]}Z",'
            f'"client":"{client.src}","client_port":{client.src_port},'
            f'"frontend":{names.get(exchange.frontend.name) or self._name(exchange.frontend.name)},'
            f'"backend":{"null" if backend is None else names.get(backend.name) or self._name(backend.name)},'
            f'"server":{"null" if server is None else names.get(server.name) or self._name(server.name)},'
            f'"method":{METHODS.get(exchange.method_b) or quoted(exchange.method_b.decode("latin-1"))},'
            f'"url":{quoted(exchange.url_b.decode("latin-1"))},'
            f'"proto":"{exchange.req_ver}","status":{exchange.status or -1},'
            f'"bytes":{exchange.resp_bytes},'
            f'"duration_ms":{duration // 1000}.{MILLIS[duration % 1000]},'
            f'"retries":{exchange.attempts},"termination":"{exchange.termination}",'
            f'"error":{"null" if error is None else quoted(error)},'
            f'"unique_id":{"null" if unique_id is None else quoted(unique_id)}}}\n')

    def _name(self, name: str) -> str:
        """`name` as a JSON string, remembered: frontends, backends and servers are few
        (forgotten all at once when a reload's renames make too many)."""
        names = self.names
        if len(names) >= MAX_NAMES:
            names.clear()
        text = names[name] = quoted(name)
        return text

    def clf_line(self, exchange: Exchange) -> None:
        now = time.time()
        second = int(now)
        if second != self.second:
            self.second = second
            self.stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))
        url = exchange.url_b.decode("latin-1").replace('"', "%22")
        self._add(f'{exchange.downstream.src} - - [{self.stamp}] '
                  f'"{exchange.method_b.decode("latin-1")} {url} HTTP/{exchange.req_ver}" '
                  f'{exchange.status or "-"} {exchange.resp_bytes}\n')

    def _add(self, line: str) -> None:
        lines = self.lines
        lines.append(line)
        if len(lines) == 1:
            self.timer = self.loop.call_later(FLUSH_INTERVAL, self.flush)
        elif len(lines) >= FLUSH_LINES:
            self.flush()

    # handing lines to the writer

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        lines = self.lines
        if not lines:
            return
        self.lines = []
        self.writer.write("".join(lines).encode("utf-8", "replace"), len(lines))
        if self.dropped != self.reported:
            self._warn_dropped()

    def _warn_dropped(self) -> None:
        """Say, at most every WARN_EVERY seconds, that lines are being lost and why."""
        now = self.loop.time()
        if now - self.warned < WARN_EVERY:
            return
        writer = self.writer
        why = (f"writing failed: {writer.last_error}" if writer.failed else
               f"{writer.pending // 1024} KiB wait for it to read them")
        log.warning("access log: %s is not taking lines (%s); %d lines dropped so far",
                    self.target, why, self.dropped)
        self.warned = now
        self.reported = self.dropped

    def close(self, timeout: float) -> None:
        """Flush, then let the writer finish: wait up to `timeout` seconds (0 at a reload,
        where the loop must not wait; the thread ends by itself once it has written)."""
        self.flush()
        if not self.writer.close(timeout) and timeout:
            log.warning("access log: %s did not take the last %d KiB in time",
                        self.target, self.writer.pending // 1024)


def make_access_log(config: LogConfig, loop: asyncio.AbstractEventLoop) -> AccessLog | None:
    return None if config.format == "off" else AccessLog(config, loop)
