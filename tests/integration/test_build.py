"""setup.py builds the accelerator where it can and never fails an install where it
cannot: run on a one-module package beside a copy of it, with and without a compiler."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("Cython")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """setup.py beside an `lbproxy` package whose one module has a .pxd."""
    shutil.copy(ROOT / "setup.py", tmp_path / "setup.py")
    package = tmp_path / "lbproxy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tiny.py").write_text("def plus_one(x):\n    return x + 1\n")
    (package / "tiny.pxd").write_text("cpdef long plus_one(long x)\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "tiny"\nversion = "0"\n[tool.setuptools]\npackages = ["lbproxy"]\n')
    return tmp_path


def build(project: Path, **env: str) -> subprocess.CompletedProcess:
    """setup.py build_ext, whichever variant the suite runs on (the switch unset)."""
    inherited = {k: v for k, v in os.environ.items() if k != "LBPROXY_NO_EXTENSIONS"}
    return subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                          cwd=project, env={**inherited, **env}, capture_output=True,
                          text=True, timeout=120)


def compiled(project: Path) -> list[Path]:
    return list((project / "lbproxy").glob("tiny.*.so"))


def test_without_a_compiler_the_build_succeeds_as_pure_python(project):
    done = build(project, CC="/nonexistent/cc", LDSHARED="/nonexistent/cc")
    assert done.returncode == 0, done.stderr
    assert "not compiling the accelerator" in done.stderr
    assert compiled(project) == []


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler")
def test_with_a_compiler_the_module_is_compiled(project):
    done = build(project)
    assert done.returncode == 0, done.stderr
    assert "not compiling" not in done.stderr
    (extension,) = compiled(project)
    check = subprocess.run(
        [sys.executable, "-c", "import lbproxy.tiny as t; print(t.__file__, t.plus_one(41))"],
        cwd=project, capture_output=True, text=True, timeout=60)
    assert check.stdout.split() == [str(extension), "42"], check.stderr
