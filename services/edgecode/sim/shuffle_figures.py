"""The paper-2 figure: partition usage and decoding error over rounds, per scheme (PNG, Agg).

Drawn on a bare :class:`matplotlib.figure.Figure` (never ``pyplot``), like
:mod:`edgecode.sim.figures`. Panels: (a) the smallest per-partition usage so far (fraction of the
rounds 1..r in which the partition had weight) against the round r, with the mean usage dashed;
(b) the decoding residual ``||w - 1||^2 / K``, averaged over a sliding window of rounds;
(c) every partition's usage at the end, sorted; (d) when training curves are given, the mean
training loss (minus the optimum when known) against the wall clock (shuffle transfers included),
up to the time the fastest-finishing scheme ends, so every scheme is compared at equal wall time.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from edgecode.sim.shuffle import FloatArray, ShuffleRun, TrainingCurve

#: One colour per scheme of :data:`edgecode.sim.shuffle.SCHEMES`.
SHUFFLE_COLOURS = {
    "approx": "#ff7f0e",
    "approx-shuffle-random": "#1f77b4",
    "approx-shuffle-aware": "#2ca02c",
    "exact": "#7f7f7f",
    "ignore": "#d62728",
}
#: Rounds averaged in the residual panel.
WINDOW = 10


def running_min_usage(run: ShuffleRun) -> tuple[FloatArray, FloatArray]:
    """Per round r: (min over partitions, mean over partitions) of the usage over rounds 1..r."""
    counts = np.cumsum(run.used, axis=0) / np.arange(1, run.residual.size + 1)[:, None]
    return np.asarray(counts.min(axis=1)), np.asarray(counts.mean(axis=1))


def _smooth(values: FloatArray, window: int) -> FloatArray:
    window = max(1, min(window, values.size))
    kernel = np.ones(window) / window
    return np.asarray(np.convolve(values, kernel, mode="valid"), dtype=np.float64)


def plot_shuffle(
    runs: Mapping[str, ShuffleRun],
    path: str | Path,
    *,
    curves: Mapping[str, TrainingCurve] | None = None,
    title: str | None = None,
) -> Path:
    """Write the figure (see the module docstring) for ``runs`` (scheme -> run); returns the path."""
    if not runs:
        raise ValueError("runs: need at least one scheme to plot")
    path = Path(path)
    panels = 4 if curves else 3
    fig = Figure(figsize=(4.6 * panels, 4.2), layout="constrained")
    axes = fig.subplots(1, panels)
    for index, (scheme, run) in enumerate(runs.items()):
        colour = SHUFFLE_COLOURS.get(scheme, f"C{index}")
        rounds = np.arange(1, run.residual.size + 1)
        low, mean = running_min_usage(run)
        axes[0].plot(rounds, low, color=colour, label=scheme)
        axes[0].plot(rounds, mean, color=colour, linestyle="--", linewidth=0.8)
        smooth = _smooth(run.residual, WINDOW)
        axes[1].plot(np.arange(smooth.size) + min(WINDOW, run.residual.size), smooth, color=colour)
        axes[2].plot(np.sort(run.partition_usage), color=colour, marker=".", linestyle="-")
        if curves and scheme in curves:
            curve = curves[scheme]
            excess = curve.loss - (0.0 if np.isnan(curve.optimum) else curve.optimum)
            axes[3].semilogy(curve.wall_seconds, np.maximum(excess, 1e-16), color=colour)
    axes[0].set(xlabel="round", ylabel="partition usage so far", title="(a) min (solid), mean (--)")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8, loc="lower right")
    axes[1].set(xlabel="round", ylabel=f"residual ||w-1||²/K ({WINDOW}-round mean)")
    axes[1].set_title("(b) decoding error")
    axes[2].set(xlabel="partition (sorted)", ylabel="usage over the run", title="(c) usage")
    axes[2].set_ylim(-0.02, 1.02)
    if curves:
        common = min(float(curve.wall_seconds[-1]) for curve in curves.values())
        known = not any(np.isnan(curve.optimum) for curve in curves.values())
        label = "mean training loss" + (" - optimum" if known else "")
        axes[3].set(xlabel="wall seconds", ylabel=label, title="(d) training, equal wall time")
        axes[3].set_xlim(0.0, common)
        shown = [
            value
            for curve in curves.values()
            for value in (curve.loss - (0.0 if np.isnan(curve.optimum) else curve.optimum))[
                curve.wall_seconds <= common
            ]
            if value > 0
        ]
        if shown:  # negative rounding noise around the optimum must not stretch the axis
            axes[3].set_ylim(0.5 * min(shown), 2.0 * max(shown))
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
