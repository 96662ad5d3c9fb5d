"""``edgecode plan``: the optimized plan of a cluster spec, beside the baselines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecode.cli import _args, command_help
from edgecode.cli._render import console, err_console, table

if TYPE_CHECKING:  # the planner is imported inside the command, so other subcommands start fast
    from edgecode.planning.partial import PartialChoice
    from edgecode.planning.spec import ClusterSpec, Plan
    from edgecode.sim.compare import Scheme

#: Above this many workers the plan table shows one row per edge unless --workers all.
WORKER_ROWS_LIMIT = 40

EXAMPLES = """\
examples:
  edgecode plan examples/raspberry-pi-fleet.toml
  edgecode plan examples/thousand-workers.toml --workers none
  edgecode plan examples/one-slow-edge.toml --json > plan.json
  edgecode plan examples/homogeneous.toml --alpha 0.8 --stragglers 3

The spec format is described in examples/*.toml (and edgecode.planning.spec). Expected round
times are exact for the shifted-exponential model; Bernoulli and Markov workers enter through
their per-round straggling probability (stationary class).
"""


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str = "plan"
) -> None:
    parser = subparsers.add_parser(
        "plan",
        help=command_help("plan"),
        description=(
            "Optimize the hierarchical gradient code for a cluster spec (which edges and workers "
            "take part, s_edge, s_worker per edge, K and per-worker loads) and print it with the "
            "exact expected round time of uncoded training, ignore-stragglers, flat cyclic "
            "repetition, the paper's hierarchical code with uniform parameters, and the "
            "optimized plan."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("spec", type=Path, metavar="SPEC.toml", help="cluster spec (TOML)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the plan and the alternatives as JSON instead of tables",
    )
    parser.add_argument(
        "--partitions",
        type=_args.integer(1),
        metavar="K",
        help="number of data partitions (default: the spec's [job] partitions, else chosen)",
    )
    parser.add_argument(
        "--ignore-stragglers",
        type=_args.integer(0),
        metavar="S",
        help="workers the ignore-stragglers baseline drops (default: a tenth, at least 1)",
    )
    parser.add_argument(
        "--workers",
        choices=("auto", "all", "none"),
        default="auto",
        help=(
            f"list every worker (all), only edges (none), or workers up to "
            f"{WORKER_ROWS_LIMIT} of them (auto, the default)"
        ),
    )
    partial = parser.add_argument_group(
        "partial recovery (gradient coding that recovers an alpha fraction of the partitions)"
    )
    partial.add_argument(
        "--alpha",
        type=float,
        metavar="A",
        help="also plan gradient coding with partial recovery: every design's expected round "
        "time beside full coding's, and the auto choice (0 < A <= 1)",
    )
    partial.add_argument(
        "--stragglers",
        type=int,
        metavar="S",
        help="stragglers the partial scheme and full coding tolerate (default: a tenth, >= 1)",
    )
    partial.add_argument(
        "--vector-ms",
        type=float,
        metavar="MS",
        help="milliseconds one more vector adds to a worker's response (default: the worker's "
        "link delay, i.e. V vectors take V times one message's delay)",
    )
    partial.add_argument(
        "--max-vectors", type=int, metavar="V", help="drop designs sending more vectors per worker"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgecode.cli._spec import load_cluster_spec
    from edgecode.planning.optimize import optimize
    from edgecode.sim.compare import compare_schemes

    spec = load_cluster_spec(args.spec)
    check_ignore_stragglers(args.ignore_stragglers, spec.n_workers)
    with err_console().status(f"planning {spec.n_workers} workers ..."):
        best = optimize(spec, args.partitions)
        schemes = compare_schemes(spec, ignore_stragglers=args.ignore_stragglers, optimized=best)
    warn_if_beaten(schemes)
    choice = None if args.alpha is None else partial_choice(spec, args)
    if args.json:
        document = plan_json(best, schemes)
        if choice is not None:
            document["partial"] = partial_json(choice)
        print(json.dumps(document, indent=2))
        return 0
    show_plan(spec, best, schemes, args.workers)
    if choice is not None:
        show_partial(choice)
    return 0


def partial_choice(spec: ClusterSpec, args: argparse.Namespace) -> PartialChoice:
    """The ``--alpha`` comparison: every partial design on ``spec`` and the auto choice."""
    import numpy as np

    from edgecode.planning.partial import choose_partial_design
    from edgecode.sim.compare import default_ignored

    s = default_ignored(spec.n_workers) if args.stragglers is None else args.stragglers
    vector_seconds = None if args.vector_ms is None else args.vector_ms / 1e3
    with err_console().status("planning partial recovery ..."):
        return choose_partial_design(
            spec,
            s,
            args.alpha,
            vector_seconds=vector_seconds,
            max_vectors=args.max_vectors,
            rng=np.random.default_rng(0),
        )


def partial_json(choice: PartialChoice) -> dict[str, Any]:
    """The ``partial`` entry of the ``--json`` document."""
    return {
        "alpha": float(choice.alpha),
        "stragglers": choice.stragglers,
        "full_coding_expected_round_seconds": choice.full_coding_seconds,
        "auto": choice.best.label,
        "designs": [
            {
                "design": o.label,
                "partitions": o.partitions,
                "computation_load": o.computation_load,
                "lower_bound": o.lower_bound,
                "communication_load": o.communication_load,
                "guaranteed_arrivals": o.guaranteed_arrivals,
                "mean_arrivals": o.mean_arrivals,
                "expected_round_seconds": o.expected_round_seconds,
                "exact": o.exact,
            }
            for o in choice.options
        ],
    }


def show_partial(choice: PartialChoice) -> None:
    """Print every partial design's expected round time beside full coding's."""
    full = choice.full_coding_seconds
    rows: list[list[object]] = [
        [
            "full coding (flat cyclic)",
            "",
            (choice.stragglers + 1) / choice.best.scheme.n_workers,
            "",
            1,
            "",
            full * 1e3,
            "1.00x",
        ]
    ]
    for option in choice.options:
        rows.append(
            [
                option.label + ("" if option.exact else " (Monte Carlo)"),
                "auto" if option is choice.best else "",
                option.computation_load,
                option.lower_bound,
                option.communication_load,
                f"{option.mean_arrivals:.2f}",
                option.expected_round_seconds * 1e3,
                f"{option.expected_round_seconds / full:.2f}x",
            ]
        )
    table(
        f"Partial recovery: alpha = {float(choice.alpha):g}, s = {choice.stragglers} "
        f"(expected round time, exact unless marked)",
        [
            "scheme",
            "choice",
            "comp. load",
            "LP bound",
            "vectors/worker",
            "mean end arrival",
            "expected ms",
            "vs full coding",
        ],
        rows,
    )
    console().print(
        "auto = the lowest expected round time; a partial round ends at the first arrival set "
        "that recovers ceil(alpha k) partitions, possibly before n - s arrivals.",
        style="dim",
    )


def check_ignore_stragglers(value: int | None, n_workers: int) -> None:
    """``--ignore-stragglers`` must leave at least one worker of the spec."""
    _args.check(
        value is None or value < n_workers,
        f"--ignore-stragglers must be < the spec's {n_workers} workers, got {value}",
    )


def warn_if_beaten(schemes: list[Scheme]) -> None:
    """Warn (stderr) when an exact baseline beats the optimizer: a planner shortcoming."""
    from edgecode.sim.compare import faster_than_optimized

    best = next(s for s in schemes if s.label == "hgc-optimized").expected_round_seconds
    for scheme in faster_than_optimized(schemes):
        print(
            f"edgecode: warning: {scheme.label} ({scheme.parameters}) expects "
            f"{scheme.expected_round_seconds * 1e3:.2f} ms per round, less than the optimized "
            f"plan's {best * 1e3:.2f} ms",
            file=sys.stderr,
        )


def plan_json(plan: Plan, schemes: list[Scheme]) -> dict[str, Any]:
    """The ``--json`` document: the plan and every scheme's expected round time."""
    assert plan.expected_round_seconds is not None
    return {
        "s_edge": plan.s_edge,
        "partitions": plan.partitions,
        "expected_round_seconds": plan.expected_round_seconds,
        "edges": [
            {
                "name": edge.name,
                "s_worker": edge.s_worker,
                "link_seconds": edge.link_seconds,
                "workers": [
                    {"name": w.name, "selected": w.selected, "partitions": w.partitions}
                    for w in edge.workers
                ],
            }
            for edge in plan.edges
        ],
        "alternatives": [
            {"scheme": s.label, "expected_round_seconds": s.expected_round_seconds} for s in schemes
        ],
    }


def show_plan(spec: ClusterSpec, plan: Plan, schemes: list[Scheme], workers: str) -> None:
    """Print the plan table and the comparison table."""
    uncoded = next(s for s in schemes if s.label == "uncoded").expected_round_seconds
    assert plan.expected_round_seconds is not None
    list_workers = workers == "all" or (workers == "auto" and spec.n_workers <= WORKER_ROWS_LIMIT)
    specs = {w.name: w for e in spec.edges for w in e.workers}
    title = (
        f"Optimized plan: K = {plan.partitions} partitions, s_edge = {plan.s_edge}, "
        f"expected round {plan.expected_round_seconds * 1e3:.1f} ms "
        f"({uncoded / plan.expected_round_seconds:.2f}x faster than uncoded)"
    )
    if list_workers:
        rows = []
        for edge in plan.edges:
            for index, w in enumerate(edge.workers):
                model = specs[w.name]
                rows.append(
                    [
                        edge.name if index == 0 else "",
                        f"{edge.link_seconds * 1e3:g}" if index == 0 else "",
                        (str(edge.s_worker) if edge.selected else "-") if index == 0 else "",
                        (str(edge.partitions) if edge.selected else "-") if index == 0 else "",
                        w.name,
                        w.selected,
                        w.partitions,
                        model.shift,
                        model.rate,
                        model.model.replace("shifted_exponential", "shifted-exp"),
                    ]
                )
        table(
            title,
            [
                "edge",
                "link ms",
                "s_worker",
                "covers",
                "worker",
                "takes part",
                "partitions",
                "shift s",
                "rate /s",
                "model",
            ],
            rows,
        )
    else:
        rows = []
        for edge in plan.edges:
            loads = [w.partitions for w in edge.workers if w.selected]
            rows.append(
                [
                    edge.name,
                    edge.link_seconds * 1e3,
                    edge.selected,
                    edge.s_worker if edge.selected else "-",
                    edge.partitions,
                    f"{len(loads)}/{len(edge.workers)}",
                    f"{min(loads)}-{max(loads)}" if loads else "-",
                ]
            )
        table(
            title,
            ["edge", "link ms", "takes part", "s_worker", "covers", "workers", "loads"],
            rows,
        )
    table(
        "Expected round time per scheme (exact)",
        ["scheme", "parameters", "expected ms", "speed-up vs uncoded"],
        [
            [
                s.label,
                s.parameters,
                s.expected_round_seconds * 1e3,
                f"{uncoded / s.expected_round_seconds:.2f}x",
            ]
            for s in schemes
        ],
    )
    console().print(
        "ignore-stragglers is fast but biased: its gradient misses the dropped workers' data.",
        style="dim",
    )
