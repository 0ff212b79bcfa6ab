"""A frontend as the data plane sees it: limits, timeouts, routing and counters.

Everything the client protocol reads per request is a plain attribute here, copied
once from the frozen config, so the hot path does no nested lookups.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import TYPE_CHECKING

from lbproxy.config.schema import FrontendConfig
from lbproxy.extensions import PluginFailed
from lbproxy.http.addresses import parse_ip
from lbproxy.proxy.client import ClientProtocol
from lbproxy.proxy.compression import Compression
from lbproxy.proxy.phases import phase_timeouts
from lbproxy.proxy.plugin_call import answer_failed
from lbproxy.proxy.request_id import RequestIds
from lbproxy.routing.actions import ANSWERED, SUSPENDED, FrontendRules, RequestRule

# Bytes tolerated beyond max_header_size before a partially received head (431) or an
# unfinished chunk-size line, chunk extension or trailer (400) is refused; the exact
# per-header checks run on parsed data.
HEAD_SLACK = 8192

if TYPE_CHECKING:
    from lbproxy.http2.connection import Settings
    from lbproxy.proxy.dispatch import Dispatcher
    from lbproxy.proxy.exchange import Exchange
    from lbproxy.proxy.h2client import H2ClientProtocol
    from lbproxy.proxy.listener import Listener
    from lbproxy.proxy.request import Request
    from lbproxy.proxy.state import ProxyState
    from lbproxy.runtime.accesslog import AccessLog


class Frontend:
    def __init__(self, config: FrontendConfig, state: ProxyState,
                 dispatchers: dict[str, Dispatcher], access_log: AccessLog | None,
                 rules: FrontendRules) -> None:
        self.name = config.name
        self.state = state
        self.listeners: list[Listener] = []
        self.phase_timeouts: list[float] = []
        self.configure(config, dispatchers, access_log, rules)
        # counters
        self.accepted = 0               # connections accepted (TLS ones before the handshake)
        self.connections = 0            # open now
        self.connections_total = 0      # accepted and, for TLS, past the handshake
        self.max_connections_seen = 0
        self.bytes_in = 0               # request bytes from clients
        self.bytes_out = 0              # response bytes from servers, relayed to clients
        self.requests = 0
        self.responses = [0] * 6
        self.rejected = 0               # malformed requests refused
        self.denied = 0                 # requests denied by a rule
        self.h2_connections = 0         # connections that spoke HTTP/2
        self.h2_requests = 0            # streams that carried a request
        self.h2_protocol_errors = 0     # malformed streams and connections
        self.h2_abuse: dict[str, int] = {}   # connections ended or streams refused, by why

    def configure(self, config: FrontendConfig, dispatchers: dict[str, Dispatcher],
                  access_log: AccessLog | None, rules: FrontendRules) -> None:
        """Take (new) settings and rules; counters and connections are kept (reload)."""
        self.config = config
        self.access_log = access_log
        timeouts = config.timeouts
        self.timeout_client = timeouts.client
        self.timeout_http_request = timeouts.http_request
        self.timeout_keep_alive = timeouts.http_keep_alive
        self.phase_timeouts[:] = phase_timeouts(self)    # in place: connections hold it
        limits = config.limits
        self.max_header_size = limits.max_header_size
        self.max_unparsed = limits.max_header_size + HEAD_SLACK
        self.max_headers = limits.max_headers
        self.max_body_size = limits.max_body_size
        forwarded = config.forwarded
        self.x_forwarded_for = forwarded.x_forwarded_for
        self.x_forwarded_proto = forwarded.x_forwarded_proto
        self.x_forwarded_host = forwarded.x_forwarded_host
        self.trusted_proxies = [ipaddress.ip_network(net, strict=False)
                                for net in forwarded.trusted_proxies]
        self.request_rules = rules.request
        self.response_rules = rules.response
        self.dispatchers = dispatchers        # by backend name (auth_request)
        self.use_backend = rules.backend_choices(dispatchers)
        self.default_backend = (dispatchers[config.default_backend]
                                if config.default_backend else None)
        self.maxconn = config.maxconn
        self.compression = Compression(config.compression) if config.compression else None
        self.unique_id = (RequestIds(config.unique_id, rules.unique_id)
                          if config.unique_id is not None and rules.unique_id is not None
                          else None)
        # HTTP/2 to clients, imported only when a bind speaks it (2 MB of modules otherwise)
        self.h2_protocol: type[H2ClientProtocol] | None = None
        self.h2_settings: Settings | None = None
        if any(bind.h2c or (bind.tls is not None and "h2" in bind.tls.alpn)
               for bind in config.bind):
            from lbproxy.http2.connection import Settings
            from lbproxy.proxy.h2client import H2ClientProtocol

            http2 = config.http2
            self.h2_protocol = H2ClientProtocol
            self.h2_settings = Settings(http2.max_concurrent_streams, http2.initial_window_size,
                                        http2.max_header_list_size)

    def route(self, exchange: Exchange, rules: Iterator[RequestRule] | None = None
              ) -> Dispatcher | None:
        """Run the http_request rules (`rules`: those left after a suspension), then pick
        the backend (its dispatcher; None: no backend, 503).

        When a rule answers the request itself (deny, return, redirect) the exchange
        has its status set and the caller stops there; when one suspends it
        (auth_request), the rules left are kept in `exchange.rules_left`."""
        remaining = iter(self.request_rules) if rules is None else rules
        try:
            for test, action in remaining:
                if test is None or test(exchange):
                    outcome = action(exchange)
                    if outcome:
                        if outcome == ANSWERED:
                            return None
                        if outcome == SUSPENDED:
                            exchange.rules_left = remaining
                            return None
                        break                       # allow: skip the remaining rules
            for test, choose in self.use_backend:
                if test is None or test(exchange):
                    backend = choose(exchange)      # None: a template named no backend
                    if backend is not None:
                        return backend
        except PluginFailed:                        # (logged where it was raised)
            answer_failed(exchange)
            return None
        return self.default_backend

    def forwarded_parts(self, request: Request) -> list[bytes]:
        """X-Forwarded-For/-Proto/-Host as this frontend adds them, as header quadruples:
        the client address appended to what the request carried, the scheme, the host."""
        downstream = request.downstream
        parts: list[bytes] = []
        if self.x_forwarded_for:
            if request.xff_b is None:
                parts.extend((b"x-forwarded-for", b": ", downstream.src_b, b"\r\n"))
            else:
                parts.extend((b"x-forwarded-for", b": ", request.xff_b + b", " + downstream.src_b,
                              b"\r\n"))
        if self.x_forwarded_proto:
            parts.extend((b"x-forwarded-proto", b": ", b"https" if downstream.ssl_fc else b"http",
                          b"\r\n"))
        if self.x_forwarded_host and request.host_b is not None:
            parts.extend((b"x-forwarded-host", b": ", request.host_b, b"\r\n"))
        return parts

    def is_trusted(self, ip: str) -> bool:
        """Whether `ip` is one of forwarded.trusted_proxies (whose X-Forwarded-For we believe)."""
        if not self.trusted_proxies:
            return False
        address = parse_ip(ip)
        return address is not None and any(address in network
                                           for network in self.trusted_proxies)

    def forwarded_client(self, xff: bytes) -> str | None:
        """The client behind trusted proxies: the right-most X-Forwarded-For address that is
        not itself a trusted proxy (earlier entries could be forged by the client)."""
        for item in reversed(xff.decode("latin-1").split(",")):
            candidate = item.strip()
            if parse_ip(candidate) is None:
                return None
            if not self.is_trusted(candidate):
                return candidate
        return None

    def protocol(self, h2c: bool = False, port: int = 0) -> ClientProtocol:
        """A new connection's protocol: HTTP/1.1, which hands the connection over to
        HTTP/2 when TLS chose h2 or (`h2c` binds) the client preface arrives. `port` is
        the bind's, the connection's local port."""
        self.accepted += 1
        return ClientProtocol(self, h2c, port)

    @property
    def tls_handshake_failures(self) -> int:
        """TLS handshakes that failed (or are under way): a failed handshake is dropped
        before the protocol hears of the connection (by asyncio's TLS or by
        lbproxy/proxy/tls_layer.pyx), so it shows only as an accepted connection that was
        never made."""
        return self.accepted - self.connections_total

    # connection limits: at maxconn the listeners pause and clients wait in the backlog

    def connection_opened(self) -> None:
        self.connections += 1
        self.connections_total += 1
        if self.connections > self.max_connections_seen:
            self.max_connections_seen = self.connections
        state = self.state
        state.connections += 1
        if 0 < self.maxconn <= self.connections:
            self.pause()
            state.limits_hit = True
        if state.connections >= state.max_connections:
            for frontend in state.frontends:
                frontend.pause()
            state.limits_hit = True

    def connection_closed(self) -> None:
        """Resume what a limit paused once under it again; nothing to look at (not every
        frontend on every close) while no limit was hit."""
        self.connections -= 1
        state = self.state
        state.connections -= 1
        if state.limits_hit and state.connections < state.max_connections and not state.stopping:
            still_paused = False
            for frontend in state.frontends:
                if frontend.paused:
                    if 0 < frontend.maxconn <= frontend.connections:
                        still_paused = True
                    else:
                        frontend.resume()
            state.limits_hit = still_paused

    @property
    def paused(self) -> bool:
        return any(not listener.accepting for listener in self.listeners)

    def pause(self) -> None:
        for listener in self.listeners:
            listener.pause()

    def resume(self) -> None:
        for listener in self.listeners:
            listener.resume()
