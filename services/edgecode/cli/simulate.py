"""``edgecode simulate``: discrete-event simulation of every scheme on a cluster spec."""

from __future__ import annotations

import argparse
import csv
import json
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecode.cli import _args, command_help
from edgecode.cli._render import console, err_console, table
from edgecode.cli.plan import check_ignore_stragglers, warn_if_beaten

if TYPE_CHECKING:  # heavy imports happen inside the command, so other subcommands start fast
    from edgecode.sim.compare import Scheme
    from edgecode.sim.engine import SimResult

EXAMPLES = """\
examples:
  edgecode simulate examples/raspberry-pi-fleet.toml --rounds 2000 --out out/pi-fleet
  edgecode simulate examples/thousand-workers.toml --rounds 200 --out out/thousand --seed 1

outputs (in --out):
  rounds.csv        scheme,round,seconds,stragglers (one row per simulated round)
  round_times.png   round-time distributions per scheme, exact expectation vs simulated mean
  summary.json      per scheme: parameters, expected and simulated mean, p95, mean stragglers

A straggler is a taking-part worker whose result had not reached its edge (or, in flat schemes,
the master) when it stopped being waited for. Expected times are exact; for Markov workers they
assume the stationary class, while the simulation starts in the spec's class.
"""


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str = "simulate"
) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help=command_help("simulate"),
        description=(
            "Plan every scheme (uncoded, ignore-stragglers, flat cyclic, the paper's uniform "
            "hierarchical code, the optimized plan) on a cluster spec, then play R consecutive "
            "rounds of each, message by message, with each worker's straggler model from the "
            "spec (shifted exponential, Bernoulli, or the two-class Markov chain whose class "
            "persists across rounds). Compares the simulated mean round time with the planner's "
            "exact expectation."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("spec", type=Path, metavar="SPEC.toml", help="cluster spec (TOML)")
    parser.add_argument(
        "--rounds",
        type=_args.integer(2),
        default=1000,
        metavar="R",
        help="rounds per scheme (default 1000)",
    )
    parser.add_argument(
        "--out",
        type=_args.output_dir,
        default="out/simulate",
        metavar="DIR",
        help="output directory, created if needed (default out/simulate)",
    )
    parser.add_argument("--seed", type=_args.seed, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--partitions",
        type=_args.integer(1),
        metavar="K",
        help="partitions of the optimized plan (default: the spec's, else chosen)",
    )
    parser.add_argument(
        "--ignore-stragglers",
        type=_args.integer(0),
        metavar="S",
        help="workers the ignore-stragglers baseline drops (default: a tenth, at least 1)",
    )
    group = parser.add_argument_group(
        "paper 2 (approximate decoding with shuffling), instead of the schemes above"
    )
    group.add_argument(
        "--scheme",
        choices=PAPER2_SCHEMES,
        help="simulate this scheme beside approx (no shuffle), exact and ignore, with the "
        "spec's two-class (Markov) workers: partition usage and decoding error over rounds",
    )
    group.add_argument("--shuffle-every", type=_args.integer(1), default=10, metavar="TAU")
    group.add_argument("--shuffle", choices=("random", "aware"), default="aware")
    group.add_argument("--base-code", choices=("frc", "crc"), default="frc")
    group.add_argument(
        "--s-flat", type=_args.integer(0), default=1, help="stragglers the code tolerates"
    )
    parser.set_defaults(func=run)


#: ``--scheme``: paper 2's schemes in the simulator
PAPER2_SCHEMES = ("approx", "approx-shuffle")


def run_paper2(args: argparse.Namespace) -> int:
    """``--scheme approx|approx-shuffle``: the shuffle simulator on the spec's cluster."""
    import numpy as np

    from edgecode.cli._spec import load_cluster_spec
    from edgecode.sim.shuffle import ShuffleScenario, run_schemes
    from edgecode.sim.shuffle_figures import plot_shuffle
    from edgecode.straggle_classes import StraggleClasses

    spec = load_cluster_spec(args.spec)
    workers = [w for e in spec.edges for w in e.workers]
    markov = [w for w in workers if w.model == "markov"]
    model = markov[0] if markov else None
    classes = StraggleClasses(
        slow_count=sum(1 for w in markov if w.slow),
        p_slow=model.p_slow if model else 0.0,
        p_active=model.p_active if model else 0.0,
        q_as=model.q_as if model else 0.0,
        q_sa=model.q_sa if model else 0.0,
        slow_factor=model.slow_factor if model else 5.0,
    )
    _args.check(
        args.s_flat < len(workers),
        f"--s-flat must be < the spec's {len(workers)} workers, got {args.s_flat}",
    )
    scenario = ShuffleScenario(
        workers=len(workers),
        code=args.base_code,
        stragglers=args.s_flat,
        classes=classes,
        rounds=args.rounds,
        tau=args.shuffle_every,
        shift=float(np.mean([w.shift for w in workers])),
        rate=float(np.mean([w.rate for w in workers])),
    )
    chosen = "approx" if args.scheme == "approx" else f"approx-shuffle-{args.shuffle}"
    schemes = list(dict.fromkeys([chosen, "approx", "exact", "ignore"]))
    with err_console().status(f"simulating {len(schemes)} schemes, {args.rounds} rounds ..."):
        runs = run_schemes(scenario, args.seed, schemes)
    rows = [run.summary() for run in runs.values()]
    keys = list(rows[0])
    table(
        f"paper 2 on {args.spec.name}: {len(workers)} workers, {classes.slow_count} slow, "
        f"{args.base_code} s={args.s_flat}, shuffles every {args.shuffle_every} rounds",
        keys,
        [[row[k] for k in keys] for row in rows],
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "shuffle.json").write_text(json.dumps(rows, indent=2, default=float) + "\n")
    figure = plot_shuffle(runs, out / "shuffle.png")
    console().print(f"wrote {out / 'shuffle.json'}, {figure}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.scheme is not None:
        return run_paper2(args)
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgecode.cli._spec import load_cluster_spec
    from edgecode.planning.optimize import optimize
    from edgecode.sim.compare import compare_schemes
    from edgecode.sim.engine import simulate
    from edgecode.sim.figures import plot_round_times

    spec = load_cluster_spec(args.spec)
    check_ignore_stragglers(args.ignore_stragglers, spec.n_workers)
    err = err_console()
    with err.status(f"planning {spec.n_workers} workers ..."):
        schemes = compare_schemes(
            spec,
            ignore_stragglers=args.ignore_stragglers,
            optimized=optimize(spec, args.partitions),
        )
    warn_if_beaten(schemes)
    rng = np.random.default_rng(args.seed)
    results: dict[str, SimResult] = {}
    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        for scheme in schemes:
            task = bar.add_task(f"simulating {scheme.label}", total=args.rounds)
            results[scheme.label] = simulate(
                spec,
                scheme.plan,
                args.rounds,
                rng,
                progress=partial(bar.advance, task),
            )
    args.out.mkdir(parents=True, exist_ok=True)
    write_rounds_csv(results, args.out / "rounds.csv")
    summary = summarize(schemes, results)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_round_times(
        results,
        args.out / "round_times.png",
        title=f"{args.spec.name}: {args.rounds} simulated rounds per scheme (seed {args.seed})",
    )
    show_summary(summary, args.rounds)
    console().print(
        f"wrote {args.out / 'rounds.csv'}, {args.out / 'round_times.png'}, "
        f"{args.out / 'summary.json'}"
    )
    return 0


def write_rounds_csv(results: dict[str, SimResult], path: Path) -> None:
    """One row per simulated round: scheme, round (from 0), seconds, stragglers."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["scheme", "round", "seconds", "stragglers"])
        for label, result in results.items():
            for index, (seconds, late) in enumerate(
                zip(result.round_seconds.tolist(), result.stragglers.tolist(), strict=True)
            ):
                writer.writerow([label, index, f"{seconds:.9g}", late])


def summarize(schemes: list[Scheme], results: dict[str, SimResult]) -> list[dict[str, Any]]:
    """Per scheme: parameters, exact expectation, simulated mean (+- 95 %), p95, stragglers."""
    import numpy as np

    uncoded = results["uncoded"].mean_round_seconds
    rows = []
    for scheme in schemes:
        result = results[scheme.label]
        expected = scheme.expected_round_seconds
        mean = result.mean_round_seconds
        rows.append(
            {
                "scheme": scheme.label,
                "parameters": scheme.parameters,
                "expected_round_seconds": expected,
                "simulated_mean_seconds": mean,
                "simulated_ci95_seconds": 1.96 * result.standard_error,
                "relative_difference": (mean - expected) / expected,
                "p95_seconds": float(np.quantile(result.round_seconds, 0.95)),
                "mean_stragglers": float(result.stragglers.mean()),
                "speedup_vs_uncoded": uncoded / mean,
            }
        )
    return rows


def show_summary(summary: list[dict[str, Any]], rounds: int) -> None:
    table(
        f"Simulated vs expected round time ({rounds} rounds per scheme)",
        [
            "scheme",
            "parameters",
            "expected ms",
            "simulated ms",
            "+- 95% ms",
            "diff",
            "p95 ms",
            "stragglers/round",
            "speed-up (sim)",
        ],
        [
            [
                row["scheme"],
                row["parameters"],
                row["expected_round_seconds"] * 1e3,
                row["simulated_mean_seconds"] * 1e3,
                row["simulated_ci95_seconds"] * 1e3,
                f"{row['relative_difference']:+.1%}",
                row["p95_seconds"] * 1e3,
                row["mean_stragglers"],
                f"{row['speedup_vs_uncoded']:.2f}x",
            ]
            for row in summary
        ],
    )
