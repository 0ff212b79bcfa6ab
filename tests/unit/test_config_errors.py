"""Every kind of configuration error, asserted as the exact `FILE:LINE: key.path: message`."""

from __future__ import annotations

import os

import pytest

from tests.config_helpers import Write, errors

CASES = {
    "unknown key with suggestion": ("""\
        backends:
          app:
            balanse: roundrobin
        """, ["lb.yaml:3: backends.app.balanse: unknown key 'balanse' (did you mean 'balance'?)"]),
    "unknown top-level section": ("""\
        frontend: {}
        """, ["lb.yaml:1: frontend: unknown key 'frontend' (did you mean 'frontends'?)"]),
    "wrong types": ("""\
        global: {max_connections: lots, log: stdout}
        defaults: {redispatch: "yes please"}
        """, ["lb.yaml:1: global.max_connections: expected an integer, got string 'lots'",
              "lb.yaml:1: global.log: expected a mapping, got string 'stdout'",
              "lb.yaml:2: defaults.redispatch: expected true or false, got string 'yes please'"]),
    "out of range": ("""\
        backends:
          app:
            servers:
              - {name: a, address: "127.0.0.1:99999", weight: 300}
        """, ["lb.yaml:4: backends.app.servers[0].address: invalid port in address "
              "'127.0.0.1:99999' (expected 1-65535)",
              "lb.yaml:4: backends.app.servers[0].weight: must be between 0 and 256, got 300"]),
    "bad duration and size": ("""\
        defaults:
          timeouts: {connect: 5x, client: -1s, server: 0}
        frontends:
          web: {bind: ":80", limits: {max_header_size: 12q}}
        """, ["lb.yaml:2: defaults.timeouts.connect: invalid duration '5x' "
              "(expected e.g. 250ms, 5s, 2m, 1h, 1d or a number of seconds)",
              "lb.yaml:2: defaults.timeouts.client: negative duration '-1s'",
              "lb.yaml:2: defaults.timeouts.server: must be greater than 0, got 0",
              "lb.yaml:4: frontends.web.limits.max_header_size: invalid size '12q' "
              "(expected e.g. 16k, 1m, 1g or a number of bytes)"]),
    "bad algorithm": ("""\
        backends:
          app: {balance: roundrobbin}
          api: {balance: url_param}
          old: {balance: leastconn(x)}
        """, ["lb.yaml:2: backends.app.balance: unknown algorithm 'roundrobbin' "
              "(did you mean 'roundrobin'?)",
              "lb.yaml:3: backends.api.balance: 'url_param' needs a name: url_param(NAME)",
              "lb.yaml:4: backends.old.balance: 'leastconn' takes no argument"]),
    "enums": ("""\
        global: {log: {format: jsn}}
        backends:
          app:
            hash_type: consistant
            http_reuse: sometimes
            cookie: {mode: insrt}
            health_check: {type: udp}
            retry_on: [connect-failure, conect-failure, 200]
            servers: [{name: a, address: ":1", state: drained, tls: {verify: optional}}]
        stick_tables: {t: {type: ipv4, size: 1, expire: 1s}}
        frontends:
          web: {bind: {address: ":443", tls: {certificates: [{cert: c, key: k}], min_version: TLSv1.1,
                                              ciphersuites: [TLS_AES_256_GCM_SHA386]}}}
        """, ["lb.yaml:1: global.log.format: unknown log format 'jsn' (did you mean 'json'?)",
              "lb.yaml:4: backends.app.hash_type: unknown hash type 'consistant' "
              "(did you mean 'consistent'?)",
              "lb.yaml:5: backends.app.http_reuse: unknown http_reuse mode 'sometimes' "
              "(expected one of: never, safe, always)",
              "lb.yaml:6: backends.app.cookie.mode: unknown cookie mode 'insrt' "
              "(did you mean 'insert'?)",
              "lb.yaml:7: backends.app.health_check.type: unknown health check type 'udp' "
              "(expected one of: http, tcp, grpc)",
              "lb.yaml:8: backends.app.retry_on[1]: unknown retry event 'conect-failure' "
              "(did you mean 'connect-failure'?)",
              "lb.yaml:8: backends.app.retry_on[2]: must be between 400 and 599, got 200",
              "lb.yaml:9: backends.app.servers[0].state: unknown server state 'drained' "
              "(did you mean 'drain'?)",
              "lb.yaml:9: backends.app.servers[0].tls.verify: unknown verify mode 'optional' "
              "(expected one of: required, none)",
              "lb.yaml:10: stick_tables.t.type: unknown table type 'ipv4' (did you mean 'ipv6'?)",
              "lb.yaml:12: frontends.web.bind.tls.certificates[0].cert: cannot read $DIR/c: "
              "No such file or directory",
              "lb.yaml:12: frontends.web.bind.tls.certificates[0].key: cannot read $DIR/k: "
              "No such file or directory",
              "lb.yaml:12: frontends.web.bind.tls.min_version: unknown TLS version 'TLSv1.1' "
              "(did you mean 'TLSv1.3'?)",
              "lb.yaml:13: frontends.web.bind.tls.ciphersuites[0]: unknown TLS 1.3 cipher suite "
              "'TLS_AES_256_GCM_SHA386' (did you mean 'TLS_AES_256_GCM_SHA384'?)"]),
    "dangling backend": ("""\
        frontends:
          web:
            bind: ":80"
            use_backend: [{backend: apii, if: is_api}]
            default_backend: nope
        backends:
          api: {}
        """, ["lb.yaml:4: frontends.web.use_backend[0].backend: unknown backend 'apii' "
              "(did you mean 'api'?)",
              "lb.yaml:5: frontends.web.default_backend: unknown backend 'nope' "
              "(expected one of: api)"]),
    "frontend without bind, bind twice": ("""\
        stats: {bind: ":8404"}
        frontends:
          a: {maxconn: 1}
          b: {bind: []}
          c: {bind: [":8080", "0.0.0.0:8080", ":8404"]}
          d: {bind: ":8080"}
        """, ["lb.yaml:3: frontends.a: missing required key 'bind'",
              "lb.yaml:4: frontends.b.bind: must not be empty",
              "lb.yaml:5: frontends.c.bind[2]: address ':8404' is already bound at lb.yaml:1",
              "lb.yaml:6: frontends.d.bind: address ':8080' is already bound at lb.yaml:5"]),
    "servers": ("""\
        backends:
          app:
            servers:
              - {name: a, address: "127.0.0.1:1"}
              - {name: a, address: "127.0.0.1:2"}
              - {address: "127.0.0.1:3"}
              - {name: "b c", address: "127.0.0.1:4"}
        """, ["lb.yaml:5: backends.app.servers[1]: duplicate name 'a' (first at line 4)",
              "lb.yaml:6: backends.app.servers[2]: missing required key 'name'",
              "lb.yaml:7: backends.app.servers[3].name: invalid name 'b c' "
              "(use letters, digits, '_', '.', '-')"]),
    "duplicate key in a mapping": ("""\
        backends:
          app:
            maxconn: 1
            maxconn: 2
        """, ["lb.yaml:4: backends.app.maxconn: duplicate key (first at line 3)"]),
    "YAML syntax error": ("""\
        backends:
          app:
            balance: roundrobin
           servers: []
        """, ["lb.yaml:4: YAML syntax error: while parsing a block mapping; expected <block end>, "
              "but found '<block mapping start>' (column 4)"]),
    "top level not a mapping": ("""\
        - a
        """, ["lb.yaml:1: (top level): expected a mapping of sections, got a list"]),
    "stick tables": ("""\
        stick_tables:
          a: {type: ip, size: 0, expire: 1s, store: [http_req_rate, conn_cur(10s), req_rate(1s)]}
          b: {type: ip, expire: 1s}
        """, ["lb.yaml:2: stick_tables.a.size: must be at least 1",
              "lb.yaml:2: stick_tables.a.store[0]: 'http_req_rate' is a rate and needs a period, "
              "e.g. http_req_rate(10s)",
              "lb.yaml:2: stick_tables.a.store[1]: 'conn_cur' is a counter and takes no period",
              "lb.yaml:2: stick_tables.a.store[2]: unknown store item 'req_rate' "
              "(did you mean 'http_req_rate'?)",
              "lb.yaml:3: stick_tables.b: missing required key 'size'"]),
    "http_request rules": ("""\
        frontends:
          web:
            bind: ":80"
            http_request:
              - {deny: {status: 700}}
              - {allow: yes}
              - {dney: {}}
              - {deny: , set_path: /x}
              - {if: a}
              - {redirect: {scheme: https, location: /x}}
              - {redirect: {prefix: /x, code: 300}}
              - {replace_path: {regex: "(", replace: x}}
              - {set_header: {name: "X A"}}
              - {deny: , if: a, unless: b}
              - {add_header: {name: X-A}}
              - {allow: , iff: a}
              - allow:
                unless: !is_api
        """, ["lb.yaml:5: frontends.web.http_request[0].deny.status: must be between 200 and 599, "
              "got 700",
              "lb.yaml:6: frontends.web.http_request[1].allow: takes no arguments "
              "(write the action name with nothing after the ':')",
              "lb.yaml:7: frontends.web.http_request[2].dney: unknown action 'dney' "
              "(did you mean 'deny'?)",
              "lb.yaml:8: frontends.web.http_request[3]: a rule needs exactly one action "
              "(allow, deny, return, redirect, set_header, add_header, del_header, set_path, "
              "replace_path, track_sc0, track_sc1, track_sc2, auth_request), got deny, set_path",
              "lb.yaml:9: frontends.web.http_request[4]: a rule needs exactly one action "
              "(allow, deny, return, redirect, set_header, add_header, del_header, set_path, "
              "replace_path, track_sc0, track_sc1, track_sc2, auth_request)",
              "lb.yaml:10: frontends.web.http_request[5].redirect: needs exactly one of "
              "location, prefix, scheme",
              "lb.yaml:11: frontends.web.http_request[6].redirect.code: must be one of "
              "301, 302, 303, 307, 308, got 300",
              "lb.yaml:12: frontends.web.http_request[7].replace_path.regex: invalid regular "
              "expression '(': missing ), unterminated subpattern at position 0",
              "lb.yaml:13: frontends.web.http_request[8].set_header.name: invalid header name 'X A'",
              "lb.yaml:14: frontends.web.http_request[9].unless: use either 'if' or 'unless', "
              "not both",
              "lb.yaml:15: frontends.web.http_request[10].add_header: missing required key 'value'",
              "lb.yaml:16: frontends.web.http_request[11].iff: unknown key 'iff' "
              "(did you mean 'if'?)",
              "lb.yaml:18: frontends.web.http_request[12].unless: unexpected YAML tag '!is_api' "
              "(quote a value that starts with '!')"]),
    "stick counters": ("""\
        stick_tables: {per_ip: {type: ip, size: 100k, expire: 30s}}
        frontends:
          web:
            bind: ":80"
            http_request:
              - track_sc0: src
              - track_sc1: {key: src, table: per_ipp}
              - track_sc2: {key: src, table: per_ip}
            http_response:
              - deny:
        """, ["lb.yaml:6: frontends.web.http_request[0].track_sc0: stick counter with no table: "
              "name one with 'table:' or give this frontend a stick_table",
              "lb.yaml:7: frontends.web.http_request[1].track_sc1.table: unknown stick table "
              "'per_ipp' (did you mean 'per_ip'?)",
              "lb.yaml:10: frontends.web.http_response[0].deny: unknown action 'deny' "
              "(expected one of: set_header, add_header, del_header)"]),
    "autoscale": ("""\
        backends: {app: {}}
        autoscale:
          api: {url: "ftp://x"}
          pools:
            ap:
              provider: {type: process, image: x}
              min: 5
              max: 2
              metrics:
                - {type: cpu_utilization, target: 0}
                - {type: response_time_p95, threshold_high: 1s}
                - {type: cpu_utilization, target: 1}
            app:
              provider: {type: kubernetes, deployment: app}
              policy: threshold
              metrics: [{type: cpu_utilization, threshold_high: 30, threshold_low: 70}]
        """, ["lb.yaml:3: autoscale.api.url: expected an http:// or https:// URL, got 'ftp://x'",
              "lb.yaml:5: autoscale.pools.ap: unknown backend 'ap' (did you mean 'app'?)",
              "lb.yaml:6: autoscale.pools.ap.provider.image: only used by provider type 'docker'",
              "lb.yaml:6: autoscale.pools.ap.provider: missing required key 'command' "
              "(provider type process)",
              "lb.yaml:6: autoscale.pools.ap.provider: missing required key 'ports' "
              "(provider type process)",
              "lb.yaml:7: autoscale.pools.ap.min: min (5) is greater than max (2)",
              "lb.yaml:10: autoscale.pools.ap.metrics[0].target: must be greater than 0",
              "lb.yaml:11: autoscale.pools.ap.metrics[1]: missing required key 'target' "
              "(policy target)",
              "lb.yaml:12: autoscale.pools.ap.metrics[2]: duplicate type 'cpu_utilization' "
              "(first at line 10)",
              "lb.yaml:16: autoscale.pools.app.metrics[0].threshold_low: must be below "
              "threshold_high (70.0 >= 30.0)"]),
}


NO_FRONTEND = "no frontend defined: a configuration needs at least one under 'frontends:'"


@pytest.mark.parametrize(("text", "expected"), CASES.values(), ids=CASES.keys())
def test_error(write: Write, text: str, expected: list[str]) -> None:
    # Most cases leave out frontends to stay short; that error is tested on its own below.
    # $DIR: the directory of lb.yaml, which relative file names resolve against.
    found = [error.replace(os.getcwd(), "$DIR") for error in errors(write(text))]
    assert [error for error in found if NO_FRONTEND not in error] == expected


def test_a_configuration_without_frontends_is_an_error(write: Write) -> None:
    assert errors(write("backends: {app: {servers: []}}\n")) == [
        f"lb.yaml:1: (top level): {NO_FRONTEND}"]
    assert errors(write("frontends: {}\nbackends: {app: {servers: []}}\n")) == [
        f"lb.yaml:1: frontends: {NO_FRONTEND}"]
    assert errors(write("")) == [f"lb.yaml:1: (top level): {NO_FRONTEND}"]
