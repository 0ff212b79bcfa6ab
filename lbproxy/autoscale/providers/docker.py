"""`type: docker`: one container per server, through the Docker Engine API on its unix socket.

A server is a container created from `image` with `env`, labelled with the pool and its
address so `list` (and so a restarted autoscaler) finds it again by label. The
container port is the first TCP port the image exposes. Its address is either
- on `network` (a user-defined network the proxy is attached to): the container's IP
  there and the container port; or
- published on `host` at a free port of `ports`, when no network is given.
It counts as created once that address accepts connections. `destroy` stops the
container (SIGTERM, then SIGKILL after STOP_GRACE) and removes it. CPU and memory come
from the one-shot stats API: CPU as percent of one core, memory as percent of the
container's limit (the machine's memory when unlimited), page cache excluded.

Calls used (API v1.41): GET /images/{image}/json, POST /containers/create,
POST /containers/{id}/start, GET /containers/{id}/json, POST /containers/{id}/stop,
DELETE /containers/{id}, GET /containers/json?filters=..., GET /containers/{id}/stats.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from lbproxy.autoscale.providers.base import (ApiProvider, Instance, ProviderError, Usage,
                                              free_port_in, http_json, log, wait_port)
from lbproxy.config.schema import ProviderConfig

DEFAULT_SOCKET = "/var/run/docker.sock"
API = "http://docker/v1.41"
POOL_LABEL = "lbproxy.autoscale.pool"
ADDRESS_LABEL = "lbproxy.autoscale.address"
START_TIMEOUT = 60.0    # seconds a new container gets to accept connections
STOP_GRACE = 10         # seconds Docker waits after SIGTERM before SIGKILL


class DockerProvider(ApiProvider):
    measures_usage = True
    _session: aiohttp.ClientSession
    _container_port: str        # "8080/tcp", from the image

    def __init__(self, config: ProviderConfig, pool: str) -> None:
        super().__init__(config, pool)
        self._starting: set[int] = set()    # host ports of creates in progress

    async def start(self) -> None:
        if not self.config.network and not self.config.ports:
            raise ProviderError("the docker provider needs `network` (reach containers on "
                                "it) or `ports` (publish them on `host`)")
        connector = aiohttp.UnixConnector(path=self.config.socket or DEFAULT_SOCKET)
        self._open(connector=connector)
        image = await http_json(self._session, "GET", f"{API}/images/{self.config.image}/json")
        exposed = (image.get("Config") or {}).get("ExposedPorts") or {}
        tcp = [key for key in exposed if key.endswith("/tcp")]
        if not tcp:
            raise ProviderError(f"image {self.config.image} exposes no TCP port (EXPOSE)")
        self._container_port = tcp[0]

    async def create(self) -> Instance:
        """A started container; concurrent creates reserve distinct host ports."""
        used = {int(i.address.rpartition(":")[2]) for i in await self.list()} | self._starting
        host_port = None if self.config.network else free_port_in(
            self.config.host, self.config.ports, used)
        if host_port is not None:
            self._starting.add(host_port)
        try:
            return await self._create(host_port)
        finally:
            self._starting.discard(host_port or 0)

    async def _create(self, host_port: int | None) -> Instance:
        body: dict[str, Any] = {
            "Image": self.config.image,
            "Env": [f"{k}={v}" for k, v in self.config.env.items()],
            "Labels": {POOL_LABEL: self.pool},
            "ExposedPorts": {self._container_port: {}},
            "HostConfig": {},
        }
        if self.config.network:
            body["HostConfig"]["NetworkMode"] = self.config.network
        else:
            body["HostConfig"]["PortBindings"] = {self._container_port: [
                {"HostIp": self.config.host, "HostPort": str(host_port)}]}
            body["Labels"][ADDRESS_LABEL] = f"{self.config.host}:{host_port}"
        created = await http_json(self._session, "POST", f"{API}/containers/create", json=body)
        cid = created["Id"]
        try:
            await http_json(self._session, "POST", f"{API}/containers/{cid}/start")
            address = await self._address(cid, host_port)
            host, _, port = address.rpartition(":")
            await wait_port(host, int(port), START_TIMEOUT)
        except BaseException:
            await self._remove(cid)
            raise
        log.info("autoscale %s: started container %s at %s", self.pool, cid[:12], address)
        return Instance(cid[:12], address)

    async def _address(self, cid: str, host_port: int | None) -> str:
        if host_port is not None:
            return f"{self.config.host}:{host_port}"
        info = await http_json(self._session, "GET", f"{API}/containers/{cid}/json")
        network = (info["NetworkSettings"]["Networks"] or {}).get(self.config.network) or {}
        if not network.get("IPAddress"):
            raise ProviderError(f"container {cid[:12]} has no address on {self.config.network}")
        return f"{network['IPAddress']}:{self._container_port.split('/')[0]}"

    async def destroy(self, instance_id: str) -> None:
        await self._remove(instance_id)
        log.info("autoscale %s: removed container %s", self.pool, instance_id)

    async def _remove(self, cid: str) -> None:
        await http_json(self._session, "POST", f"{API}/containers/{cid}/stop",
                        params={"t": str(STOP_GRACE)}, ok_missing=True)
        await http_json(self._session, "DELETE", f"{API}/containers/{cid}",
                        params={"force": "true"}, ok_missing=True)

    async def list(self) -> list[Instance]:
        """Running containers of this pool, oldest first; addresses from their labels or,
        on a network, from inspecting them."""
        filters = json.dumps({"label": [f"{POOL_LABEL}={self.pool}"],
                              "status": ["running"]})
        found = await http_json(self._session, "GET", f"{API}/containers/json",
                                params={"filters": filters})
        instances = []
        for item in sorted(found, key=lambda c: c.get("Created", 0)):
            address = (item.get("Labels") or {}).get(ADDRESS_LABEL)
            if address is None:
                address = await self._address(item["Id"], None)
            instances.append(Instance(item["Id"][:12], address))
        return instances

    async def usage(self, instance_id: str) -> Usage:
        stats = await http_json(self._session, "GET", f"{API}/containers/{instance_id}/stats",
                                params={"stream": "false"})
        cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
        cpu_delta = (cpu.get("cpu_usage", {}).get("total_usage", 0)
                     - pre.get("cpu_usage", {}).get("total_usage", 0))
        system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        cpus = cpu.get("online_cpus") or 1
        cpu_pct = 100.0 * cpus * cpu_delta / system_delta if system_delta > 0 else None
        memory = stats.get("memory_stats") or {}
        detail = memory.get("stats") or {}
        cache = detail.get("inactive_file", detail.get("cache", 0))
        limit = memory.get("limit")
        mem_pct = 100.0 * (memory.get("usage", 0) - cache) / limit if limit else None
        return Usage(cpu_pct, mem_pct)
