"""``edgecode run`` (a local cluster training with stragglers, every scheme side by side) and
``edgecode train`` (submit a job to a running master and follow it)."""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecode.cli._render import console, table
from edgecode.cli._tls import add_client_tls_flags, client_tls, job_file_dirs
from edgecode.planning.plans import SCHEMES

if TYPE_CHECKING:  # heavy imports happen inside the commands, so other subcommands start fast
    from edgecode.cluster.local import ClusterSetup
    from edgecode.master.client import MasterClient
    from edgecode.planning.spec import WorkerSpec
    from edgecode.records import JobConfig

ALL_SCHEMES = ",".join(SCHEMES)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser(
        "run",
        help="start a local cluster with stragglers and train with every scheme side by side",
        description=(
            "Start a local cluster as separate processes on loopback (coordinator, master, edge "
            "aggregators, workers; one worker a persistent straggler, one edge on a slow link), "
            "train logistic regression on a bundled real data set with hierarchical gradient "
            "coding (the planner's plan unless --s-edge/--s-worker are given), then with the "
            "baselines on the same cluster, and print round times, speed-ups, loss and accuracy."
        ),
    )
    run.add_argument("--edges", type=int, default=2, help="edge aggregators (default 2)")
    run.add_argument("--workers-per-edge", type=int, default=4, help="workers per edge (default 4)")
    run.add_argument(
        "--s-edge", type=int, default=None, help="edge stragglers tolerated (default: planner)"
    )
    run.add_argument(
        "--s-worker", type=int, default=None, help="worker stragglers per edge (default: planner)"
    )
    run.add_argument(
        "--s-flat", type=int, default=1, help="stragglers for flat and ignore (default 1)"
    )
    run.add_argument(
        "--plan", action="store_true", help="use the planner's plan (the default unless s is given)"
    )
    run.add_argument("--schemes", default="hgc,uncoded,ignore", help=f"comma list of {ALL_SCHEMES}")
    run.add_argument(
        "--rounds", type=int, default=60, help="training rounds per scheme (default 60)"
    )
    run.add_argument(
        "--dataset", default="breast_cancer", help="bundled name, synthetic-...:k=v spec or a file"
    )
    run.add_argument(
        "--model", default="", help="logistic, softmax or least_squares (default: from the data)"
    )
    run.add_argument("--optimizer", default="nesterov", choices=["nesterov", "gd"])
    run.add_argument("--straggle", default="slow:factor=5", help="the persistent straggler's model")
    run.add_argument(
        "--slow-link", type=float, default=0.02, help="link delay of the slow edge, seconds"
    )
    run.add_argument(
        "--compute-seconds",
        type=float,
        default=0.08,
        help="emulated seconds to process the whole data set; a worker spends its fraction (default 0.08)",
    )
    run.add_argument(
        "--spec", help="cluster spec TOML (the planner's format) instead of the flags above"
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--deadline", type=float, default=30.0, help="round deadline seconds")
    run.add_argument("--json", metavar="FILE", help="write the per-scheme results as JSON")
    run.add_argument("--plot", metavar="FILE.png", help="loss vs wall time and per-worker latency")
    run.add_argument(
        "--workdir", help="folder for logs, ready files and checkpoints (default: temporary)"
    )
    run.set_defaults(func=_run)

    train = subparsers.add_parser(
        "train",
        help="submit a training job to a running master and show its progress",
        description="Submit a job to a master (for example one started by docker compose) and follow it.",
    )
    train.add_argument("--master", required=True, help="master address HOST:PORT")
    train.add_argument("--scheme", default="hgc", choices=SCHEMES)
    train.add_argument("--rounds", type=int, default=60)
    train.add_argument("--dataset", default="breast_cancer")
    train.add_argument("--model", default="")
    train.add_argument("--optimizer", default="nesterov", choices=["nesterov", "gd"])
    train.add_argument("--s-edge", type=int, default=-1, help="edge stragglers (-1 = planner)")
    train.add_argument("--s-worker", type=int, default=1)
    train.add_argument("--s-flat", type=int, default=1)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--deadline", type=float, default=30.0)
    train.add_argument("--checkpoint-every", type=int, default=10)
    train.add_argument("--job-id", default="")
    train.add_argument("--json", metavar="FILE")
    add_client_tls_flags(train)
    train.set_defaults(func=_train)


def _setup(args: argparse.Namespace) -> ClusterSetup:
    from edgecode.cluster.local import ClusterSetup, EdgeSetup, WorkerSetup, default_setup
    from edgecode.planning.spec import load_spec

    if args.spec:
        spec = load_spec(args.spec)
        edges = tuple(EdgeSetup(e.name, e.link_seconds) for e in spec.edges)
        workers = tuple(
            WorkerSetup(w.name, e.name, _straggle_of(w), w.link_seconds)
            for e in spec.edges
            for w in e.workers
        )
        return ClusterSetup(edges, workers, 0.0, args.seed, spec_file=str(args.spec))
    if args.edges < 1 or args.workers_per_edge < 1:
        raise ValueError("--edges and --workers-per-edge must be >= 1")
    return default_setup(
        args.edges,
        args.workers_per_edge,
        args.straggle,
        args.slow_link,
        args.compute_seconds,
        args.seed,
    )


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
    return f"{model}:" + ",".join(f"{k}={v}" for k, v in keys.items())


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
    )


