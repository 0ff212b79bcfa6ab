"""Converters from `Node` to typed values, and `Section`, which reads a mapping into a dataclass.

Every section of the schema is read the same way: convert the keys that are present, let
the dataclass supply the defaults, report unknown keys with a suggestion and missing
required keys (a dataclass field without a default). Keeping that in one place turns each
section into a table of key -> converter. A converter takes a Node and returns a value or
raises ValueError with a message; `convert` turns that into a reported problem, so one bad
value never stops the load and every problem is listed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from lbproxy.config.durations import parse_address, parse_duration, parse_size
from lbproxy.config.errors import suggest, unknown
from lbproxy.config.nodes import Broken, Node
from lbproxy.config.schema import Address
from lbproxy.slicing import pace

T = TypeVar("T")
Conv = Callable[[Node], T]

_MISSING: Any = object()
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")     # RFC 9110 token: header/cookie names


class Dropped(Exception):
    """A value could not be built; its problems are already reported."""


def convert(node: Node, conv: Conv[T], default: T) -> T:
    """`conv(node)`, or `default` after reporting why it failed."""
    if isinstance(node.value, Broken):
        return default
    try:
        return conv(node)
    except Dropped:
        return default
    except ValueError as exc:
        node.report(str(exc))
        return default


class Section:
    """One YAML mapping being read: remembers which keys were asked for, reports the rest."""

    def __init__(self, node: Node) -> None:
        if not isinstance(node.value, dict):
            raise ValueError(f"expected a mapping, got {node.describe()}")
        self.node = node
        self.entries: dict[str, Node] = node.value
        self.known: list[str] = []

    def has(self, key: str) -> bool:
        """Whether `key` is given a non-null value."""
        child = self.entries.get(key)
        return child is not None and child.value is not None

    def get(self, key: str, conv: Conv[T], default: Any = None) -> Any:
        """The converted value of `key`; `default` when absent, null or invalid."""
        self.known.append(key)
        if not self.has(key):
            return default
        return convert(self.entries[key], conv, default)

    def report(self, key: str, message: str) -> None:
        """Report a problem on `key` (on the mapping itself when the key is absent)."""
        (self.entries.get(key) or self.node).report(message)

    def done(self) -> None:
        """Report every key nobody asked for."""
        for key, child in self.entries.items():
            if key not in self.known:
                child.report(f"unknown key '{key}'{suggest(key, self.known)}")

    def build(self, cls: type[T], convs: Mapping[str, Conv[Any]], **given: Any) -> T:
        """`cls` from the keys in `convs`, over `given` values, over the dataclass defaults.

        Raises Dropped (after reporting) when a required field has no value.
        """
        pace()
        values = dict(given)
        if "where" in {f.name for f in dataclasses.fields(cls)}:  # type: ignore[arg-type]
            values.setdefault("where", self.node.where)
        for key, conv in convs.items():
            value = self.get(key, conv, _MISSING)
            if value is not _MISSING:
                values[key] = value
        self.done()
        missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                   if f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING and values.get(f.name) is None]
        for key in missing:
            if not self.has(key):       # present but invalid: already reported
                self.node.report(f"missing required key '{key}'")
        if missing:
            raise Dropped
        return cls(**values)


def section(cls: type[T], convs: Mapping[str, Conv[Any]], base: T | None = None) -> Conv[T]:
    """A converter for a mapping read key for key into dataclass `cls`.

    Keys left out take their value from `base` when given, else the dataclass default.
    """
    given = {f.name: getattr(base, f.name)
             for f in dataclasses.fields(base)} if base else {}  # type: ignore[arg-type]
    return lambda node: Section(node).build(cls, convs, **given)


# --- scalars --------------------------------------------------------------------------------

def text(node: Node) -> str:
    """Any scalar as the text the user wrote (so `cookie: 1` or `format: off` read as text)."""
    if not node.is_scalar or node.value is None:
        raise ValueError(f"expected a string, got {node.describe()}")
    return node.text


def nonempty(node: Node) -> str:
    value = text(node)
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def check_name(value: str) -> str:
    """A name other sections refer to: letters, digits, '_', '.', '-'."""
    if not _NAME.fullmatch(value):
        raise ValueError(f"invalid name '{value}' (use letters, digits, '_', '.', '-')")
    return value


def name(node: Node) -> str:
    return check_name(text(node))


def token(noun: str) -> Conv[str]:
    """An HTTP token such as a header or cookie name."""
    def conv(node: Node) -> str:
        value = text(node)
        if not _TOKEN.fullmatch(value):
            raise ValueError(f"invalid {noun} '{value}'")
        return value
    return conv


def boolean(node: Node) -> bool:
    if not isinstance(node.value, bool):
        raise ValueError(f"expected true or false, got {node.describe()}")
    return node.value


def integer(lo: int = 0, hi: int | None = None) -> Conv[int]:
    """An int in [lo, hi] (no upper bound when hi is None)."""
    def conv(node: Node) -> int:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {node.describe()}")
        _check_range(value, lo, hi)
        return value
    return conv


def number(lo: float | None = None, hi: float | None = None) -> Conv[float]:
    """An int or float in [lo, hi], as float."""
    def conv(node: Node) -> float:
        value = node.value
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            raise ValueError(f"expected a number, got {node.describe()}")
        _check_range(value, lo, hi)
        return float(value)
    return conv


def _check_range(value: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and hi is not None and not lo <= value <= hi:
        raise ValueError(f"must be between {lo} and {hi}, got {value}")
    if lo is not None and value < lo:
        raise ValueError(f"must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"must be <= {hi}, got {value}")


def duration(node: Node) -> float:
    return parse_duration(node.value)


def positive_duration(node: Node) -> float:
    value = parse_duration(node.value)
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {node.text}")
    return value


def size(node: Node) -> int:
    return parse_size(node.value)


def uri_path(node: Node) -> str:
    value = text(node)
    if not value.startswith("/"):
        raise ValueError(f"must start with '/', got '{value}'")
    return value


def address(allow_unix: bool) -> Conv[Address]:
    """HOST:PORT, or with `allow_unix` also `unix:PATH` (a relative PATH is resolved like
    any file the configuration names, see `file_path`)."""
    def conv(node: Node) -> Address:
        value = parse_address(text(node), allow_unix)
        if value.unix is not None:
            value = dataclasses.replace(value, unix=resolve_path(node, value.unix))
        return value
    return conv


# --- files ----------------------------------------------------------------------------------

def resolve_path(node: Node, value: str) -> str:
    """`value` as an absolute path: a relative one is taken from the directory of the YAML
    file that holds `node`, never from the working directory, so `lbproxy check -c
    /etc/lbproxy/` finds the certificates beside its files wherever it runs from."""
    base = os.path.dirname(os.path.abspath(node.file))
    return os.path.normpath(os.path.join(base, value))


def plain(node: Node) -> object:
    """The value under `node` as plain Python (dicts, lists, scalars), for arguments whose
    shape lbproxy does not know (a plugin's)."""
    value = node.value
    if isinstance(value, dict):
        return {key: plain(child) for key, child in value.items()}
    if isinstance(value, list):
        return [plain(child) for child in value]
    return value


def file_path(node: Node) -> str:
    """A file the configuration names (log file, pidfile), as an absolute path."""
    return resolve_path(node, nonempty(node))


def readable_file(node: Node) -> str:
    """A file lbproxy reads (certificate, key, CA), as an absolute path. When it cannot be
    read, the problem is reported on this key's own line with the absolute path tried,
    and the path is still returned: the section around it stays whole, so the other
    checks of the same load (lbproxy/runtime/validate.py) still see it."""
    path = file_path(node)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        node.report(f"cannot read {path}: {exc.strerror or exc}")
    return path


def choice(noun: str, choices: Sequence[str]) -> Conv[str]:
    """One of `choices`; otherwise 'unknown NOUN 'x' (did you mean ...)'."""
    def conv(node: Node) -> str:
        value = text(node)
        if value not in choices:
            raise ValueError(unknown(noun, value, choices))
        return value
    return conv


def int_range(lo: int, hi: int) -> Conv[tuple[int, int]]:
    """An inclusive range 'A-B' within [lo, hi]; a single 'A' or A means A-A."""
    def conv(node: Node) -> tuple[int, int]:
        if isinstance(node.value, int) and not isinstance(node.value, bool):
            low = high = node.value
        else:
            first, _, last = text(node).partition("-")
            try:
                low, high = int(first), int(last or first)
            except ValueError:
                raise ValueError(f"expected N or N-M, got {node.describe()}") from None
        if not lo <= low <= high <= hi:
            raise ValueError(f"expected a range within {lo}-{hi} with low <= high, got {node.text}")
        return low, high
    return conv


# --- collections ----------------------------------------------------------------------------

def tuple_of(conv: Conv[T], *, single: bool = False, allow_empty: bool = True,
             unique_by: str | None = None) -> Conv[tuple[T, ...]]:
    """A list, each item converted on its own (bad items are reported and left out).

    With `single`, a lone value stands for a list of one. With `unique_by`, two items with
    the same value of that attribute are an error.
    """
    def convert_list(node: Node) -> tuple[T, ...]:
        if isinstance(node.value, list):
            items = node.value
        elif single:
            items = [node]
        else:
            raise ValueError(f"expected a list, got {node.describe()}")
        if not items and not allow_empty:
            raise ValueError("must not be empty")
        result: list[T] = []
        first: dict[object, Node] = {}
        for item in items:
            value = convert(item, conv, _MISSING)
            if value is _MISSING:
                continue
            if unique_by is not None:
                key = getattr(value, unique_by)
                if key in first:
                    item.report(f"duplicate {unique_by} '{key}' (first at line {first[key].line})")
                    continue
                first[key] = item
            result.append(value)
        return tuple(result)
    return convert_list


def string_map(node: Node) -> dict[str, str]:
    """A mapping NAME -> string (environment variables, extra headers)."""
    return mapping_of(lambda _, value: text(value))(node)


def mapping_of(conv: Callable[[str, Node], T]) -> Conv[dict[str, T]]:
    """A mapping NAME -> value; `conv(name, node)` builds each value."""
    def convert_map(node: Node) -> dict[str, T]:
        entries = Section(node).entries
        result: dict[str, T] = {}
        for key, child in entries.items():
            value = convert(child, lambda n: conv(check_name(key), n), _MISSING)  # noqa: B023
            if value is not _MISSING:
                result[key] = value
        return result
    return convert_map
