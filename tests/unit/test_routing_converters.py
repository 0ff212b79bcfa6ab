"""Converters after a fetch: each converter's value, the type rules, missing values, where
they work (templates, ACLs) and the errors they give at load time."""

from __future__ import annotations

import base64
import codecs
import hashlib
import zlib
from pathlib import Path

import pytest

from lbproxy.routing.acl import compile_acl
from lbproxy.routing.converters import CONVERTERS, ConverterDef, register_converter
from lbproxy.routing.fetches import FETCHES, STR, FetchDef, register_fetch
from lbproxy.routing.interpolate import compile_template
from lbproxy.routing.runtime import RuleRuntime
from lbproxy.routing.syntax import RuleError
from tests.unit.test_routing_support import Req

REQ = Req(url="/Path/To%20File.txt?q=a%2Fb&empty=", src="10.1.2.3",
          headers=[("Host", "WWW.Example.COM:8080"), ("X-Token", "aGVsbG8="),
                   ("X-Words", "one,,two"), ("X-Multi", "a"), ("X-Multi", "B"),
                   ("X-Utf8", "caf\u00c3\u00a9")])       # the latin-1 view of UTF-8 "café"


def where(tmp_path: Path) -> str:
    return f"{tmp_path}/lb.yaml:7: frontends.web.http_request[0].set_header"


def render(text: str, request: Req = REQ, tmp_path: Path | None = None) -> str:
    at = where(tmp_path) if tmp_path else "lb.yaml:7: x"
    return compile_template(text, at, RuleRuntime({}), "request")(request)


@pytest.mark.parametrize(("expression", "expected"), [
    ("hdr(host),lower", "www.example.com:8080"),
    ("hdr(host),upper", "WWW.EXAMPLE.COM:8080"),
    ("hdr(host),length", "20"),
    ("hdr(host),base64", base64.b64encode(b"WWW.Example.COM:8080").decode()),
    ("hdr(x-token),b64dec", "hello"),
    ("hdr(host),b64dec", ""),                              # not base64: no value
    ("url_param(q),url_dec", "a/b"),
    ("path,url_dec", "/Path/To File.txt"),
    ("hdr(x-token),hex", b"aGVsbG8=".hex().upper()),
    ("hdr(x-token),sha1,hex", hashlib.sha1(b"aGVsbG8=").hexdigest().upper()),
    ("hdr(x-token),sha2,hex", hashlib.sha256(b"aGVsbG8=").hexdigest().upper()),
    ("hdr(x-token),sha2(224),hex", hashlib.sha224(b"aGVsbG8=").hexdigest().upper()),
    ("hdr(x-token),sha2(384),hex", hashlib.sha384(b"aGVsbG8=").hexdigest().upper()),
    ("hdr(x-token),sha2(512),base64",
     base64.b64encode(hashlib.sha512(b"aGVsbG8=").digest()).decode()),
    ("hdr(x-token),crc32", str(zlib.crc32(b"aGVsbG8="))),
    ("hdr(host),field(1,:)", "WWW.Example.COM"),
    ("hdr(host),field(2,.:)", "Example"),
    ("hdr(host),field(-1,:.)", "8080"),
    ("hdr(host),field(9,.)", ""),                          # no such field: empty
    ("url,field(2,'?')", "q=a%2Fb&empty="),                # quoted: a separator with meaning
    ("hdr(x-multi),lower", "b"),                           # a template takes the last value
    ("method,regsub(E,3)", "G3T"),
    ("hdr(host),regsub(([a-z]+)\\.,<\\1>.)", "WWW.E<xample>.COM:8080"),
    ("hdr(host),regsub(([a-z]+)\\.,<\\1>.,i)", "<WWW>.Example.COM:8080"),
    ("hdr(host),regsub([.:],_,g)", "WWW_Example_COM_8080"),
    ("hdr(host),regsub('[(]',x)", "WWW.Example.COM:8080"),  # quoted: a lone parenthesis
    ("hdr(x-utf8),upper", "CAF\u00c3\u00a9"),               # ASCII letters only, bytes kept
    ("hdr(x-utf8),length", "5"),                            # bytes
    ("dst_port,length", "4"),                               # an integer is read as text
    ("ssl_fc,hex", "30"),                                   # a boolean as 0/1
    ("hdr(host),lower,field(1,:),length,hex", "3135"),      # "15"
])
def test_each_converter_in_a_template(expression: str, expected: str) -> None:
    assert render(f"%[{expression}]") == expected


