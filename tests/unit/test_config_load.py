"""load_config: the full example, conf.d directories, ${ENV}, and "not supported yet"."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from lbproxy.config import Address, load_config
from lbproxy.config import load as load_module
from lbproxy.config.load import load_partial
from lbproxy.config.schema import (SCALE_DOWN, BindTLSConfig, CertConfig, CookieConfig,
                                   DenyArgs, HeaderArgs, HealthCheckConfig, MetricConfig,
                                   PassiveConfig, RedirectArgs, ReplacePathArgs, ReturnArgs,
                                   RuleConfig, ServerTLSConfig, StoreItem, TimeoutsConfig,
                                   TrackArgs, UseBackendConfig)
from tests.config_helpers import Write, errors

CONFIGS = Path(__file__).parent / "configs"
MINIMAL = """\
    frontends:
      web:
        bind: [":8080"]
        default_backend: app
    backends:
      app:
        servers:
          - {name: app1, address: 127.0.0.1:9001}
    """


# --- the full example -----------------------------------------------------------------------

def test_example_loads_with_typed_values() -> None:
    config = load_config(CONFIGS / "example.yaml", env={})
    assert config.sources == (str(CONFIGS / "example.yaml"),)
    assert (config.global_.workers, config.global_.max_connections) == (1, 20000)
    assert config.global_.pidfile == "/run/lbproxy.pid"
    assert (config.global_.log.access, config.global_.log.format) == ("stdout", "json")
    assert config.defaults.timeouts == TimeoutsConfig(connect=4.0)
    assert (config.defaults.retries, config.defaults.redispatch) == (2, True)

    stats = config.stats
    assert stats is not None and stats.bind == Address("", 8404)
    assert (stats.uri, stats.refresh, stats.admin) == ("/stats", 30.0, True)
    assert stats.auth is not None and stats.auth.password == "change-me"

    web = config.frontends["web"]
    assert [b.address for b in web.bind] == [Address("", 8080), Address("::1", 8443)]
    assert web.bind[1].where == f"{CONFIGS / 'example.yaml'}:25: frontends.web.bind[1]"
    assert web.maxconn == 10000
    assert web.timeouts == TimeoutsConfig(connect=4.0, client=45.0)    # merged per key
    assert (web.limits.max_header_size, web.limits.max_body_size) == (32768, 1048576)
    assert web.forwarded.x_forwarded_proto is False
    assert web.forwarded.trusted_proxies == ("10.0.0.0/8", "::1")
    assert web.default_backend == "app"

    app = config.backends["app"]
    assert (app.balance, app.balance_arg, app.hash_type) == ("roundrobin", None, "consistent")
    assert app.retry_on == ("connect-failure", "empty-response", 502, 503)
    assert (app.retries, app.redispatch, app.http_reuse) == (2, False, "always")
    assert app.timeouts == TimeoutsConfig(connect=5.0)
    assert [(s.name, s.weight, s.maxconn, s.slowstart, s.backup, s.cookie, s.state)
            for s in app.servers] == [
        ("app1", 1, 100, 10.0, False, None, "ready"),
        ("app2", 3, 0, 0.0, False, "a2", "ready"),
        ("spare", 1, 0, 0.0, True, None, "ready"),
        ("old", 1, 0, 0.0, False, None, "drain"),
    ]
    api = config.backends["api"]
    assert (api.balance, api.balance_arg, api.hash_type) == ("hdr", "X-User", "map-based")
    assert api.servers[0].address == Address("", 0, "/run/api.sock")


def test_example_autoscale_pools() -> None:
    autoscale = load_config(CONFIGS / "example.yaml", env={}).autoscale
    assert autoscale is not None and autoscale.api.url == "http://127.0.0.1:8404"
    target = autoscale.pools["app"]
    assert (target.backend, target.min, target.max, target.interval) == ("app", 2, 10, 5.0)
    assert target.provider.ports == (9100, 9199)
    assert target.provider.command == "python -m lbproxy.demo.backend --port {port}"
    assert target.metrics[1] == MetricConfig(type="response_time_p95", target=0.25)
    assert target.scale_down == SCALE_DOWN
    assert (target.predictive.window, target.predictive.horizon) == (600.0, 60.0)
    threshold = autoscale.pools["api"]
    assert (threshold.policy, threshold.provider.type) == ("threshold", "exec")
    assert threshold.metrics[3] == MetricConfig(type="response_time_p95", threshold_high=2.0,
                                                threshold_low=0.5, weight=0.1)
    assert (threshold.scale_up.cooldown, threshold.scale_up.factor) == (300.0, 1.5)
    assert (threshold.scale_up.max_step, threshold.scale_down.stabilization) == (4, 120.0)


FULL_FILES = ("conf/certs/site.pem", "conf/certs/site.key", "conf/ca.pem")


@pytest.fixture
def full(tmp_path: Path) -> Path:
    """full.yaml in a directory that also holds the files it names (relative to it)."""
    path = tmp_path / "full.yaml"
    path.write_text((CONFIGS / "full.yaml").read_text())
    for name in FULL_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("the loader only checks that it can be read\n")
    return path


def test_full_example_loads_whole(full: Path) -> None:
    """Every section of the configuration, assembled, is accepted."""
    config = load_config(full, env={})
    web, app = config.frontends["web"], config.backends["app"]
    assert set(web.acls) >= {"is_api", "is_admin"} and web.bind[1].tls is not None
    assert app.cookie is not None and app.health_check is not None
    assert app.server_template is not None and app.servers[4].tls is not None


def test_full_example_frontend_features(full: Path) -> None:
    path = full
    config = load_config(path, env={})
    assert config.stick_tables["per_ip"].store == (StoreItem("http_req_rate", 10.0),
                                                   StoreItem("conn_cur"))
    web = config.frontends["web"]
    assert web.bind[1].tls == BindTLSConfig(
        certificates=(CertConfig(str(path.parent / "conf/certs/site.pem"),
                                 str(path.parent / "conf/certs/site.key")),))
    assert web.acls["is_admin"].patterns == ("path_beg -i /admin",)
    assert web.acls["is_admin"].where == f"{path}:40: frontends.web.acls.is_admin"
    assert web.stick_table is not None and web.stick_table.name == "web"
    rules = web.http_request
    assert rules[0] == RuleConfig("track_sc0", TrackArgs(0, "src"), None, False,
                                  f"{path}:45: frontends.web.http_request[0]")
    assert (rules[1].args, rules[1].cond) == (DenyArgs(429), "{ sc_http_req_rate(0) gt 100 }")
    assert rules[3].args == HeaderArgs("X-Request-Start", "t=%[date_us]")
    assert rules[4].args == RedirectArgs(scheme="https", code=301)
    assert [(r.action, r.args) for r in web.http_response] == [
        ("del_header", HeaderArgs("Server")), ("set_header", HeaderArgs("X-Served-By", "%[srv_name]"))]
    assert web.use_backend == (UseBackendConfig("api", "is_api", False,
                                                f"{path}:57: frontends.web.use_backend[0]"),)


def test_full_example_backend_features(full: Path) -> None:
    app = load_config(full, env={}).backends["app"]
    assert app.cookie == CookieConfig()
    assert app.health_check == HealthCheckConfig(host="app.internal")
    assert app.passive == PassiveConfig()
    assert app.servers[4].tls == ServerTLSConfig(sni="app.internal",
                                                 ca=str(full.parent / "conf/ca.pem"))
    template = app.server_template
    assert template is not None
    assert (template.prefix, template.count, template.port) == ("web", 10, 8080)
    assert (template.fqdn, template.nameservers) == ("_http._tcp.app.service.local", ("127.0.0.1:53",))


# --- reading the YAML -----------------------------------------------------------------------

def test_anchors_and_aliases_load_as_written_out(write: Write) -> None:
    """A file with `&` or `*` is composed first for its aliases; one without is read from
    the parser's events. Both give the same configuration, lines and paths included."""
    text = """\
        frontends:
          web: {{bind: [":8080"], default_backend: app}}
        backends:
          app:
            servers:
              - {{name: a1, address: {address}, weight: {first}}}
              - {{name: a2, address: "127.0.0.1:9002", weight: {second}}}
        """
    plain = load_config(write(text.format(address='"127.0.0.1:9001"', first=3, second=3)),
                        env={})
    aliased = load_config(write(text.format(address='&local "127.0.0.1:9001"',
                                            first="&three 3", second="*three")), env={})
    looped = write("x: &a [1, *a]\n", "loop.yaml")
    assert "loop.yaml:1: x[1]: recursive YAML alias" in errors(looped)
    assert aliased.backends["app"].servers == plain.backends["app"].servers


