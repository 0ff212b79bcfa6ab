"""The response cache through a real proxy, against a scriptable origin (tests/origin.py):
what is stored and what is not, 304 paths, revalidation, stale on error, the lock,
eviction, invalidation, variants, the runtime API and metrics, HTTP/2 clients."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import threading
import time

import httpx
import pytest

from tests.harness import free_port, simple_config
from tests.origin import Origin, body_of

MAX_AGE = "h=Cache-Control:max-age=60"


@pytest.fixture
def origin():
    with Origin() as server:
        yield server


def cached_proxy(proxy, origin, cache=None, **backend):
    config = simple_config([origin.port], backend={"cache": "web", "retries": 0, **backend})
    config["caches"] = {"web": {"size": "10m", **(cache or {})}}
    stats = free_port()
    config["stats"] = {"bind": f"127.0.0.1:{stats}", "admin": True,
                       "auth": {"username": "a", "password": "b"}}
    p = proxy(config)
    p.stats_port = stats
    return p


def fetch(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None,
          body: bytes | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path.replace(" ", "%20"), body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def x_cache(port: int, path: str, **kwargs) -> str:
    return fetch(port, path, **kwargs)[0].getheader("X-Cache")


def test_a_fresh_response_is_served_from_the_cache(proxy, origin):
    p = cached_proxy(proxy, origin)
    path = f"/page?size=3000&{MAX_AGE}"
    first, body = fetch(p.port, path)
    assert first.getheader("X-Cache") == "MISS" and body == body_of(3000)
    second, again = fetch(p.port, path)
    assert second.getheader("X-Cache") == "HIT" and again == body
    assert second.getheader("Age") is not None and int(second.getheader("Age")) <= 1
    assert second.getheader("Content-Length") == "3000"
    assert origin.count("/page") == 1
    head, _ = fetch(p.port, path, method="HEAD")            # HEAD from the GET entry
    assert head.getheader("X-Cache") == "HIT" and head.getheader("Content-Length") == "3000"
    assert origin.count("/page") == 1


@pytest.mark.parametrize("query", [
    "h=Cache-Control:no-store",
    "h=Cache-Control:private,max-age=60",
    f"{MAX_AGE}&h=Set-Cookie:a=1",
    f"{MAX_AGE}&h=Vary:*",
    "size=10",                                                   # no freshness, no validator
    f"{MAX_AGE}&status=206",
    "h=Expires:Thu, 01 Jan 1970 00:00:00 GMT",
], ids=["no-store", "private", "set-cookie", "vary-star", "no-freshness", "206", "expired"])
def test_responses_that_are_not_stored(proxy, origin, query):
    p = cached_proxy(proxy, origin)
    assert [x_cache(p.port, f"/n?{query}") for _ in range(2)] == ["MISS", "MISS"]
    assert origin.count("/n") == 2


def test_freshness_from_s_maxage_expires_and_default_ttl(proxy, origin):
    from email.utils import formatdate

    p = cached_proxy(proxy, origin, cache={"default_ttl": "30s"})
    now = time.time()
    dated = f"h=Date:{formatdate(now, usegmt=True)}&h=Expires:{formatdate(now + 60, usegmt=True)}"
    for query in ("h=Cache-Control:s-maxage=60,max-age=0", dated,
                  "size=5"):                                   # default_ttl, status 200
        path = f"/f?{query}"
        assert [x_cache(p.port, path) for _ in range(2)] == ["MISS", "HIT"], query


def test_requests_with_authorization_are_stored_only_when_shared(proxy, origin):
    p = cached_proxy(proxy, origin)
    auth = {"Authorization": "Bearer x"}
    assert [x_cache(p.port, f"/a?{MAX_AGE}", headers=auth) for _ in range(2)] == [
        "MISS", "MISS"]
    shared = "h=Cache-Control:public,max-age=60"
    assert [x_cache(p.port, f"/b?{shared}", headers=auth) for _ in range(2)] == ["MISS", "HIT"]


def test_conditional_requests_get_304_from_the_cache(proxy, origin):
    p = cached_proxy(proxy, origin)
    lm = "Mon, 30 Nov 2026 10:00:00 GMT"
    path = f'/c?size=100&{MAX_AGE}&etag="v1"&lm={lm}'
    fetch(p.port, path)
    response, body = fetch(p.port, path, headers={"If-None-Match": '"v0", W/"v1"'})
    assert (response.status, response.getheader("X-Cache"), body) == (304, "HIT", b"")
    assert response.getheader("ETag") == '"v1"'
    assert fetch(p.port, path, headers={"If-Modified-Since": lm})[0].status == 304
    assert fetch(p.port, path, headers={"If-None-Match": '"other"'})[0].status == 200
    assert origin.count("/c") == 1


def test_a_stale_entry_is_revalidated_with_its_validators(proxy, origin):
    p = cached_proxy(proxy, origin)
    path = '/r?size=100&h=Cache-Control:max-age=0&etag="v1"'
    assert x_cache(p.port, path) == "MISS"
    response, body = fetch(p.port, path)
    assert response.getheader("X-Cache") == "REVALIDATED" and body == body_of(100)
    assert origin.requests[-1].headers.get("If-None-Match") == '"v1"'   # the server was asked
    assert origin.count("/r") == 2


def test_a_304_makes_the_entry_fresh_again(proxy, origin):
    p = cached_proxy(proxy, origin)
    path = '/t?size=10&h=Cache-Control:max-age=0&etag="v1"'
    fetch(p.port, path)
    origin.headers = {"Cache-Control": "max-age=60"}        # the 304 extends freshness
    assert x_cache(p.port, path) == "REVALIDATED"
    assert x_cache(p.port, path) == "HIT"
    assert origin.count("/t") == 2


def test_client_no_cache_forces_revalidation_and_only_if_cached(proxy, origin):
    p = cached_proxy(proxy, origin)
    path = f'/v?size=10&{MAX_AGE}&etag="e"'
    fetch(p.port, path)
    assert x_cache(p.port, path, headers={"Cache-Control": "no-cache"}) == "REVALIDATED"
    assert x_cache(p.port, path, headers={"Pragma": "no-cache"}) == "REVALIDATED"
    assert origin.count("/v") == 3
    response, _ = fetch(p.port, "/absent", headers={"Cache-Control": "only-if-cached"})
    assert response.status == 504 and origin.count("/absent") == 0


def test_stale_if_error_serves_the_entry_while_servers_fail(proxy, origin):
    p = cached_proxy(proxy, origin, cache={"stale_if_error": "60s"})
    path = '/s?size=200&h=Cache-Control:max-age=0&etag="s"'
    fetch(p.port, path)
    origin.failing = True                                  # the server answers 503
    response, body = fetch(p.port, path)
    assert (response.status, response.getheader("X-Cache")) == (200, "STALE")
    assert body == body_of(200)
    must = '/m?size=200&h=Cache-Control:max-age=0,must-revalidate&etag="m"'
    origin.failing = False
    fetch(p.port, must)
    origin.failing = True
    assert fetch(p.port, must)[0].status == 503            # must-revalidate: never stale


def test_stale_if_error_covers_a_server_that_is_gone(proxy):
    with Origin() as origin:
        p = cached_proxy(proxy, origin, cache={"stale_if_error": "60s"})
        path = '/g?size=50&h=Cache-Control:max-age=0&etag="g"'
        fetch(p.port, path)
    response, body = fetch(p.port, path)                    # connect refused: 503 replaced
    assert (response.status, response.getheader("X-Cache"), body) == (200, "STALE",
                                                                      body_of(50))


def test_the_lock_sends_concurrent_misses_to_the_server_once(proxy, origin):
    p = cached_proxy(proxy, origin)
    path = f"/l?size=500&delay=0.5&{MAX_AGE}"
    results = []
    threads = [threading.Thread(target=lambda: results.append(fetch(p.port, path)))
               for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert [r.status for r, _ in results] == [200] * 20
    assert all(body == body_of(500) for _, body in results)
    assert origin.count("/l") == 1
    words = sorted(r.getheader("X-Cache") for r, _ in results)
    assert words == ["HIT"] * 19 + ["MISS"]


def test_unsafe_requests_invalidate_the_url(proxy, origin):
    p = cached_proxy(proxy, origin)
    path = f"/u?{MAX_AGE}"
    fetch(p.port, path)
    assert x_cache(p.port, path) == "HIT"
    response, _ = fetch(p.port, path, method="POST", body=b"x")
    assert response.getheader("X-Cache") == "BYPASS"
    assert x_cache(p.port, path) == "MISS"


def test_variants_by_vary_and_by_negotiated_coding(proxy, origin):
    p = cached_proxy(proxy, origin, compression={"algorithms": ["gzip"], "types": ["text/*"],
                                                 "min_size": 0})
    path = f"/z?size=2000&{MAX_AGE}&h=Vary:X-Lang"
    en, fr = {"X-Lang": "en"}, {"X-Lang": "fr"}
    assert [x_cache(p.port, path, headers=h) for h in (en, fr, en, fr)] == [
        "MISS", "MISS", "HIT", "HIT"]
    gz = {"X-Lang": "en", "Accept-Encoding": "gzip, br"}
    other = {"X-Lang": "en", "Accept-Encoding": "gzip;q=0.5, deflate"}    # also gzip
    response, body = fetch(p.port, path, headers=gz)
    assert response.getheader("X-Cache") == "MISS"
    assert response.getheader("Content-Encoding") == "gzip"
    assert gzip.decompress(body) == body_of(2000)
    hit, stored = fetch(p.port, path, headers=other)
    assert hit.getheader("X-Cache") == "HIT" and gzip.decompress(stored) == body_of(2000)
    assert hit.getheader("Vary") == "X-Lang, Accept-Encoding"
    assert x_cache(p.port, path, headers=en) == "HIT"                 # identity apart
    assert origin.count("/z") == 3


def test_large_responses_pass_unstored_and_eviction_is_least_recent_first(proxy, origin):
    p = cached_proxy(proxy, origin, cache={"size": "16k", "max_object_size": "8k"})
    big = f"/big?size=9000&{MAX_AGE}&chunks=3"
    assert [x_cache(p.port, big) for _ in range(2)] == ["MISS", "MISS"]
    for name in ("a", "b"):
        fetch(p.port, f"/{name}?size=6000&{MAX_AGE}")
    fetch(p.port, f"/a?size=6000&{MAX_AGE}")                          # a is used again
    fetch(p.port, f"/c?size=6000&{MAX_AGE}")                          # evicts b, not a
    assert x_cache(p.port, f"/a?size=6000&{MAX_AGE}") == "HIT"
    assert x_cache(p.port, f"/b?size=6000&{MAX_AGE}") == "MISS"


def test_runtime_api_purges_and_metrics_count(proxy, origin):
    p = cached_proxy(proxy, origin)
    auth = httpx.BasicAuth("a", "b")
    base = f"http://127.0.0.1:{p.stats_port}"
    for path in (f"/p1?{MAX_AGE}", f"/p1?{MAX_AGE}", f"/p2?{MAX_AGE}"):
        fetch(p.port, path)
    stats = httpx.get(f"{base}/api/caches/web", auth=auth).json()
    assert (stats["entries"], stats["hits"], stats["misses"]) == (2, 1, 2)
    assert stats["bytes"] > 0
    purged = httpx.delete(f"{base}/api/caches/web",
                          params={"host": "127.0.0.1", "path": f"/p1?{MAX_AGE}"}, auth=auth)
    assert purged.json() == {"purged": 1}
    assert x_cache(p.port, f"/p1?{MAX_AGE}") == "MISS"
    assert x_cache(p.port, f"/p2?{MAX_AGE}") == "HIT"
    assert httpx.delete(f"{base}/api/caches/web", auth=auth).json()["purged"] == 2
    assert httpx.get(f"{base}/api/caches/none", auth=auth).status_code == 404
    assert httpx.delete(f"{base}/api/caches/web", params={"host": "x"},
                        auth=auth).status_code == 400
    metrics = httpx.get(f"{base}/metrics").text
    assert 'lbproxy_cache_hits_total{cache="web"} 2.0' in metrics
    page = httpx.get(f"{base}/stats", auth=auth).text
    assert "caches" in page and "hit ratio" in page


def test_cache_status_fetch_and_http2_clients(proxy, origin):
    config = simple_config([origin.port], backend={"cache": "web"},
                           http_response=[{"set_header": {"name": "X-Seen",
                                                          "value": "%[cache_status]"}}])
    config["caches"] = {"web": {}}
    h2c = free_port()
    config["frontends"]["web"]["bind"].append({"address": f"127.0.0.1:{h2c}", "h2c": True})
    p = proxy(config)
    path = f"/h?size=100&{MAX_AGE}"
    assert fetch(p.port, path)[0].getheader("X-Seen") == "MISS"
    with httpx.Client(http1=False, http2=True) as client:
        response = client.get(f"http://127.0.0.1:{h2c}{path}")
    assert response.http_version == "HTTP/2"
    assert response.headers["x-cache"] == "HIT" and response.headers["x-seen"] == "HIT"
    assert response.content == body_of(100)
    assert origin.count("/h") == 1


def test_a_reload_keeps_the_entries(proxy, origin):
    config = simple_config([origin.port], backend={"cache": "web"})
    config["caches"] = {"web": {"size": "10m"}}
    p = proxy(config)
    fetch(p.port, f"/k?{MAX_AGE}")
    config["caches"]["web"]["default_ttl"] = "5s"
    p.rewrite(config)
    assert asyncio.run_coroutine_threadsafe(p.engine.reload(), p.loop).result(5) == []
    assert x_cache(p.port, f"/k?{MAX_AGE}") == "HIT"
    del config["caches"]
    del config["backends"]["app"]["cache"]
    p.rewrite(config)
    assert asyncio.run_coroutine_threadsafe(p.engine.reload(), p.loop).result(5) == []
    assert x_cache(p.port, f"/k?{MAX_AGE}") is None          # no cache any more
