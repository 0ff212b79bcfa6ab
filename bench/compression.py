"""Compression: lbproxy's gzip, Brotli and Zstandard against nginx `gzip`, CPU per MB and ratio.

An nginx origin (pinned with the load generator) serves `/page.html`, a generated catalogue
page of about 100 KB (deterministic: seeded words, prices, links), with Content-Length.
Each setup runs alone in front of it, pinned to its own CPU as in bench.throughput:

- lbproxy with `compression: {algorithms: [gzip, br, zstd]}` at the default levels (gzip 6,
  br 4, zstd 3): the client's `Accept-Encoding` picks the coding of a run, none the identity;
- lbproxy with `level: {gzip: 1}`;
- nginx with `gzip on; gzip_comp_level 6; gzip_types text/html; gzip_proxied any;`;
- HAProxy with `compression algo gzip` (Debian's HAProxy is built with libslz, a fast
  stateless deflate without levels, instead of zlib).

Every load is `--repeat` runs of `wrk -t1` (or bench.loadgen) with that `Accept-Encoding`, the
run with the median proxy CPU reported. CPU ms/MB is the proxy's CPU per reply over the page's
size (10^6 bytes, uncompressed); compression ms/MB is the same minus that proxy's identity run
(the cost of proxying the page as it is). The ratio comes from one fetch, decoded and
compared with the page.

Then the flush check: each compressing setup in front of a slow origin that sends the first
16 KB of the page, then waits; the client must decode all of that piece before the origin
sends the rest (within 3 s), as a streamed slow response must reach it.

    python -m bench.compression [--quick] [--duration 5] [--repeat 3]

Writes bench/results/compression.md.
"""

from __future__ import annotations

import argparse
import http.client
import random
import socket
import socketserver
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import brotli
import httptools
import zstandard

from bench.harness import (Cpus, Session, add_common_options, free_port, noted, resolve_loadgen, start_checked,
                           start_origin)
from bench.loadgen import Repeated, Variety, run_load, run_repeated
from bench.report import RESULTS, Report, now_utc
from bench.targets import PROXIES, haproxy_command, lbproxy_argv, lbproxy_config, nginx_command

PAGE_PATH = "/page.html"
FIRST_PIECE = 16 * 1024           # what the slow origin sends before it waits
FLUSH_DEADLINE = 3.0
Command = Callable[[Path, int, list[int]], list[str]]    # (workdir, port, servers) -> argv
DECODERS: dict[str, Callable[[], Callable[[bytes], bytes]]] = {
    "identity": lambda: lambda data: data,
    "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress,
    "br": lambda: brotli.Decompressor().process,
    "zstd": lambda: zstandard.ZstdDecompressor().decompressobj().decompress,
}


