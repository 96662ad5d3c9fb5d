"""PNG figures of simulations: round-time distributions per scheme and the speed-up report.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` (the Agg canvas), never through
``pyplot``: no global figure state, no GUI backend, safe in tests and servers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from edgecode.sim.engine import FloatArray, SimResult

#: One colour per scheme label (see :data:`edgecode.sim.compare.LABELS`), stable across figures.
SCHEME_COLOURS = {
    "uncoded": "#7f7f7f",
    "ignore-stragglers": "#d62728",
    "flat-cyclic": "#ff7f0e",
    "hgc-uniform": "#1f77b4",
    "hgc-optimized": "#2ca02c",
}
_FALLBACK_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")


def scheme_colour(label: str, index: int = 0) -> str:
    """The colour of a scheme label; unknown labels cycle through a fallback palette."""
    return SCHEME_COLOURS.get(label, _FALLBACK_COLOURS[index % len(_FALLBACK_COLOURS)])


def plot_round_times(
    results: Mapping[str, SimResult], path: str | Path, *, title: str | None = None
) -> Path:
    """Round-time distributions per scheme, with the exact expectation against the simulated mean.

    Left: one violin per scheme (label -> result, in mapping order), a diamond at the plan's exact
    expected round time and a dot with a 95 % interval at the simulated mean. Right: the empirical
    CDFs, with the expectations as dashed vertical lines. Returns the written path.
    """
    if not results:
        raise ValueError("results: need at least one scheme to plot")
    path = Path(path)
    labels = list(results)
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    violins, cdfs = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})
    positions = np.arange(1, len(labels) + 1)
    parts = violins.violinplot(
        [results[label].round_seconds for label in labels],
        positions=positions,
        showextrema=False,
        widths=0.8,
    )
    for index, (body, label) in enumerate(zip(parts["bodies"], labels, strict=True)):
        body.set_facecolor(scheme_colour(label, index))
        body.set_alpha(0.45)
    for index, label in enumerate(labels):
        result = results[label]
        x = positions[index]
        violins.errorbar(
            x,
            result.mean_round_seconds,
            yerr=1.96 * result.standard_error if result.rounds > 1 else None,
            fmt="o",
            color="black",
            markersize=5,
            capsize=4,
            label="simulated mean" if index == 0 else None,
        )
        if result.expected_round_seconds is not None:
            violins.plot(
                x + 0.18,
                result.expected_round_seconds,
                "D",
                color="#e6550d",
                markersize=6,
                label="expected (exact)" if index == 0 else None,
            )
    violins.set_xticks(positions, labels, rotation=15)
    violins.set_ylabel("round time (s)")
    violins.set_title("round-time distribution per scheme")
    violins.grid(axis="y", alpha=0.3)
    violins.legend(loc="upper right", fontsize="small")

    for index, label in enumerate(labels):
        result = results[label]
        colour = scheme_colour(label, index)
        ordered = np.sort(result.round_seconds)
        probabilities = np.arange(1, ordered.size + 1) / ordered.size
        cdfs.step(ordered, probabilities, where="post", color=colour, label=label)
        if result.expected_round_seconds is not None:
            cdfs.axvline(result.expected_round_seconds, color=colour, linestyle="--", alpha=0.7)
    cdfs.set_xlabel("round time (s)")
    cdfs.set_ylabel("fraction of rounds")
    cdfs.set_title("empirical CDF (dashed: expected)")
    cdfs.grid(alpha=0.3)
    cdfs.legend(loc="lower right", fontsize="small")
    rounds = max(result.rounds for result in results.values())
    fig.suptitle(title or f"simulated round times ({rounds} rounds per scheme)")
    fig.savefig(path, dpi=120)
    return path


@dataclass(frozen=True)
class SpeedupPanel:
    """One panel of the speed-up figure: ``curves[label][j]`` is the speed-up at ``x[j]``.

    ``predicted`` holds the same curves from the planner's exact expectations (drawn dashed);
    ``log_x`` draws x on a base-2 log scale (for slowdowns 1, 2, 4, ...).
    """

    title: str
    xlabel: str
    x: FloatArray
    curves: Mapping[str, FloatArray]
    predicted: Mapping[str, FloatArray] = field(default_factory=dict)
    log_x: bool = False


def plot_speedup(panels: Sequence[SpeedupPanel], path: str | Path, *, title: str) -> Path:
    """Speed-up over uncoded training against a growing straggler parameter, one panel each.

    Solid lines with dots: simulated; dashed: exact expectations. Returns the written path.
    """
    if not panels:
        raise ValueError("panels: need at least one panel")
    path = Path(path)
    fig = Figure(figsize=(5.5 * len(panels), 4.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        for index, (label, values) in enumerate(panel.curves.items()):
            colour = scheme_colour(label, index)
            ax.plot(panel.x, values, "o-", color=colour, label=label)
            if label in panel.predicted:
                ax.plot(panel.x, panel.predicted[label], "--", color=colour, alpha=0.7)
        ax.plot([], [], "k-", label="simulated")
        ax.plot([], [], "k--", alpha=0.7, label="exact expectation")
        ax.axhline(1.0, color="black", linewidth=0.8)
        if panel.log_x:
            ax.set_xscale("log", base=2)
            ax.set_xticks(panel.x, [f"{v:g}" for v in panel.x])
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel("speed-up over uncoded (x)")
        ax.set_title(panel.title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    return path
