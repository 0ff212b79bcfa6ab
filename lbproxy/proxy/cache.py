"""A backend's response cache on the request path (RFC 9111, as a shared cache).

`use_cache` runs when a request has been routed to a backend with a `cache`, before any
server is chosen. A fresh stored response is served at once (HIT; a client's matching
conditional request gets 304). Otherwise the request goes on to a server with the
exchange's response sink set to a CacheSink, which:

- stores a storable response while it streams to the client (the body pieces are kept
  by reference, nothing is copied or buffered for the client), committed only once the
  response ended well and if it stayed within `max_object_size` (MISS);
- for a stale entry, has sent the server a conditional request with the entry's
  validators: a 304 refreshes the entry, which is served (REVALIDATED);
- serves a stale entry instead of a failing server's 5xx, or of the proxy's own
  502/503/504, for up to `stale_if_error` (STALE), unless the entry must be revalidated;
- invalidates a URL's entries after a successful unsafe request to it (BYPASS).

With `lock`, concurrent misses for one URL wait for the first one's fetch (up to the
backend's server timeout) and are then served from what it stored.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from lbproxy.extensions import PluginFailed
from lbproxy.http.answers import error_answer
from lbproxy.http.caching import (directives, freshness_lifetime, initial_age, not_modified,
                                  seconds, storable, value, values)
from lbproxy.proxy.cache_store import ENTRY_OVERHEAD, Cache, Entry, Key
from lbproxy.proxy.downstream import SinkFilter
from lbproxy.proxy.plugin_call import answer_failed

if TYPE_CHECKING:
    from lbproxy.proxy.exchange import Exchange

UNSAFE = frozenset({b"POST", b"PUT", b"PATCH", b"DELETE"})
SERVER_ERRORS = frozenset({500, 502, 503, 504})        # when a stale entry may stand in
CONDITIONALS = frozenset({b"if-none-match", b"if-modified-since"})
# headers of a stored response that are written afresh when it is served
NOT_STORED = frozenset({b"content-length", b"age", b"x-cache"})


def url_key(exchange: Exchange) -> Key:
    return ("https" if exchange.downstream.ssl_fc else "http", exchange.host, exchange.url_b)


def request_values(exchange: Exchange, names: tuple[bytes, ...],
                   coding: bytes | None) -> tuple[bytes, ...]:
    """The request's values of the headers a response varies on. With compression, the
    coding negotiated for the request stands for its Accept-Encoding, so that every
    client that gets, say, gzip shares one entry."""
    found = []
    for name in names:
        if name == b"accept-encoding" and coding is not None:
            found.append(coding)
        elif name == b"host":
            found.append(exchange.host.encode())
        else:
            found.append(b", ".join(v.strip() for v in values(exchange.hparts, name)))
    return tuple(found)


def _find(cache: Cache, key: Key, exchange: Exchange, coding: bytes | None) -> Entry | None:
    for entry in cache.variants(key):
        if request_values(exchange, entry.vary, coding) == entry.variant:
            return entry
    return None


def use_cache(exchange: Exchange, cache: Cache, coding: bytes | None, lock: bool) -> bool:
    """Answer `exchange` from `cache`, or park it behind a fetch of the same URL (with
    `lock`): True. False: it goes to a server, its sink a CacheSink (`coding`: see
    request_values)."""
    method = exchange.method_b
    key = url_key(exchange)
    if method != b"GET" and method != b"HEAD":
        _send_through(exchange, CacheSink(exchange, cache, key, coding, b"BYPASS"))
        return False
    request_cc = directives(exchange.hparts)
    if not request_cc and b"no-cache" in values(exchange.hparts, b"pragma"):
        request_cc = {"no-cache": None}
    entry = _find(cache, key, exchange, coding)
    now = time.time()
    if entry is not None:
        cache.touch(entry)
        if "no-cache" not in request_cc and _fresh_enough(entry, request_cc, now):
            cache.hits += 1
            try:
                serve(exchange, entry, b"HIT", now, conditional=True)
            except PluginFailed:                # in an http_response rule
                answer_failed(exchange)
                return True
            exchange.downstream.flush(True)
            exchange.finish()
            return True
    if "only-if-cached" in request_cc:
        exchange.cache_status = "MISS"
        exchange.respond(error_answer(504))
        return True
    sink = CacheSink(exchange, cache, key, coding, b"MISS")
    if entry is None:
        if method == b"GET" and cache.lock and lock:
            waiting = cache.waiting.get(key)
            if waiting is not None:              # another request fetches this URL
                _park(exchange, cache, key, waiting)
                return True
            cache.waiting[key] = []
            sink.locked = True
        cache.misses += 1
    else:
        sink.stale = entry
        if entry.etag is not None or entry.last_modified is not None:
            sink.client_conditionals = _ask_if_changed(exchange, entry)
    _send_through(exchange, sink)
    return False


def _fresh_enough(entry: Entry, request_cc: dict[str, str | None], now: float) -> bool:
    """Fresh, and fresh enough for the client's max-age and min-fresh."""
    age = entry.age(now)
    if age >= entry.lifetime:
        return False
    max_age = seconds(request_cc, "max-age")
    min_fresh = seconds(request_cc, "min-fresh")
    return ((max_age is None or age <= max_age)
            and (min_fresh is None or entry.lifetime - age >= min_fresh))


