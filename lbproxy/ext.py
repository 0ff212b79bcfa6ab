"""lbproxy's plugin API, version 1: what a Python module may add, and what it is given.

A plugin is a module named in `global.plugins` (a module name, or a `.py` file beside the
YAML) or in the `lbproxy.plugins` entry-point group. Importing it runs its decorators,
which register fetches, converters, actions and balancers under names the YAML then uses
like the built-in ones (`lbproxy check` knows them). A plugin's exception answers that
request 500 and is logged once with its traceback; it never stops the proxy.

    from lbproxy import ext

    @ext.fetch("geo_country")
    def geo_country(req: ext.Request) -> str | None: ...

    @ext.action("check_token")
    async def check_token(req: ext.Request, args: dict) -> ext.Response | None: ...

The guide is docs/plugins.md. What this module exports is the whole API: names not listed
in `__all__` may change without notice; API_VERSION changes when a listed one does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from lbproxy.config.schema import ALGORITHMS
from lbproxy.extensions import ACTIONS, BALANCERS, PluginAction, PluginFailed, failed
from lbproxy.routing.actions import BUILT_IN, PROTECTED, without
from lbproxy.routing.converters import plugin_converter, register_converter
from lbproxy.routing.fetches import (REQUEST, Fetch, plugin_fetch, register_fetch, resolve_fetch,
                                     split_spec)

if TYPE_CHECKING:
    from lbproxy.backends.server import Server
    from lbproxy.proxy.request import Request as ProxyRequest

__all__ = ["API_VERSION", "Balancer", "Request", "Response", "action", "balancer", "converter",
           "fetch"]

API_VERSION = 1

F = TypeVar("F", bound=Callable[..., Any])
KINDS = ("str", "int", "bool", "ip")


@dataclass(frozen=True, slots=True)
class Response:
    """What an action returns to answer the request itself instead of letting it go on."""

    status: int
    body: bytes | str = b""
    headers: Sequence[tuple[str, str]] = ()


class Request:
    """The request a plugin sees: read it, fetch from it, edit its headers. Strings are
    as received (latin-1 decoded); edits apply to what the server is sent."""

    __slots__ = ("_request",)

    def __init__(self, request: ProxyRequest) -> None:
        self._request = request

    @property
    def method(self) -> str:
        return self._request.method

    @property
    def url(self) -> str:
        """The request target as received: path and query."""
        return self._request.url

    @property
    def path(self) -> str:
        return self._request.path

    @property
    def query(self) -> str:
        return self._request.query

    @property
    def host(self) -> str:
        """The Host header without its port, lower-cased ("" when absent)."""
        return self._request.host

    @property
    def client_ip(self) -> str:
        """The client's address (from the PROXY protocol or a trusted X-Forwarded-For
        when the frontend is set up so)."""
        return self._request.src

    @property
    def headers(self) -> list[tuple[str, str]]:
        request = self._request
        parts = request.hparts
        listed = [(parts[i].decode("latin-1"), parts[i + 2].decode("latin-1"))
                  for i in range(0, len(parts), 4)]
        if request.xff_b is not None:
            listed.append(("X-Forwarded-For", request.xff_b.decode("latin-1")))
        return listed

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), or None."""
        return self._request.header(name.lower())

    def fetch(self, expression: str) -> Any:
        """A built-in or plugin fetch by its YAML spelling, e.g. `req.fetch("hdr(host)")`;
        ValueError if it is not one."""
        return _compiled(expression).get(self._request)

    def set_header(self, name: str, value: str) -> None:
        """Replace every header `name` with one of this value."""
        self._edit(name, value)

    def del_header(self, name: str) -> None:
        self._edit(name, None)

    def _edit(self, name: str, value: str | None) -> None:
        lname = name.lower()
        if lname in PROTECTED:
            raise ValueError(f"'{name}' is managed by the proxy and cannot be changed")
        raw = None if value is None else value.replace("\r", "").replace("\n", "").encode(
            "latin-1", "replace")
        lname_b = lname.encode("latin-1")

        def replace(_request: object, parts: list[bytes]) -> list[bytes]:
            parts = without(parts, lname_b)
            if raw is not None:
                parts += (name.encode("latin-1"), b": ", raw, b"\r\n")
            return parts
        self._request.edit_headers(lname_b, replace)


