"""scripts/rpc_cost.py (the numbers behind docs/notes/round-overhead.md) runs every way it
lists against a real server subprocess, and refuses what it does not know."""

from __future__ import annotations

import math

import pytest

from helpers import load_script


def test_every_way_prints_finite_positive_costs(capsys: pytest.CaptureFixture[str]) -> None:
    script = load_script("rpc_cost")
    assert script.main(["--messages", "30", "--repeats", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == list(script.WAYS)
    for row in rows:
        wall, client, server = (float(x) for x in row.split()[1:])
        assert all(math.isfinite(v) for v in (wall, client, server)), row
        assert wall > 0 and client >= 0 and server >= 0, row


def test_a_gap_between_messages_is_idle_time_and_not_a_cost(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        load_script("rpc_cost").main(
            ["--messages", "20", "--ways", "unary", "--gap", "0.02", "--repeats", "1"]
        )
        == 0
    )
    (row,) = capsys.readouterr().out.splitlines()[1:]
    wall, client, server = (float(x) for x in row.split()[1:])
    assert 20_000 <= wall < 1_000_000, row  # each message waited its 20 ms gap
    assert all(math.isfinite(v) and 0 <= v < 20_000 for v in (client, server)), row


def test_an_unknown_way_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        load_script("rpc_cost").main(["--ways", "unary,carrier-pigeon"])
    assert exit_.value.code == 2
    assert "carrier-pigeon" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--messages", "0"], "--messages must be at least 1, got 0"),
        (["--repeats", "-1"], "--repeats must be at least 1, got -1"),
        (["--gap", "-0.1"], "--gap must be between 0 and 1 seconds, got -0.1"),
        (["--gap", "nan"], "--gap must be between 0 and 1 seconds, got nan"),
    ],
)
def test_a_count_below_one_is_refused_by_name(
    capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        load_script("rpc_cost").main(flags)
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith(named) and "--ways" not in error, error
