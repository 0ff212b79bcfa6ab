"""The `lbproxy` command: run | check | demo | reload | autoscale."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from lbproxy import __version__, compiled
from lbproxy.config.errors import ConfigError
from lbproxy.config.schema import Config
from lbproxy.runtime.validate import load_checked


def _load(path: str) -> Config | None:
    try:
        return load_checked(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    if _load(args.config) is None:
        return 1
    print("configuration is valid")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from lbproxy.runtime.control import WorkerRole
    from lbproxy.runtime.serve import run_loop, serve

    config = _load(args.config)
    if config is None:
        return 1
    if args.worker_index is not None:
        role = WorkerRole(args.worker_index, config.global_.workers, args.control_dir)
        return run_loop(serve(config, args.config, worker=role))
    if config.global_.workers > 1:
        # only a supervisor needs its fan-out admin server and prometheus_client's parser
        from lbproxy.runtime.workers import Supervisor

        return run_loop(Supervisor(config, args.config).run())
    return run_loop(serve(config, args.config))


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask a running proxy to reload: SIGHUP to the pidfile's process, else the API."""
    config = _load(args.config)
    if config is None:
        return 1
    pidfile = config.global_.pidfile
    if pidfile:
        try:
            with open(pidfile) as f:
                os.kill(int(f.read().strip()), signal.SIGHUP)
        except (OSError, ValueError) as exc:
            print(f"cannot signal the process in {pidfile}: {exc}", file=sys.stderr)
            return 1
        print(f"sent SIGHUP to the process in {pidfile}")
        return 0
    if config.stats is None:
        print("no global.pidfile and no stats: section: nothing to reach the proxy by",
              file=sys.stderr)
        return 1
    return _reload_through_api(config)


def _reload_through_api(config: Config) -> int:
    import base64
    import json
    import urllib.error
    import urllib.request

    stats = config.stats
    host = stats.bind.host or "127.0.0.1"
    request = urllib.request.Request(f"http://{host}:{stats.bind.port}/api/reload",
                                     method="POST")
    if stats.auth is not None:
        token = base64.b64encode(f"{stats.auth.username}:{stats.auth.password}".encode())
        request.add_header("Authorization", "Basic " + token.decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            print(json.loads(response.read()))
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(errors="replace"), file=sys.stderr)
    except OSError as exc:
        print(f"cannot reach the runtime API: {exc}", file=sys.stderr)
    return 1


def cmd_demo(args: argparse.Namespace) -> int:
    from lbproxy.demo.run import run_demo

    return run_demo(port=args.port, stats_port=args.stats_port, backends=args.backends)


def cmd_autoscale(args: argparse.Namespace) -> int:
    from lbproxy.autoscale.controller import run_autoscaler

    config = _load(args.config)
    if config is None:
        return 1
    if config.autoscale is None:
        print(f"{args.config}: no autoscale: section", file=sys.stderr)
        return 1
    return run_autoscaler(config, dry_run=args.dry_run)


def build_parser() -> argparse.ArgumentParser:
    """The command line: `lbproxy [--version] COMMAND ...` (exit codes in docs/configuration.md:
    0 success, 1 an invalid configuration or a failed start or request, 2 a usage error)."""
    parser = argparse.ArgumentParser(prog="lbproxy",
                                     description="asyncio HTTP reverse-proxy load balancer")
    variant = "compiled" if compiled.accelerated() else "pure Python"   # lbproxy/compiled.py
    parser.add_argument("--version", action="version", version=f"lbproxy {__version__} ({variant})")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the proxy")
    run.add_argument("-c", "--config", required=True, help="YAML file or conf/ directory")
    # set by the supervisor for its workers (global.workers > 1), not by users
    run.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    run.add_argument("--control-dir", help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="validate a configuration and exit")
    check.add_argument("-c", "--config", required=True, help="YAML file or conf/ directory")
    check.set_defaults(func=cmd_check)
    demo = sub.add_parser("demo", help="demo backends + proxy, no other service needed")
    demo.add_argument("--port", type=int, default=8080, help="proxy port (default 8080)")
    demo.add_argument("--stats-port", type=int, default=8404,
                      help="stats page, metrics and API port (default 8404)")
    demo.add_argument("--backends", type=int, default=3, help="demo app servers (default 3)")
    demo.set_defaults(func=cmd_demo)
    reload = sub.add_parser("reload", help="make a running proxy re-read its configuration")
    reload.add_argument("-c", "--config", required=True, help="YAML file or conf/ directory")
    reload.set_defaults(func=cmd_reload)
    autoscale = sub.add_parser("autoscale", help="run the autoscaler sidecar")
    autoscale.add_argument("-c", "--config", required=True, help="YAML file or conf/ directory")
    autoscale.add_argument("--dry-run", action="store_true",
                           help="log decisions, create and remove nothing")
    autoscale.set_defaults(func=cmd_autoscale)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
