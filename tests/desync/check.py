"""Send fuzz cases through a proxy to the recording server and check the pairing property.

For every case the client's bytes go out on a fresh connection and every response is read
with a strict client parser (h11). Then:

- every byte the server received splits into requests under h11 (no framing error);
- every complete request the server received is answered, once, on the connection whose
  client sent it: its response's `x-seen` names it;
- the response at position i answers the client's i-th request as the reference parser
  reads it (same method, origin-form target, host, body length);
- a refusal at position i > 0 is not caused by a later request: the same request sent alone
  is refused too (earlier requests are answered before a bad one);
- after a real upgrade, the server's tunnel carries exactly what the client sent after it;
- the proxy answers or closes; it never leaves a client waiting with nothing.

Refusing what h11 accepts (stricter) and forwarding, rebuilt, what h11 refuses (more
lenient) are counted, not failures: the forwarded bytes are checked either way.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field

import h11

from tests.desync import reference
from tests.desync.recorder import Recording

READ_SIZE = 65536


@dataclass
class Answer:
    status: int
    seen: dict | None          # the server's x-seen: a forwarded request; None: the proxy's own


@dataclass
class Outcome:
    answers: list[Answer] = field(default_factory=list)
    closed: bool = False
    tunnel: bytes = b""
    error: str | None = None   # a response h11 could not read


@dataclass
class Report:
    cases: int = 0
    forwarded: int = 0
    counts: Counter = field(default_factory=Counter)
    answered: Counter = field(default_factory=Counter)    # server request id -> answers
    violations: list[str] = field(default_factory=list)

    def count_answers(self, outcome: Outcome) -> None:
        for answer in outcome.answers:
            if answer.seen is not None:
                self.answered[answer.seen["id"]] += 1

    def add(self, kind: str, case: list[bytes], detail: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] <= 3:          # a few examples of each kind
            self.violations.append(f"{kind}: {detail}\n    case: {b''.join(case)!r}")


def fake_request(method: bytes) -> list[h11.Event]:
    """What the h11 client pretends it sent, so that it frames the answer: the method
    (HEAD has no body), and an upgrade offer (a 101 is then legal; checks decide if right)."""
    headers = [("host", "x"), ("upgrade", "websocket"), ("connection", "upgrade")]
    try:
        return [h11.Request(method=method, target="/", headers=headers), h11.EndOfMessage()]
    except h11.LocalProtocolError:
        return [h11.Request(method="GET", target="/", headers=headers), h11.EndOfMessage()]


def method_at(parts: list[bytes], ref: reference.Reference, index: int) -> bytes:
    """The method of the client's request at `index`: the reference's, or the first word
    of the generator's part where the strict parser gave up."""
    if index < len(ref.requests):
        return ref.requests[index].method.encode("latin-1")
    if index < len(parts) and not parts[index].startswith(b"CONNECT"):
        return parts[index].split(b" ", 1)[0]
    return b"GET"


async def exchange(port: int, parts: list[bytes], ref: reference.Reference,
                   timeout: float) -> Outcome:
    outcome = Outcome()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(parts))
        client = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 20)
        pending = True                  # the current answer's fake request is not sent yet
        wanted = len(ref.requests)
        # with nothing wrong in the bytes, stop once every request is answered
        done_early = ref.error is None
        while True:
            if pending:
                for event in fake_request(method_at(parts, ref, len(outcome.answers))):
                    client.send(event)
                pending = False
            try:
                event = client.next_event()
            except h11.RemoteProtocolError as exc:
                if not outcome.closed:
                    outcome.error = str(exc)
                return outcome
            if event is h11.NEED_DATA:
                if done_early and len(outcome.answers) >= wanted and not ref.incomplete:
                    return outcome
                wait = timeout if len(outcome.answers) < wanted or ref.error else 0.2
                try:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), wait)
                except asyncio.TimeoutError:
                    return outcome
                except ConnectionError:
                    data = b""
                if not data:
                    outcome.closed = True
                client.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed):
                outcome.closed = True
                return outcome
            if event is h11.PAUSED:         # a protocol switch h11 cannot follow
                outcome.error = "the answer switched protocols"
                return outcome
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    outcome.answers.append(Answer(101, seen_of(event)))
                    outcome.tunnel = await read_tunnel(reader, bytes(client.trailing_data[0]),
                                                       len(ref.tunnel_data))
                    return outcome
                continue
            if isinstance(event, h11.Response):
                outcome.answers.append(Answer(event.status_code, seen_of(event)))
            elif isinstance(event, h11.EndOfMessage):
                if client.our_state is h11.MUST_CLOSE or client.their_state is h11.MUST_CLOSE:
                    outcome.closed = await closes(reader, timeout)
                    return outcome
                client.start_next_cycle()
                pending = True
    finally:
        writer.close()