def test_djb2_is_haproxys() -> None:
    """hash * 33 + byte from 5381, kept to 32 bits unsigned."""
    assert render("%[hdr(x),djb2]", Req(headers=[("X", "a")])) == str(5381 * 33 + 97)
    value, expected = "x" * 100, 5381
    for byte in value.encode():
        expected = (expected * 33 + byte) & 0xFFFFFFFF
    assert render("%[hdr(x),djb2]", Req(headers=[("X", value)])) == str(expected)


def test_word_skips_empty_parts_and_field_counts_them() -> None:
    assert render("%[hdr(x-words),word(2,\\,)]") == ""    # \, is no separator: one word
    request = Req(headers=[("X", "/a//b/c/")])
    assert render("%[hdr(x),word(2,/)]", request) == "b"
    assert render("%[hdr(x),field(3,/)]", request) == ""
    assert render("%[hdr(x),word(-1,/)]", request) == "c"
    assert render("%[hdr(x),word(4,/)]", request) == ""


def test_a_missing_value_stays_missing() -> None:
    for text in ("%[hdr(none),lower]", "%[hdr(none),length]", "%[cook(none),sha1,hex]",
                 "%[url_param(none),field(1,.)]"):
        assert render(text) == "", text


def test_several_expressions_and_text_around() -> None:
    assert render("h=%[hdr(host),field(1,:),lower];p=%[path,lower]") == \
        "h=www.example.com;p=/path/to%20file.txt"


def test_a_bracket_inside_a_converter_does_not_end_the_template() -> None:
    assert render("%[hdr(host),regsub([A-Z],x,g)]!") == "xxx.xxample.xxx:8080!"


# --- ACLs --------------------------------------------------------------------------------------

def acl(pattern: str):
    return compile_acl("t", pattern, "lb.yaml:3: frontends.web.acls.t", RuleRuntime({}))


@pytest.mark.parametrize(("pattern", "expected"), [
    ("hdr(host),lower -m beg www.example.com", True),
    ("hdr(host),lower www.example.com:8080", True),
    ("hdr(host) www.example.com:8080", False),
    ("hdr(host),field(1,:),lower -m end .com", True),
    ("hdr(host),length gt 19", True),                # an integer now: int operators
    ("hdr(host),length 5", False),
    ("hdr(x-multi),lower b", True),                  # any value, each converted
    ("hdr(x-multi),lower a", True),
    ("hdr(x-multi),upper a", False),
    ("hdr(none),lower -m found", False),
    ("hdr(x-token),b64dec hello", True),
    ("src,hex 31302E312E322E33", True),
    ("path_beg,lower /path/to", True),               # a suffix form may take converters too
    ("path,url_dec -m sub 'To File'", True),
])
def test_converters_in_acls(pattern: str, expected: bool) -> None:
    assert acl(pattern)(REQ) is expected


def test_acl_on_the_normalised_path_converts_that_path() -> None:
    request = Req(url="/a/../ADMIN/x")
    assert acl("path,lower -m beg /admin")(request) is True


def test_every_converter_is_listed() -> None:
    assert set(CONVERTERS) == {
        "lower", "upper", "length", "base64", "b64dec", "url_dec", "hex", "sha1", "sha2",
        "crc32", "djb2", "field", "word", "regsub", "map", "map_beg", "map_end", "map_sub",
        "map_reg", "map_dom", "map_ip"}


# --- errors at load time -----------------------------------------------------------------------

AT = "lb.yaml:7: x"


