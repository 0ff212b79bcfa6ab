"""TLS binds behind an L4 balancer (`accept_proxy` with `tls`): the PROXY header comes
before the TLS handshake, in clear, so it must be read from the raw socket first.

asyncio's TLS servers start the handshake on accept, so these binds accept connections
themselves: each accepted socket is watched until its PROXY header is complete, read with
MSG_PEEK so that not one byte of the ClientHello behind it is consumed, then exactly the
header's bytes are taken and the socket is handed to the C TLS server
(lbproxy/proxy/tls_layer.pyx) where it is built, else to the loop with asyncio's TLS
(`connect_accepted_socket`). The client protocol gets the addresses the header carried.
A socket that sends something else, or nothing within the frontend's `http_request`
timeout, is closed, as a plain bind with `accept_proxy` does.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from lbproxy.proxy.listener import Listener
from lbproxy.proxy.proxy_protocol import (V2_FIXED_LENGTH, V2_MAX_LENGTH, ProxyProtocolError,
                                          parse_proxy_header)
from lbproxy.proxy.state import OUT_OF_FDS

if TYPE_CHECKING:
    from lbproxy.proxy.client import ClientProtocol

PEEK = V2_FIXED_LENGTH + V2_MAX_LENGTH     # enough for any header we accept
ACCEPT_BATCH = 64                          # connections accepted per readiness event
RETRY_AFTER_EMFILE = 0.1                   # seconds before accepting again


class ProxiedTLSListener(Listener):
    """A Listener whose connections carry a PROXY header before their TLS handshake."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)          # type: ignore[arg-type]
        self.accepting_now = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._c_tls(loop)        # its C TLS server adopts the sockets; this class accepts them
        self.accepting_now = True
        loop.add_reader(self.sock.fileno(), self._accept)

    @property
    def accepting(self) -> bool:
        return self.accepting_now

    def pause(self) -> None:
        if self.accepting_now and self.sock.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.accepting_now = False

    def resume(self) -> None:
        if not self.accepting and self.sock.fileno() >= 0:
            self.accepting_now = True
            asyncio.get_running_loop().add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in OUT_OF_FDS:     # let the backlog hold them a moment
                    self.pause()
                    asyncio.get_running_loop().call_later(RETRY_AFTER_EMFILE, self.resume)
                return
            conn.setblocking(False)
            _HeaderReader(conn, self.factory(), self)


class _HeaderReader:
    """One accepted socket until its PROXY header is read."""

    def __init__(self, conn: socket.socket, protocol: ClientProtocol,
                 listener: ProxiedTLSListener) -> None:
        self.conn = conn
        self.protocol = protocol
        self.listener = listener
        self.loop = asyncio.get_running_loop()
        self.timer = self.loop.call_later(protocol.frontend.timeout_http_request, self._give_up)
        self.loop.add_reader(conn.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            peeked = self.conn.recv(PEEK, socket.MSG_PEEK)
            header = parse_proxy_header(peeked) if peeked else None
        except (OSError, ProxyProtocolError):
            self._give_up()
            return
        if not peeked:                   # closed before a header
            self._give_up()
            return
        if header is None:
            if len(peeked) >= PEEK:
                self._give_up()
            return
        self._stop_watching()
        try:
            self.conn.recv(header.consumed)           # the header only, no TLS byte
        except OSError:
            self.conn.close()
            return
        self.protocol.behind_proxy(header)
        protocol, listener, loop = self.protocol, self.listener, self.loop
        if listener.tls_server is not None:
            listener.tls_server.adopt(self.conn.detach(), protocol)
            return
        accepted = loop.connect_accepted_socket(
            lambda: protocol, self.conn, ssl=listener.ssl_context,
            ssl_handshake_timeout=listener.handshake_timeout)
        loop.create_task(accepted).add_done_callback(_handshake_done)

    def _give_up(self) -> None:
        self._stop_watching()
        self.protocol.frontend.rejected += 1
        self.conn.close()

    def _stop_watching(self) -> None:
        self.timer.cancel()
        if self.conn.fileno() >= 0:
            self.loop.remove_reader(self.conn.fileno())


def _handshake_done(task: asyncio.Task) -> None:
    """A failed handshake is the client's problem, as on any TLS bind: not logged."""
    if not task.cancelled():
        task.exception()
