"""HPACK (RFC 7541): header compression for HTTP/2, decoder and encoder.

Written for the proxy's hot path: headers stay bytes, an indexed field costs a table
lookup, a dynamic-table index resolves without copying the table. Huffman-coded strings
are decoded by the `hpack` package's table-driven decoder, behind a cache: paths, hosts
and user agents repeat across connections. The encoder sends literals raw (no Huffman:
cheaper than the bytes it would save on a local network) and indexes what repeats.

Decoding keeps the dynamic table in step even for a header list it refuses, and stops
with HPACKError (a COMPRESSION_ERROR) on malformed input or HeaderListTooLarge when the
decoded list outgrows a hard bound (an HPACK bomb: small input, huge output).
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

STATIC: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE
STATIC_LEN = len(STATIC)
ENTRY_OVERHEAD = 32                 # RFC 7541 §4.1
DEFAULT_TABLE_SIZE = 4096
MAX_INTEGER = 1 << 31               # no header length or index legitimately needs more

Header = tuple[bytes, bytes]


class HPACKError(Exception):
    """Malformed header block: a connection error COMPRESSION_ERROR."""


class HeaderListTooLarge(Exception):
    """The decoded list passed the hard bound: decoding stopped (the connection ends)."""


@lru_cache(maxsize=4096)
def _huffman(data: bytes) -> bytes:
    try:
        return decode_huffman(data)
    except Exception as exc:          # the package raises its own HPACKDecodingError
        raise HPACKError(f"invalid Huffman string: {exc}") from None


class DynamicTable:
    """Entries newest first; `size` counts name + value + 32 per entry (RFC 7541 §4.1)."""

    __slots__ = ("entries", "size", "max_size")

    def __init__(self, max_size: int) -> None:
        self.entries: deque[Header] = deque()
        self.size = 0
        self.max_size = max_size

    def add(self, name: bytes, value: bytes) -> None:
        entry_size = len(name) + len(value) + ENTRY_OVERHEAD
        entries = self.entries
        if entry_size > self.max_size:      # RFC 7541 §4.4: empties the table
            entries.clear()
            self.size = 0
            return
        self.size += entry_size
        while self.size > self.max_size:
            old_name, old_value = entries.pop()
            self.size -= len(old_name) + len(old_value) + ENTRY_OVERHEAD
        entries.appendleft((name, value))

    def resize(self, max_size: int) -> None:
        self.max_size = max_size
        entries = self.entries
        while self.size > max_size:
            old_name, old_value = entries.pop()
            self.size -= len(old_name) + len(old_value) + ENTRY_OVERHEAD


class Decoder:
    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE) -> None:
        self.table = DynamicTable(max_table_size)
        self.max_allowed = max_table_size       # our SETTINGS_HEADER_TABLE_SIZE
        # The last block that left the table as it was, and what it decoded to: a client
        # repeats the same block (all fields indexed) for requests that look alike.
        self.last_block: bytes | None = None
        self.last: tuple[list[Header], int] = ([], 0)

    def decode(self, block: bytes, hard_limit: int) -> tuple[list[Header], int]:
        """The header list of `block` and its size (RFC 9113 §6.5.2 counting). The list
        may be the one an identical earlier block gave: callers do not change it."""
        if block == self.last_block:
            return self.last
        self.last_block = None
        changed = False
        headers: list[Header] = []
        size = 0
        table = self.table
        entries = table.entries
        end = len(block)
        i = 0
        while i < end:
            byte = block[i]
            if byte & 0x80:                         # indexed field
                index = byte & 0x7F
                if index < 0x7F:                    # the common, one-byte case inline
                    i += 1
                    if 0 < index <= STATIC_LEN:
                        header = STATIC[index - 1]
                    elif STATIC_LEN < index <= STATIC_LEN + len(entries):
                        header = entries[index - STATIC_LEN - 1]
                    else:
                        raise HPACKError("header index out of range")
                else:
                    index, i = _integer(block, i, 7)
                    header = self._lookup(index, entries)
            elif byte & 0x40:                       # literal, incremental indexing
                header, i = self._literal(block, i, 6, entries)
                table.add(*header)
                changed = True
            elif byte & 0x20:                       # dynamic table size update
                if headers:
                    raise HPACKError("table size update after a field")
                new_size, i = _integer(block, i, 5)
                if new_size > self.max_allowed:
                    raise HPACKError("table size update above the allowed size")
                table.resize(new_size)
                changed = True
                continue
            else:                                   # literal without / never indexed
                header, i = self._literal(block, i, 4, entries)
            headers.append(header)
            size += len(header[0]) + len(header[1]) + ENTRY_OVERHEAD
            if size > hard_limit:
                raise HeaderListTooLarge(f"header list over {hard_limit} bytes")
        if not changed:
            self.last_block = block
            self.last = (headers, size)
        return headers, size

    @staticmethod
    def _lookup(index: int, entries: deque[Header]) -> Header:
        if 0 < index <= STATIC_LEN:
            return STATIC[index - 1]
        index -= STATIC_LEN + 1
        if index < 0 or index >= len(entries):
            raise HPACKError("header index out of range")
        return entries[index]

    def _literal(self, block: bytes, i: int, prefix: int,
                 entries: deque[Header]) -> tuple[Header, int]:
        index, i = _integer(block, i, prefix)
        if index:
            name = self._lookup(index, entries)[0]
        else:
            name, i = _string(block, i)
        value, i = _string(block, i)
        return (name, value), i


def _integer(data: bytes, i: int, prefix: int) -> tuple[int, int]:
    """RFC 7541 §5.1: an integer with an N-bit prefix at data[i]; returns (value, next)."""
    mask = (1 << prefix) - 1
    value = data[i] & mask
    i += 1
    if value < mask:
        return value, i
    shift = 0
    end = len(data)
    while True:
        if i >= end:
            raise HPACKError("truncated integer")
        byte = data[i]
        i += 1
        value += (byte & 0x7F) << shift
        if value > MAX_INTEGER:
            raise HPACKError("integer too large")
        if not byte & 0x80:
            return value, i
        shift += 7


def _string(data: bytes, i: int) -> tuple[bytes, int]:
    if i >= len(data):
        raise HPACKError("truncated string")
    huffman = data[i] & 0x80
    length, i = _integer(data, i, 7)
    end = i + length
    if end > len(data):
        raise HPACKError("truncated string")
    raw = data[i:end]
    return (_huffman(raw) if huffman else raw), end


# --- encoding ----------------------------------------------------------------------------

INDEXED = [bytes((0x80 | index,)) for index in range(0x7F)]   # one-byte indexed fields
STATIC_FIELDS: dict[Header, int] = {}
STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(STATIC, 1):
    STATIC_FIELDS.setdefault((_name, _value), _index)
    STATIC_NAMES.setdefault(_name, _index)

# Never indexed (RFC 7541 §7.1.3): secrets a compression oracle could guess at.
SENSITIVE = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"})
MAX_INDEXED_VALUE = 256            # longer values are sent as literals without indexing
MAX_INDEXED_CACHE = 256            # encoded indexed fields remembered per connection


def _encode_integer(value: int, prefix: int, first: int) -> bytes:
    if first == 0x80 and value < 0x7F:
        return INDEXED[value]
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes((first | value,))
    out = bytearray((first | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_string(data: bytes) -> bytes:
    return _encode_integer(len(data), 7, 0) + data


class Encoder:
    """Indexes fields that repeat (response headers do) in a table of the peer's size.

    The dynamic table is mirrored as insertion numbers: a field inserted as the n-th has
    dynamic index `inserted - n + 1`, valid while it is still in the table (n at least
    `inserted - len(table) + 1`); a mirror found stale is dropped when looked up."""

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE) -> None:
        self.table = DynamicTable(max_table_size)
        self.inserted = 0                       # fields added, ever
        self.fields: dict[Header, int] = {}     # field -> its insertion number
        self.names: dict[bytes, int] = {}
        self.pending_resize: int | None = None
        # field -> its indexed representation, valid until the table changes: responses
        # repeat their fields, and most then cost one lookup
        self.indexed: dict[Header, bytes] = {}
        self.generation = 0                     # changes of the table: a block encoded
        # with it unchanged encodes the same again

    def resize(self, max_size: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE changed; we use at most 4096."""
        size = min(max_size, DEFAULT_TABLE_SIZE)
        if size != self.table.max_size:
            self.table.resize(size)
            self.pending_resize = size
            self.indexed.clear()
            self.generation += 1

    def encode(self, headers: list[Header]) -> bytes:
        out = []
        if self.pending_resize is not None:
            out.append(_encode_integer(self.pending_resize, 5, 0x20))
            self.pending_resize = None
        indexed = self.indexed
        for header in headers:
            piece = indexed.get(header)
            out.append(self._field(header) if piece is None else piece)
        return b"".join(out)

    def _field(self, header: Header) -> bytes:
        """One field as an index when the tables have it, else as a literal (added to
        the dynamic table unless sensitive or long)."""
        index = STATIC_FIELDS.get(header)
        if index is None and header in self.fields:
            index = self._dynamic(self.fields, header)
        if index:
            piece = INDEXED[index] if index < 0x7F else _encode_integer(index, 7, 0x80)
            if len(self.indexed) >= MAX_INDEXED_CACHE:
                self.indexed.clear()
            self.indexed[header] = piece
            return piece
        name, value = header
        name_index = STATIC_NAMES.get(name) or self._dynamic(self.names, name)
        if name in SENSITIVE:
            first, prefix = 0x10, 4
        elif len(value) > MAX_INDEXED_VALUE:
            first, prefix = 0x00, 4
        else:
            first, prefix = 0x40, 6
        if name_index:
            piece = _encode_integer(name_index, prefix, first) + _encode_string(value)
        else:
            piece = _encode_integer(0, prefix, first) + _encode_string(name) + \
                _encode_string(value)
        if first == 0x40:
            self._insert(name, value)
        return piece

    def _dynamic(self, mirror: dict, key: object) -> int:
        """The dynamic index of `key` in `mirror`, or 0 when it is not in the table."""
        number = mirror.get(key)
        if number is None:
            return 0
        if number <= self.inserted - len(self.table.entries):      # evicted since
            del mirror[key]
            return 0
        return STATIC_LEN + self.inserted - number + 1

    def _insert(self, name: bytes, value: bytes) -> None:
        self.indexed.clear()                    # every dynamic index moves by one
        self.generation += 1
        self.table.add(name, value)
        self.inserted += 1
        self.fields[(name, value)] = self.inserted
        self.names[name] = self.inserted
