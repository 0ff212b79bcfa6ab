"""lbproxy as users run it: the CLI, exit codes, SIGTERM, streaming memory, the demo."""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import sys
import threading

from tests.harness import Reader, connect, get, simple_config, wait_for, write_config
from tests.process import LbproxyProcess, free_port, port_open


def run_config(backend_ports: list[int], tmp_path, **frontend) -> tuple[str, int]:
    config = simple_config(backend_ports, **frontend)
    port = int(config["frontends"]["web"]["bind"][0].rsplit(":", 1)[1])
    return write_config(config, str(tmp_path)), port


def test_version():
    import tomllib
    from pathlib import Path

    import lbproxy

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    version = tomllib.loads(pyproject.read_text())["project"]["version"]
    result = subprocess.run([sys.executable, "-m", "lbproxy", "--version"],
                            capture_output=True, text=True, timeout=30)
    variant = "compiled" if lbproxy.accelerated else "pure Python"
    assert (result.returncode, result.stdout) == (0, f"lbproxy {version} ({variant})\n")


def test_check_accepts_a_valid_config(tmp_path):
    path, _ = run_config([9], tmp_path)
    result = subprocess.run([sys.executable, "-m", "lbproxy", "check", "-c", path],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.strip() == "configuration is valid"


def test_check_and_run_refuse_an_invalid_config(tmp_path):
    port = free_port()
    path = tmp_path / "bad.yaml"
    path.write_text(f"frontends:\n  web:\n    bind: ['127.0.0.1:{port}']\n"
                    f"    default_backend: app\nbackends:\n  app:\n"
                    f"    balance: roundrobbin\n    servers: []\n")
    for command in ("check", "run"):
        result = subprocess.run([sys.executable, "-m", "lbproxy", command, "-c", str(path)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 1
        assert (f"{path}:7: backends.app.balance: unknown algorithm 'roundrobbin' "
                f"(did you mean 'roundrobin'?)") in result.stderr
        assert "Traceback" not in result.stderr
    assert not port_open(port)


def test_sigterm_lets_the_request_in_flight_finish(backends, tmp_path):
    (app,) = backends(1)
    path, port = run_config([app.port], tmp_path)
    with LbproxyProcess("run", "-c", path, wait_port=port) as lb:
        with connect(port) as sock:
            sock.sendall(b"GET /slow/800 HTTP/1.1\r\nHost: t\r\n\r\n")
            wait_for(lambda: app.stats.requests == 1)
            lb.signal(signal.SIGTERM)
            wait_for(lambda: not port_open(port))        # stopped accepting at once
            response = Reader(sock).read_response()
            assert response.status == 200 and response.body == b"slept 800 ms\n"
            assert response.header("connection") == "close"
        assert lb.wait() == 0


def test_large_bodies_stream_with_bounded_memory(backends, tmp_path):
    (app,) = backends(1)
    path, port = run_config([app.port], tmp_path)
    size = 256 * 1024 * 1024
    with LbproxyProcess("run", "-c", path, wait_port=port) as lb:
        assert get(port, "/").status == 200
        rss_before = lb.rss_kb()
        peak = [rss_before]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], lb.rss_kb())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with connect(port, timeout=60) as sock:          # download
            sock.sendall(f"GET /bytes/{size} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            received = 0
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            received = len(head.split(b"\r\n\r\n", 1)[1])
            while received < size:
                chunk = sock.recv(1 << 20)
                assert chunk
                received += len(chunk)
        block = b"z" * (1 << 20)
        digest = hashlib.sha256()
        with connect(port, timeout=60) as sock:          # upload
            sock.sendall(f"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n"
                         .encode())
            for _ in range(size // len(block)):
                sock.sendall(block)
                digest.update(block)
            response = Reader(sock).read_response()
        done.set()
        sampler.join()
        assert response.status == 200
        assert b'"body_length": %d' % size in response.body
        assert digest.hexdigest().encode() in response.body
        assert peak[0] - rss_before < 20 * 1024, f"RSS grew {peak[0] - rss_before} KB"


def test_demo_serves_three_backends_and_stops_on_ctrl_c():
    port, stats_port = free_port(), free_port()
    with LbproxyProcess("demo", "--port", str(port), "--stats-port", str(stats_port),
                        wait_port=port) as lb:
        servers = {get(port).header("x-server") for _ in range(6)}
        assert servers == {"app1", "app2", "app3"}
        wait_for(lambda: port_open(stats_port))
        assert get(stats_port, "/health").body == b"ok"
        lb.signal(signal.SIGINT)
        assert lb.wait() == 0
        out = lb.proc.stdout.read().decode()
        assert f"http://127.0.0.1:{port}/" in out


def test_access_log_json_lines(backends, tmp_path):
    import json

    (app,) = backends(1)
    log_path = tmp_path / "access.log"
    path, port = run_config([app.port], tmp_path,
                            **{"global": {"log": {"access": str(log_path), "format": "json"}}})
    with LbproxyProcess("run", "-c", path, wait_port=port) as lb:
        assert get(port, "/bytes/7?x=1").status == 200
        wait_for(lambda: log_path.exists() and log_path.read_text().strip())
        lb.signal(signal.SIGTERM)
        assert lb.wait() == 0
    record = json.loads(log_path.read_text().splitlines()[0])
    assert record["status"] == 200 and record["url"] == "/bytes/7?x=1"
    assert record["backend"] == "app" and record["server"] == "app1"
    assert record["method"] == "GET" and record["client"] == "127.0.0.1"


def test_a_stdout_nobody_reads_costs_log_lines_never_service(backends, tmp_path):
    """A stalled log reader (a pipe never read: a stuck log driver) must not freeze the
    proxy: lines past `buffer` are dropped and counted, requests and SIGTERM still work."""
    import http.client
    import time

    (app,) = backends(1)
    config = simple_config([app.port], **{"global": {"log": {"access": "stdout",
                                                              "buffer": "64k"}}})
    stats_port = free_port()
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}"}
    port = int(config["frontends"]["web"]["bind"][0].rsplit(":", 1)[1])
    path = write_config(config, str(tmp_path))
    with LbproxyProcess("run", "-c", path, wait_port=port) as lb:   # its stdout: never read
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for i in range(3000):                       # ~700 KB of lines: pipe and buffer fill
            conn.request("GET", f"/bytes/1?n={i}")
            response = conn.getresponse()
            assert response.status == 200
            response.read()
        conn.close()

        def dropped() -> float:
            metrics = get(stats_port, "/metrics").body.decode()
            line = next(line for line in metrics.splitlines()
                        if line.startswith("lbproxy_access_log_dropped_lines_total "))
            return float(line.split()[1])
        wait_for(lambda: dropped() > 0, 5)
        assert get(port, "/bytes/3").status == 200          # still serving
        started = time.monotonic()
        lb.signal(signal.SIGTERM)
        assert lb.wait(10) == 0
        assert time.monotonic() - started < 5
        assert b"access log: stdout is not taking lines" in lb.proc.stderr.read()


class EndlessHeadServer:
    """Answers every request with a response head of `size` bytes of headers."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        line = b"X-Junk: " + b"j" * 1014 + b"\r\n"          # 1 KiB per header line
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\n")
                    for _ in range(self.size // len(line)):
                        conn.sendall(line)
                except OSError:                # the proxy hung up: expected
                    pass


def test_a_server_sending_an_endless_head_gets_502_and_memory_stays_flat(tmp_path):
    """A 20 MB response head is cut at `max_response_header_size`: a 502, the server
    counted as failed, a log line; ten of them do not grow the proxy's memory."""
    import json

    server = EndlessHeadServer(20 * 1024 * 1024)
    log_path = tmp_path / "access.log"
    config = simple_config([server.port], **{"global": {"log": {"access": str(log_path)}}})
    stats_port = free_port()
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}"}
    port = int(config["frontends"]["web"]["bind"][0].rsplit(":", 1)[1])
    path = write_config(config, str(tmp_path))
    with LbproxyProcess("run", "-c", path, wait_port=port) as lb:
        assert get(port, "/warm-up").status == 502
        rss_before = lb.rss_kb()
        for i in range(10):
            assert get(port, f"/{i}").status == 502
        assert lb.rss_kb() - rss_before < 10 * 1024, "RSS grew more than 10 MB"
        metrics = get(stats_port, "/metrics").body.decode()
        assert 'lbproxy_server_check_failures_total{backend="app",server="app1"} 11.0' in metrics
        lb.signal(signal.SIGTERM)
        assert lb.wait() == 0
    server.sock.close()
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(lines) == 11
    assert {(line["status"], line["termination"], line["error"]) for line in lines} == {
        (502, "SH", "response-header-too-large")}


def test_a_low_open_files_limit_caps_connections_and_says_so(backends, tmp_path):
    """With 128 descriptors, 32 clients are served at once (two descriptors each, 64 kept
    aside); the others wait in the backlog, are not reset, and are served in turn."""
    import resource

    (app,) = backends(1)
    config = simple_config([app.port])
    stats_port = free_port()
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}"}
    port = int(config["frontends"]["web"]["bind"][0].rsplit(":", 1)[1])
    path = write_config(config, str(tmp_path))

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    with LbproxyProcess("run", "-c", path, wait_port=port, preexec_fn=low_limit) as lb:
        wait_for(lambda: port_open(stats_port), 10)      # (it may open after the frontend)
        metrics = get(stats_port, "/metrics").body.decode()
        assert "lbproxy_max_connections 32.0" in metrics
        assert "lbproxy_open_files_limit 128.0" in metrics
        clients = [connect(port) for _ in range(40)]
        for sock in clients:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        served, waiting = [], []
        for sock in clients:                      # a waiting client: no answer, no reset
            sock.settimeout(0.3 if len(served) >= 32 else 5)
            try:
                response = Reader(sock).read_response()
            except TimeoutError:
                waiting.append(sock)
                continue
            assert response.status == 200
            served.append(sock)
        # (uvloop may accept one batch past the cap before accepting pauses)
        assert len(served) >= 32 and len(waiting) >= 4, (len(served), len(waiting))
        for sock in served:                       # make room: the waiting ones go on
            sock.close()
        for sock in waiting:
            sock.settimeout(5)
            assert Reader(sock).read_response().status == 200
            sock.close()
        lb.signal(signal.SIGTERM)
        assert lb.wait() == 0
        assert b"open-files limit is 128: at most 32 client connections" in lb.proc.stderr.read()


