"""A balancer a plugin registered (lbproxy.ext.balancer), behind the Balancer interface.

The plugin's `pick(req, servers)` gets the servers that can take the request now (the
retry's `avoid` left out while another one can). What it returns must be one of them;
anything else, or an exception, fails the request with 500 (lbproxy/proxy/dispatch.py
catches PluginFailed) and is logged once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lbproxy.balance.base import Balancer
from lbproxy.ext import Request
from lbproxy.extensions import BALANCERS, PluginFailed, failed
from lbproxy.http.request import RequestInfo

if TYPE_CHECKING:
    from lbproxy.backends.server import Server


class PluginBalancer(Balancer):
    def __init__(self, servers: Sequence[Server], name: str) -> None:
        super().__init__(servers)
        self.name = name
        self.plugin = BALANCERS[name]()

    def pick(self, request: RequestInfo, avoid: Server | None = None) -> Server | None:
        usable = [server for server in self.servers if server.available and server is not avoid]
        if not usable and avoid is not None and avoid.available:
            usable = [avoid]
        if not usable:
            return None
        try:
            chosen = self.plugin.pick(Request(request), usable)  # type: ignore[arg-type]
            if chosen is not None and chosen not in usable:
                raise ValueError(f"pick returned {chosen!r}, which is not one of the servers given")
        except Exception as exc:      # noqa: BLE001 (whatever a plugin raises: 500, logged)
            failed(self.name, exc)
            raise PluginFailed(self.name) from exc
        return chosen
