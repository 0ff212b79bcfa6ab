"""From the merged Node tree to a `Config`: the top level and the small sections.

Sections are read in dependency order (defaults before the frontends and backends that
inherit them, stats before frontends so a bind clash names the first user), whatever their
order in the files. References (use_backend, default_backend, autoscale pools, named stick
tables) are checked against the names defined in the files, so one broken backend does not
also turn every use of it into an error.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from lbproxy.config.autoscale import autoscale
from lbproxy.config.backend import backend
from lbproxy.config.common import cache, listen_address, stick_table, timeouts
from lbproxy.config.fields import (Conv, Section, boolean, choice, file_path, integer,
                                   mapping_of, nonempty, positive_duration, resolve_path,
                                   section, size, text, tuple_of, uri_path)
from lbproxy.config.frontend import Scope, frontend
from lbproxy.config.nodes import Node
from lbproxy.config.plugins import is_file, valid_spec
from lbproxy.config.schema import (LOG_FORMATS, LOG_STREAMS, Address, AuthConfig, Config,
                                   DefaultsConfig, GlobalConfig, LogConfig, StatsConfig,
                                   TimeoutsConfig)


def validate(root: Node, sources: tuple[str, ...]) -> Config:
    """The Config for `root`, reporting every problem on its node (none raised)."""
    s = Section(root)
    bound: dict[Address, Node] = {}
    backends, tables = _names(s, "backends"), _names(s, "stick_tables")
    caches = _names(s, "caches")
    defaults = s.get("defaults", _DEFAULTS, DefaultsConfig())
    scope = Scope(defaults, backends, tables, bound)
    config = Config(
        global_=s.get("global", _GLOBAL, GlobalConfig()),
        defaults=defaults,
        stats=s.get("stats", _stats(bound)),
        stick_tables=s.get("stick_tables", mapping_of(stick_table), {}),
        caches=s.get("caches", mapping_of(cache), {}),
        backends=s.get("backends", mapping_of(lambda name, n: backend(defaults, caches, name, n)),
                       {}),
        frontends=s.get("frontends", mapping_of(lambda name, n: frontend(scope, name, n)), {}),
        autoscale=s.get("autoscale", autoscale(backends)),
        sources=sources,
    )
    s.done()
    if not _names(s, "frontends"):
        # An empty frontends: mapping, or none at all: nothing would ever be served.
        (s.entries.get("frontends") or root).report(
            "no frontend defined: a configuration needs at least one under 'frontends:'")
    return config


def _names(s: Section, key: str) -> tuple[str, ...]:
    """The names defined under `key`, valid or not."""
    node = s.entries.get(key)
    return tuple(node.value) if node is not None and isinstance(node.value, dict) else ()


def _stats(bound: dict[Address, Node]) -> Conv[StatsConfig]:
    return section(StatsConfig, {
        "bind": listen_address(bound),
        "uri": uri_path,
        "refresh": positive_duration,
        "auth": section(AuthConfig, {"username": nonempty, "password": text}),
        "admin": boolean,
    })


def _workers(node: Node) -> int:
    """A number of worker processes, or "auto" for one per CPU."""
    if node.value == "auto":
        return os.cpu_count() or 1
    if isinstance(node.value, str):
        raise ValueError(f"expected a number of processes or 'auto', got '{node.value}'")
    return integer(1)(node)


def _stick_store(node: Node) -> str:
    value = text(node)
    url = urlsplit(value)
    if value != "memory" and not (url.scheme in ("redis", "rediss") and url.hostname):
        raise ValueError(f"expected 'memory' or a redis:// or rediss:// URL, got '{value}'")
    return value


def _log_target(node: Node) -> str:
    """stdout, stderr, or a file (absolute; its directory must exist)."""
    value = nonempty(node)
    if value in LOG_STREAMS:
        return value
    path = file_path(node)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise ValueError(f"cannot write {path}: directory {directory} does not exist")
    return path


def _plugin(node: Node) -> str:
    """A module name, or a .py file relative to this YAML file (imported by
    lbproxy/config/plugins.py before the rest is checked)."""
    spec = nonempty(node)
    if not valid_spec(spec):
        raise ValueError(f"'{spec}' is neither a module name (a.b.c) nor a .py file")
    return resolve_path(node, spec) if is_file(spec) else spec


_GLOBAL = section(GlobalConfig, {
    "workers": _workers,
    "max_connections": integer(1),
    "pidfile": file_path,
    "stick_store": _stick_store,
    "log": section(LogConfig, {"access": _log_target,
                               "format": choice("log format", LOG_FORMATS),
                               "buffer": size}),
    "plugins": tuple_of(_plugin),
})
_DEFAULTS = section(DefaultsConfig, {
    "timeouts": timeouts(TimeoutsConfig()),
    "retries": integer(0),
    "redispatch": boolean,
})
