"""The rules of a shared HTTP cache (RFC 9111) as pure functions over header lists.

Headers come as the data plane keeps them: flat (name, b": ", value, b"\\r\\n") lists. Times
are Unix seconds. What a shared cache may store (§3), how long a response stays fresh
(§4.2.1) and how old it is (§4.2.3), and whether a client's conditional request is
answered by a stored response (RFC 9110 §13), decided here and tested on their own;
lbproxy/proxy/cache.py applies them to exchanges.
"""

from __future__ import annotations

from email.utils import format_datetime, parsedate_to_datetime
from datetime import datetime, timezone

# Statuses a cache may store without explicit freshness (RFC 9110 §15.1: heuristically
# cacheable), 206 left out: ranges are not stored.
HEURISTIC = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# Statuses never stored: partial content, and 304, which refreshes an entry instead.
NEVER = frozenset({206, 304})


def values(parts: list[bytes], name: bytes) -> list[bytes]:
    """The values of header `name` (lower-case) in a flat header list."""
    return [parts[i + 2] for i in range(0, len(parts), 4) if parts[i].lower() == name]


def value(parts: list[bytes], name: bytes) -> bytes | None:
    found = values(parts, name)
    return b", ".join(found) if found else None


def directives(parts: list[bytes]) -> dict[str, str | None]:
    """Cache-Control directives (lower-cased names; a value without its quotes)."""
    found: dict[str, str | None] = {}
    for raw in values(parts, b"cache-control"):
        for item in raw.decode("latin-1").split(","):
            name, eq, arg = item.strip().partition("=")
            if name:
                found.setdefault(name.lower(), arg.strip().strip('"') if eq else None)
    return found


def seconds(directive: dict[str, str | None], name: str) -> int | None:
    """A delta-seconds directive (max-age=60); None when absent or unreadable."""
    raw = directive.get(name)
    if raw is None or not raw.isdigit():
        return None
    return int(raw)


def http_date(raw: bytes | None) -> float | None:
    """An HTTP-date as Unix seconds; None when absent or invalid (RFC 9110 §5.6.7)."""
    if not raw:
        return None
    try:
        when = parsedate_to_datetime(raw.decode("latin-1"))
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def format_http_date(when: float) -> bytes:
    return format_datetime(datetime.fromtimestamp(when, timezone.utc), usegmt=True).encode()


def storable(method: bytes, request: list[bytes], status: int, response: list[bytes],
             response_cc: dict[str, str | None]) -> bool:
    """Whether a shared cache may store this response (RFC 9111 §3, §3.5), leaving
    freshness aside: GET, a final status that is not 206/304, no `no-store` on either
    side, not `private`, no Set-Cookie, not `Vary: *`, and a request with Authorization
    only when the response says it may be shared."""
    if method != b"GET" or status < 200 or status in NEVER:
        return False
    if "no-store" in response_cc or "private" in response_cc:
        return False
    if "no-store" in directives(request):
        return False
    if values(response, b"set-cookie"):
        return False
    vary = value(response, b"vary")
    if vary is not None and b"*" in [name.strip() for name in vary.split(b",")]:
        return False
    if values(request, b"authorization") and not (
            "public" in response_cc or "s-maxage" in response_cc
            or "must-revalidate" in response_cc):
        return False
    return True


def freshness_lifetime(status: int, response: list[bytes], response_cc: dict[str, str | None],
                       default_ttl: float) -> float:
    """How long the response is fresh (RFC 9111 §4.2.1): s-maxage, max-age, Expires minus
    Date, else `default_ttl` for a heuristically cacheable status; 0 for no-cache."""
    if "no-cache" in response_cc:
        return 0.0
    for name in ("s-maxage", "max-age"):
        delta = seconds(response_cc, name)
        if delta is not None:
            return float(delta)
    expires_raw = value(response, b"expires")
    if expires_raw is not None:
        expires = http_date(expires_raw)
        date = http_date(value(response, b"date"))
        if expires is None or date is None:
            return 0.0                           # an invalid Expires means already expired
        return max(0.0, expires - date)
    return default_ttl if status in HEURISTIC else 0.0


def initial_age(response: list[bytes], response_time: float) -> float:
    """Age when received (RFC 9111 §4.2.3, without the request's own delay): the larger of
    the server's Age header and how far its Date lies behind our clock."""
    age = 0.0
    raw_age = value(response, b"age")
    if raw_age is not None and raw_age.strip().isdigit():
        age = float(raw_age.strip())
    date = http_date(value(response, b"date"))
    if date is not None:
        age = max(age, response_time - date)
    return age


def etag_matches(if_none_match: bytes, etag: bytes | None) -> bool:
    """If-None-Match against a stored ETag with the weak comparison (RFC 9110 §13.1.2)."""
    if if_none_match.strip() == b"*":          # any current representation
        return True
    if etag is None:
        return False
    stored = etag.strip().removeprefix(b"W/")
    return any(tag.strip().removeprefix(b"W/") == stored for tag in if_none_match.split(b","))


def not_modified(request: list[bytes], etag: bytes | None, last_modified: bytes | None) -> bool:
    """Whether a client's conditional GET is answered 304 by a response with these
    validators: If-None-Match decides when present, else If-Modified-Since."""
    if_none_match = value(request, b"if-none-match")
    if if_none_match is not None:
        return etag_matches(if_none_match, etag)
    since = http_date(value(request, b"if-modified-since"))
    if since is None:                 # the usual request: no date to parse on every hit
        return False
    modified = http_date(last_modified)
    return modified is not None and modified <= since
