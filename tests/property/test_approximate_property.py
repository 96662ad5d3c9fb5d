"""Least-squares decoding is exact on decodable sets and optimal on every other alive set.

Every alive set of fractional and cyclic repetition codes with n <= 10 and every s is enumerated:
the decoding vector is compared with the exact decoder (decodable sets) and with a direct
least-squares solve by a different algorithm (QR with pivoting, scipy's ``gelsy``) elsewhere.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecode.codes import cyclic_repetition, fractional_repetition
from edgecode.codes.approximate import LeastSquaresDecoder, used_partitions

#: Agreement with the exact decoder / the reference solve (entries of B are O(1)).
TOL = 1e-9


def _reference(rows: np.ndarray, target: np.ndarray) -> tuple[float, bool]:
    """Least-squares optimum of ||rows^T a - target||^2 / K by a direct solve with a different
    algorithm (QR with column pivoting: the residual is the part of ``target`` outside the span
    of the first ``rank`` pivoted columns); the set is decodable when that part vanishes."""
    k = target.size
    if rows.shape[0] == 0:
        return float(target @ target) / k, False
    q, r, _ = scipy.linalg.qr(rows.T, mode="economic", pivoting=True)
    diagonal = np.abs(np.diag(r))
    rank = int(np.sum(diagonal > 1e-10 * diagonal[0])) if diagonal[0] > 0 else 0
    basis = q[:, :rank]
    error = basis @ (basis.T @ target) - target
    outside = float(np.linalg.norm(error))
    return outside**2 / k, outside <= 1e-8 * float(np.linalg.norm(target))


def _check_every_set(code) -> None:
    n, s = code.n_workers, code.stragglers
    decoder = LeastSquaresDecoder(code.B)
    optimality, exactness, vs_decoder = [], [], []
    for size in range(n + 1):
        for alive in itertools.combinations(range(n), size):
            d = decoder.decode(alive)
            rows = code.B[list(alive)]
            best, decodable = _reference(rows, code.targets)
            outside = np.ones(n, dtype=bool)
            outside[list(alive)] = False
            assert np.all(d.weights[outside] == 0.0), (n, s, alive)
            assert d.exact == decodable, (n, s, alive, d.residual)
            # weights, partition weights and residual are consistent with each other
            consistency = np.abs(d.weights @ code.B - d.partition_weights).max()
            error = d.partition_weights - code.targets
            optimality.append(abs(d.residual - best))
            exactness.append(
                consistency + abs(float(error @ error) / code.n_partitions - d.residual)
            )
            if code.name == "fractional":
                # FRC: weight 1 on the partitions of every group with an alive worker, else 0
                groups = {i // (s + 1) for i in alive}
                expected = np.array([float(j // (s + 1) in groups) for j in range(n)])
                exactness.append(np.abs(d.partition_weights - expected).max())
                assert np.array_equal(used_partitions(d.partition_weights), expected == 1.0)
            if decodable:
                exactness.append(np.abs(d.partition_weights - code.targets).max())
                if size >= n - s:
                    ref = code.decode_vector(alive)
                    vs_decoder.append(np.abs(d.weights - ref).max())
            else:
                # not decodable: the optimum is strictly positive and no better than the reference
                assert d.residual > 0.0, (n, s, alive)
                optimality.append(max(0.0, best - d.residual))
    for name, errs in (
        ("optimality", optimality),
        ("exactness", exactness),
        ("decoder", vs_decoder),
    ):
        errs_a = np.asarray(errs, dtype=float)
        assert np.all(np.isfinite(errs_a)) and np.all(errs_a <= TOL), (name, n, s, errs_a.max())


@pytest.mark.parametrize("n", range(1, 11))
def test_cyclic_every_alive_set(n: int) -> None:
    for s in range(n):
        _check_every_set(cyclic_repetition(n, s))


@pytest.mark.parametrize("n", range(1, 11))
def test_fractional_every_alive_set(n: int) -> None:
    for s in range(n):
        if n % (s + 1) == 0:
            _check_every_set(fractional_repetition(n, s))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 40),
    k=st.integers(1, 40),
    density=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_codes_reach_the_least_squares_optimum(
    n: int, k: int, density: float, seed: int
) -> None:
    """Arbitrary B and alive set: the residual equals a direct solve's and the gradient of the
    objective, B_A (B_A^T a - 1), vanishes (first-order optimality)."""
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((n, k)) * (rng.random((n, k)) < density)
    alive = sorted(rng.choice(n, size=int(rng.integers(0, n + 1)), replace=False).tolist())
    d = LeastSquaresDecoder(B).decode(alive)
    best, decodable = _reference(B[alive], np.ones(k))
    rows = B[alive]
    gradient = rows @ (d.partition_weights - 1.0) if alive else np.zeros(0)
    scale = max(1.0, float(np.abs(B).max()) ** 2 * k)
    errs = np.array([abs(d.residual - best), float(np.abs(gradient).max(initial=0.0)) / scale])
    assert np.all(np.isfinite(d.weights))
    assert np.all(np.isfinite(errs)) and np.all(errs <= 1e-8), errs
    assert d.exact == decodable or abs(d.residual) < 1e-12


@settings(max_examples=15, deadline=None)
@given(n=st.integers(12, 40), s=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_large_cyclic_sampled_sets(n: int, s: int, seed: int) -> None:
    """Sampled alive sets of larger cyclic codes: exact at >= n - s alive (against the exact
    decoder), optimal below."""
    code = cyclic_repetition(n, s, draws=1)
    decoder = LeastSquaresDecoder(code.B)
    rng = np.random.default_rng(seed)
    errs = []
    for _ in range(10):
        size = int(rng.integers(0, n + 1))
        alive = sorted(rng.choice(n, size=size, replace=False).tolist())
        d = decoder.decode(alive)
        best, decodable = _reference(code.B[alive], code.targets)
        errs.append(abs(d.residual - best))
        if size >= n - s:
            assert d.exact
            errs.append(np.abs(d.weights - code.decode_vector(alive)).max())
        else:
            assert d.exact == decodable
    errs_a = np.asarray(errs)
    assert np.all(np.isfinite(errs_a)) and np.all(errs_a <= 1e-8), errs_a.max()
