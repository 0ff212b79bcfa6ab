"""Header names the proxy treats specially, as small integer codes.

The request and response parsers look each name up in these maps, as sent (the special
names in lower case and Title-Case) and lower-cased only when its length is a special
name's; every name not in them is passed through untouched. The most common names, as
clients and servers write them, are known not to be special and are relayed after one
set lookup.
"""

from __future__ import annotations

HOST = 1
CONTENT_LENGTH = 2
TRANSFER_ENCODING = 3
CONNECTION = 4
HOP = 5                # hop-by-hop, dropped: keep-alive, te, trailer (and proxy-connection)
UPGRADE = 6
X_FORWARDED_FOR = 7
X_FORWARDED_PROTO = 8
X_FORWARDED_HOST = 9
EXPECT = 10
PROXY_CONNECTION = 11  # dropped like HOP; llhttp reads it as Connection (client.py)

# Response headers (codes for UpstreamProtocol.on_header): framing and hop-by-hop.
RESPONSE_SPECIAL: dict[bytes, int] = {
    b"content-length": CONTENT_LENGTH,
    b"transfer-encoding": TRANSFER_ENCODING,
    b"connection": CONNECTION,
    b"keep-alive": HOP,
    b"proxy-connection": HOP,
    b"te": HOP,
    b"trailer": HOP,
    b"upgrade": UPGRADE,
}


def _title_case(name: bytes) -> bytes:
    """`content-length` -> `Content-Length`: a header name as most peers write it."""
    return b"-".join(part.capitalize() for part in name.split(b"-"))


def _as_sent(special: dict[bytes, int]) -> dict[bytes, int]:
    """`special` with each name also as peers usually write it (Title-Case, and TE), so
    that a header costs one dict lookup without lower-casing it; a name missed there is
    lower-cased only when its length is one of the special names' lengths."""
    as_sent = dict(special)
    for name, code in special.items():
        as_sent[_title_case(name)] = code
    if b"te" in special:
        as_sent[b"TE"] = special[b"te"]
    return as_sent


RESPONSE_SPECIAL_AS_SENT = _as_sent(RESPONSE_SPECIAL)
RESPONSE_SPECIAL_LENGTHS = frozenset(len(name) for name in RESPONSE_SPECIAL)

# Request headers (codes for ClientProtocol.on_header): the same, plus what we rewrite.
REQUEST_SPECIAL: dict[bytes, int] = {
    **RESPONSE_SPECIAL,
    b"host": HOST,
    b"x-forwarded-for": X_FORWARDED_FOR,
    b"x-forwarded-proto": X_FORWARDED_PROTO,
    b"x-forwarded-host": X_FORWARDED_HOST,
    b"expect": EXPECT,
    b"http2-settings": HOP,    # belongs to an h2c upgrade, which is never passed on
    b"proxy-connection": PROXY_CONNECTION,
}
REQUEST_SPECIAL_AS_SENT = _as_sent(REQUEST_SPECIAL)
REQUEST_SPECIAL_LENGTHS = frozenset(len(name) for name in REQUEST_SPECIAL)


def _spellings(*names: str) -> frozenset[bytes]:
    """Each name lower-case and Title-Case, as bytes."""
    return frozenset(spelling for name in names
                     for spelling in (name.encode(), _title_case(name.encode())))


# Header names that are never special, as browsers, curl, HTTP libraries and servers send
# them: one set lookup relays them, without lower-casing or a lookup among the special
# names (every other name gets those). Nothing special may ever be added here.
PLAIN_REQUEST_HEADERS = _spellings(
    "accept", "accept-encoding", "accept-language", "authorization", "cache-control",
    "content-type", "cookie", "dnt", "if-match", "if-modified-since", "if-none-match",
    "origin", "pragma", "priority", "range", "referer", "sec-ch-ua", "sec-ch-ua-mobile",
    "sec-ch-ua-platform", "sec-fetch-dest", "sec-fetch-mode", "sec-fetch-site",
    "sec-fetch-user", "traceparent", "upgrade-insecure-requests", "user-agent",
    "x-request-id", "x-requested-with")
PLAIN_RESPONSE_HEADERS = _spellings(
    "accept-ranges", "access-control-allow-origin", "age", "cache-control",
    "content-encoding", "content-language", "content-security-policy", "content-type",
    "date", "etag", "expires", "last-modified", "location", "referrer-policy", "server",
    "set-cookie", "strict-transport-security", "vary", "x-content-type-options",
    "x-frame-options")
assert not {name.lower() for name in PLAIN_REQUEST_HEADERS | PLAIN_RESPONSE_HEADERS} \
    & REQUEST_SPECIAL.keys()

# Connection-header tokens that are not header names to strip: the connection options,
# and the framing and routing headers that a message cannot be forwarded without (a
# `Connection: host` or `Connection: content-length` must not make the next hop read the
# message differently from us; RFC 9110 §7.6.1 lets an intermediary refuse such names).
NOT_HOP_BY_HOP = frozenset({b"close", b"keep-alive", b"upgrade",
                            b"host", b"content-length", b"transfer-encoding"})


# Connection values as most peers send them, already tokenized.
_PLAIN_CONNECTION = {value: (value.lower(),) for value in (
    b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade")}


def connection_header(value: bytes, names: set[bytes] | None
                      ) -> tuple[tuple[bytes, ...], set[bytes] | None]:
    """The lower-cased tokens of a Connection header value, and `names` plus the header
    names among them (those the sender declares hop-by-hop, to strip before forwarding)."""
    tokens = _PLAIN_CONNECTION.get(value)
    if tokens is not None:
        return tokens, names
    tokens = tuple([token.strip().lower() for token in value.split(b",") if token.strip()])
    for token in tokens:
        if token not in NOT_HOP_BY_HOP:
            if names is None:
                names = set()
            names.add(token)
    return tokens, names


def strip_named(parts: list[bytes], names: set[bytes]) -> list[bytes]:
    """Remove headers whose lower-cased name is in `names` from a flat head list.

    `parts` holds (name, b": ", value, b"\\r\\n") quadruples; used only in the rare case
    where a Connection header names extra hop-by-hop headers.
    """
    kept: list[bytes] = []
    for i in range(0, len(parts), 4):
        if parts[i].lower() not in names:
            kept += parts[i:i + 4]
    return kept


def is_token_list_chunked(value: bytes) -> bool:
    """True when a Transfer-Encoding value is exactly `chunked` (any case)."""
    return value.strip().lower() == b"chunked"


def upgrade_protocols(upgrade: bytes, connection: tuple[bytes, ...] | None, http11: bool,
                      has_body: bool) -> bytes | None:
    """The protocols a request may switch to, or None when its Upgrade header is only a
    hop-by-hop header to drop: a switch needs HTTP/1.1, `Connection: upgrade` and no body,
    and never goes to h2c (HTTP/2 is not reached by upgrading)."""
    if not http11 or has_body or connection is None or b"upgrade" not in connection:
        return None
    protocols = [p for p in (t.strip() for t in upgrade.split(b","))
                 if p and p.lower() != b"h2c"]
    return b", ".join(protocols) or None
