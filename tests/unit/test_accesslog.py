"""The access log's lines (valid JSON whatever the URL holds, CLF) and its writer thread:
bounded, counting what it drops, never making the caller wait."""

from __future__ import annotations

import json
import os
import threading

import pytest

from lbproxy.runtime.logwriter import LogWriter
from tests.harness import wait_for
from tests.unit.dataplane import OK, DataPlane, config, get


def plane_logging_to(path: str, log_format: str = "json") -> DataPlane:
    settings = config(backend={"http_reuse": "never"})    # each request connects
    settings["global"]["log"] = {"access": path, "format": log_format}
    return DataPlane(settings)


def served(plane: DataPlane, request: bytes) -> None:
    plane.connect(peer=("192.0.2.7", 5555)).send(request)
    upstream, _ = plane.pool("app1").open()
    upstream.data_received(OK)


def test_json_lines_are_valid_json_whatever_the_url_holds(tmp_path):
    path = tmp_path / "access.log"
    plane = plane_logging_to(str(path))
    odd = b'/q?a="x"&b=\\&c={}&d=%00'
    served(plane, b"GET " + odd + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    plane.connect().send(b"GET / HTTP/1.1\r\nHost: h\r\nBad Header: 1\r\n\r\n")
    plane.engine.access_log.close(5)
    first, second = [json.loads(line) for line in path.read_text().splitlines()]
    assert first["url"] == odd.decode("latin-1")
    assert first["client"] == "192.0.2.7" and first["client_port"] == 5555
    assert (first["frontend"], first["backend"], first["server"]) == ("web", "app", "app1")
    assert (first["method"], first["proto"], first["status"]) == ("GET", "1.1", 200)
    assert first["bytes"] == len(OK) and first["retries"] == 0
    assert first["termination"] == "--" and first["error"] is None
    assert isinstance(first["duration_ms"], float)
    assert first["time"].endswith("Z") and len(first["time"]) == len("2026-01-01T00:00:00.000Z")
    assert second["status"] == 400 and second["backend"] is None
    assert (second["termination"], second["error"]) == ("PR", "bad-request")


def test_clf_lines(tmp_path):
    path = tmp_path / "access.log"
    plane = plane_logging_to(str(path), "clf")
    served(plane, get('/a"b'))
    plane.engine.access_log.close(5)
    line = path.read_text()
    assert line.startswith("192.0.2.7 - - [")
    assert line.endswith(f'"GET /a%22b HTTP/1.1" 200 {len(OK)}\n')


def test_a_rotated_file_is_reopened(tmp_path):
    path = tmp_path / "access.log"
    plane = plane_logging_to(str(path))
    access_log = plane.engine.access_log
    served(plane, get("/before"))
    os.rename(path, tmp_path / "access.log.1")
    access_log.reopen()
    served(plane, get("/after"))
    access_log.close(5)
    assert '"/before"' in (tmp_path / "access.log.1").read_text()
    assert '"/after"' in path.read_text() and '"/before"' not in path.read_text()


def test_the_writer_drops_and_counts_what_does_not_fit_and_never_blocks():
    read_end, write_end = os.pipe()             # a target nobody reads
    writer = LogWriter(write_end, True, limit=256 * 1024)
    line = b"x" * 1023 + b"\n"
    chunk = line * 16                           # 16 lines, 16 KiB
    started = threading.Event()
    results = []

    def flood() -> None:
        started.set()
        results.extend(writer.write(chunk, 16) for _ in range(200))   # 3.2 MiB
    thread = threading.Thread(target=flood)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()                # the caller never waited
    accepted = results.count(True)
    assert results.count(False) > 0 and writer.dropped == 16 * results.count(False)
    assert accepted * len(chunk) <= 256 * 1024 + 128 * 1024   # the limit, and what the pipe took
    assert not writer.close(0.2)                # stuck: close gives up instead of hanging
    os.close(read_end)                          # the reader goes: writes fail, counted
    wait_for(lambda: not writer._thread.is_alive())
    assert writer.failed > 0 and writer.last_error


def test_a_target_that_refuses_writes_counts_failed_lines():
    read_end, write_end = os.pipe()
    os.close(read_end)
    writer = LogWriter(write_end, True, limit=1024 * 1024)
    assert writer.write(b"a\nb\n", 2)
    assert writer.close(5)
    assert writer.failed == 2 and "pipe" in writer.last_error.lower()


@pytest.mark.parametrize("count", [1, 300])
def test_lines_reach_the_file_in_order(tmp_path, count):
    path = tmp_path / "access.log"
    plane = plane_logging_to(str(path))
    for i in range(count):
        served(plane, get(f"/{i}"))
    plane.engine.access_log.close(5)
    urls = [json.loads(line)["url"] for line in path.read_text().splitlines()]
    assert urls == [f"/{i}" for i in range(count)]
