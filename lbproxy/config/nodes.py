"""YAML to a tree of `Node`s that remember their file, line and key path.

`yaml.safe_load` forgets where every value came from and silently keeps the last of two
duplicate keys. Composing the node graph ourselves (SafeLoader rules) lets every error say
FILE:LINE: key.path, lets duplicate keys be errors, and lets `${NAME}` be expanded before a
scalar gets its type, so `port: ${PORT:-8080}` is an int.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from functools import partial

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from lbproxy.config.errors import Problems
from lbproxy.slicing import pace

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
    """The document in `file` as a Node tree, or None (after reporting) if it cannot be read.

    The Nodes are built straight from the parser's events, so the parser's own node graph
    (9 MB for 5,000 servers, and the peak of a start) never exists; only a file that may
    hold anchors and aliases (an `&` or a `*` anywhere) is composed first, for them.
    """
    try:
        with open(file, "rb") as stream:
            data = stream.read()
        builder = _Builder(file, env, problems)
        try:
            root = builder.read(data, _LOADER)
        except yaml.YAMLError:         # the pure parser words syntax errors the same everywhere
            root = builder.read(data, yaml.SafeLoader)
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
    builder.report_all()
    return root or Node({}, "", file, 1, "", problems)


Events = Iterator[yaml.Event]


def _parsed(data: bytes, loader: type) -> Events:
    """The events of the single document in `data` (none if it is empty)."""
    if b"&" in data or b"*" in data:
        root = yaml.compose(data, Loader=loader)     # raises if there is not one document
        if root is not None:
            yield from _replayed(root, set())
        return
    parser = loader(data)
    try:
        parser.get_event()                                  # stream start
        if not parser.check_event(yaml.StreamEndEvent):
            parser.get_event()                              # document start
            depth = 0
            while True:
                event = parser.get_event()
                yield event
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                elif isinstance(event, yaml.CollectionEndEvent):
                    depth -= 1
                if depth == 0:
                    break
            parser.get_event()                              # document end
            if not parser.check_event(yaml.StreamEndEvent):
                event = parser.get_event()
                raise yaml.composer.ComposerError(
                    "expected a single document in the stream", None,
                    "but found another document", event.start_mark)
    finally:
        parser.dispose()


def _replayed(ynode: yaml.Node, open_nodes: set[int]) -> Events:
    """A composed node as events, its aliases expanded; an alias inside its own anchor
    becomes an AliasEvent."""
    if id(ynode) in open_nodes:
        yield yaml.AliasEvent(None, ynode.start_mark, ynode.end_mark)
        return
    open_nodes.add(id(ynode))
    if isinstance(ynode, yaml.MappingNode):
        yield yaml.MappingStartEvent(None, ynode.tag, True, ynode.start_mark, ynode.end_mark)
        for key, value in ynode.value:
            yield from _replayed(key, open_nodes)
            yield from _replayed(value, open_nodes)
        yield yaml.MappingEndEvent(ynode.end_mark, ynode.end_mark)
    elif isinstance(ynode, yaml.SequenceNode):
        yield yaml.SequenceStartEvent(None, ynode.tag, True, ynode.start_mark, ynode.end_mark)
        for item in ynode.value:
            yield from _replayed(item, open_nodes)
        yield yaml.SequenceEndEvent(ynode.end_mark, ynode.end_mark)
    else:
        yield yaml.ScalarEvent(None, ynode.tag, (False, False), ynode.value, ynode.start_mark,
                               ynode.end_mark)
    open_nodes.discard(id(ynode))


class _Builder:
    """Turns one file's YAML events into Nodes, expanding ${ENV} and rejecting duplicates.

    Problems are held until the whole file has parsed: a syntax error near the end is
    then the only one reported, as before any value was looked at.
    """

    def __init__(self, file: str, env: Mapping[str, str], problems: Problems) -> None:
        self.file = file
        self.env = env
        self.problems = problems
        self.constructor = SafeConstructor()
        self.resolver = Resolver()
        self.found: list[Callable[[], None]] = []     # the reports, made when all has parsed

    def read(self, data: bytes, loader: type) -> Node | None:
        self.found.clear()
        events = _parsed(data, loader)
        first = next(events, None)
        if first is None:
            return None
        root = self.build(first, events, "", first.start_mark.line + 1)
        for _ in events:                    # the end of the document and of the stream
            pass
        return root

    def report_all(self) -> None:
        for report in self.found:
            report()

    def node(self, value: Value, text: str, line: int, path: str) -> Node:
        return Node(value, text, self.file, line, path, self.problems)

    def broken(self, text: str, line: int, path: str, message: str) -> Node:
        result = self.node(BROKEN, text, line, path)
        self.found.append(partial(result.report, message))
        return result

    def build(self, event: yaml.Event, events: Events, path: str, line: int) -> Node:
        pace()
        if isinstance(event, yaml.ScalarEvent):
            return self.scalar(event, path, line)
        if isinstance(event, yaml.SequenceStartEvent):
            items: list[Node] = []
            while not isinstance(item := next(events), yaml.SequenceEndEvent):
                items.append(self.build(item, events, f"{path}[{len(items)}]",
                                        item.start_mark.line + 1))
            return self.node(items, "", line, path)
        if isinstance(event, yaml.MappingStartEvent):
            return self.mapping(events, path, line)
        return self.broken("", line, path, "recursive YAML alias")

    def mapping(self, events: Events, path: str, line: int) -> Node:
        entries: dict[str, Node] = {}
        while not isinstance(key := next(events), yaml.MappingEndEvent):
            kline = key.start_mark.line + 1
            if not isinstance(key, yaml.ScalarEvent):
                self.found.append(partial(self.problems.add, self.file, kline,
                                          f"{path or '(top level)'}: keys must be strings", path))
                _skip(key, events)          # the key
                _skip(next(events), events)     # and its value
                continue
            name = key.value
            child = self.build(next(events), events, f"{path}.{name}" if path else name, kline)
            if name in entries:
                self.found.append(partial(child.report,
                                          f"duplicate key (first at line {entries[name].line})"))
            else:
                entries[name] = child
        return self.node(entries, "", line, path)

    def scalar(self, event: yaml.ScalarEvent, path: str, line: int) -> Node:
        text, tag = event.value, event.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(yaml.ScalarNode, text, event.implicit)
        if not tag.startswith(_STANDARD_TAGS):
            # `if: !ssl_fc shop` is the tag '!ssl_fc' on 'shop': never silently drop the '!'.
            return self.broken(text, line, path,
                               f"unexpected YAML tag '{tag}' (quote a value that starts with '!')")
        if tag == _STR_TAG and "$" in text:
            try:
                expanded, substituted = self.expand(text)
            except ValueError as exc:
                return self.broken(text, line, path, str(exc))
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


def _skip(event: yaml.Event, events: Events) -> None:
    """Consume the rest of the node that `event` starts."""
    depth = 1 if isinstance(event, yaml.CollectionStartEvent) else 0
    while depth:
        event = next(events)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


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
