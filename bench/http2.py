"""HTTP/2: lbproxy against HAProxy, nginx and Caddy, over h2c and TLS, with h2load.

Every target serves HTTP/2 (cleartext with prior knowledge, and TLS with ALPN h2, one
self-signed certificate) and proxies over HTTP/1.1 keep-alive to one nginx returning a
fixed ~100-byte answer, so the figure measures the proxy, not the backend. Each proxy is
pinned alone to one CPU; nginx and h2load share the other. Loads: one connection
carrying 100 concurrent streams, and 50 connections of one stream each. Beside them:
lbproxy over HTTP/1.1 keep-alive (wrk, 50 connections) for the comparison with many
streams on one connection; a gRPC scenario (unary calls/s, grpcio client, through
lbproxy with `proto: h2` and direct); and the memory of 1,000 idle HTTP/2 connections
holding 10 open streams each.

    python -m bench.http2 [--quick] [--duration 10] [--targets lbproxy,haproxy,nginx,caddy]
                          [--no-extras]

Writes bench/results/http2.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (Proc, Session, add_common_options, choose, free_port, noted,
                           pinned, start_nginx_backend, tree_cpu_seconds)
from bench.loadgen import run_metered
from bench.report import RESULTS, Report, now_utc
from bench.targets import Tls, caddy_argv, haproxy_argv, lbproxy_argv, lbproxy_config, nginx_argv
from bench.tls import make_certificate

TARGETS = ["lbproxy", "haproxy", "nginx", "caddy"]
LOADS = {"1 connection x 100 streams": (1, 100), "50 connections x 1 stream": (50, 1)}
IDLE_CONNECTIONS, IDLE_STREAMS = 1000, 10


@dataclass(frozen=True)
class Row:
    target: str
    transport: str
    load: str
    requests: int
    rps: float
    cpu_us: float
    errors: int


def lbproxy(workdir: Path, h2c: int, tls_port: int, backend: int, tls: Tls) -> list[str]:
    config = lbproxy_config(h2c, [backend])
    config["frontends"]["web"]["bind"] = [
        {"address": f"127.0.0.1:{h2c}", "h2c": True},
        {"address": f"127.0.0.1:{tls_port}",
         "tls": {"certificates": [{"cert": str(tls.cert), "key": str(tls.key)}]}}]
    return lbproxy_argv(workdir, config, "http2.yaml")


def haproxy(workdir: Path, h2c: int, tls_port: int, backend: int, tls: Tls) -> list[str]:
    return haproxy_argv(
        workdir, "haproxy-h2.cfg",
        f"frontend web\n    bind 127.0.0.1:{h2c} proto h2\n"
        f"    bind 127.0.0.1:{tls_port} ssl crt {tls.bundle} alpn h2,http/1.1\n"
        "    default_backend app\n"
        f"backend app\n    server app1 127.0.0.1:{backend}\n")


def nginx(workdir: Path, h2c: int, tls_port: int, backend: int, tls: Tls) -> list[str]:
    return nginx_argv(
        workdir, "nginx-h2",
        f"  upstream app {{\n    server 127.0.0.1:{backend};\n    keepalive 64;\n  }}\n"
        f"  server {{\n    listen 127.0.0.1:{h2c} http2;\n"
        f"    listen 127.0.0.1:{tls_port} ssl http2;\n"
        f"    ssl_certificate {tls.cert};\n    ssl_certificate_key {tls.key};\n"
        "    http2_max_concurrent_streams 128;\n    keepalive_requests 1000000000;\n"
        "    location / {\n      proxy_pass http://app;\n      proxy_http_version 1.1;\n"
        '      proxy_set_header Connection "";\n'
        "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }\n  }\n")


def caddy(workdir: Path, h2c: int, tls_port: int, backend: int, tls: Tls) -> list[str]:
    return caddy_argv(workdir, f"http://127.0.0.1:{h2c} {{\n  reverse_proxy 127.0.0.1:{backend}\n}}\n"
                      f"https://127.0.0.1:{tls_port} {{\n  tls {tls.cert} {tls.key}\n"
                      f"  reverse_proxy 127.0.0.1:{backend}\n}}\n", "h1 h2 h2c", "Caddyfile-h2")


COMMANDS = {"lbproxy": lbproxy, "haproxy": haproxy, "nginx": nginx, "caddy": caddy}


def h2load(url: str, connections: int, streams: int, seconds: float, cpus: str | None
           ) -> tuple[int, int]:
    """(requests that succeeded, that failed) in `seconds` of h2load."""
    done = subprocess.run(pinned(["h2load", "-c", str(connections), "-m", str(streams),
                                  "-D", str(max(1, round(seconds))), url], cpus),
                          capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout", done.stdout)
    if match is None:
        raise RuntimeError(f"unexpected h2load output:\n{done.stdout}\n{done.stderr}")
    return int(match[2]), int(match[3]) + int(match[4]) + int(match[5])


def measure(proxy: Proc, name: str, ports: dict[str, int], args: argparse.Namespace,
            cpus: str | None) -> list[Row]:
    rows = []
    for transport, scheme in (("h2c", "http"), ("TLS", "https")):
        url = f"{scheme}://127.0.0.1:{ports[transport]}/"
        for load, (connections, streams) in LOADS.items():
            h2load(url, connections, streams, min(args.warmup, 2) or 1, cpus)
            before = tree_cpu_seconds(proxy.pid)
            ok, failed = h2load(url, connections, streams, args.duration, cpus)
            spent = tree_cpu_seconds(proxy.pid) - before
            rows.append(Row(name, transport, load, ok, ok / args.duration,
                            spent / max(ok, 1) * 1e6, failed))
    return rows


# --- lbproxy alone: HTTP/1.1 for comparison, gRPC, idle connections ------------------------

async def hold_idle_streams(port: int, connections: int, streams: int) -> list:
    """Open `connections` HTTP/2 connections with `streams` requests each to a path that
    answers after a minute; returns the writers to keep them open."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import hpack
    from lbproxy.http2 import frames as f
    writers = []
    for _ in range(connections):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        encoder = hpack.Encoder()
        out = f.PREFACE + f.settings({})
        for i in range(streams):
            block = encoder.encode([(":method", "GET"), (":scheme", "http"),
                                    (":path", "/slow/60000"), (":authority", "idle")])
            out += f.frame(f.HEADERS, f.END_STREAM | f.END_HEADERS, 1 + 2 * i, block)
        writer.write(out)
        writers.append((reader, writer))
    return writers


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status)[1]) / 1024


