"""One request/response cycle: route it, pick a server, send it, retry it, answer it.

The client protocol creates an Exchange when a request starts and fills in its head;
the exchange then owns everything until the response is complete: the upstream lease,
the request body still to be sent, retries and redispatch, error answers, counters and
the access log. It also implements RequestInfo (lbproxy/http/request.py), decoding a
header only when a rule or a balancer asks for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lbproxy.backends.outcomes import CONNECT_FAILURE
from lbproxy.http.errors import canned
from lbproxy.http.headers import strip_named
from lbproxy.tables.stick_table import StickTable, is_http_error

if TYPE_CHECKING:
    from lbproxy.backends.backend import Backend
    from lbproxy.backends.server import Server
    from lbproxy.proxy.client import ClientProtocol
    from lbproxy.proxy.upstream import ServerPool, UpstreamProtocol

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

# Request body bytes held while no server connection is ready; past it the client waits.
BODY_BUFFER_LIMIT = 256 * 1024
PAUSE_BODY = 4                  # ClientProtocol pause reason: body buffered, no upstream yet


class Exchange:
    __slots__ = (
        # request head, filled by ClientProtocol
        "client", "method_b", "url_b", "http11", "keep_alive", "hparts", "host_b", "xff_b",
        "length", "chunked", "expect_continue", "extra_hop", "is_head", "norm_path",
        "upgrade_b", "connection",
        # request body
        "body", "body_buffered", "body_size", "request_complete",
        # dispatch
        "backend", "server", "upstream", "connecting", "attempts", "request_head",
        # response
        "status", "started", "resp_bytes",
        # stick counters tracked by rules (track_sc0..2), None until one is
        "tracked",
        # waiting in the backend queue (maxconn); sticky-cookie server id the client sent
        "queued", "sent_id",
        # the client address X-Forwarded-For gives when the peer is a trusted proxy
        "forwarded_src",
    )

    def __init__(self, client: ClientProtocol) -> None:
        self.client = client
        self.method_b = b""
        self.url_b = b""
        self.http11 = True
        self.keep_alive = True
        self.hparts: list[bytes] = []
        self.host_b: bytes | None = None
        self.xff_b: bytes | None = None
        self.length = -1               # request Content-Length, -1 when absent
        self.chunked = False
        self.expect_continue = False
        self.extra_hop: set[bytes] | None = None
        self.is_head = False
        self.norm_path: str | None = None
        self.upgrade_b: bytes | None = None   # Upgrade header; kept only for a real upgrade
        self.connection: list[bytes] | None = None   # Connection tokens, lower-cased
        self.body: list[bytes] = []    # encoded body bytes not yet written to the server
        self.body_buffered = 0
        self.body_size = 0
        self.request_complete = False
        self.backend: Backend | None = None
        self.server: Server | None = None
        self.upstream: UpstreamProtocol | None = None
        self.connecting: ServerPool | None = None
        self.attempts = 0
        self.request_head: bytes | None = None
        self.status = 0
        self.started = 0.0
        self.resp_bytes = 0            # bytes received from the server for this response
        self.tracked: list | None = None
        self.queued = False
        self.sent_id: str | None = None
        self.forwarded_src: str | None = None

    # request body (called by the client protocol while parsing)

    def request_body(self, data: bytes) -> None:
        size = len(data)
        self.body_size += size
        if self.chunked:
            self.body += (b"%x\r\n" % size, data, b"\r\n")
        else:
            self.body.append(data)
        if self.upstream is None:
            self.body_buffered += size
            if self.body_buffered > BODY_BUFFER_LIMIT:
                self.client.pause_reading(PAUSE_BODY)

    def request_done(self) -> None:
        if self.chunked:
            self.body.append(b"0\r\n\r\n")
        self.request_complete = True

    def flush_body(self) -> None:
        """Send body bytes parsed since the last flush, if a server connection is ready."""
        upstream = self.upstream
        if upstream is not None and self.body:
            upstream.send(self.body)
            self.body = []

    # dispatch

    def start(self) -> None:
        """The request head is complete and it is this client's turn: route and send."""
        client = self.client
        self.started = client.time()
        frontend = client.frontend
        frontend.requests += 1
        backend = frontend.route(self)
        if backend is None:
            if not self.status:                # not answered by a rule
                self.respond(503)
            return
        self.backend = backend
        backend.requests += 1
        persistence = backend.persistence
        if persistence is not None:
            self.sent_id = persistence.sent_id(self)
            self.hparts = persistence.request_headers(self.hparts)
        self.dispatch(None)

    def dispatch(self, avoid: Server | None) -> None:
        backend = self.backend
        server = backend.pick(self, avoid)
        if server is not None:
            self.use(server)
        elif backend.can_queue():
            self.queued = True
            backend.enqueue(self)
        else:
            self.respond(503)

    def use(self, server: Server) -> None:
        """Send the request to `server`: a pooled connection, or a new one."""
        self.server = server
        self.backend.in_flight += 1
        server.in_flight += 1
        if server.in_flight > server.max_in_flight:
            server.max_in_flight = server.in_flight
        server.requests += 1
        if self.backend.lb_hooks:
            self.backend.balancer_for(server).on_start(server)
        upstream = server.pool.acquire()
        if upstream is None:
            server.pool.connect(self)
        else:
            self.attach(upstream)

    def attach(self, upstream: UpstreamProtocol) -> None:
        """Send the request on `upstream` (a fresh or pooled connection to self.server)."""
        if self.client.transport is None:      # the client left while we connected
            self.server.pool.release(upstream)
            self._release_server(True)
            return
        self.upstream = upstream
        upstream.exchange = self
        upstream.received = False              # per exchange: a pooled connection has history
        upstream.deadline = self.client.time() + self.backend.server_timeout
        head = self.request_head
        if head is None or self.host_b is None:     # without Host, the head names the server
            head = self.request_head = self._build_head()
        if self.body:
            self.body.insert(0, head)
            upstream.send(self.body)
            self.body = []
        else:
            upstream.send_data(head)
        if self.body_buffered:
            self.body_buffered = 0
            self.client.resume_reading(PAUSE_BODY)
        if self.client.write_paused:
            upstream.read_paused = True
            upstream.transport.pause_reading()

    def _build_head(self) -> bytes:
        client = self.client
        frontend = client.frontend
        parts = [self.method_b, b" ", self.url_b, b" HTTP/1.1\r\n"]
        parts += self.hparts if self.extra_hop is None else strip_named(self.hparts,
                                                                        self.extra_hop)
        if self.host_b is None:        # HTTP/1.0 without Host: HTTP/1.1 requires one
            parts += (b"host: ", self.server.host_header, b"\r\n")
        if self.upgrade_b is not None:
            parts += (b"connection: upgrade\r\nupgrade: ", self.upgrade_b, b"\r\n")
        if self.chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        elif self.length >= 0:
            parts += (b"content-length: ", b"%d" % self.length, b"\r\n")
        if frontend.x_forwarded_for:
            if self.xff_b is None:
                parts += (b"x-forwarded-for: ", client.src_b, b"\r\n")
            else:
                parts += (b"x-forwarded-for: ", self.xff_b, b", ", client.src_b, b"\r\n")
        if frontend.x_forwarded_proto:
            parts.append(b"x-forwarded-proto: https\r\n" if client.ssl_fc
                         else b"x-forwarded-proto: http\r\n")
        if frontend.x_forwarded_host and self.host_b is not None:
            parts += (b"x-forwarded-host: ", self.host_b, b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    # outcomes

    def response_head(self, head: list[bytes]) -> None:
        """The server's response head is being relayed: decide the client's keep-alive."""
        if not (self.keep_alive and self.request_complete) or self.client.state.stopping:
            self.keep_alive = False
            head.append(b"connection: close\r\n")
        elif not self.http11:
            head.append(b"connection: keep-alive\r\n")

    def response_done(self, upstream: UpstreamProtocol, reusable: bool) -> None:
        self.upstream = None
        server = self.server
        if reusable and self.request_complete:
            server.pool.release(upstream)
        else:
            upstream.close()
        server.observe_latency(self.client.time() - self.started)
        passive = self.backend.passive
        if passive is not None:
            passive.observe(server, self.status)
        self._release_server(self.status < 500)
        self.finish()

    def tunnel_started(self, upstream: UpstreamProtocol) -> None:
        """The server switched protocols: count the 101 and hand both ends to the tunnel.
        The server slot stays taken until the tunnel closes (abandon releases it)."""
        client = self.client
        client.frontend.responses[1] += 1
        self.backend.responses[1] += 1
        self.server.responses[1] += 1
        if client.frontend.access_log is not None:
            client.frontend.access_log.log(self)
        client.start_tunnel(upstream)

    def upstream_failed(self, kind: str) -> None:
        """The server connection failed: retry, answer 502/503/504, or cut the client."""
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.close()
        server = self.server
        server.failures += 1
        passive = self.backend.passive
        if passive is not None:
            passive.observe(server, kind)
        self._release_server(False)
        if self.status:                        # the client already has part of a response
            self.client.abort()
            return
        backend = self.backend
        if (self.attempts < backend.retries and kind in backend.retry_on
                and (kind == CONNECT_FAILURE or self._replayable())):
            self.attempts += 1
            backend.retried += 1
            avoid = server if backend.redispatch else None
            if avoid is not None:
                backend.redispatched += 1
            self.dispatch(avoid)
            return
        self.respond(503 if kind == CONNECT_FAILURE else 504
                     if kind == "response-timeout" else 502)

    def _replayable(self) -> bool:
        """May be sent again: idempotent and nothing of its body was consumed."""
        return self.method_b in IDEMPOTENT and self.body_size == 0 and self.request_complete

    def _release_server(self, ok: bool) -> None:
        server = self.server
        if server is None:
            return
        backend = self.backend
        server.in_flight -= 1
        backend.in_flight -= 1
        if backend.lb_hooks:
            backend.balancer_for(server).on_finish(server, self.client.time() - self.started,
                                                   ok)
        if backend.queue:
            backend.released()

    def may_keep_alive(self) -> bool:
        """Whether the client connection may stay open after a proxy-made answer."""
        return self.keep_alive and self.request_complete and not self.client.state.stopping

    def respond(self, status: int, response: bytes | None = None) -> None:
        """Answer from the proxy itself (an error page, a deny, a redirect)."""
        self.status = status
        keep = self.keep_alive = self.may_keep_alive()
        if response is None:
            response = canned(status, keep)
        if self.is_head:                # the same head as for GET, without the body
            response = response[:response.index(b"\r\n\r\n") + 4]
        self.client.send_one(response)
        self.finish()

    # changes made by rules

    def set_url(self, url: str) -> None:
        self.url_b = url.encode("latin-1", "replace")
        self.norm_path = None

    def raw_header(self, lname: bytes) -> bytes | None:
        parts = self.hparts
        for i in range(0, len(parts), 4):
            if parts[i].lower() == lname:
                return parts[i + 2]
        return None

    def track(self, counter: int, table: StickTable, key: str) -> None:
        """track_scN: count this request in `table` under `key` (once per counter)."""
        tracked = self.tracked
        if tracked is None:
            tracked = self.tracked = [None, None, None]
        elif tracked[counter] is not None:
            return
        entry = table.track(key)
        entry.on_request()
        tracked[counter] = entry
        self.client.hold_entry(entry)

    def response_headers(self, parts: list[bytes]) -> list[bytes]:
        """Sticky cookies and the frontend's http_response rules on the response headers."""
        persistence = self.backend.persistence
        if persistence is not None:
            parts = persistence.response_headers(parts, self.server, self.sent_id)
        for test, edit in self.client.frontend.response_rules:
            if test is None or test(self):
                parts = edit(self, parts)
        return parts

    @property
    def srv_name(self) -> str:
        return self.server.name if self.server is not None else ""

    def abandon(self) -> None:
        """The client went away: let go of the server connection and the server slot.
        Not the server's failure: a balancer must not learn to avoid it for this."""
        self.queued = False
        if self.connecting is not None:
            self.connecting = None
            self._release_server(True)
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.close()
            self._release_server(True)

    def finish(self) -> None:
        status = self.status
        client = self.client
        frontend = client.frontend
        frontend.responses[status // 100] += 1
        frontend.bytes_out += self.resp_bytes
        if self.backend is not None:
            self.backend.responses[status // 100] += 1
            if self.server is not None:
                self.server.responses[status // 100] += 1
                self.server.bytes_out += self.resp_bytes
        if self.tracked is not None and is_http_error(status):
            for entry in {id(e): e for e in self.tracked if e is not None}.values():
                entry.on_error()
        if frontend.access_log is not None:
            frontend.access_log.log(self)
        client.exchange_done(self)

    # RequestInfo: decoded on demand

    @property
    def method(self) -> str:
        return self.method_b.decode("latin-1")

    @property
    def url(self) -> str:
        return self.url_b.decode("latin-1")

    @property
    def path(self) -> str:
        return self.url.split("?", 1)[0]

    @property
    def query(self) -> str:
        url = self.url
        return url.split("?", 1)[1] if "?" in url else ""

    @property
    def host(self) -> str:
        if self.host_b is None:
            return ""
        value = self.host_b.decode("latin-1").strip().lower()
        if value.startswith("["):
            return value[: value.find("]") + 1]
        return value.rsplit(":", 1)[0] if value.count(":") == 1 else value

    @property
    def src(self) -> str:
        return self.forwarded_src or self.client.src

    @property
    def src_port(self) -> int:
        return self.client.src_port

    @property
    def dst_port(self) -> int:
        return self.client.dst_port

    @property
    def ssl_fc(self) -> bool:
        return self.client.ssl_fc

    @property
    def ssl_fc_sni(self) -> str | None:
        return self.client.ssl_fc_sni

    def _raw_values(self, name: str) -> list[str]:
        if name == "host":
            return [] if self.host_b is None else [self.host_b.decode("latin-1")]
        if name == "x-forwarded-for":
            return [] if self.xff_b is None else [self.xff_b.decode("latin-1")]
        wanted = name.encode("latin-1")
        parts = self.hparts
        return [parts[i + 2].decode("latin-1") for i in range(0, len(parts), 4)
                if parts[i].lower() == wanted]

    def header(self, name: str) -> str | None:
        values = self._raw_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        return [part.strip() for value in self._raw_values(name) for part in value.split(",")]

    def cookie(self, name: str) -> str | None:
        for value in self._raw_values("cookie"):
            for pair in value.split(";"):
                key, _, cookie_value = pair.strip().partition("=")
                if key == name:
                    return cookie_value
        return None
