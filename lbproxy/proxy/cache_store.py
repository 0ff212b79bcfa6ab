"""A named response cache: entries in memory, bounded in bytes, least recently used first out.

An entry is one stored response: its status, its header list as the client got it (after
compression; without Content-Length, Age and X-Cache, which are written when it is
served), its body pieces (the very bytes objects that went to the first client: storing
copies nothing), and what freshness needs. Entries are grouped by URL (scheme, host, path
and query) and told apart within a URL by the request headers their response's Vary
names. The counters are what the runtime API, /metrics and the stats page show.
"""

from __future__ import annotations

from collections import OrderedDict

from lbproxy.config.schema import CacheConfig

Key = tuple[str, str, bytes]            # scheme, host (no port, lower-case), path and query
ENTRY_OVERHEAD = 256                    # bytes counted per entry beside its head and body


class Entry:
    __slots__ = ("key", "status", "headers", "body", "size", "vary", "variant",
                 "stored_at", "initial_age", "lifetime", "etag", "last_modified",
                 "must_revalidate")

    def __init__(self, key: Key, status: int, headers: list[bytes], vary: tuple[bytes, ...],
                 variant: tuple[bytes, ...]) -> None:
        self.key = key
        self.status = status
        self.headers = headers
        self.body: list[bytes] = []
        self.size = ENTRY_OVERHEAD + sum(map(len, headers))
        self.vary = vary                  # request header names the response varies on
        self.variant = variant            # their values in the request that stored it
        self.stored_at = 0.0              # when it was stored or last revalidated (Unix s)
        self.initial_age = 0.0            # its age at that moment
        self.lifetime = 0.0               # how long it is fresh
        self.etag: bytes | None = None
        self.last_modified: bytes | None = None
        self.must_revalidate = False      # never served stale (must-revalidate, proxy-...)

    def age(self, now: float) -> float:
        return self.initial_age + max(0.0, now - self.stored_at)

    def body_size(self) -> int:
        return sum(map(len, self.body))


class Cache:
    def __init__(self, config: CacheConfig) -> None:
        self.urls: dict[Key, list[Entry]] = {}
        self.recent: OrderedDict[Entry, None] = OrderedDict()   # least recently used first
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.stale = 0                   # stale entries served because the servers failed
        self.revalidated = 0
        # URL -> exchanges waiting for the one fetching it (the lock)
        self.waiting: dict[Key, list] = {}
        self.configure(config)

    def configure(self, config: CacheConfig) -> None:
        """Take (reloaded) settings; the entries stay, trimmed to a smaller size."""
        self.name = config.name
        self.size = config.size
        self.max_object_size = config.max_object_size
        self.default_ttl = config.default_ttl
        self.stale_if_error = config.stale_if_error
        self.lock = config.lock
        self._evict()

    @property
    def entries(self) -> int:
        return len(self.recent)

    def variants(self, key: Key) -> list[Entry]:
        return self.urls.get(key, [])

    def touch(self, entry: Entry) -> None:
        """`entry` was used: it goes last in the eviction order."""
        self.recent.move_to_end(entry)

    def store(self, entry: Entry) -> None:
        """Keep `entry`, in place of the variant of its URL it replaces."""
        siblings = self.urls.setdefault(entry.key, [])
        for old in siblings:
            if old.vary == entry.vary and old.variant == entry.variant:
                self._drop(old)
                break
        siblings.append(entry)
        self.recent[entry] = None
        self.bytes += entry.size
        self._evict()

    def resize(self, entry: Entry, delta: int) -> None:
        """A stored entry's head changed size (a revalidation replaced headers)."""
        entry.size += delta
        self.bytes += delta
        self._evict()

    def purge(self, key: Key | None = None) -> int:
        """Drop every variant of one URL (all entries when `key` is None); how many."""
        doomed = list(self.recent) if key is None else list(self.urls.get(key, ()))
        for entry in doomed:
            self._drop(entry)
        return len(doomed)

    def purge_url(self, host: str, path_qs: bytes) -> int:
        """The API's purge: one host and path with its query, any scheme."""
        return sum(self.purge((scheme, host, path_qs)) for scheme in ("http", "https"))

    def _evict(self) -> None:
        while self.bytes > self.size and self.recent:
            self._drop(next(iter(self.recent)))

    def _drop(self, entry: Entry) -> None:
        if entry in self.recent:
            del self.recent[entry]
            self.bytes -= entry.size
            siblings = self.urls.get(entry.key)
            if siblings is not None:
                siblings.remove(entry)
                if not siblings:
                    del self.urls[entry.key]

    def stats(self) -> dict[str, int]:
        return {"entries": self.entries, "bytes": self.bytes, "hits": self.hits,
                "misses": self.misses, "stale": self.stale}
