"""docs/configuration.md stays the reference of what the code does.

Each configuration section of the schema (a dataclass in lbproxy/config/schema.py) has
a heading in the reference naming its key path, followed by a table whose first column
lists its keys. The tests compare the two both ways (a key missing from the reference,
or documented but unknown to the loader), and compare every default written as a single
literal with the dataclass's. Fetches, converters, map kinds, actions, enumerations, API
routes, metrics, commands and signals must each be named in the reference.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbproxy.admin import api
from lbproxy.admin.metrics import render
from lbproxy.cli import build_parser
from lbproxy.config import schema
from lbproxy.config.durations import parse_duration, parse_size
from lbproxy.config.errors import ConfigError
from lbproxy.config.frontend import _RESPONSE_ACTIONS, Scope, _request_actions
from lbproxy.config.schema import DefaultsConfig
from lbproxy.routing.converters import CONVERTERS
from lbproxy.routing.fetches import FETCHES, SUFFIXES
from lbproxy.routing.maps import KINDS
from lbproxy.runtime.validate import load_checked
from tests.unit.dataplane import DataPlane
from tests.unit.dataplane import config as dataplane_config

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
PLACEHOLDER = re.compile(r"\{[^}]*\}")

# Heading path -> (dataclass, its fields that are no YAML key of that section: names
# taken from a mapping key or filled in by the loader).
SECTIONS: dict[str, tuple[type, frozenset[str]]] = {
    "global": (schema.GlobalConfig, frozenset()),
    "global.log": (schema.LogConfig, frozenset()),
    "defaults": (schema.DefaultsConfig, frozenset()),
    "timeouts": (schema.TimeoutsConfig, frozenset()),
    "stats": (schema.StatsConfig, frozenset()),
    "stats.auth": (schema.AuthConfig, frozenset()),
    "stick_tables.<name>": (schema.StickTableConfig, frozenset({"name", "where"})),
    "caches.<name>": (schema.CacheConfig, frozenset({"name"})),
    "frontends.<name>": (schema.FrontendConfig, frozenset({"name", "where"})),
    "frontends.<name>.bind[]": (schema.BindConfig, frozenset({"where"})),
    "frontends.<name>.bind[].tls": (schema.BindTLSConfig, frozenset()),
    "frontends.<name>.bind[].tls.certificates[]": (schema.CertConfig, frozenset()),
    "frontends.<name>.limits": (schema.LimitsConfig, frozenset()),
    "frontends.<name>.forwarded": (schema.ForwardedConfig, frozenset()),
    "frontends.<name>.http2": (schema.Http2Config, frozenset()),
    "compression": (schema.CompressionConfig, frozenset()),
    "frontends.<name>.unique_id": (schema.UniqueIdConfig, frozenset()),
    "backends.<name>": (schema.BackendConfig, frozenset({"name", "balance_arg", "where"})),
    "backends.<name>.cookie": (schema.CookieConfig, frozenset()),
    "backends.<name>.health_check": (schema.HealthCheckConfig, frozenset()),
    "backends.<name>.passive": (schema.PassiveConfig, frozenset()),
    "backends.<name>.servers[]": (schema.ServerConfig, frozenset({"where"})),
    "backends.<name>.servers[].tls": (schema.ServerTLSConfig, frozenset()),
    "backends.<name>.server_template": (schema.ServerTemplateConfig, frozenset({"where"})),
    "autoscale": (schema.AutoscaleConfig, frozenset()),
    "autoscale.api": (schema.AutoscaleApiConfig, frozenset()),
    "autoscale.pools.<backend>": (schema.PoolConfig, frozenset({"backend", "where"})),
    "autoscale.pools.<backend>.provider": (schema.ProviderConfig, frozenset()),
    "autoscale.pools.<backend>.metrics[]": (schema.MetricConfig, frozenset()),
    "autoscale.pools.<backend>.scale_up": (schema.ScaleConfig, frozenset()),
    "autoscale.pools.<backend>.predictive": (schema.PredictiveConfig, frozenset()),
}
# Keys the loader requires although the dataclass has a default, and the reverse.
REQUIRED_BY_LOADER = {("Top level", "frontends")}
DEFAULT_FROM_ELSEWHERE = {("autoscale.pools.<backend>.scale_up", key) for key in
                          ("cooldown", "max_step", "factor", "stabilization")}

# Arguments of each action (all of TrackArgs but the counter, which is in the name).
ACTION_ARGS: dict[str, tuple[str, ...]] = {
    "deny": tuple(f.name for f in dataclasses.fields(schema.DenyArgs)),
    "return": tuple(f.name for f in dataclasses.fields(schema.ReturnArgs)),
    "redirect": tuple(f.name for f in dataclasses.fields(schema.RedirectArgs)),
    "set_header": ("name", "value"), "add_header": ("name", "value"), "del_header": ("name",),
    "replace_path": tuple(f.name for f in dataclasses.fields(schema.ReplacePathArgs)),
    **{f"track_sc{n}": ("key", "table") for n in range(3)},
    "auth_request": tuple(f.name for f in dataclasses.fields(schema.AuthRequestArgs)),
}


# --- reading the reference -------------------------------------------------------------------

def text() -> str:
    return REFERENCE.read_text()


def tables() -> dict[str, list[list[str]]]:
    """For each heading, the rows (cells) of the tables below it, header rows left out. A
    heading's key is the first `code` in it (the key path), else its words."""
    found: dict[str, list[list[str]]] = {}
    heading: str | None = None
    for line in text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip()
            code = re.search(r"`([^`]+)`", title)
            heading = code[1] if code else title
            continue
        if heading is None or not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows = found.setdefault(heading, [])
        if set("".join(cells)) <= set("-: "):
            rows.pop()                       # the header row above the separator
            continue
        rows.append(cells)
    return found


