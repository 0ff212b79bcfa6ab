"""The runtime API client against a small aiohttp server speaking the documented API (docs/configuration.md)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from lbproxy.autoscale.api_client import ApiError, ProxyApi
from lbproxy.config.schema import AutoscaleApiConfig

AUTH = "Basic " + base64.b64encode(b"admin:secret").decode()


def fake_proxy(seen: list[tuple[str, str, Any]]) -> web.Application:
    async def record(request: web.Request) -> None:
        if request.headers.get("Authorization") != AUTH:
            raise web.HTTPUnauthorized(text='{"error": "authentication required"}')
        body = await request.json() if request.can_read_body else None
        seen.append((request.method, request.path_qs, body))

    async def backend(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"name": "app", "servers": []})

    async def add(request: web.Request) -> web.Response:
        await record(request)
        exists = (await request.json())["name"] == "taken"
        return web.json_response({"error": "exists"} if exists else {}, status=409 if exists
                                 else 201)

    async def remove(request: web.Request) -> web.Response:
        await record(request)
        gone = request.match_info["s"] == "gone"
        return web.json_response({}, status=404 if gone else 202)

    async def no_status(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"error": "not found"}, status=404)

    app = web.Application()
    app.router.add_post("/api/autoscale/status", no_status)
    app.router.add_get("/api/backends/{b}", backend)
    app.router.add_post("/api/backends/{b}/servers", add)
    app.router.add_delete("/api/backends/{b}/servers/{s}", remove)
    return app


def with_api(scenario: Callable[[ProxyApi, list], Awaitable[None]], password: str = "secret",
             ) -> list[tuple[str, str, Any]]:
    seen: list[tuple[str, str, Any]] = []

    async def main() -> None:
        runner = web.AppRunner(fake_proxy(seen))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        api = ProxyApi(AutoscaleApiConfig(url=f"http://127.0.0.1:{port}/", username="admin",
                                          password=password))
        try:
            await scenario(api, seen)
        finally:
            await api.close()
            await runner.cleanup()

    asyncio.run(main())
    return seen


def test_calls_follow_the_contract_with_basic_auth() -> None:
    async def scenario(api: ProxyApi, seen: list) -> None:
        assert (await api.backend("app"))["name"] == "app"
        assert await api.add_server("app", "app-as-9100", "127.0.0.1:9100") is True
        assert await api.add_server("app", "taken", "127.0.0.1:9101") is False
        assert await api.remove_server("app", "app-as-9100", 2.5) is True
        assert await api.remove_server("app", "gone", 30) is False
        assert await api.metrics() is None               # this proxy has no /metrics

    seen = with_api(scenario)
    assert seen[:3] == [("GET", "/api/backends/app", None),
                        ("POST", "/api/backends/app/servers",
                         {"name": "app-as-9100", "address": "127.0.0.1:9100"}),
                        ("POST", "/api/backends/app/servers",
                         {"name": "taken", "address": "127.0.0.1:9101"})]
    assert seen[3][:2] == ("DELETE", "/api/backends/app/servers/app-as-9100?drain=2.5s")


def test_status_endpoint_missing_is_asked_once() -> None:
    async def scenario(api: ProxyApi, seen: list) -> None:
        await api.report_status({"pool": "app"})
        await api.report_status({"pool": "app"})

    assert with_api(scenario) == [("POST", "/api/autoscale/status", {"pool": "app"})]


def test_errors_carry_the_status() -> None:
    async def scenario(api: ProxyApi, seen: list) -> None:
        with pytest.raises(ApiError) as caught:
            await api.backend("app")
        assert caught.value.status == 401

    with_api(scenario, password="wrong")


def test_unreachable_proxy_is_status_0() -> None:
    async def main() -> None:
        api = ProxyApi(AutoscaleApiConfig(url="http://127.0.0.1:9/"))
        try:
            with pytest.raises(ApiError) as caught:
                await api.backend("app")
            assert caught.value.status == 0
        finally:
            await api.close()

    asyncio.run(main())
