"""Instructions per request: what lbproxy's process executes for one proxied request.

CPU time per request moves with whatever else the machine runs; the number of instructions
does not. This runs lbproxy under valgrind's callgrind in front of the fast nginx backend,
warms it up, zeroes the counters, sends a fixed number of keep-alive requests from
`connections` concurrent clients (or, with `--close`, each on a new connection; with
`--tls`, over TLS, resuming sessions as wrk does), and divides the instructions counted
(user space only: the interpreter, uvloop, httptools; not the kernel) by the requests.
`--haproxy` counts HAProxy the same way, for comparison. Use it to compare two versions of
the hot path on a busy machine; use bench.throughput for what a user sees.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from bench.harness import Proc, free_port, start_nginx_backend
from bench.targets import haproxy_command, lbproxy_argv, lbproxy_config
from bench.tls import client_context, make_certificate, one_shot

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
# What a browser sends for a page: 14 headers.
BROWSER = (b"GET /index.html?lang=en HTTP/1.1\r\nHost: www.example.com\r\nConnection: keep-alive\r\n"
           b"Cache-Control: max-age=0\r\nsec-ch-ua: \"Chromium\";v=\"131\"\r\nsec-ch-ua-mobile: ?0\r\n"
           b"Upgrade-Insecure-Requests: 1\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
           b"(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\nAccept: text/html,application/xhtml+xml,"
           b"application/xml;q=0.9,*/*;q=0.8\r\nSec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\n"
           b"Sec-Fetch-Dest: document\r\nAccept-Encoding: gzip, deflate, br\r\n"
           b"Accept-Language: en-US,en;q=0.9\r\nCookie: session=4f2a9c1e7b; theme=dark\r\n\r\n")
START_TIMEOUT = 180.0     # imports under valgrind take a while


async def _client(port: int, count: int, request: bytes, tls: ssl.SSLContext | None) -> None:
    """`count` requests one after another on one keep-alive connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls,
                                                   server_hostname="localhost" if tls else None)
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head[:60]!r}")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
    finally:
        writer.close()


