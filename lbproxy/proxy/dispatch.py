"""Dispatch: the one place where an exchange meets a backend's servers.

A Dispatcher per backend picks a server for each exchange routed to it (the backend's
balancer, stickiness and backups decide which), takes the server's slot (in-flight
counts, the balancer's on_start) and asks the server's pool for a connection. When
every server is full, the exchange waits in a FIFO queue, up to `timeouts.queue`, and is
served as soon as a slot frees or the backend changes (a server added, up, reweighted).
When the exchange ends it gives the slot back; when a server fails it, `retry` decides,
as HAProxy's retries/redispatch do, whether it goes again, to the same server or
another. The backend below knows nothing of exchanges: it only orders its servers.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from lbproxy.backends.outcomes import REFUSED, UNPROCESSED
from lbproxy.http.answers import error_answer
from lbproxy.extensions import PluginFailed
from lbproxy.http.termination import BACKEND_REMOVED, NO_SERVER, QUEUE_TIMEOUT
from lbproxy.proxy.compression import Compression
from lbproxy.proxy.plugin_call import answer_failed

if TYPE_CHECKING:
    from lbproxy.backends.backend import Backend
    from lbproxy.backends.server import Server
    from lbproxy.proxy.cache_store import Cache
    from lbproxy.proxy.exchange import Exchange
    from lbproxy.proxy.state import ProxyState

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
UNAVAILABLE = error_answer(503)


class Dispatcher:
    def __init__(self, backend: Backend, state: ProxyState) -> None:
        self.backend = backend
        self.state = state
        self.queue: deque[tuple[float, Exchange]] = deque()   # (deadline, waiting exchange)
        self.compression = self._compression()
        self.cache: Cache | None = None       # the backend's `cache` (set by the engine)
        backend.listeners.append(self._changed)

    def _compression(self) -> Compression | None:
        """The backend's `compression`, which replaces the frontend's."""
        config = self.backend.config.compression
        return Compression(config) if config is not None else None

    # the hot path

    def dispatch(self, exchange: Exchange, avoid: Server | None) -> None:
        """Send `exchange` to a server (not `avoid` if another can take it), queue it
        when the servers are full, or answer 503 when no server can take it at all."""
        backend = self.backend
        try:
            server = backend.pick(exchange, avoid)
        except PluginFailed:
            answer_failed(exchange)
            return
        if server is not None:
            self._send(exchange, server)
        elif self._can_queue():
            exchange.queued = True
            self.queue.append((self.state.time() + backend.queue_timeout, exchange))
            backend.queued = len(self.queue)
            if backend.queued > backend.max_queued:
                backend.max_queued = backend.queued
        else:
            exchange.set_termination("S", NO_SERVER, "C")
            exchange.respond(UNAVAILABLE)

    def _send(self, exchange: Exchange, server: Server) -> None:
        """Take a slot of `server` for `exchange`: a pooled connection, or a new one."""
        backend = self.backend
        exchange.server = server
        backend.in_flight += 1
        server.in_flight += 1
        if server.in_flight > server.max_in_flight:
            server.max_in_flight = server.in_flight
        server.requests += 1
        if backend.lb_hooks:
            backend.balancer_for(server).on_start(server)
        upstream = server.pool.acquire()
        if upstream is None:
            server.pool.connect(exchange)
        else:
            exchange.attach(upstream)

    def release(self, exchange: Exchange, ok: bool) -> None:
        """`exchange` is done with its server (`ok`: not the server's failure)."""
        server = exchange.server
        if server is None:
            return
        backend = self.backend
        server.in_flight -= 1
        backend.in_flight -= 1
        if backend.lb_hooks:
            backend.balancer_for(server).on_finish(server,
                                                   self.state.time() - exchange.started, ok)
        if self.queue:
            self.serve_queue()

    def retry(self, exchange: Exchange, kind: str) -> bool:
        """After a failure of kind `kind`: send `exchange` again when the backend's
        `retries` and `retry_on` allow it (a stream an HTTP/2 server refused always may)
        and the request can be replayed (the server did not process it; otherwise only an
        idempotent request whose body was not consumed). With `redispatch`, another
        server is preferred."""
        backend = self.backend
        if not (exchange.attempts < backend.retries
                and (kind in backend.retry_on or kind == REFUSED)
                and (kind in UNPROCESSED or replayable(exchange))):
            return False
        exchange.attempts += 1
        backend.retried += 1
        avoid = exchange.server if backend.redispatch else None
        if avoid is not None:
            backend.redispatched += 1
        self.dispatch(exchange, avoid)
        return True

    # the queue

    def _can_queue(self) -> bool:
        """No server now, but one will free up: the backend or a usable server is full."""
        backend = self.backend
        return backend.queue_timeout > 0 and (
            0 < backend.maxconn <= backend.in_flight or any(s.usable for s in backend.servers))

    def serve_queue(self) -> None:
        """Send waiting exchanges, oldest first, while servers have room."""
        queue = self.queue
        backend = self.backend
        while queue:
            exchange = queue[0][1]
            if not exchange.queued:            # its client left
                queue.popleft()
                continue
            try:
                server = backend.pick(exchange, None)
            except PluginFailed:
                queue.popleft()
                exchange.queued = False
                answer_failed(exchange)
                continue
            if server is None:
                break
            queue.popleft()
            exchange.queued = False
            self._send(exchange, server)
        backend.queued = len(queue)

    def _changed(self, backend: Backend, server: Server | None, what: str) -> None:
        if what == "reload":
            self.compression = self._compression()
        if self.queue:
            self.serve_queue()

    def tick(self, now: float) -> None:
        """Called by the sweeper: step the backend's slowstart ramps, answer 503 to the
        exchanges that waited longer than `timeouts.queue`."""
        self.backend.tick(now)
        queue = self.queue
        if not queue:
            return
        while queue and (queue[0][0] <= now or not queue[0][1].queued):
            _, exchange = queue.popleft()
            if exchange.queued:
                exchange.set_termination("s", QUEUE_TIMEOUT)
                exchange.queued = False
                exchange.respond(UNAVAILABLE)
        self.backend.queued = len(queue)

    def close(self) -> None:
        """The backend is gone (reload): the exchanges still waiting get 503."""
        self.backend.listeners.remove(self._changed)
        queue, self.queue = self.queue, deque()
        for _, exchange in queue:
            if exchange.queued:
                exchange.set_termination("S", BACKEND_REMOVED)
                exchange.queued = False
                exchange.respond(UNAVAILABLE)


def replayable(exchange: Exchange) -> bool:
    """May be sent again: idempotent, complete, and nothing of a body was consumed."""
    return (exchange.method_b in IDEMPOTENT and exchange.body_size == 0
            and exchange.request_complete)
