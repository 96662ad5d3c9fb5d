"""More contracts of the matrix codes (edgecode.codes.matrix), each found by a mutant that
survived test_matrix_codes.py and test_matrix_contracts.py in the mutation run of
docs/notes/mut4.md: float64 blocks without padding, the refinement step of decoding, the
default seed and the seeded subset sample of the matrix-matrix codes. Small codes only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from edgecode.codes._linalg import subsets
from edgecode.codes.matrix import (
    MatVecCode,
    _greedy_starts,
    _unit_rows,
    _window,
    _worst_condition,
    cyclic_support,
    dense_mds_code,
    sparse_mm_code,
    sparse_mv_code,
    split_columns,
)

TOLERANCE = 1e-10


def assert_close(got: np.ndarray, want: np.ndarray, tolerance: float = TOLERANCE) -> None:
    errors = np.abs(got - want) / (1.0 + np.abs(want))
    assert np.all(np.isfinite(errors)) and np.all(errors <= tolerance)


# ------------------------------------------------------------------------------- splitting


@pytest.mark.parametrize("sparse", [False, True])
def test_integer_matrices_split_evenly_into_float64_csr_blocks(sparse: bool) -> None:
    """No padding column to upcast them: the blocks must be float64 by themselves."""
    dense = np.array([[1, 0, 2, 7], [0, 3, 0, -5]], dtype=np.int64)
    matrix: Any = sp.csr_matrix(dense) if sparse else dense
    blocks = split_columns(matrix, 2)
    assert [type(b) for b in blocks] == [sp.csr_matrix, sp.csr_matrix]
    assert [b.dtype for b in blocks] == [np.float64, np.float64]
    assert blocks[0].toarray().tolist() == [[1.0, 0.0], [0.0, 3.0]]
    assert blocks[1].toarray().tolist() == [[2.0, 7.0], [0.0, -5.0]]


# -------------------------------------------------------------------------------- decoding


def test_decoding_refines_the_solution_of_a_sloppy_solver(monkeypatch: pytest.MonkeyPatch) -> None:
    """The refinement step is there for a LAPACK that solves less accurately than backward
    stably: with every solve off by a relative 1e-6, one step brings the blocks back to
    ~1e-12 (x (1 + d) - d x (1 + d) = x (1 - d^2))."""
    generator = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    code = MatVecCode(
        name="hand",
        n_workers=4,
        k=3,
        generator=generator,
        worst_condition=float(np.linalg.cond(generator[:3])),
        condition_scope="exhaustive",
        condition_subsets=4,
        weight=3,
        lower_bound=1,
        support=((0, 1), (1, 2), (0, 2), (0, 1, 2)),
        support_resilient=True,
    )
    blocks = np.array([[1.0, -2.0], [0.5, 4.0], [3.0, 0.25]])
    results = {i: generator[i] @ blocks for i in (0, 1, 2)}
    exact = np.linalg.solve
    monkeypatch.setattr(np.linalg, "solve", lambda a, b: exact(a, b) * (1.0 + 1e-6))
    plain = np.linalg.solve(generator[:3], np.stack([results[i] for i in (0, 1, 2)]))
    assert not np.allclose(plain, blocks, rtol=1e-8, atol=0.0)  # the solver is sloppy indeed
    decoded = code.decode(results)
    assert all(block.dtype == np.float64 for block in decoded)
    assert_close(np.stack(decoded), blocks)


# ------------------------------------------------------------------- matrix-vector codes


def streams(seed: int) -> list[np.random.Generator]:
    """The seed's three documented streams: coefficient draws, subset sample, placements."""
    return [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(3)]


def test_the_sparse_support_is_recorded_as_resilient() -> None:
    for n, k in [(6, 4), (7, 3), (5, 5)]:
        code = sparse_mv_code(n, k)
        assert code.support_resilient is True and code.support == cyclic_support(n, k, code.weight)


def test_with_every_subset_enumerated_the_draw_is_descended() -> None:
    """C(8, 4) = 70 subsets: the one Gaussian draw is improved by the descent, so the code's
    worst condition number is below that of the same draw taken plainly."""
    code = sparse_mv_code(8, 4)
    mask = np.zeros((8, 4))
    for i, items in enumerate(code.support):
        mask[i, list(items)] = 1.0
    plain = _unit_rows(streams(0)[0].standard_normal((8, 4)) * mask)
    every = np.array(list(subsets(8, 4)), dtype=np.intp)
    assert code.condition_scope == "exhaustive" and code.condition_subsets == 70
    assert code.worst_condition == _worst_condition(code.generator, every)
    assert code.worst_condition < 0.9 * _worst_condition(plain, every)
    assert np.all((code.generator != 0.0) == (mask != 0.0))  # the descent keeps the support


