"""The request path against a second Downstream: a recording one, as an HTTP/2 stream
will be. Routing, rules, dispatch, the response relay and the proxy's own answers must
work without the HTTP/1.1 client protocol."""

from __future__ import annotations

from dataclasses import dataclass, field

from lbproxy.proxy.exchange import Exchange
from tests.unit.dataplane import DataPlane, config


@dataclass
class RecordingDownstream:
    """Implements lbproxy.proxy.downstream.Downstream by recording what it is told."""

    frontend: object
    state: object
    time: object
    src: str = "192.0.2.7"
    src_b: bytes = b"192.0.2.7"
    src_port: int = 5000
    dst_port: int = 443
    ssl_fc: bool = True
    ssl_fc_sni: str | None = "h"
    closed: bool = False
    write_paused: bool = False
    events: list = field(default_factory=list)

    def pause_reading(self, reason: int) -> None:
        self.events.append(("pause", reason))

    def resume_reading(self, reason: int) -> None:
        self.events.append(("resume", reason))

    def informational(self, status: int) -> None:
        self.events.append(("1xx", status))

    def response_head(self, exchange, status, headers, length, end_stream) -> None:
        names = [headers[i].lower() for i in range(0, len(headers), 4)]
        self.events.append(("head", status, names, length))

    def response_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def flush(self, end: bool) -> None:
        self.events.append(("flush", end))

    def answer(self, exchange, answer) -> int:
        self.events.append(("answer", answer.status))
        return len(answer.body)

    def start_tunnel(self, upstream, data) -> None:
        self.events.append(("tunnel", data))

    def tunnel_data(self, data: bytes) -> None:
        self.events.append(("tunnel-data", data))

    def hold_entry(self, entry) -> None:
        self.events.append(("entry", entry))

    def exchange_done(self, exchange) -> None:
        self.events.append(("done", exchange.status))

    def abort(self) -> None:
        self.events.append(("abort",))

    def close(self) -> None:
        self.events.append(("close",))


RULES = {
    "acls": {"blocked": "path_beg /blocked"},
    "http_request": [{"deny": {"status": 403}, "if": "blocked"},
                     {"track_sc0": "src"}],
    "http_response": [{"set_header": {"name": "X-Served-By", "value": "%[srv_name]"}}],
    "stick_table": {"type": "ip", "size": 100, "expire": "30s", "store": ["http_req_rate(10s)"]},
}


def request(downstream: RecordingDownstream, path: bytes) -> Exchange:
    exchange = Exchange(downstream)
    exchange.method_b, exchange.url_b, exchange.host_b = b"GET", path, b"h"
    exchange.hparts = [b"host", b": ", b"h", b"\r\n"]
    exchange.request_done()
    exchange.start()
    return exchange


def downstream_for(plane: DataPlane) -> RecordingDownstream:
    frontend = plane.engine.frontends["web"]
    return RecordingDownstream(frontend, plane.state, plane.state.time)


def test_a_request_from_another_downstream_is_routed_sent_and_relayed():
    plane = DataPlane(config(frontend=RULES))
    down = downstream_for(plane)
    exchange = request(down, b"/x")
    upstream, server = plane.pool("app1").open()
    sent = server.take()
    assert sent.startswith(b"GET /x HTTP/1.1\r\n")
    assert b"x-forwarded-for: 192.0.2.7\r\n" in sent and b"x-forwarded-proto: https\r\n" in sent
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: s\r\n\r\nhello")
    kinds = [event[0] for event in down.events]
    assert kinds == ["entry", "head", "body", "flush", "done"]
    head = down.events[1]
    assert head[1] == 200 and head[3] == 5 and b"x-served-by" in head[2]
    assert down.events[2] == ("body", b"hello") and down.events[3] == ("flush", True)
    assert exchange.status == 200 and plane.engine.frontends["web"].responses[2] == 1


def test_the_proxy_answers_another_downstream_as_data():
    plane = DataPlane(config(frontend=RULES))
    down = downstream_for(plane)
    request(down, b"/blocked")
    assert ("answer", 403) in down.events and down.events[-1] == ("done", 403)
    assert not plane.pool("app1").waiting            # a denied request reaches no server


def test_a_failing_server_is_answered_502_on_another_downstream():
    plane = DataPlane(config(frontend=RULES, backend={"retries": 0}))
    down = downstream_for(plane)
    request(down, b"/x")
    upstream, _ = plane.pool("app1").open()
    upstream.data_received(b"HTTP/1.1 2xx nonsense\r\n\r\n")
    assert ("answer", 502) in down.events
