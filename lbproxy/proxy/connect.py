"""Opening a connection to a server, as both kinds of server pool (HTTP/1.1 and HTTP/2) do."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lbproxy.proxy.h2upstream import H2ServerPool
    from lbproxy.proxy.upstream import ServerPool

P = Any   # the protocol `factory` makes


async def connect_to(pool: ServerPool | H2ServerPool, factory: Callable[[], P]) -> P:
    """A connection to `pool`'s server (TCP or Unix socket, with its TLS settings) within
    its connect timeout; OSError, TimeoutError or ValueError when there is none."""
    loop = pool.state.loop
    address = pool.server.address
    if address.unix:
        coro = loop.create_unix_connection(factory, address.unix, ssl=pool.ssl,
                                           server_hostname=pool.server_hostname)
    else:
        coro = loop.create_connection(factory, address.host, address.port, ssl=pool.ssl,
                                      server_hostname=pool.server_hostname)
    _, protocol = await asyncio.wait_for(coro, pool.connect_timeout)
    return protocol
