"""The batch evaluator of the planner's search (planning._batch) against the per-structure
fixed rule of planning.timing, on structures with unselected edges and workers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edgecode.bench.planner import random_cluster
from edgecode.planning import _batch, _rule
from edgecode.planning.timing import _deliveries, _quick_expected_time

Found = list[tuple[np.ndarray, np.ndarray, int, np.ndarray]]


def _structures(cluster: _rule.Cluster, rng: np.random.Generator, count: int) -> Found:
    """Random valid structures (some workers and edges out) with random loads out of K = 60."""
    n, m = cluster.mask.shape
    out: Found = []
    while len(out) < count:
        wmask = cluster.mask & (rng.random((n, m)) < 0.75)
        sizes = wmask.sum(axis=-1)
        if not (sizes > 0).any():
            continue
        s_w = np.where(sizes > 0, rng.integers(0, np.maximum(sizes, 1)), 0).astype(np.int64)
        s_e = int(rng.integers(0, int((sizes > 0).sum())))
        loads = np.where(wmask, rng.integers(1, 40, (n, m)), 0).astype(np.int64)
        out.append((wmask, s_w, s_e, loads))
    return out


@pytest.mark.parametrize("mixed", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_batch_values_equal_the_per_structure_rule(seed: int, mixed: bool) -> None:
    rng = np.random.default_rng(seed)
    spec = random_cluster(3, 3, rng)
    if mixed:
        spec = replace(
            spec,
            edges=tuple(
                replace(
                    e,
                    workers=tuple(
                        replace(w, model="bernoulli", p_straggle=0.2, slow_factor=4.0)
                        for w in e.workers
                    ),
                )
                for e in spec.edges
            ),
        )
    cluster = _rule.cluster_arrays(spec)
    assert cluster.mixed == mixed
    found = _structures(cluster, rng, 24)
    values = _batch.expected_times(
        cluster,
        np.stack([f[0] for f in found]),
        np.stack([f[1] for f in found]),
        np.array([f[2] for f in found], dtype=np.int64),
        np.stack([f[3] for f in found]),
        60,
        64,
    )
    reference = np.array(
        [
            _quick_expected_time(_rule.model(cluster, wm, sw, se, loads, 60.0), 64)
            for wm, sw, se, loads in found
        ]
    )
    errs = np.abs(values / reference - 1)
    assert np.all(np.isfinite(errs)) and np.all(errs <= 1e-12), errs


@pytest.mark.parametrize("mixed", [False, True])
def test_deliveries_are_the_count_tail_of_the_arrival_probabilities(mixed: bool) -> None:
    """Against a direct sum over all arrival subsets (padded groups included)."""
    from itertools import product

    from edgecode.planning.timing import _model_from_arrays

    rng = np.random.default_rng(7)
    mask = np.array([[True, True, True], [True, True, False]])
    model = _model_from_arrays(
        rng.uniform(0.2, 0.8, (2, 3)),
        rng.uniform(0.0, 0.3, (2, 3)),
        rng.uniform(1.0, 10.0, (2, 3)),
        rng.uniform(0.0, 0.01, (2, 3)),
        np.full((2, 3), 0.3 if mixed else 0.0),
        np.full((2, 3), 3.0 if mixed else 1.0),
        mask,
        np.array([2, 1]),
        np.array([0.0, 0.01]),
        1,
    )
    t = np.linspace(0.0, 2.0, 23)
    x = t[None, None, None, :] - model.links[:, None, None, None]
    arrived = np.sum(
        model.weights[..., None]
        * (x > model.offsets[..., None])
        * -np.expm1(-np.maximum(x - model.offsets[..., None], 0.0) * model.rates[..., None]),
        axis=2,
    )  # (g, m, T)
    ge, lt = _deliveries(model, t)
    errs = []
    for i in range(2):
        slots = np.nonzero(mask[i])[0]
        expect = np.zeros(t.size)
        for pattern in product([0, 1], repeat=slots.size):
            prob = np.ones(t.size)
            for w, a in zip(slots, pattern, strict=True):
                prob = prob * (arrived[i, w] if a else 1.0 - arrived[i, w])
            if sum(pattern) >= model.need[i]:
                expect += prob
        errs.append(np.abs(ge[i] - expect))
        errs.append(np.abs(lt[i] - (1.0 - expect)))
    all_errs = np.concatenate(errs)
    assert np.all(np.isfinite(all_errs)) and np.all(all_errs <= 1e-12), all_errs.max()


def _bernoulli(spec: object) -> object:
    return replace(
        spec,
        edges=tuple(
            replace(
                e,
                workers=tuple(
                    replace(w, model="bernoulli", p_straggle=0.2, slow_factor=4.0)
                    for w in e.workers
                ),
            )
            for e in spec.edges  # type: ignore[attr-defined]
        ),
    )


@pytest.mark.parametrize("points", [1, 2, 3])
@pytest.mark.parametrize("mixed", [False, True])
def test_brackets_hold_the_exact_expected_time(mixed: bool, points: int) -> None:
    """``brackets`` are guaranteed bounds: lower <= E[T] (adaptive, rtol 1e-12) <= upper for
    every structure, finite, and twice the points per panel (a finer nested grid) never
    loosen them."""
    from edgecode.planning.timing import _expected_time

    rng = np.random.default_rng(10 + points)
    spec = random_cluster(3, 3, rng)
    cluster = _rule.cluster_arrays(_bernoulli(spec) if mixed else spec)  # type: ignore[arg-type]
    found = _structures(cluster, rng, 20)
    args = (
        cluster,
        np.stack([f[0] for f in found]),
        np.stack([f[1] for f in found]),
        np.array([f[2] for f in found], dtype=np.int64),
        np.stack([f[3] for f in found]),
        60,
        64,
    )
    lower, upper = _batch.brackets(*args, points=points)
    exact = np.array(
        [
            _expected_time(_rule.model(cluster, wm, sw, se, ld, 60.0), 1e-12)
            for wm, sw, se, ld in found
        ]
    )
    below = (exact - lower) / exact  # >= 0
    above = (upper - exact) / exact  # >= 0
    assert np.all(np.isfinite(below)) and np.all(below >= -1e-12), below
    assert np.all(np.isfinite(above)) and np.all(above >= -1e-12), above
    finer_lower, finer_upper = _batch.brackets(*args, points=2 * points)
    assert np.all(finer_lower >= lower - 1e-12) and np.all(finer_upper <= upper + 1e-12)


def _one_host(spec: object, cores: float, cpu: float) -> object:
    """Every other worker of each edge on one machine of ``cores`` cores, the j-th of them
    with ``cpu (1 + j)`` CPU seconds per data set (the others on machines of their own)."""
    return replace(
        spec,
        edges=tuple(
            replace(
                e,
                workers=tuple(
                    replace(w, host="box", host_cpus=cores, cpu_seconds=cpu * (1 + j))
                    if j % 2 == 0
                    else w
                    for j, w in enumerate(e.workers)
                ),
            )
            for e in spec.edges  # type: ignore[attr-defined]
        ),
    )


@pytest.mark.parametrize("kind", ["plain", "bernoulli", "hosted"])
def test_pruned_best_equals_the_best_of_every_candidate(kind: str) -> None:
    """Evaluator.best (brackets set candidates aside) returns the same structure and value as
    integrating every candidate, on complete neighbourhoods of random structures, with and
    without a bound; also where the values are max(E[T], a shared host's floor) and the floor
    binds for some candidates."""
    from edgecode.planning import _search, hosts
    from edgecode.planning._evaluate import Evaluator, Structure

    rng = np.random.default_rng(0 if kind == "hosted" else 3)
    spec = random_cluster(3, 4, rng)
    if kind == "bernoulli":
        spec = _bernoulli(spec)  # type: ignore[assignment]
    if kind == "hosted":
        spec = _one_host(spec, 1.0, 0.1)  # type: ignore[assignment]
    cluster = _rule.cluster_arrays(spec)
    binding = 0
    checked = 0
    for wmask, s_w, s_e, _ in _structures(cluster, rng, 6):
        neighbours = _search._complete_neighbourhood(Structure(s_e, wmask, s_w), cluster)
        pruned, plain = Evaluator(cluster, 120), Evaluator(cluster, 120)
        plain.budget = 10**8  # a budget turns the brackets off
        every = [r for r in plain.evaluate(neighbours) if r is not None]
        best = min(every, key=lambda r: r.value)
        floors = hosts.floors(cluster.hosts, np.stack([r.l for r in every]), 120)
        binding += int(np.sum(floors >= np.array([r.value for r in every])) > 0)
        values = sorted(r.value for r in every)
        for bound in (np.inf, values[len(values) // 2], best.value):
            got = pruned.best(neighbours, bound=bound)
            if bound <= best.value:
                assert got is None or got.value >= bound * (1 - 1e-13)
                continue
            assert got is not None and got.structure.key() == best.structure.key()
            # a batch's padding depends on its members: the same value to the last bits
            assert abs(got.value / best.value - 1) <= 1e-13
            checked += 1
        assert pruned.evaluations < plain.evaluations, "the brackets set nothing aside"
    assert checked >= 6
    assert (binding > 0) == (kind == "hosted"), "the floor binds only on the shared host"


class _Forgetful(dict):  # type: ignore[type-arg]
    """A paths memo that remembers nothing."""

    def __setitem__(self, key: object, value: object) -> None:
        pass


class _Counting(dict):  # type: ignore[type-arg]
    """A paths memo that counts the lookups it answers."""

    hits = 0

    def get(self, key: object, default: object = None) -> object:
        found = super().get(key, default)
        self.hits += found is not None
        return found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_descents_that_join_an_earlier_path_end_where_it_ended(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every complete-neighbourhood descent of the search ends at the same structure (same
    value) with the paths memo as without it (walked to its end), at a few levels and K, and
    some descents do join an earlier path."""
    from edgecode.planning import _search
    from edgecode.planning._evaluate import Evaluator

    ends: list[tuple[bytes, float]] = []
    walk = _search._local_search

    def recorded(ev: Evaluator, *args: object, **kwargs: object) -> object:
        result = walk(ev, *args, **kwargs)  # type: ignore[arg-type]
        ends.append((result.structure.key(), result.value))
        return result

    monkeypatch.setattr(_search, "_local_search", recorded)
    rng = np.random.default_rng(seed)
    spec = random_cluster(3, 3, rng)
    cluster = _rule.cluster_arrays(_bernoulli(spec) if seed != 1 else spec)  # type: ignore[arg-type]
    joined = 0
    for K, level in ((18, 0.5), (90, 0.8), (240, 0.95)):
        memo, plain = Evaluator(cluster, K, level), Evaluator(cluster, K, level)
        memo.paths, plain.paths = _Counting(), _Forgetful()
        ends.clear()
        _search.search(memo)
        got = list(ends)
        ends.clear()
        _search.search(plain)
        assert [key for key, _ in got] == [key for key, _ in ends]
        values = np.array([v for _, v in got]) / np.array([v for _, v in ends]) - 1
        assert np.all(np.isfinite(values)) and np.all(np.abs(values) <= 1e-13)
        joined += memo.paths.hits  # type: ignore[attr-defined]
    assert joined >= 1


def test_rule_with_a_quantile_memo_equals_the_rule_without() -> None:
    """``_rule.apply(..., memo=)`` kept across batches (bimodal workers, random structures, K
    and levels per structure) gives exactly the counts, feasibility and Theta of the rule
    without it, and the memo holds every level's quantiles."""
    rng = np.random.default_rng(7)
    cluster = _rule.cluster_arrays(_bernoulli(random_cluster(3, 4, rng)))  # type: ignore[arg-type]
    memo: dict[float, np.ndarray] = {}
    for _ in range(4):
        found = _structures(cluster, rng, 40)
        wmask = np.stack([f[0] for f in found])
        s_w = np.stack([f[1] for f in found])
        s_e = np.array([f[2] for f in found], dtype=np.int64)
        K = rng.choice([12, 24, 60, 240], size=len(found))
        level = rng.choice([0.5, 0.8, 0.95], size=len(found))
        plain = _rule.apply(cluster, wmask, s_w, s_e, K, level)
        kept = _rule.apply(cluster, wmask, s_w, s_e, K, level, memo=memo)
        for a, b in zip(plain, kept, strict=True):
            assert np.array_equal(a, b)
    assert len(memo) >= 3 and all(q.shape == cluster.mask.shape for q in memo.values())