def catalogue_page(size: int = 100_000, seed: int = 1) -> bytes:
    """An HTML page of about `size` bytes that compresses like a real one: markup repeats,
    names, numbers and descriptions vary."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ber", "dan", "fel", "gor", "hul", "jen",
                 "mar", "nor", "pel", "quin", "ros", "tam", "ul", "wex", "yor", "zan"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(600)]
    rows = []
    head = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Catalogue</title>"
            "<link rel=\"stylesheet\" href=\"/static/site.css\"></head>\n<body><main class=\"catalogue\">\n"
            "<table class=\"products\"><thead><tr><th>SKU</th><th>Name</th><th>Price</th><th>Stock</th>"
            "<th>Description</th></tr></thead><tbody>\n")
    length = len(head)
    while length < size - 40:
        sku = rng.randrange(10**7)
        name = " ".join(rng.choices(words, k=rng.randint(2, 4))).title()
        description = " ".join(rng.choices(words, k=rng.randint(8, 20))).capitalize() + "."
        row = (f"<tr class=\"product\" data-sku=\"{sku}\"><td><a href=\"/products/{sku}\">{sku:07d}</a></td>"
               f"<td class=\"name\">{name}</td><td class=\"price\">{rng.randrange(100, 100000) / 100:.2f}"
               f"</td><td class=\"stock\">{rng.randrange(500)}</td><td class=\"description\">{description}"
               "</td></tr>\n")
        rows.append(row)
        length += len(row)
    return (head + "".join(rows) + "</tbody></table></main></body></html>\n").encode()


def lbproxy_compressing(levels: dict[str, int]) -> Command:
    def command(workdir: Path, port: int, servers: list[int]) -> list[str]:
        compression: dict[str, Any] = {"algorithms": ["gzip", "br", "zstd"], **({"level": levels} if levels else {})}
        return lbproxy_argv(workdir, lbproxy_config(port, servers, frontend={"compression": compression}))
    return command


def nginx_gzip(workdir: Path, port: int, servers: list[int]) -> list[str]:
    return nginx_command(workdir, port, servers, location_extra="      gzip on;\n      gzip_comp_level 6;\n"
                         "      gzip_types text/html;\n      gzip_proxied any;\n      gzip_min_length 1024;\n")


def haproxy_gzip(workdir: Path, port: int, servers: list[int]) -> list[str]:
    return haproxy_command(workdir, port, servers,
                           backend_extra="    compression algo gzip\n    compression type text/html\n")


@dataclass(frozen=True)
class Setup:
    name: str
    proxy: str                # a key of bench.targets.PROXIES
    command: Command
    codings: list[str]        # a run per coding, "identity" first when there (the baseline)


SETUPS = [
    Setup("lbproxy", "lbproxy", lbproxy_compressing({}), ["identity", "gzip", "br", "zstd"]),
    Setup("lbproxy, gzip level 1", "lbproxy", lbproxy_compressing({"gzip": 1}), ["gzip"]),
    Setup("nginx gzip_comp_level 6", "nginx", nginx_gzip, ["identity", "gzip"]),
    Setup("HAProxy compression", "haproxy", haproxy_gzip, ["identity", "gzip"]),
]
LEVELS = {("lbproxy", "gzip"): 6, ("lbproxy", "br"): 4, ("lbproxy", "zstd"): 3,
          ("lbproxy, gzip level 1", "gzip"): 1, ("nginx gzip_comp_level 6", "gzip"): 6}


@dataclass(frozen=True)
class Row:
    setup: Setup
    coding: str
    runs: Repeated
    encoded_bytes: int


@dataclass(frozen=True)
class Flush:
    setup: str
    coding: str
    seconds: float | None      # when the first piece was all decoded; None: not within the deadline
    complete: bool             # the whole body decoded to the page afterwards


@dataclass
class Bench:
    args: argparse.Namespace
    cpus: Cpus
    page: bytes
    workdir: Path
    rows: list[Row]
    flushes: list[Flush]
    notes: list[str]

    def measure(self, setup: Setup, origin_port: int) -> None:
        if why := PROXIES[setup.proxy].missing():
            self.notes.append(f"**{setup.name}** skipped: {why}")
            return
        args = self.args
        with noted(self.notes, setup.name) as stack:
            port = free_port()
            proxy = start_checked(stack, setup.proxy, setup.command(self.workdir, port, [origin_port]),
                                  self.workdir, self.cpus.proxy, port)
            url = f"http://127.0.0.1:{port}{PAGE_PATH}"
            for coding in setup.codings:
                encoded = fetch_encoded(port, PAGE_PATH, coding)
                if DECODERS[coding]()(encoded) != self.page:
                    raise RuntimeError(f"{setup.name}: the {coding} body does not decode to the page")
                variety = Variety(headers=[] if coding == "identity" else [f"Accept-Encoding: {coding}"])
                if args.warmup > 0:
                    run_load(url, args.connections, args.warmup, self.cpus.loadgen, args.loadgen, variety)
                runs = run_repeated(url, args.connections, args.duration, self.cpus.loadgen, args.loadgen, [proxy],
                                    args.repeat, variety)
                self.rows.append(Row(setup, coding, runs, len(encoded)))

    def check_flush(self, setup: Setup, origin: SlowOrigin) -> None:
        if PROXIES[setup.proxy].missing():
            return
        with noted(self.notes, f"{setup.name} (flush check)") as stack:
            port = free_port()
            start_checked(stack, setup.proxy, setup.command(self.workdir, port, [origin.port]), self.workdir,
                          self.cpus.proxy, port)
            for coding in setup.codings:
                if coding != "identity":
                    seconds, complete = origin.check(port, coding)
                    self.flushes.append(Flush(setup.name, coding, seconds, complete))


def fetch_encoded(port: int, path: str, coding: str) -> bytes:
    """The body as sent (chunked framing removed, not decoded), checking its Content-Encoding."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={} if coding == "identity" else {"Accept-Encoding": coding})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    got = response.getheader("Content-Encoding") or "identity"
    if response.status != 200 or got != coding:
        raise RuntimeError(f"GET {path} with Accept-Encoding {coding}: {response.status}, Content-Encoding {got}")
    return body