async def load(port: int, connections: int, requests: int, request: bytes = REQUEST,
               tls: ssl.SSLContext | None = None) -> None:
    per_client = max(1, requests // connections)
    await asyncio.gather(*(_client(port, per_client, request, tls) for _ in range(connections)))


def _one_shot_client(port: int, count: int, request: bytes, tls: ssl.SSLContext | None) -> None:
    """`count` requests one after another, each on a new connection that the proxy closes
    (`request` says `Connection: close`); over TLS each offers the previous session."""
    session = None
    for _ in range(count):
        reply = one_shot(port, request, tls, session)
        if not reply.answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {reply.answer[:60]!r}")
        session = reply.session


def load_one_shot(port: int, connections: int, requests: int, request: bytes,
                  tls: ssl.SSLContext | None) -> None:
    per_client = max(1, requests // connections)
    with ThreadPoolExecutor(connections) as pool:
        for done in [pool.submit(_one_shot_client, port, per_client, request, tls)
                     for _ in range(connections)]:
            done.result()


def _callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def _total_instructions(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def h2load(port: int, connections: int, streams: int, requests: int) -> None:
    """`requests` over HTTP/2 (h2c) from `connections` connections of `streams` streams."""
    done = subprocess.run(["h2load", "-n", str(requests), "-c", str(connections), "-m",
                           str(streams), f"http://127.0.0.1:{port}/"],
                          check=True, capture_output=True, text=True, timeout=600)
    if f"{requests} succeeded" not in done.stdout:
        raise RuntimeError(f"h2load did not get every answer:\n{done.stdout}")


def driver(config: dict, port: int, connections: int, request: bytes = REQUEST, h2_streams: int = 0,
           close: bool = False, tls: ssl.SSLContext | None = None) -> Callable[[int], None]:
    """What sends `count` requests to lbproxy on `port` (its frontend "web" in `config`, whose
    bind becomes h2c for HTTP/2): keep-alive HTTP/1.1 from `connections` clients, each
    request on a new connection (`close`), over TLS (`tls`), or h2load's `h2_streams`
    streams per connection."""
    if h2_streams:
        config["frontends"]["web"]["bind"] = [{"address": f"127.0.0.1:{port}", "h2c": True}]
        return lambda count: h2load(port, connections, h2_streams, count)
    if close:
        one_shot_request = request[:-2] + b"Connection: close\r\n\r\n"
        return lambda count: load_one_shot(port, connections, count, one_shot_request, tls)
    return lambda count: asyncio.run(load(port, connections, count, request, tls))


def requests_sent(requests: int, connections: int, h2_streams: int = 0) -> int:
    """What `driver` sends for `requests`: h2load all of them, the clients whole shares."""
    return requests if h2_streams else (requests // connections) * connections


def measure(workdir: Path, config_changes: dict, connections: int, requests: int, warmup: int,
            keep: Path | None = None, request: bytes = REQUEST, h2_streams: int = 0,
            close: bool = False, tls: bool = False, haproxy: bool = False) -> float:
    """Instructions per request for lbproxy with `config_changes` (keys of lbproxy_config);
    `keep`: where to copy the counts, for callgrind_annotate; `h2_streams`: HTTP/2 (h2c,
    with h2load's requests) with this many streams per connection instead of HTTP/1.1;
    `close`: each request on a new connection; `tls`: TLS to the proxy; `haproxy`: HAProxy
    (bench.throughput's configuration) instead of lbproxy, for comparison."""
    with ExitStack() as stack:
        backend = start_nginx_backend(stack, workdir, None)
        port = free_port()
        certificate = make_certificate(workdir, "ec256") if tls else None
        config = lbproxy_config(port, [backend.port], certificate, **config_changes)
        run = driver(config, port, connections, request, h2_streams, close,
                     client_context() if tls else None)
        out = workdir / "callgrind.out"
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p",
                *(haproxy_command(workdir, port, [backend.port], certificate) if haproxy
                  else lbproxy_argv(workdir, config))]
        proxy = stack.enter_context(Proc("haproxy" if haproxy else "lbproxy", argv, workdir))
        proxy.wait_for_port(port, START_TIMEOUT)
        run(warmup)
        for old in workdir.glob("callgrind.out.*"):
            old.unlink()
        _callgrind_control("-z", str(proxy.pid))
        run(requests)
        _callgrind_control("-d", str(proxy.pid))
        deadline = time.monotonic() + 30
        while not (dumps := list(workdir.glob("callgrind.out.*"))) and time.monotonic() < deadline:
            time.sleep(0.2)
        if keep is not None and dumps:
            shutil.copy(dumps[0], keep)
        sent = requests_sent(requests, connections, h2_streams)
        return sum(_total_instructions(dump) for dump in dumps) / sent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--requests", type=int, default=5000, help="measured requests (default 5000)")
    parser.add_argument("--warmup", type=int, default=1000, help="requests before counting (default 1000)")
    parser.add_argument("--log", choices=["off", "json", "clf"], default="off",
                        help="access log format (to a file), default off")
    parser.add_argument("--keep", type=Path, help="copy callgrind's counts here (for callgrind_annotate)")
    parser.add_argument("--browser", action="store_true",
                        help="send a browser's request (14 headers) instead of a 3-header one")
    parser.add_argument("--h2", type=int, default=0, metavar="STREAMS",
                        help="HTTP/2 (h2c, h2load's request) with STREAMS streams per connection")
    parser.add_argument("--close", action="store_true",
                        help="each request on a new connection (Connection: close)")
    parser.add_argument("--tls", action="store_true",
                        help="TLS to the proxy (ECDSA P-256); with --close a handshake per request, "
                             "resuming the previous session as wrk does")
    parser.add_argument("--haproxy", action="store_true",
                        help="count HAProxy instead (bench.throughput's configuration), for comparison")
    args = parser.parse_args(argv)
    if args.h2 and (args.close or args.tls):
        sys.exit("--h2 is h2c on keep-alive connections: not with --close or --tls")
    if args.haproxy and (args.h2 or args.log != "off"):
        sys.exit("--haproxy measures HTTP/1.1 with no access log: not with --h2 or --log")
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install -y valgrind)")
    if args.h2 and not shutil.which("h2load"):
        sys.exit("h2load is not installed (apt-get install -y nghttp2-client)")
    with tempfile.TemporaryDirectory(prefix="lbproxy-instr-") as tmp:
        workdir = Path(tmp)
        log = {"access": str(workdir / "access.log"), "format": args.log}
        per_request = measure(workdir, {"global_": {"log": log}}, args.connections, args.requests, args.warmup,
                              args.keep, BROWSER if args.browser else REQUEST, args.h2, args.close,
                              args.tls, args.haproxy)
    sent = (f"HTTP/2 x {args.h2} streams (h2load's request)" if args.h2 else
            f"{'browser' if args.browser else '3-header'} requests"
            f"{' over TLS' if args.tls else ''}{', each on a new connection' if args.close else ''}")
    print(f"{'haproxy' if args.haproxy else f'lbproxy, access log {args.log}'}, {sent}, "
          f"{args.connections} connections: "
          f"{per_request:,.0f} instructions per request")


if __name__ == "__main__":
    main()
