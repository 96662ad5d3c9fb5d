"""The gossip schemes of ``edgecode run`` (paper 4): goco, gossip and gossip-wait on a local
coordinator and ``--peers`` peer processes, no master in the loop.

``edgecode run --schemes hgc,goco,gossip`` runs the master's schemes on the usual local cluster
first, then starts a second local cluster of peers only and runs the gossip schemes on it, with
the same data set, rounds and seed. For the gossip schemes ``--straggle`` applies to EVERY peer
independently (paper 4's model); its default there is ``bernoulli:p=0.3,factor=5`` (the master's
default, one persistent straggler, has no meaning for a graph of equal peers). GOCO's weight
``1/(d(1-p))`` takes p from a ``bernoulli`` spec (``--gossip-p`` overrides it).

Each row of ``--json`` carries per-round ``loss`` (of the average model, mean per row),
``gap``, ``consensus_distance`` and ``skipped_gradients`` (:func:`edgecode.gossip_records.records_as_row`).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from edgecode.cli import _args
from edgecode.cli._render import console, table

GOSSIP_SCHEMES = ("goco", "gossip", "gossip-wait")
#: --straggle for the gossip schemes when the user gives none (every peer, independently).
DEFAULT_GOSSIP_STRAGGLE = "bernoulli:p=0.3,factor=5"
#: A peer gives up its gradient this many times its nominal compute time into a round.
DEADLINE_FACTOR = 1.5
GRAPH_HELP = (
    "gossip graph: ring | torus | torus:rows=R | er:p=P | geometric:r=R | complete, or an "
    "edge-list FILE (one 'i j' pair per line) (default ring)"
)


def add_gossip_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the gossip schemes (``--schemes goco,gossip,gossip-wait``)."""
    group = parser.add_argument_group("gossip learning (--schemes goco,gossip,gossip-wait)")
    group.add_argument(
        "--peers",
        type=_args.integer(2, 256),
        default=12,
        help="peer processes on the graph (default 12)",
    )
    group.add_argument("--graph", default="ring", help=GRAPH_HELP)
    group.add_argument(
        "--replication",
        type=_args.integer(1),
        default=3,
        help="goco: d, the peers holding each partition (default 3; gossip uses 1)",
    )
    group.add_argument(
        "--non-iid", action="store_true", help="partitions sorted by label (non-iid peers)"
    )
    group.add_argument(
        "--gossip-lr",
        type=_args.number(above=0.0, high=100.0),
        default=0.2,
        help="step on the mean loss, in units of 1/L (default 0.2)",
    )
    group.add_argument(
        "--gossip-p",
        type=_args.number(low=0.0, high=0.99),
        default=None,
        help="goco: the straggle probability p in its weight 1/(d(1-p)) (default: the p of a "
        "bernoulli --straggle, else 0)",
    )


def gossip_schemes(schemes: list[str]) -> tuple[list[str], list[str]]:
    """(the master's schemes, the gossip schemes) of ``--schemes``, each in the given order."""
    return [s for s in schemes if s not in GOSSIP_SCHEMES], [
        s for s in schemes if s in GOSSIP_SCHEMES
    ]


def gossip_straggle(args: argparse.Namespace, default: str) -> str:
    """The emulation of every peer: ``--straggle`` when the user gave one, else a Bernoulli."""
    return args.straggle if args.straggle != default else DEFAULT_GOSSIP_STRAGGLE


def straggle_probability(straggle: str, override: float | None) -> float:
    """p for GOCO's weight: ``override``, else the ``p`` key of a ``bernoulli`` spec, else 0.

    >>> straggle_probability("bernoulli:p=0.3,factor=5", None), straggle_probability("none", 0.2)
    (0.3, 0.2)
    """
    if override is not None:
        return override
    name, _, rest = straggle.partition(":")
    if name != "bernoulli":
        return 0.0
    keys = dict(item.split("=", 1) for item in rest.split(",") if "=" in item)
    return float(keys.get("p", 0.0))


