"""The path that path matchers see: decoded and normalised, so spelling cannot bypass a rule.

`path_beg /admin` must also match `/a/../admin`, `/%61dmin`, `//admin`, `/admin;x`,
`/./admin`, `/%2e%2e/admin` and `/..;/admin`, because servers behind us resolve those to
`/admin`. The steps, in this order:

1. an absolute-form target (`http://h/admin`) is reduced to its path;
2. percent-decoding, once (`%252e` stays `%2e`), including `%2F` -> `/` and `%3B` -> `;`:
   decoding before splitting is the safe choice for deny rules, because some servers
   decode `%2F` into a separator and we would rather match too much than too little;
3. `;params` are dropped from every segment (`/admin;jsessionid=1` -> `/admin`, and
   Tomcat's `..;` becomes `..`);
4. empty segments (`//`) and `.` are removed, `..` removes the previous segment and never
   climbs above the root; a trailing `/` is kept.

Backslashes are left alone (HAProxy does too). Decoded bytes are latin-1 characters, like
every string of RequestInfo. The request is forwarded unchanged; only matching uses this.
"""

from __future__ import annotations

from urllib.parse import unquote

from lbproxy.http.request import RequestInfo

_NO_CACHE = object()


def normalize_path(raw: str) -> str:
    """Return the decoded, normalised form of a request path (see the module docstring)."""
    if raw[:1] != "/":
        scheme_end = raw.find("://")
        if scheme_end <= 0:
            return raw or "/"            # "*" (OPTIONS *) or empty: nothing to resolve
        slash = raw.find("/", scheme_end + 3)
        raw = raw[slash:] if slash >= 0 else "/"
    if "%" not in raw and ";" not in raw and "//" not in raw and "/." not in raw:
        return raw                       # the common case: already canonical
    decoded = unquote(raw, encoding="latin-1")
    out: list[str] = []
    segments = decoded.split("/")
    for segment in segments:
        segment = segment.partition(";")[0]
        if segment == "..":
            if out:
                out.pop()
        elif segment and segment != ".":
            out.append(segment)
    trailing = "/" if segments[-1].partition(";")[0] in ("", ".", "..") and out else ""
    return "/" + "/".join(out) + trailing


def request_norm_path(request: RequestInfo) -> str:
    """The normalised path of `request`, cached in its `norm_path` slot when it has one.

    The data plane's request carries `norm_path = None` (reset it when an action rewrites
    the path); other objects, like test fakes, are never written to.
    """
    cached = getattr(request, "norm_path", _NO_CACHE)
    if cached is None:
        cached = request.norm_path = normalize_path(request.path)  # type: ignore[attr-defined]
    elif cached is _NO_CACHE:
        return normalize_path(request.path)
    return cached  # type: ignore[return-value]
