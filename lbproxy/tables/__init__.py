"""Stick tables: per-key request/error/connection counters and rates (HAProxy semantics).

`open_store(global.stick_store)` gives the store; `store.sync(configs)` the tables;
per request, `table.track(key).on_request()` and `entry.get("http_req_rate")`.
"""

from __future__ import annotations

from lbproxy.tables.stick_table import Entry, StickTable, is_http_error
from lbproxy.tables.store import StickStore

__all__ = ["Entry", "StickStore", "StickTable", "is_http_error", "open_store"]


def open_store(spec: str) -> StickStore:
    """The store named by `global.stick_store`: "memory" or "redis://host:port/db"."""
    if spec == "memory":
        return StickStore()
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from lbproxy.tables.redis_store import RedisStore   # redis is only imported when used
        return RedisStore(spec)
    raise ValueError(f"stick_store: expected 'memory' or a redis:// URL, got {spec!r}")
