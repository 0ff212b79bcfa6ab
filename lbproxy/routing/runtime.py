"""What rule fetches read from the running proxy: backends for nbsrv(), the stick
counters a request tracks for sc_*(), and the map files the map* converters look values
up in. `lbproxy check` compiles rules with the same object over configs only; nothing
here but the map files is touched until a request is evaluated."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lbproxy.routing.maps import MapFiles


class RuleRuntime:
    def __init__(self, backends: Mapping[str, Any], maps: MapFiles | None = None) -> None:
        self.backends = backends
        self.maps = MapFiles() if maps is None else maps

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
