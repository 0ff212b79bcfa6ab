"""The autoscaler's only way into the proxy: its runtime API and /metrics over HTTP.

So the sidecar can drive a proxy on another machine, it never imports the proxy's live
objects. Every call has a short timeout: a proxy that does not answer costs one interval,
never a hung autoscaler. `ApiError` carries the HTTP status (0 when unreachable) and the
API's JSON `error` message.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any
from urllib.parse import quote

import aiohttp

from lbproxy.config.schema import AutoscaleApiConfig

log = logging.getLogger("lbproxy.autoscale")

TIMEOUT = 10.0    # seconds for one API call


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ProxyApi:
    def __init__(self, config: AutoscaleApiConfig) -> None:
        self.url = config.url.rstrip("/")
        headers = {}
        if config.username:
            pair = f"{config.username}:{config.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self._session = aiohttp.ClientSession(headers=headers,
                                              timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        self._status_endpoint = True     # until the proxy says it has none

    async def close(self) -> None:
        await self._session.close()

    async def _call(self, method: str, path: str, expect: tuple[int, ...],
                    **kwargs: Any) -> tuple[int, bytes]:
        url = self.url + path
        try:
            async with self._session.request(method, url, **kwargs) as response:
                body = await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ApiError(0, f"{method} {url}: {exc or type(exc).__name__}") from None
        if response.status not in expect:
            try:
                message = json.loads(body).get("error") or response.reason
            except (ValueError, AttributeError):
                message = body.decode(errors="replace")[:200] or response.reason
            raise ApiError(response.status, f"{method} {url}: {response.status} {message}")
        return response.status, body

    @staticmethod
    def _path(backend: str, server: str | None = None) -> str:
        path = f"/api/backends/{quote(backend, safe='')}"
        return path + f"/servers/{quote(server, safe='')}" if server is not None else path

    async def backend(self, name: str) -> dict[str, Any]:
        """`GET /api/backends/{name}`: the backend with its servers and counters."""
        _, body = await self._call("GET", self._path(name), (200,))
        return json.loads(body)

    async def metrics(self) -> str | None:
        """The /metrics page, or None when the proxy has none (404)."""
        status, body = await self._call("GET", "/metrics", (200, 404))
        return body.decode() if status == 200 else None

    async def add_server(self, backend: str, name: str, address: str) -> bool:
        """POST the server; False when a server of that name is already there (409)."""
        status, _ = await self._call("POST", self._path(backend) + "/servers", (201, 409),
                                     json={"name": name, "address": address})
        return status == 201

    async def remove_server(self, backend: str, name: str, drain: float) -> bool:
        """Ask the proxy to drain then remove `name`; False when it is not there (404)."""
        status, _ = await self._call("DELETE", self._path(backend, name), (202, 404),
                                     params={"drain": f"{drain:g}s"})
        return status == 202

    async def report_status(self, status: dict[str, Any]) -> None:
        """`POST /api/autoscale/status` for the stats page; a proxy without that
        endpoint (404/405) is not asked again."""
        if not self._status_endpoint:
            return
        code, _ = await self._call("POST", "/api/autoscale/status", (200, 201, 202, 204, 404,
                                                                     405), json=status)
        if code in (404, 405):
            self._status_endpoint = False
            log.info("autoscale: the proxy has no /api/autoscale/status; not reporting status")
