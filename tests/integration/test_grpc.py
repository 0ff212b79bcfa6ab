"""gRPC through the proxy with real grpcio clients and servers: HTTP/2 on both sides
(`proto: h2` backends), unary and streaming calls, status and trailers, deadlines,
cancellation both ways, and the grpc.health.v1 health check."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.harness import free_port, simple_config, wait_for

SERVICE = "test.Echo"


class Echo:
    """Methods on raw bytes (no generated code needed)."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.streams_seen = 0

    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        if request == b"fail":
            context.set_trailing_metadata((("x-why", "asked"),))
            context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        if request.startswith(b"sleep"):
            context.add_callback(self.cancelled.set)
            threading.Event().wait(float(request[5:]))
        return b"echo:" + request

    def server_stream(self, request: bytes, context: grpc.ServicerContext):
        count = int(request)
        context.add_callback(self.cancelled.set)
        for i in range(count):
            if not context.is_active():
                return
            yield b"part-%d" % i
            if count > 100:
                threading.Event().wait(0.01)

    def client_stream(self, requests, context: grpc.ServicerContext) -> bytes:
        return b"total:%d" % sum(len(r) for r in requests)

    def bidi(self, requests, context: grpc.ServicerContext):
        for request in requests:
            yield request.upper()


@pytest.fixture
def grpc_server():
    servicer = Echo()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(servicer.unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(servicer.server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(servicer.client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(servicer.bidi),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer, health_servicer
    server.stop(0)


@pytest.fixture
def channel(grpc_server, proxy):
    port, servicer, health_servicer = grpc_server
    config = simple_config([port], backend={"proto": "h2"})
    front = free_port()
    config["frontends"]["web"]["bind"] = [{"address": f"127.0.0.1:{front}", "h2c": True}]
    p = proxy(config)
    with grpc.insecure_channel(f"127.0.0.1:{front}") as channel:
        yield channel, servicer, p


def method(channel: grpc.Channel, kind: str, name: str):
    return getattr(channel, kind)(f"/{SERVICE}/{name}")


def test_unary_call(channel):
    channel, _, p = channel
    call = method(channel, "unary_unary", "Unary")
    assert call(b"hello", timeout=5) == b"echo:hello"
    assert p.engine.frontends["web"].h2_requests == 1


def test_status_and_trailers_pass_end_to_end(channel):
    channel, _, _ = channel
    call = method(channel, "unary_unary", "Unary")
    with pytest.raises(grpc.RpcError) as info:
        call(b"fail", timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "no such thing"
    assert ("x-why", "asked") in info.value.trailing_metadata()


def test_server_client_and_bidi_streaming(channel):
    channel, _, _ = channel
    parts = list(method(channel, "unary_stream", "ServerStream")(b"50", timeout=5))
    assert parts == [b"part-%d" % i for i in range(50)]
    total = method(channel, "stream_unary", "ClientStream")(iter([b"ab", b"cde"] * 20), timeout=5)
    assert total == b"total:100"
    replies = list(method(channel, "stream_stream", "Bidi")(iter([b"x", b"yz"] * 10), timeout=5))
    assert replies == [b"X", b"YZ"] * 10


def test_many_concurrent_calls_share_the_connections(channel):
    channel, _, p = channel
    call = method(channel, "unary_unary", "Unary")
    with futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda i: call(b"%d" % i, timeout=10), range(200)))
    assert results == [b"echo:%d" % i for i in range(200)]
    pool_ = p.engine.backends["app"].servers[0].pool
    assert 1 <= len(pool_.connections) <= 2


def test_deadline_is_enforced(channel):
    channel, servicer, _ = channel
    call = method(channel, "unary_unary", "Unary")
    with pytest.raises(grpc.RpcError) as info:
        call(b"sleep2", timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert servicer.cancelled.wait(3)            # the server heard of it


def test_cancellation_reaches_the_server(channel):
    channel, servicer, p = channel
    stream = method(channel, "unary_stream", "ServerStream")(b"100000", timeout=30)
    assert next(stream) == b"part-0"
    stream.cancel()
    assert servicer.cancelled.wait(3)
    wait_for(lambda: p.call(lambda: p.engine.backends["app"].in_flight) == 0)


def test_grpc_health_check(grpc_server, proxy):
    port, _, health_servicer = grpc_server
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    config = simple_config([port], backend={
        "proto": "h2",
        "health_check": {"type": "grpc", "interval": "100ms", "timeout": "1s",
                         "rise": 1, "fall": 1}})
    p = proxy(config)
    server = p.engine.backends["app"].servers[0]
    wait_for(lambda: p.call(lambda: server.check) == "up")
    health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    wait_for(lambda: p.call(lambda: server.up) is False)
    assert "NOT_SERVING" in p.call(lambda: server.reason)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    wait_for(lambda: p.call(lambda: server.up) is True)