@lru_cache(maxsize=1024)
def _compiled(expression: str) -> Fetch:
    try:
        return resolve_fetch(*split_spec(expression, "fetch"), "fetch", None, REQUEST)
    except Exception as exc:
        raise ValueError(str(exc)) from None


class Balancer:
    """Subclass it and register the class with `@ext.balancer(name)`; a backend with
    `balance: name` gets its own instance. `pick` is called for every request with the
    servers that can take it now (up, ready, under their maxconn; each has `name`,
    `address`, `weight` and `in_flight` to read), and returns one of them, or None when
    none should serve it (503)."""

    def pick(self, req: Request, servers: list[Server]) -> Server | None:
        raise NotImplementedError


def fetch(name: str, kind: str = "str", takes_arg: bool = False) -> Callable[[F], F]:
    """Register `f(req)` (or `f(req, arg)` with `takes_arg`, written `name(arg)`) as fetch
    `name`. `kind` says how ACLs match its value: "str", "int", "bool" or "ip"."""
    if kind not in KINDS:
        raise ValueError(f"fetch kind must be one of {', '.join(KINDS)}, got {kind!r}")

    def register(function: F) -> F:
        register_fetch(name, plugin_fetch(name, kind, takes_arg, _guarded(name, function, Request)))
        return function
    return register


def converter(name: str) -> Callable[[F], F]:
    """Register `f(value, *args)` as converter `name`, written after a fetch as `name` or
    `name(a,b)` (`hdr(host),name(a,b)`): `value` is the string before it (an integer or a
    boolean written as text first), `args` the strings between the parentheses. It returns
    a string, or None for no value."""
    def register(function: F) -> F:
        register_converter(name, plugin_converter(_guarded(name, function, _same)))
        return function
    return register


def _same(value: Any) -> Any:
    return value


def action(name: str, check: Callable[[Any], None] | None = None) -> Callable[[F], F]:
    """Register `f(req, args)` as http_request action `name`: `args` is what the YAML
    gives the action (a mapping, a scalar or None). It returns None to let the request go
    on, or a Response to answer it. An `async def` is awaited without holding other
    requests, within the frontend's client timeout (past it: cancelled, 500). `check(args)`
    runs at load time (`lbproxy check` too); a ValueError it raises is a config error."""
    def register(function: F) -> F:
        _new_name(name, {**dict.fromkeys(BUILT_IN), **ACTIONS}, "action")
        ACTIONS[name] = PluginAction(name, function, inspect.iscoroutinefunction(function),
                                     function.__module__, check)
        return function
    return register


def balancer(name: str) -> Callable[[type[Balancer]], type[Balancer]]:
    """Register a Balancer subclass as `balance: name`."""
    def register(cls: type[Balancer]) -> type[Balancer]:
        if not (isinstance(cls, type) and issubclass(cls, Balancer)):
            raise TypeError(f"@ext.balancer({name!r}) decorates a subclass of ext.Balancer")
        _new_name(name, {**dict.fromkeys(ALGORITHMS), **BALANCERS}, "balancer")
        BALANCERS[name] = cls
        return cls
    return register


def _new_name(name: str, table: dict[str, Any], what: str) -> None:
    if name in table:
        raise ValueError(f"{what} {name!r} is already defined")


def _guarded(name: str, function: Callable[..., Any],
             wrap: Callable[[Any], Any]) -> Callable[..., Any]:
    """`function` called with its first argument wrapped (the request as an ext.Request);
    an exception becomes PluginFailed."""
    def call(first: Any, *args: Any) -> Any:
        try:
            return function(wrap(first), *args)
        except Exception as exc:      # noqa: BLE001 (whatever a plugin raises: 500, logged)
            failed(name, exc)
            raise PluginFailed(name) from exc
    return call
