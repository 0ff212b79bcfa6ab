"""A floor for bench.tls: lbproxy's event loop and TLS termination answering every request
themselves, with no proxying behind.

It terminates TLS exactly as an lbproxy bind does (the same context from
lbproxy/proxy/tls.py, the same Listener and so the C TLS server of the compiled build) and
answers each request head with a fixed reply of about 100 bytes, closing after it when the request
says `Connection: close`. Set beside lbproxy and HAProxy in bench.tls, it splits lbproxy's
CPU time per TLS connection into what the loop and the layer cost and what its HTTP path
(the client protocol, parsing, routing, the server exchange) adds. Without `--cert` it
answers in clear, on the loop alone.

    python -m bench.tls_responder --port 8443 [--cert cert.pem --key key.pem] [--suites A:B]
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop

from lbproxy.config.schema import TLS13_DEFAULT_SUITES, Address, BindTLSConfig, CertConfig
from lbproxy.proxy.listener import Listener, bind_socket
from lbproxy.proxy.tls import c_termination, server_context

# about the size of the nginx backend's answer, and starting as bench's start check expects
BODY = b"hello from bench.tls_responder: a fixed answer of about one hundred bytes, like nginx's\n"
KEEP_ALIVE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(BODY), BODY)
HANDSHAKE_TIMEOUT = 10.0     # seconds: lbproxy's default http_request timeout


class Responder(asyncio.Protocol):
    """Answers each complete request head (requests without a body, as the loads send)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received += data
        while self.transport is not None and b"\r\n\r\n" in self.received:
            head, _, self.received = self.received.partition(b"\r\n\r\n")
            if b"connection: close" in head.lower():
                self.transport.write(CLOSE)
                self.transport.close()
                self.transport = None
            else:
                self.transport.write(KEEP_ALIVE)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int, cert: str | None, key: str | None, suites: str | None) -> None:
    context = None
    if cert is not None and key is not None:
        if c_termination() is None:
            raise SystemExit("the C TLS layer is not built (compiled build needed)")
        config = BindTLSConfig((CertConfig(cert, key),), alpn=("http/1.1",),
                               ciphersuites=tuple(suites.split(":")) if suites
                               else TLS13_DEFAULT_SUITES)
        context = server_context(config, "tls_responder", f"127.0.0.1:{port}")
    listener = Listener(bind_socket(Address("127.0.0.1", port)), Responder, context,
                        HANDSHAKE_TIMEOUT)
    await listener.start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tls_responder", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--suites", help="TLS 1.3 suites, preferred first (A:B); default lbproxy's")
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.cert, args.key, args.suites))


if __name__ == "__main__":
    main()
