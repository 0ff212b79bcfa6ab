"""The baseline lbproxy is compared with: the obvious aiohttp reverse proxy.

An aiohttp server whose one handler forwards through a ClientSession and reads each reply
whole before answering, as a first attempt does. It runs on uvloop with an unlimited
keep-alive pool, so what the benchmark shows is the cost of the framework's request
objects and buffering, not of the event loop or a pool limit.

    python -m bench.naive_aiohttp_proxy --port 8080 --upstream http://127.0.0.1:9001
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import uvloop
from aiohttp import ClientSession, TCPConnector, web
from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade", "content-length", "host"})
SESSION = web.AppKey("session", ClientSession)
UPSTREAM = web.AppKey("upstream", str)


def _end_to_end(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP)


async def forward(request: web.Request) -> web.Response:
    headers = _end_to_end(request.headers)
    headers["X-Forwarded-For"] = request.remote or ""
    async with request.app[SESSION].request(
            request.method, request.app[UPSTREAM] + request.raw_path, headers=headers,
            data=request.content if request.body_exists else None, allow_redirects=False) as reply:
        return web.Response(status=reply.status, headers=_end_to_end(reply.headers), body=await reply.read())


async def _session(app: web.Application) -> AsyncIterator[None]:
    async with ClientSession(connector=TCPConnector(limit=0), auto_decompress=False) as session:
        app[SESSION] = session
        yield


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.naive_aiohttp_proxy")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT")
    args = parser.parse_args()
    app = web.Application()
    app[UPSTREAM] = args.upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
