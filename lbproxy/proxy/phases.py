"""The phases of an HTTP/1.1 client connection (lbproxy/proxy/client.py describes each)
and the timeout of each, from a frontend's settings.

A module of its own so that the frontend, which keeps the timeouts its connections read,
does not need the client module's body to be loaded first (compiled, each module imports
the other's type while it initialises)."""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lbproxy.proxy.frontend import Frontend


class Phase(IntEnum):
    NEW = 0
    IDLE = 1
    HEAD = 2
    BODY = 3
    WAITING = 4
    TUNNEL = 5


NEW, IDLE, HEAD, BODY, WAITING, TUNNEL = Phase


def phase_timeouts(frontend: Frontend) -> list[float]:
    """The timeout of each phase, indexed by Phase (0: none); TUNNEL's is the client's,
    raised to the server's when the tunnel starts."""
    timeouts = [0.0] * len(Phase)
    timeouts[NEW] = timeouts[HEAD] = frontend.timeout_http_request
    timeouts[IDLE] = frontend.timeout_keep_alive
    timeouts[BODY] = timeouts[TUNNEL] = frontend.timeout_client
    return timeouts
