"""Balancing algorithms by config name, and the one way to build them.

`backends.<b>.balance` is `NAME` or `NAME(ARG)` (split by lbproxy.config): `url_param`
and `hdr` need ARG, the parameter or header name; the others take none. `hash_type`
matters only to the hashing algorithms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lbproxy.balance.base import Balancer
from lbproxy.balance.first import First
from lbproxy.balance.hashing import (HASH_TYPES, HashBalancer, HeaderHash, SourceHash,
                                     UriHash, UrlParamHash)
from lbproxy.balance.leastconn import LeastConn
from lbproxy.balance.plugin import PluginBalancer
from lbproxy.balance.random import WeightedRandom
from lbproxy.balance.response_time import LeastResponseTime
from lbproxy.balance.roundrobin import RoundRobin
from lbproxy.balance.static_rr import StaticRoundRobin
from lbproxy.extensions import BALANCERS

if TYPE_CHECKING:
    from lbproxy.backends.server import Server

ALGORITHMS: dict[str, type[Balancer]] = {
    cls.name: cls
    for cls in (RoundRobin, StaticRoundRobin, LeastConn, First, SourceHash, UriHash,
                UrlParamHash, HeaderHash, WeightedRandom, LeastResponseTime)
}

__all__ = ["ALGORITHMS", "HASH_TYPES", "Balancer", "make_balancer"]


def make_balancer(algorithm: str, arg: str | None, hash_type: str,
                  servers: Sequence[Server]) -> Balancer:
    """A balancer over `servers` for a `balance:` setting; ValueError if it is invalid."""
    cls = ALGORITHMS.get(algorithm)
    if cls is None and algorithm in BALANCERS:
        if arg is not None:
            raise ValueError(f"{algorithm} takes no argument")
        return PluginBalancer(servers, algorithm)
    if cls is None:
        raise ValueError(f"unknown algorithm {algorithm!r}")
    if issubclass(cls, (UrlParamHash, HeaderHash)):
        if not arg:
            raise ValueError(f"{algorithm} needs an argument: {algorithm}(NAME)")
        return cls(servers, arg, hash_type)
    if arg is not None:
        raise ValueError(f"{algorithm} takes no argument")
    if issubclass(cls, HashBalancer):
        return cls(servers, hash_type)
    return cls(servers)
