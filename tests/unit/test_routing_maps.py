"""Map files: reading, each kind of lookup (longest match wins where it should), runtime
edits, and the map* converters over them, with their errors at load time."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbproxy.config.errors import ConfigError
from lbproxy.routing.interpolate import compile_template
from lbproxy.routing.maps import MapFile, MapFiles
from lbproxy.routing.runtime import RuleRuntime
from lbproxy.routing.syntax import RuleError
from lbproxy.runtime.validate import load_checked
from tests.unit.test_routing_support import Req

HOSTS = """\
# host -> backend
www.example.com     app
api.example.com\tapi   # the rest of the line is the value
   indented.example.com   spaced value  \r
example.org
www.example.com     second   # a key given twice: the first counts

caf\xc3\xa9.example  utf8
"""


def write(tmp_path: Path, text: str | bytes, name: str = "m.map") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1") if isinstance(text, str) else text)
    return str(path)


def lookup(tmp_path: Path, kind: str, text: str):
    return MapFile.read(write(tmp_path, text)).lookup(kind)


def test_reading_a_file(tmp_path: Path) -> None:
    found = MapFile.read(write(tmp_path, HOSTS))
    assert found.entries == {
        "www.example.com": "app",
        "api.example.com": "api   # the rest of the line is the value",
        "indented.example.com": "spaced value",
        "example.org": "",
        "caf\xc3\xa9.example": "utf8",
    }
    assert found.lines["api.example.com"] == 3 and found.lines["caf\xc3\xa9.example"] == 8
    assert found.name == "m.map"


def test_exact(tmp_path: Path) -> None:
    get = lookup(tmp_path, "map", HOSTS)
    assert get("www.example.com") == "app"
    assert get("WWW.example.com") is None                  # keys are case-sensitive
    assert get("example.org") == ""                        # an empty value is a value
    assert get("a.www.example.com") is None


def test_domain_by_labels_most_specific_wins(tmp_path: Path) -> None:
    get = lookup(tmp_path, "map_dom", "example.com base\napi.example.com api\ncom tld\n")
    assert get("example.com") == "base"
    assert get("a.b.example.com") == "base"
    assert get("v1.api.example.com") == "api"
    assert get("api.example.com") == "api"
    assert get("example.net") is None
    assert get("other.com") == "tld"
    assert get("notexample.com") == "tld"                  # labels, not characters


def test_prefix_longest_wins(tmp_path: Path) -> None:
    get = lookup(tmp_path, "map_beg", "/api one\n/api/v2 two\n/ root\n/static/img img\n")
    assert get("/api/v2/users") == "two"
    assert get("/api/v1") == "one"
    assert get("/apix") == "one"
    assert get("/static/css") == "root"
    assert get("x") is None
    assert get("") is None


def test_suffix_longest_wins(tmp_path: Path) -> None:
    get = lookup(tmp_path, "map_end", ".jpg image\n.min.js minified\n.js script\n")
    assert get("/a/b.min.js") == "minified"
    assert get("/a/b.js") == "script"
    assert get("/a.jpg") == "image"
    assert get("/a.png") is None
    assert get("js") is None


def test_substring_first_in_file_order(tmp_path: Path) -> None:
    get = lookup(tmp_path, "map_sub", "bot crawler\ngoogle google\n")
    assert get("Mozilla googlebot") == "crawler"            # both match: the first line
    assert get("google") == "google"
    assert get("curl") is None


def test_regex_first_in_file_order(tmp_path: Path) -> None:
    get = lookup(tmp_path, "map_reg", "^/api/v[0-9]+/ versioned\n^/api/ api\n\\.php$ php\n")
    assert get("/api/v2/x") == "versioned"
    assert get("/api/x") == "api"
    assert get("/index.php") == "php"
    assert get("/API/") is None


def test_ip_longest_prefix_v4_and_v6(tmp_path: Path) -> None:
    get = lookup(tmp_path, "map_ip", """\
