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
