"""Mutated HTTP/1.x requests for the differential fuzz, from a seeded random generator.

A case is one to three pipelined requests. Each is built from parts chosen where
proxies and servers are known to disagree (framing headers, request lines, Upgrade and
Expect, absolute-form targets, hop-by-hop names in Connection, chunk extensions and
trailers), then sometimes mutated byte-wise around line ends, colons and whitespace.
"""

from __future__ import annotations

import random

METHODS = [b"GET"] * 6 + [b"POST"] * 4 + [b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"get",
                                          b"CONNECT", b"PRI", b"G\tET"]
TARGETS = [b"/", b"/a", b"/admin", b"/a?x=1", b"//admin", b"/%61dmin", b"/ws101", b"/ws101",
           b"http://h/x", b"http://H:80/ws101", b"http://evil/admin", b"https://h/s", b"*",
           b"h/x", b"/a#frag", b"/a b", b"http://u@h/x", b"/\x7f"]
VERSIONS = [b" HTTP/1.1"] * 10 + [b" HTTP/1.0"] * 3 + [b" HTTP/2.0", b"", b" HTTP/1.2",
                                                          b" http/1.1", b"  HTTP/1.1",
                                                          b" HTTP/1.1 "]
HOSTS = [[b"Host: h"]] * 8 + [[], [b"Host: h", b"Host: h"], [b"Host: other"], [b"Host:"],
                             [b"Host: h:80"], [b"host: H"]]
EXTRA = [b"Connection: close", b"Connection: keep-alive", b"Connection: upgrade",
         b"Connection: Upgrade, HTTP2-Settings", b"Connection: host", b"Connection: content-length",
         b"Connection: transfer-encoding", b"Connection: x-a", b"Upgrade: websocket",
         b"Upgrade: h2c", b"Upgrade: websocket, h2c", b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA",
         b"Expect: 100-continue", b"TE: trailers", b"Trailer: X-T", b"Keep-Alive: 5",
         b"Proxy-Connection: keep-alive", b"X-A: 1", b"X-Forwarded-For: 1.2.3.4",
         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Version: 13"]
TE_VALUES = [b"chunked"] * 6 + [b"Chunked", b"chunked, chunked", b"gzip, chunked", b"chunked, gzip",
                                b" chunked", b"identity", b"chunked\x0b", b"xchunked"]
CL_FORMS = ["{n}"] * 6 + ["+{n}", " {n} ", "{n}, {n}", "0{n}", "{n}x", "-{n}", "{n}.0"]


def chunked_body(rng: random.Random, body: bytes) -> bytes:
    out = []
    rest = body
    while rest:
        size = rng.randint(1, len(rest))
        piece, rest = rest[:size], rest[size:]
        ext = rng.choice([b"", b"", b"", b";a=b", b";" + b"e" * rng.randint(1, 200)])
        out.append(b"%x%s\r\n%s\r\n" % (size, ext, piece))
    trailer = rng.choice([b"", b"", b"", b"X-T: 1\r\n", b"Content-Length: 5\r\n"])
    out.append(b"0\r\n" + trailer + b"\r\n")
    return b"".join(out)


def one_request(rng: random.Random) -> bytes:
    method = rng.choice(METHODS)
    target = rng.choice(TARGETS)
    line = method + b" " + target + rng.choice(VERSIONS)
    headers = list(rng.choice(HOSTS))
    upgrade_like = target.endswith(b"/ws101") and rng.random() < 0.7
    if upgrade_like:
        headers += [b"Connection: Upgrade", b"Upgrade: websocket"]
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        headers.append(rng.choice(EXTRA))
    body = b""
    framing = rng.choice(["none", "none", "none", "cl", "cl", "chunked", "chunked", "both",
                          "cl-short", "cl-long"])
    if method in (b"POST", b"PUT") or rng.random() < 0.2:
        body = b"x" * rng.choice([0, 1, 5, 17, 300])
    else:
        framing = "none" if rng.random() < 0.8 else framing
    raw_body = b""
    if framing in ("cl", "cl-short", "cl-long", "both"):
        n = len(body) + {"cl-short": -1, "cl-long": 3}.get(framing, 0)
        headers.append(b"Content-Length: " + rng.choice(CL_FORMS).format(n=max(n, 0)).encode())
        raw_body = body
    if framing in ("chunked", "both"):
        headers.append(b"Transfer-Encoding: " + rng.choice(TE_VALUES))
        raw_body = chunked_body(rng, body)
    rng.shuffle(headers)
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + raw_body


MUTATIONS = ["lf", "space-colon", "fold", "bare-cr", "nul", "dup-line", "drop-byte", "tab",
             "trailing-space", "upper"]


def mutate(rng: random.Random, raw: bytes) -> bytes:
    kind = rng.choice(MUTATIONS)
    lines = raw.split(b"\r\n")
    if len(lines) < 3:
        return raw
    i = rng.randrange(1, max(2, len(lines) - 2))
    if kind == "lf":
        cut = [m for m in range(len(raw) - 1) if raw[m:m + 2] == b"\r\n"]
        m = rng.choice(cut)
        return raw[:m] + raw[m + 1:]
    if kind == "space-colon":
        lines[i] = lines[i].replace(b":", b" :", 1)
    elif kind == "fold":
        lines.insert(i + 1, b" folded")
    elif kind == "bare-cr":
        lines[i] = lines[i] + b"\rX-B: 1"
    elif kind == "nul":
        lines[i] = lines[i] + b"\x00"
    elif kind == "dup-line":
        lines.insert(i, lines[i])
    elif kind == "drop-byte":
        if lines[i]:
            j = rng.randrange(len(lines[i]))
            lines[i] = lines[i][:j] + lines[i][j + 1:]
    elif kind == "tab":
        lines[i] = lines[i].replace(b": ", b":\t", 1)
    elif kind == "trailing-space":
        lines[i] = lines[i] + b" "
    elif kind == "upper":
        lines[i] = lines[i].upper()
    return b"\r\n".join(lines)


def case(rng: random.Random) -> list[bytes]:
    """One case: the raw bytes of each pipelined request, in order."""
    count = rng.choice([1, 1, 2, 2, 3])
    parts = []
    for _ in range(count):
        raw = one_request(rng)
        if rng.random() < 0.3:
            raw = mutate(rng, raw)
        parts.append(raw)
    if rng.random() < 0.1:
        parts.append(b"ws-frame-bytes")      # what a WebSocket client sends before the 101
    return parts


def cases(seed: int, count: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    return [case(rng) for _ in range(count)]
