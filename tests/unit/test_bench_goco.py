"""The GOCO benchmark's bookkeeping (edgecode.bench.goco): targets and time to target."""

from __future__ import annotations

from typing import Any

from edgecode.bench.goco import _first_stay_below, gossip_spec, simulated_rows, targets


def _row(scheme: str, p: float, gap: float, wall: float | None) -> dict[str, Any]:
    return {
        "source": "simulator",
        "graph": "ring",
        "p": p,
        "scheme": scheme,
        "gap": gap,
        "rounds": 300,
        "wall_to_target": wall,
    }


def test_targets_compare_the_right_cells() -> None:
    rows = [
        _row("goco", 0.1, 9.0, None),  # p < 0.3: not a target
        _row("gossip", 0.1, 1.0, 1.0),
        _row("gossip-wait", 0.1, 1.0, 1.0),
        _row("goco", 0.3, 1.0, 50.0),
        _row("gossip", 0.3, 2.0, None),
        _row("gossip-wait", 0.3, 1.0, 60.0),
        _row("goco", 0.5, 3.0, 70.0),
        _row("gossip", 0.5, 2.0, 10.0),
        _row("gossip-wait", 0.5, 1.0, None),
        {**_row("goco", 0.3, 100.0, None), "source": "real processes"},
    ]
    got = targets(rows)
    assert [t["met"] for t in got] == [True, True, False, True]
    assert "p=0.3" in got[0]["target"] and "p=0.5" in got[2]["target"]
    rows[3]["wall_to_target"] = 61.0
    assert targets(rows)[1]["met"] is False


def test_first_stay_below() -> None:
    assert _first_stay_below([0.5, 0.1, 0.01, 0.02, 0.005], 0.05) == 3
    assert _first_stay_below([0.5, 0.01, 0.2, 0.04], 0.05) == 4
    assert _first_stay_below([0.5, 0.01, 0.2], 0.05) is None
    assert _first_stay_below([None, 0.01], 0.05) == 2
    assert _first_stay_below([], 0.05) is None


def test_the_benchmark_job_and_a_small_simulated_table() -> None:
    spec = gossip_spec("goco", p=0.3, rounds=10).validated()
    assert spec.replication == 3 and spec.non_iid and spec.peers == 12
    assert spec.straggle == "bernoulli:p=0.3,factor=5"
    rows = simulated_rows(rounds=20, repeats=1, target_gap=0.5, seed=0)
    assert len(rows) == 18 and {r["source"] for r in rows} == {"simulator"}
    assert {r["d"] for r in rows if r["scheme"] == "goco"} == {3}
    assert {r["d"] for r in rows if r["scheme"] != "goco"} == {1}
