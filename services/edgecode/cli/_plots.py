"""Figures the CLI writes (matplotlib, Agg backend: no display needed; imported on use)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def loss_curves(results: list[dict[str, Any]]) -> list[tuple[str, list[float], list[float]]]:
    """(label, wall seconds from the job's start, loss) per scheme with rounds: the x values
    are ``setup_seconds + wall_seconds``, so setup and placement are part of the curve.

    >>> loss_curves([{"scheme": "hgc", "loss": [0.5, 0.4], "wall_seconds": [1.0, 2.0],
    ...               "setup_seconds": 3.0, "mean_round_seconds": 1.0}])
    [('hgc (mean 1000.0 ms/round)', [4.0, 5.0], [0.5, 0.4])]
    """
    return [
        (
            f"{r['scheme']} (mean {r['mean_round_seconds'] * 1e3:.1f} ms/round)",
            [r["setup_seconds"] + w for w in r["wall_seconds"]],
            list(r["loss"]),
        )
        for r in results
        if r["loss"]
    ]


def plot_run(
    results: list[dict[str, Any]], latencies: dict[str, dict[str, list[float]]], path: Path
) -> None:
    """Left: training loss vs wall time per scheme, counted from the job's start on the master
    (setup and placement included: ``setup_seconds + wall_seconds``), with the target loss.
    Right: per-worker response latency (the straggler latency) in uncoded (else the first
    scheme), as box plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, lat_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for (label, wall, loss), r in zip(
        loss_curves(results), [r for r in results if r["loss"]], strict=True
    ):
        (line,) = loss_ax.plot(wall, loss, label=label)
        # where the rounds start: everything before is setup (load, plan, placement)
        loss_ax.axvline(r["setup_seconds"], color=line.get_color(), linestyle=":", linewidth=0.8)
    target = next((r.get("target_loss") for r in results if r.get("target_loss")), None)
    if target is not None:
        loss_ax.axhline(target, color="grey", linestyle="--", linewidth=0.8, label="target loss")
    loss_ax.set(
        xlabel="wall time from the job's start (s; setup included, dotted: rounds begin)",
        ylabel="training loss (mean per row)",
        yscale="log",
        title="Loss vs wall time",
    )
    loss_ax.legend()
    # Uncoded waits for every worker, so its latencies show the stragglers as they are; coded
    # schemes cut stragglers off (their latency there is the cut-off time).
    schemes = [r["scheme"] for r in results]
    scheme = "uncoded" if "uncoded" in schemes else (schemes[0] if schemes else "")
    per_worker = latencies.get(scheme, {})
    names = sorted(per_worker)
    if names:
        lat_ax.boxplot(
            [[1e3 * s for s in per_worker[n]] for n in names], tick_labels=names, vert=True
        )
        lat_ax.tick_params(axis="x", rotation=60)
    lat_ax.set(ylabel="response time seen by the edge (ms)", title=f"Per-worker latency ({scheme})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
