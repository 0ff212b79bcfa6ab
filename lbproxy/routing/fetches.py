"""Sample fetches: `path`, `hdr(host)`, `sc_http_req_rate(0)` ... resolved once to getters.

`resolve_fetch("hdr(Host)", ...)` parses and validates the expression at load time and
returns a `Fetch` whose `get(request)` is a plain closure or C-level attrgetter, so the
run-time cost of a fetch is one call. A getter returns the value, or None when the
request has none (absent header, cookie or parameter); multi-valued fetches (`hdr`)
return a list.

Fetches that need live state ask the `runtime` object given at compile time (duck-typed):
`runtime.has_backend(name) -> bool` and `runtime.nbsrv(name) -> int` for `nbsrv`,
`runtime.stick_counter(request, n, item) -> int | float` for `sc_*(n)`.
`status` and `srv_name` read attributes the data plane sets in the response phase.

`date_us` is the current time in microseconds since the epoch (what `X-Request-Start:
t=%[date_us]` wants), not HAProxy's microsecond-of-second.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter, methodcaller
from typing import Any

from lbproxy.routing.normalize import request_norm_path
from lbproxy.routing.syntax import fail, suggest

Getter = Callable[[Any], Any]

STR, INT, BOOL, IP = "str", "int", "bool", "ip"
REQUEST, RESPONSE = "request", "response"

_SPEC = re.compile(r"([a-z][a-z0-9_.]*)(?:\(([^(),]*)\))?$")


@dataclass(frozen=True, slots=True)
class Fetch:
    """A resolved fetch. `match_get` is what matchers read (the normalised path for `path`)."""

    text: str                # as written, for messages
    kind: str                # STR | INT | BOOL | IP
    get: Getter
    match_get: Getter
    multi: bool
    phase: str               # REQUEST, or RESPONSE for fetches only a response has


@dataclass(frozen=True, slots=True)
class FetchDef:
    """A fetch by name in FETCHES: its value's kind, what its argument is, and how a getter
    is built from the parsed argument (once, at load time)."""

    kind: str
    arg: str | None          # None, "header", "name", "counter" or "backend"
    build: Callable[[Any, Any], Getter]   # (parsed arg, runtime) -> getter
    multi: bool = False
    phase: str = REQUEST


def _attr(name: str) -> Callable[[Any, Any], Getter]:
    return lambda _arg, _runtime: attrgetter(name)


def _optional_attr(name: str) -> Callable[[Any, Any], Getter]:
    """For response-phase attributes, which a request object may not carry yet."""
    return lambda _arg, _runtime: lambda request: getattr(request, name, None)


def _url_param(name: str, _runtime: Any) -> Getter:
    def get(request: Any) -> str | None:
        for pair in request.query.split("&"):
            key, _, value = pair.partition("=")
            if key == name:
                return value
        return None
    return get


def _method(method: str) -> Callable[[Any, Any], Getter]:
    """`request.method(arg)` as a C-level callable (one Python frame less per fetch)."""
    return lambda arg, _runtime: methodcaller(method, arg)


def _ssl_fc(_arg: Any, _runtime: Any) -> Getter:
    return lambda request: bool(request.ssl_fc)


def _nbsrv(backend: str, runtime: Any) -> Getter:
    return lambda _request: runtime.nbsrv(backend)


def _uuid(_arg: Any, _runtime: Any) -> Getter:
    return lambda _request: str(uuid.uuid4())


def _date_us(_arg: Any, _runtime: Any) -> Getter:
    return lambda _request: time.time_ns() // 1000


def _stick_counter(item: str) -> Callable[[Any, Any], Getter]:
    def build(counter: int, runtime: Any) -> Getter:
        return lambda request: runtime.stick_counter(request, counter, item)
    return build


FETCHES: dict[str, FetchDef] = {
    "src": FetchDef(IP, None, _attr("src")),
    "src_port": FetchDef(INT, None, _attr("src_port")),
    "dst_port": FetchDef(INT, None, _attr("dst_port")),
    "method": FetchDef(STR, None, _attr("method")),
    "path": FetchDef(STR, None, _attr("path")),
    "url": FetchDef(STR, None, _attr("url")),
    "query": FetchDef(STR, None, _attr("query")),
    "url_param": FetchDef(STR, "name", _url_param),
    "hdr": FetchDef(STR, "header", _method("header_values"), multi=True),
    "cook": FetchDef(STR, "name", _method("cookie")),
    "host": FetchDef(STR, None, _attr("host")),
    "ssl_fc": FetchDef(BOOL, None, _ssl_fc),
    "ssl_fc_sni": FetchDef(STR, None, _attr("ssl_fc_sni")),
    "req_ver": FetchDef(STR, None, _attr("req_ver")),
    "nbsrv": FetchDef(INT, "backend", _nbsrv),
    "date_us": FetchDef(INT, None, _date_us),
    "uuid": FetchDef(STR, None, _uuid),
    "unique_id": FetchDef(STR, None, _optional_attr("unique_id")),
    "srv_name": FetchDef(STR, None, _optional_attr("srv_name"), phase=RESPONSE),
    "status": FetchDef(INT, None, _optional_attr("status"), phase=RESPONSE),
    # HIT, MISS, BYPASS... once the backend's cache looked the request up (else "")
    "cache_status": FetchDef(STR, None, _optional_attr("cache_status"), phase=RESPONSE),
    **{f"sc_{item}": FetchDef(INT, "counter", _stick_counter(item))
       for item in ("http_req_rate", "http_err_rate", "conn_cur", "conn_rate", "http_req_cnt")},
}


def _parse_arg(definition: FetchDef, name: str, arg: str | None, where: str,
               runtime: Any) -> Any:
    """Validate the argument of `name(arg)` now, so run time never sees a bad one."""
    if definition.arg is None:
        if arg is not None:
            raise fail(where, f"'{name}' takes no argument, got '{name}({arg})'")
        return None
    if not arg:
        example = {"header": "host", "name": "id", "counter": "0", "backend": "app"}[definition.arg]
        raise fail(where, f"'{name}' needs an argument, e.g. '{name}({example})'")
    arg = arg.strip()
    if definition.arg == "header":
        return arg.lower()
    if definition.arg == "counter":
        if arg not in ("0", "1", "2"):
            raise fail(where, f"'{name}' needs a stick counter number 0, 1 or 2, got '{arg}'")
        return int(arg)
    if definition.arg == "backend":
        if runtime is None or not runtime.has_backend(arg):
            raise fail(where, f"'{name}({arg})': unknown backend '{arg}'")
    return arg


def split_spec(text: str, where: str) -> tuple[str, str | None]:
    """`hdr_beg(Host)` -> ('hdr_beg', 'Host'); `path` -> ('path', None)."""
    match = _SPEC.match(text)
    if match is None:
        extra = ": a fetch takes one argument" if "," in text else ""
        raise fail(where, f"invalid fetch '{text}'{extra}")
    return match.group(1), match.group(2)


def resolve_fetch(name: str, arg: str | None, where: str, runtime: Any,
                  phase: str | None) -> Fetch:
    """Resolve fetch `name(arg)`. `phase` None allows response fetches (named ACLs are
    checked when a condition uses them); REQUEST rejects them."""
    definition = FETCHES.get(name)
    if definition is None:
        raise fail(where, f"unknown fetch '{name}'{suggest(name, fetch_names())}")
    if definition.phase == RESPONSE and phase == REQUEST:
        raise fail(where, f"'{name}' is only available in http_response rules")
    parsed = _parse_arg(definition, name, arg, where, runtime)
    get = definition.build(parsed, runtime)
    text = name if arg is None else f"{name}({arg})"
    match_get = request_norm_path if name == "path" else get
    return Fetch(text, definition.kind, get, match_get, definition.multi, definition.phase)


def plugin_fetch(name: str, kind: str, takes_arg: bool, call: Callable[..., Any]) -> FetchDef:
    """The FETCHES entry of a plugin's fetch (lbproxy.ext): `call(request[, arg])`."""
    if takes_arg:
        return FetchDef(kind, "name", lambda arg, _runtime: lambda request: call(request, arg))
    return FetchDef(kind, None, lambda _arg, _runtime: call)


SUFFIXES = ("beg", "end", "sub", "reg", "dir", "dom", "len")
_NAME = re.compile(r"[a-z][a-z0-9_.]*$")


def register_fetch(name: str, definition: FetchDef) -> None:
    """Add a fetch usable by `name` in every rule, as the built-in ones (the way in for
    plugins); ValueError for a name that is taken or could not be written in a rule."""
    if not _NAME.match(name):
        raise ValueError(f"invalid fetch name {name!r}: lower-case letters, digits, '_', '.'")
    if name in FETCHES:
        raise ValueError(f"fetch {name!r} is already defined")
    FETCHES[name] = definition


def fetch_names() -> list[str]:
    """Every fetch name a user may write, suffix forms included (for suggestions)."""
    names = list(FETCHES)
    names += [f"{name}_{suffix}" for name, d in FETCHES.items() if d.kind == STR
              for suffix in SUFFIXES]
    return names