def seen_of(event: h11.Response | h11.InformationalResponse) -> dict | None:
    for name, value in event.headers:
        if name == b"x-seen":
            return json.loads(value)
    return None


async def read_tunnel(reader: asyncio.StreamReader, data: bytes, wanted: int) -> bytes:
    try:
        while len(data) < wanted:
            more = await asyncio.wait_for(reader.read(READ_SIZE), 2.0)
            if not more:
                break
            data += more
    except (asyncio.TimeoutError, ConnectionError):
        pass
    return data


async def closes(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        while await asyncio.wait_for(reader.read(READ_SIZE), timeout):
            pass
        return True
    except asyncio.TimeoutError:
        return False
    except ConnectionError:
        return True


async def run_cases(port: int, cases: list[list[bytes]], recording: Recording,
                    concurrency: int = 32, timeout: float = 2.0) -> Report:
    report = Report(cases=len(cases))
    refs = [reference.parse(b"".join(parts)) for parts in cases]
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Outcome:
        async with semaphore:
            return await exchange(port, cases[i], refs[i], timeout)

    outcomes = await asyncio.gather(*(one(i) for i in range(len(cases))))
    for parts, ref, outcome in zip(cases, refs, outcomes):
        await check_case(port, parts, ref, outcome, report, recording, timeout)
    report.forwarded = len(recording.requests)
    answered = report.answered
    for error in recording.errors:
        report.add("server-framing-error", [], error)
    for request_id, seen in recording.requests.items():
        if answered[request_id] != 1:
            report.add("unanswered" if answered[request_id] == 0 else "answered-twice", [],
                       f"server request {seen.summary()} answered {answered[request_id]} times")
    return report


async def check_case(port: int, parts: list[bytes], ref: reference.Reference, outcome: Outcome,
                     report: Report, recording: Recording, timeout: float) -> None:
    report.count_answers(outcome)
    if outcome.error is not None:
        report.add("bad-response", parts, outcome.error)
    if not outcome.answers and not outcome.closed and ref.requests:
        report.add("hang", parts, "no answer and no close")
    for i, answer in enumerate(outcome.answers):
        expected = ref.requests[i] if i < len(ref.requests) else None
        if answer.seen is None:
            if expected is None or answer.status in (100, 408):
                report.counts["refused"] += 1
                continue
            report.counts["stricter"] += 1
            if i > 0 and await accepted_alone(port, parts, ref, i, timeout, report):
                report.add("refused-after-valid", parts,
                           f"answer {i} is {answer.status} but request {i} alone is served")
        elif expected is None:
            report.counts["lenient"] += 1
        elif not expected.matches(answer.seen) or (answer.status == 101) != expected.tunnel:
            report.add("mismatch", parts, f"answer {i} ({answer.status}) is for {answer.seen}, "
                       f"expected {expected}")
        elif expected.tunnel:
            seen = recording.tunnels.get(recording.requests[answer.seen["id"]].connection, b"")
            if bytes(seen[:len(ref.tunnel_data)]) != ref.tunnel_data or outcome.tunnel != ref.tunnel_data:
                report.add("tunnel", parts, f"server tunnel {bytes(seen)!r}, client echo "
                           f"{outcome.tunnel!r}, expected {ref.tunnel_data!r}")
        else:
            report.counts["served"] += 1


async def accepted_alone(port: int, parts: list[bytes], ref: reference.Reference, i: int,
                         timeout: float,
                         report: Report) -> bool:
    """Whether request i of a case, sent on its own, gets a server's answer."""
    if i >= len(parts):
        return False
    raw = parts[i]
    alone = reference.parse(raw)
    if not alone.requests or alone.requests[0] != ref.requests[i]:
        return False        # the generator's boundary is not where the strict parser split
    ref = alone
    outcome = await exchange(port, [raw], ref, timeout)
    report.count_answers(outcome)
    return bool(outcome.answers) and outcome.answers[0].seen is not None