class SlowOrigin(socketserver.ThreadingTCPServer):
    """Answers `GET /` with a hello (so start_checked passes) and anything else with the page,
    chunked: the first FIRST_PIECE bytes, then nothing until `check` lets it go on."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, page: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _SlowHandler)
        self.page = page
        self.go_on = threading.Event()
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def check(self, proxy_port: int, coding: str) -> tuple[float | None, bool]:
        """Ask the proxy for the page in `coding`: seconds until the first piece was all
        decoded (None: not within FLUSH_DEADLINE), and whether the whole body decoded to it."""
        self.go_on.clear()
        decoded = bytearray()
        decode = DECODERS[coding]()
        done = threading.Event()
        parser = httptools.HttpResponseParser(_Collector(lambda data: decoded.extend(decode(data)), done))
        started = time.monotonic()
        seconds = None
        with socket.create_connection(("127.0.0.1", proxy_port), timeout=FLUSH_DEADLINE) as sock:
            sock.sendall(f"GET {PAGE_PATH} HTTP/1.1\r\nHost: t\r\nAccept-Encoding: {coding}\r\n\r\n".encode())
            try:
                while len(decoded) < FIRST_PIECE and not done.is_set():
                    sock.settimeout(max(0.01, started + FLUSH_DEADLINE - time.monotonic()))
                    parser.feed_data(sock.recv(65536) or b"")
                seconds = time.monotonic() - started if len(decoded) >= FIRST_PIECE else None
            except TimeoutError:
                pass
            self.go_on.set()
            sock.settimeout(10)
            while not done.is_set():
                data = sock.recv(65536)
                if not data:
                    break
                parser.feed_data(data)
        return seconds, bytes(decoded) == self.page


class _Collector:
    """httptools callbacks: body pieces (chunked framing already removed) to `on_body`."""

    def __init__(self, on_body: Callable[[bytes], None], done: threading.Event) -> None:
        self.on_body = on_body
        self.on_message_complete = done.set


class _SlowHandler(socketserver.StreamRequestHandler):
    server: SlowOrigin

    def handle(self) -> None:
        while request_line := self.rfile.readline():
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass                                   # the rest of the head; requests have no body
            if request_line.split()[1] == b"/":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 24\r\n\r\n"
                                 b"hello from a slow origin")
                continue
            page = self.server.page
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + _chunk(page[:FIRST_PIECE]))
            self.wfile.flush()
            self.server.go_on.wait(FLUSH_DEADLINE + 5)
            self.wfile.write(_chunk(page[FIRST_PIECE:]) + b"0\r\n\r\n")
            self.wfile.flush()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def report(bench: Bench, command: str, info: dict[str, str]) -> Report:
    args = bench.args
    tool = "`wrk -t1`" if args.loadgen == "wrk" else "`bench.loadgen` (wrk not installed)"
    megabytes = len(bench.page) / 1e6
    page = Report(
        "Compression: lbproxy gzip, Brotli, Zstandard and nginx gzip",
        [f"`{command}` on {now_utc()}: `GET {PAGE_PATH}` ({len(bench.page):,} bytes of generated HTML) with "
         f"each `Accept-Encoding`, {args.repeat} × {args.duration:g} s of {args.connections} keep-alive connections "
         f"from {tool} after a {args.warmup:g} s warm-up; the run with the median proxy CPU is shown.",
         f"{bench.cpus.describe()} The origin is nginx serving the page with Content-Length (on the load "
         "generator's CPU). CPU ms/MB is utime+stime of the proxy's process tree per reply over the page's "
         "size in 10^6 bytes; compression ms/MB subtracts that proxy's identity run; ratio is the page's size "
         "over the encoded body's."],
        ["setup", "coding", "level", "rps", "p99 ms", "proxy CPU µs/req", "range", "CPU ms/MB",
         "compression ms/MB", "encoded bytes", "ratio", "errors"],
        "lllrrrrrrrrr", notes=bench.notes, info={**info, "zlib": zlib.ZLIB_RUNTIME_VERSION,
                                                  "brotli": brotli.version, "zstandard": zstandard.__version__})
    identity = {row.setup.proxy: row.runs.cpu_us[0] for row in bench.rows if row.coding == "identity"}
    for row in bench.rows:
        cpu = row.runs.cpu_us[0]
        extra = "–" if row.coding == "identity" or row.setup.proxy not in identity else \
            f"{(cpu - identity[row.setup.proxy]) / megabytes / 1e3:.2f}"
        page.rows.append([row.setup.name, row.coding, str(LEVELS.get((row.setup.name, row.coding), "–")),
                          f"{row.runs.load.rps:,.0f}", f"{row.runs.load.p99_ms:.2f}", f"{cpu:.0f}",
                          row.runs.spread(), f"{cpu / megabytes / 1e3:.2f}", extra, f"{row.encoded_bytes:,}",
                          f"{len(bench.page) / row.encoded_bytes:.2f}", str(row.runs.load.errors)])
    flushes = [f"{flush.setup}, {flush.coding}: "
               + (f"first {FIRST_PIECE // 1024} KiB decoded after {flush.seconds * 1e3:.0f} ms"
                  if flush.seconds is not None else f"**not flushed**: the first {FIRST_PIECE // 1024} KiB were "
                  f"not all decodable within {FLUSH_DEADLINE:g} s")
               + ("" if flush.complete else "; **the whole body did not decode to the page**")
               for flush in bench.flushes]
    if flushes:
        page.notes[:0] = ["Flush check (a slow origin sends 16 KiB of the page, then waits until the client "
                          "has decoded it or 3 s passed): " + "; ".join(flushes) + "."]
    return page


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.compression", description=__doc__.split("\n")[0])
    add_common_options(parser, duration=5.0, quick=2.0, output=RESULTS / "compression.md")
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per load (default 3; --quick: 1)")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args(argv)
    args.loadgen = resolve_loadgen(args.loadgen)
    if args.duration <= 2.0 and args.repeat == 3:
        args.repeat = 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    page = catalogue_page()
    with Session.open("bench.compression", argv) as run:
        origin = start_origin(run.stack, run.workdir, {PAGE_PATH.lstrip("/"): page}, run.cpus.backend)
        bench = Bench(args, run.cpus, page, run.workdir, [], [], [])
        for setup in SETUPS:
            run.step(setup.name)
            bench.measure(setup, origin.port)
        slow = SlowOrigin(page)
        try:
            for setup in SETUPS:
                run.step(f"{setup.name}: flush check")
                bench.check_flush(setup, slow)
        finally:
            slow.shutdown()
            slow.server_close()
    report(bench, run.command, run.info).publish(args.output)


if __name__ == "__main__":
    main()
