"""Pattern matchers compiled once from an ACL's values: one callable per ACL, ORed inside.

Choices, all made at load time so a request pays one or two C-level calls:
- `str`: frozenset membership; `beg`/`end`: `str.startswith(tuple)` (one C loop over the
  prefixes), or for many prefixes one regex alternation; `sub`: `in`;
- `reg`: the values joined into one regex (when none has capture groups, which could
  be back-referenced, and the join compiles); `dom`: one regex of escaped words; `dir`:
  `/word/` searched in `/value/`;
- `-i`: values lower-cased once, the input lower-cased per call (regexes use IGNORECASE);
- integers: a frozenset for `eq` values, comparisons for the rest, `a:b` ranges;
- IPs: per prefix length, a set of network numbers, so 1000 CIDRs cost one lookup per
  distinct prefix length. IPv4-mapped IPv6 addresses and patterns compare as IPv4.
"""

from __future__ import annotations

import functools
import ipaddress
import operator
import re
import socket
from collections.abc import Callable, Sequence

from lbproxy.routing.syntax import fail

Match = Callable[[str], bool]
IntMatch = Callable[[int | float], bool]

# HAProxy's word delimiters: path_dir splits on '/', hdr_dom on '/', '?', '.' and ':'.
_DOMAIN_DELIMITERS = "/?.:"
_OPERATORS = {"eq": operator.eq, "ne": operator.ne, "gt": operator.gt,
              "ge": operator.ge, "lt": operator.lt, "le": operator.le}
# startswith(tuple) tries prefixes one by one; past ~16 of them one regex alternation
# is faster (measured: 20 prefixes ~equal, 50 prefixes 220-290ns vs 385-400ns).
_MANY_PREFIXES = 16
# Per-ACL memo of address -> result: clients send many requests, and parsing an address
# costs ~5x a cache hit. Bounded so a flood of distinct sources cannot grow memory.
ADDRESS_CACHE = 4096
_INTEGER = re.compile(r"-?\d+$")
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"    # ::ffff:a.b.c.d


def string_matcher(method: str, values: Sequence[str], icase: bool, where: str) -> Match:
    """Match a string against any of `values` by `method` (str beg end sub reg dir dom)."""
    if method == "reg":
        return _regex_matcher(values, re.IGNORECASE if icase else 0, where)
    if method == "dom":
        words = "|".join(re.escape(value.strip(_DOMAIN_DELIMITERS)) for value in values)
        edge = re.escape(_DOMAIN_DELIMITERS)
        search = re.compile(f"(?:^|[{edge}])(?:{words})(?:[{edge}]|$)",
                            re.IGNORECASE if icase else 0).search
        return lambda value: search(value) is not None
    if icase:
        values = [value.lower() for value in values]
    if method == "str":
        test: Match = frozenset(values).__contains__
    elif method in ("beg", "end"):
        test = _affix_matcher(method, tuple(values))
    elif method == "dir":                # "/api/" in "/" + path + "/": 3x faster than a regex
        words = _substring_matcher(tuple(f"/{value.strip('/')}/" for value in values))
        test = lambda value: words(f"/{value}/")  # noqa: E731
    else:
        test = _substring_matcher(tuple(values))
    if icase:
        return lambda value: test(value.lower())
    return test


def _affix_matcher(method: str, affixes: tuple[str, ...]) -> Match:
    if method == "beg" and len(affixes) > _MANY_PREFIXES:
        match = re.compile("|".join(map(re.escape, affixes))).match
        return lambda value: match(value) is not None
    if method == "beg":
        return lambda value: value.startswith(affixes)
    return lambda value: value.endswith(affixes)


def _substring_matcher(parts: tuple[str, ...]) -> Match:
    if len(parts) == 1:
        part = parts[0]
        return lambda value: part in value
    return lambda value: any(part in value for part in parts)


