"""DNS service discovery against a real DNS server on 127.0.0.1 (tests/dns_server.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from tests.dns_server import DNSServer
from tests.harness import ProxyThread, free_port, get, simple_config, wait_for


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    with DNSServer() as server:
        yield server


def template_config(dns: DNSServer, fqdn: str, **backend: object) -> dict:
    """A proxy whose only servers come from `fqdn`, resolved every 100 ms."""
    template = {"prefix": "web", "count": 3, "fqdn": fqdn, "resolve_interval": "100ms",
                "nameservers": [dns.address], **backend.pop("template", {})}
    return simple_config([], backend={"server_template": template, **backend})


def servers(p: ProxyThread) -> dict[str, tuple[str, int, str]]:
    """name -> (address, weight, state) of the servers not being removed."""
    return p.call(lambda: {s.name: (str(s.address), s.weight, s.state)
                           for s in p.engine.backends["app"].servers if s.state != "DRAIN"})


def addresses(p: ProxyThread) -> dict[str, str]:
    return {name: address for name, (address, _, _) in servers(p).items()}


def served_by(p: ProxyThread, count: int) -> Counter:
    return Counter(get(p.port).header("X-Server") for _ in range(count))


def test_a_records_become_servers_and_follow_the_answer(backends, proxy, dns):
    port = free_port()
    for i in (1, 2, 3):
        backends(1, host=f"127.0.0.{i}", port=port)
    dns.records[("app.test", "A")] = ["127.0.0.1", "127.0.0.2"]
    p = proxy(template_config(dns, "app.test", template={"port": port}))
    wait_for(lambda: addresses(p) == {"web1": f"127.0.0.1:{port}", "web2": f"127.0.0.2:{port}"})
    assert set(served_by(p, 4)) == {"app1", "app2"}

    dns.records[("app.test", "A")] = ["127.0.0.3", "127.0.0.2"]
    wait_for(lambda: addresses(p) == {"web2": f"127.0.0.2:{port}", "web3": f"127.0.0.3:{port}"})
    wait_for(lambda: p.call(lambda: p.engine.backends["app"].server("web1")) is None)
    assert set(served_by(p, 4)) == {"app2", "app3"}

    dns.records[("app.test", "A")] = ["127.0.0.3", "127.0.0.2", "127.0.0.1"]   # slot reused
    wait_for(lambda: addresses(p).get("web1") == f"127.0.0.1:{port}")
    assert set(served_by(p, 6)) == {"app1", "app2", "app3"}


def test_resolver_failure_keeps_the_last_good_answer(backends, proxy, dns):
    (app,) = backends(1)
    dns.records[("app.test", "A")] = ["127.0.0.1"]
    p = proxy(template_config(dns, "app.test", template={"port": app.port}))
    wait_for(lambda: addresses(p) == {"web1": f"127.0.0.1:{app.port}"})
    for mode in ("servfail", "silent"):
        dns.mode = mode
        queries = dns.queries
        wait_for(lambda: dns.queries >= queries + 4)
        assert addresses(p) == {"web1": f"127.0.0.1:{app.port}"}
        assert get(p.port).status == 200
    dns.mode = "answer"
    del dns.records[("app.test", "A")]                 # NXDOMAIN is an answer: no servers
    wait_for(lambda: servers(p) == {})
    assert get(p.port).status == 503


@pytest.mark.parametrize("glue", [True, False], ids=["glue", "lookup"])
def test_srv_records_give_ports_and_weights(backends, proxy, dns, glue):
    app1, app2 = backends(2)
    dns.glue = glue
    dns.records[("_http._tcp.app.test", "SRV")] = [(0, 1, app1.port, "a.test."),
                                                   (10, 3, app2.port, "b.test")]
    dns.records[("a.test", "A")] = ["127.0.0.1"]
    dns.records[("b.test", "A")] = ["127.0.0.1"]
    p = proxy(template_config(dns, "_http._tcp.app.test"))
    wait_for(lambda: sorted(servers(p).values()) == sorted(
        [(f"127.0.0.1:{app1.port}", 1, "UP"), (f"127.0.0.1:{app2.port}", 3, "UP")]))
    counts = served_by(p, 40)
    assert 25 <= counts["app2"] <= 35 and counts["app1"] + counts["app2"] == 40

    dns.records[("_http._tcp.app.test", "SRV")] = [(0, 0, app1.port, "a.test"),
                                                   (0, 5000, app2.port, "b.test")]
    wait_for(lambda: sorted(servers(p).values()) == sorted(
        [(f"127.0.0.1:{app1.port}", 1, "UP"), (f"127.0.0.1:{app2.port}", 256, "UP")]))


def test_discovered_servers_are_checked_before_they_get_traffic(backends, proxy, dns):
    app1, app2 = backends(2)
    app2.healthy = False
    dns.records[("_http._tcp.app.test", "SRV")] = [(0, 1, app1.port, "a.test"),
                                                   (0, 1, app2.port, "a.test")]
    dns.records[("a.test", "A")] = ["127.0.0.1"]
    p = proxy(template_config(dns, "_http._tcp.app.test", health_check={
        "interval": "100ms", "timeout": "300ms", "rise": 3, "fall": 2}))
    wait_for(lambda: len(servers(p)) == 2)
    assert {state for _, _, state in servers(p).values()} == {"CHECKING"}
    wait_for(lambda: sorted(state for _, _, state in servers(p).values()) == ["DOWN", "UP"])
    assert set(served_by(p, 4)) == {"app1"}
    assert all(head.url == "/health" for head in app2.stats.heads)