def first_codes(rows: list[list[str]]) -> dict[str, list[str]]:
    """Each code span of a row's first cell (`a`, `b` both count) -> that row."""
    keys: dict[str, list[str]] = {}
    for row in rows:
        for code in re.findall(r"`([^`]+)`", row[0]):
            keys[code] = row
    return keys


def yaml_key(field: dataclasses.Field) -> str:
    return "global" if field.name == "global_" else field.name


# --- schema keys -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", SECTIONS)
def test_every_key_of_the_schema_is_in_the_reference(path: str) -> None:
    cls, internal = SECTIONS[path]
    rows = tables().get(path)
    assert rows, f"docs/configuration.md has no table under a heading `{path}`"
    documented = set(first_codes(rows))
    keys = {yaml_key(f) for f in dataclasses.fields(cls) if f.name not in internal}
    assert keys - documented == set(), f"{path}: keys missing from the reference"
    assert documented - keys == set(), f"{path}: documented keys the loader does not know"


# Dataclasses of the schema that are not a section with a key table: the whole file, values
# written as strings, and rules, whose keys are action names and if/unless (tested below).
NOT_SECTIONS = {schema.Config, schema.Address, schema.StoreItem, schema.AclConfig,
                schema.RuleConfig, schema.UseBackendConfig, schema.DenyArgs, schema.ReturnArgs,
                schema.RedirectArgs, schema.HeaderArgs, schema.ReplacePathArgs,
                schema.TrackArgs, schema.AuthRequestArgs, schema.AuthCacheArgs}


def test_every_section_of_the_schema_has_a_heading() -> None:
    """A new section dataclass must be added to SECTIONS, and so to the reference."""
    classes = {value for value in vars(schema).values()
               if isinstance(value, type) and dataclasses.is_dataclass(value)}
    covered = {cls for cls, _ in SECTIONS.values()}
    assert classes - covered - NOT_SECTIONS == set()


