"""Shared lexical pieces of the rule language: the error type, the tokenizer, suggestions.

Every error the rule compilers raise is a `RuleError` whose text starts with the caller's
`where` (`conf/a.yaml:12: frontends.web.http_request[1].if`), so the config loader can
print it as one line, unchanged.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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
