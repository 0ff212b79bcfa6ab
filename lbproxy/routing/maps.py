"""Map files: `key value` lines that the `map*` converters look values up in.

    # hosts.map: host -> backend
    www.example.com     app
    api.example.com     api     # the value is the rest of the line: `api     # the value...`

One entry a line: the key runs to the first space or tab, the value is the rest of the line
with the blanks around it removed (it may be empty, and may hold spaces or `#`). Lines
that are blank or start with `#` are skipped. When a key comes twice, the first line
counts. Bytes are read as latin-1, like the request strings they meet, so a UTF-8 key
matches the same UTF-8 bytes in a request.

`MapFiles` is what one configuration load reads: each file once, by absolute path, shared
by every converter that names it, whatever its kind. A kind's structure
(lbproxy/routing/map_lookup.py) is built the first time a converter of that kind asks for
it; a key that kind cannot use (a bad network for `map_ip`, a bad regex for `map_reg`)
is an error naming the file and line
(`/etc/lb/hosts.map:12: invalid address 'x'`). The runtime API edits a `MapFile` in place
(`set`, `delete`): every converter sees the change at its next lookup. A reload reads
the files again into a new `MapFiles`, which drops those edits.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from lbproxy.routing.map_lookup import (BadKey, Index, Lengths, Lookup, Networks, Patterns,
                                        affix_lookup, domain_lookup, network_lookup,
                                        pattern_lookup, substring_lookup)
from lbproxy.routing.syntax import suggest

KINDS = ("map", "map_beg", "map_end", "map_sub", "map_reg", "map_dom", "map_ip")


class MapFile:
    """One file's entries (key -> value, in file order) and the structures of the kinds
    of lookup in use."""

    def __init__(self, path: str, entries: dict[str, str],
                 lines: dict[str, int] | None = None) -> None:
        self.path = path
        self.name = os.path.basename(path)      # how the runtime API names it
        self.entries = entries
        self.lines = lines or {}                # key -> line, for errors about keys
        self.kinds: list[str] = []              # the kinds converters use, in first-use order
        self.edits = 0                          # changes made through the runtime API
        self._indexes: dict[str, Index] = {}
        self._lookups: dict[str, Lookup] = {}

    @classmethod
    def read(cls, path: str) -> MapFile:
        """Read `path` (OSError when it cannot be)."""
        with open(path, "rb") as file:
            data = file.read()
        entries: dict[str, str] = {}
        lines: dict[str, int] = {}
        for number, raw in enumerate(data.split(b"\n"), 1):
            line = raw.strip()                  # bytes: ASCII blanks only
            if not line or line.startswith(b"#"):
                continue
            key_b, *rest = line.split(None, 1)
            key = key_b.decode("latin-1")
            if key not in entries:
                entries[key] = rest[0].decode("latin-1") if rest else ""
                lines[key] = number
        return cls(path, entries, lines)

    def lookup(self, kind: str) -> Lookup:
        """The function a `kind` converter calls (value -> value or None); ValueError
        naming the line when a key does not suit `kind`."""
        found = self._lookups.get(kind)
        if found is not None:
            return found
        entries = self.entries
        if kind == "map":
            found = entries.get
        elif kind == "map_dom":
            found = domain_lookup(entries)
        elif kind == "map_sub":
            found = substring_lookup(entries)
        elif kind in ("map_beg", "map_end"):
            lengths = self._index("lengths", lambda: Lengths(entries))
            found = affix_lookup(entries, lengths, at_end=kind == "map_end")
        elif kind == "map_reg":
            found = pattern_lookup(entries, self._index(kind, lambda: Patterns(entries)))
        elif kind == "map_ip":
            found = network_lookup(entries, self._index(kind, lambda: Networks(entries)))
        else:
            raise ValueError(f"unknown map kind '{kind}'")
        self._lookups[kind] = found
        self.kinds.append(kind)
        return found

    def _index(self, name: str, build: Callable[[], Index]) -> Index:
        index = self._indexes.get(name)
        if index is None:
            try:
                index = self._indexes[name] = build()
            except BadKey as exc:
                raise ValueError(f"{self.path}:{self.lines.get(exc.key, '?')}: {exc}") from None
        return index

    # runtime edits

    def set(self, key: str, value: str) -> bool:
        """Set `key` to `value`; True when the key is new (it goes last in file order).
        ValueError (nothing changed) when the key does not suit a kind in use, or a key
        or value could not be written in a map file."""
        if not key or any(char in key for char in " \t\r\n") or key.startswith("#"):
            raise ValueError("a key must be non-empty, without blanks, and not start with '#'")
        if "\r" in value or "\n" in value:
            raise ValueError("a value must be one line")
        new = key not in self.entries
        if new:
            for index in self._indexes.values():
                index.check(key)
        self.entries[key] = value.strip(" \t")
        if new:
            for index in self._indexes.values():
                index.add(key)
        self.edits += 1
        return new

    def delete(self, key: str) -> bool:
        """Remove `key`; False when there is no such key."""
        if key not in self.entries:
            return False
        for index in self._indexes.values():
            index.remove(key)
        del self.entries[key]
        self.lines.pop(key, None)
        self.edits += 1
        return True


class MapFiles:
    """The map files of one configuration load, by absolute path."""

    def __init__(self) -> None:
        self.files: dict[str, MapFile] = {}
        self._failed: dict[str, str] = {}       # path -> why it could not be read

    def load(self, path: str) -> MapFile:
        """The file at absolute `path`, read on first use; ValueError('cannot read ...')."""
        found = self.files.get(path)
        if found is not None:
            return found
        if path not in self._failed:
            try:
                self.files[path] = MapFile.read(path)
                return self.files[path]
            except OSError as exc:
                hint = _nearby(path) if isinstance(exc, FileNotFoundError) else ""
                self._failed[path] = f"cannot read {path}: {exc.strerror or exc}{hint}"
        raise ValueError(self._failed[path])

    def named(self, name: str) -> list[MapFile]:
        """The loaded files whose base name is `name` (the runtime API's name of a file)."""
        return [file for file in self.files.values() if file.name == name]


def _nearby(path: str) -> str:
    """` (did you mean 'hosts.map'?)` for a file of a close name in the same directory."""
    folder, name = os.path.split(path)
    try:
        return suggest(name, os.listdir(folder))
    except OSError:
        return ""
