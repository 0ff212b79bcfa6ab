"""Converters: `hdr(host),lower,map(conf/hosts.map,app)` compiled once into one getter.

A fetch may be followed by converters after commas, as in HAProxy; each turns the value
before it into a new one. `with_converters` parses and checks them at load time (name,
arguments, regexes, map files) and returns a `Fetch` like any other, whose getter runs
the converters as a tuple of small closures: no parsing per request.

Types follow HAProxy: every converter reads a string, so an integer is written in decimal
and a boolean as `1`/`0` first; `length`, `crc32` and `djb2` give integers, the others
strings. Strings are latin-1 views of the request's bytes, so `length`, `hex`, `base64`,
`sha1`... work on the bytes, and `lower`/`upper` change ASCII letters only. `sha1` and
`sha2` give binary strings (follow them with `hex` or `base64` to print them); `b64dec`
of something that is not base64 has no value.

A missing value (absent header, map miss) stays missing through the converters, except
that a `map*` converter with a DEFAULT gives its DEFAULT. A multi-valued fetch (`hdr`)
has each value converted in an ACL (any may match) and only its last one in a template.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from lbproxy.routing.fetches import BOOL, INT, STR, Fetch, Getter, resolve_fetch, split_spec
from lbproxy.routing.maps import KINDS
from lbproxy.routing.syntax import fail, source_dir, split_args, split_commas, suggest

Convert = Callable[[Any], Any]
Step = tuple[Convert, Any]            # (convert, the value a missing input becomes)

_NAME = re.compile(r"[a-z][a-z0-9_]*$")
_CALL = re.compile(r"([a-z][a-z0-9_]*)(?:\((.*)\))?$", re.DOTALL)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SHA2_BITS = ("224", "256", "384", "512")
_REGSUB_FLAGS = "gi"


@dataclass(frozen=True, slots=True)
class ConverterDef:
    """A converter by name in CONVERTERS: what it gives, its arguments, and how its
    function is built from them (once, at load time; ValueError for a bad argument)."""

    gives: str                        # STR or INT
    usage: str                        # the arguments, for messages: "N,SEP", "[BITS]"
    least: int                        # fewest arguments
    most: int                         # most arguments
    build: Callable[[list[str], str, Any], Convert]    # (args, where, runtime) -> convert
    defaults: bool = False            # map*: a second argument is the value for a miss


def _latin(text: str) -> str:
    """A YAML string as the request strings it meets: the latin-1 view of its UTF-8."""
    return text.encode("utf-8").decode("latin-1")


def _fixed(convert: Convert) -> Callable[[list[str], str, Any], Convert]:
    return lambda _args, _where, _runtime: convert


def _lower(value: str) -> str:
    return value.lower() if value.isascii() else value.translate(_ASCII_LOWER)


def _upper(value: str) -> str:
    return value.upper() if value.isascii() else value.translate(_ASCII_UPPER)


def _base64(value: str) -> str:
    return base64.b64encode(value.encode("latin-1")).decode("ascii")


def _b64dec(value: str) -> str | None:
    try:
        return base64.b64decode(value.encode("latin-1"), validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return None


def _url_dec(value: str) -> str:
    return unquote_to_bytes(value).decode("latin-1")


def _hex(value: str) -> str:
    return value.encode("latin-1").hex().upper()


def _sha1(value: str) -> str:
    return hashlib.sha1(value.encode("latin-1")).digest().decode("latin-1")


def _sha2(args: list[str], _where: str, _runtime: Any) -> Convert:
    bits = args[0].strip() if args else "256"
    if bits not in _SHA2_BITS:
        raise ValueError(f"BITS must be one of {', '.join(_SHA2_BITS)}, got '{bits}'")
    new = getattr(hashlib, f"sha{bits}")
    return lambda value: new(value.encode("latin-1")).digest().decode("latin-1")


def _crc32(value: str) -> int:
    return zlib.crc32(value.encode("latin-1"))


def _djb2(value: str) -> int:
    """HAProxy's djb2: hash * 33 + byte over the bytes, from 5381, as a 32-bit unsigned."""
    result = 5381
    for byte in value.encode("latin-1"):
        result = (result * 33 + byte) & 0xFFFFFFFF
    return result


