"""load_checked_off_loop: a large configuration is read by a child process and comes back
equal to one read in place; its errors keep their file:line."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from lbproxy.config.errors import ConfigError
from lbproxy.runtime import validate
from lbproxy.runtime.validate import OFF_LOOP_BYTES, load_checked, load_checked_off_loop


def large_config(path: Path, servers: int, weight: str = "1") -> Path:
    lines = ["frontends:", "  web:", '    bind: ["127.0.0.1:18080"]',
             "    default_backend: app", "backends:", "  app:", "    servers:"]
    lines += [f"      - {{name: s{n}, address: 127.0.0.1:{20000 + n % 40000}, "
              f"weight: {weight}}}" for n in range(servers)]
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size >= OFF_LOOP_BYTES
    return path


def test_a_large_configuration_read_in_a_child_equals_one_read_here(tmp_path: Path) -> None:
    path = large_config(tmp_path / "big.yaml", 5000)
    from_child = asyncio.run(load_checked_off_loop(path))
    assert from_child == load_checked(path)
    assert len(from_child.backends["app"].servers) == 5000


def test_errors_of_a_large_configuration_come_back_with_file_and_line(tmp_path: Path) -> None:
    path = large_config(tmp_path / "big.yaml", 5000, weight="heavy")
    with pytest.raises(ConfigError) as caught:
        asyncio.run(load_checked_off_loop(path))
    assert f"{path}:8:" in caught.value.errors[0]
    assert "weight" in caught.value.errors[0]


def test_no_child_runs_for_a_small_configuration(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = large_config(tmp_path / "big.yaml", 5000)
    path.write_text("\n".join(path.read_text().splitlines()[:9]) + "\n")

    async def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("a child was started for a small file")

    monkeypatch.setattr(validate.asyncio, "create_subprocess_exec", no_child)
    assert asyncio.run(load_checked_off_loop(path)) == load_checked(path)


def test_the_gil_changes_hands_more_often_while_a_thread_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = large_config(tmp_path / "big.yaml", 5000)
    path.write_text("\n".join(path.read_text().splitlines()[:9]) + "\n")
    seen = []

    def reading(*args: object) -> object:
        seen.append(sys.getswitchinterval())
        return load_checked(*args)

    monkeypatch.setattr(validate, "load_checked", reading)
    before = sys.getswitchinterval()
    asyncio.run(load_checked_off_loop(path))
    assert seen == [validate.SWITCH] and sys.getswitchinterval() == before != validate.SWITCH
