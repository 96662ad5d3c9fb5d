"""The ``edgecode`` console script: one entry point, one module per subcommand.

Only the subcommand being run is built: ``edgecode --help`` lists every subcommand from
:data:`COMMANDS` (name and one line) without importing any of their modules, and ``edgecode
NAME ...`` imports ``edgecode.cli.<module>`` and calls its ``register(subparsers, name)``, which
adds the full parser of NAME and sets ``func`` (taking the parsed namespace, returning an exit
code). Nothing heavy (grpc, numpy, scipy, matplotlib, rich, the roles) is imported at module level
anywhere in this package.

Errors a user can cause (a bad flag, key, file or address) end in one line naming it and exit
code 2 (:mod:`edgecode.cli._errors`). Only this package configures logging; nothing imports it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edgecode import __version__
from edgecode.cli import _errors
from edgecode.cli._args import Parser

#: Subcommand -> (module under edgecode.cli, one-line help), in the order ``--help`` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": (
        "run",
        "start a local cluster with stragglers and train with every scheme side by side",
    ),
    "train": ("train", "submit a training job to a running master and show its progress"),
    "plan": ("plan", "choose the plan with the smallest expected round time for a cluster spec"),
    "simulate": ("simulate", "simulate rounds of every scheme on a cluster spec (CSV + PNG)"),
    "report": (
        "report",
        "speed-up of the optimized plan over uncoded as stragglers worsen (PNG + Markdown)",
    ),
    "codes": ("codes", "inspect and verify the gradient and matrix codes"),
    "bench": ("bench", "benchmarks, each measured side by side with its baseline in one run"),
    "matmul": (
        "matmul",
        "A^T x or A^T B on a coded cluster: any k of n workers give the exact product",
    ),
    "coordinator": ("services", "start a coordinator: membership, live timings, the planner"),
    "master": (
        "services",
        "start a master: training jobs: placement, rounds, decoding, checkpoints",
    ),
    "aggregator": (
        "services",
        "start an aggregator: edge aggregator: fan-out, first decodable set",
    ),
    "worker": ("services", "start a worker: holds partitions, computes coded gradients"),
    "peer": ("peer", "start a gossip peer: runs GOCO rounds with its graph neighbours"),
    "gossip": (
        "gossip",
        "launch a gossip learning job (GOCO, gossip, gossip-wait) on the peers and follow it",
    ),
    "health": ("health", "exit 0 when a service's gRPC health check says SERVING"),
    "cluster": (
        "cluster",
        "drive the docker compose cluster: up, down, status, pause/unpause/kill/logs NODE",
    ),
}

DESCRIPTION = (
    "Straggler-resilient coded learning and sparse matrix computation on edge clusters. "
    "Every device computes a little more than its share, so that the results of any large "
    "enough subset of devices give the exact answer."
)


def command_help(name: str) -> str:
    """The one-line help of a subcommand (the same in ``edgecode --help`` and its module)."""
    return COMMANDS[name][1]


def build_parser(*full: str) -> argparse.ArgumentParser:
    """The ``edgecode`` parser: every subcommand listed, the ones in ``full`` built in full.

    >>> build_parser("plan").parse_args(["plan", "spec.toml", "--partitions", "4"]).partitions
    4
    """
    parser = Parser(prog="edgecode", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"edgecode {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    subparsers = parser.add_subparsers(title="subcommands", metavar="COMMAND", parser_class=Parser)
    for name, (module, summary) in COMMANDS.items():
        if name in full:
            importlib.import_module(f"edgecode.cli.{module}").register(subparsers, name)
        else:  # a placeholder: its name and one line for the listing
            subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not an option (the top-level
    options take no values)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = command_of(argv)
    parser = build_parser(*([name] if name in COMMANDS else []))
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
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        code = _errors.report(exc)  # not imported by name: edgecode.cli.report is a module
        if code is None:
            raise
        if args.verbose:  # -v: the whole story as well
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