@pytest.mark.parametrize("build", [sparse_mv_code, dense_mds_code])
def test_on_a_sample_the_best_of_eight_plain_draws_is_kept(build: Any) -> None:
    """C(24, 12) subsets: a sample of 2000 from the seed's subset stream, no descent, and the
    best of DEFAULT_DRAWS = 8 plain draws from its coefficient stream."""
    code = build(24, 12, seed=3)
    coefficients, subset_stream, _ = streams(3)
    sample = np.array(list(subsets(24, 12, rng=subset_stream)), dtype=np.intp)
    mask = np.zeros((24, 12))
    for i, items in enumerate(code.support):
        mask[i, list(items)] = 1.0
    draws = [_unit_rows(coefficients.standard_normal((24, 12)) * mask) for _ in range(8)]
    worst = [_worst_condition(draw, sample) for draw in draws]
    best = int(np.argmin(worst))
    assert (code.condition_scope, code.condition_subsets) == ("sampled", 2000)
    assert code.worst_condition == worst[best]
    assert np.array_equal(code.generator, draws[best])


# ------------------------------------------------------------------- matrix-matrix codes


def test_sparse_mm_code_defaults_to_seed_zero() -> None:
    default = sparse_mm_code(8, 2, 2)
    assert np.array_equal(default.generator, sparse_mm_code(8, 2, 2, seed=0).generator)
    assert not np.array_equal(default.generator, sparse_mm_code(8, 2, 2, seed=1).generator)


@pytest.mark.parametrize("seed", [0, 5])
def test_the_sampled_scan_of_a_product_code_can_be_redone_from_its_seed(seed: int) -> None:
    """C(20, 6) = 38760 subsets: a sample of 2000, drawn from the seed's second stream
    (coefficients, subsets, placements), so the reported worst condition can be checked."""
    code = sparse_mm_code(20, 3, 2, seed=seed)
    assert (code.verification, code.condition_subsets) == ("sampled", 2000)
    stream = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[1])
    sample = np.array(list(subsets(20, 6, rng=stream)), dtype=np.intp)
    assert sample.shape == (2000, 6)
    assert _worst_condition(code.generator, sample) == code.worst_condition


@pytest.mark.parametrize(("k_a", "k_b"), [(3, 4), (4, 3)])
def test_the_first_placement_aims_at_s_plus_one_holders_per_cell(k_a: int, k_b: int) -> None:
    """n = 20, K = 12, s = 8: the (2, 3) windows of the accepted code are the deterministic
    greedy placement with target s + 1 = 9 (here a target of 7, 10 or 33 places differently),
    and every product cell has at least s + 1 holders."""
    code = sparse_mm_code(20, k_a, k_b)
    assert code.weight == ((2, 3) if k_a == 3 else (3, 2)) and len(code.search_log) <= 2
    starts = _greedy_starts(20, (k_a, k_b), code.weight, 9, None)
    assert code.support_a == tuple(_window(a, code.weight[0], k_a) for a, _ in starts)
    assert code.support_b == tuple(_window(b, code.weight[1], k_b) for _, b in starts)
    holders = np.zeros((k_a, k_b), dtype=np.int64)
    for rows, cols in zip(code.support_a, code.support_b, strict=True):
        holders[np.ix_(rows, cols)] += 1
    assert holders.min() >= 9


def test_a_seed_fixes_the_code_even_when_a_random_placement_is_accepted() -> None:
    """n = 14, K = 12: the deterministic first placement of the (2, 2) windows fails, a
    seeded random one is accepted; the same seed must give the same code again."""
    code = sparse_mm_code(14, 3, 4, seed=2)
    first = _greedy_starts(14, (3, 4), (2, 2), 3, None)
    assert code.weight == (2, 2)
    assert code.support_a != tuple(_window(a, 2, 3) for a, _ in first)
    again = sparse_mm_code(14, 3, 4, seed=2)
    assert (again.support_a, again.support_b) == (code.support_a, code.support_b)
    assert np.array_equal(again.generator, code.generator)
    assert again.search_log == code.search_log
