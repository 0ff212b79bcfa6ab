"""The HTTP/2 client side (lbproxy/proxy/h2client.py): response heads as HPACK blocks,
read by the independent `hpack` package as a client would."""

from __future__ import annotations

import hpack

from lbproxy.proxy.h2client import H2ClientProtocol
from tests.unit.dataplane import DataPlane, config


def head(length: bytes) -> list[bytes]:
    return [b"Server", b": ", b"nginx", b"\r\n", b"Content-Length", b": ", length, b"\r\n",
            b"Connection", b": ", b"keep-alive", b"\r\n"]


def test_a_repeated_response_head_reuses_its_block_only_while_it_is_valid():
    protocol = H2ClientProtocol(DataPlane(config()).engine.frontends["web"])
    heads = [head(b"5"), head(b"5"), head(b"5"), head(b"6"), head(b"5"), head(b"5")]
    blocks = [protocol.response_block(200, parts) for parts in heads]
    assert blocks[2] is blocks[1] and blocks[1] != blocks[0]   # literals once, then indexes
    client = hpack.Decoder()
    decoded = [[tuple(field) for field in client.decode(block, raw=True)] for block in blocks]
    assert decoded == [[(b":status", b"200"), (b"server", b"nginx"),
                        (b"content-length", parts[6])] for parts in heads]
