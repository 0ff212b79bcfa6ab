"""Listening sockets, bound by us (not by asyncio) so that they outlive their server.

A Listener serves its socket through an asyncio server built on a `dup()` of it. To
stop accepting (maxconn reached) it closes that server: only the duplicate descriptor
goes away, the kernel socket and its backlog stay, and new clients wait there as with
HAProxy's maxconn. Resuming builds a new server on a new duplicate. The same property
lets a reload keep a socket while it replaces everything else. A TLS bind of the compiled
build is served by the C TLS server instead (lbproxy/proxy/tls_layer.pyx), which accepts
on the socket itself and stops by no longer watching it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from lbproxy.config.schema import Address
from lbproxy.proxy.tls import c_termination

if TYPE_CHECKING:
    from lbproxy.proxy.tls_layer import TLSServer

BACKLOG = 4096   # connections over maxconn wait here


def bind_socket(address: Address, reuse_port: bool = False) -> socket.socket:
    """A non-blocking listening TCP socket for `address` ("" host = all interfaces)."""
    host = address.host or None
    infos = socket.getaddrinfo(host, address.port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and host is not None:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Listener:
    """One bound socket and the asyncio server currently accepting on it."""

    def __init__(self, sock: socket.socket, factory: Callable[[], asyncio.Protocol],
                 ssl_context: ssl.SSLContext | None, handshake_timeout: float) -> None:
        self.sock = sock
        self.factory = factory
        self.ssl_context = ssl_context
        self.server: asyncio.AbstractServer | None = None
        self._resuming: asyncio.Task | None = None
        # the C TLS server of a TLS bind, where it is built (made by start())
        self.tls_server: TLSServer | None = None
        # the TLS handshake's bound, the frontend's http_request timeout (a reload sets it
        # again: asyncio's TLS reads it at start, the C TLS server per connection)
        self.handshake_timeout = handshake_timeout

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._c_tls(loop):
            self.tls_server.start_accepting()
            return
        dup = self.sock.dup()
        try:
            self.server = await loop.create_server(
                self._protocol, sock=dup, backlog=BACKLOG, ssl=self.ssl_context,
                ssl_handshake_timeout=self.handshake_timeout if self.ssl_context else None)
        except BaseException:
            dup.close()
            raise

    def _protocol(self) -> asyncio.Protocol:
        # Looked up per connection, so a reload can hand the socket to a new frontend.
        return self.factory()

    def _c_tls(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether the C TLS server serves this bind (made on first use): TLS in C where
        it is built, else asyncio's (lbproxy/proxy/tls.py). It reads `ssl_context`,
        `factory` and `handshake_timeout` from here for each connection."""
        if self.tls_server is None and self.ssl_context is not None:
            server_class = c_termination()
            if server_class is not None:
                self.tls_server = server_class(loop, self, self.sock)
        return self.tls_server is not None and self.ssl_context is not None

    async def restart(self, ssl_context: ssl.SSLContext | None) -> None:
        """Serve the same socket with another TLS context (reload); the backlog waits."""
        self.pause()
        self.ssl_context = ssl_context
        await self.start()

    @property
    def accepting(self) -> bool:
        return (self.server is not None or self._resuming is not None
                or (self.tls_server is not None and self.tls_server.accepting))

    def pause(self) -> None:
        """Stop accepting; clients queue in the kernel backlog."""
        if self._resuming is not None:
            self._resuming.cancel()
            self._resuming = None
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.tls_server is not None:
            self.tls_server.stop_accepting()

    def resume(self) -> None:
        if not self.accepting and self.sock.fileno() >= 0:
            self._resuming = asyncio.get_running_loop().create_task(self._resume())

    async def _resume(self) -> None:
        try:
            await self.start()
        finally:
            self._resuming = None

    def close(self) -> None:
        self.pause()
        if self.tls_server is not None:
            self.tls_server.close()      # handshakes under way end with the socket
        self.sock.close()
