"""http_request / http_response rules compiled into (condition, action) closures.

A request rule's action returns CONTINUE, STOP (allow: skip the remaining request rules),
ANSWERED (deny, return, redirect: the exchange has its response) or SUSPENDED (the
exchange goes on with the next rule later: auth_request waits for its subrequest). Header actions
edit the flat header list (name, ": ", value, CRLF quadruples) the data plane forwards,
so a rule costs nothing when its condition is false and one list rebuild when it acts.
Framing and hop-by-hop headers cannot be edited: the proxy owns them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from lbproxy.config.errors import ConfigError
from lbproxy.config.schema import (AuthRequestArgs, DenyArgs, FrontendConfig, HeaderArgs,
                                   RedirectArgs, ReplacePathArgs, RuleConfig, TrackArgs)
from lbproxy.extensions import ACTIONS
from lbproxy.http.answers import Answer
from lbproxy.http.termination import DENIED
from lbproxy.routing.acl import compile_acl
from lbproxy.routing.condition import compile_condition
from lbproxy.routing.interpolate import Render, compile_template
from lbproxy.routing.syntax import RuleError, fail
from lbproxy.routing.use_backend import Entry, Step, backend_steps

CONTINUE = 0
STOP = 1
ANSWERED = 2
SUSPENDED = 3

Test = Callable[[Any], bool]
Action = Callable[[Any], int]
HeaderEdit = Callable[[Any, list[bytes]], list[bytes]]

# Headers whose value the proxy itself decides (framing, connection management).
PROTECTED = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                       "proxy-connection", "te", "trailer", "upgrade"})


def compile_condition_of(rule: Any, acls: Mapping[str, Test], runtime: Any,
                         phase: str) -> Test | None:
    """The rule's if/unless as a test, or None when it has none (always applies)."""
    if rule.cond is None:
        return None
    where = f"{rule.where}.{'unless' if rule.negate else 'if'}"
    return compile_condition(rule.cond, rule.negate, acls, where, runtime, phase)


# header editing on the flat list -------------------------------------------------------

def without(parts: list[bytes], lname: bytes) -> list[bytes]:
    """`parts` minus every header named `lname` (lower-case)."""
    kept: list[bytes] = []
    for i in range(0, len(parts), 4):
        if parts[i].lower() != lname:
            kept += parts[i:i + 4]
    return kept


def _header_value(render: Render, request: Any) -> bytes:
    # A rendered value must not smuggle a header: CR and LF are dropped.
    return render(request).replace("\r", "").replace("\n", "").encode("latin-1", "replace")


def header_edit(action: str, args: HeaderArgs, where: str, runtime: Any,
                phase: str) -> HeaderEdit:
    """An edit of a header list: set_header, add_header or del_header."""
    lname = args.name.lower()
    if lname in PROTECTED:
        raise fail(where, f"{action}: '{args.name}' is managed by the proxy and cannot be changed")
    name = args.name.encode("latin-1")
    lname_b = lname.encode("latin-1")
    if action == "del_header":
        return lambda request, parts: without(parts, lname_b)
    render = compile_template(args.value or "", where, runtime, phase)
    if action == "add_header":
        def add(request: Any, parts: list[bytes]) -> list[bytes]:
            parts += (name, b": ", _header_value(render, request), b"\r\n")
            return parts
        return add

    def set_(request: Any, parts: list[bytes]) -> list[bytes]:
        parts = without(parts, lname_b)
        parts += (name, b": ", _header_value(render, request), b"\r\n")
        return parts
    return set_


# request actions ---------------------------------------------------------------------

def _answer(status: int, body: str | None, content_type: str | None,
            headers: tuple[tuple[str, str], ...] = (), cause: str = "L",
            error: str | None = None) -> Action:
    """deny / return: a fixed response, built once; `cause` and `error` say in the
    access log that the proxy refused (deny) or answered (return) the request."""
    fixed = Answer(status, None if body is None else body.encode(),
                   (content_type or ("text/plain" if body is not None else "text/html")).encode(),
                   tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers))

    def answer(exchange: Any) -> int:
        exchange.set_termination(cause, error)
        exchange.respond(fixed)
        return ANSWERED
    return answer


def _deny(args: DenyArgs) -> Action:
    answer = _answer(args.status, args.body, args.content_type, cause="P", error=DENIED)

    def deny(exchange: Any) -> int:
        exchange.frontend.denied += 1
        return answer(exchange)
    return deny


def _redirect(args: RedirectArgs, where: str, runtime: Any) -> Action:
    code = args.code
    if args.location is not None:
        render = compile_template(args.location, where, runtime, "request")

        def location(exchange: Any) -> str:
            return render(exchange)
    elif args.prefix is not None:
        prefix = args.prefix.rstrip("/")

        def location(exchange: Any) -> str:
            return prefix + exchange.url
    else:
        scheme = args.scheme

        def location(exchange: Any) -> str:
            host = exchange.host_b.decode("latin-1") if exchange.host_b else ""
            return f"{scheme}://{host}{exchange.url}"

    def redirect(exchange: Any) -> int:
        target = location(exchange).replace("\r", "").replace("\n", "")
        headers = ((b"location", target.encode("latin-1", "replace")),)
        exchange.set_termination("L")
        exchange.respond(Answer(code, b"", b"text/plain", headers))
        return ANSWERED
    return redirect


def _set_path(render: Callable[[Any], str]) -> Action:
    def set_path(exchange: Any) -> int:
        query = exchange.query
        path = render(exchange)
        exchange.set_url(path + ("?" + query if query else ""))
        return CONTINUE
    return set_path


