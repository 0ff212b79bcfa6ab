"""HTTP/2 messages as header lists (RFC 9113 §8): a request's fields read into the proxy's
Request, and a response's head written out of its header quadruples.

A request is malformed (the stream is reset with PROTOCOL_ERROR, §8.1.1) when a pseudo-
header is unknown, repeated, missing or after a regular field, a name has upper case,
a connection-specific field appears (Connection, Keep-Alive, Proxy-Connection,
Transfer-Encoding, Upgrade, TE other than "trailers"), a value holds NUL, CR or LF or
starts or ends with whitespace, or Content-Length is not a number. Cookie crumbs are
joined (§8.2.3), :authority becomes the Host an HTTP/1.1 server will see.
"""

from __future__ import annotations

import re
from typing import Any

from lbproxy.http.headers import (CONTENT_LENGTH, REQUEST_SPECIAL, X_FORWARDED_FOR,
                                  X_FORWARDED_HOST, X_FORWARDED_PROTO)

Header = tuple[bytes, bytes]

CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                                 b"transfer-encoding", b"upgrade", b"http2-settings"})
# response fields an HTTP/1.1 server may send that HTTP/2 forbids or the proxy replaces
RESPONSE_DROPPED = CONNECTION_SPECIFIC | {b"te", b"trailer"}
BAD_VALUE = re.compile(rb"[\0\r\n]|^[ \t]|[ \t]$")
# Fields already found valid: headers repeat (the HPACK table holds the same ones), so most
# are checked once. Bounded, so that varied input cannot make it grow without end.
VALID_FIELDS: set[Header] = set()
VALID_FIELDS_MAX = 8192
# Response field names as sent by servers -> as HTTP/2 sends them (b"": dropped); bounded.
RESPONSE_NAMES: dict[bytes, bytes] = {}
RESPONSE_NAMES_MAX = 4096
STATUS_FIELDS = {status: (b":status", b"%d" % status) for status in range(100, 600)}


class Malformed(ValueError):
    """A request HTTP/2 calls malformed: the stream gets RST_STREAM PROTOCOL_ERROR."""


def read_request(request: Any, headers: list[Header], frontend: Any) -> None:
    """Fill `request` (lbproxy/proxy/request.py) from a request's header list.

    Raises Malformed. Regular fields go to `hparts` as the data plane forwards them; the
    fields the proxy manages go to their own slots, as the HTTP/1.1 parser puts them."""
    method = scheme = path = authority = None
    pseudo_done = False
    hparts = request.hparts
    cookies: list[bytes] = []
    for header in headers:
        name, value = header
        if name[0] == 58:                                   # ":"
            if pseudo_done:
                raise Malformed("pseudo-header after a regular field")
            if name == b":method" and method is None:
                method = value
            elif name == b":path" and path is None:
                path = value
            elif name == b":scheme" and scheme is None:
                scheme = value
            elif name == b":authority" and authority is None:
                authority = value
            else:
                raise Malformed(f"unexpected pseudo-header {name!r}")
            continue
        pseudo_done = True
        if header not in VALID_FIELDS:
            check_field(name, value)
            if len(VALID_FIELDS) < VALID_FIELDS_MAX:
                VALID_FIELDS.add(header)
        if name == b"cookie":
            cookies.append(value)
            continue
        code = REQUEST_SPECIAL.get(name)
        if code is None:
            hparts += (name, b": ", value, b"\r\n")
        elif code == CONTENT_LENGTH:
            if not value.isdigit() or (request.length >= 0 and int(value) != request.length):
                raise Malformed("invalid content-length")
            request.length = int(value)
        elif code == X_FORWARDED_FOR:
            request.xff_b = value if request.xff_b is None else request.xff_b + b", " + value
        elif code == X_FORWARDED_PROTO or code == X_FORWARDED_HOST:
            if not (frontend.x_forwarded_proto if code == X_FORWARDED_PROTO
                    else frontend.x_forwarded_host):
                hparts += (name, b": ", value, b"\r\n")
        elif name == b"host":
            if request.host_b is not None:
                raise Malformed("two host fields")
            request.host_b = value
        elif name == b"expect":
            request.expect_continue = value.lower() == b"100-continue"
            hparts += (name, b": ", value, b"\r\n")
        # te: trailers is kept for an HTTP/2 server (request.te_trailers); other
        # hop-by-hop fields were refused above
        elif name == b"te":
            request.te_trailers = True
    if method is None or scheme is None or not path:
        raise Malformed("missing :method, :scheme or :path")
    if path[0] != 47 and not (path == b"*" and method == b"OPTIONS"):    # 47: "/"
        raise Malformed("invalid :path")
    if authority is not None:
        if request.host_b is not None and request.host_b != authority:
            raise Malformed("host and :authority differ")
        request.host_b = authority
    if request.host_b is not None:
        hparts += (b"host", b": ", request.host_b, b"\r\n")
    if cookies:
        hparts += (b"cookie", b": ", b"; ".join(cookies), b"\r\n")
    request.method_b = method
    request.url_b = path
    request.is_head = method == b"HEAD"


# What read_request sets on a fresh request, in this order (see `head_of`).
HEAD_FIELDS = ("method_b", "url_b", "is_head", "host_b", "xff_b", "length", "expect_continue",
               "te_trailers")


def head_of(request: Any) -> tuple:
    """What read_request found, to give the next request of the same header list (an
    HPACK block repeated as is decodes to the same list) without reading it again."""
    return (*[getattr(request, name) for name in HEAD_FIELDS], tuple(request.hparts))


def read_again(request: Any, head: tuple) -> None:
    """Fill a fresh `request` as read_request did the one `head` was taken from."""
    (request.method_b, request.url_b, request.is_head, request.host_b, request.xff_b,
     request.length, request.expect_continue, request.te_trailers, hparts) = head
    request.hparts = list(hparts)


def check_field(name: bytes, value: bytes) -> None:
    """Raise Malformed for a field a request may not carry in HTTP/2."""
    if name != name.lower():
        raise Malformed("upper case in a field name")
    if name in CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
        raise Malformed(f"connection-specific field {name!r}")
    if BAD_VALUE.search(value):
        raise Malformed(f"invalid value of {name!r}")


def response_headers(status: int, hparts: list[bytes]) -> list[Header]:
    """An HTTP/2 response head from the proxy's header quadruples: lower-case names,
    without the fields HTTP/2 does not carry."""
    headers = [STATUS_FIELDS.get(status) or (b":status", b"%d" % status)]
    names = RESPONSE_NAMES
    for i in range(0, len(hparts), 4):
        name = names.get(hparts[i])
        if name is None:
            name = _response_name(hparts[i])
        if name:
            headers.append((name, hparts[i + 2]))
    return headers


def _response_name(name: bytes) -> bytes:
    """`name` as HTTP/2 sends it: lower case, or b"" when HTTP/2 does not carry it."""
    lowered = name.lower()
    if lowered in RESPONSE_DROPPED:
        lowered = b""
    if len(RESPONSE_NAMES) < RESPONSE_NAMES_MAX:
        RESPONSE_NAMES[name] = lowered
    return lowered
