"""The compiled accelerator (lbproxy/compiled.py, setup.py): which variant runs, the switch
back to pure Python, and the rule that a compiled module older than its source is not used.

.ci/run runs the suite twice: built (LBPROXY_EXPECT_COMPILED=1), then with
LBPROXY_NO_EXTENSIONS=1; test_the_expected_variant_runs fails if either run got the
other variant."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import lbproxy
from lbproxy import compiled
from lbproxy.proxy.client import ClientProtocol
from lbproxy.proxy.tls import c_termination
from lbproxy.proxy.upstream import UpstreamProtocol

REPO = Path(__file__).resolve().parents[2]


def _loaded_from(module: str) -> str:
    return sys.modules[module].__file__ if module in sys.modules else \
        __import__(module, fromlist=["_"]).__file__


def test_the_modules_are_those_with_a_pxd():
    declared = sorted(str(pxd.relative_to(REPO).with_suffix("")).replace(os.sep, ".")
                      for pxd in (REPO / "lbproxy").rglob("*.pxd"))
    assert declared == sorted(compiled.MODULES)


def test_the_expected_variant_runs():
    files = {module: _loaded_from(module) for module in compiled.MODULES}
    if os.environ.get("LBPROXY_NO_EXTENSIONS", "") not in ("", "0"):
        assert lbproxy.accelerated is False
        assert all(path.endswith(".py") for path in files.values()), files
        assert c_termination() is None              # TLS binds use asyncio's TLS
    elif os.environ.get("LBPROXY_EXPECT_COMPILED"):
        assert lbproxy.accelerated is True, files
        assert not any(path.endswith(".py") for path in files.values()), files
        assert c_termination() is not None          # TLS terminated in C
    else:          # a development checkout, built or not: the flag says what was loaded
        assert lbproxy.accelerated == all(not path.endswith(".py") for path in files.values())


def test_the_switch_gives_pure_python_in_a_new_process():
    code = ("import lbproxy, lbproxy.proxy.exchange as e; "
            "print(lbproxy.accelerated, e.__file__.endswith('.py'))")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "LBPROXY_NO_EXTENSIONS": "1"})
    assert done.stdout.split() == ["False", "True"], done.stderr


def test_each_module_can_be_the_first_imported():
    """Compiled, a module imports the modules of the types its .pxd names before its own
    body runs: a circle of those imports that needs a body not yet run fails only in the
    order that reaches it first (why lbproxy/proxy/phases.py exists). Each module is
    imported first in a new process, in this run's variant."""
    runs = {module: subprocess.Popen([sys.executable, "-c", f"import {module}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for module in compiled.MODULES}
    failed = {}
    for module, process in runs.items():
        _, err = process.communicate(timeout=60)
        if process.returncode:
            failed[module] = err.strip().splitlines()[-1:]
    assert failed == {}


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding module `m`'s sources (its compiled file is up to each test),
    compiled modules enabled whatever this run's environment says, in a checkout whose
    compiled set is complete."""
    monkeypatch.setattr(compiled, "DISABLED", False)
    monkeypatch.setattr(compiled, "CHECKOUT", True)
    monkeypatch.setattr(compiled, "_complete_here", lambda: True)
    (tmp_path / "m.py").write_text("")
    (tmp_path / "m.pxd").write_text("")
    return tmp_path


def _age(path: Path, seconds: float) -> None:
    stat = path.stat()
    os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


def test_a_compiled_module_newer_than_its_sources_is_left_to_the_default_finders(package):
    for source in ("m.py", "m.pxd"):
        _age(package / source, 10)
    (package / f"m{EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    assert compiled.SourceWhenStale.find_spec("lbproxy.m", [str(package)]) is None


@pytest.mark.parametrize("edited", ["m.py", "m.pxd"])
def test_a_compiled_module_older_than_its_sources_gives_way_to_the_py(package, edited):
    built = package / f"m{EXTENSION_SUFFIXES[0]}"
    built.write_bytes(b"")
    _age(built, 10)
    _age(package / ("m.pxd" if edited == "m.py" else "m.py"), 20)
    spec = compiled.SourceWhenStale.find_spec("lbproxy.m", [str(package)])
    assert spec is not None and spec.origin == str(package / "m.py")


def test_a_fresh_module_gives_way_to_its_py_when_the_compiled_set_is_not_complete(
        package, monkeypatch):
    """The compiled modules import each other's C types: all of them run compiled or none."""
    for source in ("m.py", "m.pxd"):
        _age(package / source, 10)
    (package / f"m{EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    monkeypatch.setattr(compiled, "_complete_here", lambda: False)
    spec = compiled.SourceWhenStale.find_spec("lbproxy.m", [str(package)])
    assert spec is not None and spec.origin == str(package / "m.py")


def test_the_compiled_set_is_complete_with_every_module_built_after_its_sources(
        tmp_path, monkeypatch):
    monkeypatch.setattr(compiled, "CHECKOUT", True)
    bases = [tmp_path.joinpath(*module.split(".")) for module in compiled.MODULES]
    for base in bases:
        base.parent.mkdir(parents=True, exist_ok=True)
        for suffix in (".py", ".pxd"):
            base.with_suffix(suffix).write_text("")
            _age(base.with_suffix(suffix), 10)
        base.with_suffix(EXTENSION_SUFFIXES[0]).write_bytes(b"")
    assert compiled.complete(str(tmp_path))
    edited = bases[-1].with_suffix(".py")
    edited.write_text("# edited after the build\n")
    assert not compiled.complete(str(tmp_path))
    monkeypatch.setattr(compiled, "CHECKOUT", False)      # a wheel: times say nothing
    assert compiled.complete(str(tmp_path))
    bases[0].with_suffix(EXTENSION_SUFFIXES[0]).unlink()  # a module whose build failed
    assert not compiled.complete(str(tmp_path))


def test_outside_a_checkout_the_compiled_module_is_taken_whatever_the_times(package,
                                                                            monkeypatch):
    """An installed wheel: its files carry the order they were unpacked in."""
    built = package / f"m{EXTENSION_SUFFIXES[0]}"
    built.write_bytes(b"")
    _age(built, 10)
    monkeypatch.setattr(compiled, "CHECKOUT", False)
    assert compiled.SourceWhenStale.find_spec("lbproxy.m", [str(package)]) is None


def test_this_checkout_is_one():
    assert compiled.CHECKOUT


def test_the_switch_gives_the_py_even_when_the_build_is_fresh(package, monkeypatch):
    for source in ("m.py", "m.pxd"):
        _age(package / source, 10)
    (package / f"m{EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    monkeypatch.setattr(compiled, "DISABLED", True)
    spec = compiled.SourceWhenStale.find_spec("lbproxy.m", [str(package)])
    assert spec is not None and spec.origin == str(package / "m.py")


def test_a_module_compiled_from_a_pyx_is_not_found_when_disabled_or_stale(tmp_path,
                                                                          monkeypatch):
    """It has no .py to fall back on (lbproxy.proxy.tls_layer): its callers do without."""
    monkeypatch.setattr(compiled, "DISABLED", False)
    monkeypatch.setattr(compiled, "CHECKOUT", True)
    (tmp_path / "m.pyx").write_text("")
    _age(tmp_path / "m.pyx", 10)
    built = tmp_path / f"m{EXTENSION_SUFFIXES[0]}"
    built.write_bytes(b"")
    assert compiled.SourceWhenStale.find_spec("lbproxy.m", [str(tmp_path)]) is None
    monkeypatch.setattr(compiled, "DISABLED", True)
    with pytest.raises(ModuleNotFoundError):
        compiled.SourceWhenStale.find_spec("lbproxy.m", [str(tmp_path)])
    monkeypatch.setattr(compiled, "DISABLED", False)
    _age(built, 20)                                     # the .pyx edited since the build
    with pytest.raises(ModuleNotFoundError):
        compiled.SourceWhenStale.find_spec("lbproxy.m", [str(tmp_path)])


def test_modules_never_compiled_and_other_packages_are_left_alone(package):
    assert compiled.SourceWhenStale.find_spec("lbproxy.m", [str(package)]) is None
    (package / f"m{EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    assert compiled.SourceWhenStale.find_spec("other.m", [str(package)]) is None


@pytest.mark.parametrize("protocol", [ClientProtocol, UpstreamProtocol])
def test_the_protocols_keep_every_method_of_asyncio_protocol(protocol):
    """They lost the asyncio.Protocol base (Cython cannot derive from it): the loop still
    finds every callback it may call."""
    expected = {name for name in dir(asyncio.Protocol) if not name.startswith("_")}
    assert expected <= set(dir(protocol))
