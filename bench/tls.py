"""TLS termination: handshakes per second and keep-alive rps over TLS, lbproxy against HAProxy, nginx and Caddy.

Every target terminates TLS with the same throwaway self-signed certificate (made here
with `cryptography`: ECDSA P-256 by default, `--key rsa2048` for the still common RSA) and
proxies in plain HTTP to nginx (bench.throughput's fast backend). Two loads per target,
both `wrk -t1` (or the built-in client) on the backend's CPU while the proxy has its own
(bench.throughput's layout), each a warm-up then `--runs` runs:

- handshakes: `Connection: close` on every request, so each one is a new TCP connection
  and TLS handshake; rps = handshakes/s. wrk keeps each connection's TLS session and
  offers it again, so every handshake after a connection's first resumes where the target
  issues tickets (all four do): TLS 1.3 resumption still makes an ECDHE key exchange, a
  TLS 1.2 one does not, so nginx is told to speak TLS 1.3 as the others do. Before the
  loads, two connections from Python's ssl check what each target negotiates (version,
  cipher suite) and whether it resumes; the notes say. Each target keeps its own TLS 1.3
  suite order unless `--suites` gives one to all (all but Caddy, whose order is Go's);
- keep-alive: the handshakes happen once, then requests reuse the connections; rps
  and CPU/request show the cost of record encryption on top of proxying.

A fifth target, `tls-responder` (bench/tls_responder.py), is not a proxy: lbproxy's loop
and TLS layer answering each request themselves, the floor under lbproxy's figures.

    python -m bench.tls [--quick] [--duration 5] [--runs 3] [--rounds 1] [--connections 50] [--key ec256|rsa2048]
                        [--suites TLS_AES_128_GCM_SHA256] [--targets lbproxy,haproxy,nginx,caddy,tls-responder]

Writes bench/results/tls.md and tls.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from bench import throughput
from bench.harness import (Proc, Session, add_common_options, choose, package_version, resolve_loadgen,
                           start_nginx_backend)
from bench.loadgen import Variety
from bench.report import RESULTS, Report, now_utc
from bench.targets import PROXIES, TLS_RESPONDER, Tls

KNOWN = {**{name: target for name, target in PROXIES.items() if target.tls},
         TLS_RESPONDER.name: TLS_RESPONDER}
CHOICES = list(KNOWN)
TARGETS = ["lbproxy", "haproxy", "nginx", "caddy", TLS_RESPONDER.name]
LOADS = {"handshakes (Connection: close)": Variety(close=True), "keep-alive": Variety()}
KEYS = ("ec256", "rsa2048")


def make_certificate(directory: Path, key_type: str) -> Tls:
    """A self-signed certificate for localhost and 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1()) if key_type == "ec256" else rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256()))
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    tls = Tls(directory / "cert.pem", directory / "key.pem", directory / "bundle.pem")
    tls.cert.write_bytes(cert_pem)
    tls.key.write_bytes(key_pem)
    tls.bundle.write_bytes(cert_pem + key_pem)
    return tls


class Bench(throughput.Bench):
    """bench.throughput's per-target start, over TLS (`tls` set), measuring `LOADS` instead."""

    def measure_target(self, name: str, port: int, proxy: Proc | None) -> None:
        self.notes.append(f"**{name}**: {session_probe(port)}")
        for load_name, variety in LOADS.items():
            self.measure_load(name, load_name, self.url(port), self.connections[0], proxy, variety)


def client_context() -> ssl.SSLContext:
    """A client context that takes the bench's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class OneShot:
    """A request on a connection of its own, read to the end (the server closes)."""
    answer: bytes
    version: str | None = None               # over TLS: what was negotiated
    cipher: str | None = None
    resumed: bool = False                    # the offered session was taken
    session: ssl.SSLSession | None = None    # to offer on the next connection


def one_shot(port: int, request: bytes, context: ssl.SSLContext | None = None,
             session: ssl.SSLSession | None = None) -> OneShot:
    """`request` (which says `Connection: close`) on a new connection, over TLS with
    `context`, offering `session` as wrk does on each reconnection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
            (raw if context is None else context.wrap_socket(
                raw, server_hostname="localhost", session=session)) as conn:
        conn.sendall(request)
        answer = b""
        try:
            while chunk := conn.recv(65536):  # to the end: TLS 1.3 tickets follow the handshake
                answer += chunk
        except ssl.SSLEOFError:               # closed without close_notify
            pass
        if context is None:
            return OneShot(answer)
        return OneShot(answer, conn.version(), conn.cipher()[0], conn.session_reused, conn.session)


