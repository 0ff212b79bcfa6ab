"""auth_request: ask an auth backend whether a request may go on (nginx auth_request,
Traefik ForwardAuth, Envoy ext_authz).

The subrequest is an Exchange like any other, sent through the auth backend's Dispatcher,
so it gets that backend's pools, balancing, health checks, retries and timeouts. It is a
GET to the action's `path` carrying the request's headers (no body) plus
X-Original-Method and X-Original-URI. Its downstream is an AuthCall, which collects the
answer instead of sending it anywhere and, once the subrequest ends, decides:

- 2xx: the request goes on with its next rule; the `copy_headers` of the answer replace
  the client's headers of those names (and the answer may be reused for `cache.ttl`
  by every request with the same `cache.key`);
- 401 or 403: that answer, with its headers and body, goes to the client;
- anything else, no answer, or a timeout: 500.

The request's rule evaluation is suspended meanwhile (the action returns SUSPENDED) and
resumed from the next rule; a client that leaves cancels the subrequest.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from lbproxy.http.answers import Answer, error_answer
from lbproxy.http.termination import AUTH_DENIED, AUTH_FAILED
from lbproxy.routing.actions import ANSWERED, CONTINUE, SUSPENDED, AuthRequest, without

if TYPE_CHECKING:
    from lbproxy.proxy.exchange import Exchange
    from lbproxy.proxy.frontend import Frontend
    from lbproxy.proxy.upstream import UpstreamProtocol

ALLOW_CACHE_SIZE = 10_000       # allow answers kept per action; the oldest go first
MAX_DENIAL_BODY = 64 * 1024     # of a 401/403 body relayed to the client
# what an auth answer cannot hand to the client: framing, which the proxy writes itself
NOT_RELAYED = frozenset({b"content-length", b"content-type"})


def authorize(exchange: Exchange, check: AuthRequest) -> int:
    """The auth_request action for `exchange`: CONTINUE on a cached allow, else the
    subrequest: SUSPENDED, or ANSWERED/CONTINUE when it was decided at once."""
    key = check.key(exchange) if check.key is not None else None
    if key is not None:
        allowed = check.allowed.get(key)
        if allowed is not None:
            if allowed[0] > time.monotonic():
                _copy(exchange, allowed[1])
                return CONTINUE
            del check.allowed[key]
    dispatcher = exchange.frontend.dispatchers.get(check.backend)
    if dispatcher is None:                      # removed by a reload since
        exchange.set_termination("P", AUTH_FAILED)
        exchange.respond(error_answer(500))
        return ANSWERED
    call = AuthCall(exchange, check, key)
    exchange.waiting = call
    dispatcher.dispatch(call.subrequest(dispatcher), None)
    if call.outcome is not None:                # decided at once (no server, say)
        exchange.waiting = None
        return call.apply()
    call.waiting = True
    return SUSPENDED


def _copy(exchange: Exchange, headers: list[tuple[bytes, bytes]]) -> None:
    """Replace the request's headers of these names with the allow answer's (through
    Request.edit_headers, which knows where X-Forwarded-For and Host are kept)."""
    for lname in dict.fromkeys(name.lower() for name, _ in headers):   # in answer order
        def replace(_request: object, parts: list[bytes], lname: bytes = lname) -> list[bytes]:
            parts = without(parts, lname)
            for name, value in headers:
                if name.lower() == lname:
                    parts += (name, b": ", value, b"\r\n")
            return parts
        exchange.edit_headers(lname, replace)
    exchange.request_head = None


def auth_frontend(frontend: Frontend) -> Frontend:
    """What the subrequest's exchange sees as its frontend: the real one's forwarding
    settings, and nothing that would count or log it as a client's request (a Frontend,
    as the exchange wants, made without a config)."""
    auth = type(frontend).__new__(type(frontend))
    auth.name = frontend.name
    auth.state = frontend.state
    auth.x_forwarded_for = frontend.x_forwarded_for
    auth.x_forwarded_proto = frontend.x_forwarded_proto
    auth.x_forwarded_host = frontend.x_forwarded_host
    auth.response_rules = ()
    auth.access_log = None
    auth.responses = [0] * 6
    auth.bytes_out = 0
    return auth


class AuthCall:
    """The downstream of one auth subrequest: it keeps the answer (see the module's text)."""

    def __init__(self, exchange: Exchange, check: AuthRequest, key: str | None) -> None:
        self.main = exchange
        self.check = check
        self.key = key
        client = exchange.downstream
        self.frontend = auth_frontend(exchange.frontend)
        self.state = client.state
        self.time = client.time
        self.src, self.src_b, self.src_port = client.src, client.src_b, client.src_port
        self.dst_port, self.ssl_fc, self.ssl_fc_sni = (client.dst_port, client.ssl_fc,
                                                       client.ssl_fc_sni)
        self.peer_trusted = False
        self.closed = False
        self.write_paused = False
        self.waiting = False            # the main request is suspended on this call
        self.sub: Exchange | None = None
        self.status = 0
        self.headers: list[bytes] = []
        self.body: list[bytes] = []
        self.body_size = 0
        self.outcome: int | None = None  # set when the subrequest ended

    def subrequest(self, dispatcher: object) -> Exchange:
        main = self.main
        sub = self.sub = type(main)(self)               # an Exchange, its downstream us
        sub.method_b = b"GET"
        sub.url_b = self.check.path
        sub.host_b = main.host_b
        sub.xff_b = main.xff_b
        sub.hparts = main.hparts + [b"x-original-method", b": ", main.method_b, b"\r\n",
                                    b"x-original-uri", b": ", main.url_b, b"\r\n"]
        sub.request_complete = True
        sub.started = self.time()
        sub.dispatcher = dispatcher
        sub.backend = dispatcher.backend
        return sub

    def cancel(self) -> None:
        """The client left: the subrequest lets go of its server."""
        self.closed = True
        if self.sub is not None and self.outcome is None:
            self.sub.abandon()

    # Downstream, for the subrequest

    def pause_reading(self, reason: int) -> None:
        pass

    def resume_reading(self, reason: int) -> None:
        pass

    def informational(self, status: int) -> None:
        pass

    def response_head(self, exchange: Exchange, status: int, headers: list[bytes],
                      length: int, end_stream: bool) -> None:
        self.status = status
        self.headers = headers

    def response_body(self, data: bytes) -> None:
        if self.body_size < MAX_DENIAL_BODY:
            self.body.append(data)
            self.body_size += len(data)

    def response_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        pass

    def flush(self, end: bool) -> None:
        pass

    def answer(self, exchange: Exchange, answer: Answer) -> int:
        self.status = 0                 # the proxy's own 502/503/504: no answer
        return 0

    def start_tunnel(self, upstream: UpstreamProtocol, data: bytes) -> None:
        self.abort()

    def tunnel_data(self, data: bytes) -> None:
        pass

    def hold_entry(self, entry: object) -> None:
        pass

    def abort(self) -> None:
        """A response cut short: no decision can come from it."""
        self.status = 0

    def close(self) -> None:
        self.status = 0

    def exchange_done(self, exchange: Exchange) -> None:
        """The subrequest ended: decide, and if the main request waits, let it go on."""
        self.outcome = CONTINUE if 200 <= self.status < 300 else ANSWERED
        if self.closed or not self.waiting:
            return
        main = self.main
        main.waiting = None
        if self.apply() == CONTINUE:
            main.resume_routing()

    def apply(self) -> int:
        """Act on the main request as the answer says; what its rule returns."""
        main, status = self.main, self.status
        if 200 <= status < 300:
            copied = self._copied()
            _copy(main, copied)
            check = self.check
            if self.key is not None and check.ttl > 0:
                allowed = check.allowed
                if len(allowed) >= ALLOW_CACHE_SIZE:
                    del allowed[next(iter(allowed))]
                allowed[self.key] = (time.monotonic() + check.ttl, copied)
            return CONTINUE
        if status in (401, 403):
            main.set_termination("P", AUTH_DENIED)
            headers = tuple((self.headers[i], self.headers[i + 2])
                            for i in range(0, len(self.headers), 4)
                            if self.headers[i].lower() not in NOT_RELAYED)
            content_type = next((self.headers[i + 2] for i in range(0, len(self.headers), 4)
                                 if self.headers[i].lower() == b"content-type"), b"text/plain")
            main.respond(Answer(status, b"".join(self.body), content_type, headers))
            return ANSWERED
        main.set_termination("P", AUTH_FAILED)
        main.respond(error_answer(500))
        return ANSWERED

    def _copied(self) -> list[tuple[bytes, bytes]]:
        wanted = self.check.copy_headers
        headers = self.headers
        return [(headers[i], headers[i + 2]) for i in range(0, len(headers), 4)
                if headers[i].lower() in wanted]
