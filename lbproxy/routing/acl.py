"""ACLs: `FETCH [FLAGS] [OPERATOR] VALUE...` compiled once into `request -> bool` closures.

    is_api:    path_beg /api /v1            # values are ORed
    is_admin:  path_beg -i /admin
    office:    src 10.0.0.0/8 ::ffff:192.168.1.10
    busy:      sc_http_req_rate(0) gt 100
    tls:       ssl_fc                       # a boolean fetch alone is its truth
    bot:       [hdr_sub(user-agent) -i bot, "hdr(x-bot) -m found"]   # a list is ORed too

The fetch may be followed by converters (`hdr(host),lower,map(hosts.map) -m found`,
lbproxy/routing/converters.py); the match then reads the converted value, and its type
(`length` gives an integer) decides the methods allowed.

Flags: `-i` (case-insensitive), `-m METHOD` (str beg end sub reg dir dom found len ip, int,
bool), `--` (end of flags, for a value that starts with '-'). `path_beg` and the like are
the `-m` method written as a suffix. Path matching uses the normalised path
(lbproxy/routing/normalize.py). String values are compared as latin-1 views of their
UTF-8 bytes, like the request strings they meet.

An ACL that reads a response-only fetch (`status`, `srv_name`) is marked with the
`response_fetch` attribute; conditions refuse it in http_request rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

from lbproxy.routing.converters import with_converters
from lbproxy.routing.fetches import (BOOL, FETCHES, INT, IP, RESPONSE, STR, SUFFIXES, Fetch,
                                     resolve_fetch, split_spec)
from lbproxy.routing.matchers import int_matcher, ip_matcher, string_matcher
from lbproxy.routing.syntax import fail, split_commas, suggest, tokenize

Test = Callable[[Any], bool]

_METHODS = {
    STR: ("str", "beg", "end", "sub", "reg", "dir", "dom", "found", "len", "ip"),
    INT: ("int", "bool"),
    BOOL: ("bool",),
    IP: ("ip",),
}
_NO_VALUES = ("found", "bool")
_CASELESS = ("str", "beg", "end", "sub", "reg", "dir", "dom", "found")


def compile_acl(name: str, patterns: Sequence[str] | str, where: str, runtime: Any) -> Test:
    """Compile a named ACL: one pattern line, or a list of them ORed.

    Response-only fetches are allowed here (a named ACL may serve http_response rules);
    the returned test then has `response_fetch` set, see `response_fetch()`.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise fail(where, f"ACL '{name}' has no pattern")
    tests, response = [], None
    for index, pattern in enumerate(patterns):
        line_where = f"{where}[{index}]" if len(patterns) > 1 else where
        test, fetch = compile_tokens(tokenize(pattern, line_where), line_where, runtime, None)
        tests.append(test)
        if fetch.phase == RESPONSE:
            response = fetch.text
    acl = any_of(tests)
    if response:
        acl.response_fetch = response     # type: ignore[attr-defined]  (a fresh closure)
    shapes = [shape for test in tests if (shape := shape_of(test)) is not None]
    if 1 < len(tests) == len(shapes) and len({shape.key for shape in shapes}) == 1:
        first = shapes[0]                 # lines ORed on one fetch: one shape, all values
        values = tuple(value for shape in shapes for value in shape.values)
        acl.shape = Shape(first.key, values, first.get, first.multi)  # type: ignore[attr-defined]
    return acl


def response_fetch(test: Callable[[Any], bool]) -> str | None:
    """The response-only fetch a compiled ACL reads (e.g. 'status'), or None."""
    return getattr(test, "response_fetch", None)


