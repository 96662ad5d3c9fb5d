"""``edgecode run``: a local cluster training with stragglers, every scheme side by side.

Everything a user can get wrong is checked before the cluster starts: the flags as they are
parsed (:mod:`edgecode.cli._args`), then the cluster spec file, the straggler counts against
the cluster's shape and every scheme's job spec (:func:`edgecode.cli._jobs.check_job`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecode.cli import _args, command_help
from edgecode.cli._errors import remote
from edgecode.cli._gossip_run import (
    GOSSIP_SCHEMES,
    add_gossip_flags,
    gossip_schemes,
    gossip_specs,
    report_gossip,
    run_gossip,
)
from edgecode.cli._jobs import (
    GRADIENT_SCHEMES,
    JOB_SCHEMES,
    add_scheme_flags,
    add_targets,
    check_job,
    report,
    scheme_options,
    submit_and_follow,
)
from edgecode.cli._render import console
from edgecode.datapaths import job_file_dirs

if TYPE_CHECKING:  # heavy imports happen inside the commands, so other subcommands start fast
    from edgecode.cluster.local import ClusterSetup
    from edgecode.master.client import MasterClient
    from edgecode.planning.spec import WorkerSpec
    from edgecode.records import JobConfig

DEFAULT_SCHEMES = ",".join(GRADIENT_SCHEMES)
#: Flags a --spec replaces (with their defaults): giving one beside --spec is an error.
REPLACED_BY_SPEC = {
    "edges": 2,
    "workers_per_edge": 4,
    "straggle": "slow:factor=5",
    "slow_link": 0.02,
    "compute_seconds": 0.24,
}


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str = "run"
) -> None:
    run = subparsers.add_parser(
        "run",
        help=command_help("run"),
        description=(
            "Start a local cluster as separate processes on loopback (coordinator, master, edge "
            "aggregators, workers; one worker a persistent straggler, one edge on a slow link), "
            "train logistic regression on a bundled real data set with hierarchical gradient "
            "coding (the planner's plan unless --s-edge/--s-worker are given), then with the "
            "baselines on the same cluster, and print round times (mean and median), setup, "
            "placement, end-to-end and time-to-target seconds, loss and accuracy. Every flag is "
            "checked before the cluster starts."
        ),
    )
    _cluster_flags(run)
    _job_flags(run)
    _output_flags(run)
    run.set_defaults(func=_run)


def _cluster_flags(parser: argparse.ArgumentParser) -> None:
    """The cluster: its shape, stragglers and links (or a spec file), and the straggler counts."""
    d = REPLACED_BY_SPEC
    parser.add_argument(
        "--edges", type=_args.integer(1), default=d["edges"], help="edge aggregators (default 2)"
    )
    parser.add_argument(
        "--workers-per-edge",
        type=_args.integer(1),
        default=d["workers_per_edge"],
        help="workers per edge (default 4)",
    )
    parser.add_argument(
        "--s-edge",
        type=_args.integer(0),
        default=None,
        help="edge stragglers tolerated (default: planner)",
    )
    parser.add_argument(
        "--s-worker",
        type=_args.integer(0),
        default=None,
        help="worker stragglers per edge (default: planner)",
    )
    parser.add_argument(
        "--s-flat",
        type=_args.integer(0),
        default=1,
        help="stragglers for flat and ignore (default 1)",
    )
    parser.add_argument(
        "--plan", action="store_true", help="use the planner's plan (the default unless s is given)"
    )
    parser.add_argument(
        "--straggle",
        type=_args.straggle,
        default=d["straggle"],
        help="the persistent straggler's model (default slow:factor=5)",
    )
    parser.add_argument(
        "--slow-link",
        type=_args.seconds,
        default=d["slow_link"],
        help="link delay of the slow edge, seconds (default 0.02)",
    )
    parser.add_argument(
        "--compute-seconds",
        type=_args.seconds,
        default=d["compute_seconds"],
        help="emulated seconds to process the whole data set; a worker spends its fraction (default 0.24: 30 ms per worker of 8, a Raspberry-Pi-like device where compute dominates)",
    )
    parser.add_argument(
        "--spec",
        type=_args.existing_file,
        help="cluster spec TOML (the planner's format) instead of the flags above",
    )
    parser.add_argument(
        "--straggle-classes",
        type=_args.straggle_classes,
        default=None,
        help="paper 2's two classes on every worker, e.g. "
        "'slow=3:p=0.8,active:p=0.05,q_as=0.02,q_sa=0.05' (slow nodes drawn from --seed unless "
        "named: slow=edge-0-w1+edge-1-w2); replaces --straggle",
    )


def _job_flags(parser: argparse.ArgumentParser) -> None:
    """The jobs: schemes, rounds, data, model and optimizer."""
    parser.add_argument(
        "--schemes",
        type=_args.choices_list(JOB_SCHEMES + GOSSIP_SCHEMES),
        default=DEFAULT_SCHEMES,
        help=f"comma list of {', '.join(JOB_SCHEMES + GOSSIP_SCHEMES)} (default: "
        f"{DEFAULT_SCHEMES}); goco, gossip and gossip-wait run on their own cluster of --peers "
        "peers after the others",
    )
    parser.add_argument(
        "--rounds",
        type=_args.integer(1, 1_000_000),
        default=60,
        help="training rounds per scheme (default 60)",
    )
    parser.add_argument(
        "--dataset",
        type=_args.dataset,
        default="breast_cancer",
        help="bundled name, synthetic-...:k=v spec or a file",
    )
    parser.add_argument(
        "--model",
        type=_args.model,
        default="",
        help="logistic, softmax, least_squares or torch:MODULE:FUNCTION (default: from the data)",
    )
    parser.add_argument(
        "--optimizer",
        type=_args.optimizer,
        default="nesterov",
        help="gd, nesterov, sgd or adam, with options NAME:KEY=VALUE,... (default nesterov)",
    )
    parser.add_argument("--seed", type=_args.seed, default=0)
    parser.add_argument(
        "--deadline",
        "--round-deadline",
        type=_args.deadline,
        default=30.0,
        help="round deadline seconds (default 30); approx decodes what arrived by then",
    )
    add_scheme_flags(parser)
    add_gossip_flags(parser)


def _output_flags(parser: argparse.ArgumentParser) -> None:
    """Where results, the figure and the cluster's logs go."""
    parser.add_argument(
        "--json",
        metavar="FILE",
        type=_args.output_file,
        help="write the per-scheme results as JSON",
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        type=_args.figure_file,
        help="loss vs wall time (setup included) and per-worker latency",
    )
    parser.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="skip the 1-round uncoded warm-up job that keeps the master's one-time start-up "
        "(imports, first data load) out of the first scheme's setup time",
    )
    parser.add_argument(
        "--workdir",
        type=_args.output_dir,
        help="folder for logs, ready files and checkpoints (default: temporary)",
    )


