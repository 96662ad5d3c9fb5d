"""The ``edgecode`` console script: one entry point, one module per subcommand.

Each module in :data:`COMMANDS` exposes ``register(subparsers)``, which adds its subcommand and
sets ``func`` (taking the parsed namespace, returning an exit code). Only this package configures
logging; nothing imports it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edgecode import __version__

#: Modules that register several subcommands.
MODULES = {
    "train": "run",
    "coordinator": "services",
    "master": "services",
    "aggregator": "services",
    "worker": "services",
}
#: Subcommands, in the order ``--help`` lists them.
COMMANDS = (
    "run",
    "train",
    "plan",
    "simulate",
    "report",
    "codes",
    "bench",
    "matmul",
    "coordinator",
    "master",
    "aggregator",
    "worker",
    "peer",
    "gossip",
    "health",
    "cluster",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgecode",
        description=(
            "Straggler-resilient coded learning and sparse matrix computation on edge clusters. "
            "Every device computes a little more than its share, so that the results of any large "
            "enough subset of devices give the exact answer."
        ),
    )
    parser.add_argument("--version", action="version", version=f"edgecode {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    subparsers = parser.add_subparsers(title="subcommands", metavar="COMMAND")
    registered = set()
    for name in COMMANDS:
        module = MODULES.get(name, name)
        if module not in registered:
            importlib.import_module(f"edgecode.cli.{module}").register(subparsers)
            registered.add(module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"edgecode: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
