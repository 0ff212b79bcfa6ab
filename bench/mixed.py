"""Mixed HTTP traffic for long runs: many kinds of clients, every outcome counted by kind.

`Traffic(port, mix)` runs, on the caller's event loop, clients of each kind in `Mix`, each
a coroutine looping until `stop()`:

- keep-alive: GETs over one connection, cycling through `PATHS` (small, 64 KiB, chunked,
  a 50 ms answer, /echo);
- per-request: a new connection with `Connection: close` for every GET;
- post: keep-alive `POST /echo` with bodies of `BODY_SIZES`, every other one chunked;
  the echoed `body_length` must match what was sent;
- slow head: the request head sent one byte every `SLOW_BYTE_GAP` s, well within the
  proxy's `http_request` timeout: must get 200;
- stalled head: half a head, then nothing: must get 408 or be cut (on purpose);
- slow reader: 1 MiB read in small pieces with pauses (back-pressure): must arrive whole;
- stalled reader: asks for `STALL_BODY` bytes and reads nothing for `STALL_READ` s, longer
  than the proxy's server timeout: must be cut (on purpose);
- WebSocket: `GET /ws` upgraded (the 101's Sec-WebSocket-Accept checked), then `WS_MESSAGES`
  masked frames, one every `WS_GAP` s, each echoed back whole by the demo backend's tunnel
  (each message counts as one request);
- HTTP/2 (h2c with prior knowledge, when the `h2` package is installed): `H2_STREAMS`
  concurrent GETs on one connection; a GOAWAY (every reload sends one) ends the
  connection once its streams are done, and streams the proxy did not take are sent again
  on a new one, as RFC 9113 allows.

Outcomes (`KINDS`): ok (2xx/3xx), connect (no connection), 5xx, reset (closed before a
complete reply), timeout (no complete reply within `REPLY_TIMEOUT`), other (another status,
an unparsable reply, a wrong echo), cut (a deliberately stalled client answered 408 or
closed: expected), hung (a deliberately stalled client the proxy never cut). Every
unexpected outcome also says why (`Tally.reasons`: the status, the exception). Only
127.0.0.1; every client waits a little after a failure, so a dead target is no busy loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httptools

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
except ImportError:          # a test extra (httpx[http2]); without it there is no HTTP/2 client
    h2 = None

KINDS = ("ok", "connect", "5xx", "reset", "timeout", "other", "cut", "hung")
EXPECTED = frozenset({"ok", "cut"})
PATHS = ("/", "/bytes/1024", "/chunked/8192", "/bytes/65536", "/slow/50", "/echo?q=soak")
BODY_SIZES = (1024, 65536, 524288)
CHUNK = 16384                  # pieces of a chunked POST body
CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 15.0           # over the proxy's server timeout (10 s in bench.soak): a 504 comes first
RETRY_PAUSE = 0.05             # after a failure, so a refusing target is no busy loop
CLOSE_PAUSE = 0.01             # per-request clients: <= 100 connections/s each, ports stay plenty
SLOW_BYTE_GAP = 0.03           # ~1.4 s for the head: within http_request (5 s in bench.soak)
SLOW_READ = (8192, 0.02)       # slow reader: bytes per read, pause after each (~400 KiB/s)
SLOW_BODY = 1 << 20
STALL_BODY = 32 << 20          # more than loopback socket buffers hold: the proxy must wait on us
STALL_READ = 20.0              # seconds a stalled reader reads nothing: over the server timeout
CUT_WAIT = 15.0                # how long a stalled client waits for the proxy to give up on it
H2_STREAMS = 8
WS_MESSAGES = 100
WS_GAP = 0.05                  # a WebSocket connection lasts ~5 s: several reloads and kills meet one
WS_KEY = "c29hay13ZWJzb2NrZXQtMQ=="
WS_ACCEPT = base64.b64encode(hashlib.sha1(f"{WS_KEY}258EAFA5-E914-47DA-95CA-C5AB0DC85B11".encode()).digest())
WS_UPGRADE = (f"GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


@dataclass(frozen=True)
class Mix:
    """How many clients of each kind run at once."""

    keep_alive: int = 12
    per_request: int = 3
    post: int = 2
    slow_head: int = 2
    stalled_head: int = 1
    slow_reader: int = 2
    stalled_reader: int = 1
    websocket: int = 2
    http2: int = 1

    def describe(self) -> str:
        return ", ".join(f"{count} {name.replace('_', '-')}" for name, count in vars(self).items() if count)


Outcome = tuple[str, str]     # (kind, why: said for unexpected kinds)
Error = tuple[float, str, str]   # (time.monotonic(), kind, "kind: client: why")
CLIENT: contextvars.ContextVar[str] = contextvars.ContextVar("client", default="?")   # each client task's kind


class Tally:
    """Outcomes and the time of every unexpected one since the last `take`; why each came."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.errors: list[Error] = []
        self.reasons: Counter[str] = Counter()       # "kind: client: why" of every unexpected outcome
        self.notes: Counter[str] = Counter()         # events that are not outcomes (GOAWAYs)

    def add(self, kind: str, why: str = "") -> None:
        self.counts[kind] += 1
        if kind not in EXPECTED:
            reason = f"{kind}: {CLIENT.get()}: {why or 'not said'}"
            self.errors.append((time.monotonic(), kind, reason))
            self.reasons[reason] += 1

    def take(self) -> Tally:
        """What was counted since the last call (notes stay here)."""
        taken = Tally()
        taken.counts, taken.errors, taken.reasons = self.counts, self.errors, self.reasons
        self.counts, self.errors, self.reasons = Counter(), [], Counter()
        return taken


