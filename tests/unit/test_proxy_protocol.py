"""PROXY protocol v1/v2 parsing: complete, partial and invalid headers, exact `consumed`."""

from __future__ import annotations

import socket
import struct

import pytest

from lbproxy.proxy.proxy_protocol import (V1_MAX_LENGTH, V2_MAX_LENGTH, V2_SIGNATURE, ProxyHeader,
                                          ProxyProtocolError, parse_proxy_header)

HTTP = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def v2(command: int, family: int, body: bytes) -> bytes:
    """A v2 header: signature, version 2 + command, family/transport, length, body."""
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(body)) + body


def complete(data: bytes | bytearray) -> ProxyHeader:
    header = parse_proxy_header(data)
    assert header is not None
    return header


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


V2_TCP4 = v2(1, 0x11, socket.inet_pton(socket.AF_INET, "1.2.3.4")
             + socket.inet_pton(socket.AF_INET, "5.6.7.8") + struct.pack("!HH", 111, 222)
             + tlv(0x01, b"h2") + tlv(0x04, b"\x00" * 5))      # ALPN and NOOP TLVs
V2_TCP6 = v2(1, 0x21, socket.inet_pton(socket.AF_INET6, "2001:db8::1")
             + socket.inet_pton(socket.AF_INET6, "::ffff:10.0.0.1") + struct.pack("!HH", 1, 65535))


@pytest.mark.parametrize("header, expected", [
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 111 222\r\n", ("1.2.3.4", 111, "5.6.7.8", 222)),
    (b"PROXY TCP6 2001:DB8:0:0::1 ::1 65535 0\r\n", ("2001:db8::1", 65535, "::1", 0)),
    (V2_TCP4, ("1.2.3.4", 111, "5.6.7.8", 222)),
    (V2_TCP6, ("2001:db8::1", 1, "::ffff:10.0.0.1", 65535)),
])
def test_addresses_and_exact_consumed(header: bytes, expected: tuple[str, int, str, int]) -> None:
    assert complete(header + HTTP) == ProxyHeader(*expected, consumed=len(header), local=False)


@pytest.mark.parametrize("header", [
    b"PROXY UNKNOWN\r\n",
    b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
    v2(0, 0x00, b""),                                   # LOCAL
    v2(0, 0x11, bytes(12) + tlv(0x04, b"xyz")),         # LOCAL ignores the addresses
    v2(1, 0x00, b""),                                   # PROXY with UNSPEC
    v2(1, 0x31, bytes(216)),                            # AF_UNIX: keep the real addresses
])
def test_local_keeps_the_connection_addresses(header: bytes) -> None:
    assert parse_proxy_header(header + HTTP) == ProxyHeader("", 0, "", 0, len(header), True)


@pytest.mark.parametrize("header", [b"PROXY TCP4 1.2.3.4 5.6.7.8 111 222\r\n", V2_TCP4, V2_TCP6])
def test_split_across_reads(header: bytes) -> None:
    for cut in range(len(header)):
        assert parse_proxy_header(header[:cut]) is None, cut
    assert complete(bytearray(header)).consumed == len(header)


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n",              # no header at all: refused at once
    b"G",
    b"PROXX",
    b"\r\n\r\n\x00\r\nQUIT\r",          # wrong signature
    b"PROXY TCP4 1.2.3.4 5.6.7.8 111\r\n",
    b"PROXY TCP4 1.2.3.4  5.6.7.8 111 222\r\n",
    b"PROXY TCP4 1.2.3.400 5.6.7.8 111 222\r\n",
    b"PROXY TCP4 ::1 5.6.7.8 111 222\r\n",
    b"PROXY TCP6 1.2.3.4 ::1 111 222\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 111 65536\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 222\r\n",
    b"PROXY UDP4 1.2.3.4 5.6.7.8 111 222\r\n",
    b"PROXY \r\n",
    b"PROXY TCP4 " + b"1" * V1_MAX_LENGTH,   # no CRLF within 107 bytes
    V2_SIGNATURE + b"\x11\x11\x00\x00",      # version 1 in a v2 header
    v2(2, 0x11, bytes(12)),                  # unknown command
    v2(1, 0x41, bytes(12)),                  # unknown family
    v2(1, 0x13, bytes(12)),                  # unknown transport
    v2(1, 0x11, bytes(8)),                   # address block too short for IPv4
    v2(1, 0x21, bytes(12)),                  # ... and for IPv6
    V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, V2_MAX_LENGTH),   # too long
])
def test_invalid_headers_raise(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data)


def test_longest_v1_line_is_accepted() -> None:
    address = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    header = f"PROXY TCP6 {address} {address} 65535 65535\r\n".encode()
    assert len(header) == 104 and complete(header).consumed == 104
    longest = f"PROXY UNKNOWN {address} {address} 65535 65535\r\n".encode()
    assert len(longest) == V1_MAX_LENGTH and complete(longest).local
