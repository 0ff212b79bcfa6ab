"""The docker and kubernetes providers against local fakes of their APIs (tests/fake_*.py):
real HTTP over a unix socket and TCP on 127.0.0.1, no mocks of our own client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from lbproxy.autoscale.providers import make_provider
from lbproxy.autoscale.providers.base import Instance, NotSupported, ProviderError, Usage
from lbproxy.autoscale.providers.docker import POOL_LABEL, DockerProvider
from lbproxy.autoscale.providers.kubernetes import COST_ANNOTATION, KubernetesProvider, quantity
from lbproxy.config.schema import ProviderConfig
from tests.fake_docker import FakeDocker
from tests.fake_kube import FakeKube
from tests.harness import free_port, get


def with_docker(tmp_path: Path, scenario: Callable[[DockerProvider, FakeDocker], Awaitable[Any]],
                image_port: int = 8080, **config: Any) -> Any:
    async def main() -> Any:
        fake = FakeDocker({"demo:1": image_port})
        socket = str(tmp_path / "docker.sock")
        await fake.start(socket)
        settings = {"image": "demo:1", **config}
        provider = make_provider(ProviderConfig(type="docker", socket=socket, **settings),
                                 "app")
        try:
            await provider.start()
            return await scenario(provider, fake)
        finally:
            await provider.close()
            await fake.close()

    return asyncio.run(main())


async def fetch(address: str) -> bytes:
    return (await asyncio.to_thread(get, int(address.rpartition(":")[2]))).body


def test_docker_publishes_containers_on_host_ports_and_removes_them(tmp_path: Path) -> None:
    low = free_port()

    async def scenario(provider: DockerProvider, fake: FakeDocker) -> None:
        made = sorted(await asyncio.gather(provider.create(), provider.create()),
                      key=lambda i: i.address)
        assert len({i.address for i in made}) == 2
        assert all(low <= int(i.address.rpartition(":")[2]) <= low + 5 for i in made)
        assert await fetch(made[0].address) == b"hello from web\n"
        assert sorted(await provider.list(), key=lambda i: i.address) == made
        (container,) = [c for c in fake.containers.values() if c["Id"].startswith(made[0].id)]
        assert container["Labels"][POOL_LABEL] == "app"
        assert container["body"]["Env"] == ["NAME=web"]
        assert container["body"]["HostConfig"]["PortBindings"] == {
            "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": made[0].address[10:]}]}
        assert await provider.usage(made[0].id) == Usage(pytest.approx(40.0),
                                                         pytest.approx(25.0))
        await provider.destroy(made[0].id)
        assert await provider.list() == made[1:]
        assert len(fake.containers) == 1
        with pytest.raises(OSError):
            await fetch(made[0].address)
        await provider.destroy(made[0].id)       # already gone: not an error

    with_docker(tmp_path, scenario, ports=(low, low + 5), env={"NAME": "web"})


def test_docker_on_a_network_uses_the_container_address(tmp_path: Path) -> None:
    port = free_port()

    async def scenario(provider: DockerProvider, fake: FakeDocker) -> None:
        instance = await provider.create()
        assert instance.address == f"127.0.0.1:{port}"
        assert await provider.list() == [instance]
        assert "GET /v1.41/containers/" + next(iter(fake.containers)) + "/json" in fake.calls

    with_docker(tmp_path, scenario, image_port=port, network="backend-net")


def test_docker_refuses_an_image_without_a_port_or_a_missing_image(tmp_path: Path) -> None:
    async def nothing(provider: DockerProvider, fake: FakeDocker) -> None:
        raise AssertionError("started")

    with pytest.raises(ProviderError, match="needs `network`"):
        with_docker(tmp_path, nothing)
    with pytest.raises(ProviderError, match="404 No such image: other"):
        with_docker(tmp_path, nothing, ports=(1, 2), image="other")


def with_kube(scenario: Callable[[KubernetesProvider, FakeKube], Awaitable[Any]],
              replicas: int = 0, **fake_options: Any) -> Any:
    async def main() -> Any:
        fake = FakeKube("shop", "web", **fake_options)
        fake.scale_to(replicas)
        await fake.start()
        provider = make_provider(ProviderConfig(type="kubernetes", namespace="shop",
                                                deployment="web", api_url=fake.url), "app")
        provider.ready_poll = 0.01
        try:
            await provider.start()
            return await scenario(provider, fake)
        finally:
            await provider.close()
            await fake.close()

    return asyncio.run(main())


def test_kubernetes_scales_the_deployment_and_waits_for_a_ready_pod() -> None:
    async def scenario(provider: KubernetesProvider, fake: FakeKube) -> None:
        existing = await provider.list()
        assert existing == [Instance("web-00001", "10.1.0.1:8080")]
        made = await asyncio.gather(provider.create(), provider.create())
        assert sorted(made) == [Instance("web-00002", "10.1.0.2:8080"),
                                Instance("web-00003", "10.1.0.3:8080")]
        assert [p for p in fake.patches if p[0] == "scale"] == [
            ("scale", {"spec": {"replicas": 2}}), ("scale", {"spec": {"replicas": 3}})]
        assert await provider.list() == existing + sorted(made)
        await provider.destroy("web-00002")     # the middle one: not what a ReplicaSet picks
        assert sorted(fake.pods) == ["web-00001", "web-00003"]
        assert fake.patches[-2] == ("web-00002", {"metadata": {"annotations": {
            COST_ANNOTATION: "-1000000"}}})

    with_kube(scenario, replicas=1, ready_after=0)


def test_kubernetes_usage_is_percent_of_requests() -> None:
    async def scenario(provider: KubernetesProvider, fake: FakeKube) -> None:
        instance = await provider.create()
        assert await provider.usage(instance.id) == Usage(pytest.approx(25.0),
                                                          pytest.approx(25.0))
        assert await provider.usage("gone") == Usage(None, None)

    with_kube(scenario)


def test_kubernetes_without_metrics_api_says_not_supported() -> None:
    async def scenario(provider: KubernetesProvider, fake: FakeKube) -> None:
        assert provider.measures_usage is False
        with pytest.raises(NotSupported):
            await provider.usage("web-00001")

    with_kube(scenario, replicas=1, metrics=False)


@pytest.mark.parametrize(("text", "value"), [
    ("250m", 0.25), ("1", 1.0), ("125000000n", 0.125), ("64Mi", 64 * 2**20), ("1G", 1e9),
    ("1.5Gi", 1.5 * 2**30), ("500u", 0.0005)])
def test_kubernetes_quantities(text: str, value: float) -> None:
    assert quantity(text) == pytest.approx(value)


def test_kubernetes_outside_a_pod_needs_api_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    provider = make_provider(ProviderConfig(type="kubernetes", deployment="web"), "app")
    with pytest.raises(ProviderError, match="set the provider's api_url"):
        asyncio.run(provider.start())
