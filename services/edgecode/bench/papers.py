"""``edgecode bench partial`` and ``edgecode bench shuffle``: papers 3 and 2 on a real local
cluster (separate processes, real gRPC), every scheme side by side in one run.

partial (paper 3). 10 workers in 2 edges, s = 3, stragglers on EVERY worker drawn per round
(``bernoulli:p=0.2,factor=5``, or a shifted exponential ``exp:rate=...``): partial recovery at
alpha in {1, 0.9, 0.8} (the auto design) beside full gradient coding (flat, same s) and ignore
(the first n - s, rescaled), all with the same data, seed and step sizes. Rows: the design's
computation load beside the LP bound, vectors per worker, mean round time, time to reach
uncoded's round-30 loss ("never" when a scheme does not reach it), final accuracy. Every block
runs twice on the same rows, split the same way: ``iid`` (random row order, so every partition
is a random sample) and ``sorted`` (training rows sorted by label before partitioning, the
spec's ``order=label``: each worker sees its own labels, as on edge devices). Targets: mean
round time at alpha = 0.8 <= 0.8x full coding's; time-to-loss better than full coding and than
ignore in at least one straggler model.

shuffle (paper 2). 10 workers, 3 persistently slow (fixed classes: slow nodes straggle with
p_slow = 0.9, active ones with p_active = 0.05; the slow ones are workers 0, 1 and 7, so that
one frc pair is slow as a whole), frc and crc with s = 1, the master waiting for 7 answers:
approximate decoding without shuffling, with random and with aware shuffling, beside exact hgc
and ignore. Rows: min and mean partition usage, mean decoding residual, shuffles and bytes per
shuffle, mean round time, loss and accuracy, and the loss at equal wall time (the smallest
wall time any scheme reached), for the shuffling variants also relative to no shuffling with
the same code. ``--repeats k`` runs every job k times in rotated order and gives means, the
standard error of that relative difference and how often shuffling won: the differences are
about 1e-3 relative while one job's mean round time moves by 5 % with the machine's load.
Targets: aware beats no shuffling in loss at equal wall time and in min usage.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgecode.cluster.local import ClusterSetup, EdgeSetup, LocalCluster, WorkerSetup
from edgecode.master.client import MasterClient, summary
from edgecode.records import JobConfig

#: Emulated seconds to process the whole data set on one worker (a worker spends its share).
COMPUTE_SECONDS = 0.12
N_WORKERS = 10
STRAGGLE_MODELS = {
    "bernoulli": "bernoulli:p=0.2,factor=5",
    # a shifted exponential whose random part has mean 1/rate of the whole data set's time
    "exponential": "exp:rate=12",
}


def _setup(straggles: Sequence[str], seed: int) -> ClusterSetup:
    half = len(straggles) // 2
    workers = tuple(
        WorkerSetup(f"edge-{0 if i < half else 1}-w{i}", f"edge-{0 if i < half else 1}", s)
        for i, s in enumerate(straggles)
    )
    return ClusterSetup(
        (EdgeSetup("edge-0"), EdgeSetup("edge-1")), workers, COMPUTE_SECONDS, seed=seed
    )


def _run(client: MasterClient, config: JobConfig) -> dict[str, Any]:
    status = client.wait(client.submit(config), timeout=900)
    return summary(status)


def _time_to(row: dict[str, Any], target: float) -> float | None:
    for loss, wall in zip(row["loss"], row["wall_seconds"], strict=True):
        if loss <= target:
            return float(row["setup_seconds"] + wall)
    return None


def _rounds_to(row: dict[str, Any], target: float) -> int | None:
    """The first round (1-based) whose loss is at most ``target``; None: never."""
    return next((i + 1 for i, loss in enumerate(row["loss"]) if loss <= target), None)


#: Partial benchmark data: the same synthetic rows, split identically, in two row orders.
PARTIAL_DATASET = "synthetic-logistic:n=2000,d=20"
DATA_ORDERS = {
    # contiguous partitions of randomly ordered rows: every worker's data is a random sample
    "iid": "",
    # training rows sorted by label before partitioning: each worker sees (mostly) one label
    "sorted": ",order=label",
}
#: (alpha, --partial-scale) of the partial jobs. The auto designs at alpha 0.9 and 0.8 are subset
#: designs on TWO replication sizes, for which K/|R| rescaling is biased (a partition on one
#: worker is recovered less often than one on two; docs/notes/partial.md): they also run with
#: the inverse-probability scale, unbiased for every design.
PARTIAL_VARIANTS = (
    (1.0, "rescale"),
    (0.9, "rescale"),
    (0.8, "rescale"),
    (0.9, "inverse-probability"),
    (0.8, "inverse-probability"),
)
#: Round of uncoded (exact) training whose loss is the time-to-loss target (0-based: round 30).
TARGET_ROUND = 29


def bench_partial(
    rounds: int = 60, seed: int = 0, data: Sequence[str] = tuple(DATA_ORDERS)
) -> list[dict[str, Any]]:
    """Every row of the partial benchmark (see the module docstring), for each data
    distribution in ``data`` ("iid", "sorted"), all on the same cluster per straggler model."""
    unknown = [name for name in data if name not in DATA_ORDERS]
    if unknown or not data:
        raise ValueError(f"data must be a non-empty subset of {list(DATA_ORDERS)}, got {data!r}")
    base = JobConfig(
        dataset=PARTIAL_DATASET,
        rounds=rounds,
        seed=seed,
        s_flat=3,
        optimizer="gd",
        learning_rate=1.0,
        checkpoint_every=0,
        round_deadline_seconds=30.0,
    )
    rows: list[dict[str, Any]] = []
    for model, straggle in STRAGGLE_MODELS.items():
        with LocalCluster(_setup([straggle] * N_WORKERS, seed)) as cluster:
            client = cluster.client()
            try:
                for distribution in data:
                    config = dataclasses.replace(
                        base, dataset=PARTIAL_DATASET + DATA_ORDERS[distribution]
                    )
                    jobs = _partial_jobs(client, config)
                    rows.extend(_partial_rows(model, distribution, jobs))
            finally:
                client.close()
    return rows


def _partial_jobs(client: MasterClient, base: JobConfig) -> list[tuple[str, dict[str, Any]]]:
    """(row label, job summary): uncoded first (the reference), then partial at every alpha
    and scale of PARTIAL_VARIANTS, full coding (flat) and ignore; same data, seed, rounds and
    step for all."""
    jobs = [("uncoded", _run(client, dataclasses.replace(base, scheme="uncoded")))]
    for alpha, scale in PARTIAL_VARIANTS:
        config = dataclasses.replace(base, scheme="partial", alpha=alpha, partial_scale=scale)
        suffix = "" if scale == "rescale" else f" {scale}"
        jobs.append((f"partial alpha={alpha:g}{suffix}", _run(client, config)))
    for scheme in ("flat", "ignore"):
        jobs.append((scheme, _run(client, dataclasses.replace(base, scheme=scheme))))
    return jobs


def _partial_rows(
    model: str, distribution: str, jobs: list[tuple[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The table rows of one (straggler model, data distribution) block. The target is the
    loss of uncoded (exact gradient descent, whose loss does not depend on how the rows are
    partitioned) after round 30; a scheme that never reaches it has time None ("never")."""
    summaries = dict(jobs)
    reference = summaries["uncoded"]
    target = reference["loss"][min(TARGET_ROUND, len(reference["loss"]) - 1)]
    flat_mean = summaries["flat"]["mean_round_seconds"]
    times = {label: _time_to(row, target) for label, row in jobs}
    rivals = [times["flat"], times["ignore"]]
    rows = []
    for label, row in jobs:
        partial = label.startswith("partial")
        design = json.loads(row["plan"]) if partial and row["plan"] else {}
        rows.append(
            {
                "straggle_model": model,
                "data": distribution,
                "scheme": label,
                "state": row["state"],
                "mean_round_ms": row["mean_round_seconds"] * 1e3,
                "vs_full_coding": row["mean_round_seconds"] / flat_mean,
                "target_loss": target,
                "time_to_uncoded_round30_loss_s": times[label],
                "rounds_to_target": _rounds_to(row, target),
                "setup_s": row["setup_seconds"],
                "beats_full_and_ignore": _beats(times[label], rivals) if partial else None,
                "final_loss": row["loss"][-1] if row["loss"] else None,
                "accuracy": row["accuracy"],
                "mean_recovered_fraction": float(np.mean(row["recovered_fraction"]))
                if row["recovered_fraction"]
                else None,
                "design": design.get("design"),
                "computation_load": design.get("computation_load"),
                "lp_bound": design.get("lp_bound"),
                "vectors_per_worker": design.get("vectors_per_worker"),
            }
        )
    return rows


