"""A live backend server: its configuration plus the state the data plane changes.

Admin state (ready/drain/maint, set by config or the API) and health (up/down, set by
checks) are kept apart, as in HAProxy; `usable` and `available` combine them so that
every balancing algorithm asks one question.
"""

from __future__ import annotations

READY = "ready"
DRAIN = "drain"
MAINT = "maint"
ADMIN_STATES = (READY, DRAIN, MAINT)


class Server:
    """One server of a backend. Attributes are read on the hot path, hence __slots__."""

    __slots__ = (
        "name", "address", "cookie", "backup", "maxconn", "config_weight", "weight",
        "slowstart", "admin", "up", "in_flight", "requests", "__weakref__",
    )

    def __init__(self, name: str, address: object, *, weight: int = 1, maxconn: int = 0,
                 backup: bool = False, cookie: str | None = None, slowstart: float = 0.0,
                 admin: str = READY, up: bool = True) -> None:
        self.name = name
        self.address = address          # lbproxy.config Address; opaque to balancers
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

    def __repr__(self) -> str:
        return f"<Server {self.name} w={self.weight} admin={self.admin} up={self.up}>"