def _splitter(separators: str) -> Callable[[str], list[str]]:
    """Split on any one of the characters of `separators` (HAProxy's delimiter list)."""
    if not separators:
        raise ValueError("SEP must name at least one character")
    if len(separators) == 1:
        return lambda value: value.split(separators)
    return re.compile(f"[{re.escape(separators)}]").split


def _position(text: str) -> int:
    """A 1-based field number (negative: from the end) as a list index."""
    try:
        number = int(text.strip())
    except ValueError:
        number = 0
    if number == 0:
        raise ValueError(f"N must be a non-zero integer (negative counts from the end), "
                         f"got '{text}'")
    return number - 1 if number > 0 else number


def _field(args: list[str], _where: str, _runtime: Any) -> Convert:
    """field(N,SEP): the Nth of the parts between separators (empty ones count)."""
    index, split = _position(args[0]), _splitter(_latin(args[1]))

    def field(value: str) -> str:
        parts = split(value)
        return parts[index] if -len(parts) <= index < len(parts) else ""
    return field


def _word(args: list[str], _where: str, _runtime: Any) -> Convert:
    """word(N,SEP): the Nth of the non-empty parts between separators."""
    index, split = _position(args[0]), _splitter(_latin(args[1]))

    def word(value: str) -> str:
        parts = [part for part in split(value) if part]
        return parts[index] if -len(parts) <= index < len(parts) else ""
    return word


def _regsub(args: list[str], _where: str, _runtime: Any) -> Convert:
    flags = args[2] if len(args) > 2 else ""
    unknown = [flag for flag in flags if flag not in _REGSUB_FLAGS]
    if unknown:
        raise ValueError(f"unknown flag '{unknown[0]}' (FLAGS may hold g: every match, "
                         "i: ignore case)")
    try:
        regex = re.compile(_latin(args[0]), re.IGNORECASE if "i" in flags else 0)
    except re.error as exc:
        raise ValueError(f"bad regex '{args[0]}': {exc}") from None
    replace = _latin(args[1])
    try:
        regex.sub(replace, "")           # checks group references such as \1
    except (re.error, IndexError) as exc:
        raise ValueError(f"bad replacement '{args[1]}': {exc}") from None
    count = 0 if "g" in flags else 1
    return lambda value: regex.sub(replace, value, count)


def _map(kind: str) -> Callable[[list[str], str, Any], Convert]:
    def build(args: list[str], where: str, runtime: Any) -> Convert:
        maps = getattr(runtime, "maps", None)
        if maps is None:
            raise ValueError("map files are only read with a configuration")
        path = os.path.normpath(os.path.join(source_dir(where), args[0].strip()))
        lookup = maps.load(path).lookup(kind)     # ValueError naming the file
        if len(args) < 2:
            return lookup
        default = _latin(args[1])
        if kind == "map":            # entries.get: one C call
            return lambda value: lookup(value, default)   # type: ignore[call-arg]

        def with_default(value: str) -> str:
            found = lookup(value)
            return default if found is None else found
        return with_default
    return build


CONVERTERS: dict[str, ConverterDef] = {
    "lower": ConverterDef(STR, "", 0, 0, _fixed(_lower)),
    "upper": ConverterDef(STR, "", 0, 0, _fixed(_upper)),
    "length": ConverterDef(INT, "", 0, 0, _fixed(len)),
    "base64": ConverterDef(STR, "", 0, 0, _fixed(_base64)),
    "b64dec": ConverterDef(STR, "", 0, 0, _fixed(_b64dec)),
    "url_dec": ConverterDef(STR, "", 0, 0, _fixed(_url_dec)),
    "hex": ConverterDef(STR, "", 0, 0, _fixed(_hex)),
    "sha1": ConverterDef(STR, "", 0, 0, _fixed(_sha1)),
    "sha2": ConverterDef(STR, "[BITS]", 0, 1, _sha2),
    "crc32": ConverterDef(INT, "", 0, 0, _fixed(_crc32)),
    "djb2": ConverterDef(INT, "", 0, 0, _fixed(_djb2)),
    "field": ConverterDef(STR, "N,SEP", 2, 2, _field),
    "word": ConverterDef(STR, "N,SEP", 2, 2, _word),
    "regsub": ConverterDef(STR, "REGEX,REPL[,FLAGS]", 2, 3, _regsub),
    **{kind: ConverterDef(STR, "FILE[,DEFAULT]", 1, 2, _map(kind), defaults=True)
       for kind in KINDS},
}


