"""A gRPC echo server and a closed-loop unary client, for bench.http2's gRPC scenario.

    python -m bench.grpc_load serve --port 9000
    python -m bench.grpc_load call --target 127.0.0.1:9000 --seconds 5 --concurrency 16

`call` prints one JSON line: calls completed, errors and the seconds they took. Methods
use raw bytes, so neither side needs generated protobuf code.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent import futures

import grpc

METHOD = "/bench.Echo/Unary"


def serve(port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Echo", {"Unary": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def call(target: str, seconds: float, concurrency: int) -> dict:
    channel = grpc.insecure_channel(target)
    unary = channel.unary_unary(METHOD)
    unary(b"warm-up", timeout=10)
    counts = [0, 0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        done = errors = 0
        while time.monotonic() < deadline:
            try:
                unary(b"x" * 64, timeout=10)
                done += 1
            except grpc.RpcError:
                errors += 1
        with lock:
            counts[0] += done
            counts[1] += errors

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    channel.close()
    return {"calls": counts[0], "errors": counts[1], "seconds": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_load")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve")
    serve_parser.add_argument("--port", type=int, required=True)
    call_parser = sub.add_parser("call")
    call_parser.add_argument("--target", required=True)
    call_parser.add_argument("--seconds", type=float, default=5.0)
    call_parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port)
    else:
        print(json.dumps(call(args.target, args.seconds, args.concurrency)))


if __name__ == "__main__":
    main()
