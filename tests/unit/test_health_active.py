"""Active checks without sockets: the rise/fall state machine and the probe's verdicts."""

from __future__ import annotations

import pytest

from lbproxy.config.schema import Address, HealthCheckConfig
from lbproxy.health.active import Health
from lbproxy.health.probe import http_request, status_verdict


def run(health: Health, state: bool | None, results: str) -> list[bool | None]:
    """Feed results ("+" pass, "-" fail) and follow the verdicts like the checker does."""
    verdicts = []
    for result in results:
        verdict = health.record(state, result == "+")
        verdicts.append(verdict)
        if verdict is not None:
            state = verdict
    return verdicts


def test_up_server_goes_down_after_fall_consecutive_failures() -> None:
    assert run(Health(rise=2, fall=3), True, "--+---") == [None] * 5 + [False]


def test_down_server_comes_back_after_rise_consecutive_successes() -> None:
    assert run(Health(rise=2, fall=3), False, "+-++") == [None, None, None, True]


def test_checking_server_needs_rise_to_go_up() -> None:
    assert run(Health(rise=3, fall=2), None, "+++") == [None, None, True]


def test_checking_server_goes_down_after_fall() -> None:
    assert run(Health(rise=3, fall=2), None, "+--") == [None, None, False]


def test_one_flap_neither_way_changes_nothing() -> None:
    assert run(Health(rise=2, fall=2), True, "-+-+-+") == [None] * 6
    assert run(Health(rise=2, fall=2), False, "+-+-+-") == [None] * 6


def test_state_changed_elsewhere_restarts_the_counters() -> None:
    health = Health(rise=2, fall=3)
    assert health.record(True, True) is None
    assert health.record(True, True) is None     # two successes while UP count for nothing
    # passive ejection marked it DOWN: it now needs `rise` fresh successes
    assert health.record(False, True) is None
    assert health.record(False, True) is True


def test_successes_while_up_and_failures_while_down_never_report() -> None:
    health = Health(rise=1, fall=1)
    assert [health.record(True, True) for _ in range(3)] == [None] * 3
    assert [health.record(False, False) for _ in range(3)] == [None] * 3


@pytest.mark.parametrize(("line", "verdict"), [
    (b"HTTP/1.1 200 OK\r\n", (True, "Layer7 check passed (200)")),
    (b"HTTP/1.0 399 Whatever\r\n", (True, "Layer7 check passed (399)")),
    (b"HTTP/1.1 500 Internal Server Error\r\n", (False, "Layer7 wrong status 500")),
    (b"HTTP/1.1 199\r\n", (False, "Layer7 wrong status 199")),
    (b"", (False, "Layer7 invalid response: connection closed")),
    (b"SSH-2.0-OpenSSH\r\n", (False, "Layer7 invalid response")),
    (b"HTTP/1.1 abc\r\n", (False, "Layer7 invalid response")),
])
def test_status_verdict(line: bytes, verdict: tuple[bool, str]) -> None:
    assert status_verdict(line, (200, 399)) == verdict


def test_http_request_host_is_the_configured_one_or_the_probed_address() -> None:
    check = HealthCheckConfig(method="HEAD", path="/ready")
    assert http_request(check, Address("127.0.0.1", 9001)).startswith(
        b"HEAD /ready HTTP/1.1\r\nHost: 127.0.0.1:9001\r\n")
    assert b"Host: [::1]:8080\r\n" in http_request(HealthCheckConfig(port=8080),
                                                  Address("::1", 9001))
    assert b"Host: app.internal\r\n" in http_request(HealthCheckConfig(host="app.internal"),
                                                    Address("127.0.0.1", 9001))
    assert http_request(check, Address("127.0.0.1", 1)).endswith(
        b"Connection: close\r\n\r\n")
