"""Converters several sections share: timeouts, stick tables, listen addresses, compression.

Frontends, backends and the stats section all use them; keeping them here lets those
modules import one place instead of each other.
"""

from __future__ import annotations

import re
from lbproxy.config.durations import parse_address, parse_duration
from lbproxy.config.errors import unknown
from lbproxy.config.fields import (Conv, Section, boolean, choice, duration, integer,
                                   mapping_of, positive_duration, section, size, text, tuple_of)
from lbproxy.config.nodes import Node
from lbproxy.config.schema import (COMPRESSION_LEVELS, STORE_COUNTERS, STORE_RATES, TABLE_TYPES,
                                   Address, CacheConfig, CompressionConfig, StickTableConfig,
                                   StoreItem,
                                   TimeoutsConfig)
from lbproxy.http.encoding import ALGORITHMS as CODINGS

_STORE_ITEM = re.compile(r"([a-z_]+)\s*(?:\((.*)\))?")

TIMEOUTS: dict[str, Conv[float]] = {
    key: positive_duration for key in TimeoutsConfig.__dataclass_fields__}


def timeouts(base: TimeoutsConfig) -> Conv[TimeoutsConfig]:
    """A `timeouts:` mapping; the keys it leaves out come from `base` (the defaults)."""
    return section(TimeoutsConfig, TIMEOUTS, base)


def _media_type(node: Node) -> str:
    """`text/html` or `text/*`, lower-cased."""
    value = text(node).strip().lower()
    kind, _, subtype = value.partition("/")
    if not (kind and subtype and kind != "*" and "/" not in subtype and " " not in value):
        raise ValueError(f"expected a media type such as text/html or text/*, got '{value}'")
    return value


def _algorithms(node: Node) -> tuple[str, ...]:
    names = tuple_of(choice("compression algorithm", CODINGS), single=True,
                     allow_empty=False)(node)
    if len(set(names)) != len(names):
        raise ValueError("an algorithm is listed twice")
    return names


def _level(name: str, node: Node) -> int:
    if name not in COMPRESSION_LEVELS:
        raise ValueError(unknown("compression algorithm", name, CODINGS))
    return integer(*COMPRESSION_LEVELS[name])(node)


COMPRESSION: Conv[CompressionConfig] = section(CompressionConfig, {
    "algorithms": _algorithms,
    "types": tuple_of(_media_type, single=True, allow_empty=False),
    "min_size": size,
    "level": mapping_of(_level),
})


def store_item(node: Node) -> StoreItem:
    """`http_req_rate(10s)` -> StoreItem('http_req_rate', 10.0); `conn_cur` -> no period."""
    value = text(node).strip()
    match = _STORE_ITEM.fullmatch(value)
    if not match:
        raise ValueError(f"invalid store item '{value}' "
                         "(expected e.g. http_req_rate(10s) or conn_cur)")
    kind, period = match[1], match[2]
    if kind in STORE_RATES:
        if period is None:
            raise ValueError(f"'{kind}' is a rate and needs a period, e.g. {kind}(10s)")
        seconds = parse_duration(period)
        if seconds <= 0:
            raise ValueError(f"the period of '{kind}' must be greater than 0")
        return StoreItem(kind, seconds)
    if kind in STORE_COUNTERS:
        if period is not None:
            raise ValueError(f"'{kind}' is a counter and takes no period")
        return StoreItem(kind)
    raise ValueError(unknown("store item", kind, STORE_RATES + STORE_COUNTERS))


def _entries(node: Node) -> int:
    value = size(node)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


_STICK_TABLE = {
    "type": choice("table type", TABLE_TYPES),
    "size": _entries,                   # entries; 100k style allowed
    "expire": duration,
    "store": tuple_of(store_item, single=True, unique_by="name"),
}


CACHE: dict[str, Conv[object]] = {
    "size": size, "max_object_size": size, "default_ttl": duration,
    "stale_if_error": duration, "lock": boolean}


def cache(name: str, node: Node) -> CacheConfig:
    """A response cache, named after its key under caches."""
    config = Section(node).build(CacheConfig, CACHE, name=name)
    if config.max_object_size > config.size:
        node.report(f"max_object_size ({config.max_object_size}) is larger than size "
                    f"({config.size}): nothing that large could be kept")
    return config


def stick_table(name: str, node: Node) -> StickTableConfig:
    """A stick table, named after its key under stick_tables or after its owning section."""
    return Section(node).build(StickTableConfig, _STICK_TABLE, name=name)


def listen_address(bound: dict[Address, Node]) -> Conv[Address]:
    """An address the proxy listens on; `bound` remembers them so none is bound twice."""
    def conv(node: Node) -> Address:
        addr = parse_address(text(node), allow_unix=False)
        first = bound.setdefault(addr, node)
        if first is not node:
            raise ValueError(f"address '{addr}' is already bound at {first.location}")
        return addr
    return conv
