"""The load rule's root finder (planning._rule.increasing_root) with ``at``: it steps only the
elements still searching, and must give the same bits as the search over every element."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from edgecode.bench.planner import hard_cluster
from edgecode.planning import _rule
from edgecode.planning._evaluate import Evaluator
from edgecode.planning._search import _complete_neighbourhood, _screen, _starts


def _ramps(
    rng: np.random.Generator, shape: tuple[int, ...], pieces: int
) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Random non-decreasing piecewise-linear functions, one per element, with flat stretches:
    ``f(x) = sum_j slope_j clip(x - knot_j, 0, width_j)`` (some slopes 0), as ``func`` over the
    whole shape and as ``at(x, index)`` over flat indices."""
    knots = rng.uniform(0.0, 1.0, (*shape, pieces))
    widths = rng.uniform(0.0, 0.5, (*shape, pieces))
    slopes = np.where(
        rng.random((*shape, pieces)) < 0.3, 0.0, rng.uniform(0.1, 5.0, (*shape, pieces))
    )
    flat = [a.reshape(-1, pieces) for a in (knots, widths, slopes)]

    def func(x: np.ndarray) -> np.ndarray:
        return np.asarray((slopes * np.clip(x[..., None] - knots, 0.0, widths)).sum(axis=-1))

    def at(x: np.ndarray, index: np.ndarray) -> np.ndarray:
        k, w, s = (a[index] for a in flat)
        return np.asarray((s * np.clip(x[:, None] - k, 0.0, w)).sum(axis=-1))

    return func, at


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape", [(300,), (40, 7)])
def test_compacted_root_is_the_full_root_bit_for_bit(seed: int, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(seed)
    func, at = _ramps(rng, shape, pieces=5)
    lo = np.zeros(shape)
    hi = np.full(shape, 1.6)
    top = func(hi)
    # goals inside, at the ends and outside the range (settled before the first step), on flat
    # stretches (a plateau's value) and exactly at a knot's value
    goal = rng.uniform(-0.2, 1.2, shape) * top
    goal.ravel()[::11] = func(rng.uniform(0.0, 1.6, shape)).ravel()[::11]
    goal.ravel()[::13] = 0.0
    goal.ravel()[::17] = top.ravel()[::17]
    full = _rule.increasing_root(func, lo, hi, goal)
    compacted = _rule.increasing_root(func, lo, hi, goal, at=at)
    assert compacted.shape == full.shape
    assert np.all(np.isfinite(full)) and np.all(np.isfinite(compacted))
    assert np.array_equal(compacted.view(np.int64), full.view(np.int64))
    # and it is a root where the goal is in range
    inside = (goal > func(lo)) & (goal < top)
    assert np.all(np.abs(func(full) - goal)[inside] <= 1e-9 * np.maximum(1.0, top[inside]))


def _without_at(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the rule call the root finder without ``at`` (every element every step)."""
    root = _rule.increasing_root

    def full(func, lo, hi, goal, rtol=1e-14, *, at=None):  # type: ignore[no-untyped-def]
        return root(func, lo, hi, goal, rtol)

    monkeypatch.setattr(_rule, "increasing_root", full)


@pytest.mark.parametrize("kind", ["markov", "fixed", "plain"])
def test_rule_with_compacted_roots_gives_the_same_bits(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule over a complete neighbourhood (every single change of a structure: workers and
    edges in and out, every tolerance) at two levels and two K, and the search's first-order
    screen (its per-move edge rows (P, 1, m)): the same counts, loads and Theta."""
    spec = hard_cluster(3, 4, kind, np.random.default_rng([5, 3, 4]))
    cluster = _rule.cluster_arrays(spec)
    start = _starts(Evaluator(cluster, 24), [1], True)[0]
    found = _complete_neighbourhood(start, cluster)
    wmask = np.stack([s.wmask for s in found])
    s_w = np.stack([s.s_w for s in found])
    s_e = np.array([s.s_edge for s in found], dtype=np.int64)
    B = len(found)
    K = np.where(np.arange(B) % 2 == 0, 24, 240).astype(np.int64)
    level = np.where(np.arange(B) % 3 == 0, 0.95, 0.5)
    ev = Evaluator(cluster, 240)
    best = ev.evaluate([start])[0]
    assert best is not None

    def run() -> tuple[list[np.ndarray], list[tuple[float, int]]]:
        rule = list(_rule.apply(cluster, wmask, s_w, s_e, K, level))
        screened = [(change, i) for change, i, _, _ in _screen(ev, best, True)]
        return rule, screened

    compacted = run()
    _without_at(monkeypatch)
    full = run()
    assert B > 100 and compacted[0][2].any()
    for new, old in zip(compacted[0], full[0], strict=True):
        assert new.dtype == old.dtype and np.array_equal(new, old)
    theta = compacted[0][3][compacted[0][2]]
    assert np.all(np.isfinite(theta))
    assert np.array_equal(theta.view(np.int64), full[0][3][compacted[0][2]].view(np.int64))
    assert len(compacted[1]) > 10 and compacted[1] == full[1]