10.0.0.0/8          ten
10.1.0.0/16         ten-one
10.1.2.3            host
2001:db8::/32       doc
2001:db8:1::/48     doc-one
::ffff:192.168.0.0/112   mapped
0.0.0.0/0           any4
""")
    assert get("10.1.2.3") == "host"
    assert get("10.1.2.4") == "ten-one"
    assert get("10.200.0.1") == "ten"
    assert get("192.168.4.5") == "mapped"                  # an IPv4-mapped key is IPv4
    assert get("::ffff:10.1.0.9") == "ten-one"             # and so is a mapped address
    assert get("8.8.8.8") == "any4"
    assert get("2001:db8:1:2::1") == "doc-one"
    assert get("2001:db8:2::1") == "doc"
    assert get("2001:db9::1") is None                       # no IPv6 default
    assert get("fe80::1%eth0") is None
    assert get("not an address") is None


def test_bad_keys_for_a_kind_name_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, "10.0.0.0/8 a\n# c\nwww.example.com b\n(x c\n")
    found = MapFile.read(path)
    with pytest.raises(ValueError) as caught:
        found.lookup("map_ip")
    assert str(caught.value) == f"{path}:3: invalid address 'www.example.com'"
    with pytest.raises(ValueError) as caught:
        found.lookup("map_reg")
    assert str(caught.value).startswith(f"{path}:4: bad regex '(x': missing )")
    assert found.lookup("map")("www.example.com") == "b"   # other kinds are still fine


# --- runtime edits ----------------------------------------------------------------------------

def test_edits_reach_every_kind_in_use(tmp_path: Path) -> None:
    found = MapFile.read(write(tmp_path, "10.0.0.0/8 ten\n"))
    exact, by_ip = found.lookup("map"), found.lookup("map_ip")
    assert found.set("10.1.0.0/16", "ten-one") is True
    assert by_ip("10.1.2.3") == "ten-one" and exact("10.1.0.0/16") == "ten-one"
    assert found.set("10.0.0.0/8", "TEN") is False
    assert by_ip("10.9.9.9") == "TEN"
    with pytest.raises(ValueError, match="invalid address 'nope'"):
        found.set("nope", "x")                              # map_ip is in use: refused
    assert "nope" not in found.entries
    assert found.delete("10.1.0.0/16") is True and found.delete("10.1.0.0/16") is False
    assert by_ip("10.1.2.3") == "TEN"
    assert found.delete("10.0.0.0/8") and by_ip("10.1.2.3") is None
    assert found.edits == 4 and found.kinds == ["map", "map_ip"]


def test_edits_of_prefixes_and_patterns(tmp_path: Path) -> None:
    found = MapFile.read(write(tmp_path, "/a a\n"))
    prefix, pattern, suffix = found.lookup("map_beg"), found.lookup("map_reg"), found.lookup("map_end")
    found.set("/a/very/long/prefix", "long")
    assert prefix("/a/very/long/prefix/x") == "long" and prefix("/a/b") == "a"
    assert pattern("/a/very/long/prefix") == "a"            # a new key goes last
    assert suffix("x/a") == "a"
    found.delete("/a")
    assert prefix("/a/b") is None and pattern("/a/b") is None
    with pytest.raises(ValueError, match="bad regex"):
        found.set("(", "x")


def test_same_network_twice_the_first_counts_until_deleted(tmp_path: Path) -> None:
    found = MapFile.read(write(tmp_path, "10.0.0.1/8 first\n10.0.0.0/8 second\n"))
    get = found.lookup("map_ip")
    assert get("10.2.3.4") == "first"
    found.delete("10.0.0.1/8")
    assert get("10.2.3.4") == "second"


@pytest.mark.parametrize(("key", "value"), [
    ("", "x"), ("a b", "x"), ("#a", "x"), ("a\tb", "x"), ("a", "two\nlines")])
def test_edits_a_file_could_not_hold_are_refused(tmp_path: Path, key: str, value: str) -> None:
    found = MapFile.read(write(tmp_path, "a b\n"))
    with pytest.raises(ValueError):
        found.set(key, value)
    assert found.entries == {"a": "b"}


# --- converters over map files ------------------------------------------------------------------

def test_a_file_is_read_once_for_every_use(tmp_path: Path) -> None:
    write(tmp_path, "www.example.com app\n/api api\n", "hosts.map")
    runtime = RuleRuntime({})
    at = f"{tmp_path}/lb.yaml:3: x"
    first = compile_template("%[hdr(host),map(hosts.map)]", at, runtime, "request")
    second = compile_template(f"%[path,map_beg({tmp_path}/hosts.map,none)]", at, runtime,
                              "request")
    assert list(runtime.maps.files) == [f"{tmp_path}/hosts.map"]
    request = Req(url="/api/x", headers=[("Host", "www.example.com")])
    assert first(request) == "app" and second(request) == "api"
    assert runtime.maps.files[f"{tmp_path}/hosts.map"].kinds == ["map", "map_beg"]


def test_defaults_and_missing_values(tmp_path: Path) -> None:
    write(tmp_path, "www.example.com app\nempty.example.com\n", "hosts.map")
    at = f"{tmp_path}/lb.yaml:3: x"

    def render(text: str, request: Req) -> str:
        return compile_template(text, at, RuleRuntime({}), "request")(request)
    hosted = Req(headers=[("Host", "WWW.example.com")])
    assert render("%[hdr(host),lower,map(hosts.map,dflt)]", hosted) == "app"
    assert render("%[hdr(host),map(hosts.map,dflt)]", hosted) == "dflt"     # a miss
    assert render("%[hdr(host),map(hosts.map)]", hosted) == ""
    assert render("%[hdr(host),map(hosts.map,dflt)]", Req()) == "dflt"      # no value at all
    assert render("%[hdr(host),lower,map_dom(hosts.map,dflt)]", Req()) == "dflt"
    assert render("%[hdr(host),map(hosts.map,dflt)]",
                  Req(headers=[("Host", "empty.example.com")])) == ""       # an empty value
    assert render("%[hdr(host),map(hosts.map,dflt),upper]", Req()) == "DFLT"


def test_a_key_that_does_not_suit_the_kind_is_an_error_at_the_rule(tmp_path: Path) -> None:
    path = write(tmp_path, "10.0.0.0/8 net\nwww.example.com app\n", "hosts.map")
    at = f"{tmp_path}/lb.yaml:3: x"
    with pytest.raises(RuleError) as caught:
        compile_template("%[src,map_ip(hosts.map)]", at, RuleRuntime({}), "request")
    assert str(caught.value) == (f"{at}: 'map_ip(hosts.map)': {path}:2: invalid "
                                 "address 'www.example.com'")


def test_registry_by_name(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    maps = MapFiles()
    one = maps.load(write(tmp_path, "k v\n", "hosts.map"))
    two = maps.load(write(tmp_path / "a", "k w\n", "hosts.map"))
    assert maps.load(one.path) is one
    assert maps.named("hosts.map") == [one, two] and maps.named("x.map") == []
    with pytest.raises(ValueError, match=r"^cannot read .*/nope.map: No such file or "
                                         r"directory$"):
        maps.load(str(tmp_path / "nope.map"))
    with pytest.raises(ValueError, match=r"^cannot read .*/host.map: No such file or "
                                         r"directory \(did you mean 'hosts.map'\?\)$"):
        maps.load(str(tmp_path / "host.map"))


# --- in a configuration -------------------------------------------------------------------------

CONFIG = """\
frontends:
  web:
    bind: "127.0.0.1:8080"
    acls:
      known: "hdr(host),lower,map_dom(maps/hosts.map) -m found"
    use_backend:
      - {backend: "%[hdr(host),lower,map(maps/hosts.map)]", if: known}
      - backend: "%[hdr(host),lower,map(MISSING)]"
      - backend: "%[hdr(host),lowr]"
    default_backend: app