def lbproxy_extras(run: Session, args: argparse.Namespace, nginx_port: int, notes: list[str]
                   ) -> tuple[list[str], list[list[str]]]:
    """HTTP/1.1 keep-alive through lbproxy, gRPC through it and direct, idle h2 memory."""
    lines, rows = [], []
    with noted(notes, "lbproxy (HTTP/1.1)") as stack:
        port = free_port()
        proxy = stack.enter_context(Proc("lbproxy-h1", lbproxy_argv(
            run.workdir, lbproxy_config(port, [nginx_port]), "h1.yaml"), run.workdir,
            run.cpus.proxy))
        proxy.wait_for_port(port)
        load, cpu = run_metered(f"http://127.0.0.1:{port}/", 50, args.duration, run.cpus.loadgen,
                                "wrk", [proxy])
        rows.append(["lbproxy", "HTTP/1.1 (wrk)", "50 connections keep-alive",
                     f"{load.rps:,.0f}", f"{cpu[0]:.1f}", str(load.errors)])
    with noted(notes, "gRPC") as stack:
        grpc_port, front = free_port(), free_port()
        stack.enter_context(Proc("grpc-server", [sys.executable, "-m", "bench.grpc_load",
                                                 "serve", "--port", str(grpc_port)],
                                 run.workdir, run.cpus.backend)).wait_for_port(grpc_port)
        config = lbproxy_config(front, [grpc_port], backend={"proto": "h2"})
        config["frontends"]["web"]["bind"] = [{"address": f"127.0.0.1:{front}", "h2c": True}]
        proxy = stack.enter_context(Proc("lbproxy-grpc", lbproxy_argv(run.workdir, config,
                                                                      "grpc.yaml"),
                                         run.workdir, run.cpus.proxy))
        proxy.wait_for_port(front)
        for label, target in (("direct", grpc_port), ("through lbproxy", front)):
            before = tree_cpu_seconds(proxy.pid)
            done = subprocess.run(pinned([sys.executable, "-m", "bench.grpc_load", "call",
                                          "--target", f"127.0.0.1:{target}", "--seconds",
                                          str(args.duration), "--concurrency", "16"],
                                         run.cpus.loadgen),
                                  capture_output=True, text=True, timeout=args.duration + 60)
            result = json.loads(done.stdout)
            cpu_us = (tree_cpu_seconds(proxy.pid) - before) / max(result["calls"], 1) * 1e6
            lines.append(f"gRPC unary calls {label}: {result['calls'] / result['seconds']:,.0f}"
                         f"/s, {result['errors']} errors"
                         + (f", lbproxy {cpu_us:.0f} µs CPU per call" if target == front else ""))
    with noted(notes, "idle HTTP/2 connections") as stack:
        backend_port, port = free_port(), free_port()
        stack.enter_context(Proc("demo-backend", [sys.executable, "-m", "lbproxy.demo.backend",
                                                  "--port", str(backend_port)],
                                 run.workdir, run.cpus.backend)).wait_for_port(backend_port)
        config = lbproxy_config(port, [backend_port])
        config["frontends"]["web"]["bind"] = [{"address": f"127.0.0.1:{port}", "h2c": True}]
        proxy = stack.enter_context(Proc("lbproxy-idle", lbproxy_argv(run.workdir, config,
                                                                      "idle.yaml"),
                                         run.workdir, run.cpus.proxy))
        proxy.wait_for_port(port)
        idle_before = rss_mb(proxy.pid)
        loop = asyncio.new_event_loop()
        writers = loop.run_until_complete(hold_idle_streams(port, IDLE_CONNECTIONS,
                                                            IDLE_STREAMS))
        loop.run_until_complete(asyncio.sleep(3))
        lines.append(f"{IDLE_CONNECTIONS:,} idle HTTP/2 connections with {IDLE_STREAMS} open "
                     f"streams each: lbproxy RSS {rss_mb(proxy.pid):.0f} MB "
                     f"(idle before: {idle_before:.0f} MB)")
        for _, writer in writers:
            writer.close()
        loop.close()
    return lines, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http2", description=__doc__.split("\n")[0])
    add_common_options(parser, duration=10.0, quick=3.0, output=RESULTS / "http2.md", loadgen=False)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--no-extras", dest="extras", action="store_false",
                        help="only the h2load table: no HTTP/1.1, gRPC or idle-memory runs")
    args = parser.parse_args(argv)
    targets = choose(parser, args.targets, TARGETS, "target")
    rows: list[Row] = []
    notes: list[str] = []
    with Session.open("bench.http2", argv) as run:
        if shutil.which("h2load") is None:
            raise SystemExit("h2load is needed: apt-get install -y nghttp2-client")
        tls = make_certificate(run.workdir, "ec256")
        nginx_port = start_nginx_backend(run.stack, run.workdir, run.cpus.backend).port
        for name in targets:
            binary = {"lbproxy": sys.executable, "caddy": "caddy"}.get(name, name)
            if shutil.which(binary) is None:
                notes.append(f"**{name}** skipped: not installed")
                continue
            run.step(name)
            with noted(notes, name) as stack:
                ports = {"h2c": free_port(), "TLS": free_port()}
                argv_ = COMMANDS[name](run.workdir, ports["h2c"], ports["TLS"], nginx_port, tls)
                proxy = stack.enter_context(Proc(name, argv_, run.workdir, run.cpus.proxy))
                proxy.wait_for_port(ports["h2c"])
                proxy.wait_for_port(ports["TLS"])
                time.sleep(0.5)
                rows += measure(proxy, name, ports, args, run.cpus.loadgen)
        run.step("lbproxy: HTTP/1.1, gRPC, idle connections")
        lines, extra = lbproxy_extras(run, args, nginx_port, notes) if "lbproxy" in targets \
            and args.extras else ([], [])
        page = Report(
            "HTTP/2: lbproxy, HAProxy, nginx, Caddy",
            [f"`{run.command}` on {now_utc()}: {args.duration:g} s per load with h2load, "
             "proxies pinned alone to one CPU, nginx (fixed ~100-byte answer) and h2load on the "
             "other; HTTP/1.1 keep-alive from every proxy to nginx. CPU µs/req is utime+stime of "
             "the proxy's process tree over the run divided by the answers.", *lines],
            ["proxy", "transport", "load", "rps", "proxy CPU µs/req", "errors"], "lllrrr",
            notes=notes, info=run.info)
        for row in rows:
            page.rows.append([row.target, row.transport, row.load, f"{row.rps:,.0f}",
                              f"{row.cpu_us:.1f}", str(row.errors)])
        page.rows += extra
    page.publish(args.output)


if __name__ == "__main__":
    main()