def by_status(status: int) -> Outcome:
    return ("ok" if 200 <= status < 400 else "5xx" if status >= 500 else "other"), f"status {status}"


def failure(exc: BaseException) -> Outcome:
    """What an exception while waiting for a reply means (TimeoutError is an OSError: first)."""
    why = f"{type(exc).__name__} {exc}".strip()[:100]
    if isinstance(exc, TimeoutError):
        return "timeout", why
    if isinstance(exc, (httptools.HttpParserError, ValueError)):
        return "other", why
    return "reset", why          # OSError, EOF mid-reply (IncompleteReadError), uvloop's write after close


class Reply:
    """One response as httptools parses it: status, body size (and body, when kept), complete."""

    def __init__(self, keep_body: bool = False) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.size = 0
        self.body = bytearray() if keep_body else None
        self.complete = False

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, data: bytes) -> None:
        self.size += len(data)
        if self.body is not None:
            self.body += data

    def on_message_complete(self) -> None:
        self.complete = True


Check = Callable[[Reply], Outcome]     # a reply's outcome, when its status alone does not tell


async def read_reply(reader: asyncio.StreamReader, keep_body: bool = False, piece: int = 65536,
                     pause: float = 0.0) -> Reply:
    """Read one complete response; ConnectionResetError when the peer closes before its end."""
    reply = Reply(keep_body)
    while not reply.complete:
        data = await reader.read(piece)
        if not data:
            raise ConnectionResetError("closed before the reply was complete")
        reply.parser.feed_data(data)
        if pause:
            await asyncio.sleep(pause)
    return reply


def get(path: str, close: bool = False) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: soak\r\n{connection}\r\n".encode()