backends:
  app: {servers: [{name: a, address: "127.0.0.1:9"}]}
"""


def test_paths_are_relative_to_the_yaml_file_and_errors_name_the_keys_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    (conf / "maps").mkdir(parents=True)
    (conf / "maps" / "hosts.map").write_text("www.example.com app\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    yaml_path = conf / "lb.yaml"
    yaml_path.write_text(CONFIG.replace("MISSING", "../nope.map"))
    with pytest.raises(ConfigError) as caught:
        load_checked(yaml_path)
    assert caught.value.errors == [
        f"{yaml_path}:8: frontends.web.use_backend[1].backend: 'map(../nope.map)': cannot "
        f"read {tmp_path}/nope.map: No such file or directory",
        f"{yaml_path}:9: frontends.web.use_backend[2].backend: unknown converter 'lowr' "
        "(did you mean 'lower'?)",
    ]
    fixed = CONFIG.replace("MISSING", "maps/hosts.map").splitlines()
    yaml_path.write_text("\n".join(fixed[:8] + fixed[9:]) + "\n")
    config = load_checked(yaml_path)
    assert [choice.backend for choice in config.frontends["web"].use_backend] == [
        "%[hdr(host),lower,map(maps/hosts.map)]", "%[hdr(host),lower,map(maps/hosts.map)]"]
