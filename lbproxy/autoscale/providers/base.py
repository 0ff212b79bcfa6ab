"""The provider interface: how the autoscaler creates, lists and destroys servers.

A provider knows nothing about the proxy. The controller asks it for a server
(`create`), puts the address it returns into the backend through the runtime API, and
only calls `destroy` once the proxy has drained and removed that server. `list` is the
provider's own view of what it runs (oldest first), which the controller reconciles with
the backend every interval, so a restarted proxy or autoscaler converges again.

Also here: what several providers share, the wait for a new server's port and the small
JSON state file the process and exec providers keep to adopt their servers after a
restart of the autoscaler.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import socket
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp

from lbproxy.config.schema import ProviderConfig

log = logging.getLogger("lbproxy.autoscale")

PORT_WAIT = 0.05          # seconds between connection attempts while a new server starts
STATE_DIR_ENV = "LBPROXY_AUTOSCALE_STATE_DIR"   # overrides $XDG_RUNTIME_DIR / the temp dir


class NotSupported(Exception):
    """The provider cannot measure CPU or memory (said once at start)."""


class ProviderError(Exception):
    """A create/destroy/list the provider could not carry out; the message says why."""


class Instance(NamedTuple):
    """A server the provider runs: `id` is the provider's handle, `address` HOST:PORT."""

    id: str
    address: str


class Usage(NamedTuple):
    """CPU (percent of one core) and memory (percent of the machine or the limit)."""

    cpu: float | None
    memory: float | None


class Provider(ABC):
    """One pool's source of servers. Methods raise ProviderError on failure."""

    # True when the servers this provider starts must not outlive the autoscaler
    # (the process provider without keep_on_exit): the controller drains and destroys
    # them on SIGTERM.
    stop_on_exit = False
    # True when `usage` can answer; the controller says once at start when it cannot.
    measures_usage = False

    def __init__(self, config: ProviderConfig, pool: str) -> None:
        self.config = config
        self.pool = pool

    async def start(self) -> None:
        """Open sessions, adopt servers started by an earlier run."""

    async def close(self) -> None:
        """Release sessions; servers keep running (stop_on_exit is the controller's job)."""

    @abstractmethod
    async def create(self) -> Instance: ...

    @abstractmethod
    async def destroy(self, instance_id: str) -> None: ...

    @abstractmethod
    async def list(self) -> list[Instance]: ...

    async def usage(self, instance_id: str) -> Usage:
        """CPU and memory of one server; NotSupported when the provider cannot tell."""
        raise NotSupported(f"the {self.config.type} provider does not measure cpu or memory")

    def server_name(self, instance: Instance) -> str:
        """The backend server name for `instance`: `{pool}-as-{id}`, a valid config name."""
        safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in instance.id)
        return f"{self.pool}-as-{safe}"

    def owns_name(self, name: str) -> bool:
        """True for names this pool's provider gives its servers."""
        return name.startswith(f"{self.pool}-as-")


class ApiProvider(Provider):
    """A provider that talks HTTP to an orchestrator (docker, kubernetes); the session
    opens in `start` (inside the event loop) and closes in `close`."""

    _session: aiohttp.ClientSession | None = None

    def _open(self, **kwargs: Any) -> aiohttp.ClientSession:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60), **kwargs)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def free_port_in(host: str, ports: tuple[int, int] | None, taken: set[int]) -> int:
    """The first port of the inclusive range not in `taken` that `host` can bind now."""
    low, high = ports or (0, -1)
    for port in range(low, high + 1):
        if port in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        return port
    raise ProviderError(f"no free port in {low}-{high} on {host}")