def _beats(time: float | None, rivals: Sequence[float | None]) -> bool:
    """True when ``time`` reached the target strictly sooner than every rival (a rival that
    never reached it, None, is beaten by any time; a scheme that never reached it beats
    nothing)."""
    return time is not None and all(r is None or time < r for r in rivals)


def bench_shuffle(
    rounds: int = 120, seed: int = 0, slow: int = 3, repeats: int = 1
) -> list[dict[str, Any]]:
    """Every row of the shuffle benchmark (see the module docstring).

    With ``repeats`` > 1 every job runs that many times on the same cluster, the order of the
    jobs rotated by one at each repeat (a slow spell of the shared machine hits a different
    scheme each time); the rows give means over the repeats and, per approx variant, the loss at
    equal wall time relative to no shuffling with the same code in the same repeat (see
    :func:`shuffle_rows`).
    """
    from edgecode.straggle_classes import parse_straggle_classes

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = [f"edge-{0 if i < N_WORKERS // 2 else 1}-w{i}" for i in range(N_WORKERS)]
    # Named, not drawn: the first pair of workers (which hold the same data under frc with
    # s = 1) is slow, so without shuffling that data is (almost) never used.
    named = "+".join(names[i] for i in (0, 1, 7)[:slow])
    classes = parse_straggle_classes(f"slow={named}:p=0.9,active:p=0.05")
    slow_nodes = set(classes.pick_slow(names, np.random.default_rng([seed, 0xC1A5])))
    straggles = [classes.straggle_spec(name in slow_nodes) for name in names]
    base = JobConfig(
        dataset="synthetic-logistic:n=2000,d=20",
        rounds=rounds,
        seed=seed,
        s_flat=1,
        wait=7,
        optimizer="gd",
        learning_rate=1.0,
        checkpoint_every=0,
        round_deadline_seconds=30.0,
        shuffle_every=10,
    )
    jobs: list[tuple[str, JobConfig]] = []
    for code in ("frc", "crc"):
        for scheme, policy in (
            ("approx", ""),
            ("approx-shuffle", "random"),
            ("approx-shuffle", "aware"),
        ):
            config = dataclasses.replace(
                base, scheme=scheme, base_code=code, shuffle=policy or "random"
            )
            jobs.append((f"{scheme}{'-' + policy if policy else ''} ({code})", config))
    jobs.append(
        ("hgc (exact, s_w=1)", dataclasses.replace(base, scheme="hgc", s_edge=0, s_worker=1))
    )
    jobs.append(("ignore (first 7)", dataclasses.replace(base, scheme="ignore", s_flat=3)))
    results: list[dict[str, dict[str, Any]]] = []
    with LocalCluster(_setup(straggles, seed)) as cluster:
        client = cluster.client()
        try:
            for repeat in range(repeats):
                shift = repeat % len(jobs)
                order = jobs[shift:] + jobs[:shift]
                results.append({label: _run(client, config) for label, config in order})
        finally:
            client.close()
    rows = shuffle_rows([{label: results_[label] for label, _ in jobs} for results_ in results])
    for row in rows:
        row["slow_nodes"] = sorted(slow_nodes)
    return rows


