"""The load refinement's batched line search (planspeed5): the six trial steps evaluated in one
batch (``_refine._Objective.values``, ``_refine._fixed_rules``) give the bits of evaluating them
one at a time, and a descent equals the one-trial-at-a-time descent it replaced."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from edgecode.bench.planner import hard_cluster
from edgecode.planning import _refine
from edgecode.planning._evaluate import SEARCH_BREAKS, SEARCH_RTOL
from edgecode.planning.timing import _fixed_rule

optimize_module = importlib.import_module("edgecode.planning.optimize")

#: (edges, workers per edge, kind) of the hard clusters whose descents are checked.
CASES = ((2, 3, "bernoulli"), (2, 3, "fixed"), (2, 4, "markov"))


def _descents(edges: int, per_edge: int, kind: str, twins: bool = False) -> list[tuple[Any, ...]]:
    """The arguments of every descent ``optimize`` runs on a hard cluster (``twins``: every
    worker of an edge a copy of its first, so equal loads give equal kinks)."""
    spec = hard_cluster(edges, per_edge, kind, np.random.default_rng([7, edges, per_edge]))
    if twins:
        spec = replace(
            spec,
            edges=tuple(
                replace(
                    e,
                    workers=tuple(replace(e.workers[0], name=w.name) for w in e.workers),
                )
                for e in spec.edges
            ),
        )
    calls: list[tuple[Any, ...]] = []
    original = _refine.descend

    def record(*args: Any) -> _refine.Continuous:
        calls.append(args)
        return original(*args)

    patched = pytest.MonkeyPatch()
    patched.setattr(optimize_module._refine, "descend", record)
    try:
        optimize_module.optimize(spec)
    finally:
        patched.undo()
    assert calls, "optimize ran no descent"
    return calls


def _objective(cluster: Any, result: Any) -> _refine._Objective:
    st = result.structure
    rows = np.nonzero(st.emask)[0]
    sel = st.wmask[rows]
    need = sel.sum(axis=-1) - st.s_w[rows]
    return _refine._Objective(
        cluster,
        rows,
        sel,
        need,
        int(rows.size - st.s_edge),
        SEARCH_BREAKS,
        SEARCH_RTOL,
    )


def _random_loads(objective: _refine._Objective, B: int, rng: np.random.Generator) -> Any:
    """B random positive loads of the structure's selected workers (E[T] needs no sums)."""
    n, m = objective.sel.shape
    g = rng.uniform(0.2, 1.0, (B, n))
    u = np.where(objective.sel, rng.uniform(0.1, 1.0, (B, n, m)), 0.0)
    return g, u


@pytest.mark.parametrize("case", CASES)
def test_batched_values_and_rules_are_those_of_one_at_a_time(case: tuple[int, int, str]) -> None:
    rng = np.random.default_rng(list(case[:2]))
    for cluster, result, _K, _it in _descents(*case)[:2]:
        objective = _objective(cluster, result)
        g, u = _random_loads(objective, 6, rng)
        trials = objective.values(g, u)
        assert len(trials) == 6
        for b, trial in enumerate(trials):
            alone = objective.value(g[b], u[b])
            assert np.isfinite(trial.value) and trial.value == alone, (b, trial.value, alone)
            t_lo, nodes, weights = _fixed_rule(objective.model(g[b], u[b]), SEARCH_BREAKS)
            assert trial.rule is not None
            assert trial.rule[0] == t_lo
            assert np.array_equal(trial.rule[1], nodes) and np.array_equal(trial.rule[2], weights)


def test_equal_kinks_give_one_boundary() -> None:
    """Identical workers with equal loads share their kinks: the batched rule keeps each
    boundary once, as ``np.unique`` does in the one-model rule."""
    cluster, result, _K, _it = _descents(2, 3, "bernoulli", twins=True)[0]
    objective = _objective(cluster, result)
    n, m = objective.sel.shape
    g = np.full((4, n), 0.6)
    u = np.where(objective.sel, 1.0 / np.maximum(objective.sel.sum(-1), 1)[:, None], 0.0)
    u = np.broadcast_to(u, (4, n, m)) * np.array([1.0, 1.1, 1.2, 1.3])[:, None, None]
    for b, trial in enumerate(objective.values(g, u)):
        _, nodes, weights = _fixed_rule(objective.model(g[b], u[b]), SEARCH_BREAKS)
        assert trial.rule is not None and trial.value == objective.value(g[b], u[b])
        assert np.array_equal(trial.rule[1], nodes) and np.array_equal(trial.rule[2], weights)


