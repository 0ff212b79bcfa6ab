"""RFC 9111 rules (lbproxy/http/caching.py) and Accept-Encoding negotiation
(lbproxy/http/encoding.py), as pure functions."""

from __future__ import annotations

import pytest

from lbproxy.http.caching import (directives, etag_matches, format_http_date, freshness_lifetime,
                                  http_date, initial_age, not_modified, storable)
from lbproxy.http.encoding import accepted_codings, negotiate

NOW = 1_800_000_000.0


def head(*pairs: tuple[str, str]) -> list[bytes]:
    parts: list[bytes] = []
    for name, value in pairs:
        parts += (name.encode(), b": ", value.encode(), b"\r\n")
    return parts


def test_directives_are_case_insensitive_and_unquoted():
    parts = head(("Cache-Control", 'Max-Age=60, no-cache="set-cookie"'),
                 ("cache-control", "public"))
    assert directives(parts) == {"max-age": "60", "no-cache": "set-cookie", "public": None}


@pytest.mark.parametrize(("pairs", "status", "default", "expected"), [
    ((("Cache-Control", "max-age=10, s-maxage=30"),), 200, 0, 30),
    ((("Cache-Control", "max-age=10"),), 200, 0, 10),
    ((("Date", format_http_date(NOW).decode()),
      ("Expires", format_http_date(NOW + 50).decode())), 200, 0, 50),
    ((("Expires", "0"),), 200, 99, 0),                   # invalid Expires: already expired
    ((), 200, 7, 7),
    ((), 302, 7, 0),                                     # not heuristically cacheable
    ((("Cache-Control", "no-cache, max-age=60"),), 200, 0, 0),
])
def test_freshness_lifetime(pairs, status, default, expected):
    parts = head(*pairs)
    assert freshness_lifetime(status, parts, directives(parts), default) == expected


@pytest.mark.parametrize(("method", "request_pairs", "status", "response_pairs", "expected"), [
    (b"GET", (), 200, (), True),
    (b"HEAD", (), 200, (), False),
    (b"GET", (), 206, (), False),
    (b"GET", (), 304, (), False),
    (b"GET", (("Cache-Control", "no-store"),), 200, (), False),
    (b"GET", (), 200, (("Cache-Control", "no-store"),), False),
    (b"GET", (), 200, (("Cache-Control", "private"),), False),
    (b"GET", (), 200, (("Set-Cookie", "a=1"),), False),
    (b"GET", (), 200, (("Vary", "Accept, *"),), False),
    (b"GET", (("Authorization", "x"),), 200, (), False),
    (b"GET", (("Authorization", "x"),), 200, (("Cache-Control", "public"),), True),
    (b"GET", (("Authorization", "x"),), 200, (("Cache-Control", "s-maxage=5"),), True),
])
def test_storable(method, request_pairs, status, response_pairs, expected):
    response = head(*response_pairs)
    assert storable(method, head(*request_pairs), status, response,
                    directives(response)) is expected


def test_age_is_the_larger_of_the_header_and_the_date_lag():
    assert initial_age(head(("Age", "30")), NOW) == 30
    assert initial_age(head(("Date", format_http_date(NOW - 100).decode()), ("Age", "5")),
                       NOW) == pytest.approx(100)
    assert http_date(b"nonsense") is None


def test_conditionals():
    assert etag_matches(b'"a", W/"b"', b'"b"') and etag_matches(b"*", None)
    assert not etag_matches(b'"a"', b'"b"') and not etag_matches(b'"a"', None)
    lm = format_http_date(NOW)
    assert not_modified(head(("If-Modified-Since", lm.decode())), None, lm)
    assert not not_modified(head(("If-Modified-Since", format_http_date(NOW - 1).decode())),
                            None, lm)
    # If-None-Match wins over If-Modified-Since
    assert not not_modified(head(("If-None-Match", '"x"'), ("If-Modified-Since", lm.decode())),
                            b'"y"', lm)


@pytest.mark.parametrize(("header", "offered", "expected"), [
    ("gzip, br", ("zstd", "br", "gzip"), "br"),
    ("gzip;q=1, br;q=0.5", ("br", "gzip"), "gzip"),
    ("*", ("zstd", "gzip"), "zstd"),
    ("*;q=0.5, gzip;q=0", ("gzip", "br"), "br"),
    ("identity", ("gzip",), None),
    ("gzip;q=nonsense", ("gzip",), None),
    ("gzip;q=2", ("gzip",), None),
    ("x-gzip", ("gzip",), "gzip"),
    ("", ("gzip",), None),
    (None, ("gzip",), None),
])
def test_negotiation(header, offered, expected):
    assert negotiate(header, offered) == expected


def test_accepted_codings_keep_the_highest_q_of_a_repeated_coding():
    assert accepted_codings("gzip;q=0.2, GZIP;q=0.7, br") == {"gzip": 0.7, "br": 1.0}
