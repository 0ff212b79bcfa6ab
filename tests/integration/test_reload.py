"""SIGHUP reload with a real subprocess under steady load: weights change, a server is
added and one removed, a broken config is refused, a fixed one applies — and the
client sees no failed request throughout."""

from __future__ import annotations

import json
import signal
import threading
import time

from tests.harness import Reader, connect, simple_config, wait_for
from tests.process import LbproxyProcess


class SteadyClient:
    """Keep-alive GETs in a loop from a thread (bounded), counting every outcome."""

    def __init__(self, port: int, limit_s: float = 60.0) -> None:
        self.port = port
        self.ok = 0
        self.failed: list[str] = []
        self.servers: list[str] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + limit_s
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = reader = None
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                if sock is None:
                    sock = connect(self.port)
                    reader = Reader(sock)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                response = reader.read_response()
                if response.status != 200:
                    self.failed.append(f"status {response.status}")
                else:
                    self.ok += 1
                    self.servers.append(response.header("x-server"))
                if response.header("connection") == "close":
                    sock.close()
                    sock = None
            except (OSError, EOFError) as exc:
                self.failed.append(repr(exc))
                if sock is not None:
                    sock.close()
                sock = None
            time.sleep(0.002)
        if sock is not None:
            sock.close()

    def recent(self, n: int) -> list[str]:
        return self.servers[-n:]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_reload_under_load_drops_nothing(backends, tmp_path):
    apps = backends(3)
    config = simple_config([apps[0].port, apps[1].port],
                           **{"global": {"log": {"format": "off"},
                                         "pidfile": str(tmp_path / "lb.pid")}})
    port = int(config["frontends"]["web"]["bind"][0].rsplit(":", 1)[1])
    path = tmp_path / "lbproxy.yaml"

    def write(cfg: dict | str) -> None:
        path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))

    write(config)
    with LbproxyProcess("run", "-c", str(path), wait_port=port) as lb:
        client = SteadyClient(port)
        try:
            wait_for(lambda: {"app1", "app2"} <= set(client.recent(20)))
            # 1. weights: app2 gets everything
            config["backends"]["app"]["servers"][0]["weight"] = 0
            write(config)
            lb.signal(signal.SIGHUP)
            wait_for(lambda: set(client.recent(30)) == {"app2"}, timeout=10)
            # 2. add app3, remove app2
            servers = config["backends"]["app"]["servers"]
            servers[0]["weight"] = 1
            servers[1] = {"name": "app3", "address": f"127.0.0.1:{apps[2].port}"}
            write(config)
            lb.signal(signal.SIGHUP)
            wait_for(lambda: set(client.recent(30)) == {"app1", "app3"}, timeout=10)
            # 3. a broken config is refused; the running one goes on
            write("frontends: {web: {bind: 'nonsense'}}\n")
            lb.signal(signal.SIGHUP)
            before = client.ok
            wait_for(lambda: client.ok > before + 50)
            assert set(client.recent(30)) == {"app1", "app3"}
            # 4. fixed again (by `lbproxy reload`, which signals through the pidfile)
            servers.append({"name": "app2", "address": f"127.0.0.1:{apps[1].port}"})
            write(config)
            import subprocess
            import sys
            subprocess.run([sys.executable, "-m", "lbproxy", "reload", "-c", str(path)],
                           check=True, capture_output=True, timeout=30)
            wait_for(lambda: set(client.recent(30)) == {"app1", "app2", "app3"}, timeout=10)
            wait_for(lambda: client.ok > 200)     # traffic went on through every reload
        finally:
            client.stop()
        assert client.failed == []
        lb.signal(signal.SIGTERM)
        assert lb.wait() == 0
        stderr = lb.proc.stderr.read().decode()
    assert "reload refused" in stderr and "frontends.web.bind" in stderr