def _follow(
    client: MasterClient, job_id: str, label: str, rounds: int
) -> tuple[Any, dict[str, list[float]]]:
    """Follow a job with a progress bar; collect per-worker response latencies per round."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgecode.master.client import FINAL_STATES

    latencies: dict[str, list[float]] = defaultdict(list)
    seen_round = 0
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(f"{label:>8}", total=rounds, info="")
        for status in client.watch(job_id):
            if status.round > seen_round:
                seen_round = status.round
                for t in status.last_timings:
                    latencies[t.node].append(t.seconds)
                last = status.history[-1] if status.history else None
                info = f"loss {last.loss:.4f}  {last.seconds * 1e3:.1f} ms/round" if last else ""
                bar.update(task, completed=status.round, info=info)
            if status.state in FINAL_STATES:
                break
    return client.status(job_id, include_params=True), latencies


def _run(args: argparse.Namespace) -> int:
    from edgecode.cluster.local import LocalCluster
    from edgecode.master.client import state_name, summary

    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    unknown = [s for s in schemes if s not in SCHEMES]
    if unknown or not schemes:
        raise ValueError(f"--schemes must be a comma list of {ALL_SCHEMES}, got {args.schemes!r}")
    if args.rounds < 1:
        raise ValueError("--rounds must be >= 1")
    setup = _setup(args)
    with console.status(
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
        console.print(
            f"cluster up (logs in {cluster.workdir}); stragglers: {stragglers or 'none'}; "
            f"slow links: {slow_links or 'none'}"
        )
        client = cluster.client()
        results, latencies = [], {}
        for scheme in schemes:
            job_id = client.submit(_config(args, scheme))
            status, latencies[scheme] = _follow(client, job_id, scheme, args.rounds)
            if status.state != 2 and state_name(status) != "succeeded":
                console.print(f"[red]{scheme}: {state_name(status)}: {status.message}[/red]")
            results.append(summary(status))
        client.close()
        memory = cluster.peak_rss_mb("worker")
    finally:
        cluster.stop()
    _report(results)
    if memory:
        console.print(
            f"peak worker memory: {max(memory.values()):.0f} MB (max over {len(memory)} workers)"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {"schemes": results, "worker_peak_rss_mb": memory}, indent=2, default=_json_default
            )
        )
        console.print(f"wrote {args.json}")
    if args.plot:
        from edgecode.cli._plots import plot_run

        plot_run(results, latencies, Path(args.plot))
        console.print(f"wrote {args.plot}")
    return 0 if all(r["state"] == "succeeded" for r in results) else 1


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def _report(results: list[dict[str, Any]]) -> None:
    baseline = next((r for r in results if r["scheme"] == "uncoded"), None)
    rows = []
    for r in results:
        speedup = (
            (baseline["mean_round_seconds"] / r["mean_round_seconds"])
            if baseline and r["rounds"]
            else float("nan")
        )
        predicted = r["predicted_round_seconds"]
        rows.append(
            [
                r["scheme"],
                r["state"],
                r["rounds"],
                r["mean_round_seconds"] * 1e3,
                r["median_round_seconds"] * 1e3,
                predicted * 1e3 if predicted else "-",
                speedup,
                r["loss"][-1] if r["loss"] else float("nan"),
                r["accuracy"],
                sum(r["stragglers"]) / max(1, len(r["stragglers"])),
            ]
        )
    table(
        "Training with stragglers (same cluster, data, seed)",
        [
            "scheme",
            "state",
            "rounds",
            "mean ms/round",
            "median ms",
            "predicted ms",
            "speed-up vs uncoded",
            "final loss",
            "accuracy",
            "stragglers/round",
        ],
        rows,
    )


def _train(args: argparse.Namespace) -> int:
    from edgecode.master.client import MasterClient, summary
    from edgecode.records import JobConfig

    client = MasterClient(args.master, client_tls(args))
    config = JobConfig(
        scheme=args.scheme,
        dataset=args.dataset,
        model=args.model,
        rounds=args.rounds,
        optimizer=args.optimizer,
        s_edge=args.s_edge,
        s_worker=args.s_worker,
        s_flat=args.s_flat,
        seed=args.seed,
        round_deadline_seconds=args.deadline,
        checkpoint_every=args.checkpoint_every,
        job_id=args.job_id,
    )
    job_id = client.submit(config)
    console.print(f"submitted {job_id}")
    status, _ = _follow(client, job_id, args.scheme, args.rounds)
    result = summary(status)
    client.close()
    _report([result])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=_json_default))
    if result["state"] != "succeeded":
        console.print(f"[red]job {job_id} {result['state']}: {result['message']}[/red]")
        return 1
    return 0
