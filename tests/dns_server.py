"""A minimal authoritative DNS server over UDP on 127.0.0.1, for discovery tests.

It answers A, AAAA and SRV questions from a dict the test edits while it runs (TTL 0,
so the resolver's cache never hides a change), puts the A/AAAA records of SRV targets
in the additional section, and can be switched to fail: `mode = "servfail"` answers
SERVFAIL, `mode = "silent"` drops queries (the resolver times out). With `glue = False`
SRV answers carry no additional section, so the resolver must look the targets up.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading

TYPES = {"A": 1, "AAAA": 28, "SRV": 33}
NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3
Record = str | tuple[int, int, int, str]   # an address, or SRV (priority, weight, port, target)


def encode_name(name: str) -> bytes:
    labels = [label.encode() for label in name.rstrip(".").split(".") if label]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def _rdata(qtype: str, value: Record) -> bytes:
    if qtype == "SRV":
        priority, weight, port, target = value
        return struct.pack("!HHH", priority, weight, port) + encode_name(target)
    return ipaddress.ip_address(value).packed


def _rr(name: bytes, qtype: str, value: Record) -> bytes:
    rdata = _rdata(qtype, value)
    return name + struct.pack("!HHIH", TYPES[qtype], 1, 0, len(rdata)) + rdata


class DNSServer:
    """`with DNSServer() as dns: dns.records[("app.test", "A")] = ["127.0.0.1"]`."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[Record]] = {}
        self.mode = "answer"
        self.glue = True
        self.queries = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> DNSServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, peer = self._sock.recvfrom(4096)
            except socket.timeout:
                continue
            self.queries += 1
            reply = self.answer(query)
            if reply is not None:
                self._sock.sendto(reply, peer)

    def answer(self, query: bytes) -> bytes | None:
        if self.mode == "silent" or len(query) < 12:
            return None
        end = 12
        labels = []
        while query[end]:
            labels.append(query[end + 1:end + 1 + query[end]].decode().lower())
            end += 1 + query[end]
        qtype_code = struct.unpack("!H", query[end + 1:end + 3])[0]
        question = query[12:end + 5]
        name = ".".join(labels)
        qtype = next((t for t, code in TYPES.items() if code == qtype_code), "")
        answers = self.records.get((name, qtype), []) if self.mode == "answer" else []
        targets = [srv[3] for srv in answers] if qtype == "SRV" and self.glue else []
        additional = [(target, t, value) for target in targets for t in ("A", "AAAA")
                      for value in self.records.get((target, t), [])]
        if self.mode == "servfail":
            rcode = SERVFAIL
        elif any(key[0] == name for key in self.records):
            rcode = NOERROR
        else:
            rcode = NXDOMAIN
        flags = 0x8400 | (query[2] & 0x01) << 8 | rcode      # QR, AA, RD copied
        head = query[:2] + struct.pack("!HHHHH", flags, 1, len(answers), 0, len(additional))
        body = b"".join(_rr(b"\xc0\x0c", qtype, value) for value in answers)
        body += b"".join(_rr(encode_name(target), t, value) for target, t, value in additional)
        return head + question + body