def _send_through(exchange: Exchange, sink: CacheSink) -> None:
    exchange.caching = exchange.sink = sink
    exchange.cache_status = sink.word.decode()


def _ask_if_changed(exchange: Exchange, entry: Entry) -> list[bytes]:
    """Make the request conditional on the stored entry's validators (the client's own
    conditionals are kept aside, and applied to what the server's answer gives)."""
    parts = exchange.hparts
    kept, theirs = [], []
    for i in range(0, len(parts), 4):
        (theirs if parts[i].lower() in CONDITIONALS else kept).extend(parts[i:i + 4])
    if entry.etag is not None:
        kept += (b"if-none-match", b": ", entry.etag, b"\r\n")
    if entry.last_modified is not None:
        kept += (b"if-modified-since", b": ", entry.last_modified, b"\r\n")
    exchange.hparts = kept
    exchange.request_head = None
    return theirs


def _park(exchange: Exchange, cache: Cache, key: Key, waiting: list) -> None:
    """Wait for the fetch of `key` under way; at most the backend's server timeout."""
    waiting.append(exchange)
    exchange.cache_status = "MISS"
    loop = exchange.downstream.state.loop
    loop.call_later(exchange.backend.server_timeout, _stop_waiting, exchange, waiting)


def _stop_waiting(exchange: Exchange, waiting: list) -> None:
    if exchange in waiting:
        waiting.remove(exchange)
        if not exchange.downstream.closed:
            exchange.proceed(lock=False)


def serve(exchange: Exchange, entry: Entry, word: bytes, now: float,
          conditional: bool, client_parts: list[bytes] | None = None) -> None:
    """Send `entry` to the client as the response (head and body, not flushed): 304 when
    the client's conditional request matches it (`client_parts`: the conditionals it
    sent, when they were taken off the request). PluginFailed, with nothing sent, when an
    http_response rule's plugin fails."""
    exchange.cache_status = word.decode()
    asked = exchange.hparts if client_parts is None else client_parts
    status = entry.status
    if conditional and status == 200 and not_modified(asked, entry.etag, entry.last_modified):
        status = 304
    headers = exchange.edited_by_rules(list(entry.headers))
    headers += (b"age", b": ", b"%d" % entry.age(now), b"\r\n", b"x-cache", b": ", word, b"\r\n")
    length = entry.body_size()
    if status != 304:
        headers += (b"content-length", b": ", b"%d" % length, b"\r\n")
    exchange.status = status
    downstream = exchange.downstream
    downstream.response_head(exchange, status, headers, length if status != 304 else 0,
                             False)
    sent = sum(map(len, headers))
    if status != 304 and not exchange.is_head:
        for piece in entry.body:
            downstream.response_body(piece)
        sent += length
    exchange.resp_bytes = sent


