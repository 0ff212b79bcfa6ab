"""`type: kubernetes`: servers are the ready pods of a Deployment, scaled through the API.

`create` raises the Deployment's replicas by one (PATCH on its scale subresource) and
returns the first ready pod it had not seen before, as listed by the EndpointSlices of
the Service named like the Deployment (`kubernetes.io/service-name=<deployment>`): a pod
is only handed to the proxy once Kubernetes itself calls it ready. `destroy` marks the
drained pod with the lowest `controller.kubernetes.io/pod-deletion-cost`, so the
ReplicaSet removes that pod and no other, then lowers the replicas by one.

CPU and memory come from the metrics API (metrics-server), as percent of the pod's
resource requests (limits when there are no requests), like the HPA. Without a metrics
API the provider says so at start and `usage` raises NotSupported.

Auth: in a pod, the service account's token and CA under SERVICE_ACCOUNT and the API
address from KUBERNETES_SERVICE_HOST/PORT; `api_url` overrides the address (tests, or
`kubectl proxy`), and then the token is sent only when the file exists.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp

from lbproxy.autoscale.providers.base import (ApiProvider, Instance, NotSupported,
                                              ProviderError, Usage, http_json, log)
from lbproxy.config.schema import ProviderConfig

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
READY_TIMEOUT = 180.0    # seconds a new pod gets to become ready (image pulls take a while)
READY_POLL = 1.0         # seconds between EndpointSlice reads while waiting
_SUFFIX = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_QUANTITY = re.compile(r"([0-9.eE+-]+?)(n|u|m|k|M|G|T|Ki|Mi|Gi|Ti)?")


def quantity(value: str) -> float:
    """A Kubernetes resource quantity ("250m", "1", "12345n", "128Mi") as a number."""
    match = _QUANTITY.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"not a quantity: {value!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2) or ""]


class KubernetesProvider(ApiProvider):
    ready_poll = READY_POLL
    _session: aiohttp.ClientSession

    def __init__(self, config: ProviderConfig, pool: str) -> None:
        super().__init__(config, pool)
        self.namespace = self.config.namespace or self._file("namespace") or "default"
        self._deployment = (f"/apis/apps/v1/namespaces/{self.namespace}/deployments/"
                            f"{self.config.deployment}")
        self._seen: dict[str, float] = {}    # pod -> when first seen ready: "oldest first"
        self._claimed: set[str] = set()      # pods create() returned or found at start
        self._scale_lock = asyncio.Lock()    # read-modify-write of the replica count
        self.measures_usage = False

    @staticmethod
    def _file(name: str) -> str | None:
        try:
            return (SERVICE_ACCOUNT / name).read_text().strip()
        except OSError:
            return None

    @staticmethod
    def _in_cluster_url() -> str:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get(
            "KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ProviderError("not in a Kubernetes pod (no KUBERNETES_SERVICE_HOST): "
                                "set the provider's api_url")
        return f"https://{host}:{port}"

    async def start(self) -> None:
        ca = SERVICE_ACCOUNT / "ca.crt"
        context = ssl.create_default_context(cafile=str(ca)) if ca.exists() else None
        self._open(base_url=self.config.api_url or self._in_cluster_url(),
                   connector=aiohttp.TCPConnector(ssl=context or True))
        self._claimed = {i.id for i in await self.list()}
        found = await self._call("GET", "/apis/metrics.k8s.io/v1beta1", ok_missing=True)
        self.measures_usage = found is not None
        if not self.measures_usage:
            log.warning("autoscale %s: no Kubernetes metrics API (metrics-server): "
                        "cpu_utilization and memory_utilization are unavailable", self.pool)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        token = self._file("token")      # re-read: projected tokens are rotated
        headers = {**kwargs.pop("headers", {})}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return await http_json(self._session, method, path, headers=headers, **kwargs)

    async def _scale_by(self, delta: int) -> int:
        async with self._scale_lock:
            scale = await self._call("GET", f"{self._deployment}/scale")
            replicas = max(0, int(scale["spec"].get("replicas", 0)) + delta)
            await self._call("PATCH", f"{self._deployment}/scale", headers=MERGE_PATCH,
                             json={"spec": {"replicas": replicas}})
        log.info("autoscale %s: deployment %s/%s scaled to %d replicas", self.pool,
                 self.namespace, self.config.deployment, replicas)
        return replicas

    async def create(self) -> Instance:
        await self._scale_by(+1)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            for instance in await self.list():
                if instance.id not in self._claimed:
                    self._claimed.add(instance.id)
                    return instance
            await asyncio.sleep(self.ready_poll)
        raise ProviderError(f"no new ready pod of {self.config.deployment} within "
                            f"{READY_TIMEOUT:g}s (it joins the pool once ready)")

    async def destroy(self, instance_id: str) -> None:
        await self._call("PATCH", f"/api/v1/namespaces/{self.namespace}/pods/{instance_id}",
                         headers=MERGE_PATCH, ok_missing=True,
                         json={"metadata": {"annotations": {COST_ANNOTATION: "-1000000"}}})
        await self._scale_by(-1)
        self._claimed.discard(instance_id)
        self._seen.pop(instance_id, None)

    async def list(self) -> list[Instance]:
        """Ready pods behind the deployment's Service, oldest (first seen) first."""
        slices = await self._call(
            "GET", f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices",
            params={"labelSelector": f"kubernetes.io/service-name={self.config.deployment}"})
        found: dict[str, str] = {}
        for item in slices.get("items", []):
            ports = [p["port"] for p in item.get("ports") or [] if p.get("protocol", "TCP")
                     == "TCP" and p.get("port")]
            if not ports:
                continue
            for endpoint in item.get("endpoints") or []:
                ref = endpoint.get("targetRef") or {}
                if ref.get("kind") != "Pod" or not endpoint.get("addresses"):
                    continue
                if (endpoint.get("conditions") or {}).get("ready") is False:
                    continue
                ip = endpoint["addresses"][0]
                found[ref["name"]] = f"[{ip}]:{ports[0]}" if ":" in ip else f"{ip}:{ports[0]}"
        now = time.monotonic()
        for pod in found:
            self._seen.setdefault(pod, now)
        return [Instance(pod, found[pod]) for pod in sorted(found, key=self._seen.__getitem__)]

    async def usage(self, instance_id: str) -> Usage:
        if not self.measures_usage:
            raise NotSupported("no Kubernetes metrics API")
        ns = self.namespace
        metrics = await self._call(
            "GET", f"/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{instance_id}",
            ok_missing=True)
        pod = await self._call("GET", f"/api/v1/namespaces/{ns}/pods/{instance_id}",
                               ok_missing=True)
        if metrics is None or pod is None:
            return Usage(None, None)
        used = {"cpu": 0.0, "memory": 0.0}
        for container in metrics.get("containers", []):
            for key in used:
                used[key] += quantity(container.get("usage", {}).get(key, "0"))
        sized = {"cpu": 0.0, "memory": 0.0}
        for container in pod["spec"].get("containers", []):
            resources = container.get("resources") or {}
            for key in sized:
                value = (resources.get("requests") or {}).get(key) or \
                    (resources.get("limits") or {}).get(key)
                sized[key] += quantity(value) if value else 0.0
        return Usage(*(100.0 * used[key] / sized[key] if sized[key] else None
                       for key in ("cpu", "memory")))