def compile_tokens(tokens: Sequence[str], where: str, runtime: Any,
                   phase: str | None) -> tuple[Test, Fetch]:
    """Compile one ACL line already split into tokens (also used for `{ ... }`)."""
    if not tokens:
        raise fail(where, "empty ACL: expected 'FETCH [FLAGS] [OPERATOR] VALUE...'")
    label = tokens[0]
    fetch_text, *converters = split_commas(label, where)
    name, arg = split_spec(fetch_text, where)
    method = None
    base, _, suffix = name.rpartition("_")
    if name not in FETCHES and suffix in SUFFIXES and base in FETCHES:
        if FETCHES[base].kind != STR:
            raise fail(where, f"'{label}': '{base}' is not a string fetch, '_{suffix}' needs one")
        name, method = base, suffix
    fetch = resolve_fetch(name, arg, where, runtime, phase)
    if converters:
        fetch = with_converters(fetch, converters, where, runtime, single=False)
    icase, method, values = _parse_flags(tokens, label, method, where)
    method = method or _default_method(fetch.kind, values)
    allowed = _METHODS[fetch.kind]
    if method not in allowed:
        raise fail(where, f"'{label}': unknown match method '{method}' for a {fetch.kind} fetch "
                          f"(expected one of {', '.join(allowed)}){suggest(method, allowed)}")
    if icase and method not in _CASELESS:
        raise fail(where, f"'{label}': '-i' applies to string matching only, not '{method}'")
    if method in _NO_VALUES and values:
        raise fail(where, f"'{label}' with '-m {method}' takes no value, got '{values[0]}'")
    if method not in _NO_VALUES and not values:
        raise fail(where, f"'{label}' needs at least one value")
    return _build(fetch, method, values, icase, label, where), fetch


def _parse_flags(tokens: Sequence[str], label: str, method: str | None,
                 where: str) -> tuple[bool, str | None, list[str]]:
    """Leading `-i`, `-m X` and `--`; the rest are values."""
    icase, index = False, 1
    while index < len(tokens) and tokens[index].startswith("-"):
        flag = tokens[index]
        if flag == "--":
            index += 1
            break
        if flag == "-i":
            icase = True
        elif flag == "-m":
            if index + 1 >= len(tokens):
                raise fail(where, f"'{label}': '-m' needs a match method")
            if method is not None:
                raise fail(where, f"'{label}': '-m' conflicts with the method '{method}' "
                                  "already chosen")
            index += 1
            method = tokens[index]
        elif flag[1:2].isdigit():
            break                        # a negative integer value
        else:
            raise fail(where, f"'{label}': unknown flag '{flag}' (expected -i, -m or --)")
        index += 1
    return icase, method, list(tokens[index:])


def _default_method(kind: str, values: Sequence[str]) -> str:
    if kind == INT:
        return "int" if values else "bool"
    return {STR: "str", BOOL: "bool", IP: "ip"}[kind]


def _build(fetch: Fetch, method: str, values: list[str], icase: bool, label: str,
           where: str) -> Test:
    get = fetch.match_get
    if method == "found":
        return (lambda request: bool(get(request))) if fetch.multi else \
            (lambda request: get(request) is not None)
    if method == "bool":
        return lambda request: bool(get(request))
    if method == "int":
        match: Callable[[Any], bool] = int_matcher(values, label, where)
    elif method == "len":
        length = int_matcher(values, label, where)
        match = lambda value: length(len(value))  # noqa: E731
    elif method == "ip":
        match = ip_matcher(values, where)
    else:
        latin = [value.encode("utf-8").decode("latin-1") for value in values]
        match = string_matcher(method, latin, icase, where)
    if fetch.multi:
        test: Test = lambda request: any(map(match, get(request)))  # noqa: E731
    else:
        def test(request: Any) -> bool:
            value = get(request)
            return value is not None and match(value)
    if method in GROUPABLE:
        test.shape = Shape((fetch.text, method, icase),  # type: ignore[attr-defined]
                           tuple(value.lower() if icase else value for value in latin),
                           get, fetch.multi)
    return test


@dataclass(frozen=True, slots=True)
class Shape:
    """What an ACL of exact strings or prefixes on one fetch tests, kept on the compiled
    test (`shape_of`) so routing can turn many such rules into one lookup
    (lbproxy/routing/use_backend.py). ACLs with the same `key` test the same way."""

    key: tuple[str, str, bool]     # (the fetch as written, "str" or "beg", -i)
    values: tuple[str, ...]        # as compared: latin-1 view, lower-cased with -i
    get: Callable[[Any], Any]      # the fetch's value(s), as the matcher reads them
    multi: bool                    # `get` gives a list (hdr): any value may match


GROUPABLE = ("str", "beg")


def shape_of(test: Test | None) -> Shape | None:
    """The Shape of a compiled ACL or condition that is exactly one such ACL, else None."""
    return getattr(test, "shape", None)


def any_of(tests: Sequence[Test]) -> Test:
    """OR of tests, short-circuit, as nested closures (no loop, no generator per call)."""
    return reduce(lambda a, b: lambda request: a(request) or b(request), tests)


def all_of(tests: Sequence[Test]) -> Test:
    """AND of tests, short-circuit."""
    return reduce(lambda a, b: lambda request: a(request) and b(request), tests)
