"""`lbproxy demo`: demo app servers and a proxy over them, in one process, one command."""

from __future__ import annotations

import os
import tempfile

import yaml

from lbproxy.config.load import load_config
from lbproxy.demo.backend import start_backend
from lbproxy.runtime.engine import Engine
from lbproxy.runtime.serve import run_loop, serve


def demo_config(port: int, stats_port: int, backend_ports: list[int]) -> dict:
    return {
        "global": {"log": {"access": "stdout", "format": "clf"}},
        "stats": {"bind": f"127.0.0.1:{stats_port}", "auth": {"username": "admin", "password": "admin"},
                  "admin": True},
        "frontends": {"web": {"bind": [f"127.0.0.1:{port}"], "default_backend": "app"}},
        "backends": {"app": {"balance": "roundrobin", "servers": [
            {"name": f"app{i + 1}", "address": f"127.0.0.1:{p}"}
            for i, p in enumerate(backend_ports)]}},
    }


def run_demo(port: int = 8080, stats_port: int = 8404, backends: int = 3) -> int:
    async def main() -> int:
        apps = [await start_backend(name=f"app{i + 1}") for i in range(backends)]
        fd, path = tempfile.mkstemp(prefix="lbproxy-demo-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(demo_config(port, stats_port, [app.port for app in apps]), f)
        try:
            config = load_config(path)
        finally:
            os.unlink(path)

        async def announce(engine: Engine) -> None:
            servers = ", ".join(f"{app.name} on :{app.port}" for app in apps)
            print(f"lbproxy demo: proxy on http://127.0.0.1:{port}/ (roundrobin over {servers})\n"
                  f"  try:  curl http://127.0.0.1:{port}/        (answers rotate app1, app2, ...)\n"
                  f"        curl http://127.0.0.1:{port}/echo    (what the server received)\n"
                  f"  stats: http://127.0.0.1:{stats_port}/stats  (admin / admin; also /metrics)\n"
                  f"  Ctrl-C stops everything.", flush=True)

        try:
            return await serve(config, on_ready=announce)
        finally:
            for app in apps:
                await app.close()

    return run_loop(main())
