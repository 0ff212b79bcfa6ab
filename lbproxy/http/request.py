"""The read-only view of a request that routing, balancing and stick tables work on.

The data plane's request object implements this protocol lazily (it decodes a header
only when a rule asks for it), so pure logic can be tested with a plain fake.
"""

from __future__ import annotations

from typing import Protocol


class RequestInfo(Protocol):
    """What rules and balancers may read from a request. Strings are latin-1 decoded."""

    method: str            # "GET"
    url: str               # request target exactly as received, e.g. "/a/b?x=1"
    path: str              # the part of url before "?", not decoded
    query: str             # the part of url after "?", "" when absent
    host: str              # Host header without port, lower-cased, "" when absent
    src: str               # client IP ("127.0.0.1", "::1"); from PROXY protocol when accepted
    src_port: int
    dst_port: int
    ssl_fc: bool           # arrived over TLS
    ssl_fc_sni: str | None

    def header(self, name: str) -> str | None:
        """First value of header `name` (lower-case), or None."""

    def header_values(self, name: str) -> list[str]:
        """Every value of header `name` (lower-case), comma-separated lists split."""

    def cookie(self, name: str) -> str | None:
        """Value of cookie `name` from the Cookie header(s), or None."""