def gossip_specs(args: argparse.Namespace, schemes: list[str], default_straggle: str) -> list[Any]:
    """One validated job spec per gossip scheme (a graph FILE is read here); InvalidInput or
    ValueError name the bad flag before anything starts."""
    from edgecode.cli.gossip import _edges_of
    from edgecode.gossip_records import GossipJobSpec
    from edgecode.learning.gossip import GRAPH_KINDS

    graph: str = args.graph
    edges: tuple[tuple[int, int], ...] = ()
    if graph.partition(":")[0] not in GRAPH_KINDS:
        edges = _edges_of(Path(graph))
        graph = ""
    straggle = gossip_straggle(args, default_straggle)
    unit = args.compute_seconds / args.peers  # emulated seconds per partition
    return [
        GossipJobSpec(
            job_id=f"run-{scheme}-{int(time.time() * 1e3) % 10**9}",
            graph=graph,
            edges=edges,
            peers=args.peers,
            scheme=scheme,
            replication=args.replication if scheme == "goco" else 1,
            straggle_probability=straggle_probability(straggle, args.gossip_p),
            dataset=args.dataset,
            model=args.model if not args.model.startswith("torch:") else "",
            non_iid=args.non_iid,
            rounds=args.rounds,
            learning_rate=args.gossip_lr,
            partition_deadline_seconds=max(DEADLINE_FACTOR * unit, 1e-3),
            gossip_deadline_seconds=max(1.0, 20 * unit),
            report_params_every=1,
            seed=args.seed,
            straggle=straggle,
            compute_seconds=args.compute_seconds,
        ).validated()
        for scheme in schemes
    ]


def run_gossip(args: argparse.Namespace, specs: list[Any]) -> list[dict[str, Any]]:
    """Start a coordinator and ``--peers`` peers, run every spec, stop them; the JSON rows."""
    from edgecode.bench.goco import run_gossip_scheme
    from edgecode.cluster.local import LocalGossipCluster, gossip_peers

    workdir = Path(args.workdir) / "gossip" if args.workdir else None
    peers = gossip_peers(args.peers, seed=args.seed)
    with console().status(f"starting a coordinator and {args.peers} peer processes ..."):
        cluster = LocalGossipCluster(peers, workdir)
        cluster.start()
    rows = []
    try:
        console().print(
            f"gossip cluster up (logs in {cluster.workdir}); every peer straggles as "
            f"{specs[0].straggle or 'none'}"
        )
        for spec in specs:
            with console().status(f"{spec.scheme}: {spec.rounds} rounds on {args.peers} peers ..."):
                started = time.monotonic()
                row = run_gossip_scheme(cluster.coordinator_address, spec)
            row["end_to_end_seconds"] = time.monotonic() - started
            spr = row.get("seconds_per_round")
            row["mean_round_seconds"] = spr if spr is not None else math.nan
            row["setup_seconds"] = row.get("setup_seconds") or 0.0
            rows.append(row)
    finally:
        cluster.stop()
    return rows


def report_gossip(rows: list[dict[str, Any]]) -> None:
    """One table: per scheme its rounds, time per round, final loss, gap and consensus."""

    def last(values: list[float | None]) -> str:
        finite = [v for v in values if v is not None]
        return f"{finite[-1]:.3g}" if finite else "-"

    table(
        "Gossip learning (no master; loss of the average model)",
        [
            "scheme",
            "state",
            "graph",
            "d",
            "rounds",
            "ms/round",
            "loss",
            "gap",
            "consensus",
            "skipped",
        ],
        [
            [
                r["scheme"],
                r["state"],
                r["graph"],
                r["replication"],
                len(r["rounds"]),
                f"{r['mean_round_seconds'] * 1e3:.1f}"
                if math.isfinite(r["mean_round_seconds"])
                else "-",
                last(r["loss"]),
                last(r["gap"]),
                last(r["consensus_distance"]),
                sum(r["skipped_gradients"]),
            ]
            for r in rows
        ],
        caption="skipped: gradients given up at the compute deadline, over all rounds and peers",
    )