def session_probe(port: int) -> str:
    """What a client gets: the TLS version, and whether a second connection that offers
    the first one's session resumes it."""
    request = b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    context = client_context()                 # a session is offered within its context
    first = one_shot(port, request, context)
    second = one_shot(port, request, context, first.session)
    return (f"{second.version}, {second.cipher}, "
            f"{'resumes sessions' if second.resumed else 'does not resume sessions'}")


def report(bench: Bench, args: argparse.Namespace, command: str, info: dict[str, str]) -> Report:
    key = "ECDSA P-256" if args.key == "ec256" else "RSA 2048"
    page = Report(
        "TLS termination: handshakes and keep-alive",
        [f"`{command}` on {now_utc()}: {args.connections} connections to `https://127.0.0.1:PORT/`, one "
         f"self-signed {key} certificate for every target, plain HTTP keep-alive to nginx. Handshakes: "
         "`Connection: close` on every request, so rps = TLS handshakes per second; wrk offers each "
         "connection's previous session again, so they are resumptions where a target allows it (notes "
         "below; TLS 1.3 resumption still makes an ECDHE key exchange). TLS 1.3 cipher suites: "
         + (f"`{args.suites}` preferred by every target but Caddy (Go's order cannot be set)" if args.suites
            else "each target's own order (the notes say which suite a client with OpenSSL's default order "
                 "gets)") + ".", bench.describe()],
        ["target", "load", "rps", "p50 ms", "p99 ms", "CPU µs/req", "min–max", "× HAProxy", "errors"],
        "llrrrrrrr", notes=bench.notes, info={**info, "cryptography": package_version("cryptography")})
    for row in bench.rows:
        page.rows.append([row.target, row.load, *bench.figures(row), str(row.measured.errors)])
    return page


def plot(bench: Bench) -> Any:
    def draw(pyplot: Any) -> Any:
        targets = list(dict.fromkeys(row.target for row in bench.rows))
        figure, axes = pyplot.subplots(1, len(LOADS), figsize=(10, 4))
        for load_axes, load_name in zip(axes, LOADS):
            rows = {row.target: row for row in bench.rows if row.load == load_name}
            load_axes.bar(targets, [rows[t].measured.rps.median if t in rows else 0.0 for t in targets],
                          color="tab:green")
            load_axes.set_title(load_name)
            load_axes.set_ylabel("requests per second")
        figure.suptitle("TLS termination")
        return figure
    return draw


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.tls", description=__doc__.split("\n")[0])
    add_common_options(parser, duration=5.0, quick=2.0, output=RESULTS / "tls.md", warmup=2.0, runs=3)
    throughput.add_rounds_option(parser)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--key", choices=KEYS, default="ec256", help="certificate key type (default ec256)")
    parser.add_argument("--suites", help="TLS 1.3 cipher suites every target prefers (A:B); default: each "
                        "target's own order (lbproxy and Caddy AES-128-GCM first, HAProxy and nginx AES-256)")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated from {','.join(CHOICES)}")
    args = parser.parse_args(argv)
    args.targets = choose(parser, args.targets, CHOICES, "target")
    args.loadgen = resolve_loadgen(args.loadgen)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with Session.open("bench.tls", argv) as run:
        backend = start_nginx_backend(run.stack, run.workdir, run.cpus.backend)
        tls = dataclasses.replace(make_certificate(run.workdir, args.key), suites=args.suites)
        bench = Bench(throughput.schedule(args, run.cpus), [args.connections], run.cpus, backend, run.workdir, tls,
                      rounds=args.rounds, known=KNOWN)
        bench.run_rounds(run, args.targets)
    report(bench, args, run.command, run.info).publish(args.output, plot(bench))


if __name__ == "__main__":
    main()
