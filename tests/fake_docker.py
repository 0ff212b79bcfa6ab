"""A Docker Engine API subset on a unix socket, for the docker provider's tests.

It speaks the documented JSON of the calls the provider makes (v1.41 paths). A started
"container" is a real demo backend in the test's loop, listening where Docker would
publish it: on the HostIp:HostPort of its port binding, or, on a network, on
127.0.0.1 at the exposed port (the network's "IP" is 127.0.0.1), so the provider's wait
for the port and the tests' requests are real.
"""

from __future__ import annotations

import itertools
import json
import secrets
from typing import Any

from aiohttp import web

from lbproxy.demo.backend import DemoBackend, start_backend

PREFIX = "/v1.41"


class FakeDocker:
    def __init__(self, images: dict[str, int]) -> None:
        """`images`: name -> the TCP port it EXPOSEs."""
        self.images = images
        self.containers: dict[str, dict[str, Any]] = {}
        self.running: dict[str, DemoBackend] = {}
        self.calls: list[str] = []
        self._created = itertools.count(1_700_000_000)
        self.runner: web.AppRunner | None = None

    async def start(self, path: str) -> None:
        app = web.Application(middlewares=[self._log])
        r = app.router
        r.add_get(PREFIX + "/images/{name:.+}/json", self.image)
        r.add_post(PREFIX + "/containers/create", self.create)
        r.add_post(PREFIX + "/containers/{id}/start", self.start_container)
        r.add_get(PREFIX + "/containers/{id}/json", self.inspect)
        r.add_post(PREFIX + "/containers/{id}/stop", self.stop_container)
        r.add_delete(PREFIX + "/containers/{id}", self.remove)
        r.add_get(PREFIX + "/containers/json", self.list)
        r.add_get(PREFIX + "/containers/{id}/stats", self.stats)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.UnixSite(self.runner, path).start()

    async def close(self) -> None:
        for backend in self.running.values():
            await backend.close()
        if self.runner is not None:
            await self.runner.cleanup()

    @web.middleware
    async def _log(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls.append(f"{request.method} {request.path}")
        return await handler(request)

    @staticmethod
    def _missing(what: str) -> web.Response:
        return web.json_response({"message": f"No such {what}"}, status=404)

    def _find(self, ref: str) -> dict[str, Any] | None:
        return next((c for cid, c in self.containers.items() if cid.startswith(ref)), None)

    async def image(self, request: web.Request) -> web.Response:
        port = self.images.get(request.match_info["name"])
        if port is None:
            return self._missing(f"image: {request.match_info['name']}")
        return web.json_response({"Config": {"ExposedPorts": {f"{port}/tcp": {}}}})

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["Image"] not in self.images:
            return self._missing(f"image: {body['Image']}")
        cid = secrets.token_hex(32)
        self.containers[cid] = {"Id": cid, "Created": next(self._created), "State": "created",
                                "Labels": body.get("Labels") or {}, "body": body}
        return web.json_response({"Id": cid, "Warnings": []}, status=201)

    def _listen_port(self, container: dict[str, Any]) -> int:
        host_config = container["body"]["HostConfig"]
        if host_config.get("NetworkMode"):
            return self.images[container["body"]["Image"]]
        (binding,) = next(iter(host_config["PortBindings"].values()))
        return int(binding["HostPort"])

    async def start_container(self, request: web.Request) -> web.Response:
        container = self._find(request.match_info["id"])
        if container is None:
            return self._missing("container")
        env = dict(item.split("=", 1) for item in container["body"].get("Env") or [])
        self.running[container["Id"]] = await start_backend(
            "127.0.0.1", self._listen_port(container), env.get("NAME", "docker"))
        container["State"] = "running"
        return web.Response(status=204)

    async def inspect(self, request: web.Request) -> web.Response:
        container = self._find(request.match_info["id"])
        if container is None:
            return self._missing("container")
        network = container["body"]["HostConfig"].get("NetworkMode")
        networks = {network: {"IPAddress": "127.0.0.1"}} if network else {}
        return web.json_response({"Id": container["Id"], "State": {"Status": container["State"]},
                                  "NetworkSettings": {"Networks": networks}})

    async def stop_container(self, request: web.Request) -> web.Response:
        container = self._find(request.match_info["id"])
        if container is None:
            return self._missing("container")
        backend = self.running.pop(container["Id"], None)
        if backend is None:
            return web.Response(status=304)
        await backend.close()
        container["State"] = "exited"
        return web.Response(status=204)

    async def remove(self, request: web.Request) -> web.Response:
        container = self._find(request.match_info["id"])
        if container is None:
            return self._missing("container")
        if container["Id"] in self.running and request.query.get("force") != "true":
            return web.json_response({"message": "container is running"}, status=409)
        backend = self.running.pop(container["Id"], None)
        if backend is not None:
            await backend.close()
        del self.containers[container["Id"]]
        return web.Response(status=204)

    async def list(self, request: web.Request) -> web.Response:
        filters = json.loads(request.query.get("filters", "{}"))
        labels = [f.split("=", 1) for f in filters.get("label", [])]
        states = filters.get("status") or ["running"]
        found = [{"Id": c["Id"], "Created": c["Created"], "Labels": c["Labels"],
                  "State": c["State"]}
                 for c in self.containers.values()
                 if c["State"] in states and all(c["Labels"].get(k) == v for k, v in labels)]
        return web.json_response(found)

    async def stats(self, request: web.Request) -> web.Response:
        if self._find(request.match_info["id"]) is None:
            return self._missing("container")
        return web.json_response({
            "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000}, "system_cpu_usage": 20_000_000,
                          "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000},
                             "system_cpu_usage": 10_000_000},
            "memory_stats": {"usage": 300 << 20, "limit": 1 << 30,
                             "stats": {"inactive_file": 44 << 20}},
        })
