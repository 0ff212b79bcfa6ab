"""The process and exec providers, for real: demo backends started on free loopback ports,
scripts run through the shell, processes killed and state files read back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from lbproxy.autoscale.providers.base import Instance, ProviderError, StateFile
from lbproxy.autoscale.providers.exec import ExecProvider
from lbproxy.autoscale.providers.process import ProcessProvider
from lbproxy.config.schema import ProviderConfig
from tests.harness import free_port, get

DEMO = f"{sys.executable} -m lbproxy.demo.backend --host {{host}} --port {{port}} --name demo"


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


@pytest.fixture(autouse=True)
def no_strays(tmp_path: Path) -> Iterator[None]:
    """Whatever a failed test left in its state file is killed."""
    yield
    for record in StateFile("app", tmp_path).load():
        if "pid" in record and alive(record["pid"]):
            os.killpg(record["pid"], signal.SIGKILL)


def alive(pid: int) -> bool:
    """Running: present in /proc and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def process_provider(tmp_path: Path, command: str = DEMO, ports: int = 20,
                     **config: Any) -> ProcessProvider:
    low = free_port()
    return ProcessProvider(ProviderConfig(command=command, ports=(low, low + ports - 1),
                                          **config), "app", StateFile("app", tmp_path))


def test_process_create_serves_then_destroy_kills_the_group(tmp_path: Path) -> None:
    provider = process_provider(tmp_path)

    async def scenario() -> tuple[Instance, dict[str, Any], Any, Any]:
        await provider.start()
        instance = await provider.create()
        record = json.loads(provider._state.path.read_text())["servers"][0]
        first = await provider.usage(instance.id)
        await asyncio.sleep(0.1)
        second = await provider.usage(instance.id)
        response = await asyncio.to_thread(get, int(instance.address.rpartition(":")[2]))
        assert response.body == b"hello from demo\n"
        assert await provider.list() == [instance]
        await provider.destroy(instance.id)
        return instance, record, (first, second), await provider.list()

    instance, record, (first, second), after = run(scenario())
    assert instance.address == f"127.0.0.1:{instance.id}"
    assert record["address"] == instance.address and record["started"]
    assert first.cpu is None and 0 < first.memory < 100
    assert second.cpu is not None and second.cpu >= 0
    assert not alive(record["pid"]) and after == []
    assert not provider._state.path.exists()


def test_process_servers_get_distinct_ports_and_a_restart_adopts_them(tmp_path: Path) -> None:
    first = process_provider(tmp_path, keep_on_exit=True)
    assert first.stop_on_exit is False
    config = first.config

    async def scenario() -> tuple[list[Instance], list[Instance]]:
        await first.start()
        made = list(await asyncio.gather(first.create(), first.create()))
        second = ProcessProvider(config, "app", StateFile("app", tmp_path))
        with pytest.raises(ProviderError, match="another autoscaler manages this pool"):
            await second.start()
        await first.close()                        # the first autoscaler exits
        await second.start()
        adopted = await second.list()
        for instance in adopted:
            await second.destroy(instance.id)      # not its child: killed by pid group
        return made, adopted

    made, adopted = run(scenario())
    assert len({i.address for i in made}) == 2
    assert sorted(adopted) == sorted(made)
    for instance in made:
        with pytest.raises(OSError):
            get(int(instance.id))


def test_a_dead_process_is_neither_adopted_nor_listed(tmp_path: Path) -> None:
    provider = process_provider(tmp_path)

    async def scenario() -> list[Instance]:
        await provider.start()
        instance = await provider.create()
        os.killpg(provider._records[instance.id]["pid"], signal.SIGKILL)
        await asyncio.sleep(0.2)
        return await provider.list()

    assert run(scenario()) == []
    StateFile("app", tmp_path).save([{"id": "1", "address": "127.0.0.1:1", "pid": 1,
                                      "started": -5}])
    run(provider.start())
    assert provider._records == {}


def test_a_command_that_exits_fails_fast_and_leaves_nothing(tmp_path: Path) -> None:
    provider = process_provider(tmp_path, command=f"{sys.executable} -c 'raise SystemExit(3)'")
    with pytest.raises(ProviderError, match="exited while starting"):
        run(provider.create())
    assert provider._records == {}


def test_no_free_port_in_the_range(tmp_path: Path) -> None:
    provider = process_provider(tmp_path, ports=1)

    async def scenario() -> None:
        instance = await provider.create()
        try:
            with pytest.raises(ProviderError, match="no free port"):
                await provider.create()
        finally:
            await provider.destroy(instance.id)

    run(scenario())


def scripts(tmp_path: Path, port: int) -> ProviderConfig:
    log = tmp_path / "destroyed"
    create = tmp_path / "create.sh"
    create.write_text(f"#!/bin/sh\necho starting for $LBPROXY_POOL >&2\necho noise\n"
                      f"echo 127.0.0.1:{port}\n")
    destroy = tmp_path / "destroy.sh"
    destroy.write_text(f"#!/bin/sh\necho \"$1\" >> {log}\n")
    for script in (create, destroy):
        script.chmod(0o755)
    return ProviderConfig(type="exec", create=str(create), destroy=str(destroy))


def test_exec_create_reads_the_address_and_destroy_gets_it(
        tmp_path: Path, backends: Any) -> None:
    (backend,) = backends(1)
    config = scripts(tmp_path, backend.port)
    provider = ExecProvider(config, "app", StateFile("app", tmp_path))

    async def scenario() -> tuple[Instance, list[Instance]]:
        await provider.start()
        instance = await provider.create()
        await provider.close()
        again = ExecProvider(config, "app", StateFile("app", tmp_path))
        await again.start()
        adopted = await again.list()
        await again.destroy(instance.id)
        return instance, adopted

    instance, adopted = run(scenario())
    address = f"127.0.0.1:{backend.port}"
    assert instance == Instance(address, address) and adopted == [instance]
    assert (tmp_path / "destroyed").read_text() == address + "\n"


@pytest.mark.parametrize(("script", "error"), [
    ("echo no quota left >&2\nexit 2", "status 2: no quota left"),
    ("echo not-an-address", "printed 'not-an-address'"),
])
def test_exec_script_failures_say_why(tmp_path: Path, script: str, error: str) -> None:
    create = tmp_path / "create.sh"
    create.write_text(f"#!/bin/sh\n{script}\n")
    create.chmod(0o755)
    provider = ExecProvider(ProviderConfig(type="exec", create=str(create), destroy="true"),
                            "app", StateFile("app", tmp_path))
    with pytest.raises(ProviderError, match=error):
        run(provider.create())
