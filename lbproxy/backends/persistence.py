"""Sticky-cookie persistence around the balancer: which server a cookie pins a request
to, what the server sees of the cookie, and what the response sets.

The string work is in lbproxy/balance/sticky.py; this adds the data-plane side: flat
header lists and the rule for when a stuck server may still be used (up, not in maint,
not full: a draining server keeps its sticky clients, as in HAProxy).
"""

from __future__ import annotations

from collections.abc import Iterable

from lbproxy.backends.server import MAINT, Server
from lbproxy.balance import sticky
from lbproxy.config.schema import CookieConfig
from lbproxy.http.request import RequestInfo


class CookiePersistence:
    def __init__(self, config: CookieConfig) -> None:
        self.config = config
        self.edits_request = (config.mode == sticky.INSERT and config.indirect) or \
            config.mode == sticky.PREFIX

    @staticmethod
    def stuck_server(sticky_id: str | None, servers: Iterable[Server]) -> Server | None:
        """The server named by the cookie's id, when it can still take the request."""
        if sticky_id is None:
            return None
        for server in servers:
            if server.cookie == sticky_id:
                if not server.up or server.admin == MAINT or server.full:
                    return None
                return server
        return None

    def request_headers(self, parts: list[bytes]) -> list[bytes]:
        """Cookie headers as the server should see them (ours removed or unprefixed)."""
        if not self.edits_request:
            return parts
        kept: list[bytes] = []
        for i in range(0, len(parts), 4):
            if parts[i].lower() == b"cookie":
                value = sticky.forward_cookie(self.config, parts[i + 2].decode("latin-1"))
                if value is None:
                    continue
                kept += (parts[i], b": ", value.encode("latin-1"), b"\r\n")
            else:
                kept += parts[i:i + 4]
        return kept

    def response_headers(self, parts: list[bytes], server: Server,
                         sticky_id: str | None) -> list[bytes]:
        """The server's Set-Cookie headers rewritten, plus ours when the client needs it."""
        kept: list[bytes] = []
        for i in range(0, len(parts), 4):
            if parts[i].lower() == b"set-cookie":
                value = sticky.rewrite_set_cookie(self.config, parts[i + 2].decode("latin-1"),
                                                  server)
                if value is None:
                    continue
                kept += (parts[i], b": ", value.encode("latin-1"), b"\r\n")
            else:
                kept += parts[i:i + 4]
        for name, value in sticky.response_headers(self.config, server, sticky_id):
            kept += (name.encode(), b": ", value.encode("latin-1"), b"\r\n")
        return kept

    def sticky_id(self, request: RequestInfo) -> str | None:
        return sticky.server_id(self.config, request)
