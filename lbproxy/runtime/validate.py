"""Everything `lbproxy check` verifies beyond the schema: rules compile (ACL names,
conditions, fetches, templates), stick tables are named once, certificates and keys
load. `run`, `check` and a reload all go through `load_checked`, so they accept and
refuse the same files."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable

from lbproxy.config.errors import ConfigError
from lbproxy.config.load import load_config
from lbproxy.config.schema import Config, FrontendConfig, StickTableConfig
from lbproxy.proxy.tls import client_context, server_context
from lbproxy.routing.actions import FrontendRules
from lbproxy.routing.runtime import RuleRuntime


def table_configs(config: Config) -> tuple[list[StickTableConfig], list[str]]:
    """Every stick table: the shared ones and each section's own (named after it)."""
    tables = list(config.stick_tables.values())
    errors = []
    seen = {table.name: table for table in tables}
    for section in (*config.frontends.values(), *config.backends.values()):
        own = section.stick_table
        if own is None:
            continue
        if own.name in seen:
            errors.append(f"{own.where}: stick table name '{own.name}' is also "
                          f"defined at {seen[own.name].where.split(': ')[0]}")
        seen[own.name] = own
        tables.append(own)
    return tables, errors


def table_lookup(tables: dict, section: str) -> Callable[[str | None], object]:
    """For track_scN: a named table, or (None) the section's own table."""
    return lambda name: tables[section if name is None else name]


def compile_frontends(config: Config, runtime: RuleRuntime,
                      tables: dict) -> tuple[dict[str, FrontendRules], list[str]]:
    rules, errors = {}, []
    for name, frontend in config.frontends.items():
        try:
            rules[name] = FrontendRules(frontend, runtime, table_lookup(tables, name))
        except ConfigError as exc:
            errors.extend(exc.errors)
    return rules, errors


def bind_contexts(frontend: FrontendConfig) -> tuple[list[ssl.SSLContext | None], list[str]]:
    """The TLS context of each bind of `frontend` (None for plain TCP)."""
    contexts: list[ssl.SSLContext | None] = []
    errors: list[str] = []
    for bind in frontend.bind:
        if bind.tls is None:
            contexts.append(None)
            continue
        if frontend.accept_proxy:
            errors.append(f"{bind.where}.tls: accept_proxy together with tls is not "
                          f"supported yet")
        try:
            contexts.append(server_context(bind.tls, f"{bind.where}.tls"))
        except ConfigError as exc:
            errors.extend(exc.errors)
            contexts.append(None)
    return contexts, errors


def tls_errors(config: Config) -> list[str]:
    """Certificate, key and CA problems of every bind and server, with their files."""
    errors: list[str] = []
    for frontend in config.frontends.values():
        errors += bind_contexts(frontend)[1]
    for backend in config.backends.values():
        for server in backend.servers:
            if server.tls is not None:
                try:
                    client_context(server.tls, f"{server.where}.tls")
                except ConfigError as exc:
                    errors.extend(exc.errors)
    return errors


def load_checked(path: str | os.PathLike[str]) -> Config:
    """load_config plus the checks above; raises ConfigError with every problem."""
    config = load_config(path)
    tables, errors = table_configs(config)
    _, rule_errors = compile_frontends(config, RuleRuntime(config.backends),
                                       {table.name: table for table in tables})
    errors += rule_errors + tls_errors(config)
    if errors:
        raise ConfigError(errors)
    return config
