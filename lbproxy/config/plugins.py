"""Python plugins: `global.plugins` and the `lbproxy.plugins` entry points, imported before
the rest of a configuration is checked, so that the names they register (fetches,
converters, actions, balancers; see lbproxy/ext.py) are known to the checks.

An entry of `global.plugins` is a module name (`mycompany.lbplugins`) or a `.py` file,
relative to the YAML file that names it. Each is imported once per process: a reload
imports plugins newly listed, not new versions of those already loaded (restart for that).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from importlib.metadata import entry_points
from types import ModuleType

from lbproxy.config.errors import Problems
from lbproxy.config.fields import resolve_path
from lbproxy.config.nodes import Node

ENTRY_POINT_GROUP = "lbproxy.plugins"
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

_loaded: dict[str, ModuleType] = {}      # by module name or absolute file path
_entry_points_read = False


def is_file(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec


def valid_spec(spec: str) -> bool:
    return is_file(spec) or bool(_MODULE_NAME.match(spec))


def import_plugins(root: Node, problems: Problems, sources: tuple[str, ...]) -> None:
    """Import the installed entry points (once) and what `global.plugins` under `root`
    lists; a plugin that cannot be imported is a problem on its own line."""
    _import_entry_points(problems, sources)
    section = root.value.get("global") if isinstance(root.value, dict) else None
    listed = section.value.get("plugins") if section is not None and isinstance(
        section.value, dict) else None
    if listed is None or not isinstance(listed.value, list):
        return                   # (the schema says what is wrong with a non-list)
    for item in listed.value:
        if not isinstance(item.value, str) or not valid_spec(item.value):
            continue             # (likewise)
        spec = resolve_path(item, item.value) if is_file(item.value) else item.value
        try:
            import_plugin(spec)
        except Exception as exc:      # noqa: BLE001 (an import may raise anything)
            item.report(f"cannot import plugin '{item.value}': {type(exc).__name__}: {exc}")


def import_plugin(spec: str) -> ModuleType:
    """Import one plugin by module name or absolute .py path, once per process."""
    module = _loaded.get(spec)
    if module is not None:
        return module
    if is_file(spec):
        name = "lbproxy_plugin_" + re.sub(r"\W", "_", os.path.splitext(spec)[0].strip("/"))
        found = importlib.util.spec_from_file_location(name, spec)
        if found is None or found.loader is None:
            raise ImportError(f"{spec} is not a Python file")
        module = importlib.util.module_from_spec(found)
        sys.modules[name] = module
        try:
            found.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    else:
        module = importlib.import_module(spec)
    _loaded[spec] = module
    return module


def _import_entry_points(problems: Problems, sources: tuple[str, ...]) -> None:
    global _entry_points_read
    if _entry_points_read:
        return
    _entry_points_read = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            _loaded[point.value] = point.load()
        except Exception as exc:      # noqa: BLE001 (likewise)
            problems.add(sources[0] if sources else "<entry points>", 0,
                         f"plugin entry point '{point.name}' ({point.value}) cannot be "
                         f"imported: {type(exc).__name__}: {exc}")
