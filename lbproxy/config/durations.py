"""Parsers for the small value languages of the configuration: durations, sizes, addresses.

They take plain Python values (what YAML produced) and raise ValueError with a message fit
for the user; the validator adds the FILE:LINE: key.path in front. Kept apart from the
YAML machinery so the runtime API (e.g. `?drain=30s`, `POST .../servers {address}`) can
reuse them.
"""

from __future__ import annotations

import ipaddress
import math
import re

from lbproxy.config.schema import Address

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+)\s*([kmg]?)", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*)(\.[A-Za-z0-9_][A-Za-z0-9_-]*)*\.?")
_IPV4_LIKE = re.compile(r"[0-9.]+")


def parse_duration(v: object) -> float:
    """Seconds from `250ms`, `5s`, `2m`, `1h`, `1d` or a bare number of seconds."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"invalid duration {v!r} (must be a finite number >= 0)")
        return float(v)
    if isinstance(v, str):
        text = v.strip()
        match = _DURATION.fullmatch(text)
        if match:
            return float(match[1]) * _DURATION_UNITS[match[2] or "s"]
        if text.startswith("-") and _DURATION.fullmatch(text[1:].strip()):
            raise ValueError(f"negative duration '{v}'")
    raise ValueError(f"invalid duration {_show(v)} "
                     "(expected e.g. 250ms, 5s, 2m, 1h, 1d or a number of seconds)")


def parse_size(v: object) -> int:
    """Bytes from `16k`, `1m`, `1g` (powers of 1024) or a bare number of bytes."""
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 0:
            raise ValueError(f"negative size {v}")
        return v
    if isinstance(v, str):
        match = _SIZE.fullmatch(v.strip())
        if match:
            return int(match[1]) * _SIZE_UNITS[match[2].lower()]
    raise ValueError(f"invalid size {_show(v)} (expected e.g. 16k, 1m, 1g or a number of bytes)")


def parse_address(v: object, allow_unix: bool) -> Address:
    """An Address from `127.0.0.1:8080`, `:8080`, `[::1]:8080`, `host:80` or `unix:/path`."""
    if not isinstance(v, str):
        raise ValueError(f"expected an address such as ':8080' or '127.0.0.1:8080', got {_show(v)}")
    if v.startswith("unix:"):
        if not allow_unix:
            raise ValueError(f"unix socket '{v}' is not allowed here (expected HOST:PORT)")
        if not v[5:]:
            raise ValueError("empty unix socket path (expected e.g. unix:/run/app.sock)")
        return Address("", 0, v[5:])
    host, sep, port = v.rpartition(":")
    if not sep:
        raise ValueError(f"missing port in address '{v}' (expected HOST:PORT, e.g. ':8080')")
    if host.startswith("[") and host.endswith("]"):
        host = _ipv6(host[1:-1], v)
    elif ":" in host:
        raise ValueError(f"IPv6 address '{v}' needs brackets, e.g. '[::1]:8080'")
    elif host:
        _check_host(host, v)
    return Address(host, _port(port, v))


def _ipv6(host: str, v: str) -> str:
    try:
        return str(ipaddress.IPv6Address(host))
    except ValueError:
        raise ValueError(f"invalid IPv6 address in '{v}'") from None


def _check_host(host: str, v: str) -> None:
    if _IPV4_LIKE.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv4 address in '{v}'") from None
    elif not _HOSTNAME.fullmatch(host):
        raise ValueError(f"invalid host name in address '{v}'")


def _port(port: str, v: str) -> int:
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid port in address '{v}' (expected 1-65535)")
    return int(port)


def _show(v: object) -> str:
    return f"'{v}'" if isinstance(v, str) else repr(v)
