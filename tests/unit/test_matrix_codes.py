"""Unit tests of the sparsity-preserving matrix codes (edgecode.codes.matrix, papers.md §5)."""

from __future__ import annotations

import doctest
import itertools
import math
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

import edgecode.codes.matrix as matrix_module
from edgecode.bench.matrix_codes import bench_sparse_vs_dense
from edgecode.codes._linalg import condition, subsets
from edgecode.codes.matrix import (
    MatVecCode,
    cyclic_support,
    dense_mds_code,
    hall_resilient,
    join_columns,
    matmul,
    matvec,
    polynomial_code,
    product_counting_bound,
    sparse_mm_code,
    sparse_mv_code,
    split_columns,
    weight_lower_bound,
    worker_matvec,
)
from edgecode.errors import Infeasible, InvalidInput, NotDecodable

TOLERANCE = 1e-8


def random_sparse(rows: int, cols: int, density: float, seed: int) -> Any:
    return sp.random(rows, cols, density=density, format="csr", rng=np.random.default_rng(seed))


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def worker_results(code: MatVecCode, coded: list[Any], x: np.ndarray) -> dict[int, np.ndarray]:
    return {i: worker_matvec(coded[i], x) for i in range(code.n_workers)}


# ------------------------------------------------------------------------------------ bounds


def test_weight_lower_bound_matches_formula() -> None:
    for n in range(1, 41):
        for k in range(1, n + 1):
            assert weight_lower_bound(n, k) == math.ceil(k * (n - k + 1) / n)
    assert weight_lower_bound(20, 16) == 4
    assert weight_lower_bound(7, 7) == 1
    assert weight_lower_bound(7, 1) == 1


def test_product_counting_bound_matches_formula() -> None:
    for n in range(2, 13):
        for k_a, k_b in itertools.product(range(1, 5), repeat=2):
            if k_a * k_b <= n:
                total = k_a * k_b
                assert product_counting_bound(n, k_a, k_b) == math.ceil(total * (n - total + 1) / n)


