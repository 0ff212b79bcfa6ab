"""Content codings: which one a client's Accept-Encoding lets us use (RFC 9110 §12.5.3).

Among the codings we offer, the one with the client's highest q-value wins; ties go to our
order of preference. `q=0` refuses a coding, `*` stands for every coding the header does
not name, and no Accept-Encoding at all means the client asked for nothing (we then send
the identity, as HAProxy, nginx and Caddy do, although the RFC would allow any coding).
"""

from __future__ import annotations

ALGORITHMS = ("zstd", "br", "gzip")      # the codings lbproxy can produce
_ALIASES = {"x-gzip": "gzip"}


def accepted_codings(header: str) -> dict[str, float]:
    """Coding name (lower-cased) -> q-value, from an Accept-Encoding value; a coding with
    an unreadable q-value is left out, as if not named."""
    codings: dict[str, float] = {}
    for item in header.split(","):
        name, *params = item.split(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
        if 0.0 <= q <= 1.0:
            name = _ALIASES.get(name, name)
            codings[name] = max(q, codings.get(name, 0.0))
    return codings


def negotiate(header: str | None, offered: tuple[str, ...]) -> str | None:
    """The coding of `offered` (in our order of preference) to send for `header`, the
    client's Accept-Encoding; None: send the identity."""
    if not header:
        return None
    codings = accepted_codings(header)
    wildcard = codings.get("*", 0.0)
    best, best_q = None, 0.0
    for name in offered:
        q = codings.get(name, wildcard)
        if q > best_q:                   # strictly: ties keep the earlier (preferred) one
            best, best_q = name, q
    return best
