"""A live backend server: its configuration plus the state the data plane changes.

Admin state (ready/drain/maint, set by config or the API) and health (up/down, set by
checks) are kept apart, as in HAProxy; `usable` and `available` combine them so that
every balancing algorithm asks one question.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lbproxy.config.schema import Address

# Response-time histogram bounds in seconds (Prometheus-style upper bounds; +Inf implied).
# Counted per server with one bisect per response: no lock, no allocation.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)

READY = "ready"
DRAIN = "drain"
MAINT = "maint"
ADMIN_STATES = (READY, DRAIN, MAINT)


class Server:
    """One server of a backend. Attributes are read on the hot path, hence __slots__."""

    __slots__ = (
        "name", "address", "cookie", "backup", "maxconn", "config_weight", "weight",
        "slowstart", "admin", "up", "in_flight", "requests", "responses", "failures",
        "bytes_in", "bytes_out", "pool", "check", "last_change", "reason", "max_in_flight",
        "latency_counts", "latency_sum", "dynamic", "pool_config", "__weakref__",
    )

    def __init__(self, name: str, address: Address, *, weight: int = 1, maxconn: int = 0,
                 backup: bool = False, cookie: str | None = None, slowstart: float = 0.0,
                 admin: str = READY, up: bool = True) -> None:
        self.name = name
        self.address = address          # opaque to balancers
        self.cookie = cookie or name    # sticky-cookie value
        self.backup = backup
        self.maxconn = maxconn          # 0 = unlimited
        self.config_weight = weight     # weight as configured or set through the API
        self.weight = weight            # effective weight (lower during slowstart)
        self.slowstart = slowstart
        self.admin = admin
        self.up = up                    # health: True when checks (or none) say UP
        self.in_flight = 0              # requests currently being served
        self.requests = 0               # requests sent, ever
        self.dynamic = False            # added while running (API, discovery): kept on reload
        self.responses = [0] * 6        # responses by status class: index 1..5 = 1xx..5xx
        self.failures = 0               # connect errors, timeouts, invalid or lost responses
        self.bytes_in = 0               # request bytes sent to the server
        self.bytes_out = 0              # response body bytes received from it
        self.pool = None                # lbproxy.proxy.upstream.ServerPool, set by the engine
        self.pool_config: tuple = ()    # what the pool was built with (Backend._pool_key)
        self.max_in_flight = 0          # peak of in_flight
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)   # last slot: over the top
        self.latency_sum = 0.0
        self.check = "none"             # health: none | checking | up | down (set by health/)
        self.last_change = 0.0          # wall-clock time of the last state change
        self.reason = ""                # why: "Layer7 wrong status 500", "connect timeout"...

    def observe_latency(self, seconds: float) -> None:
        """Count one response time (headers to last byte) in the histogram."""
        self.latency_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    @property
    def state(self) -> str:
        """The state operators see: MAINT, DRAIN, DOWN, CHECKING or UP."""
        if self.admin == MAINT:
            return "MAINT"
        if self.admin == DRAIN:
            return "DRAIN"
        if not self.up:
            return "CHECKING" if self.check == "checking" else "DOWN"
        return "UP"

    @property
    def usable(self) -> bool:
        """May receive new traffic: healthy, ready and with a weight above 0."""
        return self.up and self.admin == READY and self.weight > 0

    @property
    def full(self) -> bool:
        return 0 < self.maxconn <= self.in_flight

    @property
    def available(self) -> bool:
        """Usable and not at maxconn: the one predicate every algorithm checks."""
        return self.up and self.admin == READY and self.weight > 0 and not (
            0 < self.maxconn <= self.in_flight)

    @property
    def host_header(self) -> bytes:
        """A Host value naming this server, for a request that arrived without one."""
        address = self.address
        return b"localhost" if address.unix is not None else str(address).encode()

    def __repr__(self) -> str:
        return f"<Server {self.name} w={self.weight} admin={self.admin} up={self.up}>"
