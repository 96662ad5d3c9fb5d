"""Paper-2 targets checked in the simulator (the real-process benchmark comes later).

``python -m edgecode.bench.shuffle_sim --out DIR`` prints two tables and writes them as CSV, with
the figure of the first persistent scenario:

1. **usage** under persistent slow nodes: for each scenario, each scheme's min and mean partition
   usage over the run, min / mean, the usage of the partitions held only by slow nodes, the
   decoding residual, partitions moved and the mean round time (shuffles included);
2. **training** at equal wall time: every scheme's gradients replayed on a model; the loss of
   each approx variant at the wall time the slowest-finishing of the three approx variants
   reached (its full run), and the relative difference to no shuffling, under i.i.d. and under
   persistent stragglers.

All seeds are fixed; every number is a mean over ``--seeds`` seeds (straggler draws and data).

``--bench-cluster`` instead simulates the cluster of ``edgecode bench shuffle`` (10 workers,
workers 0, 1 and 7 slow with p = 0.9, actives 0.05, s = 1, the master waiting for 7 answers,
tau = 10, 120 rounds, the master's class-filter model, logistic regression on 2000 x 20 rows
with lr = 1) and prints, per code, the loss at equal wall time (ignore's end, as the real
benchmark) relative to no shuffling: mean, standard error over the seeds and how often
shuffling won, for random, aware, and aware chasing every gain (``min_swap_gain = 0``, the
policy before the fix of docs/notes/shuffle.md, "CRC at equal wall time").
"""

from __future__ import annotations

import argparse
import csv
import itertools
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgecode.codes.approximate import LeastSquaresDecoder
from edgecode.learning import synthetic_least_squares, synthetic_logistic
from edgecode.learning.datasets import Dataset
from edgecode.planning.shuffle import Assignment, aware_shuffle
from edgecode.sim.shuffle import (
    SCHEMES,
    ShuffleRun,
    ShuffleScenario,
    run_schemes,
    sample_unit_times,
    train_runs,
)
from edgecode.sim.shuffle_figures import plot_shuffle
from edgecode.stragglers import StraggleClasses, parse_straggle_classes

APPROX = ("approx", "approx-shuffle-random", "approx-shuffle-aware")
#: Scenarios of the usage table: (label, code, s, --straggle-classes).
USAGE_SCENARIOS = (
    ("frc s=1 fixed p_slow=0.95", "frc", 1, "slow=20:p=0.95,active:p=0.05"),
    ("frc s=1 fixed p_slow=0.8", "frc", 1, "slow=20:p=0.8,active:p=0.05"),
    ("frc s=1 markov", "frc", 1, "slow=20:p=0.8,active:p=0.05,q_as=0.02,q_sa=0.05"),
    ("crc s=1 fixed p_slow=0.95", "crc", 1, "slow=20:p=0.95,active:p=0.05"),
    ("frc s=3 fixed p_slow=0.95", "frc", 3, "slow=20:p=0.95,active:p=0.05"),
)
#: Scenarios of the training table: (label, --straggle-classes, transfer seconds multiplier).
TRAINING_SCENARIOS = (
    ("iid p=0.2", "slow=0,active:p=0.2", 1.0),
    ("iid p=0.2, transfers 10x", "slow=0,active:p=0.2", 10.0),
    ("fixed slow p_slow=0.95", "slow=20:p=0.95,active:p=0.05", 1.0),
)