def test_reading_builds_no_yaml_node_graph(write: Write) -> None:
    """The parser's node graph was most of the memory a start of 5,000 servers ever held
    (and so of its RSS): 2,000 servers peaked at 5 MB, 1.5 MB now."""
    servers = "".join(f"      - {{name: s{i}, address: 127.0.0.1:{1000 + i}}}\n"
                      for i in range(2000))
    path = write("frontends:\n  web: {bind: [':8080'], default_backend: app}\n"
                 "backends:\n  app:\n    servers:\n" + servers)
    tracemalloc.start()
    try:
        config = load_config(path, env={})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(config.backends["app"].servers) == 2000
    assert peak < 3_000_000


# --- directories ----------------------------------------------------------------------------

def test_directory_merges_files_in_lexical_order(write: Write) -> None:
    write("""\
        backends:
          api:
            servers: [{name: api1, address: "127.0.0.1:9101"}]
        frontends:
          api: {bind: ":9090", default_backend: api}
        """, "conf/20-api.yml")
    write(MINIMAL, "conf/10-web.yaml")
    write("global: {max_connections: 500}\ndefaults: {retries: 5}\n", "conf/00-global.yaml")
    write("global: {pidfile: /run/lb.pid}\n", "conf/01-pid.yaml")
    write("not yaml at all: [", "conf/README.txt")
    config = load_config("conf", env={})
    assert config.sources == ("conf/00-global.yaml", "conf/01-pid.yaml", "conf/10-web.yaml",
                              "conf/20-api.yml")
    assert (config.global_.max_connections, config.global_.pidfile) == (500, "/run/lb.pid")
    assert sorted(config.frontends) == ["api", "web"]
    assert config.backends["api"].retries == config.backends["app"].retries == 5
    assert config.backends["api"].where == "conf/20-api.yml:2: backends.api"


