"""A retired configuration and a closed connection are freed by reference counting alone.

The running proxy keeps its heap frozen (lbproxy/runtime/heap.py): a reference cycle
among frozen objects would never be collected. So a reload that removes a frontend, two
backends (one with a cache and compression), servers and an algorithm, and client and
server connections that were open across it and close after, must leave no lbproxy object
for the cyclic collector to find.
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path

import uvloop
import yaml

from lbproxy.config import load_config
from lbproxy.runtime.serve import ProxyProcess
from tests.harness import Reader, connect, free_port
from tests.origin import Origin

DEADLINE = 5.0


def config(origin: int, web: int, other: int, before: bool) -> dict:
    servers = [{"name": f"s{i}", "address": f"127.0.0.1:{origin}"} for i in range(4 if before else 2)]
    backends: dict = {"app": {"balance": "roundrobin" if before else "leastconn",
                              "cookie": {"name": "SRV", "mode": "insert"},
                              "passive": {"max_fails": 3}, "servers": servers}}
    frontends: dict = {"web": {
        "bind": [f"127.0.0.1:{web}"],
        "acls": {"is_api": "path_beg /api"},
        "stick_table": {"type": "ip", "size": 100, "expire": "30s", "store": ["http_req_rate(10s)"]},
        "http_request": [{"track_sc0": "src"},
                         {"set_header": {"name": "X-Start", "value": "t=%[date_us]"}}],
        "http_response": [{"set_header": {"name": "X-Served-By", "value": "%[srv_name]"}}],
        "use_backend": [{"backend": "api" if before else "app", "if": "is_api"}],
        "default_backend": "app"}}
    if before:
        backends["api"] = {"balance": "source", "cache": "web",
                           "compression": {"algorithms": ["gzip"], "min_size": 10},
                           "servers": [{"name": "a1", "address": f"127.0.0.1:{origin}"}]}
        backends["hashed"] = {"balance": "uri",
                              "servers": [{"name": "h1", "address": f"127.0.0.1:{origin}"}]}
        frontends["other"] = {"bind": [f"127.0.0.1:{other}"], "default_backend": "hashed"}
    return {"global": {"log": {"access": "stdout", "format": "off"}},
            "caches": {"web": {"size": "1m"}} if before else {},
            "frontends": frontends, "backends": backends}


def ask(connections: list[tuple[Reader, object]], paths: list[str]) -> list[int]:
    """One keep-alive request on each connection; the statuses."""
    statuses = []
    for (reader, sock), path in zip(connections, paths):
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n".encode())
        statuses.append(reader.read_response().status)
    return statuses


async def until(predicate, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


def test_reload_and_closed_connections_leave_no_cyclic_garbage(tmp_path: Path) -> None:
    path = tmp_path / "lbproxy.yaml"
    web, other = free_port(), free_port()

    async def run(origin: int) -> tuple[list[int], list[int], list[str]]:
        path.write_text(yaml.safe_dump(config(origin, web, other, before=True)))
        process = ProxyProcess(load_config(str(path)), asyncio.get_running_loop(), str(path))
        await process.start()
        engine = process.engine
        socks = [connect(port) for port in (web, web, other)]
        connections = [(Reader(sock), sock) for sock in socks]
        paths = ["/", "/api/page?size=3000", "/key"]
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)          # from here on, what a collection finds stays
        try:
            first = await asyncio.to_thread(ask, connections, paths)
            path.write_text(yaml.safe_dump(config(origin, web, other, before=False)))
            assert await engine.reload() == []
            await until(lambda: len(engine.backends["app"].servers) == 2, "servers drained")
            second = await asyncio.to_thread(ask, connections[:2], paths[:2])
            for sock in socks:
                sock.close()
            await until(lambda: not engine.state.clients, "client connections closed")
            engine.backends["app"].stop()       # its idle server connections close
            await until(lambda: not engine.state.upstreams, "server connections closed")
            gc.collect()
        finally:
            gc.set_debug(0)
            for sock in socks:
                sock.close()
            found = sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage
                            if type(o).__module__.startswith("lbproxy")})
            gc.garbage.clear()
            await process.stop(0.1)
        return first, second, found

    with Origin() as origin:
        first, second, found = uvloop.run(run(origin.port))
    assert first == [200, 200, 200] and second == [200, 200]
    assert found == []
