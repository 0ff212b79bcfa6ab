"""Reading `frontends:`: binds, limits, ACLs, http_request/http_response rules, use_backend.

ACL patterns and `if:`/`unless:` conditions are kept as raw strings with their `where`: the
routing compiler parses them (and checks ACL names) later. What can be checked without
that compiler is checked here: action arguments, backend and stick-table references.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lbproxy.config.common import COMPRESSION, listen_address, stick_table, timeouts
from lbproxy.config.errors import unknown
from lbproxy.config.fields import (Conv, Dropped, Section, boolean, choice, convert, integer,
                                   mapping_of, nonempty, plain, positive_duration,
                                   readable_file, section, size, string_map, text, token,
                                   tuple_of, uri_path)
from lbproxy.config.nodes import Node
from lbproxy.config.schema import (ALPN_PROTOCOLS, TLS13_CIPHERSUITES, TLS_VERSIONS, AclConfig,
                                   Address, AuthCacheArgs, AuthRequestArgs, BindConfig,
                                   BindTLSConfig, CertConfig, DefaultsConfig, DenyArgs,
                                   ForwardedConfig, FrontendConfig, HeaderArgs, Http2Config,
                                   LimitsConfig, RedirectArgs, ReplacePathArgs, ReturnArgs,
                                   RuleConfig, TrackArgs, UniqueIdConfig, UseBackendConfig)
from lbproxy.extensions import ACTIONS, PluginAction

REDIRECT_CODES = (301, 302, 303, 307, 308)
STICK_COUNTERS = 3                                            # track_sc0 .. track_sc2
_FAILED = object()                                            # an action's arguments were bad


@dataclass(frozen=True, slots=True)
class Scope:
    """What a frontend may refer to, and the addresses bound so far."""

    defaults: DefaultsConfig
    backends: Sequence[str]
    tables: Sequence[str]
    bound: dict[Address, Node]


def frontend(scope: Scope, name: str, node: Node) -> FrontendConfig:
    s = Section(node)
    own_table = s.get("stick_table", lambda n: stick_table(name, n))
    listen = listen_address(scope.bound)
    return s.build(FrontendConfig, {
        "bind": tuple_of(lambda n: _bind(listen, n), single=True, allow_empty=False),
        "accept_proxy": boolean,
        "maxconn": integer(0),
        "timeouts": timeouts(scope.defaults.timeouts),
        "limits": _LIMITS,
        "forwarded": _FORWARDED,
        "http2": _HTTP2,
        "compression": COMPRESSION,
        "acls": mapping_of(_acl),
        "unique_id": section(UniqueIdConfig, {"header": _header_name, "format": nonempty}),
        "http_request": tuple_of(_rule(_request_actions(scope, s.has("stick_table")))),
        "http_response": tuple_of(_rule(_RESPONSE_ACTIONS)),
        "use_backend": tuple_of(_use_backend(scope.backends)),
        "default_backend": choice("backend", scope.backends),
    }, name=name, stick_table=own_table, timeouts=scope.defaults.timeouts)


# --- binds, limits, forwarded headers -------------------------------------------------------

_BIND_TLS = section(BindTLSConfig, {
    "certificates": tuple_of(section(CertConfig, {"cert": readable_file, "key": readable_file}),
                             allow_empty=False),
    "min_version": choice("TLS version", TLS_VERSIONS),
    "ciphers": nonempty,
    "ciphersuites": tuple_of(choice("TLS 1.3 cipher suite", TLS13_CIPHERSUITES), single=True,
                             allow_empty=False),
    "alpn": tuple_of(choice("ALPN protocol", ALPN_PROTOCOLS), single=True, allow_empty=False),
})


def _bind(listen: Conv[Address], node: Node) -> BindConfig:
    """`":8080"` or `{address: ":8443", tls: {...}}` or `{address: ":8081", h2c: true}`."""
    if node.is_scalar:
        return BindConfig(listen(node), where=node.where)
    section_ = Section(node)
    bind = section_.build(BindConfig, {"address": listen, "tls": _BIND_TLS, "h2c": boolean})
    if bind.h2c and bind.tls is not None:
        section_.report("h2c", "h2c is cleartext HTTP/2: a TLS bind offers h2 by ALPN")
    return bind


def _window(node: Node) -> int:
    value = size(node)
    if not 65535 <= value <= (1 << 31) - 1:
        raise ValueError("must be from 64k (65535) to 2g - 1 (the HTTP/2 limits)")
    return value


_HTTP2 = section(Http2Config, {
    "max_concurrent_streams": integer(1, 1 << 20),
    "initial_window_size": _window,
    "max_header_list_size": size,
})


def _ip_or_cidr(node: Node) -> str:
    value = text(node).strip()
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"invalid IP address or CIDR '{value}'") from None
    return value


_LIMITS = section(LimitsConfig, {
    "max_header_size": size, "max_headers": integer(1), "max_body_size": size})
_FORWARDED = section(ForwardedConfig, {
    "x_forwarded_for": boolean, "x_forwarded_proto": boolean, "x_forwarded_host": boolean,
    "trusted_proxies": tuple_of(_ip_or_cidr, single=True),
})


def _acl(name: str, node: Node) -> AclConfig:
    """An ACL: one pattern string, or a list of them (ORed)."""
    return AclConfig(name, tuple_of(nonempty, single=True, allow_empty=False)(node), node.where)


# --- conditions, rules, use_backend ---------------------------------------------------------

def _condition(s: Section) -> tuple[str | None, bool]:
    """(`if:` or `unless:` expression, negate) of a rule; at most one of the two."""
    when, unless = s.get("if", nonempty), s.get("unless", nonempty)
    if when is not None and unless is not None:
        s.report("unless", "use either 'if' or 'unless', not both")
    return (when, False) if unless is None else (unless, True)


def _use_backend(backends: Sequence[str]) -> Conv[UseBackendConfig]:
    """`{backend: NAME, if: ...}`; a NAME with `%[` is a template, compiled with the rules
    and rendered per request (a result that names no backend falls through)."""
    named = choice("backend", backends)

    def backend(node: Node) -> str:
        return nonempty(node) if "%[" in text(node) else named(node)

    def conv(node: Node) -> UseBackendConfig:
        s = Section(node)
        cond, negate = _condition(s)
        return s.build(UseBackendConfig, {"backend": backend}, cond=cond, negate=negate)
    return conv


def _rule(actions: Mapping[str, Conv[object]]) -> Conv[RuleConfig]:
    """A rule: exactly one action key (its value is the action's arguments) + if/unless."""
    def conv(node: Node) -> RuleConfig:
        s = Section(node)
        cond, negate = _condition(s)
        names = [key for key in s.entries if key not in ("if", "unless")]
        given = [key for key in names if key in actions]
        if len(given) == 1:
            action = given[0]
            s.known.append(action)
            s.done()                    # any other key is unknown (did you mean 'if'?)
        elif len(names) == 1:
            s.report(names[0], unknown("action", names[0], list(actions)))
            raise Dropped
        else:
            found = f", got {', '.join(names)}" if names else ""
            raise ValueError(f"a rule needs exactly one action ({', '.join(actions)}){found}")
        args = convert(s.entries[action], actions[action], _FAILED)
        if args is _FAILED:
            raise Dropped
        return RuleConfig(action, args, cond, negate, node.where)
    return conv


def _no_args(node: Node) -> None:
    if node.value is not None:
        raise ValueError("takes no arguments (write the action name with nothing after the ':')")


def _optional(cls: type, convs: Mapping[str, Conv[object]]) -> Conv[object]:
    """Arguments that may be left out entirely (`deny:`), each with its default."""
    read: Conv[object] = section(cls, convs)
    return lambda node: cls() if node.value is None else read(node)


def _one_of(values: tuple[int, ...]) -> Conv[int]:
    def conv(node: Node) -> int:
        value = integer(0)(node)
        if value not in values:
            raise ValueError(f"must be one of {', '.join(map(str, values))}, got {value}")
        return value
    return conv


_REDIRECT_ARGS = section(RedirectArgs, {"location": nonempty, "prefix": nonempty,
                                         "scheme": nonempty, "code": _one_of(REDIRECT_CODES)})


def _redirect(node: Node) -> RedirectArgs:
    args = _REDIRECT_ARGS(node)
    if sum(v is not None for v in (args.location, args.prefix, args.scheme)) != 1:
        raise ValueError("needs exactly one of location, prefix, scheme")
    return args


_header_name = token("header name")


def _set_header(node: Node) -> HeaderArgs:
    s = Section(node)
    args = s.build(HeaderArgs, {"name": _header_name, "value": text})
    if args.value is None:
        if not s.has("value"):
            s.report("value", "missing required key 'value'")
        raise Dropped
    return args


def _del_header(node: Node) -> HeaderArgs:
    """`del_header: Server` or `del_header: {name: Server}`."""
    if node.is_scalar:
        return HeaderArgs(_header_name(node))
    return section(HeaderArgs, {"name": _header_name})(node)


def _regex(node: Node) -> str:
    value = text(node)
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression '{value}': {exc}") from None
    return value


def _track(counter: int, tables: Sequence[str], own_table: bool) -> Conv[TrackArgs]:
    """`track_scN: KEY` or `{key: KEY, table: NAME}`; no table = the section's own table."""
    def conv(node: Node) -> TrackArgs:
        s = None if node.is_scalar else Section(node)
        if s is None:
            args = TrackArgs(counter, nonempty(node))
        else:
            args = s.build(TrackArgs, {"key": nonempty, "table": choice("stick table", tables)},
                           counter=counter)
        if args.table is None and not own_table and not (s and s.has("table")):
            raise ValueError("stick counter with no table: name one with 'table:' or give "
                             "this frontend a stick_table")
        return args
    return conv


_HEADER_ACTIONS: dict[str, Conv[object]] = {
    "set_header": _set_header, "add_header": _set_header, "del_header": _del_header}
_RESPONSE_ACTIONS = _HEADER_ACTIONS


def _request_actions(scope: Scope, own_table: bool) -> dict[str, Conv[object]]:
    """The http_request actions; the track_scN ones depend on the tables in reach."""
    tables = scope.tables
    return {
        "allow": _no_args,
        "deny": _optional(DenyArgs, {"status": integer(200, 599), "body": text,
                                     "content_type": nonempty}),
        "return": _optional(ReturnArgs, {"status": integer(200, 599), "body": text,
                                         "content_type": nonempty,
                                         "headers": lambda n: tuple(string_map(n).items())}),
        "redirect": _redirect,
        **_HEADER_ACTIONS,
        "set_path": nonempty,
        "replace_path": section(ReplacePathArgs, {"regex": _regex, "replace": text}),
        **{f"track_sc{n}": _track(n, tables, own_table) for n in range(STICK_COUNTERS)},
        "auth_request": section(AuthRequestArgs, {
            "backend": choice("backend", scope.backends),
            "path": uri_path,
            "copy_headers": tuple_of(_header_name, single=True),
            "cache": section(AuthCacheArgs, {"ttl": positive_duration, "key": nonempty})}),
        **{name: _plugin_args(plugin) for name, plugin in ACTIONS.items()},
    }


def _plugin_args(plugin: PluginAction) -> Conv[object]:
    """A plugin action's arguments: the YAML value as plain Python, checked by the
    plugin's own `check` when it has one."""
    def conv(node: Node) -> object:
        args = plain(node)
        if plugin.check is not None:
            try:
                plugin.check(args)
            except ValueError as exc:
                raise ValueError(f"{plugin.name}: {exc}") from None
        return args
    return conv
