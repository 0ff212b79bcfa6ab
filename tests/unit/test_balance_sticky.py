"""Sticky cookie helpers: finding the stuck server, Set-Cookie, rewriting, stripping."""

from __future__ import annotations

import pytest

from lbproxy.backends.server import Server
from lbproxy.backends.persistence import CookiePersistence
from lbproxy.balance.sticky import (INSERT, PREFIX, REWRITE, forward_cookie,
                                    response_headers, rewrite_set_cookie, server_id)
from lbproxy.config.schema import COOKIE_MODES, CookieConfig
from tests.fakes import FakeRequest

POOL = [Server("app1", None), Server("app2", None, cookie="a2")]


def config(mode: str = "insert", **overrides) -> CookieConfig:
    fields = dict(name="SERVERID", mode=mode, indirect=False, nocache=False, httponly=False,
                  secure=False, max_age=0.0, domain=None)
    return CookieConfig(**(fields | overrides))


def with_cookie(value: str) -> FakeRequest:
    return FakeRequest(headers=[("Cookie", value)])


@pytest.mark.parametrize(("mode", "cookie", "stuck"), [
    ("insert", "a=1; SERVERID=a2", "app2"),
    ("rewrite", "SERVERID=app1", "app1"),
    ("prefix", "SERVERID=a2~xyz; b=2", "app2"),
    ("insert", "SERVERID=gone", None),
    ("insert", "other=a2", None),
    ("prefix", "SERVERID=a2", None),  # the server's own value, never prefixed
])
def test_stuck_server(mode, cookie, stuck):
    sent = server_id(config(mode, name="SERVERID"), with_cookie(cookie))
    found = CookiePersistence.stuck_server(sent, POOL)
    assert (found.name if found else None) == stuck


def test_server_id_without_cookie_is_none():
    assert server_id(config(), FakeRequest()) is None


def test_insert_sets_cookie_with_configured_attributes_only_when_needed():
    cfg = config(httponly=True, secure=True, max_age=3600.0, domain="example.com", nocache=True)
    assert response_headers(cfg, POOL[1], None) == [
        ("Set-Cookie", "SERVERID=a2; Path=/; Domain=example.com; Max-Age=3600; HttpOnly; Secure"),
        ("Cache-Control", "private"),
    ]
    assert response_headers(cfg, POOL[1], "a2") == []
    assert response_headers(config(), POOL[0], "a2") == [("Set-Cookie", "SERVERID=app1; Path=/")]
    assert response_headers(config("rewrite"), POOL[0], None) == []


@pytest.mark.parametrize(("mode", "set_cookie", "forwarded"), [
    ("rewrite", "SERVERID=anything; Path=/; HttpOnly", "SERVERID=a2; Path=/; HttpOnly"),
    ("prefix", "SERVERID=sess42; Path=/", "SERVERID=a2~sess42; Path=/"),
    ("prefix", "other=1; Path=/", "other=1; Path=/"),
    ("insert", "SERVERID=app9; Path=/", None),
    ("insert", "lang=en", "lang=en"),
])
def test_rewrite_set_cookie(mode, set_cookie, forwarded):
    assert rewrite_set_cookie(config(mode), set_cookie, POOL[1]) == forwarded


@pytest.mark.parametrize(("cfg", "cookie", "forwarded"), [
    (config(indirect=True), "a=1; SERVERID=a2; b=2", "a=1; b=2"),
    (config(indirect=True), "SERVERID=a2", None),
    (config(indirect=False), "a=1;SERVERID=a2", "a=1;SERVERID=a2"),
    (config("prefix"), "SERVERID=a2~sess42; b=2", "SERVERID=sess42; b=2"),
    (config("prefix"), "SERVERID=sess42", "SERVERID=sess42"),
    (config("rewrite", indirect=True), "SERVERID=a2", "SERVERID=a2"),
])
def test_forward_cookie(cfg, cookie, forwarded):
    assert forward_cookie(cfg, cookie) == forwarded


def test_modes_are_the_configs():
    assert set(COOKIE_MODES) == {INSERT, REWRITE, PREFIX}