async def wait_port(host: str, port: int, timeout: float,
                    alive: Callable[[], bool] = lambda: True) -> None:
    """Return once host:port accepts a connection; ProviderError after `timeout` or
    as soon as `alive()` says the server process is gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if not alive():
                raise ProviderError(f"the server for {host}:{port} exited while starting") \
                    from None
            if time.monotonic() > deadline:
                raise ProviderError(f"{host}:{port} did not accept connections within "
                                    f"{timeout:g}s") from None
            await asyncio.sleep(PORT_WAIT)
            continue
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return


def state_dir() -> Path:
    """Where state files live: $LBPROXY_AUTOSCALE_STATE_DIR, $XDG_RUNTIME_DIR or /tmp."""
    for env in (STATE_DIR_ENV, "XDG_RUNTIME_DIR"):
        if os.environ.get(env):
            return Path(os.environ[env])
    return Path(tempfile.gettempdir())


class StateFile:
    """`lbproxy-autoscale-<pool>.json`: the records of the servers a provider started.

    Written atomically (temp file + rename) after every change, so a crash never leaves
    half a file and a restarted autoscaler adopts exactly what was running. `lock` takes
    an flock on a sibling `.lock` file for the life of the process: two autoscalers
    adopting, and then stopping, each other's servers would fight without end.
    """

    def __init__(self, pool: str, directory: Path | None = None) -> None:
        self.path = (directory or state_dir()) / f"lbproxy-autoscale-{pool}.json"
        self._lock: int | None = None

    def lock(self) -> None:
        if self._lock is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ProviderError(f"another autoscaler manages this pool ({self.path} is "
                                "locked)") from None
        self._lock = fd

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def load(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("autoscale: ignoring unreadable state file %s: %s", self.path, exc)
            return []
        return [r for r in data.get("servers", []) if isinstance(r, dict)]

    def save(self, records: list[dict[str, Any]]) -> None:
        if not records:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"servers": records}, indent=1))
        tmp.replace(self.path)


class RecordedProvider(Provider):
    """A provider whose only memory of its servers is a StateFile (process, exec).

    `_records` maps instance id to a JSON-able record holding at least "address";
    insertion order is creation order, which `list` reports (oldest first).
    """

    def __init__(self, config: ProviderConfig, pool: str, state: StateFile | None = None) -> None:
        super().__init__(config, pool)
        self._state = state or StateFile(pool)
        self._records: dict[str, dict[str, Any]] = {}

    async def start(self) -> None:
        self._state.lock()
        for record in self._state.load():
            if self._adoptable(record):
                self._records[str(record["id"])] = record
                log.info("autoscale %s: adopted %s (%s) from %s", self.pool, record["id"],
                         record["address"], self._state.path)
        self._save()

    async def close(self) -> None:
        self._state.unlock()

    def _adoptable(self, record: dict[str, Any]) -> bool:
        """Whether a record from an earlier run still describes a live server."""
        return "id" in record and "address" in record

    def _remember(self, record: dict[str, Any]) -> Instance:
        self._records[str(record["id"])] = record
        self._save()
        return Instance(str(record["id"]), record["address"])

    def _forget(self, instance_id: str) -> dict[str, Any]:
        record = self._records.pop(instance_id, None)
        if record is None:
            raise ProviderError(f"no server {instance_id!r} in pool {self.pool}")
        self._save()
        return record

    def _save(self) -> None:
        self._state.save(list(self._records.values()))

    async def list(self) -> list[Instance]:
        return [Instance(key, r["address"]) for key, r in self._records.items()]



async def http_json(session: aiohttp.ClientSession, method: str, url: str,
                    ok_missing: bool = False, **kwargs: Any) -> Any:
    """One JSON call to the Docker or Kubernetes API; ProviderError with the API's own
    `message` on any non-2xx answer (None for a 404 when `ok_missing`)."""
    try:
        async with session.request(method, url, **kwargs) as response:
            body = await response.read()
            if response.status == 404 and ok_missing:
                return None
            data = json.loads(body) if body.strip() else None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ProviderError(f"{method} {url}: {exc or type(exc).__name__}") from None
    except ValueError:
        data = {"message": body.decode(errors="replace")[:200]}
    if response.status >= 400:          # Docker answers 304 to stopping a stopped container
        message = data.get("message") if isinstance(data, dict) else None
        raise ProviderError(f"{method} {url}: {response.status} {message or response.reason}")
    return data