def _setup(args: argparse.Namespace) -> ClusterSetup:
    from edgecode.cli._spec import load_cluster_spec
    from edgecode.cluster.local import ClusterSetup, EdgeSetup, WorkerSetup, default_setup

    if args.spec:
        replaced = [
            "--" + key.replace("_", "-")
            for key, default in REPLACED_BY_SPEC.items()
            if getattr(args, key) != default
        ]
        _args.check(not replaced, f"--spec describes the cluster: leave out {', '.join(replaced)}")
        spec = load_cluster_spec(args.spec)
        edges = tuple(EdgeSetup(e.name, e.link_seconds) for e in spec.edges)
        workers = tuple(
            WorkerSetup(w.name, e.name, _straggle_of(w), w.link_seconds)
            for e in spec.edges
            for w in e.workers
        )
        return ClusterSetup(edges, workers, 0.0, args.seed, spec_file=str(args.spec))
    setup = default_setup(
        args.edges,
        args.workers_per_edge,
        args.straggle,
        args.slow_link,
        args.compute_seconds,
        args.seed,
    )
    if args.straggle_classes is None:
        return setup
    import numpy as np

    from edgecode.straggle_classes import parse_straggle_classes

    classes = parse_straggle_classes(args.straggle_classes)
    names = [w.name for w in setup.workers]
    try:
        slow = set(classes.pick_slow(names, np.random.default_rng([args.seed, 0xC1A5])))
    except ValueError as exc:
        _args.check(False, f"argument --straggle-classes: {exc}")
        raise
    workers = tuple(
        dataclasses.replace(w, straggle=classes.straggle_spec(w.name in slow))
        for w in setup.workers
    )
    return dataclasses.replace(setup, workers=workers)


def _straggle_of(worker: WorkerSpec) -> str:
    """The worker emulation that reproduces a spec worker's runtime model."""
    model = {"shifted_exponential": "exp", "markov": "markov", "bernoulli": "bernoulli"}[
        worker.model
    ]
    keys = {"shift": worker.shift, "rate": worker.rate}
    if worker.model == "markov":
        keys |= {
            "p_slow": worker.p_slow,
            "p_active": worker.p_active,
            "q_as": worker.q_as,
            "q_sa": worker.q_sa,
            "slow_factor": worker.slow_factor,
            "slow": int(worker.slow),
        }
    if worker.model == "bernoulli":
        keys |= {"p_straggle": worker.p_straggle, "slow_factor": worker.slow_factor}
    return f"{model}:" + ",".join(f"{k}={v!r}" for k, v in keys.items())


def _config(args: argparse.Namespace, scheme: str) -> JobConfig:
    from edgecode.records import JobConfig

    planner = args.plan or (args.s_edge is None and args.s_worker is None)
    return JobConfig(
        scheme=scheme,
        dataset=args.dataset,
        model=args.model,
        rounds=args.rounds,
        optimizer=args.optimizer,
        s_edge=-1 if planner else (args.s_edge if args.s_edge is not None else 1),
        s_worker=args.s_worker if args.s_worker is not None else 1,
        s_flat=args.s_flat,
        seed=args.seed,
        round_deadline_seconds=args.deadline,
        checkpoint_every=0,
        **scheme_options(args),
    )


