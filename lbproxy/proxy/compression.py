"""Response compression: gzip (zlib), Brotli and Zstandard, streamed as the body arrives.

A frontend's or backend's `compression` becomes a Compression policy. For an exchange it
applies to, the exchange's response sink (what the upstream protocol hands the response
to) is a CompressingSink in front of the downstream: at the head it decides, by the
rules of docs/configuration.md, whether this response is compressed, and if so edits the
head (no Content-Length, Content-Encoding, Vary, a weak ETag) and compresses every body
piece on its way. At each flush (the end of what one read of the server brought) the
compressor is flushed too, so a slow server's partial output reaches the client, and
back-pressure is the downstream's as for any response: nothing is buffered beyond what
the codec holds.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Protocol

import brotli
import zstandard

from lbproxy.config.schema import CompressionConfig
from lbproxy.http.encoding import negotiate
from lbproxy.proxy.downstream import SinkFilter

if TYPE_CHECKING:
    from lbproxy.proxy.downstream import Downstream
    from lbproxy.proxy.exchange import Exchange

DEFAULT_LEVELS = {"gzip": 6, "br": 4, "zstd": 3}
NO_BODY = frozenset({204, 206, 304})      # (206: a range of the identity, never re-coded)


class Codec(Protocol):
    def compress(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...
    def finish(self) -> bytes: ...


class _Gzip:
    __slots__ = ("z",)

    def __init__(self, level: int) -> None:
        self.z = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def compress(self, data: bytes) -> bytes:
        return self.z.compress(data)

    def flush(self) -> bytes:
        return self.z.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self.z.flush(zlib.Z_FINISH)


class _Brotli:
    __slots__ = ("b",)

    def __init__(self, level: int) -> None:
        self.b = brotli.Compressor(quality=level)

    def compress(self, data: bytes) -> bytes:
        return self.b.process(data)

    def flush(self) -> bytes:
        return self.b.flush()

    def finish(self) -> bytes:
        return self.b.finish()


class _Zstd:
    __slots__ = ("z",)

    def __init__(self, level: int) -> None:
        # a ZstdCompressor serves one stream at a time: one per response
        self.z = zstandard.ZstdCompressor(level=level).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self.z.compress(data)

    def flush(self) -> bytes:
        return self.z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self) -> bytes:
        return self.z.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


CODECS: dict[str, type[_Gzip] | type[_Brotli] | type[_Zstd]] = {
    "gzip": _Gzip, "br": _Brotli, "zstd": _Zstd}


class Compression:
    """A `compression` section, ready for requests."""

    def __init__(self, config: CompressionConfig) -> None:
        self.algorithms = config.algorithms
        self.levels = {name: config.level.get(name, DEFAULT_LEVELS[name])
                       for name in config.algorithms}
        self.types = frozenset(t for t in config.types if not t.endswith("/*"))
        self.type_prefixes = tuple(t[:-1] for t in config.types if t.endswith("/*"))
        self.min_size = config.min_size

    def coding_for(self, exchange: Exchange) -> str | None:
        """The coding `exchange`'s client accepts among ours; None: the identity."""
        return negotiate(", ".join(exchange.header_values("accept-encoding")), self.algorithms)

    def variant_of(self, exchange: Exchange) -> bytes:
        """What stands for the request's Accept-Encoding in a cache key."""
        coding = self.coding_for(exchange)
        return b"identity" if coding is None else coding.encode()

    def sink_for(self, exchange: Exchange, inner: Downstream) -> CompressingSink | None:
        """A sink in front of `inner` for `exchange`'s response, None when it can have no
        compressed body (HEAD, an upgrade, a client that forbids transforms)."""
        if (exchange.is_head or exchange.upgrade_b is not None
                or _has_token(exchange.header_values("cache-control"), "no-transform")):
            return None
        return CompressingSink(inner, self, self.coding_for(exchange))

    def wants_type(self, content_type: bytes | None) -> bool:
        if content_type is None:
            return False
        media = content_type.partition(b";")[0].strip().lower().decode("latin-1")
        return media in self.types or media.startswith(self.type_prefixes)


class CompressingSink(SinkFilter):
    """The response sink of an exchange that may be compressed (see the module's text)."""

    __slots__ = ("policy", "coding", "codec")

    def __init__(self, downstream: Downstream, policy: Compression, coding: str | None) -> None:
        SinkFilter.__init__(self, downstream)
        self.policy = policy
        self.coding = coding              # what the client accepts; None: only the identity
        self.codec: Codec | None = None   # set when this response is compressed

    def response_head(self, exchange: Exchange, status: int, headers: list[bytes],
                      length: int, end_stream: bool) -> None:
        if not (end_stream or status < 200 or status in NO_BODY) and self._eligible(headers,
                                                                                   length):
            headers = _with_vary(headers)
            if self.coding is not None:
                headers = _compressed_head(headers, self.coding)
                self.codec = CODECS[self.coding](self.policy.levels[self.coding])
                length = -1
        self.downstream.response_head(exchange, status, headers, length, end_stream)

    def _eligible(self, headers: list[bytes], length: int) -> bool:
        """Compressible by the rules (docs/configuration.md, `compression`), whatever the
        client accepts."""
        if 0 <= length < self.policy.min_size:
            return False
        content_type = None
        for i in range(0, len(headers), 4):
            name = headers[i].lower()
            if name == b"content-encoding":
                return False
            if name == b"cache-control" and b"no-transform" in headers[i + 2].lower():
                return False
            if name == b"content-type":
                content_type = headers[i + 2]
        return self.policy.wants_type(content_type)

    def response_body(self, data: bytes) -> None:
        codec = self.codec
        if codec is None:
            self.downstream.response_body(data)
            return
        out = codec.compress(data)
        if out:
            self.downstream.response_body(out)

    def response_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        codec = self.codec
        if codec is not None:
            self.codec = None
            self.downstream.response_body(codec.finish())
        self.downstream.response_trailers(headers)

    def flush(self, end: bool) -> None:
        codec = self.codec
        if codec is not None:
            out = codec.finish() if end else codec.flush()
            if end:
                self.codec = None
            if out:
                self.downstream.response_body(out)
        self.downstream.flush(end)


def _has_token(values: list[str], token: str) -> bool:
    return any(value.split("=", 1)[0].strip().lower() == token for value in values)


def _with_vary(headers: list[bytes]) -> list[bytes]:
    """`Vary: Accept-Encoding` added (or appended to the Vary there) unless it says so
    already, or says `*`: the response depends on the client's Accept-Encoding."""
    headers = list(headers)
    for i in range(0, len(headers), 4):
        if headers[i].lower() == b"vary":
            value = headers[i + 2]
            names = [name.strip().lower() for name in value.split(b",")]
            if b"accept-encoding" not in names and b"*" not in names:
                headers[i + 2] = value + b", Accept-Encoding"
            return headers
    headers += (b"vary", b": ", b"Accept-Encoding", b"\r\n")
    return headers


def _compressed_head(headers: list[bytes], coding: str) -> list[bytes]:
    """The head of the compressed response: no Content-Length (the length is the codec's),
    Content-Encoding, and a strong ETag made weak (the bytes are not the server's)."""
    out: list[bytes] = []
    for i in range(0, len(headers), 4):
        name = headers[i].lower()
        if name == b"content-length":
            continue
        if name == b"etag" and not headers[i + 2].startswith(b"W/"):
            out += (headers[i], b": ", b"W/" + headers[i + 2], b"\r\n")
            continue
        out += headers[i:i + 4]
    out += (b"content-encoding", b": ", coding.encode(), b"\r\n")
    return out