def test_cyclic_support_is_the_specified_window() -> None:
    n, k = 11, 7
    omega = weight_lower_bound(n, k)
    support = cyclic_support(n, k, omega)
    for i, items in enumerate(support):
        assert items == tuple(sorted(((i * k) // n + u) % k for u in range(omega)))


def test_cyclic_support_is_hall_resilient_and_the_bound_is_tight() -> None:
    # The weight bound is met (Hall holds) and one less can never work: the counting argument
    # then leaves some block with at most s holders, which Hall's check must catch.
    for n in range(1, 41):
        for k in range(1, n + 1):
            omega = weight_lower_bound(n, k)
            assert hall_resilient(cyclic_support(n, k, omega), k), (n, k)
            if omega > 1:
                assert not hall_resilient(cyclic_support(n, k, omega - 1), k), (n, k)


def test_hall_resilient_rejects_a_fragile_support() -> None:
    # Every block has s + 1 = 2 holders, but blocks 0 and 1 share the same two workers, so
    # losing one of them leaves 2 blocks on 1 worker: counting alone would accept it.
    support = [(0, 1), (0, 1), (2,), (2,)]
    assert not hall_resilient(support, 3)
    assert hall_resilient([(0, 1), (1, 2), (2, 0), (0, 1)], 3)


# ----------------------------------------------------------------------- matrix-vector codes


def test_sparse_code_has_the_minimum_weight_and_cyclic_support() -> None:
    for n in range(1, 13):
        for k in range(1, n + 1):
            code = sparse_mv_code(n, k)
            assert code.weight == weight_lower_bound(n, k) == code.lower_bound
            assert code.support == cyclic_support(n, k, code.weight)
            assert code.support_resilient
            assert code.resilience == n - k
            off_support = np.ones((n, k), dtype=bool)
            for i, items in enumerate(code.support):
                off_support[i, list(items)] = False
            assert np.all(code.coefficients[off_support] == 0.0)
            assert np.all(code.coefficients[~off_support] != 0.0)
            # Each block reaches at least s + 1 workers (the counting side of the bound).
            assert np.all(np.count_nonzero(code.coefficients, axis=0) >= n - k + 1)


def test_every_subset_decodes_for_n_up_to_12() -> None:
    """Deterministic exhaustive loop: all n <= 12, all k, every k-subset, both codes."""
    subsets_checked = 0
    for n in range(1, 13):
        for k in range(1, n + 1):
            r = 3 * k + (k > 1)  # k does not divide r when k > 1: exercises the padding
            a = random_sparse(25, r, 0.2, seed=100 * n + k)
            x = np.random.default_rng(n * k).standard_normal((25, 2))
            want = a.T @ x
            blocks = split_columns(a, k)
            for code in (sparse_mv_code(n, k), dense_mds_code(n, k)):
                assert code.condition_scope == "exhaustive"
                results = worker_results(code, code.encode(blocks), x)
                for alive in itertools.combinations(range(n), k):
                    got = join_columns(code.decode({i: results[i] for i in alive}), r)
                    assert relative_error(got, want) <= TOLERANCE, (code.name, n, k, alive)
                    subsets_checked += 1
    assert subsets_checked == 2 * sum(2**n - 1 for n in range(1, 13))


@pytest.mark.parametrize(("n", "k"), [(20, 16), (24, 12), (28, 21), (32, 16)])
def test_sampled_subsets_decode_at_larger_n(n: int, k: int) -> None:
    a = random_sparse(60, 4 * k + 1, 0.05, seed=n)
    x = np.random.default_rng(k).standard_normal(60)
    want = a.T @ x
    blocks = split_columns(a, k)
    for code in (sparse_mv_code(n, k), dense_mds_code(n, k)):
        results = worker_results(code, code.encode(blocks), x)
        sample = list(subsets(n, k, rng=np.random.default_rng(7), limit=0, samples=2000))
        assert len(sample) == 2000
        for alive in sample:
            got = join_columns(code.decode({i: results[i] for i in alive}), a.shape[1])
            assert relative_error(got, want) <= TOLERANCE, (code.name, alive)


def test_sparse_coded_blocks_keep_sparsity() -> None:
    n, k = 20, 16
    a = random_sparse(2000, 2000, 0.01, seed=3)
    blocks = split_columns(a, k)
    sparse, dense = sparse_mv_code(n, k), dense_mds_code(n, k)
    sparse_coded, dense_coded = sparse.encode(blocks), dense.encode(blocks)
    assert all(isinstance(block, sp.csr_matrix) for block in sparse_coded + dense_coded)
    ratio = np.mean([b.nnz for b in sparse_coded]) / np.mean([b.nnz for b in dense_coded])
    # Expected (1 - (1 - d)^omega) / (1 - (1 - d)^k) = 0.265 for d = 0.01: at least omega / k
    # (supports of more blocks collide more) and within 10% of it.
    assert sparse.weight / k <= ratio <= 1.1 * sparse.weight / k
    for i, items in enumerate(sparse.support):
        assert sparse_coded[i].nnz <= sum(blocks[j].nnz for j in items)


def test_decode_with_more_than_k_results_uses_k_of_them() -> None:
    code = sparse_mv_code(9, 5)
    a = random_sparse(30, 20, 0.3, seed=1)
    x = np.arange(30.0)
    coded = code.encode(split_columns(a, 5))
    chosen = code.select_workers([0, 1, 2, 4, 6, 7, 8])
    assert len(chosen) == 5 and set(chosen) <= {0, 1, 2, 4, 6, 7, 8}
    assert np.isfinite(condition(code.generator[list(chosen)]))
    got = matvec(code, coded, x, alive=range(9), n_cols=20)
    assert relative_error(got, a.T @ x) <= TOLERANCE


def test_condition_number_matches_a_direct_scan() -> None:
    for code in (sparse_mv_code(8, 5), dense_mds_code(8, 5), polynomial_code(7, 2, 2)):
        direct = np.array(
            [
                condition(code.generator[list(alive)])
                for alive in itertools.combinations(range(code.n_workers), code.k)
            ]
        )
        assert np.all(np.isfinite(direct)), code.name
        assert code.condition_number() == pytest.approx(float(direct.max()), rel=1e-9)
        assert code.condition_subsets == math.comb(code.n_workers, code.k)


def test_condition_scope_says_sampled_when_too_many_subsets() -> None:
    code = sparse_mv_code(32, 16)
    assert code.condition_scope == "sampled"
    assert code.condition_subsets == 2000
    assert 1.0 <= code.condition_number() < math.inf


def test_codes_are_deterministic_in_the_seed() -> None:
    assert np.array_equal(sparse_mv_code(10, 6).coefficients, sparse_mv_code(10, 6).coefficients)
    assert not np.array_equal(
        sparse_mv_code(10, 6, seed=1).coefficients, sparse_mv_code(10, 6, seed=2).coefficients
    )
    first, second = sparse_mm_code(8, 2, 2, seed=5), sparse_mm_code(8, 2, 2, seed=5)
    assert np.array_equal(first.generator, second.generator)


def test_more_draws_never_worsen_the_worst_case() -> None:
    assert (
        sparse_mv_code(10, 6, draws=8).condition_number()
        <= sparse_mv_code(10, 6, draws=1).condition_number()
    )


def test_split_and_join_round_trip_with_padding() -> None:
    a = random_sparse(7, 10, 0.5, seed=2)
    blocks = split_columns(a, 4)
    assert [b.shape for b in blocks] == [(7, 3)] * 4
    assert sp.hstack(blocks).toarray()[:, :10] == pytest.approx(a.toarray())
    assert sp.hstack(blocks).toarray()[:, 10:] == pytest.approx(np.zeros((7, 2)))
    x = np.ones(7)
    assert join_columns([b.T @ x for b in blocks], 10) == pytest.approx(a.T @ x)


# ------------------------------------------------------------------------ matrix-matrix codes


def check_every_product_subset(code: Any, seed: int) -> int:
    r_a, r_b = 2 * code.k_a + 1, 2 * code.k_b + 1
    a = random_sparse(20, r_a, 0.3, seed=seed)
    b = random_sparse(20, r_b, 0.3, seed=seed + 1)
    want = (a.T @ b).toarray()
    coded_a = code.encode(split_columns(a, code.k_a))
    coded_b = code.encode_b(split_columns(b, code.k_b))
    checked = 0
    for alive in itertools.combinations(range(code.n_workers), code.k):
        got = matmul(code, coded_a, coded_b, alive, shape=(r_a, r_b))
        assert relative_error(got, want) <= TOLERANCE, (code.name, alive)
        checked += 1
    return checked


PRODUCT_CASES = [
    (n, k_a, k_b)
    for n in range(2, 9)
    for k_a in range(1, 4)
    for k_b in range(1, 4)
    if k_a * k_b <= n
]
PRODUCT_SUBSETS = sum(math.comb(n, k_a * k_b) for n, k_a, k_b in PRODUCT_CASES)


def test_polynomial_code_decodes_every_subset() -> None:
    checked = 0
    for n, k_a, k_b in PRODUCT_CASES:
        code = polynomial_code(n, k_a, k_b)
        assert code.weight == (k_a, k_b) and code.k == k_a * k_b
        assert code.condition_scope == "exhaustive"
        checked += check_every_product_subset(code, seed=n)
    assert checked == PRODUCT_SUBSETS


def test_polynomial_code_is_a_matvec_code_when_k_b_is_one() -> None:
    code = polynomial_code(7, 4)
    a = random_sparse(30, 17, 0.2, seed=4)
    x = np.linspace(-1.0, 1.0, 30)
    coded = code.encode(split_columns(a, 4))
    for alive in itertools.combinations(range(7), 4):
        assert relative_error(matvec(code, coded, x, alive, n_cols=17), a.T @ x) <= TOLERANCE


def test_sparse_mm_code_decodes_every_subset_and_respects_the_bound() -> None:
    checked = 0
    for n, k_a, k_b in PRODUCT_CASES:
        code = sparse_mm_code(n, k_a, k_b)
        omega_a, omega_b = code.weight
        assert code.weight_product == omega_a * omega_b >= code.counting_bound
        assert code.counting_bound == product_counting_bound(n, k_a, k_b)
        assert code.verification == "exhaustive"
        assert code.condition_number() <= matrix_module.DEFAULT_MAX_CONDITION
        assert all(len(items) == omega_a for items in code.support_a)
        assert all(len(items) == omega_b for items in code.support_b)
        checked += check_every_product_subset(code, seed=10 * n + k_a)
    assert checked == PRODUCT_SUBSETS


def test_sparse_mm_code_reduces_to_the_matvec_bound_when_k_b_is_one() -> None:
    for n in range(2, 13):
        for k in range(1, n + 1):
            assert sparse_mm_code(n, k, 1).weight == (weight_lower_bound(n, k), 1)


def rectangle(a: int, b: int, window: tuple[int, int], shape: tuple[int, int]) -> tuple[int, ...]:
    return tuple(
        sorted(
            ((a + u) % shape[0]) * shape[1] + (b + v) % shape[1]
            for u in range(window[0])
            for v in range(window[1])
        )
    )


def test_sparse_mm_weight_is_optimal_among_cyclic_rectangles() -> None:
    """Brute force: no smaller omega_a * omega_b admits ANY cyclic-window placement passing
    Hall's condition (so no coefficients could decode every subset) for n <= 8."""
    for n, k_a, k_b in PRODUCT_CASES:
        code = sparse_mm_code(n, k_a, k_b)
        for window in itertools.product(range(1, k_a + 1), range(1, k_b + 1)):
            if window[0] * window[1] >= code.weight_product:
                continue
            shapes = sorted(
                {rectangle(a, b, window, (k_a, k_b)) for a in range(k_a) for b in range(k_b)}
            )
            # All placements are translates of one another, so one worker may sit at shapes[0].
            for rest in itertools.combinations_with_replacement(shapes, n - 1):
                assert not hall_resilient([shapes[0], *rest], k_a * k_b), (n, k_a, k_b, window)


def test_sparse_mm_code_beats_dense_when_the_bound_allows() -> None:
    code = sparse_mm_code(12, 3, 4)
    assert code.weight == (1, 1) and code.counting_bound == 1
    code = sparse_mm_code(11, 3, 3)
    assert code.weight_product < 9
    assert any("rejected" in line for line in code.search_log)
    assert "accepted" in code.search_log[-1]


# ------------------------------------------------------------------------------ error cases


def test_parameter_errors_name_the_argument() -> None:
    with pytest.raises(Infeasible, match="k must be at most n"):
        sparse_mv_code(4, 5)
    with pytest.raises(ValueError, match="n must be >= 1"):
        dense_mds_code(0, 1)
    with pytest.raises(ValueError, match="k must be an integer"):
        weight_lower_bound(4, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="draws must be >= 1"):
        sparse_mv_code(4, 2, draws=0)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        sparse_mv_code(4, 2, seed=-1)
    with pytest.raises(Infeasible, match="k_a \\* k_b must be at most n"):
        sparse_mm_code(5, 2, 3)
    with pytest.raises(ValueError, match="points must have shape"):
        polynomial_code(4, 2, points=[0.1, 0.2])
    with pytest.raises(ValueError, match="pairwise distinct"):
        polynomial_code(3, 2, points=[0.1, 0.2, 0.1])
    with pytest.raises(ValueError, match="max_condition"):
        sparse_mm_code(4, 2, 1, max_condition=0.5)


def test_encode_rejects_wrong_blocks() -> None:
    code = sparse_mv_code(5, 3)
    good = split_columns(random_sparse(10, 9, 0.3, seed=0), 3)
    with pytest.raises(InvalidInput, match="must hold 3 blocks, got 2"):
        code.encode(good[:2])
    with pytest.raises(InvalidInput, match=r"blocks\[2\] must have the shape of blocks\[0\]"):
        code.encode([good[0], good[1], sp.csr_matrix((10, 4))])
    nan_block = good[2].toarray()
    nan_block[0, 0] = np.nan
    with pytest.raises(InvalidInput, match=r"blocks\[2\] holds non-finite values"):
        code.encode([good[0], good[1], nan_block])
    with pytest.raises(InvalidInput, match="2-D"):
        code.encode([np.ones(3)] * 3)


def test_decode_rejects_bad_results() -> None:
    code = dense_mds_code(6, 3)
    results = {i: np.full(4, float(i)) for i in range(6)}
    with pytest.raises(NotDecodable, match="need results from k=3 workers, got 2"):
        code.decode({0: results[0], 5: results[5]})
    with pytest.raises(InvalidInput, match=r"results\[1\] holds non-finite values"):
        code.decode({0: results[0], 1: np.array([1.0, np.nan, 0.0, 0.0]), 2: results[2]})
    with pytest.raises(InvalidInput, match=r"results\[2\] must be a 1-D or 2-D array"):
        code.decode({0: results[0], 1: results[1], 2: np.ones(5)})
    with pytest.raises(ValueError, match=r"results must hold indices in \[0, 6\)"):
        code.decode({0: results[0], 1: results[1], 9: results[2]})
    with pytest.raises(ValueError, match="results must map"):
        code.decode([results[0], results[1], results[2]])  # type: ignore[arg-type]


def test_end_to_end_helpers_reject_bad_input() -> None:
    code = sparse_mv_code(5, 3)
    coded = code.encode(split_columns(random_sparse(10, 9, 0.3, seed=0), 3))
    with pytest.raises(InvalidInput, match="x must have 10 rows"):
        matvec(code, coded, np.ones(9), alive=range(3))
    with pytest.raises(InvalidInput, match="x holds non-finite"):
        matvec(code, coded, np.full(10, np.inf), alive=range(3))
    with pytest.raises(InvalidInput, match="one block per worker"):
        matvec(code, coded[:4], np.ones(10), alive=range(3))
    with pytest.raises(NotDecodable):
        matvec(code, coded, np.ones(10), alive=[0, 4])
    with pytest.raises(ValueError, match="k_b == 1"):
        matvec(polynomial_code(5, 2, 2), coded, np.ones(10), alive=range(4))


# ----------------------------------------------------------------------- docs and benchmark


def test_module_docstring_examples_run() -> None:
    failures, attempted = doctest.testmod(matrix_module, raise_on_error=False)
    assert attempted > 10 and failures == 0


def test_bench_smoke() -> None:
    report = bench_sparse_vs_dense(size=800, density=0.01, n=6, k=4, repeats=1, seed=1)
    assert report["sparse_weight"] == weight_lower_bound(6, 4) == 2
    assert report["dense_weight"] == 4
    assert report["weight_ratio"] <= report["nnz_ratio"] <= 1.1 * report["weight_ratio"]
    assert report["sparse_decode_rel_error"] <= TOLERANCE
    assert report["dense_decode_rel_error"] <= TOLERANCE
    assert report["speedup"] > 0.0


def test_encoding_chosen_workers_matches_encoding_all() -> None:
    """A lost code index is re-encoded alone: the same block as in the full encoding."""
    a = sp.random(30, 24, density=0.2, format="csr", random_state=3)
    b = sp.random(30, 10, density=0.2, format="csr", random_state=4)
    code = sparse_mm_code(8, 2, 2)
    a_blocks, b_blocks = split_columns(a, 2), split_columns(b, 2)
    every_a, every_b = code.encode(a_blocks), code.encode_b(b_blocks)
    for i in (5, 0, 7):
        (one_a,) = code.encode(a_blocks, [i])
        (one_b,) = code.encode_b(b_blocks, [i])
        assert (one_a != every_a[i]).nnz == 0 and (one_b != every_b[i]).nnz == 0
    mv = sparse_mv_code(6, 4)
    blocks = split_columns(a, 4)
    every = mv.encode(blocks)
    chosen = mv.encode(blocks, [3, 1])
    assert (chosen[0] != every[3]).nnz == 0 and (chosen[1] != every[1]).nnz == 0
    with pytest.raises(ValueError, match="workers"):
        mv.encode(blocks, [6])
