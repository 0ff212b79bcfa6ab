"""DNS service discovery (`server_template`): keep a backend's servers equal to a DNS answer.

Every `resolve_interval` the template's fqdn is resolved with aiodns (c-ares, on the
proxy's loop): an fqdn starting with "_" (`_http._tcp.app.local`) as SRV records, whose
targets are taken from the additional section or resolved as A/AAAA; any other name as
A and AAAA records, on the template's `port` (80 when unset). Each target (address, port)
occupies one slot named `{prefix}{n}`, n in 1..count; a target keeps its slot while it
stays in the answer, a vanished one is drained and removed, and its slot is reused once
the server is gone. SRV weights become server weights clamped to 1..256 (SRV weights are
usually small numbers, so they are kept as they are rather than scaled). SRV priorities
are not used.

A failed resolution (timeout, SERVFAIL, refused) keeps the last good answer; NXDOMAIN or
an empty answer is an answer and removes the servers. New servers are health-checked
before they get traffic when the backend has checks. The c-ares cache honours record
TTLs, so an answer is at most min(TTL, resolve_interval) old.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiodns
import pycares

from lbproxy.config.backend import MAX_WEIGHT
from lbproxy.config.schema import Address, ServerConfig, ServerTemplateConfig

if TYPE_CHECKING:
    from lbproxy.backends.backend import Backend
    from lbproxy.backends.server import Server

log = logging.getLogger("lbproxy.discovery")

DEFAULT_PORT = 80
RESOLVE_TIMEOUT = 2.0           # seconds per try; a try never outlasts resolve_interval
RESOLVE_TRIES = 2
# "no such name" and "no records of this type" are answers; any other error is a failure
EMPTY_ANSWERS = frozenset({aiodns.error.ARES_ENODATA, aiodns.error.ARES_ENOTFOUND})


@dataclass(frozen=True, slots=True)
class Target:
    """One server the DNS answer asks for."""

    host: str
    port: int
    weight: int = 1


@dataclass(slots=True)
class Plan:
    """What to change to make the slots match an answer."""

    remove: list[str] = field(default_factory=list)
    reweight: list[tuple[str, int]] = field(default_factory=list)
    add: list[tuple[str, Target]] = field(default_factory=list)


def srv_weight(weight: int) -> int:
    """An SRV weight (0..65535) as a server weight (1..256): 0 still gets some traffic."""
    return min(max(weight, 1), MAX_WEIGHT)


def plan(current: dict[str, Target], occupied: set[str], answer: list[Target],
         prefix: str, count: int) -> Plan:
    """Changes that turn slots `current` (name -> target) into `answer`.

    `occupied` are names taken by any server (a removed one drains before its slot is
    free). Targets already in a slot keep it; new ones take the lowest free slots;
    targets beyond `count` slots wait for a free one.
    """
    wanted: dict[tuple[str, int], Target] = {}
    for target in answer:          # the same address twice: keep the larger weight
        key = (target.host, target.port)
        if key not in wanted or wanted[key].weight < target.weight:
            wanted[key] = target
    result = Plan()
    for name, target in current.items():
        new = wanted.pop((target.host, target.port), None)
        if new is None:
            result.remove.append(name)
        elif new.weight != target.weight:
            result.reweight.append((name, new.weight))
    free = (f"{prefix}{n}" for n in range(1, count + 1) if f"{prefix}{n}" not in occupied)
    for key, slot in zip(sorted(wanted), free):
        result.add.append((slot, wanted[key]))
    return result


class Discovery:
    """Resolves a backend's server_template periodically and applies the answer."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.template: ServerTemplateConfig = backend.config.server_template
        self.has_checks = backend.config.health_check is not None
        self._applied: dict[Server, Target] = {}    # servers this added, and their target
        self._resolver: aiodns.DNSResolver | None = None
        self._task: asyncio.Task | None = None
        self._failing = False

    def start(self) -> None:
        loop = self.backend.state.loop
        template = self.template
        self._resolver = aiodns.DNSResolver(
            nameservers=list(template.nameservers) or None, loop=loop,
            timeout=min(RESOLVE_TIMEOUT, template.resolve_interval), tries=RESOLVE_TRIES,
            flags=pycares.ARES_FLAG_NOSEARCH)     # the fqdn is absolute, never a search suffix
        self._task = loop.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.template.resolve_interval)

    async def refresh(self) -> None:
        """Resolve once and apply the answer, or keep the last one if resolution fails."""
        fqdn = self.template.fqdn
        try:
            if fqdn.startswith("_"):
                answer = await self._srv(fqdn)
            else:
                port = self.template.port or DEFAULT_PORT
                answer = [Target(addr, port) for addr in await self._addresses(fqdn)]
        except aiodns.error.DNSError as exc:
            if not self._failing:
                log.warning("backend %s: resolving %s failed (%s), keeping %d servers",
                            self.backend.name, fqdn, exc.args[-1], len(self._applied))
                self._failing = True
            return
        if self._failing:
            log.info("backend %s: resolving %s works again", self.backend.name, fqdn)
            self._failing = False
        self.apply(answer)

    def apply(self, answer: list[Target]) -> None:
        backend = self.backend
        live = set(backend.servers)
        self._applied = {s: t for s, t in self._applied.items() if s in live}
        by_name = {s.name: s for s in self._applied}
        changes = plan({s.name: t for s, t in self._applied.items()},
                       {s.name for s in backend.servers}, answer,
                       self.template.prefix, self.template.count)
        for name in changes.remove:
            server = by_name[name]
            del self._applied[server]
            backend.remove_server(server, drain=backend.config.timeouts.server)
        for name, weight in changes.reweight:
            server = by_name[name]
            self._applied[server] = Target(server.address.host, server.address.port, weight)
            backend.set_weight(server, weight)
        for name, target in changes.add:
            config = ServerConfig(name=name, address=Address(target.host, target.port),
                                  weight=target.weight)
            self._applied[backend.add_server(config, up=not self.has_checks)] = target

    async def _query(self, name: str, qtype: str) -> pycares.DNSResult | None:
        """The answer to one query; None for NXDOMAIN/NODATA, DNSError for failures."""
        try:
            return await self._resolver.query_dns(name, qtype)
        except aiodns.error.DNSError as exc:
            if exc.args and exc.args[0] in EMPTY_ANSWERS:
                return None
            raise

    async def _addresses(self, name: str) -> list[str]:
        results = await asyncio.gather(self._query(name, "A"), self._query(name, "AAAA"))
        return [record.data.addr for result in results if result is not None
                for record in result.answer
                if isinstance(record.data, (pycares.ARecordData, pycares.AAAARecordData))]

    async def _srv(self, fqdn: str) -> list[Target]:
        result = await self._query(fqdn, "SRV")
        if result is None:
            return []
        addresses: dict[str, list[str]] = {}        # target -> addresses, glue first
        for record in result.additional:
            if isinstance(record.data, (pycares.ARecordData, pycares.AAAARecordData)):
                addresses.setdefault(_name(record.name), []).append(record.data.addr)
        records = [r.data for r in result.answer if isinstance(r.data, pycares.SRVRecordData)]
        missing = sorted({_name(srv.target) for srv in records} - addresses.keys())
        addresses.update(zip(missing, await asyncio.gather(*map(self._addresses, missing))))
        default_port = self.template.port or DEFAULT_PORT
        return [Target(addr, srv.port or default_port, srv_weight(srv.weight))
                for srv in records for addr in addresses[_name(srv.target)]]


def _name(name: str) -> str:
    return name.rstrip(".").lower()
