"""What every admin handler shares: typed app keys for the live state, JSON errors, long
answers written piece by piece, and who is asking.

Kept apart from app.py so the route modules (api.py, the stats handlers) and the server
that mounts them import it without importing each other.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from aiohttp import BasicAuth, hdrs, web

from lbproxy.admin.model import Sampler
from lbproxy.config.schema import AuthConfig, StatsConfig
from lbproxy.slicing import json_parts, mapped, sliced

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


PIECE = 256 * 1024    # bytes of a long answer handed to the transport at a time


async def large_response(request: web.Request, parts: Sequence[str | bytes],
                         content_type: str,
                         headers: Mapping[str, str] | None = None) -> web.StreamResponse:
    """An answer that grows with the number of servers (megabytes at 5,000), given in
    parts: encoded in slices, then written a piece at a time with a pass through the
    event loop after each, so neither one copy of the whole text nor one write of it
    holds traffic (each took 10-20 ms)."""
    body = await sliced(mapped(parts, _encoded))
    response = web.StreamResponse(headers=headers)
    response.headers[hdrs.CONTENT_TYPE] = content_type
    response.content_length = sum(map(len, body))
    await response.prepare(request)
    if request.method == hdrs.METH_HEAD:
        body = []                        # the length, not the bytes
    piece: list[bytes] = []
    size = 0
    for part in body:
        piece.append(part)
        size += len(part)
        if size >= PIECE:
            await response.write(b"".join(piece))
            await asyncio.sleep(0)
            piece.clear()
            size = 0
    if piece:
        await response.write(b"".join(piece))
    await response.write_eof()
    return response


def _encoded(part: str | bytes) -> bytes:
    return part.encode() if isinstance(part, str) else part


async def large_json_response(request: web.Request, data: object) -> web.StreamResponse:
    """JSON that grows with the number of servers: compact, and built in slices."""
    parts: list[str] = []
    await sliced(json_parts(data, parts))
    parts.append("\n")
    return await large_response(request, parts, "application/json; charset=utf-8")


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
