"""global.workers: a supervisor and two worker processes sharing the port."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import time

from prometheus_client.parser import text_string_to_metric_families

from lbproxy.proxy.openssl_ctx import TICKET_KEY_LIFETIME
from tests.harness import (cert_files, free_port, get, request, simple_config, tls_request,
                           wait_for, write_config)
from tests.process import LbproxyProcess, port_open

AUTH = "Basic " + base64.b64encode(b"admin:pw").decode()


def workers_config(ports: list[int], tmp_path, certificate: dict | None = None,
                   **backend) -> tuple[str, int, int]:
    """Two workers and the stats page (served once both are ready); TLS on the frontend
    with `certificate` (cert_files)."""
    config = simple_config(ports, backend=backend)
    config["global"] = {"workers": 2, "log": {"format": "off"}}
    stats_port = free_port()
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}", "admin": True,
                       "auth": {"username": "admin", "password": "pw"}}
    port = int(config["frontends"]["web"]["bind"][0].rsplit(":", 1)[1])
    if certificate is not None:
        config["frontends"]["web"]["bind"] = [{"address": f"127.0.0.1:{port}",
                                               "tls": {"certificates": [certificate]}}]
    return write_config(config, str(tmp_path)), port, stats_port


def admin(port: int, method: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else b""
    raw = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n"
           f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data
    return request(port, raw)


def worker_pids(supervisor: int) -> list[int]:
    with open(f"/proc/{supervisor}/task/{supervisor}/children") as f:
        return [int(pid) for pid in f.read().split()]


def worker_json(supervisor: int, index: int, path: str = "/api/backends/app") -> dict:
    """Backend app (or another API `path`) as worker `index` itself sees it, asked on its
    private socket (found from the worker's command line)."""
    from tests.harness import Reader

    for pid in worker_pids(supervisor):     # the workers, not a reload's config check
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        if b"--control-dir" in argv:
            break
    control = argv[argv.index(b"--control-dir") + 1].decode()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(os.path.join(control, f"worker-{index}.sock"))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return json.loads(Reader(sock).read_response().body)


def worker_server_up(supervisor: int, index: int, server: int) -> bool:
    return worker_json(supervisor, index)["servers"][server]["up"]


def requests_total(stats_port: int) -> float:
    text = get(stats_port, "/metrics").body.decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "lbproxy_frontend_http_requests_total")


def test_two_workers_share_the_port_and_report_as_one(backends, tmp_path):
    (app,) = backends(1)
    path, port, stats_port = workers_config([app.port], tmp_path)
    with LbproxyProcess("run", "-c", path, wait_port=stats_port) as lb:
        wait_for(lambda: len(worker_pids(lb.pid)) == 2)
        for _ in range(60):                                  # new connection each time
            assert get(port).status == 200
        assert requests_total(stats_port) == 60              # summed over both workers
        rows = json.loads(admin(stats_port, "GET", "/stats?format=json").body)
        frontend = next(r for r in rows if r["svname"] == "FRONTEND")
        assert frontend["stot"] >= 60
        assert "2 workers" in admin(stats_port, "GET", "/stats").body.decode()
        # a write reaches every worker: the weight is the same in the merged view
        assert admin(stats_port, "PATCH", "/api/backends/app/servers/app1",
                     {"weight": 7}).status == 200
        server = json.loads(admin(stats_port, "GET", "/api/backends/app").body)["servers"][0]
        assert server["weight"] == 7 and server["requests"] == 60
        lb.signal(signal.SIGTERM)
        assert lb.wait() == 0


def test_a_crashed_worker_is_restarted(backends, tmp_path):
    (app,) = backends(1)
    path, port, stats_port = workers_config([app.port], tmp_path)
    with LbproxyProcess("run", "-c", path, wait_port=stats_port) as lb:
        wait_for(lambda: len(worker_pids(lb.pid)) == 2)
        victim = worker_pids(lb.pid)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(worker_pids(lb.pid)) == 2 and victim not in worker_pids(lb.pid),
                 timeout=10)
        wait_for(lambda: get(stats_port, "/health").status == 200)
        assert [get(port).status for _ in range(20)] == [200] * 20
        lb.signal(signal.SIGTERM)
        assert lb.wait() == 0
        assert "worker" in lb.proc.stderr.read().decode()


