"""The runtime API: read backends and servers, add, drain, remove and retune servers, edit
map files, reload.

Handlers validate everything before changing anything (a bad PATCH changes nothing),
then call the Backend's mutation methods, which notify balancers and listeners. Input
follows the config's rules (`parse_address`, `check_name`, weight 0-256), so a server
added here looks exactly like one from the YAML. Every change logs one audit line with
who asked and from where. Authentication and the admin switch are enforced by the
app's middleware before a handler runs.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping
from typing import TypeVar

from aiohttp import web

from lbproxy.admin.base import (ENGINE, SAMPLER, ApiError, json_response, large_json_response,
                                viewer)
from lbproxy.admin.model import backend_json, server_json
from lbproxy.slicing import sliced
from lbproxy.backends.backend import Backend
from lbproxy.backends.server import ADMIN_STATES, Server
from lbproxy.config.backend import MAX_WEIGHT
from lbproxy.config.durations import parse_address, parse_duration
from lbproxy.config.fields import check_name
from lbproxy.config.schema import ServerConfig
from lbproxy.proxy.cache_store import Cache
from lbproxy.routing.maps import MapFile
from lbproxy.tables.stick_table import StickTable

log = logging.getLogger("lbproxy.api")

DEFAULT_DRAIN = 30.0     # seconds a DELETE without ?drain= lets in-flight requests finish
NEW_SERVER_KEYS = ("name", "address", "weight", "cookie")
PATCH_KEYS = ("state", "weight")
T = TypeVar("T")

routes = web.RouteTableDef()


def _named(found: Mapping[str, T], name: str, what: str) -> T:
    """The `what` (a backend, a stick table, a cache) called `name`; 404 when none is."""
    item = found.get(name)
    if item is None:
        raise ApiError(404, f"no {what} {name!r}")
    return item


def _backend(request: web.Request) -> Backend:
    return _named(request.app[ENGINE].backends, request.match_info["backend"], "backend")


def _server(request: web.Request) -> tuple[Backend, Server]:
    backend = _backend(request)
    name = request.match_info["server"]
    server = backend.server(name)
    if server is None:
        raise ApiError(404, f"backend {backend.name!r} has no server {name!r}")
    return backend, server


async def _body(request: web.Request, allowed: tuple[str, ...]) -> dict[str, object]:
    """The JSON object in the body, refusing keys outside `allowed` as the config does."""
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(400, f"unknown key {unknown[0]!r} (expected one of: {', '.join(allowed)})")
    return body


def _weight(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WEIGHT:
        raise ApiError(400, f"weight must be an integer from 0 to {MAX_WEIGHT}")
    return value


def new_server_config(body: Mapping[str, object]) -> ServerConfig:
    """A ServerConfig from a POST body, with the config file's rules and messages."""
    name, address, cookie = body.get("name"), body.get("address"), body.get("cookie")
    if not isinstance(name, str):
        raise ApiError(400, "name is required (a string)")
    if address is None:
        raise ApiError(400, "address is required, e.g. '127.0.0.1:9001'")
    if cookie is not None and (not isinstance(cookie, str) or not cookie.strip()):
        raise ApiError(400, "cookie must be a non-empty string")
    try:
        check_name(name)
        parsed = parse_address(address, allow_unix=True)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    weight = _weight(body["weight"]) if "weight" in body else 1
    return ServerConfig(name=name, address=parsed, weight=weight, cookie=cookie,
                        where="runtime API")


def _audit(request: web.Request, what: str) -> None:
    log.info("api: %s (by %s from %s)", what, viewer(request) or "-", request.remote)


@routes.get("/api/backends")
async def list_backends(request: web.Request) -> web.Response:
    sampler = request.app[SAMPLER]
    return await large_json_response(request, {"backends": [
        await sliced(backend_json(backend, sampler))
        for backend in list(request.app[ENGINE].backends.values())]})


@routes.get("/api/backends/{backend}")
async def get_backend(request: web.Request) -> web.Response:
    return await large_json_response(
        request, await sliced(backend_json(_backend(request), request.app[SAMPLER])))


@routes.get("/api/backends/{backend}/servers/{server}")
async def get_server(request: web.Request) -> web.Response:
    _, server = _server(request)
    return json_response(server_json(server, request.app[SAMPLER].recent(server)))


@routes.post("/api/backends/{backend}/servers")
async def add_server(request: web.Request) -> web.Response:
    """201 with the new server. With health checks it starts CHECKING and gets traffic
    only once the checks pass; without, it is UP at once."""
    backend = _backend(request)
    config = new_server_config(await _body(request, NEW_SERVER_KEYS))
    if backend.server(config.name) is not None:
        raise ApiError(409, f"backend {backend.name!r} already has a server {config.name!r}")
    server = backend.add_server(config, up=backend.config.health_check is None)
    _audit(request, f"backend {backend.name}: added server {server.name} ({server.address}, "
                    f"weight {server.config_weight})")
    location = f"/api/backends/{backend.name}/servers/{server.name}"
    return json_response(server_json(server, request.app[SAMPLER].recent(server)), 201,
                         headers={"Location": location})


