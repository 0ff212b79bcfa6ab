"""use_backend steps: runs of same-shape rules become one lookup that picks what the
rule-by-rule scan picks (first match in order), and other rules keep their place."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml

from lbproxy.routing.actions import FrontendRules
from lbproxy.routing.runtime import RuleRuntime
from lbproxy.runtime.validate import load_checked
from tests.unit.test_routing_support import Req

BACKENDS = ("a", "b", "c", "d", "e")


def rules_of(tmp_path: Path, use_backend: list[dict], acls: dict | None = None) -> FrontendRules:
    config = {"frontends": {"web": {"bind": "127.0.0.1:8080", "acls": acls or {},
                                    "use_backend": use_backend}},
              "backends": {name: {"servers": []} for name in BACKENDS}}
    path = tmp_path / "lb.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_checked(path)
    return FrontendRules(loaded.frontends["web"], RuleRuntime(loaded.backends), lambda _: None)


def routed(steps: list, request: Any) -> str | None:
    """What Frontend.route does with the steps."""
    for test, choose in steps:
        if test is None or test(request):
            backend = choose(request)
            if backend is not None:
                return backend
    return None


def scanned(rules: FrontendRules, request: Any) -> str | None:
    """The rule-by-rule meaning, from the compiled entries one at a time (no grouping)."""
    for test, name, render in rules.use_backend:
        if test is None or test(request):
            chosen = name if render is None else render(request)
            if chosen in BACKENDS:
                return chosen
    return None


USE_BACKEND = [
    {"backend": "a", "if": "{ host www.example.com }"},
    {"backend": "b", "if": "{ host shop.example.com www.example.org }"},
    {"backend": "c", "if": "{ host www.example.com }"},          # shadowed by the first
    {"backend": "%[hdr(x-to)]"},                                  # a template: its own step
    {"backend": "d", "if": "{ path_beg /api }"},
    {"backend": "e", "if": "{ path_beg /api/v2 /static }"},       # later: /api wins for /api/v2
    {"backend": "a", "if": "is_v1"},                              # a named ACL of the same shape
    {"backend": "b", "unless": "{ path_beg /x }"},                # unless: its own step
    {"backend": "c", "if": "{ hdr(host) -i API.example.com:8080 }"},
    {"backend": "d", "if": "{ hdr(host) -i Blog.example.com }"},
    {"backend": "e", "if": "{ hdr(host) blog.example.com }"},     # no -i: another shape
]
ACLS = {"is_v1": ["path_beg /v1", "path_beg /v2"]}


def test_grouped_steps_pick_what_the_scan_picks(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, USE_BACKEND, ACLS)
    steps = rules.backend_choices({name: name for name in BACKENDS})
    assert len(steps) == 6            # host run, template, path run, unless, hdr -i run, hdr
    hosts = ["www.example.com", "shop.example.com", "www.example.org", "other",
             "api.example.com:8080", "BLOG.example.com", "blog.example.com", None]
    paths = ["/", "/api", "/api/v2/x", "/static/a", "/v1/x", "/v2", "/x/y", "/ap"]
    targets = [None, "c", "nope"]
    checked = 0
    for host, path, target in itertools.product(hosts, paths, targets):
        headers = [("Host", host)] if host else []
        if target:
            headers.append(("X-To", target))
        request = Req(url=path, headers=headers)
        assert routed(steps, request) == scanned(rules, request), (host, path, target)
        checked += 1
    assert checked == 192


def test_first_match_order_inside_a_prefix_run(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, [{"backend": "e", "if": "{ path_beg /a/b/c }"},
                                {"backend": "d", "if": "{ path_beg /a }"},
                                {"backend": "c", "if": "{ path_beg /a/b }"}])
    steps = rules.backend_choices({name: name for name in BACKENDS})
    assert len(steps) == 1
    assert routed(steps, Req(url="/a/b/c/d")) == "e"      # the first rule, not the longest
    assert routed(steps, Req(url="/a/b")) == "d"
    assert routed(steps, Req(url="/%61/b")) == "d"         # the normalised path, as path_beg
    assert routed(steps, Req(url="/b")) is None


def test_several_values_of_a_header_take_the_earliest_rule(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, [{"backend": "a", "if": "{ hdr(x-tag) one }"},
                                {"backend": "b", "if": "{ hdr(x-tag) two }"}])
    steps = rules.backend_choices({name: name for name in BACKENDS})
    assert len(steps) == 1
    request = Req(headers=[("X-Tag", "two"), ("X-Tag", "one")])
    assert routed(steps, request) == scanned(rules, request) == "a"
    assert routed(steps, Req(headers=[("X-Tag", "two")])) == "b"
    assert routed(steps, Req()) is None


def test_a_thousand_host_rules_are_one_step(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, [{"backend": BACKENDS[i % 5], "if": f"{{ host h{i}.example }}"}
                                for i in range(1000)])
    steps = rules.backend_choices({name: name for name in BACKENDS})
    assert len(steps) == 1
    for i in (0, 1, 499, 999):
        assert routed(steps, Req(headers=[("Host", f"H{i}.example:80")])) == BACKENDS[i % 5]
