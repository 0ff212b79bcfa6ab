"""The optional compiled accelerator: pure Python whenever it cannot be built.

Every lbproxy module with a Cython declarations file beside it (lbproxy/proxy/client.pxd
beside client.py, ...) is compiled by Cython from its unchanged .py source, the .pxd
adding C types to its classes (attributes as struct fields, C calls between methods).
The .py files stay the implementation: without Cython, without a C compiler, on any
build failure, or with LBPROXY_NO_EXTENSIONS=1, the package installs as pure Python and
behaves the same (README, "Compiled accelerator").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DIRECTIVES = {
    "language_level": 3,
    # annotations are for readers and mypy: the types Cython uses are in the .pxd files
    "annotation_typing": False,
}


def _skip(why: object) -> None:
    print(f"lbproxy: not compiling the accelerator ({why}); pure Python", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: an extension it cannot build is left out."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 (no compiler, no headers...: any failure)
            _skip(exc)

    def build_extension(self, ext: object) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 (whatever fails, pure Python installs)
            _skip(exc)


def extensions() -> list:
    if os.environ.get("LBPROXY_NO_EXTENSIONS"):
        _skip("LBPROXY_NO_EXTENSIONS is set")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _skip("Cython is not installed")
        return []
    here = Path(__file__).resolve().parent
    # each module on its own: one Cython rejects makes them all run as Python
    # (lbproxy/compiled.py: they import each other's C types)
    sources: list = [str(pxd.with_suffix(".py").relative_to(here))
                     for pxd in sorted((here / "lbproxy").rglob("*.pxd"))]
    # Compiled only, with no .py twin: TLS termination calling libssl (the one Python's ssl
    # module runs on, linked by its file name so that no OpenSSL headers are needed).
    # Without it TLS binds use asyncio's TLS (lbproxy/proxy/tls_layer.pyx).
    tls_layer = Path("lbproxy", "proxy", "tls_layer.pyx")
    if (here / tls_layer).exists():
        sources.append([Extension("lbproxy.proxy.tls_layer", [str(tls_layer)],
                                  libraries=[":libssl.so.3", ":libcrypto.so.3"])])
    built = []
    for source in sources:
        try:
            built += cythonize(source, compiler_directives=DIRECTIVES, quiet=True,
                               build_dir="build/cython")   # its C: not package data
        except Exception as exc:  # noqa: BLE001 (whatever fails, pure Python installs)
            _skip(exc)
    return built


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
