"""The aggregation of ``edgecode bench shuffle`` (edgecode.bench.papers.shuffle_rows)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgecode.bench.papers import shuffle_rows


def _job(losses: list[float], round_seconds: float, shuffles: int = 0) -> dict[str, Any]:
    walls = [round_seconds * (i + 1) for i in range(len(losses))]
    return {
        "state": "succeeded",
        "loss": losses,
        "wall_seconds": walls,
        "setup_seconds": 0.5,
        "partition_usage": [0.5, 1.0],
        "decoding_residual": [0.1, 0.3],
        "shuffles": shuffles,
        "shuffle_bytes": 100 * shuffles,
        "mean_round_seconds": round_seconds,
        "accuracy": 0.9,
    }


def test_loss_at_equal_wall_time_is_paired_per_repeat() -> None:
    """Repeat 0: the aware job is slower (equal wall time at ignore's end, 0.5 + 3 x 0.1 s:
    approx has done 4 rounds, aware 2); repeat 1: both as fast, and ignore faster (0.74 s).
    The equal wall time and the relative difference are taken within each repeat, then
    averaged."""
    losses = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
    repeats = [
        {
            "approx (crc)": _job(losses, 0.07),
            "approx-shuffle-aware (crc)": _job([0.95, 0.85, 0.75, 0.65, 0.55, 0.45], 0.14, 2),
            "ignore (first 7)": _job([1.0, 0.95, 0.9], 0.1),
        },
        {
            "approx (crc)": _job(losses, 0.1),
            "approx-shuffle-aware (crc)": _job([0.95, 0.85, 0.75, 0.65, 0.55, 0.45], 0.1, 1),
            "ignore (first 7)": _job([1.0, 0.95, 0.9], 0.08),
        },
    ]
    rows = {row["scheme"]: row for row in shuffle_rows(repeats)}
    aware = rows["approx-shuffle-aware (crc)"]
    # repeat 0: wall 0.8 s -> approx after round 4 (0.7), aware after round 2 (0.85)
    # repeat 1: wall 0.74 s -> both after round 2 (0.9 and 0.85)
    expected = np.array([0.85 / 0.7 - 1.0, 0.85 / 0.9 - 1.0])
    assert aware["loss_vs_no_shuffle"] == pytest.approx(expected.mean(), rel=1e-12)
    assert aware["loss_vs_no_shuffle_se"] == pytest.approx(
        expected.std(ddof=1) / np.sqrt(2), rel=1e-12
    )
    assert aware["wins_vs_no_shuffle"] == 0.5
    assert aware["loss_vs_no_shuffle_per_repeat"] == pytest.approx(expected.tolist(), rel=1e-12)
    assert aware["loss_at_equal_wall"] == pytest.approx(0.85, rel=1e-12)
    assert aware["shuffles"] == 1.5 and aware["bytes_per_shuffle"] == 100.0
    assert aware["mean_round_ms"] == pytest.approx(120.0) and aware["repeats"] == 2
    assert rows["approx (crc)"]["loss_vs_no_shuffle"] is None  # the baseline itself
    assert rows["ignore (first 7)"]["loss_vs_no_shuffle"] is None
    assert rows["approx (crc)"]["equal_wall_seconds"] == pytest.approx(0.77)
    assert rows["approx (crc)"]["loss_at_equal_wall"] == pytest.approx(0.8, rel=1e-12)


def test_one_repeat_has_no_standard_error_and_failures_show() -> None:
    failed = _job([1.0, 0.9], 0.1) | {"state": "failed"}
    rows = shuffle_rows(
        [{"approx (frc)": _job([1.0, 0.8], 0.1), "approx-shuffle-random (frc)": failed}]
    )
    shuffled = rows[1]
    assert shuffled["loss_vs_no_shuffle"] == pytest.approx(0.9 / 0.8 - 1.0)
    assert shuffled["loss_vs_no_shuffle_se"] is None and shuffled["wins_vs_no_shuffle"] == 0.0
    assert shuffled["state"] == "failed" and rows[0]["state"] == "succeeded"
    with pytest.raises(ValueError, match="repeats"):
        shuffle_rows([])
