"""The admin web server on `stats.bind`: stats page, CSV/JSON, /metrics, /health, runtime API.

An aiohttp Application run with AppRunner + TCPSite (not run_app), so it shares the
proxy's event loop and reads the live objects directly: no locks, no copies, and a
scrape sees counters between two data-plane callbacks. Access rules, as HAProxy's
`stats auth` / `stats admin`:

- /health and /metrics are always open (load balancers and Prometheus poll them);
- with `auth` configured, every other route needs those basic-auth credentials (401 with
  a `WWW-Authenticate` challenge otherwise), compared in constant time;
- writes (any method but GET/HEAD) also need `admin: true`, so without auth or admin they
  answer 403; a write from a browser page of another origin is refused too (basic auth is
  sent automatically, so a foreign page could otherwise post to the API).

Every error is JSON `{"error": "..."}`, including aiohttp's own 404 and 405 and a bug's 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from lbproxy.admin import api
from lbproxy.admin.base import (ENGINE, SAMPLER, STATS, ApiError, authenticated_user,
                                error_response, json_response, large_json_response,
                                large_response, viewer)
from lbproxy.admin.metrics import METRICS_TYPE, Scrapes
from lbproxy.admin.model import TICK, Sampler
from lbproxy.slicing import sliced
from lbproxy.admin.stats_csv import csv_lines, stat_rows
from lbproxy.admin.stats_page import render_page
from lbproxy.config.errors import ListenError
from lbproxy.config.schema import Address, StatsConfig

if TYPE_CHECKING:
    from lbproxy.runtime.engine import Engine

log = logging.getLogger("lbproxy.admin")

OPEN_PATHS = frozenset({"/health", "/metrics"})
READ_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD})
CHALLENGE = {"WWW-Authenticate": 'Basic realm="lbproxy"'}
NO_STORE = {hdrs.CACHE_CONTROL: "no-store"}
SHUTDOWN_TIMEOUT = 1.0    # seconds open admin connections (a browser's keep-alive) get on stop
SCRAPES = web.AppKey("scrapes", Scrapes)
# A worker's own admin app, on a private unix socket for the supervisor only (workers > 1):
# no authentication (the socket's directory is the access control), plus /internal routes.
INTERNAL = web.AppKey("internal", bool)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminServer:
    """Owns the admin app's runner; the engine calls start() and stop(). With `unix_path`
    it is a worker's internal app for the supervisor (see INTERNAL), else the public one."""

    def __init__(self, engine: Engine, unix_path: str | None = None) -> None:
        stats = engine.config.stats
        if stats is None and unix_path is not None:     # a worker without public stats
            stats = StatsConfig(bind=Address("", 0))
        if stats is None:
            raise ValueError("the configuration has no stats section")
        self.stats = stats
        self.unix_path = unix_path
        self.app = make_app(engine, stats, internal=unix_path is not None)
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        bind = self.stats.bind
        site: web.BaseSite = (
            web.UnixSite(runner, self.unix_path) if self.unix_path is not None
            else web.TCPSite(runner, bind.host or None, bind.port, reuse_address=True))
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ListenError(self.unix_path or bind, exc, " (stats)") from exc
        except BaseException:
            await runner.cleanup()
            raise
        self.runner = runner

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the admin server listens (host, port), for logs and tests."""
        return [address[:2] for address in self.runner.addresses] if self.runner else []

    async def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()


def make_app(engine: Engine, stats: StatsConfig, internal: bool = False) -> web.Application:
    app = web.Application(middlewares=[guard])
    app[ENGINE] = engine
    app[STATS] = stats
    app[INTERNAL] = internal
    app[SAMPLER] = Sampler(engine)
    app[SCRAPES] = Scrapes(engine)
    app.cleanup_ctx.append(sampling)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get(stats.uri, stats_page)
    app.router.add_get(stats.uri + ";csv", stats_csv)
    app.router.add_routes(api.routes)
    if internal:
        app.router.add_put("/internal/health", internal_health)
    return app


async def sampling(app: web.Application) -> AsyncIterator[None]:
    """Feed the sampler every TICK while the app runs (rates, recent response times)."""
    sampler = app[SAMPLER]

    async def sample_forever() -> None:
        while True:
            await sliced(sampler.tick())
            await asyncio.sleep(TICK)

    task = asyncio.get_running_loop().create_task(sample_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# --- access control and errors --------------------------------------------------------------

@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        authorize(request)
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.headers)
    except web.HTTPException as exc:      # the router's 404 / 405, as JSON like ours
        if exc.status < 400:
            raise
        allow = {"Allow": exc.headers[hdrs.ALLOW]} if hdrs.ALLOW in exc.headers else None
        return error_response(exc.status, exc.reason, allow)
    except Exception:                     # a bug: logged with its traceback, answered plainly
        log.exception("admin: %s %s failed", request.method, request.path)
        return error_response(500, "internal error (see the proxy's log)")


def authorize(request: web.Request) -> None:
    """Raise ApiError 401/403 unless the request may run."""
    if request.path in OPEN_PATHS or request.app[INTERNAL]:
        return
    stats = request.app[STATS]
    if stats.auth is not None:
        if authenticated_user(request, stats.auth) is None:
            raise ApiError(401, "authentication required", CHALLENGE)
    if request.method in READ_METHODS:
        return
    if stats.auth is None:
        raise ApiError(403, "runtime API writes need stats.auth and stats.admin: true")
    if not stats.admin:
        raise ApiError(403, "runtime API writes are disabled (stats.admin is false)")
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and origin.partition("://")[2] != request.host:
        raise ApiError(403, f"cross-origin write from {origin} refused")


# --- stats, metrics, health -----------------------------------------------------------------

async def internal_health(request: web.Request) -> web.Response:
    """The supervisor passes on what worker 0's health checks found (workers > 1), so
    servers are probed once, not once per worker."""
    body = await request.json()
    backend = request.app[ENGINE].backends.get(body.get("backend"))
    server = backend.server(body.get("server", "")) if backend is not None else None
    if server is None:
        raise ApiError(404, "no such backend or server")
    backend.set_health(server, bool(body.get("up")), str(body.get("reason", "")))
    if body.get("check"):
        server.check = str(body["check"])
    return json_response({"ok": True})


async def health(request: web.Request) -> web.Response:
    """200 while serving; 503 once a graceful stop began, so a balancer in front moves on."""
    if request.app[ENGINE].state.stopping:
        return web.Response(status=503, text="stopping")
    return web.Response(text="ok")


async def metrics(request: web.Request) -> web.StreamResponse:
    return await large_response(request, await request.app[SCRAPES].get(), METRICS_TYPE)


async def stats_page(request: web.Request) -> web.Response:
    """HTML by default; `?format=csv` and `?format=json` as HAProxy's stats URI takes them."""
    fmt = request.query.get("format", "html")
    if fmt == "csv":
        return await stats_csv(request)
    app = request.app
    if fmt == "json":
        return await large_json_response(request,
                                         await sliced(stat_rows(app[ENGINE], app[SAMPLER])))
    if fmt != "html":
        raise ApiError(400, f"unknown format {fmt!r} (expected html, csv or json)")
    stats = app[STATS]
    links = (stats.uri + ";csv", stats.uri + "?format=json", "/metrics")
    html = await sliced(render_page(app[ENGINE], app[SAMPLER], stats.refresh, links,
                                    controls=stats.admin and viewer(request) is not None))
    return await large_response(request, html, "text/html; charset=utf-8", NO_STORE)


async def stats_csv(request: web.Request) -> web.Response:
    rows = await sliced(stat_rows(request.app[ENGINE], request.app[SAMPLER]))
    return await large_response(request, await sliced(csv_lines(rows)),
                                "text/plain; charset=utf-8", NO_STORE)