def post(size: int, chunked: bool) -> bytes:
    body = b"s" * size
    if not chunked:
        return b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n%s" % (size, body)
    pieces = [b"%x\r\n%s\r\n" % (len(body[i:i + CHUNK]), body[i:i + CHUNK]) for i in range(0, size, CHUNK)]
    return (b"POST /echo HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(pieces) + b"0\r\n\r\n")


def echoed(size: int) -> Check:
    """A check for `POST /echo`: 200 with `body_length` equal to `size`."""
    def check(reply: Reply) -> Outcome:
        outcome = by_status(reply.status)
        if outcome[0] == "ok" and (got := json.loads(bytes(reply.body or b"{}")).get("body_length")) != size:
            return "other", f"echoed body_length {got} for {size}"
        return outcome
    return check


def ws_accept(head: bytes) -> bytes | None:
    """The Sec-WebSocket-Accept value of a response head."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-accept":
            return value.strip()
    return None


def ws_frame(payload: bytes) -> bytes:
    """A masked, final WebSocket text frame (RFC 6455 5.2) with a payload under 126 bytes."""
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def outlive_goaway(session: h2.connection.H2Connection) -> None:
    """Let `session` read the frames that follow a GOAWAY. The h2 package closes its state
    machine on GOAWAY and refuses every later frame, though RFC 9113 6.8 lets the server
    finish the streams up to last_stream_id (lbproxy does, on reload): without this the
    client would count those streams as failures. It opens no stream after a GOAWAY."""
    machine = session.state_machine
    state, goaway = h2.connection.ConnectionState.CLIENT_OPEN, h2.connection.ConnectionInputs.RECV_GOAWAY
    machine._transitions = {**machine._transitions, (state, goaway): (None, state)}   # an instance's own table


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Client = Callable[[Connection], Awaitable[None]]


class Traffic:
    """The clients of a `Mix` against 127.0.0.1:`port`, counting into `tally`."""

    def __init__(self, port: int, mix: Mix) -> None:
        self.port = port
        self.mix = mix
        self.tally = Tally()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        kinds: list[tuple[int, Client]] = [
            (self.mix.keep_alive, self.keep_alive), (self.mix.per_request, self.per_request),
            (self.mix.post, self.poster), (self.mix.slow_head, self.slow_head),
            (self.mix.stalled_head, self.stalled_head), (self.mix.slow_reader, self.slow_reader),
            (self.mix.stalled_reader, self.stalled_reader), (self.mix.websocket, self.websocket),
            (self.mix.http2 if h2 is not None else 0, self.http2)]
        for count, client in kinds:
            for _ in range(count):
                self._tasks.append(asyncio.get_running_loop().create_task(self._forever(client)))

    async def stop(self) -> None:
        """Stop every client now; what is in flight is not counted."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _forever(self, client: Client) -> None:
        """Connect, let `client` use the connection, close it; again until stopped. A failed
        connect is counted, then retried after a pause."""
        CLIENT.set(client.__name__.replace("_", "-"))       # this task's own context
        while not self._stopping:
            try:
                conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), CONNECT_TIMEOUT)
            except OSError as exc:            # refused, or TimeoutError
                self.tally.add("connect", failure(exc)[1])
                await asyncio.sleep(RETRY_PAUSE)
                continue
            try:
                await client(conn)
            except Exception as exc:          # a client bug must show in the report, not end its task
                self.tally.add("other", f"client {type(exc).__name__} {exc}"[:100])
                await asyncio.sleep(RETRY_PAUSE)
            finally:
                conn[1].close()

    async def _ask(self, conn: Connection, request: bytes, check: Check | None = None, keep_body: bool = False,
                   piece: int = 65536, pause: float = 0.0) -> bool:
        """Send `request`, read the reply, count its outcome; whether the connection is reusable."""
        reader, writer = conn
        try:
            writer.write(request)
            reply = await asyncio.wait_for(read_reply(reader, keep_body, piece, pause), REPLY_TIMEOUT)
        except (OSError, httptools.HttpParserError) as exc:
            self.tally.add(*failure(exc))
            await asyncio.sleep(RETRY_PAUSE)
            return False
        self.tally.add(*(check(reply) if check else by_status(reply.status)))
        return reply.parser.should_keep_alive()

    async def _stalled(self, conn: Connection, request: bytes, stall: float,
                       answered: Callable[[int], Outcome]) -> None:
        """Send `request`, read nothing for `stall` s, then give the proxy CUT_WAIT s to give up on
        us: closed or reset is "cut" (what we want); a complete reply is `answered(status)`; still
        nothing is "hung"."""
        reader, writer = conn
        try:
            writer.write(request)
            await asyncio.sleep(stall)
            reply = await asyncio.wait_for(read_reply(reader), CUT_WAIT)
            self.tally.add(*answered(reply.status))
        except TimeoutError:
            self.tally.add("hung", f"neither answered nor closed {CUT_WAIT:g} s after the stall")
        except (OSError, httptools.HttpParserError):
            self.tally.add("cut")

    # --- the clients: each uses one connection ----------------------------------------------

    async def keep_alive(self, conn: Connection) -> None:
        requests = itertools.cycle([get(path) for path in PATHS])
        while not self._stopping and await self._ask(conn, next(requests)):
            pass

    async def per_request(self, conn: Connection) -> None:
        await self._ask(conn, get("/", close=True))
        await asyncio.sleep(CLOSE_PAUSE)

    async def poster(self, conn: Connection) -> None:
        requests = itertools.cycle([(post(size, chunked), echoed(size)) for size in BODY_SIZES
                                    for chunked in (False, True)])
        for request, check in requests:
            if self._stopping or not await self._ask(conn, request, check, keep_body=True):
                return

    async def slow_head(self, conn: Connection) -> None:
        try:
            for byte in get("/slow-head", close=True):
                conn[1].write(bytes([byte]))
                await asyncio.sleep(SLOW_BYTE_GAP)
        except RuntimeError as exc:           # uvloop: the proxy closed the connection under us
            self.tally.add(*failure(exc))
            await asyncio.sleep(RETRY_PAUSE)
            return
        await self._ask(conn, b"")

    async def stalled_head(self, conn: Connection) -> None:
        await self._stalled(conn, b"GET /stalled HTTP/1.1\r\nHost: so", 0.0,
                            lambda status: ("cut", "") if status == 408 else by_status(status))

    async def slow_reader(self, conn: Connection) -> None:
        def check(reply: Reply) -> Outcome:
            outcome = by_status(reply.status)
            if outcome[0] == "ok" and reply.size != SLOW_BODY:
                return "other", f"{reply.size} bytes of {SLOW_BODY}"
            return outcome

        piece, pause = SLOW_READ
        await self._ask(conn, get(f"/bytes/{SLOW_BODY}", close=True), check, piece=piece, pause=pause)

    async def stalled_reader(self, conn: Connection) -> None:
        # all of it after all would mean the proxy waited on a client that read nothing for STALL_READ s
        await self._stalled(conn, get(f"/bytes/{STALL_BODY}", close=True), STALL_READ,
                            lambda status: ("hung", "all of it came") if status == 200 else by_status(status))

    async def websocket(self, conn: Connection) -> None:
        reader, writer = conn
        try:
            writer.write(WS_UPGRADE)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REPLY_TIMEOUT)
            if not head.startswith(b"HTTP/1.1 101 ") or ws_accept(head) != WS_ACCEPT:
                self.tally.add(*(by_status(int(head[9:12])) if head[9:12].isdigit() else ("other", "no status")))
                await asyncio.sleep(RETRY_PAUSE)
                return
            self.tally.add("ok")
            for index in range(WS_MESSAGES):
                if self._stopping:
                    return
                frame = ws_frame(b"soak message %d" % index)
                writer.write(frame)
                back = await asyncio.wait_for(reader.readexactly(len(frame)), REPLY_TIMEOUT)
                self.tally.add(*(("ok", "") if back == frame else ("other", "echo differs")))
                await asyncio.sleep(WS_GAP)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.tally.add(*failure(exc))
            await asyncio.sleep(RETRY_PAUSE)

    async def http2(self, conn: Connection) -> None:
        """H2_STREAMS GETs in flight over h2c until a GOAWAY or a failure."""
        reader, writer = conn
        session = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        outlive_goaway(session)
        session.initiate_connection()
        open_streams: dict[int, int] = {}          # stream id -> status (0 until the head came)
        closing = False

        def request() -> None:
            stream = session.get_next_available_stream_id()
            session.send_headers(stream, [(":method", "GET"), (":scheme", "http"), (":authority", "soak"),
                                          (":path", "/")], end_stream=True)
            open_streams[stream] = 0

        for _ in range(H2_STREAMS):
            request()
        try:
            while open_streams and not self._stopping:
                writer.write(session.data_to_send())
                data = await asyncio.wait_for(reader.read(65536), REPLY_TIMEOUT)
                if not data:
                    raise ConnectionResetError("closed with streams open")
                for event in session.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        open_streams[event.stream_id] = int(dict(event.headers)[b":status"])
                    elif isinstance(event, h2.events.DataReceived):
                        session.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                        status = open_streams.pop(event.stream_id, None)
                        if status is not None:
                            reset = isinstance(event, h2.events.StreamReset)
                            self.tally.add(*(("reset", "RST_STREAM") if reset else by_status(status)))
                        if not closing:
                            request()
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        closing = True
                        self.tally.notes["HTTP/2 GOAWAY"] += 1
                        for stream in [s for s in open_streams if s > (event.last_stream_id or 0)]:
                            del open_streams[stream]          # never processed: sent again next time
                        if event.error_code:
                            self.tally.add("reset", f"GOAWAY {event.error_code!r}")
        except (OSError, h2.exceptions.ProtocolError) as exc:
            for _ in open_streams:
                self.tally.add(*(failure(exc) if isinstance(exc, OSError) else ("other", f"h2 {exc}"[:100])))
            await asyncio.sleep(RETRY_PAUSE)