class CacheSink(SinkFilter):
    """An exchange's response sink when its backend has a cache (see the module's text)."""

    __slots__ = ("cache", "key", "coding", "word", "stale", "locked",
                 "client_conditionals", "entry", "body_size", "standing_in")

    def __init__(self, exchange: Exchange, cache: Cache, key: Key, coding: bytes | None,
                 word: bytes) -> None:
        # no reference back to `exchange`, which holds this sink: no cycle
        # (lbproxy/runtime/heap.py); the calls that need it are handed it
        SinkFilter.__init__(self, exchange.downstream)
        self.cache = cache
        self.key = key
        self.coding = coding
        self.word = word                   # X-Cache of a response relayed from a server
        self.stale: Entry | None = None    # the entry being revalidated
        self.locked = False                # other misses of this URL wait for this one
        self.client_conditionals: list[bytes] | None = None
        self.entry: Entry | None = None    # the entry being filled
        self.body_size = 0
        self.standing_in = False           # a stored entry replaced the server's answer

    def response_head(self, exchange: Exchange, status: int, headers: list[bytes],
                      length: int, end_stream: bool) -> None:
        method = exchange.method_b
        stale = self.stale
        if method in UNSAFE:
            if status < 400:
                self.cache.purge(self.key)
        elif stale is not None and status == 304:
            self._refresh(stale, headers)
            self._stand_in(exchange, stale, b"REVALIDATED", conditional=True)
            return
        elif stale is not None and status in SERVER_ERRORS and self._stale_usable():
            self._stand_in(exchange, stale, b"STALE", conditional=False)
            return
        elif method == b"GET":
            self.entry = self._new_entry(exchange, status, headers, length)
        headers = headers + [b"x-cache", b": ", self.word, b"\r\n"]
        self.downstream.response_head(exchange, status, headers, length, end_stream)

    def _new_entry(self, exchange: Exchange, status: int, headers: list[bytes],
                   length: int) -> Entry | None:
        """An entry to fill with this response, if the cache may keep it."""
        cache = self.cache
        response_cc = directives(headers)
        if length > cache.max_object_size or not storable(
                b"GET", exchange.hparts, status, headers, response_cc):
            return None
        lifetime = freshness_lifetime(status, headers, response_cc, cache.default_ttl)
        etag, last_modified = value(headers, b"etag"), value(headers, b"last-modified")
        if lifetime <= 0 and (etag is None and last_modified is None):
            return None                    # never fresh and never checkable: useless
        vary = tuple(name.strip().lower() for raw in values(headers, b"vary")
                     for name in raw.split(b",") if name.strip())
        stored = [piece for i in range(0, len(headers), 4)
                  if headers[i].lower() not in NOT_STORED for piece in headers[i:i + 4]]
        entry = Entry(self.key, status, stored, vary,
                      request_values(exchange, vary, self.coding))
        now = time.time()
        entry.stored_at = now
        entry.initial_age = initial_age(headers, now)
        entry.lifetime = lifetime
        entry.etag, entry.last_modified = etag, last_modified
        entry.must_revalidate = ("must-revalidate" in response_cc
                                 or "proxy-revalidate" in response_cc)
        return entry

    def _refresh(self, entry: Entry, headers: list[bytes]) -> None:
        """A 304 for a stored entry: its headers are updated from the 304's, its age and
        freshness start again (RFC 9111 §4.3.4)."""
        names = {headers[i].lower() for i in range(0, len(headers), 4)} - NOT_STORED
        kept = [piece for i in range(0, len(entry.headers), 4)
                if entry.headers[i].lower() not in names for piece in entry.headers[i:i + 4]]
        new = [piece for i in range(0, len(headers), 4)
               if headers[i].lower() in names for piece in headers[i:i + 4]]
        merged = kept + new
        self.cache.resize(entry, sum(map(len, merged)) - sum(map(len, entry.headers)))
        entry.headers = merged
        now = time.time()
        entry.stored_at = now
        entry.initial_age = initial_age(headers, now)
        response_cc = directives(merged)
        entry.lifetime = freshness_lifetime(entry.status, merged, response_cc,
                                            self.cache.default_ttl)
        entry.etag = value(merged, b"etag")
        entry.last_modified = value(merged, b"last-modified")
        self.cache.revalidated += 1

    def _stale_usable(self) -> bool:
        stale = self.stale
        return (stale is not None and not stale.must_revalidate
                and stale.age(time.time()) < stale.lifetime + self.cache.stale_if_error)

    def _stand_in(self, exchange: Exchange, entry: Entry, word: bytes,
                  conditional: bool) -> None:
        """Send `entry` instead of the server's answer, whose body is then dropped."""
        if word == b"STALE":
            self.cache.stale += 1
        self.standing_in = True
        serve(exchange, entry, word, time.time(), conditional, self.client_conditionals)
        self.downstream.flush(False)

    def answer_stale(self, exchange: Exchange, status: int) -> bool:
        """The proxy is about to answer `status` itself (no server, or they failed): send
        the stale entry instead when it may; True if it did (the exchange is finished)."""
        if status not in SERVER_ERRORS or not self._stale_usable():
            return False
        try:
            serve(exchange, self.stale, b"STALE", time.time(), False, self.client_conditionals)
        except PluginFailed:        # in an http_response rule: the proxy's own answer goes
            return False
        self.cache.stale += 1
        self.downstream.flush(True)
        exchange.finish()
        return True

    def response_body(self, data: bytes) -> None:
        if self.standing_in:
            return
        entry = self.entry
        if entry is not None:
            self.body_size += len(data)
            if self.body_size > self.cache.max_object_size:
                self.entry = None          # too large: relayed, not kept
            else:
                entry.body.append(data)
        self.downstream.response_body(data)

    def response_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.entry = None                  # trailers are not stored: neither is the rest
        if not self.standing_in:
            self.downstream.response_trailers(headers)

    def flush(self, end: bool) -> None:
        if self.standing_in:
            if end:
                self.downstream.flush(True)
            return
        if end and self.entry is not None:
            entry, self.entry = self.entry, None
            entry.size = ENTRY_OVERHEAD + sum(map(len, entry.headers)) + self.body_size
            self.cache.store(entry)
        self.downstream.flush(end)

    def ended(self) -> None:
        """The exchange is over, however it ended: the requests waiting for this fetch go
        on (served from the cache if it now holds the URL)."""
        if self.locked:
            self.locked = False
            for waiter in self.cache.waiting.pop(self.key, []):
                if not waiter.downstream.closed:
                    waiter.proceed(lock=False)     # a hit now, or all to the servers
