"""``edgecode bench train --model torch:...``: a PyTorch model on a real local cluster.

scikit-learn's bundled ``digits`` (8 x 8 images, 10 classes), 8 worker processes in 2 edges,
one of them a persistent 5x straggler (emulated on top of the real torch compute), Adam with a
cosine schedule on the master, float64 parameters on the wire: the planner's hgc, uncoded and
ignore-stragglers side by side in one run. Per scheme: mean round time, time to 95 % test
accuracy (from the job's start: setup and placement included), final loss and accuracy, and the
workers' peak memory.

The test accuracy of every round comes from the parameters the master records
(``record_params``): this process loads the same split with the master's seed and evaluates the
same model, so the master's round path does no extra work.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgecode.cluster.local import LocalCluster, default_setup
from edgecode.master.client import param_history_of, summary
from edgecode.records import JobConfig

DATASET = "digits"
SCHEMES = ("hgc", "uncoded", "ignore")
TARGET_ACCURACY = 0.95
#: Emulated compute for the whole data set on top of torch's real compute (the straggler 5x).
COMPUTE_SECONDS = 0.16


def accuracy_curve(model_ref: str, seed: int, history: list[np.ndarray]) -> list[float]:
    """Test accuracy of every round's parameters, on the master's split for ``seed``."""
    from edgecode.learning.datasets import load_split
    from edgecode.learning.models import get_model

    _, test = load_split(DATASET, np.random.default_rng(seed))
    model = get_model(model_ref)
    model.n_params(test.n_features, test.n_classes)  # a torch model builds its module here
    return [float(model.accuracy(params, test.X, test.y)) for params in history]


def time_to_accuracy(row: dict[str, Any], target: float) -> float | None:
    """Seconds from the job's start to the end of the first round at ``target`` test accuracy
    (None: never reached).

    >>> time_to_accuracy({"test_accuracy": [0.5, 0.96], "wall_seconds": [1.0, 2.0],
    ...                   "setup_seconds": 0.5}, 0.95)
    2.5
    """
    for accuracy, wall in zip(row["test_accuracy"], row["wall_seconds"], strict=True):
        if accuracy >= target:
            return float(row["setup_seconds"] + wall)
    return None


def bench_torch_training(
    model_ref: str,
    rounds: int = 100,
    seed: int = 0,
    workdir: Path | None = None,
    progress: Callable[[str], None] = lambda text: None,
) -> dict[str, Any]:
    """Run every scheme on one cluster; the report (rows, memory, settings)."""
    setup = default_setup(
        straggler="slow:factor=5", slow_link_seconds=0.0, compute_seconds=COMPUTE_SECONDS, seed=seed
    )
    base: dict[str, Any] = {
        "dataset": DATASET,
        "model": model_ref,
        "rounds": rounds,
        "optimizer": "adam",
        "learning_rate": 0.01,
        "lr_schedule": f"cosine:total={rounds}",
        "seed": seed,
        "record_params": True,
        "checkpoint_every": 0,
        "s_flat": 1,
    }
    rows = []
    progress("starting a local cluster (2 edges, 8 workers, one 5x straggler) ...")
    from edgecode.datapaths import job_file_dirs

    # The master may read the model's file (a torch:PATH.py reference): its data directory.
    data_dirs = job_file_dirs("digits", model_ref)
    with LocalCluster(setup, workdir, data_dirs=data_dirs) as cluster:
        client = cluster.client()
        # warm-up: every worker imports torch and builds the module once, outside the timings
        warm_up = JobConfig(scheme="uncoded", **{**base, "rounds": 1})
        client.wait(client.submit(warm_up), timeout=600)
        for scheme in SCHEMES:
            progress(f"{scheme}: {rounds} rounds ...")
            extra: dict[str, Any] = {"s_edge": -1} if scheme == "hgc" else {}
            config = JobConfig(scheme=scheme, **base, **extra)
            status = client.wait(client.submit(config), timeout=1800)
            row = summary(status)
            row["test_accuracy"] = accuracy_curve(model_ref, seed, param_history_of(status))
            row["time_to_target_seconds"] = time_to_accuracy(row, TARGET_ACCURACY)
            rows.append(row)
        client.close()
        memory = cluster.peak_rss_mb("worker")
    return {
        "settings": {
            **base,
            "compute_seconds": COMPUTE_SECONDS,
            "target_accuracy": TARGET_ACCURACY,
        },
        "rows": rows,
        "worker_peak_rss_mb": memory,
        "max_worker_peak_rss_mb": max(memory.values()) if memory else math.nan,
    }


def plot_torch_training(report: dict[str, Any], path: Path) -> None:
    """Test accuracy vs wall time from the job's start, per scheme, with the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in report["rows"]:
        wall = [row["setup_seconds"] + w for w in row["wall_seconds"]]
        ax.plot(wall, row["test_accuracy"], label=row["scheme"])
    ax.axhline(TARGET_ACCURACY, color="grey", linestyle="--", linewidth=0.8, label="target")
    model = report["settings"]["model"].rsplit(":", 1)[-1]
    ax.set(
        xlabel="wall time from the job's start (s)",
        ylabel="test accuracy",
        title=f"{model} on digits, one persistent 5x straggler",
        ylim=(0.0, 1.0),
    )
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
