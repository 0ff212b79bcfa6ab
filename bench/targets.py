"""The proxies a benchmark compares, each with an equivalent generated config.

Equivalent means: one frontend on 127.0.0.1:PORT, round robin over the given servers,
keep-alive to the servers (idle connections kept and reused, no per-connection request
limit on either side), X-Forwarded-For added, no access log, one thread or worker (Caddy:
GOMAXPROCS=1), no request body size limit. `lbproxy-default` is the exception: lbproxy
with nothing but the frontend and backend configured, so with its default JSON access log
on stdout, as a user gets it out of the box.
A target's `command` writes its config into a work directory and returns the argv that
runs it in the foreground; `missing` says why it cannot run here (None when it can).
Given a `Tls`, the frontend terminates TLS with that certificate instead (targets with
`tls=True`). Scenario benchmarks that need more of lbproxy's configuration build it with
`lbproxy_config` and run it with `lbproxy_argv`.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Tls:
    """A certificate for the frontend, as files: separate PEMs, and both in one (HAProxy's `crt`);
    `suites`: the TLS 1.3 cipher suites to prefer ("A:B"), else each target's default order
    (Caddy's cannot be set: Go puts AES-128-GCM first on CPUs with AES instructions)."""

    cert: Path
    key: Path
    bundle: Path
    suites: str | None = None


NO_LIMIT = 1_000_000_000   # requests per keep-alive connection: nginx's default (1000) would reconnect mid-run
IDLE_UPSTREAM = 1024       # idle server connections nginx and Caddy keep: above the 500 clients of a run

Command = Callable[[Path, int, list[int], "Tls | None"], list[str]]   # (workdir, port, server ports, tls) -> argv


@dataclass(frozen=True)
class Target:
    name: str
    missing: Callable[[], str | None]
    command: Command
    tls: bool = False              # whether `command` honours a Tls


def _binary(name: str) -> Callable[[], str | None]:
    return lambda: None if shutil.which(name) else f"`{name}` not installed (apt-get install -y {name})"


def _always() -> None:
    return None


def _servers(template: str, servers: list[int], separator: str = "") -> str:
    """One config line per server: `template` with {i} (1-based) and {port} filled in."""
    return separator.join(template.format(i=i, port=port) for i, port in enumerate(servers, 1))


def _write(workdir: Path, filename: str, text: str) -> str:
    path = workdir / filename
    path.write_text(text)
    return str(path)


def lbproxy_config(port: int, servers: list[int], tls: Tls | None = None, *, balance: str = "roundrobin",
                   frontend: dict[str, Any] | None = None, backend: dict[str, Any] | None = None,
                   global_: dict[str, Any] | None = None) -> dict[str, Any]:
    """The equivalent config as a dict; `frontend`, `backend` and `global_` add or override keys."""
    bind: str | dict[str, Any] = f"127.0.0.1:{port}"
    if tls:
        bind = {"address": bind, "tls": {"certificates": [{"cert": str(tls.cert), "key": str(tls.key)}]}}
        if tls.suites:
            bind["tls"]["ciphersuites"] = tls.suites.split(":")
    return {
        "global": {"log": {"access": "stdout", "format": "off"}, **(global_ or {})},
        "frontends": {"web": {"bind": [bind], "default_backend": "app", **(frontend or {})}},
        "backends": {"app": {"balance": balance, **(backend or {}), "servers": [
            {"name": f"app{i}", "address": f"127.0.0.1:{server}"} for i, server in enumerate(servers, 1)]}},
    }


def lbproxy_argv(workdir: Path, config: dict[str, Any], filename: str = "lbproxy.yaml") -> list[str]:
    """Write `config` into `workdir` and return the argv that runs lbproxy on it."""
    return [sys.executable, "-m", "lbproxy", "run", "-c", _write(workdir, filename, yaml.safe_dump(config))]


def lbproxy_command(workdir: Path, port: int, servers: list[int], tls: Tls | None = None) -> list[str]:
    return lbproxy_argv(workdir, lbproxy_config(port, servers, tls))


def lbproxy_default_command(workdir: Path, port: int, servers: list[int], tls: Tls | None = None) -> list[str]:
    """lbproxy_command without `global.log`: the default access log (one JSON line per request on
    stdout, which the benchmark's Proc sends to a file)."""
    config = lbproxy_config(port, servers, tls)
    del config["global"]["log"]
    return lbproxy_argv(workdir, config, "lbproxy-default.yaml")


HAPROXY_DEFAULTS = ("    mode http\n    option http-keep-alive\n    option forwardfor\n    http-reuse always\n"
                    "    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n")


def haproxy_argv(workdir: Path, filename: str, sections: str, defaults: str = HAPROXY_DEFAULTS) -> list[str]:
    """HAProxy in the foreground on `filename`: one thread, the `defaults` section's lines, then
    `sections` (frontends, backends, caches)."""
    config = _write(workdir, filename, "global\n    nbthread 1\n    maxconn 9000\n"
                    f"defaults\n{defaults}{sections}")
    return ["haproxy", "-db", "-f", config]


def haproxy_command(workdir: Path, port: int, servers: list[int], tls: Tls | None = None, *,
                    sections: str = "", backend_extra: str = "") -> list[str]:
    """`sections`: more top-level sections (e.g. a `cache`); `backend_extra`: lines for the backend."""
    listed = _servers("    server app{i} 127.0.0.1:{port}\n", servers)
    ssl = f" ssl crt {tls.bundle} alpn http/1.1" if tls else ""
    if tls and tls.suites:
        ssl += f" ciphersuites {tls.suites}"
    return haproxy_argv(workdir, "haproxy.cfg", sections +
                        f"frontend web\n    bind 127.0.0.1:{port}{ssl}\n    default_backend app\n"
                        f"backend app\n    balance roundrobin\n{backend_extra}{listed}")


def nginx_argv(workdir: Path, name: str, http: str, connections: int = 12000, errors: str = "warn") -> list[str]:
    """nginx in the foreground on `{name}.conf`: one worker, no access log, the error log at
    level `errors` on stderr, its pid and temp files in `workdir` (prefixed `name`), and the
    `http` block's contents."""
    temp_paths = "".join(f"  {kind}_temp_path {workdir}/{name}-{kind};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # as root nginx's worker would drop to `nobody` and lose access to the private work dir
    user = "user root;\n" if os.geteuid() == 0 else ""
    config = _write(
        workdir, f"{name}.conf",
        f"{user}daemon off;\nworker_processes 1;\npid {workdir}/{name}.pid;\nerror_log stderr {errors};\n"
        f"worker_rlimit_nofile {2 * connections};\nevents {{ worker_connections {connections}; }}\n"
        "http {\n  access_log off;\n  client_max_body_size 0;\n" + temp_paths + http + "}\n")
    return ["nginx", "-e", "stderr", "-p", str(workdir), "-c", config]


def nginx_command(workdir: Path, port: int, servers: list[int], tls: Tls | None = None, *,
                  http_extra: str = "", location_extra: str = "") -> list[str]:
    """`http_extra`: lines for the http block (e.g. a `proxy_cache_path`); `location_extra`:
    for the proxying location (e.g. `gzip on;`)."""
    listed = _servers("    server 127.0.0.1:{port};\n", servers)
    # TLS 1.3 as the other proxies speak it (nginx 1.22's default stops at 1.2, whose
    # session resumption skips the key exchange that 1.3's makes: not like for like)
    ssl = (f"    ssl_certificate {tls.cert};\n    ssl_certificate_key {tls.key};\n"
           "    ssl_protocols TLSv1.2 TLSv1.3;\n") if tls else ""
    if tls and tls.suites:
        ssl += f"    ssl_conf_command Ciphersuites {tls.suites};\n"
    return nginx_argv(
        workdir, "nginx",
        http_extra + f"  upstream app {{\n{listed}    keepalive {IDLE_UPSTREAM};\n"
        f"    keepalive_requests {NO_LIMIT};\n  }}\n"
        f"  server {{\n    listen 127.0.0.1:{port}{' ssl' if tls else ''};\n{ssl}"
        f"    keepalive_requests {NO_LIMIT};\n"
        "    location / {\n      proxy_pass http://app;\n      proxy_http_version 1.1;\n"
        '      proxy_set_header Connection "";\n      proxy_set_header Host $http_host;\n'
        "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n" + location_extra +
        "    }\n  }\n")


def caddy_argv(workdir: Path, sites: str, protocols: str = "h1 h2", filename: str = "Caddyfile") -> list[str]:
    """Caddy on one OS thread for Go code (GOMAXPROCS=1) serving `sites` (Caddyfile site blocks):
    listening on 127.0.0.1 only, no admin endpoint, no automatic HTTPS, no HTTP/3 unless
    `protocols` names it."""
    config = _write(workdir, filename, "{\n  admin off\n  auto_https off\n  default_bind 127.0.0.1\n"
                    f"  servers {{\n    protocols {protocols}\n  }}\n}}\n{sites}")
    return ["env", "GOMAXPROCS=1", f"HOME={workdir}", "caddy", "run", "--config", config, "--adapter", "caddyfile"]


def caddy_command(workdir: Path, port: int, servers: list[int], tls: Tls | None = None) -> list[str]:
    """reverse_proxy adds X-Forwarded-For by itself; its idle pool per server is raised from 32."""
    listed = _servers(" 127.0.0.1:{port}", servers)
    site = f"https://127.0.0.1:{port} {{\n  tls {tls.cert} {tls.key}\n" if tls else f"http://127.0.0.1:{port} {{\n"
    return caddy_argv(workdir, site + f"  reverse_proxy{listed} {{\n    lb_policy round_robin\n"
                      f"    transport http {{\n      keepalive_idle_conns_per_host {IDLE_UPSTREAM}\n    }}\n"
                      "  }\n}\n")


def naive_command(workdir: Path, port: int, servers: list[int], tls: Tls | None = None) -> list[str]:
    """It has no balancing: it forwards to the first server."""
    return [sys.executable, "-m", "bench.naive_aiohttp_proxy", "--port", str(port),
            "--upstream", f"http://127.0.0.1:{servers[0]}"]


def _tls_layer() -> str | None:
    from lbproxy.proxy.tls import c_termination
    return None if c_termination() is not None else "lbproxy's C TLS layer is not built (pip install -e .)"


def responder_command(workdir: Path, port: int, servers: list[int], tls: Tls | None = None) -> list[str]:
    """Not a proxy: lbproxy's loop and TLS layer answering by themselves (bench/tls_responder.py)."""
    argv = [sys.executable, "-m", "bench.tls_responder", "--port", str(port)]
    if tls:
        argv += ["--cert", str(tls.cert), "--key", str(tls.key)]
        if tls.suites:
            argv += ["--suites", tls.suites]
    return argv


PROXIES: dict[str, Target] = {
    "lbproxy": Target("lbproxy", _always, lbproxy_command, tls=True),
    "lbproxy-default": Target("lbproxy-default", _always, lbproxy_default_command, tls=True),
    "haproxy": Target("haproxy", _binary("haproxy"), haproxy_command, tls=True),
    "nginx": Target("nginx", _binary("nginx"), nginx_command, tls=True),
    "caddy": Target("caddy", _binary("caddy"), caddy_command, tls=True),
    "naive-aiohttp": Target("naive-aiohttp", _always, naive_command),
}
# Not a proxy, a floor for bench.tls: lbproxy's loop and TLS layer answering by themselves.
TLS_RESPONDER = Target("tls-responder", _tls_layer, responder_command, tls=True)


def nginx_backend_argv(workdir: Path, port: int, sizes: Sequence[int] = ()) -> list[str]:
    """nginx as a fast backend: a fixed ~100-byte 200 for every request (whatever its method),
    keep-alive without a request limit, so that a proxy in front of it, not the backend, is
    what is measured. For each of `sizes`, `GET /bytes/N` answers N bytes from a file
    (sendfile, Content-Length). `POST /upload` reads the whole body before it answers (nginx
    proxies it, buffered in memory, to its own `/`): a `return` answers at once and drops the
    body as it comes, an early answer after which a proxy may drop the connection instead
    of carrying the rest of the upload."""
    files = workdir / "backend-bytes"
    files.mkdir(exist_ok=True)
    for size in sizes:
        (files / str(size)).write_bytes(b"x" * size)
    return nginx_argv(
        workdir, "nginx-backend",
        f"  sendfile on;\n  server {{\n    listen 127.0.0.1:{port};\n    keepalive_requests {NO_LIMIT};\n"
        f"    location /bytes/ {{ alias {files}/; }}\n"
        "    location = /upload { client_max_body_size 0; client_body_buffer_size 16m;\n"
        f"      proxy_pass http://127.0.0.1:{port}/; }}\n"
        '    location / { return 200 "hello from nginx: a fixed answer of about one hundred '
        'bytes, so that the proxy is measured\\n"; }\n  }\n', connections=20000)


def nginx_origin_argv(workdir: Path, port: int, root: Path, max_age: int = 3600) -> list[str]:
    """nginx as a fast origin of the files in `root` (.html, .json, .bin), each with
    `Cache-Control: max-age=MAX_AGE`, an ETag and Last-Modified, keep-alive without a request
    limit. `GET /_status` (stub_status) counts the requests it has served."""
    return nginx_argv(
        workdir, "nginx-origin",
        "  types { text/html html; application/json json; application/octet-stream bin; }\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n    keepalive_requests 1000000000;\n"
        f"    root {root};\n    expires {max_age}s;\n"
        "    location = /_status { stub_status; expires off; }\n  }\n")