def register_converter(name: str, definition: ConverterDef) -> None:
    """Add a converter usable by `name` after any fetch, as the built-in ones (the way in
    for plugins); ValueError for a name that is taken or could not be written in a rule."""
    if not _NAME.match(name):
        raise ValueError(f"invalid converter name {name!r}: lower-case letters, digits, '_'")
    if name in CONVERTERS:
        raise ValueError(f"converter {name!r} is already defined")
    CONVERTERS[name] = definition


def plugin_converter(call: Callable[..., Any]) -> ConverterDef:
    """The CONVERTERS entry of a plugin's converter (lbproxy.ext): `call(value, *args)`,
    any number of arguments, a string (or None) back."""
    return ConverterDef(STR, "ARG,...", 0, _PLUGIN_ARGS,
                        lambda args, _where, _runtime: lambda value: call(value, *args))


_PLUGIN_ARGS = 32          # arguments a plugin converter may be written with, at most


# What a non-string value is written as before a converter reads it.
_AS_TEXT: dict[str, Convert] = {INT: str, BOOL: lambda value: "1" if value else "0"}


def resolve_expression(text: str, where: str, runtime: Any, phase: str | None) -> Fetch:
    """A fetch and its converters, as in a template's `%[...]` (one value: a multi-valued
    fetch gives its last)."""
    pieces = split_commas(text, where)
    name, arg = split_spec(pieces[0].strip(), where)
    fetch = resolve_fetch(name, arg, where, runtime, phase)
    if len(pieces) == 1:
        return fetch
    return with_converters(fetch, pieces[1:], where, runtime, single=True)


def with_converters(fetch: Fetch, pieces: Sequence[str], where: str, runtime: Any,
                    single: bool) -> Fetch:
    """`fetch` followed by the converters written in `pieces` (`lower`, `map(f,x)`).
    `single`: one value even from a multi-valued fetch (its last), for templates."""
    steps: list[Step] = []
    kind = fetch.kind
    for piece in pieces:
        piece = piece.strip()
        definition, args = _parse(piece, where)
        if kind in _AS_TEXT:
            steps.append((_AS_TEXT[kind], None))
        try:
            convert = definition.build(args, where, runtime)
        except ValueError as exc:
            raise fail(where, f"'{piece}': {exc}") from None
        steps.append((convert, _latin(args[1]) if definition.defaults and len(args) > 1
                      else None))
        kind = definition.gives
    run = _run(tuple(steps))
    get = _converted(fetch.get, fetch.multi, single, run)
    match_get = get if fetch.match_get is fetch.get else _converted(
        fetch.match_get, fetch.multi, single, run)
    return Fetch(",".join([fetch.text, *pieces]), kind, get, match_get,
                 fetch.multi and not single, fetch.phase)


def _parse(piece: str, where: str) -> tuple[ConverterDef, list[str]]:
    """`name(args)` -> its definition and arguments, checked against its usage."""
    if not piece:
        raise fail(where, "empty converter after ','")
    match = _CALL.match(piece)
    if match is None:
        raise fail(where, f"invalid converter '{piece}'")
    name, text = match[1], match[2]
    definition = CONVERTERS.get(name)
    if definition is None:
        raise fail(where, f"unknown converter '{name}'{suggest(name, CONVERTERS)}")
    args = split_args(text, where) if text and text.strip() else []
    usage = f"{name}({definition.usage})" if definition.usage else name
    if not definition.most and args:
        raise fail(where, f"'{name}' takes no argument, got '{piece}'")
    if not definition.least <= len(args) <= definition.most:
        raise fail(where, f"'{piece}': expected {usage}")
    return definition, args


def _run(steps: tuple[Step, ...]) -> Convert:
    """value -> value through every step; a missing value skips a step, or becomes its
    DEFAULT (map*)."""
    def run(value: Any) -> Any:
        for convert, if_none in steps:
            value = if_none if value is None else convert(value)
        return value
    return run


_MISSING = (None,)                    # what a multi-valued fetch without values converts


def _converted(get: Getter, multi: bool, single: bool, run: Convert) -> Getter:
    if not multi:
        return lambda request: run(get(request))
    if single:
        def last(request: Any) -> Any:
            values = get(request)
            return run(values[-1] if values else None)
        return last
    return lambda request: [value for value in map(run, get(request) or _MISSING)
                            if value is not None]
