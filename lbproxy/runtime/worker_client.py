"""The supervisor's line to its workers: HTTP over each worker's private admin socket.

Used to merge the workers' stats and pass API writes on (lbproxy/admin/fanout.py) and to
share worker 0's health results (lbproxy/runtime/health_share.py). A worker that does not
answer (restarting) gives a 502 answer with a JSON error, never an exception.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp

from lbproxy.runtime.control import socket_path

WORKER_TIMEOUT = aiohttp.ClientTimeout(total=10)
Answer = tuple[int, bytes, str]          # status, body, content type


class WorkerClient:
    def __init__(self, control: str, count: int) -> None:
        self.sessions = [aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=socket_path(control, index)),
            timeout=WORKER_TIMEOUT) for index in range(count)]

    @property
    def count(self) -> int:
        return len(self.sessions)

    async def ask(self, index: int, method: str, path: str, query: str = "",
                  body: bytes = b"") -> Answer:
        url = f"http://worker{path}" + (f"?{query}" if query else "")
        try:
            async with self.sessions[index].request(method, url, data=body or None) as reply:
                return reply.status, await reply.read(), reply.content_type
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            error = json.dumps({"error": f"worker {index} did not answer: {exc}"}).encode()
            return 502, error, "application/json"

    async def ask_all(self, method: str, path: str, query: str = "",
                      body: bytes = b"") -> list[Answer]:
        return list(await asyncio.gather(*(self.ask(index, method, path, query, body)
                                           for index in range(self.count))))

    async def close(self) -> None:
        for session in self.sessions:
            await session.close()
