"""Re-planning that pays for itself (issue 10): structure comparison, the payback rule, replan."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from edgecode.bench.planner import random_cluster
from edgecode.planning.baselines import best_uniform_plan
from edgecode.planning.optimize import optimize
from edgecode.planning.plans import build_plan, check_plan
from edgecode.planning.replan import decide, replan, same_structure, worth_replacing
from edgecode.planning.spec import ClusterSpec, EdgeSpec, Plan, WorkerSpec
from edgecode.planning.timing import expected_round_time


def _spec() -> ClusterSpec:
    a = tuple(WorkerSpec(f"a{j}", 0.1, 5.0) for j in range(3))
    b = tuple(WorkerSpec(f"b{j}", 0.2, 2.0) for j in range(2))
    return ClusterSpec((EdgeSpec("A", a, 0.01), EdgeSpec("B", b, 0.02)))


def _plan(loads_a: list[int], seconds: float | None = None) -> Plan:
    # K = 6, s_e = 1: c = (6, 6); A: s_w = 1; B: s_w = 0, loads 3 + 3
    return build_plan(_spec(), "hgc", 6, 1, [1, 0], [6, 6], [loads_a, [3, 3]], seconds)


def test_same_structure_compares_placement_not_predictions() -> None:
    base = _plan([4, 4, 4], 0.5)
    check_plan(base, _spec())
    assert same_structure(base, _plan([4, 4, 4], 0.9))  # stale prediction: same structure
    assert same_structure(base, replace(base, extra={"candidate": "other"}))
    assert not same_structure(base, _plan([6, 4, 2]))  # one load moved
    assert not same_structure(base, replace(base, s_edge=0))
    assert not same_structure(base, replace(base, partitions=12))
    edges = (replace(base.edges[0], s_worker=2), base.edges[1])
    assert not same_structure(base, replace(base, edges=edges))
    # edges and workers that take no part do not count, wherever they are listed
    idle = replace(base.edges[1], name="C", partitions=0, s_worker=0, workers=())
    assert same_structure(base, replace(base, edges=(idle, *base.edges)))


@pytest.mark.parametrize(
    ("current", "candidate", "rounds", "placement", "expected"),
    [
        (0.30, 0.25, 100, 2.0, True),  # saves 5 s > 2 s
        (0.30, 0.25, 10, 2.0, False),  # saves 0.5 s < 2 s
        (0.5, 0.25, 8, 2.0, False),  # saves exactly 2 s: not more than the cost
        (0.30, 0.31, 10**6, 0.0, False),  # slower candidate never pays
        (0.30, 0.25, 0, 0.0, False),  # no rounds left
        (0.30, 0.2999, 10**6, 0.0, True),  # free placement, any saving
    ],
)
def test_worth_replacing(
    current: float, candidate: float, rounds: int, placement: float, expected: bool
) -> None:
    assert worth_replacing(current, candidate, rounds, placement) is expected


def test_worth_replacing_validates() -> None:
    with pytest.raises(ValueError, match="remaining_rounds"):
        worth_replacing(1.0, 0.5, -1, 0.0)
    with pytest.raises(ValueError, match="placement_seconds"):
        worth_replacing(1.0, 0.5, 10, math.nan)
    with pytest.raises(ValueError, match="current_seconds"):
        worth_replacing(-1.0, 0.5, 10, 0.0)


def test_decide_keeps_the_same_structure_despite_a_stale_prediction() -> None:
    """Fake values: the current plan was predicted at 2 s under older models, the candidate (the
    very same placement) at 1 s now; a time comparison would re-place (100 s saved > 1 s)."""
    decision = decide(_plan([4, 4, 4], 2.0), _plan([4, 4, 4], 1.0), 100, 1.0)
    assert not decision.replace
    assert "same structure" in decision.reason


def test_decide_weighs_saving_against_placement() -> None:
    current, candidate = _plan([4, 4, 4], 0.30), _plan([6, 4, 2], 0.25)
    yes = decide(current, candidate, remaining_rounds=100, placement_seconds=2.0)
    assert yes.replace and yes.saving_seconds == pytest.approx(5.0)
    no = decide(current, candidate, remaining_rounds=10, placement_seconds=2.0)
    assert not no.replace and no.saving_seconds == pytest.approx(0.5)
    assert not decide(current, candidate, min_gain=0.5).replace  # 17% faster < 50%
    assert decide(current, candidate, min_gain=0.1).replace


def test_replan_keeps_the_plan_when_models_are_unchanged() -> None:
    spec = random_cluster(2, 3, np.random.default_rng(4), partitions=24)
    current = optimize(spec)
    stale = replace(current, expected_round_seconds=2 * (current.expected_round_seconds or 0))
    new_spec, plan = replan(spec, {}, current=stale)
    assert not plan.extra["decision"].replace
    assert plan.edges == current.edges
    assert plan.expected_round_seconds == pytest.approx(expected_round_time(new_spec, plan))


def test_replan_moves_data_when_a_worker_got_much_slower() -> None:
    spec = random_cluster(2, 3, np.random.default_rng(4), partitions=24)
    current = optimize(spec)
    slow = "e1-w2"
    before = {w.name: w.partitions for e in current.edges for w in e.workers}[slow]
    assert before > 0
    models = {slow: (5.0, 0.1)}  # ~15 s per data set instead of well under 1 s
    new_spec, plan = replan(spec, models, current=current, remaining_rounds=1_000)
    decision = plan.extra["decision"]
    assert decision.replace and decision.saving_seconds > 0
    assert not same_structure(plan, current)
    after = {w.name: w for e in plan.edges for w in e.workers}[slow]
    assert after.partitions < before
    check_plan(plan, new_spec)
    # the same change with one round left and a costly placement is not worth it
    _, kept = replan(spec, models, current=current, remaining_rounds=1, placement_seconds=1e6)
    assert not kept.extra["decision"].replace
    assert kept.edges == current.edges


def test_replan_drops_dead_workers_and_uses_new_models() -> None:
    spec = random_cluster(2, 3, np.random.default_rng(4), partitions=24)
    dead = ["e0-w0"]
    new_spec, plan = replan(spec, {"e1-w2": (5.0, 0.1)}, dead=dead)
    check_plan(plan, new_spec)
    assert [e.name for e in plan.edges] == [e.name for e in spec.edges]
    loads = {w.name: w for e in plan.edges for w in e.workers}
    assert not loads["e0-w0"].selected
    assert new_spec.edges[1].workers[2].shift == 5.0
    assert plan.expected_round_seconds == pytest.approx(
        expected_round_time(new_spec, plan), rel=1e-12
    )
    # the much slower e1-w2 gets little or nothing
    assert loads["e1-w2"].partitions <= min(
        w.partitions for w in loads.values() if w.selected and w.name != "e1-w2"
    )
    # a current plan using a dead worker is always replaced
    _, moved = replan(spec, {}, dead=dead, current=optimize(spec), min_gain=0.99)
    assert moved.extra["decision"].replace
    with pytest.raises(ValueError, match="unknown"):
        replan(spec, {"nobody": (1.0, 1.0)})


def test_replan_min_gain_keeps_a_different_plan() -> None:
    """The current plan is the paper's uniform one (another structure, slower than the optimum
    by less than half): min_gain = 0.5 keeps it, min_gain = 0 replaces it."""
    spec = random_cluster(2, 3, np.random.default_rng(4))
    current = best_uniform_plan(spec)
    best = optimize(spec)
    assert not same_structure(current, best)
    assert current.expected_round_seconds and best.expected_round_seconds
    assert best.expected_round_seconds > 0.5 * current.expected_round_seconds
    _, kept = replan(spec, {}, current=current, min_gain=0.5)
    assert kept.edges == current.edges and not kept.extra["decision"].replace
    _, moved = replan(spec, {}, current=current, min_gain=0.0)
    assert moved.extra["decision"].replace and same_structure(moved, best)
