"""Python plugins through a real proxy: fetches, actions (sync and async), balancers, their
failures (500, logged once, the proxy goes on), `lbproxy check` on plugin names, and a
plugin found through an installed distribution's entry point."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lbproxy.extensions import FAILURES
from tests.harness import connect, free_port, get, simple_config, wait_for, write_config
from tests.h2server import H2Server
from tests.origin import Origin
from tests.process import LbproxyProcess

pytestmark = pytest.mark.usefixtures("isolated_plugins")

# Registered once per test process (names are global): every test uses this one file.
PLUGIN = '''
import asyncio
from lbproxy import ext

state = {"cancelled": 0}

@ext.fetch("t_shout")
def shout(req):
    return req.path.upper()

@ext.fetch("t_digits", kind="int", takes_arg=True)
def digits(req, name):
    value = req.header(name)
    return int(value) if value and value.isdigit() else None

@ext.fetch("t_fail")
def fail(req):
    raise KeyError("no such thing")

@ext.converter("t_rot")
def rot(value, *args):
    return value[int(args[0]):] + value[:int(args[0])] if args else value[::-1]

@ext.converter("t_conv_fail")
def conv_fail(value):
    raise ValueError("cannot convert " + value)

def needs_value(args):
    if not isinstance(args, dict) or "value" not in args:
        raise ValueError("needs {value: ...}")

@ext.action("t_tag", check=needs_value)
def tag(req, args):
    req.set_header("X-Tag", args["value"] + ":" + req.fetch("t_shout"))
    req.del_header("X-Secret")
    if req.path == "/teapot":
        return ext.Response(418, "short and stout\\n", [("X-Why", "plugin"),
                                                        ("Content-Type", "text/x-tea")])

@ext.action("t_wait")
async def wait(req, args):
    try:
        await asyncio.sleep(10 if req.path == "/hang" else float(args))
    except asyncio.CancelledError:
        state["cancelled"] += 1
        raise
    if req.path == "/boom":
        raise RuntimeError("boom in an async action")
    req.set_header("X-Waited", "yes")

@ext.action("t_wrong")
def wrong(req, args):
    return 42

@ext.balancer("t_last")
class Last(ext.Balancer):
    def pick(self, req, servers):
        return servers[-1]

@ext.balancer("t_broken")
class Broken(ext.Balancer):
    def pick(self, req, servers):
        raise ValueError("cannot choose")
'''


@pytest.fixture(scope="module")
def plugin_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("plugins") / "testing_plugin.py"
    path.write_text(PLUGIN)
    return str(path)


def plugin_config(plugin: str, ports: list[int], **frontend) -> dict:
    config = simple_config(ports, **frontend)
    config["global"]["plugins"] = [plugin]
    return config


def echoed(response) -> dict[str, str]:
    return {name.lower(): value for name, value in json.loads(response.body)["headers"]}


def test_a_plugin_fetch_routes_and_a_sync_action_edits_the_request(backends, proxy, plugin_file):
    (app,) = backends(1)
    p = proxy(plugin_config(plugin_file, [app.port], http_request=[
        {"t_tag": {"value": "v1"}},
        {"set_header": {"name": "X-Rot", "value": "%[path,t_rot(2)]|%[t_shout,t_rot,lower]"}},
        {"deny": {"status": 451}, "if": "{ t_shout /LOUD }"},
        {"deny": {"status": 429}, "if": "{ t_digits(x-n) gt 5 }"}]))
    headers = echoed(get(p.port, "/echo", {"X-Secret": "s3cret"}))
    assert headers["x-tag"] == "v1:/ECHO"
    assert headers["x-rot"] == "cho/e|ohce/"                      # plugin converters
    assert "x-secret" not in headers
    assert get(p.port, "/loud").status == 451
    assert get(p.port, "/echo", {"X-N": "9"}).status == 429
    assert get(p.port, "/echo", {"X-N": "3"}).status == 200


def test_an_action_can_answer_without_the_server(backends, proxy, plugin_file):
    (app,) = backends(1)
    p = proxy(plugin_config(plugin_file, [app.port], http_request=[{"t_tag": {"value": "v"}}]))
    before = app.stats.requests
    response = get(p.port, "/teapot")
    assert (response.status, response.body) == (418, b"short and stout\n")
    assert response.header("x-why") == "plugin"
    assert response.header("content-type") == "text/x-tea"
    assert app.stats.requests == before


def test_an_async_action_suspends_the_request_then_the_rules_after_it_apply(
        backends, proxy, plugin_file):
    (app,) = backends(1)
    p = proxy(plugin_config(plugin_file, [app.port], http_request=[
        {"t_wait": 0.05}, {"set_header": {"name": "X-After", "value": "%[hdr(x-waited)]"}}]))
    headers = echoed(get(p.port, "/echo"))
    assert (headers["x-waited"], headers["x-after"]) == ("yes", "yes")


def test_a_failing_plugin_answers_500_logs_once_and_the_proxy_goes_on(
        backends, proxy, plugin_file, caplog):
    (app,) = backends(1)
    p = proxy(plugin_config(plugin_file, [app.port], http_request=[
        {"t_wait": 0}, {"t_wrong": None, "if": "{ path /wrong }"},
        {"deny": {}, "if": "{ path /conv } { path,t_conv_fail -m found }"},
        {"deny": {}, "if": "{ t_fail -m found }"}]))
    caplog.set_level(logging.ERROR, "lbproxy.plugins")
    before = dict(FAILURES)
    assert [get(p.port, "/boom").status for _ in range(3)] == [500, 500, 500]
    assert get(p.port, "/wrong").status == 500
    assert get(p.port, "/conv").status == 500                     # a converter raised
    assert get(p.port, "/any").status == 500                      # t_fail raised in an ACL
    assert FAILURES["t_wait"] - before.get("t_wait", 0) == 3
    assert FAILURES["t_wrong"] - before.get("t_wrong", 0) == 1
    assert FAILURES["t_fail"] - before.get("t_fail", 0) == 1
    assert FAILURES["t_conv_fail"] - before.get("t_conv_fail", 0) == 1
    tracebacks = [r.getMessage() for r in caplog.records if "Traceback" in r.getMessage()]
    # a plugin's first failure in this process is logged with its traceback, later ones not
    assert sum("boom in an async action" in text for text in tracebacks) == \
        (0 if before.get("t_wait") else 1)
    assert sum("KeyError: 'no such thing'" in text for text in tracebacks) == \
        (0 if before.get("t_fail") else 1)


def test_a_plugin_failing_in_a_response_rule_answers_500_instead_of_the_answer(proxy,
                                                                            plugin_file):
    """The server's answer, or the cached one, is dropped for the proxy's 500 (the server
    connection closed, the server not blamed), and the next request is served."""
    with Origin() as origin:
        config = plugin_config(plugin_file, [origin.port], http_response=[
            {"set_header": {"name": "X-Fail", "value": "%[t_fail]"},
             "if": "{ hdr(x-refuse) -m found }"}])
        config["backends"]["app"]["cache"] = "web"
        config["caches"] = {"web": {}}
        p = proxy(config)
        refuse = {"X-Refuse": "1"}
        cached = "/cached?h=Cache-Control:max-age=60"
        assert get(p.port, cached).status == 200                   # stored
        for path in ("/plain", cached):                              # from the server, a hit
            response = get(p.port, path, refuse)
            assert response.status == 500, path
            assert b"500 Internal Server Error" in response.body
        assert origin.count("/cached") == 1
        assert get(p.port, "/fine").status == 200
        assert p.call(lambda: p.engine.backends["app"].servers[0].failures) == 0


def test_a_plugin_failing_in_a_response_rule_cancels_an_http2_server_stream(proxy,
                                                                          plugin_file):
    with H2Server() as server:
        config = plugin_config(plugin_file, [server.port], http_response=[
            {"set_header": {"name": "X-Fail", "value": "%[t_fail]"},
             "if": "{ hdr(x-refuse) -m found }"}])
        config["backends"]["app"]["proto"] = "h2"
        p = proxy(config)
        assert get(p.port, "/", {"X-Refuse": "1"}).status == 500
        assert get(p.port, "/").status == 200                    # the connection goes on
        assert p.call(lambda: p.engine.backends["app"].servers[0].failures) == 0


def test_an_async_action_past_the_client_timeout_is_cancelled_with_500(
        backends, proxy, plugin_file):
    (app,) = backends(1)
    config = plugin_config(plugin_file, [app.port], http_request=[{"t_wait": 0}],
                           timeouts={"client": "300ms"})
    p = proxy(config)
    module = sys.modules[next(name for name in sys.modules if name.endswith("testing_plugin"))]
    cancelled = module.state["cancelled"]
    assert get(p.port, "/hang").status == 500
    assert module.state["cancelled"] == cancelled + 1


def test_a_client_that_leaves_cancels_the_async_action(backends, proxy, plugin_file):
    (app,) = backends(1)
    p = proxy(plugin_config(plugin_file, [app.port], http_request=[{"t_wait": 0}]))
    module = sys.modules[next(name for name in sys.modules if name.endswith("testing_plugin"))]
    cancelled = module.state["cancelled"]
    sock = connect(p.port)
    sock.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.close()
    wait_for(lambda: module.state["cancelled"] == cancelled + 1, 5)
    assert get(p.port, "/").status == 200


def test_a_plugin_balancer_picks_and_a_broken_one_answers_500(backends, proxy, plugin_file):
    apps = backends(3)
    p = proxy(plugin_config(plugin_file, [a.port for a in apps], backend={"balance": "t_last"}))
    assert {get(p.port, "/").body for _ in range(6)} == {b"hello from app3\n"}
    broken = proxy(plugin_config(plugin_file, [a.port for a in apps],
                                 backend={"balance": "t_broken"}))
    assert get(broken.port, "/").status == 500
    assert get(p.port, "/").status == 200


def run_check(config: dict | str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lbproxy", "check", "-c", write_config(config)],
                          capture_output=True, text=True, timeout=60, env=env)


def test_check_knows_plugin_names_and_reports_them_with_file_and_line(plugin_file):
    config = plugin_config(plugin_file, [free_port()], http_request=[
        {"t_tag": {"valeu": 1}}, {"t_wiat": 0}])
    config["backends"]["app"]["balance"] = "t_lst"
    result = run_check(config)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert any("http_request[0].t_tag: t_tag: needs {value: ...}" in line for line in lines)
    assert any("unknown action 't_wiat' (did you mean 't_wait'?)" in line for line in lines)
    assert any("unknown algorithm 't_lst' (did you mean 't_last'?)" in line for line in lines)
    assert all(line.split(":")[1].isdigit() for line in lines)      # FILE:LINE: ...


def test_a_plugin_that_cannot_be_imported_is_a_config_error(tmp_path):
    (tmp_path / "broken_plugin.py").write_text("import no_such_module_here\n")
    config = simple_config([free_port()])
    config["global"]["plugins"] = [str(tmp_path / "broken_plugin.py"), "no.such.module"]
    result = run_check(config)
    assert result.returncode != 0
    assert "global.plugins[0]: cannot import plugin" in result.stderr
    assert "No module named 'no_such_module_here'" in result.stderr
    assert "global.plugins[1]: cannot import plugin 'no.such.module'" in result.stderr


def installed_distribution(root: Path) -> Path:
    """A distribution as pip leaves it in site-packages: the module and its dist-info with
    an `lbproxy.plugins` entry point."""
    (root / "hello_lbplugin.py").write_text(textwrap.dedent('''
        from lbproxy import ext

        @ext.action("hello_header")
        def hello(req, args):
            req.set_header("X-Hello", str(args))
        '''))
    info = root / "hello_lbplugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-lbplugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[lbproxy.plugins]\nhello = hello_lbplugin\n")
    return root


def test_an_installed_entry_point_is_loaded_without_being_listed(tmp_path, backends):
    (app,) = backends(1)
    site = installed_distribution(tmp_path)
    config = simple_config([app.port], http_request=[{"hello_header": "world"}])
    env = {**os.environ, "PYTHONPATH": f"{site}:{os.environ.get('PYTHONPATH', '')}"}
    assert run_check(config).returncode != 0                 # not installed: unknown action
    assert run_check(config, env).returncode == 0
    port = config["frontends"]["web"]["bind"][0].rsplit(":", 1)[1]
    path = write_config(config)
    proc = subprocess.Popen([sys.executable, "-m", "lbproxy", "run", "-c", path], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        wait_for(lambda: _answers(int(port)) or proc.poll() is not None, 15)
        assert echoed(get(int(port), "/echo"))["x-hello"] == "world"
    finally:
        proc.kill()
        proc.wait(5)
        proc.stderr.close()


def _answers(port: int) -> bool:
    try:
        connect(port, 0.2).close()
        return True
    except OSError:
        return False


def test_a_reload_can_add_a_plugin(tmp_path, backends):
    (app,) = backends(1)
    first = simple_config([app.port])
    port = int(first["frontends"]["web"]["bind"][0].rsplit(":", 1)[1])
    path = tmp_path / "lbproxy.yaml"
    path.write_text(json.dumps(first))
    (tmp_path / "late_plugin.py").write_text(textwrap.dedent('''
        from lbproxy import ext

        @ext.action("late_header")
        def late(req, args):
            req.set_header("X-Late", "here")
        '''))
    with LbproxyProcess("run", "-c", str(path), wait_port=port) as running:
        assert "x-late" not in echoed(get(port, "/echo"))
        first["global"]["plugins"] = ["late_plugin.py"]
        first["frontends"]["web"]["http_request"] = [{"late_header": None}]
        path.write_text(json.dumps(first))
        running.signal(signal.SIGHUP)
        wait_for(lambda: echoed(get(port, "/echo")).get("x-late") == "here", 10)
