"""ACL lines: every fetch, every match method, flags, integers and addresses."""

from __future__ import annotations

import time

import pytest

from lbproxy.routing.acl import compile_acl, response_fetch
from tests.unit.test_routing_support import FakeRuntime, Req, acl

HOSTED = Req(method="POST", url="/api/v1/users?id=42&debug=&x=a%20b", src="10.1.2.3",
             src_port=51000, dst_port=443, ssl_fc=True, ssl_fc_sni="shop.example.com",
             headers=[("Host", "Shop.Example.com:8443"), ("User-Agent", "curl/8.0"),
                      ("Accept", "text/html, application/json"), ("Accept", "*/*"),
                      ("Cookie", "sid=abc; lang=fr"), ("X-Empty", "")])


@pytest.mark.parametrize(("pattern", "expected"), [
    ("method POST GET", True),
    ("method post", False),
    ("method -i post", True),
    ("path /api/v1/users", True),
    ("path /api/v1", False),
    ("url /api/v1/users?id=42&debug=&x=a%20b", True),
    ("url_beg /api/v1/users?id", True),
    ("query -m sub debug=", True),
    ("url_param(id) 42", True),
    ("url_param(id) 4", False),
    ("url_param(debug) -m found", True),
    ("url_param(x) a%20b", True),              # raw, like HAProxy
    ("url_param(missing) -m found", False),
    ("hdr(accept) application/json", True),    # any comma-split value
    ("hdr(ACCEPT) */*", True),                 # header names are case-insensitive
    ("hdr(accept) text/html,", False),
    ("hdr(x-empty) -m found", True),
    ("hdr(x-none) -m found", False),
    ("cook(sid) abc", True),
    ("cook(SID) abc", False),                  # cookie names are case-sensitive
    ("cook(lang) -m found", True),
    ("cook(none) -m found", False),
    ("host shop.example.com", True),
    ("host Shop.Example.com", False),
    ("host -i SHOP.example.COM", True),
    ("ssl_fc", True),
    ("ssl_fc_sni shop.example.com", True),
    ("ssl_fc_sni_end .example.com", True),
    ("src_port gt 50000", True),
    ("dst_port 80 443", True),
    ("dst_port 80 8443", False),
])
def test_fetches(pattern: str, expected: bool) -> None:
    assert acl(pattern)(HOSTED) is expected


def test_absent_values_never_match() -> None:
    plain = Req()
    for pattern in ("ssl_fc", "ssl_fc_sni -m found", "ssl_fc_sni x", "cook(sid) abc",
                    "hdr(accept) x", "url_param(id) 1", "host x"):
        assert acl(pattern)(plain) is False, pattern


@pytest.mark.parametrize(("pattern", "value", "expected"), [
    ("str", "/api", True), ("str", "/api/", False),
    ("beg", "/api/x", True), ("beg", "/ap", False),
    ("end", "/x.png", True), ("end", "/x.png/", False),
    ("sub", "/a/api/b", True), ("sub", "/a/ap/b", False),
    ("reg", "/v12/x", True), ("reg", "/vx/x", False),
    ("dir", "/x/api/y", True), ("dir", "/x/api", True), ("dir", "/x/apix/y", False),
    ("len", "/abc", True), ("len", "/abcd", False),
])
def test_match_methods_as_flag_and_suffix(pattern: str, value: str, expected: bool) -> None:
    values = {"str": "/api", "beg": "/api /b", "end": ".png .jpg", "sub": "/api/ /z",
              "reg": r"^/v\d+/", "dir": "/api/", "len": "4"}[pattern]
    request = Req(url=value)
    assert acl(f"path -m {pattern} {values}")(request) is expected
    if pattern != "str":
        assert acl(f"path_{pattern} {values}")(request) is expected


@pytest.mark.parametrize(("host", "expected"), [
    ("example.com", True), ("www.example.com", True), ("example.com:80", True),
    ("notexample.com", False), ("example.community", False), ("www.EXAMPLE.com", True),
])
def test_hdr_dom(host: str, expected: bool) -> None:
    assert acl("hdr_dom(host) -i example.com")(Req(headers=[("Host", host)])) is expected


@pytest.mark.parametrize(("pattern", "ua"), [
    ("hdr_beg(user-agent) -i MOZ", "Mozilla/5"), ("hdr_end(user-agent) -i BOT", "GoogleBot"),
    ("hdr_sub(user-agent) -i Bot", "a BOT b"), ("hdr_reg(user-agent) -i ^curl/[0-9]", "CURL/8"),
    ("hdr(user-agent) -i -m str CURL", "curl"), ("hdr(user-agent) -m found", "x"),
])
def test_header_suffix_forms_and_icase(pattern: str, ua: str) -> None:
    assert acl(pattern)(Req(headers=[("User-Agent", ua)]))
    assert not acl(pattern)(Req(headers=[("Other", ua)]))


def test_case_sensitive_by_default() -> None:
    request = Req(url="/Admin")
    assert not acl("path_beg /admin")(request)
    assert not acl("path_reg ^/admin")(request)
    assert acl("path_reg -i ^/admin")(request)
    assert acl("path_dir -i admin")(request)


def test_many_prefixes_use_one_check_and_still_match() -> None:
    values = " ".join(f"/p{i}/" for i in range(40))
    for case in ("", "-i "):
        test = acl(f"path_beg {case}{values} /static")
        assert test(Req(url="/p39/x")) and test(Req(url="/static/a.css"))
        assert not test(Req(url="/p40/x"))


