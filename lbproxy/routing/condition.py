"""`if:` / `unless:` conditions compiled into one `request -> bool` closure.

    is_admin !from_office                  AND of terms separated by spaces
    is_api || { hdr(x-api-key) -m found }  `||` or `or` between AND groups (AND binds tighter)
    !ssl_fc shop_host                      `!` negates one term; a bare boolean fetch is a term
    { sc_http_req_rate(0) gt 100 }         an anonymous ACL, same syntax as an ACL line

`{` and `}` are tokens of their own (as in HAProxy), so a regex like `a{2}` stays a value.
`TRUE` and `FALSE` are predefined. There are no parentheses, like HAProxy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lbproxy.routing.acl import Test, all_of, any_of, compile_tokens, response_fetch
from lbproxy.routing.fetches import BOOL, FETCHES, REQUEST, SUFFIXES
from lbproxy.routing.syntax import fail, suggest, tokenize

_PREDEFINED: dict[str, Test] = {"TRUE": lambda _request: True, "FALSE": lambda _request: False}
_OR = ("||", "or")


def compile_condition(expr: str, negate: bool, acls: Mapping[str, Callable[[Any], bool]],
                      where: str, runtime: Any, phase: str) -> Test:
    """Compile `expr`; `negate` is True for `unless:`. `phase` is "request" or "response"."""
    tokens = tokenize(expr, where)
    if not tokens:
        raise fail(where, "empty condition")
    groups: list[list[Test]] = [[]]
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token in _OR:
            if not groups[-1]:
                raise fail(where, f"'{token}' needs a condition on both sides")
            groups.append([])
            index += 1
            continue
        term, index = _term(tokens, index, acls, where, runtime, phase)
        groups[-1].append(term)
    if not groups[-1]:
        raise fail(where, f"'{tokens[-1]}' needs a condition on both sides")
    condition = any_of([all_of(group) for group in groups])
    if negate:
        return lambda request: not condition(request)
    return condition


def _term(tokens: Sequence[str], index: int, acls: Mapping[str, Callable[[Any], bool]],
          where: str, runtime: Any, phase: str) -> tuple[Test, int]:
    """Compile the term at `index` (with its `!`); return it and the index after it."""
    token = tokens[index]
    negated = token.startswith("!")
    if negated:
        token = token[1:]
        if not token:                    # "! name": the '!' stands alone
            index += 1
            if index >= len(tokens) or tokens[index] in _OR:
                raise fail(where, "'!' needs a term after it")
            token = tokens[index]
    if token == "{":
        try:
            end = tokens.index("}", index + 1)
        except ValueError:
            raise fail(where, "unbalanced '{': missing '}'") from None
        body = tokens[index + 1:end]
        if not body:
            raise fail(where, "empty anonymous ACL '{ }'")
        test, _ = compile_tokens(body, where, runtime, phase)
        index = end
    elif token == "}":
        raise fail(where, "unbalanced '}': no '{' before it")
    else:
        test = _named(token, acls, where, runtime, phase)
    if negated:
        return (lambda request: not test(request)), index + 1
    return test, index + 1


def _named(name: str, acls: Mapping[str, Callable[[Any], bool]], where: str, runtime: Any,
           phase: str) -> Test:
    """A defined ACL, a predefined one, or a bare boolean fetch such as `ssl_fc`."""
    acl = acls.get(name)
    if acl is not None:
        fetch = response_fetch(acl)
        if fetch and phase == REQUEST:
            raise fail(where, f"ACL '{name}' uses '{fetch}', which is only available in "
                              "http_response rules")
        return acl
    if name in _PREDEFINED:
        return _PREDEFINED[name]
    fetch_name = name.partition("(")[0]
    if fetch_name in FETCHES and FETCHES[fetch_name].kind == BOOL:
        return compile_tokens([name], where, runtime, phase)[0]
    hint = ""
    base, _, suffix = fetch_name.rpartition("_")
    if fetch_name in FETCHES or (suffix in SUFFIXES and base in FETCHES):
        hint = f" (a fetch with values goes in braces: '{{ {name} ... }}')"
    booleans = [fetch for fetch, definition in FETCHES.items() if definition.kind == BOOL]
    choices = [*acls, *_PREDEFINED, *booleans]
    raise fail(where, f"unknown ACL '{name}'{hint or suggest(name, choices)}")
