"""Cookie persistence as pure string functions (the backend applies them around a pick).

Modes, as in HAProxy's `cookie` directive (the value identifying a server is
`server.cookie`, its name unless configured):
- `insert`: lbproxy sets `NAME=<server.cookie>` on the first response from a server;
  a cookie of that name set by the server itself is removed. `indirect` removes the
  cookie from requests before they reach the server, which never sees it.
- `rewrite`: the server sets NAME itself; lbproxy rewrites its value to the server's id.
- `prefix`: the server sets its own cookie NAME (e.g. a session id); lbproxy prefixes
  its value with `<server.cookie>~` on the way out and strips the prefix on the way in.

`cfg` is the backend's CookieConfig (any object with its attributes will do): name,
mode, indirect, nocache, httponly, secure, max_age (seconds, 0 = session cookie), domain.
Whether the stuck server may be used (up, not in maint; drain still honoured) is the
backend's decision, not these helpers'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lbproxy.config.schema import CookieConfig
from lbproxy.http.request import RequestInfo

if TYPE_CHECKING:
    from lbproxy.backends.server import Server

INSERT = "insert"
REWRITE = "rewrite"
PREFIX = "prefix"
PREFIX_SEPARATOR = "~"


def server_id(cfg: CookieConfig, request: RequestInfo) -> str | None:
    """The server id the request's cookie carries, or None."""
    value = request.cookie(cfg.name)
    if value is None or cfg.mode != PREFIX:
        return value or None
    sid, separator, _ = value.partition(PREFIX_SEPARATOR)
    return sid if separator and sid else None


def response_headers(cfg: CookieConfig, server: Server,
                     sticky_id: str | None) -> list[tuple[str, str]]:
    """Headers to add to `server`'s response when the request carried `sticky_id`.

    Only insert mode adds any, and only when the client does not already hold the
    right value; `nocache` marks the response private so that no shared cache hands
    one client's cookie to others.
    """
    if cfg.mode != INSERT or sticky_id == server.cookie:
        return []
    attributes = [f"{cfg.name}={server.cookie}", "Path=/"]
    if cfg.domain:
        attributes.append(f"Domain={cfg.domain}")
    if cfg.max_age > 0:
        attributes.append(f"Max-Age={int(cfg.max_age)}")
    if cfg.httponly:
        attributes.append("HttpOnly")
    if cfg.secure:
        attributes.append("Secure")
    headers = [("Set-Cookie", "; ".join(attributes))]
    if cfg.nocache:
        headers.append(("Cache-Control", "private"))
    return headers


def rewrite_set_cookie(cfg: CookieConfig, value: str, server: Server) -> str | None:
    """A server's own `Set-Cookie` value as forwarded: rewritten, unchanged, or None to drop."""
    pair, separator, attributes = value.partition(";")
    name, equals, cookie_value = pair.partition("=")
    if not equals or name.strip() != cfg.name:
        return value
    if cfg.mode == INSERT:
        return None
    if cfg.mode == REWRITE:
        cookie_value = server.cookie
    else:
        cookie_value = f"{server.cookie}{PREFIX_SEPARATOR}{cookie_value.strip()}"
    return f"{cfg.name}={cookie_value}{separator}{attributes}"


def forward_cookie(cfg: CookieConfig, value: str) -> str | None:
    """A request's `Cookie` header value as forwarded to the server; None drops the header.

    insert + indirect: our cookie is removed. prefix: our prefix is removed so the
    server gets its own value back. Otherwise the value is unchanged.
    """
    strip = cfg.mode == INSERT and cfg.indirect
    if not strip and cfg.mode != PREFIX:
        return value
    kept = []
    for pair in value.split(";"):
        pair = pair.strip()
        name, _, cookie_value = pair.partition("=")
        if name == cfg.name:
            if strip:
                continue
            _, separator, original = cookie_value.partition(PREFIX_SEPARATOR)
            pair = f"{name}={original if separator else cookie_value}"
        if pair:
            kept.append(pair)
    return "; ".join(kept) or None