def test_regex_values_are_ored_including_groups_and_inline_flags() -> None:
    assert acl(r"path_reg ^/a$ ^/(b|c)$ (?i)^/D$")(Req(url="/d"))
    assert acl(r"path_reg ^/a$ ^/(b|c)$")(Req(url="/c"))
    assert not acl(r"path_reg ^/a$ ^/(b|c)$")(Req(url="/e"))


def test_quoted_values_keep_spaces() -> None:
    test = acl("""hdr(x-name) "John Smith" 'Jane Doe'""")
    assert test(Req(headers=[("X-Name", "Jane Doe")]))
    assert not test(Req(headers=[("X-Name", "John")]))


def test_double_dash_ends_flags() -> None:
    assert acl("hdr(x-v) -- -i")(Req(headers=[("X-V", "-i")]))


def test_list_acl_is_ored() -> None:
    test = acl(["path_beg /api", "hdr(x-api) -m found", "src 192.168.0.0/16"])
    assert test(Req(url="/api/x"))
    assert test(Req(headers=[("X-Api", "1")]))
    assert test(Req(src="192.168.4.4"))
    assert not test(Req(url="/web"))


@pytest.mark.parametrize(("src", "expected"), [
    ("10.1.2.3", True), ("10.255.255.255", True), ("11.0.0.1", False),
    ("192.168.1.10", True), ("192.168.1.11", False),
    ("::ffff:10.1.2.3", True), ("::ffff:192.168.1.10", True), ("::ffff:11.0.0.1", False),
    ("2001:db8::1", True), ("2001:db9::1", False), ("::1", True), ("fe80::1%eth0", False),
    ("172.16.0.9", True),                     # from the mapped pattern ::ffff:172.16.0.0/108
    ("", False), ("not-an-ip", False),
])
def test_src_addresses_and_networks(src: str, expected: bool) -> None:
    test = acl("src 10.0.0.0/8 192.168.1.10 2001:db8::/32 ::1 ::ffff:172.16.0.0/108")
    assert test(Req(src=src)) is expected


def test_src_host_bits_are_masked_like_haproxy() -> None:
    assert acl("src 10.9.9.9/8")(Req(src="10.1.1.1"))


def test_header_as_ip() -> None:
    test = acl("hdr(x-real-ip) -m ip 10.0.0.0/8")
    assert test(Req(headers=[("X-Real-IP", "10.0.0.7")]))
    assert not test(Req(headers=[("X-Real-IP", "garbage")]))


@pytest.mark.parametrize(("pattern", "expected"), [
    ("dst_port 8080", True), ("dst_port eq 8080", True), ("dst_port ne 8080", False),
    ("dst_port gt 8079", True), ("dst_port gt 8080", False), ("dst_port ge 8080", True),
    ("dst_port lt 8081", True), ("dst_port lt 8080", False), ("dst_port le 8080", True),
    ("dst_port 8000:8999", True), ("dst_port 9000:", False), ("dst_port :8080", True),
    ("dst_port lt 100 gt 8000", True),       # an operator applies to the values after it
    ("dst_port 80 gt 9000", False), ("dst_port 80 ge 8080", True),
])
def test_integer_operators(pattern: str, expected: bool) -> None:
    assert acl(pattern)(Req(dst_port=8080)) is expected


def test_stick_counters_ask_the_runtime() -> None:
    runtime = FakeRuntime(counters={(0, "http_req_rate"): 101, (1, "http_err_rate"): 2.5,
                                    (2, "conn_cur"): 3, (0, "conn_rate"): 7,
                                    (1, "http_req_cnt"): 1000})
    request = Req()
    assert acl("sc_http_req_rate(0) gt 100", runtime)(request)
    assert not acl("sc_http_req_rate(1) gt 100", runtime)(request)
    assert acl("sc_http_err_rate(1) gt 2", runtime)(request)      # rates may be floats
    assert acl("sc_conn_cur(2) eq 3", runtime)(request)
    assert acl("sc_conn_rate(0) le 7", runtime)(request)
    assert acl("sc_http_req_cnt(1) ge 1000", runtime)(request)
    assert runtime.calls[0] == (request, 0, "http_req_rate")


def test_nbsrv_and_integer_truth() -> None:
    runtime = FakeRuntime()
    assert acl("nbsrv(app) ge 1", runtime)(Req())
    assert acl("nbsrv(api) eq 0", runtime)(Req())
    assert acl("nbsrv(app)", runtime)(Req())             # no value: non-zero is true
    assert not acl("nbsrv(api)", runtime)(Req())
    runtime.servers["api"] = 4                            # read live, not at compile time
    assert acl("nbsrv(api) eq 4", runtime)(Req())


def test_date_us_is_now_in_microseconds() -> None:
    now = time.time_ns() // 1000
    assert acl(f"date_us ge {now}")(Req())
    assert not acl(f"date_us lt {now}")(Req())


def test_response_fetches_tag_the_acl() -> None:
    test = acl(["status ge 500", "srv_name app1"])
    assert response_fetch(test) == "srv_name"
    assert test(Req(status=503)) and test(Req(status=200, srv_name="app1"))
    assert not test(Req(status=200, srv_name="app2"))
    assert not test(Req())                                # not set yet: no match
    assert response_fetch(acl("path /")) is None


def test_string_acl_accepts_a_plain_string() -> None:
    assert compile_acl("x", "path /", "w", None)(Req())
