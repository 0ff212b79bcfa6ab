"""Conditions: AND, OR, negation, anonymous ACLs, unless, phases."""

from __future__ import annotations

import pytest

from tests.unit.test_routing_support import FakeRuntime, Req, acl, cond

ACLS = {
    "is_admin": acl("path_beg -i /admin"),
    "from_office": acl("src 10.0.0.0/8 192.168.1.10"),
    "is_api": acl("path_beg /api /v1"),
    "shop_host": acl("host -i shop.example.com"),
    "is_5xx": acl("status ge 500"),
}


@pytest.mark.parametrize(("expr", "url", "src", "expected"), [
    ("is_admin !from_office", "/admin", "8.8.8.8", True),
    ("is_admin !from_office", "/admin", "10.0.0.1", False),
    ("is_admin !from_office", "/x", "8.8.8.8", False),
    ("is_admin ! from_office", "/admin", "10.0.0.1", False),
    ("is_api || is_admin", "/v1/x", "1.1.1.1", True),
    ("is_api or is_admin", "/admin", "1.1.1.1", True),
    ("is_api || is_admin", "/web", "1.1.1.1", False),
    # AND binds tighter than OR: (is_api from_office) || is_admin
    ("is_api from_office || is_admin", "/api", "8.8.8.8", False),
    ("is_api from_office || is_admin", "/api", "10.0.0.1", True),
    ("is_api from_office || is_admin", "/admin", "8.8.8.8", True),
    ("!is_api !is_admin", "/web", "1.1.1.1", True),
    ("{ path_beg /api } { src 10.0.0.0/8 }", "/api", "10.0.0.1", True),
    ("!{ path_beg /api }", "/api", "10.0.0.1", False),
    ("! { path_beg /api } || TRUE", "/api", "10.0.0.1", True),
    ("FALSE || { path_reg ^/a{2}$ }", "/aa", "1.1.1.1", True),   # braces inside a value
    ("{ hdr(x-name) 'a }' }", "/", "1.1.1.1", False),
])
def test_condition_logic(expr: str, url: str, src: str, expected: bool) -> None:
    assert cond(expr, ACLS)(Req(url=url, src=src)) is expected


def test_bare_boolean_fetch_is_a_term() -> None:
    redirect = cond("!ssl_fc shop_host", ACLS)
    plain = [("Host", "shop.example.com")]
    assert redirect(Req(headers=plain))
    assert not redirect(Req(headers=plain, ssl_fc=True))
    assert not redirect(Req(headers=[("Host", "other")]))


def test_unless_negates_the_whole_condition() -> None:
    test = cond("is_api || is_admin", ACLS, negate=True)
    assert test(Req(url="/web"))
    assert not test(Req(url="/api"))


def test_anonymous_acl_with_stick_counter() -> None:
    runtime = FakeRuntime(counters={(0, "http_req_rate"): 150})
    assert cond("{ sc_http_req_rate(0) gt 100 }", runtime=runtime)(Req())
    runtime.counters[(0, "http_req_rate")] = 50
    assert not cond("{ sc_http_req_rate(0) gt 100 }", runtime=runtime)(Req())


def test_response_phase() -> None:
    test = cond("is_5xx || { srv_name app1 }", ACLS, phase="response")
    assert test(Req(status=502))
    assert test(Req(status=200, srv_name="app1"))
    assert not test(Req(status=200, srv_name="app2"))
    assert cond("{ status 200 } is_api", ACLS, phase="response")(Req(url="/api", status=200))


def test_result_is_a_bool() -> None:
    assert cond("{ path_reg ^/ } is_api", ACLS)(Req(url="/api")) is True
