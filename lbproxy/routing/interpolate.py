"""Header-value templates: `t=%[date_us]`, `%[srv_name]`, `%[hdr(host)]` compiled once.

`compile_template` always returns a `request -> str` callable (a constant one when the
text has no `%[`), so callers have one shape to handle; a caller that wants to pre-encode
constant headers can test `"%[" in text` itself.

Rendering follows HAProxy's sample-to-string rules: integers in decimal, booleans `1`/`0`,
a missing value (absent header, cookie, parameter) as the empty string, and `hdr(NAME)` as
its last value. `%` not followed by `[` is literal text. Converters follow the fetch
(`%[hdr(host),lower,map(hosts.map,app)]`, lbproxy/routing/converters.py); a `]` inside
their parentheses does not end the expression.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lbproxy.routing.converters import resolve_expression
from lbproxy.routing.fetches import BOOL, INT, Fetch
from lbproxy.routing.syntax import closing_bracket, fail

Render = Callable[[Any], str]


def compile_template(text: str, where: str, runtime: Any, phase: str) -> Render:
    """Compile a header value; `phase` ("request"/"response") decides which fetches exist."""
    if "%[" not in text:
        return lambda _request: text
    parts: list[Render] = []
    position = 0
    while (start := text.find("%[", position)) >= 0:
        end = closing_bracket(text, start + 2, where)
        if end < 0:
            raise fail(where, f"unterminated '%[' in {text!r}")
        if start > position:
            parts.append(_constant(text[position:start]))
        parts.append(_render(resolve_expression(text[start + 2:end].strip(), where, runtime,
                                                phase)))
        position = end + 1
    if position < len(text):
        parts.append(_constant(text[position:]))
    if len(parts) == 1:
        return parts[0]
    return lambda request: "".join([part(request) for part in parts])


def _constant(text: str) -> Render:
    return lambda _request: text


def _render(fetch: Fetch) -> Render:
    """The fetch's value as text (see the module docstring for the rules)."""
    get = fetch.get
    if fetch.multi:
        return lambda request: (get(request) or [""])[-1]
    if fetch.kind == BOOL:
        return lambda request: "1" if get(request) else "0"
    if fetch.kind == INT:
        def render_int(request: Any) -> str:
            value = get(request)
            return "" if value is None else str(value)
        return render_int
    return lambda request: get(request) or ""