@pytest.mark.parametrize(("text", "message"), [
    ("%[hdr(host),lowr]", "unknown converter 'lowr' (did you mean 'lower'?)"),
    ("%[hdr(host),sha3]", "unknown converter 'sha3' (did you mean 'sha2'?)"),
    ("%[hdr(host),]", "empty converter after ','"),
    ("%[hdr(host),Lower]", "invalid converter 'Lower'"),
    ("%[hdr(host),lower(1)]", "'lower' takes no argument, got 'lower(1)'"),
    ("%[hdr(host),field(1)]", "'field(1)': expected field(N,SEP)"),
    ("%[hdr(host),field(0,.)]", "'field(0,.)': N must be a non-zero integer (negative counts "
                                "from the end), got '0'"),
    ("%[hdr(host),word(x,.)]", "'word(x,.)': N must be a non-zero integer (negative counts "
                               "from the end), got 'x'"),
    ("%[hdr(host),field(1,'')]", "'field(1,'')': SEP must name at least one character"),
    ("%[hdr(host),sha2(100)]", "'sha2(100)': BITS must be one of 224, 256, 384, 512, got '100'"),
    ("%[hdr(host),regsub(a,b,x)]", "'regsub(a,b,x)': unknown flag 'x' (FLAGS may hold g: "
                                   "every match, i: ignore case)"),
    ("%[hdr(host),regsub('a(',b)]", "'regsub('a(',b)': bad regex 'a(': missing ), "
                                    "unterminated subpattern at position 1"),
    ("%[hdr(host),regsub(a,\\2)]", "'regsub(a,\\2)': bad replacement '\\2': invalid group "
                                   "reference 2 at position 1"),
    ("%[hdr(host),regsub(a)]", "'regsub(a)': expected regsub(REGEX,REPL[,FLAGS])"),
    ("%[hdr(host),map]", "'map': expected map(FILE[,DEFAULT])"),
    ("%[hdr(host),map(a,b,c)]", "'map(a,b,c)': expected map(FILE[,DEFAULT])"),
    ("%[hdr(host),regsub(a(,b)]", "unbalanced '(' in 'hdr(host),regsub(a(,b)'"),
    ("%[hdr(host),lower)]", "unbalanced ')' in 'hdr(host),lower)'"),
    ("%[hdr(host),regsub('a,b)]", "unbalanced ' in \"hdr(host),regsub('a,b)\""),
    ("%[hdr(host,1)]", "invalid fetch 'hdr(host,1)': a fetch takes one argument"),
])
def test_template_converter_errors(text: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        compile_template(text, AT, RuleRuntime({}), "request")
    assert str(caught.value) == f"{AT}: {message}"


@pytest.mark.parametrize(("pattern", "message"), [
    ("hdr(host),lowr x", "unknown converter 'lowr' (did you mean 'lower'?)"),
    ("hdr(host),length -m beg 1", "'hdr(host),length': unknown match method 'beg' for a int "
                                  "fetch (expected one of int, bool)"),
    ("hdr(host),length -i 1", "'hdr(host),length': '-i' applies to string matching only, "
                              "not 'int'"),
])
def test_acl_converter_errors(pattern: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        acl(pattern)
    assert str(caught.value) == f"lb.yaml:3: frontends.web.acls.t: {message}"


def test_a_map_file_that_cannot_be_read_is_an_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(RuleError) as caught:
        render("%[hdr(host),map(missing.map,x)]", tmp_path=tmp_path)
    assert str(caught.value) == (f"{where(tmp_path)}: 'map(missing.map,x)': cannot read "
                                 f"{tmp_path}/missing.map: No such file or directory")


# --- the registries plugins will add to ---------------------------------------------------------

def test_a_registered_fetch_and_converter_work_as_the_built_in_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for registry, name in ((FETCHES, "x_country"), (CONVERTERS, "rot13")):
        monkeypatch.setitem(registry, name, None)      # so that the test's end removes it
        monkeypatch.delitem(registry, name)
    register_fetch("x_country", FetchDef(STR, "name", lambda arg, _runtime: (
        lambda request: f"{arg}:{request.src}")))
    register_converter("rot13", ConverterDef(STR, "[SHIFT]", 0, 1, lambda args, _where, _rt: (
        lambda value: codecs.encode(value, "rot13"))))
    assert render("%[x_country(geo),rot13,upper]") == "TRB:10.1.2.3"
    assert acl("x_country(geo),rot13 -m beg trb")(REQ) is True
    with pytest.raises(RuleError, match=r"unknown converter 'rot31' \(did you mean 'rot13'\?\)"):
        render("%[path,rot31]")
    with pytest.raises(ValueError, match="converter 'rot13' is already defined"):
        register_converter("rot13", CONVERTERS["lower"])
    with pytest.raises(ValueError, match="fetch 'path' is already defined"):
        register_fetch("path", FETCHES["path"])
    with pytest.raises(ValueError, match="invalid converter name 'Rot'"):
        register_converter("Rot", CONVERTERS["lower"])
    with pytest.raises(ValueError, match="invalid fetch name 'a b'"):
        register_fetch("a b", FETCHES["path"])


def test_the_registries_are_back_as_they_were() -> None:
    assert "x_country" not in FETCHES and "rot13" not in CONVERTERS
