"""Converters, map files and dynamic use_backend end to end: a 100,000-host map routing to
the right backends, runtime map edits through the API (and a reload dropping them),
fall-through to default_backend, converters in header templates and ACLs, each map kind
and a track_sc key with converters."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import signal
from pathlib import Path

from tests.harness import free_port, get, simple_config, wait_for, write_config
from tests.integration.test_admin import AUTH, call, call_json
from tests.integration.test_workers import admin, worker_json, worker_pids
from tests.process import LbproxyProcess

HOSTS = 100_000
NAMES = ("app", "b1", "b2")


def three_backends(ports: list[int], **frontend) -> dict:
    """Backends app, b1, b2 (servers app1, app2, app3), `app` the default."""
    config = simple_config([ports[0]], **frontend)
    for name, port in zip(NAMES[1:], ports[1:]):
        config["backends"][name] = {"servers": [{"name": name, "address": f"127.0.0.1:{port}"}]}
    return config


def with_stats(config: dict) -> dict:
    config["stats"] = {"bind": f"127.0.0.1:{free_port()}", "admin": True,
                       "auth": {"username": AUTH[0], "password": AUTH[1]}}
    return config


def served_by(port: int, host: str) -> str | None:
    response = get(port, "/", {"Host": host})
    assert response.status == 200, response.body[:200]
    return response.header("x-server")


def write_host_map(path: Path) -> None:
    """h{i}.example.com -> app, b1 or b2 by i % 3; one host to a backend that does not exist."""
    lines = ["# generated: 100,000 hosts"]
    lines += [f"h{i}.example.com {NAMES[i % 3]}" for i in range(HOSTS)]
    lines.append("gone.example.com no-such-backend")
    path.write_text("\n".join(lines) + "\n")


def test_a_100000_host_map_routes_each_host_to_its_backend(backends, proxy, tmp_path):
    apps = backends(3)
    write_host_map(tmp_path / "hosts.map")
    p = proxy(three_backends([a.port for a in apps], use_backend=[
        {"backend": f"%[hdr(host),lower,map({tmp_path}/hosts.map)]"}]))
    server_of = {"app": "app1", "b1": "app2", "b2": "app3"}
    sample = [0, 1, 2, 3, 4, 5, 12_345, 50_000, 77_777, 99_998, 99_999]
    for i in sample:
        assert served_by(p.port, f"h{i}.example.com") == server_of[NAMES[i % 3]], i
    assert served_by(p.port, "H31337.Example.COM") == server_of[NAMES[31337 % 3]]
    assert served_by(p.port, "unknown.example.com") == "app1"       # default_backend
    assert served_by(p.port, "gone.example.com") == "app1"          # names no backend
    assert served_by(p.port, "h100000.example.com") == "app1"
    expected = [sum(1 for i in [*sample, 31337] if i % 3 == n) for n in range(3)]
    assert [a.stats.requests for a in apps] == [expected[0] + 3, expected[1], expected[2]]


def test_runtime_edits_change_routing_at_once_and_a_reload_drops_them(
        backends, proxy, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lbproxy.api")
    apps = backends(3)
    hosts = tmp_path / "hosts.map"
    hosts.write_text("www.example.com b1\n")
    p = proxy(with_stats(three_backends([a.port for a in apps], use_backend=[
        {"backend": f"%[hdr(host),lower,map_dom({hosts},app)]"}])))
    assert served_by(p.port, "a.www.example.com") == "app2"
    assert served_by(p.port, "shop.example.com") == "app1"

    assert call_json(p, "PUT", "/api/maps/hosts.map/shop.example.com", {"value": "b2"},
                     status=201) == {"name": "hosts.map", "key": "shop.example.com",
                                     "value": "b2"}
    assert served_by(p.port, "shop.example.com") == "app3"          # no reload, at once
    call_json(p, "PUT", "/api/maps/hosts.map/www.example.com", {"value": "b2"})
    assert served_by(p.port, "x.www.example.com") == "app3"
    assert call_json(p, "GET", "/api/maps") == {"maps": [
        {"name": "hosts.map", "path": str(hosts), "size": 2, "kinds": ["map_dom"],
         "edits": 2}]}
    page = call_json(p, "GET", "/api/maps/hosts.map?limit=1")
    assert page["entries"] == [{"key": "www.example.com", "value": "b2"}]
    assert page["next"] == "/api/maps/hosts.map?offset=1&limit=1"
    assert call_json(p, "GET", page["next"])["entries"] == [
        {"key": "shop.example.com", "value": "b2"}]
    assert call_json(p, "GET", "/api/maps/hosts.map/shop.example.com")["value"] == "b2"
    call_json(p, "DELETE", "/api/maps/hosts.map/shop.example.com")
    assert served_by(p.port, "shop.example.com") == "app1"
    assert hosts.read_text() == "www.example.com b1\n"               # the file is untouched
    audit = [r.getMessage().split(" (by ")[0] for r in caplog.records if r.name == "lbproxy.api"]
    assert audit == ["api: map hosts.map: added shop.example.com = b2",
                     "api: map hosts.map: set www.example.com = b2",
                     "api: map hosts.map: deleted shop.example.com"]

    asyncio.run_coroutine_threadsafe(p.engine.reload(), p.loop).result(5)
    assert served_by(p.port, "x.www.example.com") == "app2"          # the file again
    assert call_json(p, "GET", "/api/maps")["maps"][0]["edits"] == 0


def test_map_api_errors(backends, proxy, tmp_path):
    (app,) = backends(1)
    (tmp_path / "a").mkdir()
    (tmp_path / "nets.map").write_text("10.0.0.0/8 app\n")
    (tmp_path / "hosts.map").write_text("x app\n")
    (tmp_path / "a" / "hosts.map").write_text("y app\n")
    p = proxy(with_stats(simple_config([app.port], http_request=[
        {"set_header": {"name": "X-Net", "value": f"%[src,map_ip({tmp_path}/nets.map)]"}},
        {"set_header": {"name": "X-A", "value": f"%[path,map({tmp_path}/hosts.map)]"}},
        {"set_header": {"name": "X-B", "value": f"%[path,map({tmp_path}/a/hosts.map)]"}}])))
    assert call(p, "GET", "/api/maps/hosts.map").status == 409
    assert call(p, "PUT", "/api/maps/hosts.map/k", {"value": "v"}).status == 409
    assert call(p, "GET", "/api/maps/none.map").status == 404
    assert call(p, "GET", "/api/maps/nets.map/192.168.0.0%2F16").status == 404
    assert call(p, "DELETE", "/api/maps/nets.map/192.168.0.0%2F16").status == 404
    bad = call(p, "PUT", "/api/maps/nets.map/not-a-network", {"value": "app"})
    assert bad.status == 400 and b"invalid address 'not-a-network'" in bad.body
    assert call(p, "PUT", "/api/maps/nets.map/k", {"value": 3}).status == 400
    assert call(p, "PUT", "/api/maps/nets.map/k", {"valu": "x"}).status == 400
    assert call(p, "PUT", "/api/maps/nets.map/10.1.0.0%2F16", {"value": "v"},
                auth=None).status == 401
    assert call_json(p, "PUT", "/api/maps/nets.map/10.1.0.0/16", {"value": "one"},
                     status=201)["key"] == "10.1.0.0/16"             # a key may hold '/'
    assert call_json(p, "GET", "/api/maps/nets.map?offset=1")["entries"] == [
        {"key": "10.1.0.0/16", "value": "one"}]
    assert call(p, "GET", "/api/maps/nets.map?limit=x").status == 400


def test_dynamic_use_backend_falls_through_to_the_next_rule_and_the_default(backends, proxy):
    apps = backends(3)
    p = proxy(three_backends([a.port for a in apps], use_backend=[
        {"backend": "%[hdr(x-backend)]", "if": "{ hdr(x-backend) -m found }"},
        {"backend": "b%[url_param(n)]"},
        {"backend": "b2", "if": "{ path_beg /two }"}]))
    assert get(p.port, "/", {"X-Backend": "b1"}).header("x-server") == "app2"
    assert get(p.port, "/", {"X-Backend": "nope"}).header("x-server") == "app1"
    assert get(p.port, "/?n=2", {"X-Backend": "nope"}).header("x-server") == "app3"
    assert get(p.port, "/two?n=9").header("x-server") == "app3"      # to the next rule
    assert get(p.port, "/?n=1").header("x-server") == "app2"
    assert get(p.port, "/").header("x-server") == "app1"             # "b" names none


def test_converters_in_a_header_template_and_in_an_acl(backends, proxy, tmp_path):
    apps = backends(2)
    (tmp_path / "paths.map").write_text("/api/v2 b1\n/api b1-old\n")
    config = three_backends([apps[0].port, apps[1].port], acls={
        "v2": f"path,map_beg({tmp_path}/paths.map) -m str b1",
        "shouting": "hdr(host),field(1,:),upper,length gt 0",
        "short_host": "hdr(host),field(1,.),length lt 3"}, http_request=[
        {"set_header": {"name": "X-Host-Id",
                        "value": "%[hdr(host),lower,field(1,:),sha2(256),hex]"}},
        {"set_header": {"name": "X-Site", "value": "%[hdr(host),lower,regsub(^www\\.,)]"}},
        {"deny": {"status": 403}, "if": "short_host"}],
        use_backend=[{"backend": "b1", "if": "v2 shouting"}])
    p = proxy(config)
    response = get(p.port, "/api/v2/users", {"Host": "WWW.Example.com:8080"})
    assert response.header("x-server") == "app2"
    head = apps[1].stats.last_head
    assert head.header("x-host-id") == hashlib.sha256(b"www.example.com").hexdigest().upper()
    assert head.header("x-site") == "example.com:8080"
    assert get(p.port, "/api/v1", {"Host": "www.example.com"}).header("x-server") == "app1"
    assert get(p.port, "/", {"Host": "ab.example.com"}).status == 403


def test_a_map_edit_reaches_every_worker(backends, tmp_path):
    apps = backends(2)
    hosts = tmp_path / "hosts.map"
    hosts.write_text("www.example.com app\n")
    config = with_stats(three_backends([a.port for a in apps], use_backend=[
        {"backend": f"%[hdr(host),lower,map({hosts})]"}]))
    config["global"] = {"workers": 2, "log": {"format": "off"}}
    config["stats"]["auth"]["password"] = "pw"                      # test_workers.admin's
    port = int(config["frontends"]["web"]["bind"][0].rsplit(":", 1)[1])
    stats_port = int(config["stats"]["bind"].rsplit(":", 1)[1])
    path = write_config(config, str(tmp_path))
    with LbproxyProcess("run", "-c", path, wait_port=stats_port) as lb:
        wait_for(lambda: len(worker_pids(lb.pid)) == 2)
        assert admin(stats_port, "PUT", "/api/maps/hosts.map/shop.example.com",
                     {"value": "b1"}).status == 201
        for index in (0, 1):
            assert worker_json(lb.pid, index, "/api/maps/hosts.map/shop.example.com") == {
                "name": "hosts.map", "key": "shop.example.com", "value": "b1"}
        merged = json.loads(admin(stats_port, "GET", "/api/maps").body)
        assert merged["maps"][0]["size"] == 2 and merged["maps"][0]["edits"] == 1
        assert {served_by(port, "shop.example.com") for _ in range(20)} == {"app2"}
        lb.signal(signal.SIGTERM)
        assert lb.wait() == 0


MAPS = {
    "exact.map": "www.example.com exact\n",
    "beg.map": "/api short\n/api/v2 long\n",
    "end.map": ".gz gz\n.tar.gz tgz\n",
    "sub.map": "bot crawler\nmobile phone\n",
    "reg.map": "\\.tar\\.gz$ archive\n^/api/ api\n",
    "dom.map": "example.com dom\nshop.example.com shop\n",
    "ip.map": "127.0.0.0/8 loopback\n127.0.0.1/32 me\n10.0.0.0/8 office\n",
}
KIND_HEADERS = {          # header -> expression over the kind's map file in directory D
    "x-exact": "hdr(host),lower,field(1,:),map(D/exact.map,none)",
    "x-beg": "path,map_beg(D/beg.map)",
    "x-end": "path,map_end(D/end.map)",
    "x-sub": "hdr(user-agent),lower,map_sub(D/sub.map)",
    "x-reg": "path,map_reg(D/reg.map)",
    "x-dom": "host,map_dom(D/dom.map)",
    "x-ip": "src,map_ip(D/ip.map)",
}


def test_each_map_kind_and_a_converted_track_key_at_the_server(backends, proxy, tmp_path):
    (app,) = backends(1)
    for name, text in MAPS.items():
        (tmp_path / name).write_text(text)
    rules = [{"set_header": {"name": header,
                             "value": "%[" + expression.replace("D/", f"{tmp_path}/") + "]"}}
             for header, expression in KIND_HEADERS.items()]
    rules += [{"track_sc1": "hdr(x-api-key),lower,sha1,hex"},
              {"deny": {"status": 429}, "if": "{ sc_http_req_cnt(1) gt 2 }"}]
    p = proxy(simple_config([app.port], http_request=rules, stick_table={
        "type": "string", "size": 100, "expire": "30s", "store": ["http_req_cnt"]}))

    def seen(path: str, headers: dict[str, str]) -> dict[str, str | None]:
        assert get(p.port, path, headers).status == 200
        return {name: app.stats.last_head.header(name) for name in KIND_HEADERS}

    assert seen("/api/v2/x.tar.gz", {"Host": "A.Shop.Example.COM:8080", "X-Api-Key": "k1",
                                     "User-Agent": "Some Mobile Bot/1.0"}) == {
        "x-exact": "none", "x-beg": "long", "x-end": "tgz", "x-sub": "crawler",
        "x-reg": "archive", "x-dom": "shop", "x-ip": "me"}
    assert seen("/apix.gz", {"Host": "WWW.example.com", "X-Api-Key": "k2",
                             "User-Agent": "phone mobile"}) == {
        "x-exact": "exact", "x-beg": "short", "x-end": "gz", "x-sub": "phone",
        "x-reg": "", "x-dom": "dom", "x-ip": "me"}
    assert get(p.port, "/", {"Host": "x", "X-Api-Key": "K1"}).status == 200   # k1's 2nd
    assert get(p.port, "/", {"Host": "x", "X-Api-Key": "k1"}).status == 429   # its 3rd
    assert get(p.port, "/", {"Host": "x", "X-Api-Key": "k2"}).status == 200
