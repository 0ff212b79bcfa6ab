"""`load_config`: files or a conf.d directory -> one validated `Config`, or a ConfigError.

This is the only entry point the CLI, the reload path and the autoscaler use. It reads the
files, merges their top-level maps, validates, and refuses the features the data plane does
not implement yet: a config that asks for one fails `check` instead of being silently
half-honoured at run time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping

from lbproxy.config.errors import Problems
from lbproxy.config.nodes import Node, merge, read_yaml
from lbproxy.config.plugins import import_plugins
from lbproxy.config.schema import Config
from lbproxy.config.validate import validate

# Key paths of features not implemented yet: `*` is any name, `[]` any list index. Remove an
# entry when its feature lands. A key is refused only when in use: present with a value
# other than null, false or an empty list/map.
UNSUPPORTED: frozenset[str] = frozenset({
})
# Keys refused only for some values, judged on the validated Config.
UNSUPPORTED_WHEN: dict[str, Callable[[Config], bool]] = {
}

# Sections several files may each contribute keys to; any other key set twice is an error.
MERGED_SECTIONS = frozenset({"global", "defaults", "stats", "stick_tables", "caches", "frontends",
                             "backends", "autoscale", "autoscale.pools"})
YAML_SUFFIXES = (".yaml", ".yml")


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Load, merge and validate PATH (a YAML file or a directory of them).

    `${NAME}` references read `env` (default: os.environ). Raises ConfigError listing every
    problem as `FILE:LINE: key.path: message`.
    """
    config, problems = load_partial(path, env)
    if problems:
        raise problems.error(config.sources)
    return config


def load_partial(path: str | os.PathLike[str],
                 env: Mapping[str, str] | None = None) -> tuple[Config, Problems]:
    """Like load_config, but never raises: the Config built from what is valid (an invalid
    value takes its default, an invalid item is left out) and the problems found. Later
    checks (lbproxy/runtime/validate.py) run on it so that one load reports everything."""
    problems = Problems()
    files = _files(os.fspath(path), problems)
    root: Node | None = None
    for file in files:
        tree = read_yaml(file, os.environ if env is None else env, problems)
        if tree is None:
            continue
        if not isinstance(tree.value, dict):
            tree.report(f"expected a mapping of sections, got {tree.describe()}")
        elif root is None:
            root = tree
        else:
            merge(root, tree, MERGED_SECTIONS)
    sources = tuple(files)
    config = Config(sources=sources)
    if root is not None:
        import_plugins(root, problems, sources)
        config = validate(root, sources)
        _refuse_unsupported(root, config)
    return config, problems


def _files(path: str, problems: Problems) -> list[str]:
    """PATH itself, or the *.yaml / *.yml files of directory PATH in lexical order."""
    if not os.path.isdir(path):
        return [path]
    names = sorted(name for name in os.listdir(path)
                   if name.endswith(YAML_SUFFIXES) and not name.startswith(".")
                   and os.path.isfile(os.path.join(path, name)))
    if not names:
        problems.add(path, 0, "no *.yaml or *.yml files in this directory")
    return [os.path.join(path, name) for name in names]


def _refuse_unsupported(root: Node, config: Config) -> None:
    keys = UNSUPPORTED | {key for key, applies in UNSUPPORTED_WHEN.items() if applies(config)}
    for key in sorted(keys):        # sorted: the same problems in the same order every run
        for node in _find(root, re.findall(r"\[\]|[^.\[\]]+", key)):
            if _in_use(node):
                node.report("not supported yet")


def _find(node: Node, steps: list[str]) -> Iterator[Node]:
    """The nodes at key path `steps` below `node`: `*` is any name, `[]` any list index."""
    if not steps:
        yield node
        return
    step, rest = steps[0], steps[1:]
    if step == "[]":
        children = node.value if isinstance(node.value, list) else []
    elif step == "*":
        children = list(node.value.values()) if isinstance(node.value, dict) else []
    else:
        children = [node.value[step]] if isinstance(node.value, dict) and step in node.value else []
    for child in children:
        yield from _find(child, rest)


def _in_use(node: Node) -> bool:
    """Whether a key asks for its feature: a value other than null, false, [] or {}."""
    return not (node.value is None or node.value is False or node.value == [] or node.value == {})
