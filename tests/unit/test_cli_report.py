"""What ``edgecode run`` reports per scheme: the master's status as a result row, the time to the
target loss, strict JSON, the loss curve with setup included, and tables that fit 100 columns."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from edgecode.cli._jobs import TARGET_TOLERANCE, add_targets, report, time_to_loss
from edgecode.cli._plots import loss_curves
from edgecode.cli.run import write_json
from edgecode.master.client import summary
from edgecode.v1 import master_pb2


def _row(
    scheme: str, loss: list[float], setup: float = 1.0, state: str = "succeeded"
) -> dict[str, Any]:
    rounds = len(loss)
    return {
        "scheme": scheme,
        "state": state,
        "rounds": rounds,
        "mean_round_seconds": 0.0421 if rounds else math.nan,
        "median_round_seconds": 0.0403 if rounds else math.nan,
        "predicted_round_seconds": 0.0362 if scheme == "hgc" else None,
        "round_seconds": [0.0421] * rounds,
        "wall_seconds": [0.05 * (i + 1) for i in range(rounds)],
        "loss": loss,
        "accuracy": 0.9912 if rounds else math.nan,
        "stragglers": [1] * rounds,
        "setup_seconds": setup,
        "placement_seconds": 0.0831,
        "end_to_end_seconds": setup + 0.05 * rounds + 0.01,
    }


def test_summary_has_the_new_times() -> None:
    status = master_pb2.JobStatus(
        job_id="j",
        state=master_pb2.JOB_STATE_SUCCEEDED,
        setup_seconds=1.5,
        placement_seconds=0.25,
        spec=master_pb2.JobSpec(scheme="hgc", rounds=2),
        history=[
            master_pb2.RoundRecord(round=0, seconds=0.04, loss=0.5, wall_seconds=0.05),
            master_pb2.RoundRecord(round=1, seconds=0.06, loss=0.4, wall_seconds=0.11),
        ],
    )
    row = summary(status, end_to_end_seconds=1.75)
    assert row["setup_seconds"] == 1.5 and row["placement_seconds"] == 0.25
    assert row["end_to_end_seconds"] == 1.75
    assert row["mean_round_seconds"] == pytest.approx(0.05)
    assert row["median_round_seconds"] == pytest.approx(0.05)
    assert row["wall_seconds"] == [0.05, 0.11] and row["state"] == "succeeded"
    assert summary(status)["end_to_end_seconds"] is None


def test_time_to_loss_counts_setup_and_the_first_round_at_target() -> None:
    row = {
        "loss": [0.5, 0.3, 0.2, 0.25],
        "wall_seconds": [1.0, 2.0, 3.0, 4.0],
        "setup_seconds": 0.5,
    }
    assert time_to_loss(row, 0.3) == 2.5  # round 2 reaches 0.3: 0.5 s setup + 2.0 s
    assert time_to_loss(row, 0.2) == 3.5
    assert time_to_loss(row, 0.5) == 1.5
    assert time_to_loss(row, 0.1) is None
    assert time_to_loss({**row, "loss": [math.nan] * 4}, 0.3) is None


def test_target_is_uncoded_final_loss_plus_tolerance() -> None:
    rows = [
        _row("hgc", [0.5, 0.2, 0.10004], setup=2.0),
        _row("uncoded", [0.5, 0.2, 0.1], setup=0.5),
        _row("ignore", [0.5, 0.3, 0.2], setup=0.5),
    ]
    assert add_targets(rows) == "uncoded"
    target = 0.1 + TARGET_TOLERANCE
    assert all(r["target_loss"] == target for r in rows)
    assert rows[0]["time_to_target_seconds"] == pytest.approx(2.0 + 0.15)
    assert rows[1]["time_to_target_seconds"] == pytest.approx(0.5 + 0.15)
    assert rows[2]["time_to_target_seconds"] is None  # biased: never gets there


def test_target_without_a_successful_uncoded_is_the_lowest_final_loss() -> None:
    rows = [
        _row("uncoded", [0.5, 0.05], state="failed"),
        _row("hgc", [0.5, 0.2]),
        _row("flat", [0.5, 0.1]),
        _row("ignore", []),
    ]
    rows[0]["loss"] = [0.5, math.nan]
    assert add_targets(rows) == "flat"
    assert rows[1]["target_loss"] == pytest.approx(0.1 + TARGET_TOLERANCE)
    assert rows[1]["time_to_target_seconds"] is None
    assert rows[3]["time_to_target_seconds"] is None
    assert add_targets([_row("ignore", [])]) == ""


def test_loss_curve_includes_setup() -> None:
    rows = [_row("hgc", [0.5, 0.4], setup=2.0), _row("ignore", [])]
    [(label, wall, loss)] = loss_curves(rows)
    assert label.startswith("hgc (mean 42.1 ms/round")
    assert wall == pytest.approx([2.05, 2.10]) and loss == [0.5, 0.4]


def test_json_is_strict(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "run.json"
    write_json(path, {"schemes": [_row("ignore", [])], "x": [math.inf]})

    def refuse(constant: str) -> None:
        raise AssertionError(f"JSON holds {constant}")

    document = json.loads(path.read_text(), parse_constant=refuse)
    assert document["schemes"][0]["mean_round_seconds"] is None and document["x"] == [None]


def test_tables_fit_100_columns_without_cutting_a_value() -> None:
    rows = [
        _row("hgc", [0.5, 0.0593811], setup=1.234),
        _row("flat", [0.5, 0.0593811]),
        _row("uncoded", [0.5, 0.0593811], setup=0.052),
        _row("ignore", [0.5, 0.0701983], state="cancelled"),
    ]
    reference = add_targets(rows)
    buffer = io.StringIO()
    report(rows, reference, out=Console(file=buffer, width=100, color_system=None))
    text = buffer.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "…" not in text
    for header in ("mean", "median", "setup", "placement", "end-to-end", "to target"):
        assert header in text
    for value in ("42.1", "40.3", "36.2", "1.00x", "1.23", "0.08", "0.059381", "0.070198", "0.991"):
        assert value in text, value
    # the caption defines the target, with its value
    assert "uncoded's final loss + 0.0001" in " ".join(text.split())
