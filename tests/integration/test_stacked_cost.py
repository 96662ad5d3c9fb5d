"""scripts/stacked_cost.py (the numbers behind the README's stacked-gradient sentence) runs
and prints finite, positive timings and a rounding-sized difference for every row."""

from __future__ import annotations

import math

import pytest

from helpers import load_script


def test_every_row_prints_finite_timings_and_a_rounding_difference(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert load_script("stacked_cost").main(["--repeats", "1", "--number", "5"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [int(row.split()[0]) for row in rows] == [2, 4, 8]
    for row in rows:
        per_part, stacked, ratio, difference = (float(x) for x in row.split()[1:])
        assert all(math.isfinite(v) for v in (per_part, stacked, ratio, difference)), row
        assert per_part > 0 and stacked > 0 and 0 <= difference <= 1e-12, row


def test_a_count_below_one_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        load_script("stacked_cost").main(["--rows", "0"])
    assert exit_.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .endswith("--rows must be at least 1, got 0")
    )
