"""The planner's lockstep search (planspeed3): several evaluators' questions answered in one
batch (``_evaluate.best_many`` / ``evaluate_many``, ``_search.search_many``) give the answers of
asking them one after the other, and the coarse first brackets are guaranteed bounds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edgecode.bench.planner import random_cluster
from edgecode.planning import _batch, _rule, _search
from edgecode.planning._evaluate import Evaluator, Structure, best_many, evaluate_many
from edgecode.planning.spec import ClusterSpec

LEVELS = (0.5, 0.8, 0.95)


def _bernoulli(spec: ClusterSpec, p: float = 0.2, slow: float = 4.0) -> ClusterSpec:
    return replace(
        spec,
        edges=tuple(
            replace(
                e,
                workers=tuple(
                    replace(w, model="bernoulli", p_straggle=p, slow_factor=slow) for w in e.workers
                ),
            )
            for e in spec.edges
        ),
    )


def _cluster(kind: str, seed: int) -> tuple[_rule.Cluster, int]:
    """A small cluster of the planner's hard path (bimodal, few partitions, many edges) or a
    plain one, and the K its search runs at."""
    rng = np.random.default_rng(100 + seed)
    if kind == "bernoulli":
        return _rule.cluster_arrays(_bernoulli(random_cluster(2, 3, rng))), 240
    if kind == "fixed":
        spec = random_cluster(3, 3, rng)
        return _rule.cluster_arrays(spec), 2 * spec.n_workers
    if kind == "edges":  # beyond FULL_S_EDGE_SCAN edges: the scan and then around its best
        return _rule.cluster_arrays(_bernoulli(random_cluster(10, 1, rng), 0.1, 5.0)), 40
    return _rule.cluster_arrays(random_cluster(2, 4, rng)), 120


def _random_structures(
    cluster: _rule.Cluster, rng: np.random.Generator, count: int
) -> list[Structure]:
    n, m = cluster.mask.shape
    out: list[Structure] = []
    while len(out) < count:
        wmask = cluster.mask & (rng.random((n, m)) < 0.8)
        sizes = wmask.sum(axis=-1)
        if not (sizes > 0).any():
            continue
        s_w = np.where(sizes > 0, rng.integers(0, np.maximum(sizes, 1)), 0).astype(np.int64)
        out.append(Structure(int(rng.integers(0, int((sizes > 0).sum()))), wmask, s_w))
    return out


def _same(got: list[object], want: list[object]) -> None:
    """The same structures in the same order, values equal to the last bits (a batch's padding
    depends on its members)."""
    assert [r.structure.key() for r in got] == [r.structure.key() for r in want]  # type: ignore[attr-defined]
    a = np.array([r.value for r in got])  # type: ignore[attr-defined]
    b = np.array([r.value for r in want])  # type: ignore[attr-defined]
    errs = np.abs(a / b - 1)
    assert np.all(np.isfinite(errs)) and np.all(errs <= 1e-12), errs


@pytest.mark.parametrize("parallel", [1, 4])
@pytest.mark.parametrize(
    ("kind", "seed"), [("bernoulli", 0), ("fixed", 1), ("plain", 2), ("edges", 3)]
)
def test_lockstep_search_equals_one_search_after_the_other(
    kind: str, seed: int, parallel: int
) -> None:
    """``search_many`` over the three levels (one shared quantiles memo, descents of a level
    side by side or one at a time) returns, for every level, the structures and values of
    ``search`` run alone on a fresh evaluator."""
    cluster, K = _cluster(kind, seed)
    shared: dict[float, np.ndarray] = {}
    together = [Evaluator(cluster, K, at, quantiles=shared) for at in LEVELS]
    got = _search.search_many(together, parallel=parallel)
    assert len(got) == len(LEVELS)
    for at, results in zip(LEVELS, got, strict=True):
        alone = _search.search(Evaluator(cluster, K, at))
        assert results, f"level {at}: nothing found"
        _same(results, alone)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["bernoulli", "plain"])
def test_best_many_answers_each_question_as_best_alone(kind: str) -> None:
    """Questions of several evaluators (different levels and K; bounds infinite, a median
    value, just above the best, the best itself; one evaluator asked twice) answered together
    give the best of every candidate (integrating all of them), or None where nothing beats
    the bound; and the brackets still set candidates aside."""
    cluster, _ = _cluster(kind, 5)
    rng = np.random.default_rng(11)
    checked = 0
    settings = ((120, 0.5), (60, 0.8), (240, 0.95), (120, 0.8))
    for start in _random_structures(cluster, rng, 4):
        neighbours = _search._full_neighbours(start, cluster)
        evs = [Evaluator(cluster, K, at) for K, at in settings]
        truth = []
        for ev in evs:
            plain = Evaluator(cluster, ev.K, ev.level)
            plain.budget = 10**8  # a budget turns the brackets off
            every = [r for r in plain.evaluate(neighbours) if r is not None]
            truth.append((min(every, key=lambda r: r.value), sorted(r.value for r in every)))
        bounds = [
            np.inf,
            truth[1][1][len(truth[1][1]) // 2],
            truth[2][0].value,
            truth[3][0].value * (1 + 1e-5),
        ]
        requests = [(ev, neighbours, b) for ev, b in zip(evs, bounds, strict=True)]
        requests.append((evs[0], neighbours, truth[0][0].value))  # the same evaluator again
        answers = best_many(requests)
        for (ev, _, bound), got in zip(requests, answers, strict=True):
            best = truth[evs.index(ev)][0]
            if bound <= best.value:
                assert got is None or got.value >= bound * (1 - 1e-13)
                continue
            assert got is not None and got.structure.key() == best.structure.key()
            assert abs(got.value / best.value - 1) <= 1e-13
            checked += 1
        assert sum(ev.evaluations for ev in evs) < sum(len(t[1]) for t in truth)
    assert checked >= 12


def test_evaluate_many_equals_evaluate() -> None:
    """``evaluate_many`` for several evaluators (one of them twice) gives each structure the
    counts and value ``Evaluator.evaluate`` gives it (None where infeasible)."""
    cluster, _ = _cluster("bernoulli", 6)
    rng = np.random.default_rng(12)
    structures = _random_structures(cluster, rng, 30)
    evs = [Evaluator(cluster, K, at) for K, at in ((2, 0.5), (60, 0.8), (240, 0.95))]
    batches = [(evs[0], structures[:20]), (evs[1], structures), (evs[2], structures[10:])]
    batches.append((evs[0], structures[15:]))
    got = evaluate_many(batches)
    infeasible = 0
    for (ev, found), results in zip(batches, got, strict=True):
        want = Evaluator(cluster, ev.K, ev.level).evaluate(found)
        assert len(results) == len(want)
        for a, b in zip(results, want, strict=True):
            assert (a is None) == (b is None)
            if a is None or b is None:
                infeasible += 1
                continue
            assert np.array_equal(a.c, b.c) and np.array_equal(a.l, b.l)
            assert abs(a.value / b.value - 1) <= 1e-13
    assert infeasible >= 1, "K = 2 should leave some structures infeasible"


@pytest.mark.parametrize("stride", [2, 3, 4])
@pytest.mark.parametrize("mixed", [False, True])
def test_coarse_brackets_hold_and_contain_the_fine_ones(mixed: bool, stride: int) -> None:
    """Brackets on every ``stride``-th panel boundary (the first, coarse stage of the search's
    pruning) are guaranteed bounds -- lower <= E[T] (adaptive, rtol 1e-12) <= upper -- and,
    on a grid that is a subset of the fine brackets' grid, never tighter than those."""
    from edgecode.planning.timing import _expected_time

    rng = np.random.default_rng(20 + stride)
    spec = random_cluster(3, 3, rng)
    cluster = _rule.cluster_arrays(_bernoulli(spec) if mixed else spec)
    found = _random_structures(cluster, rng, 20)
    loads = np.stack([np.where(s.wmask, rng.integers(1, 40, s.wmask.shape), 0) for s in found])
    args = (
        cluster,
        np.stack([s.wmask for s in found]),
        np.stack([s.s_w for s in found]),
        np.array([s.s_edge for s in found], dtype=np.int64),
        loads.astype(np.int64),
        60,
        64,
    )
    lower, upper = _batch.brackets(*args, points=1, stride=stride)
    exact = np.array(
        [
            _expected_time(_rule.model(cluster, s.wmask, s.s_w, s.s_edge, ld, 60.0), 1e-12)
            for s, ld in zip(found, loads, strict=True)
        ]
    )
    below = (exact - lower) / exact
    above = (upper - exact) / exact
    assert np.all(np.isfinite(below)) and np.all(below >= -1e-12), below
    assert np.all(np.isfinite(above)) and np.all(above >= -1e-12), above
    fine_lower, fine_upper = _batch.brackets(*args, points=2)
    assert np.all(lower <= fine_lower + 1e-12) and np.all(upper >= fine_upper - 1e-12)


