"""The supervisor's admin server on `stats.bind` when `global.workers` > 1.

Every worker runs the ordinary admin app on a private unix socket. This server gives one
view of all of them, with the same routes and the same access rules as a single
process (the `guard` middleware of app.py):

- reads (stats page, CSV/JSON, /metrics, GET /api/...) ask every worker and merge the
  answers (lbproxy/admin/aggregate.py): counters are summed, shared state is taken once;
- writes (POST/PATCH/PUT/DELETE /api/...) go to every worker, so they all hold the same
  servers, states and weights; the answer is worker 0's.

The supervisor (lbproxy/runtime/workers.py) hands in its line to the workers and its
stop flag; this module knows nothing else of it.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from lbproxy.admin.aggregate import merge_json, merge_metrics, merge_rows, render_rows_page
from lbproxy.admin.app import INTERNAL, SHUTDOWN_TIMEOUT, guard
from lbproxy.admin.base import STATS, json_response
from lbproxy.admin.metrics import METRICS_TYPE
from lbproxy.admin.stats_csv import to_csv
from lbproxy.config.errors import ListenError
from lbproxy.config.schema import Address, StatsConfig

if TYPE_CHECKING:
    from lbproxy.runtime.worker_client import WorkerClient


class FanoutServer:
    def __init__(self, stats: StatsConfig | None, workers: WorkerClient,
                 stopping: asyncio.Event) -> None:
        self.public = stats is not None
        self.stats = stats or StatsConfig(bind=Address("", 0))
        self.workers = workers
        self.stopping = stopping
        app = web.Application(middlewares=[guard])
        app[STATS] = self.stats
        app[INTERNAL] = False
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get(self.stats.uri, self.stats_page)
        app.router.add_get(self.stats.uri + ";csv", self.stats_csv)
        app.router.add_route("*", "/api/{tail:.*}", self.api)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)

    async def start(self) -> None:
        """Serve stats.bind when the configuration has a stats section."""
        await self.runner.setup()
        if self.public:
            bind = self.stats.bind
            try:
                await web.TCPSite(self.runner, bind.host or None, bind.port,
                                  reuse_address=True).start()
            except OSError as exc:
                raise ListenError(bind, exc, " (stats)") from exc

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def _json_all(self, path: str, query: str = "") -> list[object] | web.Response:
        """Every worker's JSON for a GET, or the first failure as the response to give."""
        answers = await self.workers.ask_all("GET", path, query)
        for status, body, content_type in answers:
            if status != 200:
                return web.Response(status=status, body=body, content_type=content_type)
        return [json.loads(body) for _, body, _ in answers]

    # routes

    async def health(self, request: web.Request) -> web.Response:
        if self.stopping.is_set():
            return web.Response(status=503, text="stopping")
        return web.Response(text="ok")

    async def metrics(self, request: web.Request) -> web.Response:
        answers = await self.workers.ask_all("GET", "/metrics")
        text = merge_metrics([body.decode() for status, body, _ in answers if status == 200])
        return web.Response(body=text.encode(), headers={hdrs.CONTENT_TYPE: METRICS_TYPE})

    async def _rows(self) -> list[dict] | web.Response:
        rows = await self._json_all(self.stats.uri, "format=json")
        return rows if isinstance(rows, web.Response) else merge_rows(rows)

    async def stats_page(self, request: web.Request) -> web.Response:
        fmt = request.query.get("format", "html")
        if fmt == "csv":
            return await self.stats_csv(request)
        rows = await self._rows()
        if isinstance(rows, web.Response):
            return rows
        if fmt == "json":
            return json_response(rows)
        return web.Response(text=render_rows_page(rows, self.stats.refresh, self.workers.count),
                            content_type="text/html", headers={hdrs.CACHE_CONTROL: "no-store"})

    async def stats_csv(self, request: web.Request) -> web.Response:
        rows = await self._rows()
        if isinstance(rows, web.Response):
            return rows
        return web.Response(text=to_csv(rows), content_type="text/plain",
                            headers={hdrs.CACHE_CONTROL: "no-store"})

    async def api(self, request: web.Request) -> web.Response:
        if request.method in (hdrs.METH_GET, hdrs.METH_HEAD):
            values = await self._json_all(request.path, request.query_string)
            return values if isinstance(values, web.Response) else json_response(
                merge_json(values))
        answers = await self.workers.ask_all(request.method, request.path,
                                             request.query_string, await request.read())
        status, body, content_type = answers[0]
        return web.Response(status=status, body=body, content_type=content_type)
