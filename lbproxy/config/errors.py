"""Configuration errors, reported like a compiler: all of them, each with FILE:LINE: key.path.

A user fixing a configuration wants every mistake at once, so the loader collects problems
in `Problems` and raises one `ConfigError` at the end instead of stopping at the first.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence


class ConfigError(Exception):
    """An invalid configuration; `errors` holds one `FILE:LINE: key.path: message` per problem."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: list[str] = list(errors)
        super().__init__("\n".join(self.errors))

    def __reduce__(self) -> tuple[type, tuple[list[str]]]:
        return (ConfigError, (self.errors,))     # (a reload reads large files in a child)


class ListenError(OSError):
    """A configured address cannot be listened on; the message names it, e.g.
    `cannot listen on 127.0.0.1:8080: Address already in use` (`errno` is the cause's)."""

    def __init__(self, address: object, cause: OSError, what: str = "") -> None:
        # os.strerror: asyncio's bind errors repeat the address in their own words
        reason = os.strerror(cause.errno) if cause.errno else str(cause)
        super().__init__(cause.errno, f"cannot listen on {address}{what}: {reason}")

    def __str__(self) -> str:
        return str(self.strerror)


class Problems:
    """The problems found so far in one load, kept with their position for sorting, and
    the key path each is about (so later checks can leave alone what is already broken)."""

    def __init__(self) -> None:
        self._items: list[tuple[str, int, str]] = []
        self._paths: list[str] = []

    def add(self, file: str, line: int, text: str, path: str = "") -> None:
        """Record `text` at FILE:LINE (line 0: the problem is with the file as a whole);
        `path` is the key path it is about ("" for the file or the top level)."""
        self._items.append((file, line, text))
        self._paths.append(path)

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def paths(self) -> list[str]:
        """The key path of each problem ("" for a file or the top level)."""
        return list(self._paths)

    def under(self, path: str) -> bool:
        """Whether a problem was found at key path `path` or inside it."""
        return any(found == path or found.startswith((path + ".", path + "["))
                   for found in self._paths)

    def error(self, files: Sequence[str]) -> ConfigError:
        """One ConfigError listing the problems in file order (`files`), then line order."""
        rank = {file: i for i, file in enumerate(files)}
        items = sorted(self._items, key=lambda item: (rank.get(item[0], -1), item[1]))
        return ConfigError(f"{file}:{line}: {text}" if line else f"{file}: {text}"
                           for file, line, text in items)


def suggest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'X'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(noun: str, word: str, choices: Sequence[str]) -> str:
    """The message for a value outside an enumeration: a suggestion, else the whole list."""
    hint = suggest(word, choices) or (f" (expected one of: {', '.join(choices)})" if choices
                                      else f" (no {noun}s are defined)")
    return f"unknown {noun} '{word}'{hint}"