def test_the_top_level_sections_are_in_the_reference() -> None:
    documented = set(first_codes(tables()["Top level"]))
    keys = {yaml_key(f) for f in dataclasses.fields(schema.Config) if f.name != "sources"}
    assert documented == keys


def _matches(literal: str, default: Any) -> bool:
    """Whether the YAML literal `literal` reads as `default` for a key of that type."""
    value = yaml.safe_load(literal)
    if isinstance(default, bool) or default is None or isinstance(default, str):
        return value == default
    if isinstance(default, float):
        return parse_duration(value) == default
    if isinstance(default, int):
        return value == default or parse_size(value) == default
    if isinstance(default, tuple) and len(default) == 2 and isinstance(value, str):
        low, _, high = value.partition("-")
        return (int(low), int(high)) == default
    if isinstance(default, tuple):
        return tuple(value) == default
    return value == default


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


@pytest.mark.parametrize("path", ["Top level", *SECTIONS])
def test_documented_defaults_are_the_codes(path: str) -> None:
    """`required` only for keys without a default; `none` for None; a single `literal`
    must read as the default. Other wordings ("from `defaults`") are not compared."""
    cls, internal = SECTIONS.get(path, (schema.Config, frozenset({"sources"})))
    rows = first_codes(tables()[path])
    for field in dataclasses.fields(cls):
        if field.name in internal:
            continue
        key = yaml_key(field)
        cell = rows[key][2]
        default = _default(field)
        required = (default is dataclasses.MISSING and (path, key) not in DEFAULT_FROM_ELSEWHERE
                    or (path, key) in REQUIRED_BY_LOADER)
        assert (cell == "required") == required, f"{path}.{key}: default cell {cell!r}"
        if required:
            continue
        literal = re.fullmatch(r"`([^`]*)`", cell)
        if cell == "none":
            assert default is None, f"{path}.{key}: documented as none, default {default!r}"
        elif literal:
            assert _matches(literal[1], default), \
                f"{path}.{key}: documented default {cell}, the code's is {default!r}"


# --- rules -----------------------------------------------------------------------------------

def test_every_fetch_is_in_the_reference() -> None:
    documented = {code.partition("(")[0] for code in first_codes(tables()["Fetches"])}
    assert set(FETCHES) - documented == set()
    assert documented - set(FETCHES) == set()
    for suffix in SUFFIXES:
        assert f"`_{suffix}`" in text()


def test_every_converter_and_map_kind_is_in_the_reference() -> None:
    documented = {code.partition("(")[0] for code in first_codes(tables()["Converters"])}
    assert documented == set(CONVERTERS)
    kinds = set(first_codes(tables()["Map files"]))
    assert kinds == set(KINDS)


def test_every_action_and_its_arguments_are_in_the_reference() -> None:
    request = first_codes(tables()["http_request"])
    assert set(_request_actions(Scope(DefaultsConfig(), [], [], {}), True)) == set(request)
    for action, args in ACTION_ARGS.items():
        for arg in args:
            assert f"`{arg}`" in request[action][1], f"{action}: argument {arg} not documented"
    response_section = text().split("### `http_response` actions", 1)[1].split("\n## ", 1)[0]
    for action in _RESPONSE_ACTIONS:
        assert f"`{action}`" in response_section


@pytest.mark.parametrize("values", [
    schema.ALGORITHMS, schema.HASH_TYPES, schema.HTTP_REUSE, schema.LOG_FORMATS,
    schema.LOG_STREAMS, schema.COOKIE_MODES, schema.HEALTH_CHECK_TYPES, schema.SERVER_STATES,
    schema.TLS_VERIFY, schema.TLS_VERSIONS, schema.ALPN_PROTOCOLS, schema.BACKEND_PROTOCOLS,
    schema.TABLE_TYPES,
    schema.STORE_RATES, schema.STORE_COUNTERS, schema.RETRY_EVENTS, schema.PROVIDER_TYPES,
    schema.POLICIES, schema.METRIC_TYPES], ids=lambda values: values[0])
