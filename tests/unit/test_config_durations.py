"""Durations, sizes and addresses: the small value languages of the configuration."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from lbproxy.config import Address, parse_address, parse_duration, parse_size


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0), ("1d", 86400.0),
    ("1.5s", 1.5), (" 10s ", 10.0), ("10", 10.0), (30, 30.0), (0.5, 0.5), (0, 0.0),
])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "size"), [
    ("16k", 16384), ("1m", 1048576), ("1g", 1073741824), ("32K", 32768), (100, 100), ("0", 0),
])
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


DURATION_HINT = "(expected e.g. 250ms, 5s, 2m, 1h, 1d or a number of seconds)"
SIZE_HINT = "(expected e.g. 16k, 1m, 1g or a number of bytes)"


@pytest.mark.parametrize(("parse", "text", "message"), [
    (parse_duration, "-5s", "negative duration '-5s'"),
    (parse_duration, -1, "invalid duration -1 (must be a finite number >= 0)"),
    (parse_duration, math.inf, "invalid duration inf (must be a finite number >= 0)"),
    (parse_duration, "5 sec", f"invalid duration '5 sec' {DURATION_HINT}"),
    (parse_duration, "abc", f"invalid duration 'abc' {DURATION_HINT}"),
    (parse_duration, True, f"invalid duration True {DURATION_HINT}"),
    (parse_size, "12q", f"invalid size '12q' {SIZE_HINT}"),
    (parse_size, "1.5k", f"invalid size '1.5k' {SIZE_HINT}"),
    (parse_size, -1, "negative size -1"),
    (parse_size, False, f"invalid size False {SIZE_HINT}"),
])
def test_bad_durations_and_sizes(parse: Callable[[object], object], text: object,
                                 message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse(text)
    assert str(info.value) == message


@pytest.mark.parametrize(("text", "address"), [
    ("127.0.0.1:8080", Address("127.0.0.1", 8080)),
    (":8080", Address("", 8080)),
    ("[::1]:8080", Address("::1", 8080)),
    ("[2001:DB8::1]:443", Address("2001:db8::1", 443)),
    ("localhost:80", Address("localhost", 80)),
    ("app.service.local:65535", Address("app.service.local", 65535)),
])
def test_addresses(text: str, address: Address) -> None:
    assert parse_address(text, allow_unix=False) == address


def test_unix_socket_only_where_allowed() -> None:
    assert parse_address("unix:/run/app.sock", allow_unix=True) == Address("", 0, "/run/app.sock")
    with pytest.raises(ValueError) as info:
        parse_address("unix:/run/app.sock", allow_unix=False)
    assert str(info.value) == "unix socket 'unix:/run/app.sock' is not allowed here (expected HOST:PORT)"


@pytest.mark.parametrize(("text", "shown"), [
    ("127.0.0.1:8080", "127.0.0.1:8080"), (":8080", ":8080"), ("[::1]:8080", "[::1]:8080"),
    ("unix:/run/app.sock", "unix:/run/app.sock"),
])
def test_address_str_is_the_user_form(text: str, shown: str) -> None:
    assert str(parse_address(text, allow_unix=True)) == shown


@pytest.mark.parametrize(("text", "message"), [
    ("127.0.0.1", "missing port in address '127.0.0.1' (expected HOST:PORT, e.g. ':8080')"),
    ("::1:8080", "IPv6 address '::1:8080' needs brackets, e.g. '[::1]:8080'"),
    ("[zz::1]:80", "invalid IPv6 address in '[zz::1]:80'"),
    ("999.0.0.1:80", "invalid IPv4 address in '999.0.0.1:80'"),
    ("bad host:80", "invalid host name in address 'bad host:80'"),
    (":0", "invalid port in address ':0' (expected 1-65535)"),
    (":65536", "invalid port in address ':65536' (expected 1-65535)"),
    (":http", "invalid port in address ':http' (expected 1-65535)"),
    ("unix:", "empty unix socket path (expected e.g. unix:/run/app.sock)"),
    (8080, "expected an address such as ':8080' or '127.0.0.1:8080', got 8080"),
])
def test_bad_addresses(text: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_address(text, allow_unix=True)
    assert str(info.value) == message
