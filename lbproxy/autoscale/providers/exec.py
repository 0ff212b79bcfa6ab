"""`type: exec`: the user's own scripts create and destroy servers.

`create` runs through the shell and prints the new server's address (HOST:PORT) as the
last line of its stdout; a HOST:PORT address must accept connections before the server
is handed to the proxy. `destroy` runs with that address appended as its argument. Both
get LBPROXY_POOL in their environment. The address is the server's id; the state file
remembers them, so a restarted autoscaler still knows (and can remove) what it created.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess

from lbproxy.autoscale.providers.base import Instance, ProviderError, RecordedProvider, log, \
    wait_port
from lbproxy.config.durations import parse_address

SCRIPT_TIMEOUT = 120.0   # seconds a create or destroy script may run
START_TIMEOUT = 30.0     # seconds the created address gets to accept connections


class ExecProvider(RecordedProvider):
    async def _run(self, command: str) -> str:
        """Run `command` in a shell; its stdout, or ProviderError with its stderr tail."""
        env = {**os.environ, "LBPROXY_POOL": self.pool}
        proc = await asyncio.create_subprocess_shell(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, start_new_session=True)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), SCRIPT_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise ProviderError(f"{command!r} did not finish within {SCRIPT_TIMEOUT:g}s") \
                from None
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip()[-300:]
            raise ProviderError(f"{command!r} exited with status {proc.returncode}: {tail}")
        return out.decode(errors="replace")

    async def create(self) -> Instance:
        out = await self._run(self.config.create or "")
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        if not lines:
            raise ProviderError(f"{self.config.create!r} printed no address")
        address = lines[-1]
        try:
            parsed = parse_address(address, allow_unix=True)
        except ValueError as exc:
            raise ProviderError(f"{self.config.create!r} printed {address!r}: {exc}") from None
        if parsed.unix is None:
            await wait_port(parsed.host or "127.0.0.1", parsed.port, START_TIMEOUT)
        log.info("autoscale %s: created %s", self.pool, address)
        return self._remember({"id": address, "address": address})

    async def destroy(self, instance_id: str) -> None:
        record = self._records.get(instance_id)
        if record is None:
            raise ProviderError(f"no server {instance_id!r} in pool {self.pool}")
        await self._run(f"{self.config.destroy} {shlex.quote(record['address'])}")
        self._forget(instance_id)
        log.info("autoscale %s: destroyed %s", self.pool, record["address"])
