"""What every admin handler shares: typed app keys for the live state, JSON errors, and
who is asking.

Kept apart from app.py so the route modules (api.py, the stats handlers) and the server
that mounts them import it without importing each other.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from aiohttp import BasicAuth, hdrs, web

from lbproxy.admin.model import Sampler
from lbproxy.slicing import json_text, sliced
from lbproxy.config.schema import AuthConfig, StatsConfig

if TYPE_CHECKING:
    from lbproxy.runtime.engine import Engine

ENGINE: web.AppKey[Engine] = web.AppKey("engine")
SAMPLER = web.AppKey("sampler", Sampler)
STATS = web.AppKey("stats", StatsConfig)


class ApiError(Exception):
    """An error the client caused or may act on; the middleware answers it as JSON."""

    def __init__(self, status: int, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def json_response(data: object, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(data, indent=1) + "\n", status=status,
                        content_type="application/json", headers=headers)


async def large_json_response(data: object) -> web.Response:
    """JSON that grows with the number of servers: compact, and encoded in slices so the
    event loop keeps serving traffic meanwhile."""
    return web.Response(text=await sliced(json_text(data)) + "\n",
                        content_type="application/json")


def error_response(status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    return json_response({"error": message}, status, headers)


def authenticated_user(request: web.Request, auth: AuthConfig) -> str | None:
    """The user name when the request carries `auth`'s basic-auth credentials."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        return None
    try:
        given = BasicAuth.decode(header, encoding="utf-8")
    except ValueError:
        return None
    # both comparisons always run: the time taken says nothing about which part was wrong
    user_ok = hmac.compare_digest(given.login.encode(), auth.username.encode())
    password_ok = hmac.compare_digest(given.password.encode(), auth.password.encode())
    return given.login if user_ok and password_ok else None


def viewer(request: web.Request) -> str | None:
    """Who is asking, for audit lines and the page's admin controls; None without auth.
    Re-checked here rather than stored on the request: it costs two digest compares."""
    auth = request.app[STATS].auth
    return None if auth is None else authenticated_user(request, auth)