def test_health_checks_run_once_and_reach_every_worker(backends, tmp_path):
    good, bad = backends(2)
    path, port, stats_port = workers_config(
        [good.port, bad.port], tmp_path,
        health_check={"path": "/health", "interval": "100ms", "rise": 1, "fall": 1})
    with LbproxyProcess("run", "-c", path, wait_port=stats_port) as lb:
        wait_for(lambda: len(worker_pids(lb.pid)) == 2)
        before, started = bad.stats.requests, time.monotonic()
        time.sleep(1.0)                                      # probes at 10/s, once
        rate = (bad.stats.requests - before) / (time.monotonic() - started)
        assert rate < 15, f"{rate:.1f} probes/s: checks run by more than one worker"
        bad.healthy = False
        # worker 0 finds out by its checks; worker 1 from the supervisor, which copies them
        wait_for(lambda: not any(worker_server_up(lb.pid, index, 1) for index in (0, 1)),
                 timeout=5)
        served_by = {get(port).header("x-server") for _ in range(40)}   # both workers
        assert served_by == {"app1"}
        lb.signal(signal.SIGTERM)
        assert lb.wait() == 0


def test_sighup_reloads_every_worker(backends, tmp_path):
    (app,) = backends(1)
    path, port, stats_port = workers_config([app.port], tmp_path)
    with LbproxyProcess("run", "-c", path, wait_port=stats_port) as lb:
        wait_for(lambda: len(worker_pids(lb.pid)) == 2)
        reload_with_weight(lb, path, 9)
        assert get(port).status == 200
        lb.signal(signal.SIGTERM)
        assert lb.wait() == 0


def test_a_sighup_during_start_waits_for_the_workers(backends, tmp_path):
    """SIGHUP as soon as the workers exist, before they have their handlers: it must not
    kill them (which stopped the whole start); each reloads once it is ready."""
    (app,) = backends(1)
    path, port, stats_port = workers_config([app.port], tmp_path)
    with LbproxyProcess("run", "-c", path) as lb:
        wait_for(lambda: len(worker_pids(lb.pid)) == 2)
        lb.signal(signal.SIGHUP)
        wait_for(lambda: port_open(stats_port) or lb.proc.poll() is not None, timeout=15)
        assert lb.proc.poll() is None
        assert get(port).status == 200
        lb.signal(signal.SIGTERM)
        assert lb.wait() == 0
        assert lb.proc.stderr.read().decode().count("configuration reloaded") == 2


def reload_with_weight(lb: LbproxyProcess, path: str, weight: int) -> None:
    """Give server 0 `weight` in the file, SIGHUP, and wait until both workers have it."""
    import yaml

    config = yaml.safe_load(open(path))
    config["backends"]["app"]["servers"][0]["weight"] = weight
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    lb.signal(signal.SIGHUP)
    wait_for(lambda: workers_weigh(lb.pid, weight), timeout=10)


def workers_weigh(supervisor: int, weight: int) -> bool:
    """Whether both workers give server 0 `weight` (reloaded); False while they reload
    (the check's process gone, a worker's socket not yet there)."""
    try:
        return all(worker_json(supervisor, index)["servers"][0]["weight"] == weight
                   for index in (0, 1))
    except OSError:
        return False


def resumed_connections(port: int, client: ssl.SSLContext, count: int,
                        session: ssl.SSLSession | None) -> tuple[int, ssl.SSLSession | None]:
    """`count` connections, each on a new source port and offering the previous one's TLS
    session; how many resumed it, and the last session."""
    resumed = 0
    for _ in range(count):
        reused, session = tls_request(port, client, session)
        resumed += reused
    return resumed, session


def all_resume(port: int, client: ssl.SSLContext, session: ssl.SSLSession) -> bool:
    """Whether 30 connections resume `session`; tried again with a new one if the hourly
    ticket key change (lbproxy/proxy/openssl_ctx.py) may have come since it was made."""
    for _ in range(2):
        period = time.time() // TICKET_KEY_LIFETIME
        if resumed_connections(port, client, 30, session)[0] == 30:
            return True
        if time.time() // TICKET_KEY_LIFETIME == period:
            return False
        _, session = resumed_connections(port, client, 1, None)
    return False


def test_tls_sessions_resume_on_every_worker_and_across_a_reload(backends, tmp_path, ca):
    """The workers share their session ticket keys, and keep them through a reload: with
    keys of their own, a client whose new connection lands on the other worker (about
    half of them) would get a full handshake."""
    (app,) = backends(1)
    path, port, stats_port = workers_config([app.port], tmp_path,
                                            cert_files(ca, tmp_path, "localhost"))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    with LbproxyProcess("run", "-c", path, wait_port=stats_port) as lb:
        _, session = resumed_connections(port, client, 1, None)
        assert all_resume(port, client, session)
        reload_with_weight(lb, path, 9)
        assert all_resume(port, client, session)
