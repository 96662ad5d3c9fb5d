"""``edgecode peer``: start one gossip peer (the coordinator introduces its neighbours)."""

from __future__ import annotations

import argparse

from edgecode.cli._config import add_config_flags

SUMMARY = "start a gossip peer: runs GOCO rounds with its graph neighbours"

HELP = {
    "host": "address to bind the gRPC server to",
    "port": "gRPC port (0 = any free port)",
    "metrics_host": "address to bind the Prometheus /metrics endpoint to",
    "metrics_port": "metrics port (0 = any free port)",
    "advertise_host": "host name other nodes use to reach this one (default: --host)",
    "ready_file": "write the bound addresses as JSON here once serving",
    "grace_seconds": "seconds in-flight calls get on SIGTERM",
    "name": "this peer's unique name, ending in its index in the graph (peer-3)",
    "coordinator": "coordinator address HOST:PORT (it introduces the neighbours)",
    "straggle": "straggler emulation, e.g. none, slow:factor=5, bernoulli:p=0.2,factor=5",
    "compute_seconds": "emulated seconds to process the WHOLE data set (a peer spends its fraction)",
    "seed": "seed of the straggler emulation",
}


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str | None = None
) -> None:
    from edgecode.peer.run import PeerConfig

    parser = subparsers.add_parser(
        "peer",
        help=SUMMARY,
        description=(
            "Start one gossip peer. It registers with the coordinator as role 'peer'; for each "
            "gossip job the coordinator places its partitions and names its neighbours, and the "
            "peer runs its rounds by itself (compute, local step, gossip with the neighbours, "
            "mix). Stops on SIGTERM: health NOT_SERVING, then a graceful server stop."
        ),
    )
    add_config_flags(parser, PeerConfig, HELP)
    parser.set_defaults(func=_start)


def _start(args: argparse.Namespace) -> int:
    """Like every role (``cli/services.py``): build the config, check what it names, run."""
    import logging
    import os
    import sys

    from edgecode.cli._config import resolve
    from edgecode.cli.services import check_files, check_listen
    from edgecode.peer.run import PeerConfig, run

    config, sources = resolve(PeerConfig, args, "peer")
    check_files(config, sources)
    for host, port in (("host", "port"), ("metrics_host", "metrics_port")):
        check_listen(config, host, port, sources)
    result = run(config)
    # As the other roles: leave without the interpreter's slow gRPC teardown once stopped.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(result)
