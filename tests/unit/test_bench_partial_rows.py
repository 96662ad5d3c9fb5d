"""``edgecode bench partial``'s rows from job summaries (no cluster): the time-to-loss target is
uncoded's round-30 loss, a scheme that never reaches it stays in the table with time None
("never"), and the verdict "partial beats full coding and ignore" follows the times."""

from __future__ import annotations

from typing import Any

import pytest

from edgecode.bench.papers import DATA_ORDERS, _beats, _partial_rows, bench_partial


def _summary(losses: list[float], round_seconds: float, setup: float = 1.0) -> dict[str, Any]:
    return {
        "state": "succeeded",
        "loss": losses,
        "wall_seconds": [round_seconds * (i + 1) for i in range(len(losses))],
        "setup_seconds": setup,
        "mean_round_seconds": round_seconds,
        "accuracy": 0.9,
        "recovered_fraction": [],
        "plan": "",
    }


def _jobs(ignore_losses: list[float]) -> list[tuple[str, dict[str, Any]]]:
    uncoded = [1.0 - 0.01 * i for i in range(40)]  # round 30 (index 29): 0.71
    return [
        ("uncoded", _summary(uncoded, 0.10)),
        ("partial alpha=0.8", _summary([1.0 - 0.02 * i for i in range(40)], 0.05)),  # i=15
        ("flat", _summary(uncoded, 0.08)),
        ("ignore", _summary(ignore_losses, 0.03)),
    ]


def test_a_scheme_that_never_reaches_the_target_is_kept_with_no_time() -> None:
    rows = _partial_rows("bernoulli", "sorted", _jobs([0.9] * 40))
    assert [r["scheme"] for r in rows] == ["uncoded", "partial alpha=0.8", "flat", "ignore"]
    by = {r["scheme"]: r for r in rows}
    assert all(r["target_loss"] == pytest.approx(0.71) and r["data"] == "sorted" for r in rows)
    assert by["ignore"]["time_to_uncoded_round30_loss_s"] is None
    assert by["ignore"]["rounds_to_target"] is None
    assert by["uncoded"]["rounds_to_target"] == 30
    assert by["partial alpha=0.8"]["rounds_to_target"] == 16
    assert by["uncoded"]["time_to_uncoded_round30_loss_s"] == pytest.approx(1.0 + 3.0)
    assert by["flat"]["time_to_uncoded_round30_loss_s"] == pytest.approx(1.0 + 30 * 0.08)
    assert by["partial alpha=0.8"]["time_to_uncoded_round30_loss_s"] == pytest.approx(1.8)
    assert by["partial alpha=0.8"]["beats_full_and_ignore"] is True
    assert by["flat"]["beats_full_and_ignore"] is None
    assert by["partial alpha=0.8"]["vs_full_coding"] == pytest.approx(0.05 / 0.08)


def test_partial_loses_to_a_faster_ignore() -> None:
    fast = [1.0 - 0.05 * i for i in range(40)]  # reaches 0.71 at index 6: 1 + 7 * 0.03 s
    by = {r["scheme"]: r for r in _partial_rows("exponential", "iid", _jobs(fast))}
    assert by["ignore"]["time_to_uncoded_round30_loss_s"] == pytest.approx(1.21)
    assert by["partial alpha=0.8"]["beats_full_and_ignore"] is False


@pytest.mark.parametrize(
    ("time", "rivals", "expected"),
    [
        (2.0, [3.0, 4.0], True),
        (2.0, [3.0, None], True),
        (2.0, [None, None], True),
        (2.0, [3.0, 2.0], False),  # a tie is not better
        (2.0, [1.0, None], False),
        (None, [None, None], False),  # never reaching beats nothing
        (None, [3.0, 4.0], False),
    ],
)
def test_beats(time: float | None, rivals: list[float | None], expected: bool) -> None:
    assert _beats(time, rivals) is expected


def test_unknown_data_distribution_is_refused_before_any_cluster() -> None:
    assert set(DATA_ORDERS) == {"iid", "sorted"}
    with pytest.raises(ValueError, match="data must be a non-empty subset"):
        bench_partial(30, 0, ("shuffled",))
    with pytest.raises(ValueError, match="data must be a non-empty subset"):
        bench_partial(30, 0, ())