@routes.delete("/api/backends/{backend}/servers/{server}")
async def remove_server(request: web.Request) -> web.Response:
    """202: the server drains (no new requests) and is removed once idle or after `drain`."""
    backend, server = _server(request)
    try:
        drain = parse_duration(request.query.get("drain", DEFAULT_DRAIN))
    except ValueError as exc:
        raise ApiError(400, f"drain: {exc}") from None
    backend.remove_server(server, drain)
    _audit(request, f"backend {backend.name}: removing server {server.name} (drain {drain:g}s)")
    return json_response({"removing": server.name, "drain": drain}, 202)


@routes.patch("/api/backends/{backend}/servers/{server}")
async def update_server(request: web.Request) -> web.Response:
    backend, server = _server(request)
    body = await _body(request, PATCH_KEYS)
    if not body:
        raise ApiError(400, f"nothing to change (expected one of: {', '.join(PATCH_KEYS)})")
    state = body.get("state")
    if "state" in body and state not in ADMIN_STATES:
        raise ApiError(400, f"state must be one of: {', '.join(ADMIN_STATES)}")
    weight = _weight(body["weight"]) if "weight" in body else None
    if isinstance(state, str):
        backend.set_admin(server, state)
    if weight is not None:
        backend.set_weight(server, weight)
    changes = ", ".join(f"{key} {value}" for key, value in body.items())
    _audit(request, f"backend {backend.name}: server {server.name} set {changes}")
    return json_response(server_json(server, request.app[SAMPLER].recent(server)))


TOP_KEYS = 20   # keys shown per table: enough to spot abusers, bounded for large tables


@routes.get("/api/tables")
async def tables(request: web.Request) -> web.Response:
    return json_response({"tables": [_table_json(table, None) for table in
                                     request.app[ENGINE].tables.values()]})


@routes.get("/api/tables/{name}")
async def table(request: web.Request) -> web.Response:
    """A stick table: its settings, how many entries it holds, and the top keys by an
    item (`?by=http_req_rate`, default the first item it stores), with every item."""
    found = _named(request.app[ENGINE].tables, request.match_info["name"], "stick table")
    items = [item.name for item in found.config.store]
    by = request.query.get("by", items[0] if items else None)
    if by is not None and by not in items:
        raise ApiError(400, f"by must be one of: {', '.join(items)}")
    return json_response(_table_json(found, by))


def _table_json(table: StickTable, by: str | None) -> dict[str, object]:
    config = table.config
    body: dict[str, object] = {
        "name": config.name, "type": config.type, "size": config.size,
        "expire": config.expire, "entries": len(table),
        "store": [item.name if item.period is None else f"{item.name}({item.period:g}s)"
                  for item in config.store]}
    if by is not None:
        body["by"] = by
        body["top"] = []
        for key, _ in table.top(TOP_KEYS, by):
            entry = table.get(key)
            if entry is not None:
                body["top"].append({"key": str(key), **{item.name: entry.get(item.name)
                                                        for item in config.store}})
    return body


def _cache(request: web.Request) -> Cache:
    return _named(request.app[ENGINE].caches, request.match_info["name"], "cache")


@routes.get("/api/caches")
async def caches(request: web.Request) -> web.Response:
    return json_response({"caches": [{"name": name, **cache.stats()}
                                     for name, cache in request.app[ENGINE].caches.items()]})


@routes.get("/api/caches/{name}")
async def cache_stats(request: web.Request) -> web.Response:
    return json_response(_cache(request).stats())


@routes.delete("/api/caches/{name}")
async def purge_cache(request: web.Request) -> web.Response:
    """Every entry, or with `?host=H&path=P` every variant of one URL (H without its
    port, P with its query)."""
    cache = _cache(request)
    host, path = request.query.get("host"), request.query.get("path")
    if host is None and path is None:
        purged = cache.purge()
    elif host and path and path.startswith("/"):
        purged = cache.purge_url(host.lower(), path.encode("latin-1", "replace"))
    else:
        raise ApiError(400, "give both host and path (starting with /), or neither")
    _audit(request, f"cache {cache.name}: purged {purged} entries"
                    + (f" of {host}{path}" if host else ""))
    return json_response({"purged": purged})


MAP_PAGE = 1000           # entries per page of GET /api/maps/{name} unless ?limit= says
MAX_MAP_PAGE = 10000      # ... and at most: a 100,000-entry map is read in pages


def _map(request: web.Request) -> MapFile:
    """The loaded map file the URL names by its base name (409 when two share it)."""
    name = request.match_info["name"]
    found = request.app[ENGINE].maps.named(name)
    if not found:
        raise ApiError(404, f"no map file {name!r} is loaded")
    if len(found) > 1:
        paths = ", ".join(sorted(file.path for file in found))
        raise ApiError(409, f"several loaded map files are named {name!r} ({paths}): "
                            "give them different names to edit them here")
    return found[0]


