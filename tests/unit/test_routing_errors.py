"""User errors: one precise line starting with `where`, with a suggestion when one is close."""

from __future__ import annotations

import pytest

from lbproxy.routing.acl import compile_acl
from lbproxy.routing.interpolate import compile_template
from lbproxy.routing.syntax import RuleError
from tests.unit.test_routing_support import WHERE, FakeRuntime, acl, cond

ACLS = {"is_admin": acl("path_beg /admin"), "is_5xx": acl("status ge 500")}


@pytest.mark.parametrize(("expr", "message"), [
    ("is_admn", "unknown ACL 'is_admn' (did you mean 'is_admin'?)"),
    ("is_admin !ssl_f", "unknown ACL 'ssl_f' (did you mean 'ssl_fc'?)"),
    ("path_beg /x", "unknown ACL 'path_beg' (a fetch with values goes in braces: "
                    "'{ path_beg ... }')"),
    ("{ pth_beg /x }", "unknown fetch 'pth_beg' (did you mean 'path_beg'?)"),
    ("{ hdr_bge(host) x }", "unknown fetch 'hdr_bge' (did you mean 'hdr_beg'?)"),
    ("{ path_beg /x", "unbalanced '{': missing '}'"),
    ("is_admin }", "unbalanced '}': no '{' before it"),
    ("{ }", "empty anonymous ACL '{ }'"),
    ("", "empty condition"),
    ("|| is_admin", "'||' needs a condition on both sides"),
    ("is_admin or", "'or' needs a condition on both sides"),
    ("is_admin !", "'!' needs a term after it"),
    ("{ dst_port gt abc }", "'gt' needs an integer, got 'abc'"),
    ("{ dst_port abc }", "'dst_port' needs an integer, got 'abc'"),
    ("{ dst_port gt }", "'gt' needs an integer after it"),
    ("{ src 10.0.0.0/33 }", "invalid network '10.0.0.0/33'"),
    ("{ src 10.0.0.300 }", "invalid address '10.0.0.300'"),
    ("{ path_reg ^(a }", "bad regex '^(a': missing ), unterminated subpattern at position 1"),
    ("{ path_beg }", "'path_beg' needs at least one value"),
    ("{ hdr(x) -m found y }", "'hdr(x)' with '-m found' takes no value, got 'y'"),
    ("{ ssl_fc 1 }", "'ssl_fc' with '-m bool' takes no value, got '1'"),
    ("{ path -m begin /x }", "'path': unknown match method 'begin' for a str fetch (expected "
                             "one of str, beg, end, sub, reg, dir, dom, found, len, ip) "
                             "(did you mean 'beg'?)"),
    ("{ path_beg -m sub /x }", "'path_beg': '-m' conflicts with the method 'beg' already chosen"),
    ("{ path -m }", "'path': '-m' needs a match method"),
    ("{ path -x /a }", "'path': unknown flag '-x' (expected -i, -m or --)"),
    ("{ src -i 10.0.0.1 }", "'src': '-i' applies to string matching only, not 'ip'"),
    ("{ dst_port_beg 80 }", "'dst_port_beg': 'dst_port' is not a string fetch, '_beg' needs one"),
    ("{ hdr x }", "'hdr' needs an argument, e.g. 'hdr(host)'"),
    ("{ path(x) /a }", "'path' takes no argument, got 'path(x)'"),
    ("{ sc_http_req_rate(3) gt 1 }", "'sc_http_req_rate' needs a stick counter number 0, 1 or 2,"
                                     " got '3'"),
    ("{ nbsrv(ap) gt 0 }", "'nbsrv(ap)': unknown backend 'ap'"),
    ("{ Path /a }", "invalid fetch 'Path'"),
    ("{ status ge 500 }", "'status' is only available in http_response rules"),
    ("is_5xx", "ACL 'is_5xx' uses 'status', which is only available in http_response rules"),
    ("{ hdr(x 'y }", "unbalanced ' in \"{ hdr(x 'y }\""),
])
def test_condition_errors(expr: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        cond(expr, ACLS, runtime=FakeRuntime())
    assert str(caught.value) == f"{WHERE}: {message}"


def test_rule_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        cond("nope")


def test_list_acl_errors_name_the_entry() -> None:
    with pytest.raises(RuleError, match=r"^w: acls\.x\[1\]: 'gt' needs an integer, got 'z'$"):
        compile_acl("x", ["path /", "dst_port gt z"], "w: acls.x", None)


def test_empty_acl() -> None:
    with pytest.raises(RuleError, match=r"^w: ACL 'x' has no pattern$"):
        compile_acl("x", [], "w", None)
    with pytest.raises(RuleError, match=r"^w: empty ACL"):
        compile_acl("x", ["  "], "w", None)


@pytest.mark.parametrize(("text", "message"), [
    ("t=%[date_u]", "unknown fetch 'date_u' (did you mean 'date_us'?)"),
    ("%[srv_name]", "'srv_name' is only available in http_response rules"),
    ("a %[src", "unterminated '%[' in 'a %[src'"),
    ("%[hdr(host),lowr]", "unknown converter 'lowr' (did you mean 'lower'?)"),
    ("%[hdr(host,1)]", "invalid fetch 'hdr(host,1)': a fetch takes one argument"),
    ("%[hdr(host),regsub(a(,b)]", "unbalanced '(' in 'hdr(host),regsub(a(,b)'"),
])
def test_template_errors(text: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        compile_template(text, WHERE, None, "request")
    assert str(caught.value) == f"{WHERE}: {message}"
