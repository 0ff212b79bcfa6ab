"""Per-request cost of a realistic rule set: 50 ACLs, each used by one condition.

Prints ns/request (run with -s to see it) for a FakeRequest, whose properties re-parse the
URL and scan the header list on every read, and for `SlotRequest`, shaped like the data
plane's request (plain slots, headers in a dict), which isolates the cost of routing. The
bound is loose on purpose (machines are noisy); it catches accidental per-request parsing,
which costs orders of magnitude more.
"""

from __future__ import annotations

import timeit
from typing import Any

from lbproxy.routing.acl import compile_acl
from lbproxy.routing.condition import compile_condition
from tests.unit.test_routing_support import FakeRuntime, Req

PATTERNS = [
    "path_beg /api /v1 /v2", "path_beg -i /admin", "path_end .png .jpg .css .js",
    "path_reg ^/users/[0-9]+/orders$", "path_dir static", "path_sub /internal/",
    "src 10.0.0.0/8 192.168.0.0/16 172.16.0.0/12", "src 2001:db8::/32",
    "hdr(host) -i shop.example.com www.example.com", "hdr_dom(host) -i example.org",
    "hdr_beg(user-agent) -i curl", "hdr_sub(user-agent) -i bot", "hdr(x-api-key) -m found",
    "cook(session) -m found", "method POST PUT DELETE", "query -m sub debug=1",
    "url_param(id) -m reg ^[0-9]+$", "host -i api.example.com", "ssl_fc",
    "dst_port 80 443", "src_port gt 1024", "sc_http_req_rate(0) gt 100",
    "nbsrv(app) lt 1", "path -m len gt 200", "hdr_end(host) -i .internal",
]
HEADERS = [("Host", "shop.example.net"), ("User-Agent", "Mozilla/5.0"), ("Accept", "text/html"),
           ("Cookie", "lang=en")]


class SlotRequest:
    """A RequestInfo with parsed fields in slots, as the data plane provides them."""

    __slots__ = ("method", "url", "path", "query", "host", "src", "src_port", "dst_port",
                 "ssl_fc", "ssl_fc_sni", "norm_path", "_headers", "_cookies")

    def __init__(self) -> None:
        self.method, self.url = "GET", "/shop/items/42?ref=home"
        self.path, self.query, self.host = "/shop/items/42", "ref=home", "shop.example.net"
        self.src, self.src_port, self.dst_port = "203.0.113.9", 55000, 8080
        self.ssl_fc, self.ssl_fc_sni, self.norm_path = False, None, None
        self._headers = {name.lower(): [value] for name, value in HEADERS}
        self._cookies = {"lang": "en"}

    def header(self, name: str) -> str | None:
        values = self._headers.get(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        return self._headers.get(name, [])

    def cookie(self, name: str) -> str | None:
        return self._cookies.get(name)


def build_rules(runtime: FakeRuntime) -> list:
    """50 ACLs; 50 rules (an AND of two, or an OR negated), none matching the requests
    below, so every rule runs to its end."""
    acls = {f"a{i}": compile_acl(f"a{i}", [PATTERNS[i % len(PATTERNS)]], "w", runtime)
            for i in range(50)}
    return [compile_condition(f"a{i} a{(i + 1) % 50}" if i % 2 else f"!a{i} || a{i}", i % 2 == 0,
                              acls, "w", runtime, "request") for i in range(50)]


def cost_ns(rules: list, request: Any) -> float:
    """Best-of-5 time to evaluate every rule against `request`, in ns."""
    def evaluate() -> None:
        for rule in rules:
            rule(request)
    loops = 2000
    return min(timeit.repeat(evaluate, number=loops, repeat=5)) / loops * 1e9


def test_fifty_acl_rule_set_cost() -> None:
    rules = build_rules(FakeRuntime())
    fake = Req(url="/shop/items/42?ref=home", src="203.0.113.9", src_port=55000,
               headers=HEADERS)
    slots = SlotRequest()
    for request in (fake, slots):
        assert not any(rule(request) for rule in rules)
    baseline = cost_ns([lambda _request: False] * 50, slots)
    fake_ns, slots_ns = cost_ns(rules, fake), cost_ns(rules, slots)
    print(f"\n50 rules / 50 ACLs: FakeRequest {fake_ns:.0f} ns/request, "
          f"slot request {slots_ns:.0f} ns/request; 50 empty lambdas {baseline:.0f} ns")
    assert slots_ns < 200 * baseline
