"""Shared lexical pieces of the rule language: the error type, the tokenizer, suggestions.

Every error the rule compilers raise is a `RuleError` whose text starts with the caller's
`where` (`conf/a.yaml:12: frontends.web.http_request[1].if`), so the config loader can
print it as one line, unchanged.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator


class RuleError(ValueError):
    """A user error in an ACL, condition or template; the text is the whole message."""


def fail(where: str, message: str) -> RuleError:
    """Build the error for `message` at `where` (callers `raise` it so flow stays visible)."""
    return RuleError(f"{where}: {message}")


def suggest(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def tokenize(text: str, where: str) -> list[str]:
    """Split on whitespace; '...' or "..." keep spaces. Backslashes stay as written.

    HAProxy processes backslash escapes, but our rules come from YAML strings where
    `path_reg ^/v\\d+/` must reach the regex compiler intact, so we keep them.
    """
    tokens: list[str] = []
    current: list[str] = []
    quote = ""
    started = False                      # distinguishes "" (an empty value) from no token
    for char in text:
        if quote:
            if char == quote:
                quote = ""
            else:
                current.append(char)
        elif char in "'\"":
            quote, started = char, True
        elif char.isspace():
            if started:
                tokens.append("".join(current))
                current, started = [], False
        else:
            current.append(char)
            started = True
    if quote:
        raise fail(where, f"unbalanced {quote} in {text!r}")
    if started:
        tokens.append("".join(current))
    return tokens


# --- fetch expressions: `hdr(host),lower,map(conf/hosts.map,app)` ---------------------------

_POSITION = re.compile(r"(.*?):(\d+): ")


def source_dir(where: str) -> str:
    """The directory of the YAML file `where` starts with (`FILE:LINE: key.path`), which a
    relative file named in a rule is taken from, as every file of the configuration is;
    the working directory when `where` names no file."""
    match = _POSITION.match(where)
    return os.path.dirname(os.path.abspath(match[1])) if match else os.getcwd()


def _scan(text: str, where: str) -> Iterator[tuple[int, str, int]]:
    """(index, character, parenthesis depth) of each character that counts: not inside
    quotes, not after a backslash. Raises on an unbalanced quote or parenthesis."""
    depth, quote, escaped = 0, "", False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quote:
            if char == quote:
                quote = ""
        elif char == "\\":
            escaped = True
        elif char in "'\"":
            quote = char
        else:
            if char == ")":
                depth -= 1
                if depth < 0:
                    raise fail(where, f"unbalanced ')' in {text!r}")
            yield index, char, depth
            if char == "(":
                depth += 1
    if quote:
        raise fail(where, f"unbalanced {quote} in {text!r}")
    if depth:
        raise fail(where, f"unbalanced '(' in {text!r}")


def split_commas(text: str, where: str) -> list[str]:
    """`text` split on the commas outside parentheses and quotes (which stay as written):
    `hdr(host),map(a,b)` -> ['hdr(host)', 'map(a,b)']."""
    cuts = [index for index, char, depth in _scan(text, where) if char == "," and depth == 0]
    return [text[start + 1:end] for start, end in zip([-1, *cuts], [*cuts, len(text)])]


def split_args(text: str, where: str) -> list[str]:
    """A converter's arguments: split on commas outside parentheses and quotes, then
    unquoted (`',',x` -> [',', 'x']). Backslashes stay as written, for regexes."""
    return [_unquote(part) for part in split_commas(text, where)]


def _unquote(text: str) -> str:
    out, quote, escaped = [], "", False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quote and char == quote:
            quote = ""
            continue
        elif not quote and char in "'\"":
            quote = char
            continue
        out.append(char)
    return "".join(out)


def closing_bracket(text: str, start: int, where: str) -> int:
    """The index of the `]` that closes a `%[` whose expression begins at `start` (a `]`
    inside a converter's parentheses or quotes does not count), or -1 when there is no
    `]`; when every `]` is inside, the error about the last one's expression."""
    end = text.find("]", start)
    error = None
    while end >= 0:
        try:
            for _ in _scan(text[start:end], where):
                pass
            return end
        except RuleError as exc:         # that `]` is inside parentheses or quotes
            error = exc
            end = text.find("]", end + 1)
    if error is not None:
        raise error
    return -1
