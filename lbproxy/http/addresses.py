"""Client addresses as rules and tables compare them."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: object) -> IPAddress | None:
    """The address in `text`, None if it is not one. An IPv4-mapped IPv6 address
    (::ffff:10.1.2.3, what a dual-stack socket reports) becomes the IPv4 address, so
    one client never counts as two."""
    try:
        address = ipaddress.ip_address(text)  # type: ignore[arg-type]
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
