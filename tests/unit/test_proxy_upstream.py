"""The HTTP/1.1 upstream protocol and its pool, with raw server bytes on fake transports:
response parsing and relay, when a connection goes back to the pool, and failures."""

from __future__ import annotations

from lbproxy.proxy.upstream import POOL_IDLE_TIMEOUT
from lbproxy.slicing import at_once
from tests.unit.dataplane import OK, DataPlane, config, get


def one_exchange(plane: DataPlane, request: bytes = get()):
    client = plane.connect()
    client.send(request)
    upstream, server = plane.pool("app1").open()
    server.take()
    return client, upstream, server


def test_a_response_split_anywhere_arrives_whole():
    plane = DataPlane(config())
    client, upstream, _ = one_exchange(plane)
    response = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 10\r\n\r\n0123456789"
    for i in range(len(response)):
        upstream.data_received(response[i:i + 1])
    assert client.received() == response
    assert upstream in plane.pool("app1").idle


def test_hop_by_hop_response_headers_are_removed():
    plane = DataPlane(config())
    client, upstream, _ = one_exchange(plane)
    upstream.data_received(b"HTTP/1.1 200 OK\r\nConnection: x-secret, keep-alive\r\n"
                           b"X-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: 2\r\n"
                           b"Content-Length: 0\r\n\r\n")
    head = client.received().lower()
    assert b"x-secret" not in head and b"keep-alive" not in head and b"x-kept: 2" in head


def test_connections_that_cannot_be_trusted_again_are_closed():
    for response, request in (
            (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", get()),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", get(extra=b"X: y\r\n")
             .replace(b"GET", b"HEAD"))):
        plane = DataPlane(config())
        client, upstream, server = one_exchange(plane, request)
        upstream.data_received(response)
        assert server.closed and upstream not in plane.pool("app1").idle
        assert client.received().startswith(b"HTTP/1.1 200 OK")


def test_idle_pooled_connections_expire():
    plane = DataPlane(config())
    client, upstream, server = one_exchange(plane)
    upstream.data_received(OK)
    plane.advance(POOL_IDLE_TIMEOUT - 0.5)
    assert not server.closed
    plane.advance(1.0)
    assert server.closed and upstream not in plane.pool("app1").idle


def test_a_server_speaking_out_of_turn_is_dropped():
    plane = DataPlane(config())
    client, upstream, server = one_exchange(plane)
    upstream.data_received(OK)
    upstream.data_received(b"HTTP/1.1 200 OK\r\n\r\n")      # nobody asked
    plane.settle()
    assert server.closed and upstream not in plane.pool("app1").idle


def test_invalid_response_is_502_and_a_cut_response_aborts_the_client():
    plane = DataPlane(config(backend={"retries": 0}))
    client, upstream, _ = one_exchange(plane)
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
    assert client.received().startswith(b"HTTP/1.1 502 ")

    client, upstream, server = one_exchange(DataPlane(config()))
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
    server.close()
    upstream.connection_lost(None)
    assert client.transport.aborted                 # half a response cannot be finished


def test_informational_responses_other_than_100_are_not_relayed():
    plane = DataPlane(config())
    client, upstream, _ = one_exchange(plane)
    upstream.data_received(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + OK)
    assert client.received() == OK


def test_a_reload_that_changes_how_servers_are_connected_rebuilds_their_pools():
    import dataclasses

    plane = DataPlane(config())
    backend = plane.engine.backends["app"]
    pool = plane.pool("app1")
    at_once(backend.reconfigure(dataclasses.replace(backend.config, retries=1)))
    assert plane.pool("app1") is pool                  # nothing about connections changed
    for change in ({"max_response_header_size": 16384}, {"http_reuse": "never"},
                   {"proto": "h2"}):
        at_once(backend.reconfigure(dataclasses.replace(backend.config, **change)))
        assert plane.pool("app1") is not pool, change
        pool = plane.pool("app1")
