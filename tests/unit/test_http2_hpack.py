"""HPACK (lbproxy/http2/hpack.py) against the independent `hpack` package, both ways,
with the dynamic table evolving over thousands of blocks, and its error cases."""

from __future__ import annotations

import random

import hpack
import pytest

from lbproxy.http2.hpack import Decoder, Encoder, HeaderListTooLarge, HPACKError

NAMES = [b"content-type", b"x-a", b"server", b"set-cookie", b"cookie", b":status", b"x-long",
         b"date", b"accept", b"user-agent"]


def random_headers(rng: random.Random) -> list[tuple[bytes, bytes]]:
    return [(rng.choice(NAMES), (b"v%d" % rng.randrange(50)) * rng.choice([1, 1, 1, 40, 300]))
            for _ in range(rng.randrange(1, 9))]


def test_our_encoder_is_read_by_the_reference_decoder():
    rng = random.Random(1)
    ours, reference = Encoder(), hpack.Decoder()
    for i in range(4000):
        if i % 400 == 0:                        # the peer changes its table size
            ours.resize(rng.choice([0, 100, 4096, 8192]))
        headers = random_headers(rng)
        assert [tuple(h) for h in reference.decode(ours.encode(headers), raw=True)] == headers


def test_our_decoder_reads_the_reference_encoder_with_and_without_huffman():
    rng = random.Random(2)
    reference, ours = hpack.Encoder(), Decoder()
    for i in range(4000):
        if i % 500 == 0:
            reference.header_table_size = rng.choice([0, 512, 4096])
        headers = random_headers(rng)
        block = reference.encode(headers, huffman=rng.random() < 0.5)
        decoded, size = ours.decode(block, 1 << 20)
        assert decoded == headers
        assert size == sum(len(n) + len(v) + 32 for n, v in headers)


def test_repeated_fields_are_indexed():
    encoder = Encoder()
    headers = [(b"server", b"lbproxy"), (b"x-a", b"1")]
    first, second = encoder.encode(headers), encoder.encode(headers)
    assert len(second) == 2 and len(first) > 10     # two one-byte indexed fields


def test_secrets_are_never_indexed():
    encoder = Encoder()
    block = encoder.encode([(b"set-cookie", b"id=1")])
    assert block[0] & 0xF0 == 0x10                 # literal never indexed
    assert encoder.encode([(b"set-cookie", b"id=1")]) == block


@pytest.mark.parametrize("block", [
    b"\x80",                        # index 0
    b"\xff\xff\xff\xff\xff\x0f",    # integer past the bound
    b"\xbf",                        # dynamic index with an empty table
    b"\x40\x05ab",                  # truncated string
    b"\x00\x81\xff\x01a",           # invalid Huffman (EOS padding too long)
    b"\x82\x3f\xe1\x1f",            # table size update after a field
], ids=["zero", "huge-int", "empty-table", "truncated", "huffman", "late-size-update"])
def test_malformed_blocks_are_compression_errors(block):
    with pytest.raises(HPACKError):
        Decoder().decode(block, 1 << 20)


def test_a_header_list_past_the_hard_bound_stops_decoding():
    encoder = hpack.Encoder()
    block = encoder.encode([(b"x-bomb", b"b" * 4000)]) + b"\xbe" * 1000
    with pytest.raises(HeaderListTooLarge):
        Decoder().decode(block, 64 * 1024)


def test_a_repeated_block_is_decoded_once_while_the_table_stays_the_same():
    reference, ours = hpack.Encoder(), Decoder()
    headers = [(b":method", b"GET"), (b":path", b"/a"), (b"user-agent", b"x")]
    first = reference.encode(headers, huffman=False)       # literals: the table grows
    indexed = reference.encode(headers, huffman=False)     # all indexed now
    assert ours.decode(first, 1 << 20)[0] == headers
    once = ours.decode(indexed, 1 << 20)[0]
    assert ours.decode(indexed, 1 << 20)[0] is once             # the same list again
    other = reference.encode([(b"x-new", b"1")], huffman=False)  # adds to both tables
    assert ours.decode(other, 1 << 20)[0] == [(b"x-new", b"1")]
    again = reference.encode(headers, huffman=False)   # indexes moved by one entry
    assert again != indexed
    assert ours.decode(again, 1 << 20)[0] == headers
    assert ours.decode(indexed, 1 << 20)[0] == [(b":method", b"GET"), (b"user-agent", b"x"),
                                                (b"x-new", b"1")]      # read anew


def test_indexed_fields_are_encoded_anew_once_the_table_changes():
    ours, reference = Encoder(), hpack.Decoder()
    head = [(b":status", b"200"), (b"server", b"s"), (b"content-length", b"5")]
    blocks = [ours.encode(head), ours.encode(head)]
    generation = ours.generation
    blocks.append(ours.encode([(b":status", b"200"), (b"content-length", b"6")]))
    assert ours.generation == generation + 1                     # one field added
    blocks.append(ours.encode(head))
    assert blocks[3] != blocks[1]                                # indexes moved
    decoded = [[tuple(h) for h in reference.decode(block, raw=True)] for block in blocks]
    assert decoded == [head, head, [(b":status", b"200"), (b"content-length", b"6")], head]