def test_name_defined_in_two_files_names_both(write: Write) -> None:
    write(MINIMAL, "conf/a.yaml")
    write("""\
        global: {workers: 1}
        backends:
          app:
            servers: []
        """, "conf/b.yaml")
    write("global: {workers: 1}\n", "conf/c.yaml")
    assert errors("conf") == [
        "conf/b.yaml:3: backends.app: already defined at conf/a.yaml:6",
        "conf/c.yaml:1: global.workers: already defined at conf/b.yaml:1",
    ]


def test_empty_directory_and_missing_file(write: Write) -> None:
    Path("empty").mkdir()
    assert errors("empty") == ["empty: no *.yaml or *.yml files in this directory"]
    assert errors("nope.yaml") == ["nope.yaml: cannot read: No such file or directory"]


def test_an_empty_file_is_a_configuration_without_frontends(write: Write) -> None:
    config, problems = load_partial(write(""), env={})
    assert (config.frontends, config.stats, config.sources) == ({}, None, ("lb.yaml",))
    assert problems.error(config.sources).errors == [
        "lb.yaml:1: (top level): no frontend defined: a configuration needs at least one "
        "under 'frontends:'"]


# --- relative paths ------------------------------------------------------------------------

def test_relative_paths_resolve_against_the_file_that_names_them(
        write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file's relative paths start from its own directory, whatever the working
    directory is when it is loaded."""
    write("global: {pidfile: run/lb.pid, log: {access: ../logs/access.log}}\n",
          "etc/conf.d/10-global.yaml")
    write("""\
        frontends: {web: {bind: ":8080", default_backend: app}}
        backends:
          app:
            servers:
              - {name: a, address: "unix:sockets/a.sock"}
              - {name: b, address: "unix:/run/b.sock", tls: {ca: ca.pem}}
        """, "etc/conf.d/20-app.yaml")
    write("", "etc/conf.d/ca.pem")
    (tmp_path / "etc" / "logs").mkdir()
    monkeypatch.chdir("/")
    config = load_config(tmp_path / "etc" / "conf.d", env={})
    conf_d = tmp_path / "etc" / "conf.d"
    assert config.global_.pidfile == str(conf_d / "run" / "lb.pid")
    assert config.global_.log.access == str(tmp_path / "etc" / "logs" / "access.log")
    a, b = config.backends["app"].servers
    assert a.address == Address("", 0, str(conf_d / "sockets" / "a.sock"))
    assert b.address == Address("", 0, "/run/b.sock")
    assert b.tls is not None and b.tls.ca == str(conf_d / "ca.pem")


def test_file_errors_name_the_absolute_path(write: Write, tmp_path: Path) -> None:
    path = write("""\
        global: {log: {access: nowhere/access.log}}
        frontends: {web: {bind: ":8080", default_backend: app}}
        backends:
          app:
            servers:
              - name: b
                address: 127.0.0.1:8443
                tls:
                  ca: certs/ca.pem
        """)
    assert errors(path) == [
        f"lb.yaml:1: global.log.access: cannot write {tmp_path}/nowhere/access.log: "
        f"directory {tmp_path}/nowhere does not exist",
        f"lb.yaml:9: backends.app.servers[0].tls.ca: cannot read {tmp_path}/certs/ca.pem: "
        "No such file or directory",
    ]


def test_log_streams_are_not_paths(write: Write) -> None:
    for target in ("stdout", "stderr"):
        path = write(MINIMAL + f"global: {{log: {{access: {target}}}}}\n")
        assert load_config(path, env={}).global_.log.access == target


# --- ${ENV} ---------------------------------------------------------------------------------

def test_env_expansion(write: Write) -> None:
    path = write("""\
        stats:
          bind: "${STATS_HOST:-127.0.0.1}:${STATS_PORT}"
          auth: {username: "${USER:-admin}", password: "${PASSWORD}"}
        frontends:
          web:
            bind: ":${PORT:-8080}"
            maxconn: ${MAXCONN:-100}
            limits: {max_headers: "${HEADERS}"}
            default_backend: app
        backends:
          app:
            servers:
              - name: app1
                address: 127.0.0.1:9001
                cookie: price$$5
        """)
    config = load_config(path, env={"STATS_PORT": "9000", "PASSWORD": "123", "HEADERS": "64"})
    assert config.stats is not None and config.stats.bind == Address("127.0.0.1", 9000)
    assert config.stats.auth is not None
    assert (config.stats.auth.username, config.stats.auth.password) == ("admin", "123")
    web = config.frontends["web"]
    assert (web.bind[0].address.port, web.maxconn, web.limits.max_headers) == (8080, 100, 64)
    assert config.backends["app"].servers[0].cookie == "price$5"


def test_env_defaults_to_os_environ(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LBPROXY_TEST_PORT", "8181")
    path = write(MINIMAL.replace('":8080"', '":${LBPROXY_TEST_PORT}"'))
    assert load_config(path).frontends["web"].bind[0].address.port == 8181


def test_unset_env_is_one_error_with_its_line(write: Write) -> None:
    path = write("""\
        frontends:
          web:
            bind: "${ADDR}"
            default_backend: "${BACKEND:x}"
        """)
    assert errors(path) == [
        "lb.yaml:3: frontends.web.bind: environment variable 'ADDR' is not set (and has no default)",
        "lb.yaml:4: frontends.web.default_backend: invalid environment reference '${BACKEND:x}' "
        "(expected ${NAME} or ${NAME:-default}; write $$ for a literal $)",
    ]


# --- not supported yet ----------------------------------------------------------------------

def test_unsupported_keys_are_refused_only_when_used(write: Write,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "UNSUPPORTED", frozenset(
        {"frontends.*.accept_proxy", "frontends.*.http_request", "stick_tables"}))
    text = """\
        stick_tables: {}
        frontends:
          web:
            bind: ":8080"
            accept_proxy: USE
            http_request: []
        """
    assert load_config(write(text.replace("USE", "false")), env={}).frontends["web"]
    path = write(text.replace("USE", "true"))
    assert errors(path) == ["lb.yaml:5: frontends.web.accept_proxy: not supported yet"]


def test_unsupported_set_is_editable(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "UNSUPPORTED", frozenset({"backends.*.servers[].weight"}))
    path = write(MINIMAL.replace("app1,", "app1, weight: 2,"))
    assert errors(path) == ["lb.yaml:8: backends.app.servers[0].weight: not supported yet"]


def test_less_common_forms(write: Write) -> None:
    path = write("""\
        stick_tables: {per_ip: {type: string, size: 1m, expire: 1h, store: conn_rate(1s)}}
        frontends:
          web:
            bind: {address: ":80"}
            acls:
              static: [path_beg /static, path_end .css]
            http_request:
              - allow:
                unless: static
              - return: {status: 200, body: ok, headers: {X-A: "1", X-B: b}}
              - replace_path: {regex: "^/old/(.*)", replace: "/new/\\\\1"}
              - track_sc1: {key: "hdr(X-User)", table: per_ip}
              - del_header: Cookie
              - set_path: /index.html
        backends:
          b:
            balance: least_response_time
            health_check: {type: tcp, expect_status: 204, port: 9000}
            server_template: {prefix: b, count: 2, fqdn: b.local, nameservers: ["10.0.0.2", "[::1]:53"]}
        """)
    config = load_config(path, env={})
    assert config.stick_tables["per_ip"].size == 1048576
    assert config.stick_tables["per_ip"].store == (StoreItem("conn_rate", 1.0),)
    web = config.frontends["web"]
    assert web.acls["static"].patterns == ("path_beg /static", "path_end .css")
    assert [(r.action, r.args, r.cond, r.negate) for r in web.http_request] == [
        ("allow", None, "static", True),
        ("return", ReturnArgs(200, "ok", None, (("X-A", "1"), ("X-B", "b"))), None, False),
        ("replace_path", ReplacePathArgs("^/old/(.*)", "/new/\\1"), None, False),
        ("track_sc1", TrackArgs(1, "hdr(X-User)", "per_ip"), None, False),
        ("del_header", HeaderArgs("Cookie"), None, False),
        ("set_path", "/index.html", None, False),
    ]
    b = config.backends["b"]
    assert b.balance == "least_response_time"
    assert b.health_check == HealthCheckConfig(type="tcp", expect_status=(204, 204), port=9000)
    assert b.server_template is not None
    assert b.server_template.nameservers == ("10.0.0.2", "[::1]:53")
