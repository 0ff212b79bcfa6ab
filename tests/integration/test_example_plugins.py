"""The example plugins of examples/plugins/ in a real proxy: the CSV GeoIP fetch and the
JWT-checking action (with PyJWT)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.harness import get, simple_config

pytestmark = pytest.mark.usefixtures("isolated_plugins")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plugins"


def echoed(response) -> dict[str, str]:
    return {name.lower(): value for name, value in json.loads(response.body)["headers"]}


def test_geo_country_reads_the_range_table_and_routes_by_country(backends, proxy, tmp_path,
                                                                monkeypatch):
    table = tmp_path / "ranges.csv"
    table.write_text("# first,last,country\n10.0.0.0,10.0.255.255,NL\n"
                     "10.1.0.0,10.1.0.127,FR\n2001:db8::,2001:db8::ffff,DE\n")
    monkeypatch.setenv("GEOIP_CSV", str(table))
    (app,) = backends(1)
    config = simple_config([app.port], forwarded={"trusted_proxies": ["127.0.0.1"]},
                           http_request=[
                               {"deny": {"status": 451}, "if": "{ geo_country FR }"},
                               {"set_header": {"name": "X-Country", "value": "%[geo_country]"}}])
    config["global"]["plugins"] = [str(EXAMPLES / "geoip_csv.py")]
    p = proxy(config)

    def country(address: str) -> str | int:
        response = get(p.port, "/echo", {"X-Forwarded-For": address})
        return echoed(response)["x-country"] if response.status == 200 else response.status

    assert country("10.0.3.4") == "NL"
    assert country("10.1.0.5") == 451
    assert country("10.1.0.200") == ""           # in no range: the fetch has no value
    assert country("2001:db8::42") == "DE"


jwt = pytest.importorskip("jwt")
SECRET = "a shared secret of thirty-two bytes!"


def token(**claims) -> str:
    return jwt.encode({"exp": int(time.time()) + 60, **claims}, SECRET, algorithm="HS256")


@pytest.fixture
def jwt_proxy(backends, proxy, monkeypatch):
    monkeypatch.setenv("TEST_JWT_SECRET", SECRET)
    (app,) = backends(1)
    config = simple_config([app.port], http_request=[{
        "jwt_required": {"secret_env": "TEST_JWT_SECRET", "algorithms": ["HS256"],
                         "audience": "api", "claim_headers": {"sub": "X-User"}},
        "unless": "{ path_beg /public/ }"}])
    config["global"]["plugins"] = [str(EXAMPLES / "jwt_check.py")]
    return app, proxy(config)


def test_a_valid_token_passes_with_its_claims_in_headers(jwt_proxy):
    _, p = jwt_proxy
    response = get(p.port, "/echo", {"Authorization": f"Bearer {token(sub='alice', aud='api')}",
                                     "X-User": "mallory"})
    assert response.status == 200
    assert echoed(response)["x-user"] == "alice"


@pytest.mark.parametrize("authorization, why", [
    (None, "invalid_request"),
    ("Bearer not.a.token", "invalid_token"),
    ("Bearer {wrong_audience}", "invalid_token"),
    ("Bearer {expired}", "invalid_token"),
    ("Bearer {forged}", "invalid_token"),
])
def test_a_missing_or_bad_token_is_refused_before_the_server(jwt_proxy, authorization, why):
    app, p = jwt_proxy
    tokens = {"wrong_audience": token(sub="a", aud="other"),
              "expired": jwt.encode({"exp": int(time.time()) - 10, "aud": "api"}, SECRET,
                                    algorithm="HS256"),
              "forged": jwt.encode({"exp": int(time.time()) + 60, "aud": "api"},
                                   "another secret of thirty-two bytes", algorithm="HS256")}
    headers = {"Authorization": authorization.format(**tokens)} if authorization else {}
    before = app.stats.requests
    response = get(p.port, "/echo", headers)
    assert response.status == 401
    assert f'error="{why}"' in response.header("www-authenticate")
    assert app.stats.requests == before
    assert get(p.port, "/public/x").status == 200


def test_check_refuses_bad_jwt_arguments(tmp_path):
    from tests.integration.test_plugins import run_check
    config = simple_config([1], http_request=[{"jwt_required": {"algorithms": ["HS999"]}}])
    config["global"]["plugins"] = [str(EXAMPLES / "jwt_check.py")]
    result = run_check(config)
    assert result.returncode != 0
    assert "jwt_required: needs exactly one of secret, secret_env, public_key_file" in result.stderr