def _replace_path(args: ReplacePathArgs) -> Action:
    regex = re.compile(args.regex)
    replace = args.replace

    def replace_path(exchange: Any) -> int:
        query = exchange.query
        path = regex.sub(replace, exchange.path)
        exchange.set_url(path + ("?" + query if query else ""))
        return CONTINUE
    return replace_path


def _track(args: TrackArgs, table: Any, where: str, runtime: Any) -> Action:
    key = compile_template(f"%[{args.key}]", where, runtime, "request")
    counter = args.counter

    def track(exchange: Any) -> int:
        exchange.track(counter, table, key(exchange))
        return CONTINUE
    return track


def _request_header(action: str, args: HeaderArgs, where: str, runtime: Any) -> Action:
    edit = header_edit(action, args, where, runtime, "request")
    lname = args.name.lower().encode("latin-1")

    def apply(exchange: Any) -> int:
        exchange.edit_headers(lname, edit)
        return CONTINUE
    return apply


class AuthRequest:
    """An auth_request action: where its subrequests go, what an allow answer hands on,
    and the allow answers it may reuse (lbproxy/proxy/auth.py does the subrequests)."""

    def __init__(self, args: AuthRequestArgs, where: str, runtime: Any) -> None:
        self.backend = args.backend
        self.path = args.path.encode("latin-1")
        self.copy_headers = tuple(name.lower().encode("latin-1") for name in args.copy_headers)
        self.ttl = args.cache.ttl if args.cache is not None else 0.0
        self.key: Render | None = (compile_template(args.cache.key, f"{where}.cache.key",
                                                    runtime, "request")
                                   if args.cache is not None else None)
        # key -> (until, the headers the allow answer handed on), oldest first
        self.allowed: dict[str, tuple[float, list[tuple[bytes, bytes]]]] = {}


def compile_request_action(rule: RuleConfig, runtime: Any,
                           tables: Callable[[str | None], Any]) -> Action:
    action, args, where = rule.action, rule.args, f"{rule.where}.{rule.action}"
    if action == "allow":
        return lambda exchange: STOP
    if action == "deny":
        return _deny(args)
    if action == "return":
        return _answer(args.status, args.body, args.content_type, args.headers)
    if action == "redirect":
        return _redirect(args, where, runtime)
    if action in ("set_header", "add_header", "del_header"):
        return _request_header(action, args, where, runtime)
    if action == "set_path":
        return _set_path(compile_template(args, where, runtime, "request"))
    if action == "replace_path":
        return _replace_path(args)
    if action.startswith("track_sc"):
        return _track(args, tables(args.table), where, runtime)
    if action == "auth_request":
        check = AuthRequest(args, where, runtime)
        return lambda exchange: exchange.auth_request(check)
    plugin = ACTIONS.get(action)
    if plugin is not None:
        return lambda exchange: exchange.plugin_action(plugin, args)
    raise fail(where, f"unknown action '{action}'")


# the http_request actions compile_request_action builds (plugins may not take these names)
BUILT_IN = frozenset({"allow", "deny", "return", "redirect", "set_header", "add_header",
                      "del_header", "set_path", "replace_path", "track_sc0", "track_sc1",
                      "track_sc2", "auth_request"})

RequestRule = tuple[Test | None, Action]
ResponseRule = tuple[Test | None, HeaderEdit]


class FrontendRules:
    """A frontend's compiled rules. Construction collects every error of every rule and
    raises ConfigError listing them ("FILE:LINE: key.path: message")."""

    def __init__(self, config: FrontendConfig, runtime: Any,
                 tables: Callable[[str | None], Any]) -> None:
        self.errors: list[str] = []
        acls: dict[str, Test] = {}
        for name, acl in config.acls.items():
            compiled = self._compile(lambda: compile_acl(name, acl.patterns, acl.where, runtime))
            if compiled is not None:
                acls[name] = compiled
        self.request: list[RequestRule] = self._all(
            config.http_request, lambda rule: (
                compile_condition_of(rule, acls, runtime, "request"),
                compile_request_action(rule, runtime, tables)))
        self.response: list[ResponseRule] = self._all(
            config.http_response, lambda rule: (
                compile_condition_of(rule, acls, runtime, "response"),
                header_edit(rule.action, rule.args, f"{rule.where}.{rule.action}", runtime,
                            "response")))
        self.unique_id: Render | None = (self._compile(lambda: compile_template(
            config.unique_id.format, f"{config.where}.unique_id.format", runtime, "request"))
            if config.unique_id is not None else None)
        self.use_backend: list[Entry] = self._all(
            config.use_backend, lambda choice: (
                compile_condition_of(choice, acls, runtime, "request"), choice.backend,
                compile_template(choice.backend, f"{choice.where}.backend", runtime, "request")
                if "%[" in choice.backend else None))
        if self.errors:
            raise ConfigError(self.errors)

    def backend_choices(self, backends: Mapping[str, Any]) -> list[Step]:
        """The use_backend entries over live `backends` (name -> what routing returns):
        steps of a condition (None: always) and a function of the request giving the
        backend, or None to go on with the next step (lbproxy/routing/use_backend.py)."""
        return backend_steps(self.use_backend, backends)

    def _compile(self, build: Callable[[], Any]) -> Any:
        try:
            return build()
        except RuleError as exc:
            self.errors.append(str(exc))
            return None

    def _all(self, items: Any, build: Callable[[Any], Any]) -> list[Any]:
        compiled = [self._compile(lambda item=item: build(item)) for item in items]
        return [c for c in compiled if c is not None]