def test_candidates_with_equal_fractions_are_integrated_once() -> None:
    """``optimize._distinct`` groups a K grid's candidates exactly by (structure, l / K):
    proportional counts (2 l out of 2 K) join their original, any other K or load does not;
    and ``_evaluate_loads`` (which integrates one of each group) gives every candidate the
    value of integrating it alone."""
    import importlib
    from fractions import Fraction

    optimize = importlib.import_module("edgecode.planning.optimize")

    cluster, _ = _cluster("bernoulli", 7)
    rng = np.random.default_rng(13)
    base = _random_structures(cluster, rng, 6)
    structures, Ks, counts = [], [], []
    for s in base:
        c = np.where(s.wmask.any(axis=-1), 3, 0).astype(np.int64)
        l = np.where(s.wmask, rng.integers(1, 4, s.wmask.shape), 0).astype(np.int64)
        for scale, K in ((1, 6), (2, 12), (3, 18), (1, 7), (1, 6)):
            structures.append(s)
            Ks.append(K * scale if K == 7 else K)
            counts.append((c * scale, l * scale))
        structures.append(s)  # the same loads one apart: other fractions
        Ks.append(6)
        counts.append((c, l + s.wmask))
    wmask = np.stack([s.wmask for s in structures])
    s_w = np.stack([s.s_w for s in structures])
    s_e = np.array([s.s_edge for s in structures], dtype=np.int64)
    loads = np.stack([x[1] for x in counts])
    K_all = np.array(Ks, dtype=np.int64)
    first, copies = optimize._distinct(wmask, s_w, s_e, loads, K_all)

    def fractions(b: int) -> tuple[bytes, tuple[Fraction, ...]]:
        row = tuple(Fraction(int(x), int(K_all[b])) for x in loads[b].ravel())
        return structures[b].key(), row

    for b in range(len(structures)):
        for d in range(len(structures)):
            same = copies[b] == copies[d]
            assert same == (fractions(b) == fractions(d)), (b, d)
    assert first.size == 3 * len(base)  # (6 / 12 / 18 and 6 again), 7, the other loads
    got = optimize._evaluate_loads(cluster, structures, Ks, [None] * len(Ks), counts)
    alone = _batch.expected_times(cluster, wmask, s_w, s_e, loads, K_all, 64)
    by_id = {(x.result.structure.key(), x.K, x.result.l.tobytes()): x.result.value for x in got}
    want = {(structures[b].key(), Ks[b], loads[b].tobytes()): alone[b] for b in range(len(Ks))}
    assert by_id.keys() == want.keys()
    errs = np.array([abs(by_id[k] / want[k] - 1) for k in want])
    assert np.all(np.isfinite(errs)) and np.all(errs <= 1e-13), errs


