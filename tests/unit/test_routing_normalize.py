"""Path normalisation: every spelling of /admin a server would resolve must look like /admin."""

from __future__ import annotations

import pytest

from lbproxy.routing.normalize import normalize_path, request_norm_path
from tests.unit.test_routing_support import Req, acl

BYPASSES = ["/admin", "/a/../admin", "/%61dmin", "//admin", "/admin;x", "/./admin",
            "/%2e%2e/admin", "/%2E%2E/admin", "/..;/admin", "/../../admin", "/x/%2e%2e/admin",
            "/%2fadmin", "/admin;jsessionid=1/users", "http://evil/admin", "/.//./admin"]


@pytest.mark.parametrize("raw", BYPASSES)
def test_path_beg_admin_matches_every_bypass_form(raw: str) -> None:
    assert acl("path_beg /admin")(Req(url=raw + "?q=1"))


@pytest.mark.parametrize("raw", ["/administrator", "/x/admin", "/%252e%252e/admin", "/adm%69"])
def test_path_beg_admin_rejects_other_paths(raw: str) -> None:
    assert not acl("path_beg /admin/")(Req(url=raw))


@pytest.mark.parametrize(("raw", "expected"), [
    ("/", "/"),
    ("", "/"),
    ("*", "*"),
    ("/a/b/", "/a/b/"),
    ("/a/b/.", "/a/b/"),
    ("/a/b/..", "/a/"),
    ("/a/..", "/"),
    ("/..", "/"),
    ("/a//b///c", "/a/b/c"),
    ("/a%20b", "/a b"),
    ("/%252e", "/%2e"),             # decoded once only
    ("/bad%zz", "/bad%zz"),         # invalid escapes stay literal
    ("/caf%C3%A9", "/caf\u00c3\u00a9"),   # bytes become latin-1 characters
    ("/a\\..\\b", "/a\\..\\b"),     # backslashes are not separators
    ("http://h", "/"),
    ("https://h:8443/x/../y", "/y"),
])
def test_normalize_path(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


def test_canonical_path_is_returned_as_is() -> None:
    raw = "/api/v1/users"
    assert normalize_path(raw) is raw


class SlotRequest:
    """Like the data plane's request: a `norm_path` slot that starts as None."""

    __slots__ = ("path", "norm_path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.norm_path: str | None = None


def test_norm_path_is_cached_in_the_slot_and_path_untouched() -> None:
    request = SlotRequest("/a/../admin")
    assert request_norm_path(request) == "/admin"
    assert request.norm_path == "/admin"
    assert request.path == "/a/../admin"
    request.path = "/other"                 # a stale cache wins until the owner resets it
    assert request_norm_path(request) == "/admin"


def test_fake_request_is_not_written_to() -> None:
    request = Req(url="/a/../admin")
    assert request_norm_path(request) == "/admin"
    assert "norm_path" not in vars(request)


def test_utf8_pattern_matches_percent_encoded_utf8_path() -> None:
    assert acl("path_beg /caf\u00e9")(Req(url="/caf%C3%A9/menu"))
