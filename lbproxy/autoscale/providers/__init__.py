"""Providers by `provider.type`: process (default), exec, docker, kubernetes."""

from __future__ import annotations

from lbproxy.autoscale.providers.base import Provider
from lbproxy.autoscale.providers.docker import DockerProvider
from lbproxy.autoscale.providers.exec import ExecProvider
from lbproxy.autoscale.providers.kubernetes import KubernetesProvider
from lbproxy.autoscale.providers.process import ProcessProvider
from lbproxy.config.schema import ProviderConfig

PROVIDERS: dict[str, type[Provider]] = {
    "process": ProcessProvider,
    "exec": ExecProvider,
    "docker": DockerProvider,
    "kubernetes": KubernetesProvider,
}


def make_provider(config: ProviderConfig, pool: str) -> Provider:
    return PROVIDERS[config.type](config, pool)
