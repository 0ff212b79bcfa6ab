"""What rule fetches read from the running proxy: backends for nbsrv(), and the stick
counters a request tracks for sc_*(). `lbproxy check` compiles rules with the same
object over configs only; nothing here is called until a request is evaluated."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class RuleRuntime:
    def __init__(self, backends: Mapping[str, Any]) -> None:
        self.backends = backends

    def has_backend(self, name: str) -> bool:
        return name in self.backends

    def nbsrv(self, name: str) -> int:
        """Usable servers of backend `name` (HAProxy nbsrv)."""
        return sum(1 for server in self.backends[name].servers if server.usable)

    def stick_counter(self, request: Any, counter: int, item: str) -> int:
        """`item` of the entry the request tracks in counter `counter`, 0 when untracked."""
        tracked = request.tracked
        entry = tracked[counter] if tracked is not None else None
        return 0 if entry is None else entry.get(item)