def test_every_enumeration_value_is_in_the_reference(values: tuple[str, ...]) -> None:
    for value in values:
        assert re.search(rf"`{re.escape(value)}[`(]", text()), f"{value} is not documented"


def test_every_retry_event_has_a_row() -> None:
    assert set(schema.RETRY_EVENTS) <= set(first_codes(tables()["retry_on"]))


def test_every_algorithm_has_a_row() -> None:
    documented = {code.partition("(")[0] for code in first_codes(tables()["Balancing algorithms"])}
    assert documented == set(schema.ALGORITHMS)


# --- operating -------------------------------------------------------------------------------

def _route(code: str) -> str:
    method, _, path = code.partition(" ")
    return f"{method} {PLACEHOLDER.sub('{}', path.partition('?')[0])}"


def test_every_api_route_is_in_the_reference() -> None:
    documented = {_route(code) for code in first_codes(tables()["Stats, metrics and the runtime API"])}
    routes = {f"{route.method} {PLACEHOLDER.sub('{}', route.path)}" for route in api.routes}
    routes |= {"GET /health", "GET /metrics", "GET /stats", "GET /stats;csv"}
    assert routes - documented == set()


def test_every_metric_is_in_the_reference() -> None:
    """Every family a real engine's /metrics yields (counters with their `_total`)."""
    exposition = render(DataPlane(dataplane_config()).engine).decode()
    names = {line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE ")}
    rows = tables()["Stats, metrics and the runtime API"]
    section = text().split("## Stats, metrics and the runtime API", 1)[1].split("\n## ", 1)[0]
    assert rows and all(f"`{name}`" in section for name in names), \
        sorted(name for name in names if f"`{name}`" not in section)


def test_every_command_option_and_signal_is_in_the_reference() -> None:
    parser = build_parser()
    commands = first_codes(tables()["Command line"])
    documented = " ".join(commands)
    sub = next(a for a in parser._actions if a.choices)      # noqa: SLF001 (argparse API)
    for name, command in sub.choices.items():
        assert f"lbproxy {name}" in documented, f"command {name} is not documented"
        for action in command._actions:                      # noqa: SLF001
            for option in action.option_strings:
                if option.startswith("--") and action.help != "==SUPPRESS==" \
                        and option not in ("--help", "--config"):
                    assert option in documented, f"{name} {option} is not documented"
    assert "lbproxy --version" in documented
    signals = first_codes(tables()["Signals"])
    assert {"SIGHUP", "SIGTERM", "SIGINT", "SIGUSR1"} <= set(signals)
    codes = {row[0] for row in tables()["Command line"] if row[0].isdigit()}
    assert codes == {"0", "1", "2"}


# What "Not yet supported" lists, and how a configuration would ask for it: each must be
# refused by the loader. When one is built, this fails: move it out of that section.
NOT_YET = {
    "HTTP/3": "frontends: {web: {bind: [{address: ':443', quic: true}]}}\n",
}
BASE = {"frontends": {"web": {"bind": ["127.0.0.1:8080"], "default_backend": "app"}},
        "backends": {"app": {"servers": [{"name": "a", "address": "127.0.0.1:9"}]}}}


def _merged(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (_merged(base[key], value) if isinstance(value, dict)
                       and isinstance(base.get(key), dict) else value)
    return merged


@pytest.mark.parametrize("feature", NOT_YET)
def test_what_is_not_yet_supported_is_listed_and_refused(feature: str, tmp_path: Path) -> None:
    section = text().split("## Not yet supported", 1)[1]
    assert feature.lower() in section.lower(), f"{feature} is not listed as not supported"
    path = tmp_path / "lb.yaml"
    path.write_text(yaml.safe_dump(BASE))
    load_checked(path)                                  # the base alone is fine
    path.write_text(yaml.safe_dump(_merged(BASE, yaml.safe_load(NOT_YET[feature]))))
    with pytest.raises(ConfigError):
        load_checked(path)
