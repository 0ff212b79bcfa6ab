"""The compiled accelerator: which modules run as C extensions, and the switch back to Python.

setup.py compiles each module of the request path that has a Cython .pxd beside it
(MODULES) from its unchanged .py source, when Cython and a C compiler are there. The
compiled modules import each other's C types, so they run all compiled or all as Python:
at import, the compiled files are used unless LBPROXY_NO_EXTENSIONS is set (to anything
but "" or "0"), one of MODULES has none (its build failed), or, in a source checkout, one
is older than its .py or .pxd (edited since the last build: the sources run, never stale
code; an installed wheel's files all carry the time they were unpacked, so there the
compiled files are always taken). A finder placed first on sys.meta_path makes that
choice for lbproxy's modules only. A module compiled from a .pyx, with no .py to fall back
on (lbproxy.proxy.tls_layer), is not found at all when disabled or stale: its callers
then do without it.
"""

from __future__ import annotations

import functools
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader, ModuleSpec
from importlib.util import find_spec, spec_from_file_location

# The modules setup.py compiles: those with a .pxd (tests/unit/test_compiled.py checks it).
MODULES = (
    "lbproxy.backends.backend",
    "lbproxy.backends.server",
    "lbproxy.balance.base",
    "lbproxy.balance.leastconn",
    "lbproxy.balance.roundrobin",
    "lbproxy.balance.tracked",
    "lbproxy.http.headers",
    "lbproxy.http2.connection",
    "lbproxy.proxy.client",
    "lbproxy.proxy.dispatch",
    "lbproxy.proxy.exchange",
    "lbproxy.proxy.flow",
    "lbproxy.proxy.frontend",
    "lbproxy.proxy.h2client",
    "lbproxy.proxy.request",
    "lbproxy.proxy.upstream",
    "lbproxy.runtime.accesslog",
)

DISABLED = os.environ.get("LBPROXY_NO_EXTENSIONS", "") not in ("", "0")
# A source checkout (setup.py beside the package), where sources are edited.
CHECKOUT = os.path.isfile(os.path.join(os.path.dirname(os.path.dirname(__file__)), "setup.py"))


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _built(base: str) -> float:
    """When the compiled file of the module at `base` (its path without a suffix) was
    made; 0 when there is none."""
    return max((_mtime(base + suffix) for suffix in EXTENSION_SUFFIXES), default=0.0)


def _stale(base: str, built: float) -> bool:
    """In a checkout, the module's .py, .pxd or .pyx was edited after it was compiled."""
    return CHECKOUT and built < max(_mtime(base + suffix) for suffix in (".py", ".pxd", ".pyx"))


def complete(root: str) -> bool:
    """Whether every module of MODULES under `root` (the directory holding the lbproxy
    package) has a compiled file that is not stale."""
    for module in MODULES:
        base = os.path.join(root, *module.split("."))
        built = _built(base)
        if not built or _stale(base, built):
            return False
    return True


@functools.cache
def _complete_here() -> bool:
    return complete(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SourceWhenStale:
    """A meta path finder: an lbproxy module's .py when compiled modules are disabled,
    when the compiled set is not complete (see the module's text) or, in a checkout, the
    module's own compiled file is older than its sources; otherwise it leaves the choice
    to the default finders (which take the compiled file first)."""

    @staticmethod
    def find_spec(fullname: str, path: list[str] | None,
                  target: object = None) -> ModuleSpec | None:
        if path is None or not fullname.startswith("lbproxy."):
            return None
        name = fullname.rpartition(".")[2]
        for entry in path:
            base = os.path.join(entry, name)
            built = _built(base)
            if not built:
                continue                    # not compiled here (a package, or elsewhere)
            if not os.path.exists(base + ".py"):    # compiled only (lbproxy.proxy.tls_layer)
                if DISABLED or _stale(base, built):
                    raise ModuleNotFoundError(f"{fullname} is disabled or stale", name=fullname)
                return None
            if DISABLED or _stale(base, built) or not _complete_here():
                return spec_from_file_location(fullname, base + ".py")
            return None
        return None


def install() -> None:
    if not any(isinstance(finder, SourceWhenStale) for finder in sys.meta_path):
        sys.meta_path.insert(0, SourceWhenStale())


def is_compiled(module: str) -> bool:
    """Whether `module` is (or, not imported yet, would be) loaded as a C extension."""
    spec = find_spec(module)
    return spec is not None and isinstance(spec.loader, ExtensionFileLoader)


def accelerated() -> bool:
    """Every module of MODULES runs compiled."""
    return all(is_compiled(module) for module in MODULES)
