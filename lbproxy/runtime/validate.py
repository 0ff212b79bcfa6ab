"""Everything `lbproxy check` verifies beyond the schema: rules compile (ACL names,
conditions, fetches, templates), stick tables are named once, certificates and keys
load. `run`, `check` and a reload all go through `load_checked`, so they accept and
refuse the same files.

These checks run even when the loader found problems, on the part of the configuration
that is valid, so one load reports every error (an unset environment variable does not
hide the certificate errors behind it). A check is skipped only where a loader problem
would make it repeat or misread that problem: rules of a frontend that lost part of
itself, or that may name a table or backend that was left out.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import re
import ssl
import sys
from collections.abc import Callable
from typing import TypeVar

from lbproxy.config.errors import ConfigError, Problems
from lbproxy.config.plugins import import_plugin
from lbproxy.config.load import load_partial
from lbproxy.config.schema import Config, FrontendConfig, StickTableConfig
from lbproxy.proxy.tls import client_context, server_context
from lbproxy.routing.actions import FrontendRules
from lbproxy.routing.maps import MapFiles
from lbproxy.routing.runtime import RuleRuntime
from lbproxy.slicing import paced

T = TypeVar("T")


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


def compile_frontends(config: Config, runtime: RuleRuntime, tables: dict,
                      skip: Callable[[str], bool] = lambda _name: False,
                      ) -> tuple[dict[str, FrontendRules], list[str]]:
    """Every frontend's rules compiled; `skip(name)` leaves a frontend out (checks only)."""
    rules, errors = {}, []
    for name, frontend in config.frontends.items():
        if skip(name):
            continue
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
        if bind.tls is None or not bind.tls.certificates:   # none left: each one reported
            contexts.append(None)
            continue
        try:
            contexts.append(server_context(bind.tls, f"{bind.where}.tls", str(bind.address)))
        except ConfigError as exc:
            errors.extend(exc.errors)
            contexts.append(None)
    return contexts, errors


def tls_errors(config: Config) -> list[str]:
    """Certificate, key and CA problems of every bind and server, with their files.

    The loader has already checked that each of these files can be read, on the key's
    own line (lbproxy/config/fields.py `readable_file`); the same finding from the TLS
    layer, which only knows the section's line, is left out."""
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
    return [error for error in errors if ": cannot read " not in error]


def _rules_skipped(config: Config, problems: Problems) -> Callable[[str], bool]:
    """Which frontends' rules not to compile after loader problems: one whose own
    section had a problem (an ACL or a table of it may be missing), and every one when a
    shared stick table or a backend may be missing (a rule naming it would be reported
    again, as unknown), or a whole file could not be read."""
    shared_lost = ("" in problems.paths or problems.under("stick_tables")
                   or _backend_lost(config, problems))
    return lambda name: shared_lost or problems.under(f"frontends.{name}")


def _backend_lost(config: Config, problems: Problems) -> bool:
    """Whether a backend, or a backend's own stick table, may be missing from `config`."""
    for path in problems.paths:
        if path != "backends" and not path.startswith("backends."):
            continue
        owner = next((name for name in config.backends
                      if problems.under(f"backends.{name}") and (
                          path == f"backends.{name}"
                          or path.startswith((f"backends.{name}.", f"backends.{name}[")))),
                     None)
        if owner is None or path.startswith(f"backends.{owner}.stick_table"):
            return True
    return False


# From this size on, a reload reads the configuration in a child process: parsing holds
# the GIL for long stretches (libyaml composes a whole document in one call), so a thread
# would still stall the event loop; a smaller one is read at once (a few milliseconds).
OFF_LOOP_BYTES = 256 * 1024
SWITCH = 0.0005    # seconds: the GIL's switch interval while a reload reads beside the loop
_CHILD = ("import sys\n"
          "from lbproxy.runtime.validate import pickled_load\n"
          "sys.stdout.buffer.write(pickled_load(sys.argv[1]))\n")


