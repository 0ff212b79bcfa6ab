"""Reading `backends:`: algorithm, stickiness, health checks, retries, servers, discovery.

`balance: url_param(NAME)` / `hdr(NAME)` is split into `balance` and `balance_arg` here so
the balancer registry can look algorithms up by plain name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from lbproxy.config.common import COMPRESSION, stick_table, timeouts
from lbproxy.config.durations import parse_address
from lbproxy.config.errors import unknown
from lbproxy.config.fields import (Section, address, boolean, choice, duration, int_range,
                                   integer, name, nonempty, positive_duration, readable_file,
                                   section, size, text, token, tuple_of, uri_path)
from lbproxy.config.nodes import Node
from lbproxy.config.schema import (ALGORITHMS, ALGORITHMS_WITH_ARG, BACKEND_PROTOCOLS,
                                   COOKIE_MODES,
                                   HASH_TYPES, HEALTH_CHECK_TYPES, HTTP_REUSE, RETRY_EVENTS,
                                   SERVER_STATES, TLS_VERIFY, BackendConfig, CookieConfig,
                                   DefaultsConfig, HealthCheckConfig, PassiveConfig,
                                   ServerConfig, ServerTemplateConfig, ServerTLSConfig)
from lbproxy.extensions import BALANCERS

_BALANCE = re.compile(r"([a-z_-]+)\s*(?:\((.*)\))?")
MAX_WEIGHT = 256
MAX_PORT = 65535
MIN_HEAD_LIMIT = 1024      # no real response head is smaller


def backend(defaults: DefaultsConfig, caches: Sequence[str], name: str,
            node: Node) -> BackendConfig:
    s = Section(node)
    balance, balance_arg = s.get("balance", _balance, ("roundrobin", None))
    return s.build(BackendConfig, {
        "hash_type": choice("hash type", HASH_TYPES),
        "cookie": _COOKIE,
        "health_check": _HEALTH_CHECK,
        "passive": _PASSIVE,
        "retries": integer(0),
        "retry_on": tuple_of(_retry_event, single=True),
        "redispatch": boolean,
        "http_reuse": choice("http_reuse mode", HTTP_REUSE),
        "maxconn": integer(0),
        "proto": choice("backend protocol", BACKEND_PROTOCOLS),
        "max_response_header_size": _head_limit,
        "compression": COMPRESSION,
        "cache": choice("cache", caches),
        "timeouts": timeouts(defaults.timeouts),
        "servers": tuple_of(_SERVER, unique_by="name"),
        "server_template": _SERVER_TEMPLATE,
        "stick_table": lambda n: stick_table(name, n),
    }, name=name, balance=balance, balance_arg=balance_arg, retries=defaults.retries,
        redispatch=defaults.redispatch, timeouts=defaults.timeouts)


def _head_limit(node: Node) -> int:
    value = size(node)
    if value < MIN_HEAD_LIMIT:
        raise ValueError(f"expected at least {MIN_HEAD_LIMIT // 1024}k, got {node.value}")
    return value


def _balance(node: Node) -> tuple[str, str | None]:
    """`roundrobin` -> ('roundrobin', None); `hdr(Host)` -> ('hdr', 'Host')."""
    value = text(node).strip()
    match = _BALANCE.fullmatch(value)
    algorithm, arg = (match[1], match[2]) if match else (value, None)
    if algorithm not in ALGORITHMS and algorithm not in BALANCERS:
        raise ValueError(unknown("algorithm", algorithm, [*ALGORITHMS, *BALANCERS]))
    if algorithm in ALGORITHMS_WITH_ARG:
        if not (arg and arg.strip()):
            raise ValueError(f"'{algorithm}' needs a name: {algorithm}(NAME)")
        return algorithm, arg.strip()
    if arg is not None:
        raise ValueError(f"'{algorithm}' takes no argument")
    return algorithm, None


def _retry_event(node: Node) -> str | int:
    """A retry condition name, or an HTTP status 400-599."""
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        return integer(400, 599)(node)
    return choice("retry event", RETRY_EVENTS)(node)


def _nameserver(node: Node) -> str:
    """A DNS server: an IP, or IP:PORT / [IPv6]:PORT."""
    value = text(node)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        parse_address(value, allow_unix=False)
    return value


_COOKIE = section(CookieConfig, {
    "name": token("cookie name"),
    "mode": choice("cookie mode", COOKIE_MODES),
    "indirect": boolean, "nocache": boolean, "httponly": boolean, "secure": boolean,
    "max_age": duration,
    "domain": nonempty,
})
_HEALTH_CHECK = section(HealthCheckConfig, {
    "type": choice("health check type", HEALTH_CHECK_TYPES),
    "method": nonempty,
    "path": uri_path,
    "host": nonempty,
    "expect_status": int_range(100, 599),
    "interval": positive_duration,
    "timeout": positive_duration,
    "rise": integer(1),
    "fall": integer(1),
    "port": integer(1, MAX_PORT),
    "service": text,
})
_PASSIVE = section(PassiveConfig, {
    "max_fails": integer(1),
    "fail_timeout": positive_duration,
    "on_status": tuple_of(integer(100, 599), single=True),
})
_SERVER = section(ServerConfig, {
    "name": name,
    "address": address(allow_unix=True),
    "weight": integer(0, MAX_WEIGHT),
    "maxconn": integer(0),
    "backup": boolean,
    "cookie": nonempty,
    "slowstart": duration,
    "state": choice("server state", SERVER_STATES),
    "tls": section(ServerTLSConfig, {"verify": choice("verify mode", TLS_VERIFY),
                                     "sni": nonempty, "ca": readable_file}),
})
_SERVER_TEMPLATE = section(ServerTemplateConfig, {
    "prefix": name,
    "count": integer(1),
    "fqdn": nonempty,
    "port": integer(1, MAX_PORT),
    "resolve_interval": positive_duration,
    "nameservers": tuple_of(_nameserver, single=True),
})
