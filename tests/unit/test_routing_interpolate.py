"""Header-value templates with %[FETCH]."""

from __future__ import annotations

import time

from lbproxy.routing.interpolate import compile_template
from tests.unit.test_routing_support import FakeRuntime, Req

WHERE = "conf/a.yaml:20: frontends.web.http_request[3].set_header.value"


def render(text: str, request: Req, phase: str = "request", runtime=None) -> str:
    return compile_template(text, WHERE, runtime, phase)(request)


def test_constant_text_is_returned_unchanged() -> None:
    template = compile_template("no fetch here, 100% literal", WHERE, None, "request")
    assert template(Req()) == "no fetch here, 100% literal"


def test_date_us_is_current_microseconds() -> None:
    before = time.time_ns() // 1000
    value = render("t=%[date_us]", Req())
    after = time.time_ns() // 1000
    assert value.startswith("t=")
    assert before <= int(value[2:]) <= after


def test_request_fetches() -> None:
    request = Req(url="/p?q=1&id=7", src="::1", src_port=1234, ssl_fc=True,
                  headers=[("Host", "Example.com:80"), ("X-F", "a, b"), ("Cookie", "s=v")])
    text = ("%[src]:%[src_port] %[method] %[path] %[query] %[url_param(id)] %[host] "
            "%[hdr(x-f)] %[cook(s)] %[ssl_fc] %[url]")
    assert render(text, request) == "::1:1234 GET /p q=1&id=7 7 example.com b v 1 /p?q=1&id=7"


def test_missing_values_render_empty() -> None:
    assert render("[%[hdr(x-none)]|%[cook(c)]|%[ssl_fc_sni]|%[ssl_fc]]", Req()) == "[|||0]"


def test_path_is_rendered_raw_not_normalised() -> None:
    assert render("%[path]", Req(url="/a/../%61")) == "/a/../%61"


def test_response_fetches() -> None:
    request = Req(status=503, srv_name="app1")
    assert render("%[srv_name]", request, "response") == "app1"
    assert render("s=%[status];", request, "response") == "s=503;"
    assert render("%[status]", Req(), "response") == ""


def test_runtime_fetches() -> None:
    runtime = FakeRuntime(counters={(0, "http_req_rate"): 12})
    assert render("%[nbsrv(app)]/%[sc_http_req_rate(0)]", Req(), runtime=runtime) == "2/12"