def _latin(text: str) -> str:
    """JSON or URL text as map keys and values hold it (latin-1 view of UTF-8 bytes)."""
    return text.encode("utf-8").decode("latin-1")


def _shown(text: str) -> str:
    return text.encode("latin-1").decode("utf-8", "replace")


def _map_json(found: MapFile) -> dict[str, object]:
    return {"name": found.name, "path": found.path, "size": len(found.entries),
            "kinds": list(found.kinds), "edits": found.edits}


def _count(request: web.Request, key: str, default: int, most: int) -> int:
    text = request.query.get(key)
    if text is None:
        return default
    if not text.isdigit() or int(text) > most:
        raise ApiError(400, f"{key} must be an integer from 0 to {most}")
    return int(text)


@routes.get("/api/maps")
async def maps(request: web.Request) -> web.Response:
    return json_response({"maps": [_map_json(found) for found in
                                   request.app[ENGINE].maps.files.values()]})


@routes.get("/api/maps/{name}")
async def map_entries(request: web.Request) -> web.Response:
    """A page of entries in file order: `?offset=0&limit=1000`; `next` is the next page."""
    found = _map(request)
    offset = _count(request, "offset", 0, len(found.entries))
    limit = _count(request, "limit", MAP_PAGE, MAX_MAP_PAGE)
    page = itertools.islice(found.entries.items(), offset, offset + limit)
    after = offset + limit
    return json_response({
        **_map_json(found), "offset": offset,
        "entries": [{"key": _shown(key), "value": _shown(value)} for key, value in page],
        "next": (f"/api/maps/{found.name}?offset={after}&limit={limit}"
                 if after < len(found.entries) else None)})


@routes.get("/api/maps/{name}/{key:.+}")
async def map_entry(request: web.Request) -> web.Response:
    found = _map(request)
    key = _latin(request.match_info["key"])
    value = found.entries.get(key)
    if value is None:
        raise ApiError(404, f"map {found.name!r} has no key {_shown(key)!r}")
    return json_response({"name": found.name, "key": _shown(key), "value": _shown(value)})


@routes.put("/api/maps/{name}/{key:.+}")
async def set_map_entry(request: web.Request) -> web.Response:
    """Body `{"value": "..."}`: 201 for a new key (last in file order), 200 for a new
    value. The file is not written: a reload reads it again and drops the edit."""
    found = _map(request)
    body = await _body(request, ("value",))
    value = body.get("value")
    if not isinstance(value, str):
        raise ApiError(400, "value is required (a string)")
    key = _latin(request.match_info["key"])
    try:
        new = found.set(key, _latin(value))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    _audit(request, f"map {found.name}: {'added' if new else 'set'} {_shown(key)} = {value}")
    return json_response({"name": found.name, "key": _shown(key),
                          "value": _shown(found.entries[key])}, 201 if new else 200)


@routes.delete("/api/maps/{name}/{key:.+}")
async def delete_map_entry(request: web.Request) -> web.Response:
    found = _map(request)
    key = _latin(request.match_info["key"])
    if not found.delete(key):
        raise ApiError(404, f"map {found.name!r} has no key {_shown(key)!r}")
    _audit(request, f"map {found.name}: deleted {_shown(key)}")
    return json_response({"name": found.name, "key": _shown(key), "deleted": True})


@routes.post("/api/autoscale/status")
async def autoscale_status(request: web.Request) -> web.Response:
    """The autoscaler reports each decision, so the stats page and /metrics show it."""
    body = await _body(request, ("pool", "current", "desired", "last_decision"))
    pool, current, desired = body.get("pool"), body.get("current"), body.get("desired")
    decision = body.get("last_decision") or {}
    if not isinstance(pool, str) or not pool or len(pool) > 200:
        raise ApiError(400, "pool must be a non-empty string")
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 100_000
               for n in (current, desired)):
        raise ApiError(400, "current and desired must be integers from 0 to 100000")
    if not isinstance(decision, dict):
        raise ApiError(400, "last_decision must be an object")
    request.app[ENGINE].autoscale[pool] = {
        "current": current, "desired": desired, "reported": time.time(),
        "action": str(decision.get("action", "")), "reason": str(decision.get("reason", ""))}
    return json_response({"pool": pool}, 202)


@routes.get("/api/autoscale")
async def autoscale_pools(request: web.Request) -> web.Response:
    return json_response({"pools": request.app[ENGINE].autoscale})


@routes.post("/api/reload")
async def reload(request: web.Request) -> web.Response:
    """Same as SIGHUP: 200 when the new config is live, 400 with its errors when the old one
    keeps running."""
    errors = await request.app[ENGINE].reload()
    _audit(request, "reload " + ("failed: " + "; ".join(errors) if errors else "done"))
    if errors:
        return json_response({"errors": errors}, 400)
    return json_response({"reloaded": True})