@pytest.mark.parametrize(("kind", "seed"), [("bernoulli", 0), ("fixed", 1), ("edges", 3)])
def test_lockstep_search_from_fewer_seeds_equals_those_descents_alone(kind: str, seed: int) -> None:
    """``search_many(..., seeds=[None, 1, 1])`` (what ``optimize`` asks on the hard path): the
    first level as ``search`` alone; the others the ranked ends of the complete-neighbourhood
    descent from their best seed only (on a fresh evaluator; the seed ranked with them as
    ``search`` ranks its seeds)."""
    cluster, K = _cluster(kind, seed)
    limits = [None, 1, 1]
    shared: dict[float, np.ndarray] = {}
    together = [Evaluator(cluster, K, at, quantiles=shared) for at in LEVELS]
    got = _search.search_many(together, seeds=limits)
    _same(got[0], _search.search(Evaluator(cluster, K, LEVELS[0])))  # type: ignore[arg-type]
    for at, limit, results in zip(LEVELS[1:], limits[1:], got[1:], strict=True):
        ev = Evaluator(cluster, K, at)
        seeds = _search._seeds([ev], True)[0]
        assert limit is not None and len(seeds) > limit, "the test needs seeds to drop"
        ends = [_search._local_search(ev, s, True, 20) for s in seeds[:limit]]
        want = _search._ranked(ends, seeds[:limit], 3)
        assert results, f"level {at}: nothing found"
        _same(results, want)  # type: ignore[arg-type]