def check_shape(args: argparse.Namespace, setup: ClusterSetup) -> None:
    """The straggler counts must leave someone to wait for in this cluster."""
    per_edge = [sum(w.edge == e.name for w in setup.workers) for e in setup.edges]
    n_workers = len(setup.workers)
    if args.s_edge is not None:
        _args.check(
            args.s_edge < len(per_edge),
            f"--s-edge must be < the {len(per_edge)} edges, got {args.s_edge}",
        )
    if args.s_worker is not None:
        _args.check(
            args.s_worker < min(per_edge),
            f"--s-worker must be < the {min(per_edge)} workers of the smallest edge, "
            f"got {args.s_worker}",
        )
    if {"flat", "ignore"} & set(args.schemes):
        _args.check(
            args.s_flat < n_workers,
            f"--s-flat must be < the {n_workers} workers, got {args.s_flat}",
        )


def _run(args: argparse.Namespace) -> int:
    master_schemes, gossip = gossip_schemes(args.schemes)
    setup = _setup(args)
    check_shape(args, setup)
    for scheme in master_schemes:
        check_job(_config(args, scheme))
    try:
        specs = gossip_specs(args, gossip, str(REPLACED_BY_SPEC["straggle"])) if gossip else []
    except ValueError as exc:  # InvalidInput is a ValueError: a bad gossip flag
        _args.check(False, f"gossip schemes: {exc}")
        raise
    results: list[dict[str, Any]] = []
    latencies: dict[str, dict[str, list[float]]] = {}
    memory: dict[str, float] = {}
    if master_schemes:
        results, latencies, memory = _run_master(args, setup, master_schemes)
    gossip_rows = run_gossip(args, specs) if specs else []
    reference = add_targets(results)
    if results:
        report(results, reference)
    if gossip_rows:
        report_gossip(gossip_rows)
    if memory:
        console().print(
            f"peak worker memory: {max(memory.values()):.0f} MB (max over {len(memory)} workers)"
        )
    if args.json:
        document: dict[str, Any] = {
            "schemes": results + gossip_rows,
            "worker_peak_rss_mb": memory,
        }
        if args.straggle_classes is not None:
            document["slow_nodes"] = sorted(
                w.name for w in setup.workers if w.straggle.endswith("slow=1")
            )
        write_json(args.json, document)
        console().print(f"wrote {args.json}")
    if args.plot:
        from edgecode.cli._plots import plot_run

        plot_run(results + gossip_rows, latencies, Path(args.plot))
        console().print(f"wrote {args.plot}")
    return 0 if all(r["state"] == "succeeded" for r in results + gossip_rows) else 1


def _run_master(
    args: argparse.Namespace, setup: ClusterSetup, schemes: list[str]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, list[float]]], dict[str, float]]:
    """The master's schemes on a local cluster: their rows, per-worker latencies and the
    workers' peak memory."""
    from edgecode.cluster.local import LocalCluster
    from edgecode.master.client import state_name, summary

    with console().status(
        f"starting a local cluster: {len(setup.edges)} edges, {len(setup.workers)} workers ..."
    ):
        cluster = LocalCluster(
            setup,
            Path(args.workdir) if args.workdir else None,
            data_dirs=job_file_dirs(args.dataset, args.model),
        )
        cluster.start()
    try:
        stragglers = [w.name for w in setup.workers if w.straggle != "none"]
        slow_links = [e.name for e in setup.edges if e.link_seconds > 0]
        console().print(
            f"cluster up (logs in {cluster.workdir}); stragglers: {stragglers or 'none'}; "
            f"slow links: {slow_links or 'none'}"
        )
        client = cluster.client()
        results, latencies = [], {}
        with remote(cluster.master_address, "the local master"):
            if args.warmup:
                _warm_up(client, args)
            for scheme in schemes:
                followed = submit_and_follow(client, _config(args, scheme), scheme)
                status = followed.status
                latencies[scheme] = followed.latencies
                if state_name(status) != "succeeded":
                    console().print(f"[red]{scheme}: {state_name(status)}: {status.message}[/red]")
                results.append(summary(status, followed.end_to_end_seconds))
        client.close()
        memory = cluster.peak_rss_mb("worker")
    finally:
        cluster.stop()
    return results, latencies, memory


def _warm_up(client: MasterClient, args: argparse.Namespace) -> None:
    """One uncoded round, not reported: the master's first job pays its one-time start-up
    (imports, the first data load), which would otherwise land on the first scheme. Uncoded
    asks no plan, so hgc's setup still includes the coordinator's planning."""
    config = dataclasses.replace(_config(args, "uncoded"), rounds=1)
    from edgecode.master.client import state_name

    with console().status("warm-up: one uncoded round (not reported) ..."):
        status = client.wait(client.submit(config))
    if state_name(status) != "succeeded":
        console().print(f"[yellow]warm-up job {state_name(status)}: {status.message}[/yellow]")


def _finite(value: Any) -> Any:
    """The document with NaN and infinities as null (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Strict JSON (no NaN), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(document), indent=2, default=str, allow_nan=False) + "\n")
