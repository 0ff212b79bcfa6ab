"""One request/response cycle, whatever the wire: route it, dispatch it, relay its answer.

A downstream protocol (lbproxy/proxy/downstream.py) creates an Exchange when a request
starts and fills in its head (the Request it extends); from `start()` on, the exchange
owns the cycle: the frontend's rules route it, the backend's Dispatcher sends it to a
server and decides retries, the server connection it is attached to feeds the response
back through `response_head` (where sticky cookies and http_response rules apply) and the
body straight to the downstream, and `finish` counts it, logs it and hands the
downstream its turn back. It never looks inside the protocol objects on either side.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from lbproxy.backends.outcomes import CONNECT_FAILURE, RESPONSE_TIMEOUT
from lbproxy.extensions import PluginFailed
from lbproxy.http.answers import error_answer
from lbproxy.http.termination import CLIENT_CLOSED, NO_BACKEND, OUT_OF_FDS
from lbproxy.proxy.auth import authorize
from lbproxy.proxy.cache import use_cache
from lbproxy.proxy.flow import BODY_BUFFERED, CLIENT_SLOW, SERVER_SLOW
from lbproxy.proxy.plugin_call import answer_failed, run_action
from lbproxy.proxy.request import Request
from lbproxy.tables.stick_table import StickTable, is_http_error

if TYPE_CHECKING:
    from lbproxy.backends.backend import Backend
    from lbproxy.backends.server import Server
    from lbproxy.extensions import PluginAction
    from lbproxy.http.answers import Answer
    from lbproxy.proxy.auth import AuthCall
    from lbproxy.proxy.cache import CacheSink
    from lbproxy.routing.actions import AuthRequest
    from lbproxy.proxy.compression import CompressingSink
    from lbproxy.proxy.dispatch import Dispatcher
    from lbproxy.proxy.plugin_call import PluginCall
    from lbproxy.proxy.downstream import Downstream
    from lbproxy.proxy.h2upstream import H2UpstreamStream
    from lbproxy.proxy.upstream import ServerPool, UpstreamProtocol

# Request body bytes held while no server connection is ready; past it the client waits.
BODY_BUFFER_LIMIT = 256 * 1024


class Exchange(Request):
    __slots__ = (
        "frontend",
        # request body: pieces not yet sent to the server; trailers (HTTP/2 clients)
        "body", "body_buffered", "body_size", "request_complete", "trailers",
        # where the response goes: the downstream, or filters in front of it (compression,
        # the cache); the cache's part in this exchange, and the X-Cache word it got
        "sink", "caching", "cache_status",
        # routing: the request rules left when one suspended it, what that rule waits on
        # (an auth subrequest, a plugin's coroutine), the request id (unique_id)
        "rules_left", "waiting", "unique_id",
        # dispatch
        "dispatcher", "backend", "server", "upstream", "connecting", "attempts", "queued",
        "sticky_id", "request_head",
        # response
        "status", "started", "resp_bytes",
        # how it ended, for the access log: termination flags, an error name, logged yet
        "termination", "error", "logged",
        # stick counters tracked by rules (track_sc0..2), None until one is
        "tracked",
    )

    def __init__(self, downstream: Downstream) -> None:
        self._init_request(downstream)
        self.frontend = downstream.frontend
        self.body: list[bytes] | tuple[()] = ()   # a list once there is a body
        self.body_buffered = 0
        self.body_size = 0
        self.request_complete = False
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.sink: Downstream | CompressingSink | CacheSink = downstream
        self.caching: CacheSink | None = None
        self.cache_status = ""
        self.rules_left: Iterator | None = None
        self.waiting: AuthCall | PluginCall | None = None
        self.unique_id: str | None = None
        self.dispatcher: Dispatcher | None = None
        self.backend: Backend | None = None
        self.server: Server | None = None
        self.upstream: UpstreamProtocol | None = None
        self.connecting: ServerPool | None = None
        self.attempts = 0
        self.queued = False             # waiting in the dispatcher's queue
        self.sticky_id: str | None = None    # the server id the sticky cookie names
        self.request_head: bytes | None = None   # the head as the upstream protocol sends it
        self.status = 0
        self.started = 0.0
        self.resp_bytes = 0             # response bytes relayed (or the proxy's own answer)
        self.termination = "--"         # see set_termination()
        self.error: str | None = None
        self.logged = False
        self.tracked: list | None = None

    # request body (from the downstream while it parses)

    def request_body(self, data: bytes) -> None:
        body = self.body
        if body:
            body.append(data)
        else:
            self.body = [data]
        size = len(data)
        self.body_size += size
        if self.upstream is None:
            self.body_buffered += size
            if self.body_buffered > BODY_BUFFER_LIMIT:
                self.downstream.pause_reading(BODY_BUFFERED)

    def request_done(self) -> None:
        self.request_complete = True
        if self.upstream is not None:
            self.flush_body()

    def flush_body(self) -> None:
        """Send body pieces received since the last flush, if a server connection is ready."""
        upstream = self.upstream
        if upstream is not None:
            upstream.send_body(self.body, self.request_complete)
            self.body = ()

    # dispatch

    def start(self) -> None:
        """The request head is complete and it is this request's turn: route and send."""
        self.started = self.downstream.time()
        frontend = self.frontend
        frontend.requests += 1
        if frontend.unique_id is not None:
            frontend.unique_id.assign(self)
        self._routed(frontend.route(self))

    def resume_routing(self) -> None:
        """A suspended rule (auth_request) let the request go on: the rules after it."""
        rules, self.rules_left = self.rules_left, None
        self._routed(self.frontend.route(self, rules))

    def auth_request(self, check: AuthRequest) -> int:
        """The auth_request action (lbproxy/proxy/auth.py)."""
        return authorize(self, check)

    def plugin_action(self, plugin: PluginAction, args: object) -> int:
        """An action a plugin registered (lbproxy/proxy/plugin_call.py)."""
        return run_action(self, plugin, args)

    def _routed(self, dispatcher: Dispatcher | None) -> None:
        if dispatcher is None:
            if not self.status and self.rules_left is None:   # no rule answered or waits
                self.set_termination("P", NO_BACKEND)
                self.respond(error_answer(503))
            return
        self.dispatcher = dispatcher
        backend = self.backend = dispatcher.backend
        backend.requests += 1
        persistence = backend.persistence
        if persistence is not None:
            self.sticky_id = persistence.sticky_id(self)
            self.hparts = persistence.request_headers(self.hparts)
        self.proceed()

    def proceed(self, lock: bool = True) -> None:
        """Send the routed request on: answered from the backend's cache (or waiting for
        another request's fetch, with `lock`), else to a server, its response through
        the compression and cache sinks that apply."""
        dispatcher = self.dispatcher
        compression = dispatcher.compression or self.frontend.compression
        cache = dispatcher.cache
        if cache is not None:
            coding = compression.variant_of(self) if compression is not None else None
            if use_cache(self, cache, coding, lock):
                return
        if compression is not None:
            self.sink = compression.sink_for(self, self.sink) or self.sink
        dispatcher.dispatch(self, None)

    def attach(self, upstream: UpstreamProtocol) -> None:
        """Send the request on `upstream`, a fresh or pooled connection to self.server."""
        if self.downstream.closed:             # the client left while we connected
            self.server.pool.release(upstream)
            self.dispatcher.release(self, True)
            return
        self.upstream = upstream
        body = self.body
        upstream.send_request(self, body, self.request_complete)
        if body:
            self.body = ()
        if self.body_buffered:
            self.body_buffered = 0
            self.downstream.resume_reading(BODY_BUFFERED)

    # flow control between the two sides

    def pause_request(self) -> None:
        """The server does not read the request body as fast as the client sends it."""
        self.downstream.pause_reading(SERVER_SLOW)

    def resume_request(self) -> None:
        self.downstream.resume_reading(SERVER_SLOW)

    def pause_response(self) -> None:
        """The client does not read the response as fast as the server sends it."""
        if self.upstream is not None:
            self.upstream.pause_reading(CLIENT_SLOW)

    def resume_response(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading(CLIENT_SLOW)

    # outcomes

    def response_head(self, status: int, headers: list[bytes], length: int,
                      end_stream: bool = False) -> None:
        """The server's response starts (`end_stream`: and has no body; only HTTP/2 says
        so in the head): sticky cookies and http_response rules edit its headers, then the
        downstream frames it. When a rule's plugin fails, PluginFailed goes to the upstream
        protocol, which drops the server's answer (`response_refused`)."""
        self.status = status
        try:
            if self.frontend.response_rules or self.backend.persistence is not None:
                headers = self.response_headers(headers)
            self.sink.response_head(self, status, headers, length, end_stream)
        except PluginFailed:
            self.status = 0                 # nothing went out: the proxy answers instead
            raise

    def response_headers(self, parts: list[bytes]) -> list[bytes]:
        persistence = self.backend.persistence
        if persistence is not None:
            parts = persistence.response_headers(parts, self.server, self.sticky_id)
        return self.edited_by_rules(parts)

    def edited_by_rules(self, parts: list[bytes]) -> list[bytes]:
        """`parts` as the frontend's http_response rules leave them (PluginFailed when a
        rule's plugin fails: the response is then the proxy's 500)."""
        for test, edit in self.frontend.response_rules:
            if test is None or test(self):
                parts = edit(self, parts)
        return parts

    def response_refused(self, upstream: UpstreamProtocol | H2UpstreamStream) -> None:
        """A plugin failed in an http_response rule: the server's answer is dropped (its
        connection or stream closed; not the server's failure) and the client gets 500."""
        self.upstream = None
        upstream.close()
        self.dispatcher.release(self, True)
        answer_failed(self)

    def response_done(self, upstream: UpstreamProtocol, reusable: bool) -> None:
        """The whole response was relayed: give the connection back (or close it) and
        the server slot, then finish."""
        self.upstream = None
        server = self.server
        if reusable and self.request_complete:
            server.pool.release(upstream)
        else:
            upstream.close()
        server.observe_latency(self.downstream.time() - self.started)
        passive = self.backend.passive
        if passive is not None:
            passive.observe(server, self.status)
        self.dispatcher.release(self, self.status < 500)
        self.finish()

    def upstream_failed(self, kind: str, error: str | None = None) -> None:
        """The server connection failed (`kind` from backends/outcomes.py; `error`, a
        closer name for the log): retry, answer 502/503/504, or cut the client off when
        part of the response is already out."""
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.close()
        server = self.server
        server.failures += 1
        passive = self.backend.passive
        if passive is not None:
            passive.observe(server, kind)
        self.dispatcher.release(self, False)
        status = self.status
        if not status and self.dispatcher.retry(self, kind):
            return
        self.set_termination("s" if kind == RESPONSE_TIMEOUT else "S", error or kind,
                             "C" if kind == CONNECT_FAILURE else "D" if status else "H")
        if status:
            self._log()
            self.downstream.abort()
        else:
            self.respond(error_answer(503 if kind == CONNECT_FAILURE else
                                      504 if kind == RESPONSE_TIMEOUT else 502))

    def connect_failed(self, out_of_fds: bool) -> None:
        """No connection to the server. When the process had no descriptor left, it is
        not the server's failure (no retry, no health penalty): a 503 now."""
        if not out_of_fds:
            self.upstream_failed(CONNECT_FAILURE)
            return
        self.dispatcher.release(self, True)
        self.set_termination("R", OUT_OF_FDS, "C")
        self.respond(error_answer(503))

    def tunnel_started(self, upstream: UpstreamProtocol, data: bytes) -> None:
        """The server switched protocols: count and log the 101 and hand both ends to the
        tunnel. The server slot stays taken until the tunnel closes (abandon releases it)."""
        self.status = 101
        self._count()
        self._log()
        self.downstream.start_tunnel(upstream, data)

    def respond(self, answer: Answer) -> None:
        """Answer from the proxy itself (an error page, a deny, a redirect); a stale cache
        entry may stand in for an error page."""
        caching = self.caching
        if caching is not None and caching.answer_stale(self, answer.status):
            return
        self.status = answer.status
        self.resp_bytes = self.downstream.answer(self, answer)
        self.finish()

    def abandon(self) -> None:
        """The client went away: let go of the server connection and the server slot.
        Not the server's failure: a balancer must not learn to avoid it for this."""
        self.queued = False
        if self.waiting is not None:
            self.waiting.cancel()
            self.waiting = None
        if self.connecting is not None:
            self.connecting = None
            self.dispatcher.release(self, True)
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.close()
            self.dispatcher.release(self, True)

    def finish(self) -> None:
        status = self.status
        self._count()
        if self.tracked is not None and is_http_error(status):
            for entry in {id(e): e for e in self.tracked if e is not None}.values():
                entry.on_error()
        if self.caching is not None:
            self.caching.ended()
        self._log()
        self.downstream.exchange_done(self)

    def set_termination(self, cause: str, error: str | None = None,
                        phase: str | None = None) -> None:
        """Note, for the access log, how the exchange ends when it is not normally. The
        termination flags are HAProxy's: `cause` is who ended it (C the client, c a
        client timeout, S the server, s a server timeout, P the proxy refused it, L the
        proxy answered it itself), `phase` (by default the one it reached) where it was
        (R receiving the request, Q queued, C connecting to a server, H waiting for the
        response head, D relaying the response); "--" is a normal end. `error` names
        why (lbproxy/http/termination.py, lbproxy/backends/outcomes.py)."""
        if phase is None:
            phase = ("Q" if self.queued else "C" if self.connecting is not None else
                     "D" if self.status else
                     "R" if self.dispatcher is None or not self.request_complete else "H")
        self.termination = cause + phase
        self.error = error

    def lost(self) -> None:
        """The client went away or its connection was cut: release what the exchange
        holds and log it (once) with the phase it reached."""
        if not self.logged and self.error is None:
            self.set_termination("C", CLIENT_CLOSED)
        self.abandon()
        if self.caching is not None:
            self.caching.ended()
        self._log()

    def _log(self) -> None:
        if not self.logged:
            self.logged = True
            access_log = self.frontend.access_log
            if access_log is not None:
                access_log.log(self)

    def _count(self) -> None:
        """Count the response by status class, and its bytes, where it went."""
        klass = self.status // 100
        frontend = self.frontend
        frontend.responses[klass] += 1
        frontend.bytes_out += self.resp_bytes
        backend = self.backend
        if backend is not None:
            backend.responses[klass] += 1
            server = self.server
            if server is not None:
                server.responses[klass] += 1
                server.bytes_out += self.resp_bytes

    # what rules do

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
        self.downstream.hold_entry(entry)

    @property
    def srv_name(self) -> str:
        return self.server.name if self.server is not None else ""