async def load_checked_off_loop(path: str | os.PathLike[str],
                                maps: MapFiles | None = None) -> Config:
    """load_checked for a running proxy: a large configuration is read and checked by a
    child Python (`python -c`, importing lbproxy), so traffic goes on meanwhile; only the
    result is unpickled here, in a thread. A small one is read in a thread. If the child
    cannot run, it is read here after all. The map files are read into `maps` unless the
    child checked them (then the rules' compilation reads them)."""
    if _yaml_bytes(path) < OFF_LOOP_BYTES:
        # a thread is enough: the YAML is small, and reading map files (100,000 lines:
        # ~90 ms) is Python code that lets the loop have the GIL every switch interval
        return await _beside_the_loop(load_checked, path, maps)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, os.fspath(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await child.communicate()
    if child.returncode != 0:
        return load_checked(path, maps)
    # In a thread: the dataclasses' __setstate__ is Python code, so the loop gets the GIL
    # back every switch interval instead of waiting for the whole result (74 -> ~40 ms
    # longest stall at 5,000 servers; what is left is mostly the garbage collector).
    result = await _beside_the_loop(pickle.loads, out)
    if isinstance(result, ConfigError):
        raise result
    for spec in result.global_.plugins:      # what the child imported, here too
        try:
            import_plugin(spec)
        except Exception as exc:
            raise ConfigError([f"cannot import plugin '{spec}': {type(exc).__name__}: {exc}"]
                              ) from None
    return result


async def _beside_the_loop(work: Callable[..., T], *args: object) -> T:
    """`work` in a thread, the GIL changing hands every SWITCH seconds meanwhile instead
    of Python's 5 ms: the loop waits that long at most each time it wants the GIL back,
    which it does for every batch of traffic (at 5,000 servers a reload reads for a few
    hundred milliseconds; p99 lateness of a 1 ms timer 13-18 -> 8-12 ms)."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH)
    try:
        return await asyncio.to_thread(_paced, work, *args)
    finally:
        sys.setswitchinterval(interval)


def _paced(work: Callable[..., T], *args: object) -> T:
    """`work` with the loader's pace() calls sleeping: the loop keeps two thirds of the GIL."""
    with paced():
        return work(*args)


def pickled_load(path: str) -> bytes:
    """The child's side of load_checked_off_loop: the Config, or the ConfigError."""
    try:
        return pickle.dumps(load_checked(path), pickle.HIGHEST_PROTOCOL)
    except ConfigError as exc:
        return pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)


def _yaml_bytes(path: str | os.PathLike[str]) -> int:
    if not os.path.isdir(path):
        return os.path.getsize(path) if os.path.exists(path) else 0
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names
               if name.endswith((".yaml", ".yml")))


def load_checked(path: str | os.PathLike[str], maps: MapFiles | None = None) -> Config:
    """The loader plus the checks above; raises ConfigError with every problem of both,
    in file and line order. The map files the rules name are read into `maps` (a fresh
    registry when None), so a reload that goes on to compile the rules again reads
    each file once."""
    config, problems = load_partial(path)
    tables, errors = table_configs(config)
    skip = _rules_skipped(config, problems) if problems else (lambda _name: False)
    _, rule_errors = compile_frontends(config, RuleRuntime(config.backends, maps),
                                       {table.name: table for table in tables}, skip)
    errors += rule_errors + tls_errors(config)
    if problems or errors:
        found = problems.error(config.sources).errors if problems else []
        raise ConfigError(sort_errors(found + errors, config.sources))
    return config


_POSITION = re.compile(r"(.*?):(\d+): ")


def sort_errors(errors: list[str], files: tuple[str, ...]) -> list[str]:
    """`FILE:LINE: ...` lines in the order of `files`, then by line (stable otherwise)."""
    rank = {file: i for i, file in enumerate(files)}

    def key(error: str) -> tuple[int, int]:
        match = _POSITION.match(error)
        if match is None:
            return (-1, 0)
        return (rank.get(match[1], len(files)), int(match[2]))
    return sorted(errors, key=key)
