"""A Kubernetes API subset over HTTP on 127.0.0.1, for the kubernetes provider's tests.

One Deployment whose scale subresource drives a ReplicaSet-like set of pods: scaling up
adds pods (ready after `ready_after` EndpointSlice reads, as a readiness probe would),
scaling down deletes the pods with the lowest `controller.kubernetes.io/pod-deletion-cost`
first, newest first on ties, as the ReplicaSet controller does. Pods appear in the
EndpointSlice of the Service named like the Deployment. The metrics API is optional.
"""

from __future__ import annotations

import itertools
from typing import Any

from aiohttp import web

COST = "controller.kubernetes.io/pod-deletion-cost"


class FakeKube:
    def __init__(self, namespace: str, deployment: str, port: int = 8080,
                 metrics: bool = True, ready_after: int = 1) -> None:
        self.namespace, self.deployment, self.port = namespace, deployment, port
        self.metrics, self.ready_after = metrics, ready_after
        self.pods: dict[str, dict[str, Any]] = {}       # name -> {ip, annotations, reads}
        self.patches: list[tuple[str, Any]] = []
        self._serial = itertools.count(1)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        ns = f"/namespaces/{self.namespace}"
        deployment = f"/apis/apps/v1{ns}/deployments/{self.deployment}/scale"
        app = web.Application()
        r = app.router
        r.add_get(deployment, self.get_scale)
        r.add_patch(deployment, self.patch_scale)
        r.add_get(f"/apis/discovery.k8s.io/v1{ns}/endpointslices", self.slices)
        r.add_patch(f"/api/v1{ns}/pods/{{pod}}", self.patch_pod)
        r.add_get(f"/api/v1{ns}/pods/{{pod}}", self.get_pod)
        if self.metrics:
            r.add_get("/apis/metrics.k8s.io/v1beta1", self.metrics_group)
            r.add_get(f"/apis/metrics.k8s.io/v1beta1{ns}/pods/{{pod}}", self.pod_metrics)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def scale_to(self, replicas: int) -> None:
        while len(self.pods) < replicas:
            n = next(self._serial)
            self.pods[f"{self.deployment}-{n:05x}"] = {"ip": f"10.1.0.{n}", "annotations": {},
                                                      "reads": 0}
        while len(self.pods) > replicas:
            victim = min(reversed(self.pods), key=lambda p: int(
                self.pods[p]["annotations"].get(COST, 0)))
            del self.pods[victim]

    def _scale(self) -> web.Response:
        return web.json_response({"kind": "Scale", "spec": {"replicas": len(self.pods)},
                                  "status": {"replicas": len(self.pods)}})

    async def get_scale(self, request: web.Request) -> web.Response:
        return self._scale()

    async def patch_scale(self, request: web.Request) -> web.Response:
        if request.content_type != "application/merge-patch+json":
            return web.json_response({"message": "unsupported patch type"}, status=415)
        body = await request.json()
        self.patches.append(("scale", body))
        self.scale_to(body["spec"]["replicas"])
        return self._scale()

    async def slices(self, request: web.Request) -> web.Response:
        if request.query.get("labelSelector") != f"kubernetes.io/service-name={self.deployment}":
            return web.json_response({"items": []})
        endpoints = []
        for name, pod in self.pods.items():
            pod["reads"] += 1
            endpoints.append({"addresses": [pod["ip"]],
                              "conditions": {"ready": pod["reads"] > self.ready_after},
                              "targetRef": {"kind": "Pod", "name": name}})
        return web.json_response({"items": [{
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": "http", "port": self.port, "protocol": "TCP"}]}]})

    async def patch_pod(self, request: web.Request) -> web.Response:
        pod = self.pods.get(request.match_info["pod"])
        if pod is None:
            return web.json_response({"message": "pods not found"}, status=404)
        body = await request.json()
        self.patches.append((request.match_info["pod"], body))
        pod["annotations"].update(body["metadata"]["annotations"])
        return web.json_response({"metadata": {"annotations": pod["annotations"]}})

    async def get_pod(self, request: web.Request) -> web.Response:
        if request.match_info["pod"] not in self.pods:
            return web.json_response({"message": "pods not found"}, status=404)
        return web.json_response({"spec": {"containers": [{"name": "app", "resources": {
            "requests": {"cpu": "500m", "memory": "256Mi"}}}]}})

    async def metrics_group(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIResourceList", "groupVersion":
                                  "metrics.k8s.io/v1beta1"})

    async def pod_metrics(self, request: web.Request) -> web.Response:
        if request.match_info["pod"] not in self.pods:
            return web.json_response({"message": "not found"}, status=404)
        return web.json_response({"containers": [{"name": "app", "usage": {
            "cpu": "125000000n", "memory": "64Mi"}}]})
