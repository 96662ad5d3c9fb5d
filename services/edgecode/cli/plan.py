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
    from edgecode.planning.spec import ClusterSpec, Plan
    from edgecode.sim.compare import Scheme

#: Above this many workers the plan table shows one row per edge unless --workers all.
WORKER_ROWS_LIMIT = 40

EXAMPLES = """\
examples:
  edgecode plan examples/raspberry-pi-fleet.toml
  edgecode plan examples/thousand-workers.toml --workers none
  edgecode plan examples/one-slow-edge.toml --json > plan.json

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
    if args.json:
        print(json.dumps(plan_json(best, schemes), indent=2))
        return 0
    show_plan(spec, best, schemes, args.workers)
    return 0


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
