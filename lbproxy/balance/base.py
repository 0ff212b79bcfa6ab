"""The interface every balancing algorithm implements.

An algorithm owns only its data structure. The backend around it owns health filtering
of the pool it passes in, backup servers, stickiness, queueing and 503s (see
lbproxy/backends/backend.py). `pick` returns None when no server is available; it never
raises and never touches sockets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lbproxy.http.request import RequestInfo

if TYPE_CHECKING:
    from lbproxy.backends.server import Server


class Balancer:
    """Base class: keeps the server list; subclasses implement `pick`.

    Contract:
    - `pick(request, avoid)` returns a server whose `available` is true and that is not
      `avoid` (the server a retry is moving away from), or None. When `avoid` is the
      only available server, it may be returned (a retry on the same server beats 503).
    - `update(servers)` is called when membership changes, or several servers changed
      at once (a reload); it must keep as much rotation/ring state as it can (no reset
      of rotation on a weight change).
    - `refresh(server)` is called when one server's weight or admin/health state
      changed. Algorithms that keep an ordered structure (roundrobin, leastconn) move
      that server alone; the default hands the whole list to `update`.
    - `on_start(server)` / `on_finish(server, latency, ok)` bracket every request sent.
    """

    name = ""

    def __init__(self, servers: Sequence[Server]) -> None:
        self.servers: list[Server] = list(servers)

    def update(self, servers: Sequence[Server]) -> None:
        self.servers = list(servers)

    def refresh(self, server: Server) -> None:
        self.update(self.servers)

    def pick(self, request: RequestInfo, avoid: Server | None = None) -> Server | None:
        raise NotImplementedError

    def wants_hooks(self, servers: Sequence[Server]) -> bool:
        """Whether requests to `servers` must go through on_start/on_finish (the data
        plane skips both calls otherwise): when the algorithm has its own."""
        cls = type(self)
        return cls.on_start is not Balancer.on_start or cls.on_finish is not Balancer.on_finish

    def on_start(self, server: Server) -> None:
        """A request was sent to `server` (in_flight already incremented)."""

    def on_finish(self, server: Server, latency: float, ok: bool) -> None:
        """A request to `server` finished after `latency` seconds; ok=False on error/5xx."""