def _loss_at(row: dict[str, Any], wall: float) -> float | None:
    at_wall = [
        loss
        for loss, seconds in zip(row["loss"], row["wall_seconds"], strict=True)
        if row["setup_seconds"] + seconds <= wall
    ]
    return float(at_wall[-1]) if at_wall else None


def _relative(value: float | None, baseline: float | None) -> float:
    """``value / baseline - 1``, NaN when either is missing."""
    if value is None or baseline is None:
        return float("nan")
    return value / baseline - 1.0


def _baseline(label: str) -> str | None:
    """The no-shuffling row an approx variant is compared with (same base code)."""
    if not label.startswith("approx-shuffle"):
        return None
    return "approx (" + label.rsplit("(", 1)[1]


def shuffle_rows(repeats: Sequence[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The benchmark's rows from every repeat's job summaries (label -> ``summary()`` dict).

    Within a repeat the equal wall time is the smallest wall time (setup included) any job
    reached, and each job's loss at equal wall time is its loss after the last round that ended
    by then. Per label: means over the repeats; for the approx variants also the relative loss
    difference at equal wall time to no shuffling with the same code, per repeat
    (``loss_vs_no_shuffle``: mean; ``_se``: its standard error, None for one repeat;
    ``wins_vs_no_shuffle``: the fraction of repeats with a lower loss; ``_per_repeat``: each).
    """
    if not repeats:
        raise ValueError("repeats: need at least one repeat")
    at_wall: list[dict[str, float | None]] = []
    walls = []
    for jobs in repeats:
        wall = min(r["setup_seconds"] + r["wall_seconds"][-1] for r in jobs.values() if r["loss"])
        walls.append(wall)
        at_wall.append({label: _loss_at(r, wall) for label, r in jobs.items()})
    rows = []
    for label in repeats[0]:
        runs = [jobs[label] for jobs in repeats]
        usage = [np.array(r["partition_usage"] or [1.0]) for r in runs]
        base = _baseline(label)
        relative = np.array([_relative(loss.get(label), loss.get(base or "")) for loss in at_wall])
        finite = relative[np.isfinite(relative)]
        losses = [value for loss in at_wall if (value := loss[label]) is not None]
        rows.append(
            {
                "scheme": label,
                "state": "succeeded"
                if all(r["state"] == "succeeded" for r in runs)
                else ",".join(sorted({r["state"] for r in runs})),
                "repeats": len(runs),
                "min_usage": float(np.mean([u.min() for u in usage])),
                "mean_usage": float(np.mean([u.mean() for u in usage])),
                "mean_residual": float(
                    np.mean([np.mean(r["decoding_residual"] or [0.0]) for r in runs])
                ),
                "shuffles": float(np.mean([r["shuffles"] for r in runs])),
                "bytes_per_shuffle": float(
                    sum(r["shuffle_bytes"] for r in runs) / max(1, sum(r["shuffles"] for r in runs))
                ),
                "mean_round_ms": float(np.mean([r["mean_round_seconds"] for r in runs]) * 1e3),
                "final_loss": float(np.mean([r["loss"][-1] for r in runs if r["loss"]]))
                if any(r["loss"] for r in runs)
                else None,
                "loss_at_equal_wall": float(np.mean(losses)) if losses else None,
                "loss_vs_no_shuffle": float(finite.mean()) if finite.size else None,
                "loss_vs_no_shuffle_se": float(finite.std(ddof=1) / np.sqrt(finite.size))
                if finite.size > 1
                else None,
                "wins_vs_no_shuffle": float(np.mean(finite < 0)) if finite.size else None,
                "loss_vs_no_shuffle_per_repeat": [float(x) for x in finite],
                "equal_wall_seconds": float(np.mean(walls)),
                "accuracy": float(np.mean([r["accuracy"] for r in runs])),
            }
        )
    return rows


def write_rows(rows: list[dict[str, Any]], out: Path, name: str) -> tuple[Path, Path]:
    """``name.json`` and ``name.csv`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / f"{name}.json", out / f"{name}.csv"
    json_path.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path


def plot_rows(rows: list[dict[str, Any]], path: Path, value: str, title: str) -> Path:
    """A bar chart of ``value`` per row (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("straggle_model", "data", "scheme")  # "data": partial's iid / sorted blocks
    labels = [" ".join(str(r[k]) for k in keys if r.get(k)) for r in rows]
    values = [float(r[value]) if r[value] is not None else np.nan for r in rows]
    figure, axis = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.5))
    axis.barh(labels, values, color="#4477aa")
    axis.invert_yaxis()
    axis.set_xlabel(value.replace("_", " "))
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