def usage_rows(workers: int, rounds: int, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The usage table: per scenario and scheme, summaries averaged over seeds."""
    rows = []
    for label, code, s, spec in USAGE_SCENARIOS:
        scenario = ShuffleScenario(
            workers=workers,
            code=code,
            stragglers=s,
            classes=parse_straggle_classes(spec),
            rounds=rounds,
        )
        per_seed = [
            [run.summary() for run in run_schemes(scenario, seed).values()] for seed in seeds
        ]
        for index, scheme in enumerate(SCHEMES):
            summaries = [seed_rows[index] for seed_rows in per_seed]
            row: dict[str, Any] = {"scenario": label, "scheme": scheme}
            for key in summaries[0]:
                if key != "scheme":
                    values = np.array([s[key] for s in summaries], dtype=float)
                    finite = values[np.isfinite(values)]
                    row[key] = float(finite.mean()) if finite.size else float("nan")
            row["min_over_mean_worst_seed"] = min(s["min_over_mean"] for s in summaries)
            rows.append(row)
    return rows


def _data(kind: str, seed: int) -> Dataset:
    rng = np.random.default_rng([seed, 99])
    if kind == "logistic":
        return synthetic_logistic(5000, 20, rng)
    return synthetic_least_squares(5000, 20, rng, noise=0.5)


def training_rows(
    workers: int, rounds: int, seeds: Sequence[int], models: Sequence[str] = ("logistic", "lsq")
) -> list[dict[str, Any]]:
    """The training table (heterogeneous partitions; see :func:`train_runs`)."""
    rows = []
    for label, spec, multiplier in TRAINING_SCENARIOS:
        base = ShuffleScenario(
            workers=workers, stragglers=1, classes=parse_straggle_classes(spec), rounds=rounds
        )
        scenario = replace(base, transfer_seconds=base.resolved_transfer_seconds * multiplier)
        for kind in models:
            results: dict[str, list[tuple[float, float, float]]] = {s: [] for s in APPROX}
            for seed in seeds:
                runs = run_schemes(scenario, seed, APPROX)
                data = _data(kind, seed)
                curves = train_runs(runs, data, rng=np.random.default_rng([seed, 7]))
                common = min(float(c.wall_seconds[-1]) for c in curves.values())
                for scheme, curve in curves.items():
                    loss = curve.loss_at(common)
                    excess = loss - curve.optimum
                    results[scheme].append((loss, excess, common))
            plain = np.mean([r[0] for r in results["approx"]])
            plain_excess = np.mean([r[1] for r in results["approx"]])
            per_seed_plain = np.array([r[1] for r in results["approx"]])
            for scheme in APPROX:
                ratios = np.array([r[1] for r in results[scheme]]) / per_seed_plain - 1.0
                loss = float(np.mean([r[0] for r in results[scheme]]))
                excess = float(np.mean([r[1] for r in results[scheme]]))
                rows.append(
                    {
                        "scenario": label,
                        "model": kind,
                        "scheme": scheme,
                        "wall_seconds": float(np.mean([r[2] for r in results[scheme]])),
                        "loss": loss,
                        "loss_vs_no_shuffle": loss / plain - 1.0,
                        "excess_loss": excess,
                        "excess_vs_no_shuffle": excess / plain_excess - 1.0,
                        "excess_vs_no_shuffle_per_seed_min": float(ratios.min()),
                        "excess_vs_no_shuffle_per_seed_max": float(ratios.max()),
                    }
                )
    return rows


#: The master's class-filter model (``edgecode.master.epochs.FILTER_MODEL``; a unit test
#: checks they agree): the aware policy of the real benchmark sees these estimates.
MASTER_FILTER_MODEL = {"p_slow": 0.8, "p_active": 0.05, "q_as": 0.02, "q_sa": 0.05}
#: The cluster of ``edgecode bench shuffle`` (edgecode.bench.papers), worker i named ``wi``.
BENCH_CLASSES = "slow=w0+w1+w7:p=0.9,active:p=0.05"
#: Schemes of the bench-cluster table; the last is aware with ``min_swap_gain = 0``.
CLUSTER_SCHEMES = (*APPROX, "ignore")
CHASING = "approx-shuffle-aware (min_swap_gain=0)"


def _cluster_scenario(code: str, rounds: int) -> ShuffleScenario:
    return ShuffleScenario(
        workers=10,
        code=code,
        stragglers=1,
        classes=parse_straggle_classes(BENCH_CLASSES),
        rounds=rounds,
        wait=7,
        tau=10,
        filter_model=MASTER_FILTER_MODEL,
    )


def _cluster_runs(code: str, seed: int, rounds: int) -> dict[str, ShuffleRun]:
    scenario = _cluster_scenario(code, rounds)
    runs = run_schemes(scenario, seed, CLUSTER_SCHEMES)
    chasing = replace(scenario, min_swap_gain=0.0)
    runs[CHASING] = run_schemes(chasing, seed, ("approx-shuffle-aware",))["approx-shuffle-aware"]
    return runs


def cluster_rows(seeds: Sequence[int], rounds: int = 120) -> list[dict[str, Any]]:
    """The bench-cluster table (see the module docstring), one row per code and scheme."""
    rows = []
    for code in ("frc", "crc"):
        per_scheme: dict[str, list[dict[str, float]]] = {}
        for seed in seeds:
            runs = _cluster_runs(code, seed, rounds)
            data = synthetic_logistic(2000, 20, np.random.default_rng([seed, 99]))
            curves = train_runs(
                runs, data, lr=1.0, heterogeneous=False, rng=np.random.default_rng([seed, 7])
            )
            wall = min(float(c.wall_seconds[-1]) for c in curves.values())
            plain = curves["approx"].loss_at(wall)
            for scheme, run in runs.items():
                summary = run.summary()
                loss = curves[scheme].loss_at(wall)
                per_scheme.setdefault(scheme, []).append(
                    {
                        "loss_at_equal_wall": loss,
                        "loss_vs_no_shuffle": loss / plain - 1.0,
                        "min_usage": summary["min_usage"],
                        "mean_residual": summary["mean_residual"],
                        "shuffles": summary["shuffles"],
                        "moved_partitions": summary["moved_partitions"],
                        "mean_round_seconds": summary["mean_round_seconds"],
                    }
                )
        for scheme, values in per_scheme.items():
            relative = np.array([v["loss_vs_no_shuffle"] for v in values])
            row: dict[str, Any] = {"code": code, "scheme": scheme, "seeds": len(values)}
            row |= {key: float(np.mean([v[key] for v in values])) for key in values[0]}
            row["loss_vs_no_shuffle_se"] = (
                float(relative.std(ddof=1) / np.sqrt(relative.size)) if relative.size > 1 else 0.0
            )
            row["wins_vs_no_shuffle"] = float(np.mean(relative < 0))
            rows.append(row)
    return rows


def placement_errors(code: str = "crc", rounds: int = 4000, seed: int = 0) -> list[dict[str, Any]]:
    """On the bench-cluster (see the module docstring), every placement of the 3 slow workers
    on the code's 10 rows (the 7 active ones in order on the rest): the aware policy's risk
    ``sum_j prod_{h holds j} p_h`` (p = 0.9 slow, 0.05 active) beside the decoding error the
    least-squares weights really have over ``rounds`` simulated rounds (the alive set: the first
    7 answers), ``sum_j E[(w_j - 1)^2]`` and the squared bias ``sum_j (E[w_j] - 1)^2``. Rows
    sorted by error; ``aware``: the placement the aware policy picks from the identity.
    """
    scenario = _cluster_scenario(code, rounds)
    unit_times, slow = sample_unit_times(scenario, np.random.default_rng([seed, 0]))
    times = unit_times * (scenario.stragglers + 1) / scenario.workers
    cut = np.sort(times, axis=1)[:, [scenario.resolved_wait - 1]]
    alive = [np.flatnonzero(row) for row in times <= cut]
    B = scenario.code_matrix()
    p = np.where(slow, 0.9, 0.05)
    slow_workers = [int(w) for w in np.flatnonzero(slow)]
    active = [int(w) for w in np.flatnonzero(~slow)]
    aware = aware_shuffle(B, Assignment.identity(scenario.workers), p).after
    rows = []
    for slow_rows in itertools.combinations(range(scenario.workers), len(slow_workers)):
        rest = [r for r in range(scenario.workers) if r not in slow_rows]
        rows_of = dict(zip(slow_workers, slow_rows, strict=True)) | dict(
            zip(active, rest, strict=True)
        )
        assignment = Assignment(tuple(rows_of[w] for w in range(scenario.workers)))
        decoder = LeastSquaresDecoder(assignment.sender_matrix(B))
        weights = np.array([decoder.decode(a).partition_weights for a in alive])
        risk = sum(float(np.prod(p[list(h)])) for h in assignment.holders(B))
        picked = tuple(sorted(assignment.rows[w] for w in slow_workers)) == tuple(
            sorted(aware.rows[w] for w in slow_workers)
        )
        rows.append(
            {
                "slow_rows": slow_rows,
                "risk": risk,
                "error": float(((weights - 1.0) ** 2).mean(axis=0).sum()),
                "bias": float(((weights.mean(axis=0) - 1.0) ** 2).sum()),
                "aware": picked,
            }
        )
    return sorted(rows, key=lambda row: row["error"])


def _write(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _print(rows: list[dict[str, Any]], keys: Sequence[str]) -> None:
    print(" | ".join(keys))
    for row in rows:
        cells = [f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k]) for k in keys]
        print(" | ".join(cells))


def figure(out: Path, workers: int, rounds: int, seed: int) -> Path:
    """The figure of the first usage scenario, with logistic training curves."""
    label, code, s, spec = USAGE_SCENARIOS[0]
    classes: StraggleClasses = parse_straggle_classes(spec)
    scenario = ShuffleScenario(
        workers=workers, code=code, stragglers=s, classes=classes, rounds=rounds
    )
    runs = run_schemes(scenario, seed)
    curves = train_runs(runs, _data("logistic", seed), rng=np.random.default_rng([seed, 7]))
    title = f"{workers} workers, {label}, tau={scenario.tau}, wait={scenario.resolved_wait}"
    return plot_shuffle(runs, out / "shuffle_usage.png", curves=curves, title=title)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("shuffle-sim"))
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds per run (default 200; 120 with --bench-cluster)",
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--bench-cluster",
        action="store_true",
        help="only the table of edgecode bench shuffle's cluster (--rounds default 120 there)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds))
    if args.rounds is None:
        args.rounds = 120 if args.bench_cluster else 200
    if args.bench_cluster:
        cluster = cluster_rows(seeds, args.rounds)
        _write(cluster, args.out / "shuffle_bench_cluster.csv")
        _print(cluster, list(cluster[0]))
        placements = placement_errors()
        _write(placements, args.out / "shuffle_bench_placements.csv")
        chosen = [row for row in placements if row["aware"]]
        print("crc placements of the slow workers: risk, error, bias")
        _print(
            placements[:3] + chosen + placements[-1:],
            ["slow_rows", "risk", "error", "bias", "aware"],
        )
        return
    usage = usage_rows(args.workers, args.rounds, seeds)
    _write(usage, args.out / "shuffle_usage.csv")
    _print(
        usage,
        ["scenario", "scheme", "min_usage", "mean_usage", "min_over_mean",
         "min_over_mean_worst_seed", "slow_only_usage", "min_mean_weight", "mean_residual",
         "moved_partitions", "mean_round_seconds"],
    )  # fmt: skip
    training = training_rows(args.workers, args.rounds, seeds)
    _write(training, args.out / "shuffle_training.csv")
    _print(training, list(training[0]))
    print(figure(args.out, args.workers, args.rounds, seeds[0]))


if __name__ == "__main__":
    main()
