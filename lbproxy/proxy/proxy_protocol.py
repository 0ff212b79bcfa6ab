"""PROXY protocol v1 (text) and v2 (binary) header parser, sans-IO.

A trusted L4 balancer in front of lbproxy (`accept_proxy: true`) prepends one header to each
connection telling the client's real address. The data plane calls `parse_proxy_header` with
what it has received so far: None asks for more bytes, a `ProxyHeader` says how many bytes
the header took (the rest belongs to the HTTP parser), `ProxyProtocolError` means the peer
does not speak the protocol and the connection must be closed. Garbage is refused as soon
as its first bytes differ from both signatures, not after a timeout.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107          # spec: the longest possible v1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_LENGTH = 16         # signature, version/command, family/protocol, length
# HAProxy's default tune.bufsize: any header a real sender emits fits, and a bogus length
# cannot make us buffer 64 KiB per connection.
V2_MAX_LENGTH = 16384

_V1_FAMILIES = {b"TCP4": socket.AF_INET, b"TCP6": socket.AF_INET6}
_V2_TCP4, _V2_TCP6 = 0x11, 0x21
# Address block sizes of the defined families (UNSPEC, INET, INET6, UNIX); any other family
# or transport nibble "must be rejected as invalid by receivers" (spec 2.2).
_V2_ADDRESS_LENGTH = {0x0: 0, 0x1: 12, 0x2: 36, 0x3: 216}
_V2_PORTS = struct.Struct("!HH")
_V2_FIXED = struct.Struct("!BBH")


class ProxyProtocolError(ValueError):
    """The connection does not start with a valid PROXY protocol header."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """The client's addresses as the balancer saw them, and the header's length.

    `local`: the header carries no addresses (v1 UNKNOWN, v2 LOCAL, UNSPEC or an unsupported
    family such as AF_UNIX): keep the real connection's, as HAProxy does; src/dst are empty.
    """

    src: str
    src_port: int
    dst: str
    dst_port: int
    consumed: int
    local: bool = False


def parse_proxy_header(data: bytes | bytearray) -> ProxyHeader | None:
    """The header at the start of `data`, or None until `data` holds all of it."""
    if data[:12] == V2_SIGNATURE[:len(data)]:
        return _parse_v2(data)
    if data[:6] == V1_PREFIX[:len(data)]:
        return _parse_v1(data)
    raise ProxyProtocolError("not a PROXY protocol header")


def _local(consumed: int) -> ProxyHeader:
    return ProxyHeader("", 0, "", 0, consumed, local=True)


def _parse_v1(data: bytes | bytearray) -> ProxyHeader | None:
    """`PROXY TCP4|TCP6 SRC DST SRCPORT DSTPORT\\r\\n` or `PROXY UNKNOWN ...\\r\\n`."""
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyProtocolError(f"PROXY v1 line longer than {V1_MAX_LENGTH} bytes")
        return None
    parts = bytes(data[:end]).split(b" ")
    if parts[1] == b"UNKNOWN":     # the rest of the line is to be ignored (spec 2.1)
        return _local(end + 2)
    family = _V1_FAMILIES.get(parts[1])
    if family is None:
        raise ProxyProtocolError(f"PROXY v1: unsupported protocol {parts[1]!r}")
    if len(parts) != 6:
        raise ProxyProtocolError("PROXY v1: expected 'PROXY TCP4|TCP6 SRC DST SRCPORT DSTPORT'")
    return ProxyHeader(_v1_address(family, parts[2]), _v1_port(parts[4]),
                       _v1_address(family, parts[3]), _v1_port(parts[5]), end + 2)


def _v1_address(family: socket.AddressFamily, text: bytes) -> str:
    """`text` in canonical form (IPv6 compressed), so it matches ACLs and table keys."""
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text.decode("ascii")))
    except (OSError, ValueError):
        raise ProxyProtocolError(f"PROXY v1: bad address {text!r}") from None


def _v1_port(text: bytes) -> int:
    if not (text.isdigit() and len(text) <= 5 and int(text) <= 0xFFFF):
        raise ProxyProtocolError(f"PROXY v1: bad port {text!r}")
    return int(text)


def _parse_v2(data: bytes | bytearray) -> ProxyHeader | None:
    """The 16-byte fixed part, the address block for the family, then TLVs (skipped)."""
    if len(data) < V2_FIXED_LENGTH:
        return None
    version_command, family_transport, length = _V2_FIXED.unpack_from(data, 12)
    if version_command >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2: unsupported version {version_command >> 4}")
    command = version_command & 0xF
    if command > 1:
        raise ProxyProtocolError(f"PROXY v2: unknown command {command}")
    total = V2_FIXED_LENGTH + length
    if total > V2_MAX_LENGTH:
        raise ProxyProtocolError(f"PROXY v2 header longer than {V2_MAX_LENGTH} bytes")
    if len(data) < total:
        return None
    if command == 0:               # LOCAL: the balancer's own connection (health check)
        return _local(total)
    needed = _V2_ADDRESS_LENGTH.get(family_transport >> 4)
    if needed is None or family_transport & 0xF > 2:
        raise ProxyProtocolError(f"PROXY v2: unknown family/protocol {family_transport:#04x}")
    if length < needed:
        raise ProxyProtocolError(f"PROXY v2: address block of {length} bytes, "
                                 f"{needed} needed for family {family_transport >> 4}")
    if family_transport == _V2_TCP4:
        src = socket.inet_ntop(socket.AF_INET, data[16:20])
        dst = socket.inet_ntop(socket.AF_INET, data[20:24])
        ports = 24
    elif family_transport == _V2_TCP6:
        src = socket.inet_ntop(socket.AF_INET6, data[16:32])
        dst = socket.inet_ntop(socket.AF_INET6, data[32:48])
        ports = 48
    else:                          # UNSPEC, UDP, AF_UNIX: no TCP address to use
        return _local(total)
    src_port, dst_port = _V2_PORTS.unpack_from(data, ports)
    return ProxyHeader(src, src_port, dst, dst_port, total)