def _regex_matcher(values: Sequence[str], flags: int, where: str) -> Match:
    compiled = []
    for value in values:
        try:
            compiled.append(re.compile(value, flags))
        except re.error as exc:
            raise fail(where, f"bad regex '{value}': {exc}") from None
    if len(compiled) > 1 and all(regex.groups == 0 for regex in compiled):
        try:
            compiled = [re.compile("|".join(f"(?:{value})" for value in values), flags)]
        except re.error:
            pass                         # e.g. inline flags not at the start: keep them apart
    if len(compiled) == 1:
        search = compiled[0].search
        return lambda value: search(value) is not None
    searches = [regex.search for regex in compiled]
    return lambda value: any(search(value) is not None for search in searches)


def int_matcher(tokens: Sequence[str], label: str, where: str) -> IntMatch:
    """Integers with operators `eq ne gt ge lt le` (each applies to the values after it,
    as in HAProxy) and inclusive ranges `a:b`, `a:`, `:b`."""
    equal: set[int] = set()
    tests: list[IntMatch] = []
    op_name, pending = "", False
    for token in tokens:
        if token in _OPERATORS:
            op_name, pending = token, True
            continue
        pending = False
        low, colon, high = token.partition(":")
        if colon and op_name in ("", "eq"):
            bounds = [(operator.ge, _integer(low, label, where)) if low else None,
                      (operator.le, _integer(high, label, where)) if high else None]
            tests.append(_all_bounds([bound for bound in bounds if bound]))
        elif op_name in ("", "eq"):
            equal.add(_integer(token, op_name or label, where))
        else:
            tests.append(_bound(_OPERATORS[op_name], _integer(token, op_name, where)))
    if pending:
        raise fail(where, f"'{op_name}' needs an integer after it")
    if not tests:
        return frozenset(equal).__contains__
    if not equal and len(tests) == 1:
        return tests[0]
    is_equal = frozenset(equal).__contains__
    return lambda value: is_equal(value) or any(test(value) for test in tests)


def _integer(token: str, label: str, where: str) -> int:
    if not _INTEGER.match(token):
        raise fail(where, f"'{label}' needs an integer, got '{token}'")
    return int(token)


def _bound(compare: Callable[[object, object], bool], limit: int) -> IntMatch:
    return lambda value: compare(value, limit)


def _all_bounds(bounds: list[tuple[Callable[[object, object], bool], int]]) -> IntMatch:
    return lambda value: all(compare(value, limit) for compare, limit in bounds)


def ip_matcher(values: Sequence[str], where: str) -> Match:
    """Match an address string against IPs and CIDRs, v4 and v6."""
    tables: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}   # version -> free bits -> networks
    for value in values:
        try:
            version, free_bits, number = network_number(value)
        except ValueError as exc:
            raise fail(where, str(exc)) from None
        tables[version].setdefault(free_bits, set()).add(number)
    checks = {version: tuple((bits, frozenset(nets)) for bits, nets in table.items())
              for version, table in tables.items()}

    @functools.lru_cache(maxsize=ADDRESS_CACHE)
    def match(address: str) -> bool:
        parsed = address_number(address)
        if parsed is None:
            return False
        version, number = parsed
        for free_bits, networks in checks[version]:
            if number >> free_bits in networks:
                return True
        return False
    return match


def network_number(value: str) -> tuple[int, int, int]:
    """An IP or CIDR as (4|6, free bits, network number >> free bits), IPv4-mapped IPv6
    networks as IPv4; ValueError("invalid network 'x'") when it is neither."""
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        kind = "network" if "/" in value else "address"
        raise ValueError(f"invalid {kind} '{value}'") from None
    mapped = network.version == 6 and network.network_address.ipv4_mapped
    if mapped and network.prefixlen >= 96:
        network = ipaddress.ip_network((mapped, network.prefixlen - 96))
    free_bits = network.max_prefixlen - network.prefixlen
    return network.version, free_bits, int(network.network_address) >> free_bits


def address_number(address: str) -> tuple[int, int] | None:
    """(4|6, integer) for an address string, IPv4-mapped IPv6 as 4; None if not an IP."""
    try:
        if ":" not in address:
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big")
        packed = socket.inet_pton(socket.AF_INET6, address.partition("%")[0])
    except OSError:                      # not an address (a unix socket peer, a bad header)
        return None
    if packed[:12] == _MAPPED_PREFIX:
        return 4, int.from_bytes(packed[12:], "big")
    return 6, int.from_bytes(packed, "big")
