"""Shared doubles for the routing tests: a response-capable request and a fake runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lbproxy.routing.acl import compile_acl
from lbproxy.routing.condition import compile_condition
from tests.fakes import FakeRequest

WHERE = "conf/a.yaml:12: frontends.web.http_request[1].if"


@dataclass
class Req(FakeRequest):
    """FakeRequest plus what the data plane sets in the response phase."""

    status: int | None = None
    srv_name: str | None = None


@dataclass
class FakeRuntime:
    """The engine's side of routing: backends' usable servers and stick counters."""

    servers: dict[str, int] = field(default_factory=lambda: {"app": 2, "api": 0})
    counters: dict[tuple[int, str], float] = field(default_factory=dict)
    calls: list[tuple[Any, int, str]] = field(default_factory=list)

    def has_backend(self, name: str) -> bool:
        return name in self.servers

    def nbsrv(self, name: str) -> int:
        return self.servers[name]

    def stick_counter(self, request: Any, n: int, item: str) -> float:
        self.calls.append((request, n, item))
        return self.counters.get((n, item), 0)


def acl(pattern: str | list[str], runtime: Any = None):
    """Compile one ACL under a fixed name."""
    return compile_acl("t", pattern, WHERE, runtime)


def cond(expr: str, acls: dict | None = None, *, negate: bool = False, runtime: Any = None,
         phase: str = "request"):
    """Compile a condition with the default `where`."""
    return compile_condition(expr, negate, acls or {}, WHERE, runtime, phase)