def test_too_many_kinks_fall_back_to_one_at_a_time() -> None:
    """With fewer allowed breaks than kinks the rules are thinned one model at a time."""
    cluster, result, _K, _it = _descents(2, 3, "bernoulli")[0]
    objective = _objective(cluster, result)
    few = replace(objective, max_breaks=2)
    g, u = _random_loads(few, 3, np.random.default_rng(5))
    batch = few.model(g, u)
    weights = np.broadcast_to(batch.weights, batch.offsets.shape)
    assert _refine._fixed_rules(batch, weights, 2) is None
    values = [t.value for t in few.values(g, u)]
    alone = [few.value(g[b], u[b]) for b in range(3)]
    assert np.all(np.isfinite(values)) and values == alone


def _line_search_one_by_one(
    objective: _refine._Objective,
    st: Any,
    K: int,
    g: np.ndarray,
    u: np.ndarray,
    grad_f: np.ndarray,
    current: float,
    step: float,
) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """The line search before the batch: one trial step at a time, the first that helps."""
    sel, rows = objective.sel, objective.rows
    s_w, s_e = st.s_w[rows], st.s_edge
    size = sel.sum(-1)
    grad_u = np.where(sel, g[:, None] * grad_f, 0.0)
    grad_g = (u * grad_f).sum(axis=-1)
    centred_u = np.where(sel, grad_u - (grad_u.sum(-1) / size)[:, None], 0.0)
    centred_u = centred_u / (np.abs(centred_u).max() + 1e-300)
    centred_g = grad_g - grad_g.mean()
    centred_g = centred_g / (np.abs(centred_g).max() + 1e-300)
    lo_cover = np.ceil(size / (s_w + 1)) / K
    lo_u = np.where(sel, 1.0 / (K * np.maximum(g, 1.0 / K))[:, None], 0.0)
    for _ in range(6):
        new_u = _refine._project(
            u - step * (s_w + 1)[:, None] / size[:, None] * centred_u,
            (s_w + 1).astype(np.float64),
            lo_u,
            1.0,
            sel,
        )
        new_g = _refine._project(
            g[None] - step * (s_e + 1) / rows.size * centred_g[None],
            np.array([s_e + 1.0]),
            lo_cover[None],
            1.0,
            np.ones((1, rows.size), dtype=bool),
        )[0]
        trial = objective.value(new_g, new_u)
        if trial < current * (1 - 1e-10):
            return new_g, new_u, min(0.5, step * 1.5), trial
        step *= 0.35
    return None


def _descend_one_by_one(cluster: Any, result: Any, K: int, iterations: int) -> list[Any]:
    """The descent before the batch: its (g, u, value) at the start and after every step."""
    objective = _objective(cluster, result)
    st, rows, sel = result.structure, objective.rows, objective.sel
    g = (result.c[rows] / K).astype(np.float64)
    u = np.where(sel, result.l[rows] / np.maximum(result.c[rows], 1)[:, None], 0.0)
    current, grad_f = objective.value_and_gradient(g, u)
    step, small, path = 0.2, 0, [(g, u, current)]
    for _ in range(iterations):
        found = _line_search_one_by_one(objective, st, K, g, u, grad_f, current, step)
        if found is None:
            break
        g, u, step, trial = found
        gain = 1.0 - trial / current
        current, grad_f = objective.value_and_gradient(g, u)
        path.append((g, u, current))
        small = small + 1 if gain < _refine.SETTLED else 0
        if small == 2:
            break
    return path


def _same(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("case", CASES)
def test_descent_is_the_one_trial_at_a_time_descent(case: tuple[int, int, str]) -> None:
    """Same bits: every step's loads and value, hence the refined loads, as before the batch."""
    steps_taken = 0
    for cluster, result, K, iterations in _descents(*case):
        path = _descend_one_by_one(cluster, result, K, iterations)
        steps_taken += len(path) - 1
        for steps in sorted({iterations, 1, max(1, (len(path) - 1) // 2)}):
            # a shorter descent stops at the same point of the path
            loads = _refine.descend(cluster, result, K, steps)
            g, u, value = path[min(steps, len(path) - 1)]
            assert np.isfinite(loads.value) and loads.value == value
            assert _same([loads.g, loads.u], [g, u])
    assert steps_taken > 0, "no descent took a step"
