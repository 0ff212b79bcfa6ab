"""Helpers shared by the configuration tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from textwrap import dedent

import pytest

from lbproxy.config import ConfigError, load_config

Write = Callable[..., str]


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Write:
    """Write dedented YAML to NAME in a fresh current directory; returns NAME."""
    monkeypatch.chdir(tmp_path)

    def write_file(text: str, name: str = "lb.yaml") -> str:
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_text(dedent(text))
        return name
    return write_file


def errors(path: str, env: Mapping[str, str] | None = None) -> list[str]:
    """The error lines of loading `path`, which must fail."""
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {})
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors
