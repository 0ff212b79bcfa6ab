"""YAML to a tree of `Node`s that remember their file, line and key path.

`yaml.safe_load` forgets where every value came from and silently keeps the last of two
duplicate keys. Composing the node graph ourselves (SafeLoader rules) lets every error say
FILE:LINE: key.path, lets duplicate keys be errors, and lets `${NAME}` be expanded before a
scalar gets its type, so `port: ${PORT:-8080}` is an int.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from lbproxy.config.errors import Problems

_TYPED_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                         "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"})
_STR_TAG = "tag:yaml.org,2002:str"
# libyaml's parser when PyYAML was built with it: the same nodes and marks, 5-10x faster
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STANDARD_TAGS = "tag:yaml.org,2002:"
# `$$`, `${...}`, or a `${` that is never closed (the last alternative only matches then).
_ENV_REF = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
_ENV_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


class Broken:
    """The value of a scalar whose `${...}` failed: already reported, to be skipped quietly."""

    def __repr__(self) -> str:
        return "<broken>"


BROKEN = Broken()

Value = dict[str, "Node"] | list["Node"] | str | int | float | bool | None | Broken


class Node:
    """One YAML value with its position. Mapping entries are placed on their key's line."""

    __slots__ = ("value", "text", "file", "line", "path", "problems")

    def __init__(self, value: Value, text: str, file: str, line: int, path: str,
                 problems: Problems) -> None:
        self.value = value          # dict / list of Nodes, or a typed scalar
        self.text = text            # a scalar's text after ${} expansion ("" for collections)
        self.file = file
        self.line = line
        self.path = path            # e.g. backends.app.servers[0].name
        self.problems = problems    # where report() writes

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def where(self) -> str:
        """The prefix of an error about this value: FILE:LINE: key.path."""
        return f"{self.location}: {self.path or '(top level)'}"

    @property
    def is_scalar(self) -> bool:
        return not isinstance(self.value, (dict, list, Broken))

    def report(self, message: str) -> None:
        self.problems.add(self.file, self.line, f"{self.path or '(top level)'}: {message}",
                          self.path)

    def describe(self) -> str:
        """What the user wrote, for 'expected X, got Y' messages."""
        if isinstance(self.value, dict):
            return "a mapping"
        if isinstance(self.value, list):
            return "a list"
        if self.value is None:
            return "null"
        if isinstance(self.value, str):
            return f"string '{self.value}'"
        kind = {bool: "boolean", int: "integer", float: "number"}.get(type(self.value), "value")
        return f"{kind} {self.text}"


def read_yaml(file: str, env: Mapping[str, str], problems: Problems) -> Node | None:
    """The document in `file` as a Node tree, or None (after reporting) if it cannot be read."""
    try:
        with open(file, "rb") as stream:
            data = stream.read()
        try:
            root = yaml.compose(data, Loader=_LOADER)
        except yaml.YAMLError:         # the pure parser words syntax errors the same everywhere
            root = yaml.compose(data, Loader=yaml.SafeLoader)
    except OSError as exc:
        problems.add(file, 0, f"cannot read: {exc.strerror or exc}")
        return None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = "; ".join(part for part in (exc.context, exc.problem) if part)
        column = f" (column {mark.column + 1})" if mark else ""
        problems.add(file, mark.line + 1 if mark else 0, f"YAML syntax error: {what}{column}")
        return None
    except yaml.YAMLError as exc:
        problems.add(file, 0, f"YAML error: {exc}")
        return None
    if root is None:
        return Node({}, "", file, 1, "", problems)
    return _Builder(file, env, problems).build(root, "", root.start_mark.line + 1)


class _Builder:
    """Turns one file's yaml node graph into Nodes, expanding ${ENV} and rejecting duplicates."""

    def __init__(self, file: str, env: Mapping[str, str], problems: Problems) -> None:
        self.file = file
        self.env = env
        self.problems = problems
        self.constructor = SafeConstructor()
        self.resolver = Resolver()
        self.open: set[int] = set()     # nodes being built: an alias back to one is a cycle

    def node(self, value: Value, text: str, line: int, path: str) -> Node:
        return Node(value, text, self.file, line, path, self.problems)

    def build(self, ynode: yaml.Node, path: str, line: int) -> Node:
        if id(ynode) in self.open:
            result = self.node(BROKEN, "", line, path)
            result.report("recursive YAML alias")
            return result
        self.open.add(id(ynode))
        try:
            if isinstance(ynode, yaml.MappingNode):
                return self.mapping(ynode, path, line)
            if isinstance(ynode, yaml.SequenceNode):
                return self.node([self.build(item, f"{path}[{i}]", item.start_mark.line + 1)
                                  for i, item in enumerate(ynode.value)], "", line, path)
            return self.scalar(ynode, path, line)
        finally:
            self.open.discard(id(ynode))

    def mapping(self, ynode: yaml.MappingNode, path: str, line: int) -> Node:
        entries: dict[str, Node] = {}
        for knode, vnode in ynode.value:
            kline = knode.start_mark.line + 1
            if not isinstance(knode, yaml.ScalarNode):
                self.problems.add(self.file, kline,
                                  f"{path or '(top level)'}: keys must be strings", path)
                continue
            key = knode.value
            child = self.build(vnode, f"{path}.{key}" if path else key, kline)
            if key in entries:
                child.report(f"duplicate key (first at line {entries[key].line})")
            else:
                entries[key] = child
        return self.node(entries, "", line, path)

    def scalar(self, ynode: yaml.ScalarNode, path: str, line: int) -> Node:
        text, tag = ynode.value, ynode.tag
        if not tag.startswith(_STANDARD_TAGS):
            # `if: !ssl_fc shop` is the tag '!ssl_fc' on 'shop': never silently drop the '!'.
            result = self.node(BROKEN, text, line, path)
            result.report(f"unexpected YAML tag '{tag}' (quote a value that starts with '!')")
            return result
        if tag == _STR_TAG and "$" in text:
            try:
                expanded, substituted = self.expand(text)
            except ValueError as exc:
                result = self.node(BROKEN, text, line, path)
                result.report(str(exc))
                return result
            if substituted:
                tag = self.resolver.resolve(yaml.ScalarNode, expanded, (True, False))
            text = expanded
        value = text
        if tag in _TYPED_TAGS:
            value = self.constructor.construct_object(yaml.ScalarNode(tag, text))
        return self.node(value, text, line, path)

    def expand(self, text: str) -> tuple[str, bool]:
        """`text` with ${NAME} / ${NAME:-default} / $$ replaced, and whether a ${} was."""
        substituted = False

        def replace(match: re.Match[str]) -> str:
            nonlocal substituted
            if match[0] == "$$":
                return "$"
            ref = _ENV_NAME.fullmatch(match[1] or "") if match[0] != "${" else None
            if ref is None:
                raise ValueError(f"invalid environment reference '{match[0]}' "
                                 "(expected ${NAME} or ${NAME:-default}; write $$ for a literal $)")
            substituted = True
            name, default = ref[1], ref[2]
            if name in self.env:
                return self.env[name]
            if default is None:
                raise ValueError(f"environment variable '{name}' is not set (and has no default)")
            return default

        return _ENV_REF.sub(replace, text), substituted


def merge(into: Node, other: Node, sections: frozenset[str]) -> None:
    """Merge mapping `other` (a later file) into `into`.

    Mappings whose path is in `sections` merge key by key; any other key present in both is
    an error naming both places.
    """
    assert isinstance(into.value, dict) and isinstance(other.value, dict)
    for key, child in other.value.items():
        first = into.value.get(key)
        if first is None:
            into.value[key] = child
        elif (child.path in sections and isinstance(first.value, dict)
              and isinstance(child.value, dict)):
            merge(first, child, sections)
        else:
            child.report(f"already defined at {first.location}")
