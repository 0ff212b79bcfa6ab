"""The `lbproxy` command: run | check | demo | autoscale."""

from __future__ import annotations

import argparse
import logging
import sys

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
    from lbproxy.runtime.serve import run_loop, serve

    config = _load(args.config)
    if config is None:
        return 1
    return run_loop(serve(config))


def cmd_demo(args: argparse.Namespace) -> int:
    from lbproxy.demo.run import run_demo

    return run_demo(port=args.port, backends=args.backends)


def cmd_autoscale(args: argparse.Namespace) -> int:
    from lbproxy.autoscale.controller import run_autoscaler

    config = _load(args.config)
    if config is None:
        return 1
    if config.autoscale is None:
        print(f"{args.config}: no autoscale: section", file=sys.stderr)
        return 1
    return run_autoscaler(config, dry_run=args.dry_run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lbproxy",
                                     description="asyncio HTTP reverse-proxy load balancer")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the proxy")
    run.add_argument("-c", "--config", required=True, help="YAML file or conf/ directory")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="validate a configuration and exit")
    check.add_argument("-c", "--config", required=True, help="YAML file or conf/ directory")
    check.set_defaults(func=cmd_check)
    demo = sub.add_parser("demo", help="demo backends + proxy, no other service needed")
    demo.add_argument("--port", type=int, default=8080, help="proxy port (default 8080)")
    demo.add_argument("--backends", type=int, default=3, help="demo app servers (default 3)")
    demo.set_defaults(func=cmd_demo)
    autoscale = sub.add_parser("autoscale", help="run the autoscaler sidecar")
    autoscale.add_argument("-c", "--config", required=True, help="YAML file or conf/ directory")
    autoscale.add_argument("--dry-run", action="store_true",
                           help="log decisions, create and remove nothing")
    autoscale.set_defaults(func=cmd_autoscale)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