def test_busy_port_fails_whole(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = simple_config([9])
        config["frontends"]["web"]["bind"] = [f"127.0.0.1:{port}"]
        path = write_config(config, str(tmp_path))
        result = subprocess.run([sys.executable, "-m", "lbproxy", "run", "-c", path],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def test_open_files_limit_is_raised(backends, tmp_path):
    import resource

    (app,) = backends(1)
    path, port = run_config([app.port], tmp_path)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def low_limit() -> None:                     # the common default of many systems
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    with LbproxyProcess("run", "-c", path, wait_port=port, preexec_fn=low_limit) as lb:
        with open(f"/proc/{lb.pid}/limits") as f:
            line = next(line for line in f if line.startswith("Max open files"))
        assert int(line.split()[3]) == hard      # soft limit of the proxy = hard limit


# Imported only by configurations that use them (each costs memory and start time): TLS
# certificates, the worker supervisor and its aggregation, autoscaling, HTTP/2.
LAZY_MODULES = ("cryptography", "prometheus_client", "hpack", "lbproxy.proxy.certificates",
                "lbproxy.runtime.workers", "lbproxy.admin.aggregate", "lbproxy.autoscale",
                "lbproxy.http2.connection", "lbproxy.proxy.h2client", "lbproxy.proxy.h2upstream",
                "lbproxy.health.grpc")


def test_a_plain_http_proxy_imports_no_module_it_does_not_use(backends, tmp_path, monkeypatch):
    (app,) = backends(1)
    stats = free_port()
    config = simple_config([app.port], backend={"health_check": {"type": "tcp"}})
    config["stats"] = {"bind": f"127.0.0.1:{stats}"}
    port = int(config["frontends"]["web"]["bind"][0].rsplit(":", 1)[1])
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")     # every import, on stderr
    with LbproxyProcess("run", "-c", write_config(config, str(tmp_path)), wait_port=port) as lb:
        assert get(port).status == 200
        wait_for(lambda: port_open(stats))
        lb.signal(signal.SIGTERM)
        assert lb.wait() == 0
        imported = {line.rsplit("|", 1)[1].strip()
                    for line in lb.proc.stderr.read().decode().splitlines()
                    if line.startswith("import time:") and "|" in line}
    assert {"aiohttp.web", "lbproxy.health.probe", "lbproxy.admin.metrics"} <= imported
    assert not [name for name in imported if name.startswith(LAZY_MODULES)]
