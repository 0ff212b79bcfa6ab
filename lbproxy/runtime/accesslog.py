"""The access log: one line per answered request, JSON or Common Log Format.

With `format: off` the frontends hold no AccessLog at all, so a request pays nothing
for logging, not even a method call.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, TextIO

from lbproxy.config.schema import LogConfig

if TYPE_CHECKING:
    from lbproxy.proxy.exchange import Exchange

log = logging.getLogger("lbproxy")


class AccessLog:
    def __init__(self, config: LogConfig) -> None:
        self.target = config.access
        self.clf = config.format == "clf"
        self.stream: TextIO = self._open()

    def _open(self) -> TextIO:
        if self.target == "stdout":
            return sys.stdout
        if self.target == "stderr":
            return sys.stderr
        try:
            return open(self.target, "a", buffering=1, encoding="utf-8")
        except OSError as exc:
            raise OSError(f"cannot open the access log {self.target}: "
                          f"{exc.strerror or exc}") from exc

    def reopen(self) -> None:
        """SIGUSR1: reopen a log file after rotation. When the file cannot be opened
        (say, its directory went away), the old stream is kept and the error logged."""
        if self.stream in (sys.stdout, sys.stderr):
            return
        try:
            stream = self._open()
        except OSError as exc:
            log.error("%s; still writing to the file opened before", exc)
            return
        self.stream.close()
        self.stream = stream

    def log(self, exchange: Exchange) -> None:
        client = exchange.downstream
        now = time.time()
        duration_ms = round((client.time() - exchange.started) * 1000, 3) \
            if exchange.started else 0.0
        if self.clf:
            stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
            line = (f'{client.src} - - [{stamp}] "{exchange.method} {exchange.url} '
                    f'HTTP/{exchange.req_ver}" {exchange.status} {exchange.resp_bytes}')
        else:
            line = json.dumps({
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                + f".{int(now * 1000) % 1000:03d}Z",
                "client": client.src, "client_port": client.src_port,
                "frontend": exchange.frontend.name,
                "backend": exchange.backend.name if exchange.backend else None,
                "server": exchange.server.name if exchange.server else None,
                "method": exchange.method, "url": exchange.url, "proto": exchange.req_ver,
                "status": exchange.status, "bytes": exchange.resp_bytes,
                "duration_ms": duration_ms, "retries": exchange.attempts,
            }, separators=(",", ":"))
        self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def make_access_log(config: LogConfig) -> AccessLog | None:
    return None if config.format == "off" else AccessLog(config)
