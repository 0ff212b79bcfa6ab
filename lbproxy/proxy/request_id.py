"""Request ids (`unique_id`) and W3C trace context, given to every request of a frontend.

Each request gets an id from the `format` template (a UUID by default), or keeps the one
its `header` carries when it comes from a trusted peer (forwarded.trusted_proxies): the
id is sent to the server in that header, written in the access log and readable as the
`unique_id` fetch. A valid `traceparent` keeps its trace id and flags and gets the proxy's
own parent id, so the server's spans hang under the proxy's; without one (or with an
invalid one) a trace is started (sampled). `tracestate` passes on unchanged.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from lbproxy.config.schema import UniqueIdConfig
from lbproxy.routing.actions import without

if TYPE_CHECKING:
    from lbproxy.proxy.exchange import Exchange
    from lbproxy.routing.interpolate import Render

TRACEPARENT = b"traceparent"
# version 00 and any later version written the same way (W3C Trace Context §3.2)
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def traceparent(value: bytes | None) -> bytes:
    """The traceparent to send on: `value`'s trace id and flags with a new parent id,
    or a new sampled trace when `value` is missing or invalid."""
    span = os.urandom(8).hex().encode()
    match = _TRACEPARENT.fullmatch(value.strip()) if value is not None else None
    if (match is not None and match[1] != b"ff" and match[2] != b"0" * 32
            and match[3] != b"0" * 16 and (match[1] != b"00" or match[5] is None)):
        return b"00-" + match[2] + b"-" + span + b"-" + match[4]
    return b"00-" + os.urandom(16).hex().encode() + b"-" + span + b"-01"


class RequestIds:
    def __init__(self, config: UniqueIdConfig, render: Render) -> None:
        self.header = config.header.encode("latin-1")
        self.lname = self.header.lower()
        self.render = render

    def assign(self, exchange: Exchange) -> None:
        """Give `exchange` its id and trace context, in its headers for the server."""
        parts = exchange.hparts
        given = exchange.raw_header(self.lname) if exchange.downstream.peer_trusted else None
        value = given if given is not None else self.render(exchange).encode("latin-1")
        exchange.unique_id = value.decode("latin-1")
        parent = traceparent(exchange.raw_header(TRACEPARENT))
        parts = without(without(parts, self.lname), TRACEPARENT)
        parts += (self.header, b": ", value, b"\r\n", TRACEPARENT, b": ", parent, b"\r\n")
        exchange.hparts = parts
