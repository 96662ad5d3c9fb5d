"""Contracts of the matrix codes (edgecode.codes.matrix) that test_matrix_codes.py leaves open,
each found by a mutant surviving it (docs/notes/mutation.md lists which): argument names in
every error, the unpadded and padded end-to-end results, dtypes of what workers compute.
Small codes only (n <= 8): the whole file runs in a few seconds.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from edgecode.codes.matrix import (
    DEFAULT_DRAWS,
    MATVEC_DRAWS,
    MatVecCode,
    _greedy_starts,
    _unit_rows,
    _window,
    _worst_condition,
    chebyshev_points,
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
    worker_product,
)
from edgecode.errors import Infeasible, InvalidInput, NotDecodable

TOLERANCE = 1e-8


def random_sparse(rows: int, cols: int, density: float, seed: int) -> Any:
    return sp.random(rows, cols, density=density, format="csr", rng=np.random.default_rng(seed))


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    errors = np.abs(got - want) / (1.0 + np.abs(want))
    assert np.all(np.isfinite(errors)) and np.all(errors <= TOLERANCE)


# ------------------------------------------------------------------------- what workers compute


def test_worker_product_is_float64_and_dense_for_sparse_and_dense_operands() -> None:
    a = sp.csr_matrix(np.array([[1, 0], [2, 3]], dtype=np.int64))
    b = sp.csr_matrix(np.array([[4, 5, 0], [0, 1, 6]], dtype=np.int64))
    want = a.toarray().T @ b.toarray()
    sparse = worker_product(a, b)  # integer operands, sparse product
    assert isinstance(sparse, np.ndarray) and sparse.dtype == np.float64
    assert np.array_equal(sparse, want)
    dense = worker_product(a, b.toarray())  # a dense operand gives a dense product
    assert isinstance(dense, np.ndarray) and dense.dtype == np.float64
    assert np.array_equal(dense, want)


# ---------------------------------------------------------------------------------- end to end


def coded_product(n: int = 5) -> tuple[Any, list[Any], list[Any], Any, Any]:
    a = random_sparse(9, 7, 0.5, seed=1)  # 7 columns in 2 blocks of 4: one padding column
    b = random_sparse(9, 5, 0.5, seed=2)  # 5 columns in 2 blocks of 3: one padding column
    code = polynomial_code(n, 2, 2)
    return code, code.encode(split_columns(a, 2)), code.encode_b(split_columns(b, 2)), a, b


def test_matmul_without_a_shape_keeps_the_padding() -> None:
    code, coded_a, coded_b, a, b = coded_product()
    grid = matmul(code, coded_a, coded_b, alive=[0, 1, 3, 4])
    assert grid.shape == (8, 6) and grid.dtype == np.float64
    padded = np.zeros((8, 6))
    padded[:7, :5] = (a.T @ b).toarray()
    assert_close(grid, padded)
    exact = matmul(code, coded_a, coded_b, alive=[0, 1, 3, 4], shape=(7, 5))
    assert exact.shape == (7, 5) and exact.dtype == np.float64
    assert_close(exact, (a.T @ b).toarray())


def test_matmul_errors_name_the_argument() -> None:
    code, coded_a, coded_b, _, _ = coded_product()
    with pytest.raises(
        InvalidInput, match=r"^coded_a must hold one block per worker \(5\), got 4$"
    ):
        matmul(code, coded_a[:4], coded_b, alive=range(4))
    with pytest.raises(
        InvalidInput, match=r"^coded_b must hold one block per worker \(5\), got 6$"
    ):
        matmul(code, coded_a, coded_b + coded_b[:1], alive=range(4))
    with pytest.raises(ValueError, match=r"^shape\[0\] must be in \[1, 8\], got 9$"):
        matmul(code, coded_a, coded_b, alive=range(4), shape=(9, 5))
    with pytest.raises(ValueError, match=r"^shape\[0\] must be in \[1, 8\], got 0$"):
        matmul(code, coded_a, coded_b, alive=range(4), shape=(0, 5))
    with pytest.raises(ValueError, match=r"^shape\[1\] must be in \[1, 6\], got 7$"):
        matmul(code, coded_a, coded_b, alive=range(4), shape=(7, 7))
    with pytest.raises(ValueError, match=r"^shape\[1\] must be in \[1, 6\], got 0$"):
        matmul(code, coded_a, coded_b, alive=range(4), shape=(7, 0))
    exact = matmul(code, coded_a, coded_b, alive=range(4), shape=(8, 6))  # the bounds themselves
    assert exact.shape == (8, 6)
    single = matmul(code, coded_a, coded_b, alive=range(4), shape=(1, 1))
    assert single.shape == (1, 1)


def test_product_code_encoding_errors_name_the_blocks() -> None:
    code, _, _, a, b = coded_product()
    a_blocks, b_blocks = split_columns(a, 2), split_columns(b, 2)
    with pytest.raises(InvalidInput, match=r"^blocks must hold 2 blocks, got 1$"):
        code.encode(a_blocks[:1])
    with pytest.raises(InvalidInput, match=r"^blocks must hold 2 blocks, got 3$"):
        code.encode_b(b_blocks + b_blocks[:1])
    with pytest.raises(InvalidInput, match=r"^blocks\[1\] must have the shape of blocks\[0\]"):
        code.encode_b([b_blocks[0], a_blocks[1]])


def test_matvec_errors_name_the_argument() -> None:
    code = sparse_mv_code(5, 3)
    coded = code.encode(split_columns(random_sparse(10, 9, 0.3, seed=0), 3))
    with pytest.raises(
        InvalidInput, match=r"^coded_blocks must hold one block per worker \(5\), got 4$"
    ):
        matvec(code, coded[:4], np.ones(10), alive=range(3))
    with pytest.raises(InvalidInput, match=r"^x holds non-finite values$"):
        matvec(code, coded, np.full(10, np.nan), alive=range(3))
    with pytest.raises(
        InvalidInput, match=r"^x must have 10 rows \(1-D or 2-D\), got shape \(10, 1, 1\)$"
    ):
        matvec(code, coded, np.ones((10, 1, 1)), alive=range(3))


def test_matvec_takes_several_vectors_exact_fractions_and_a_single_worker() -> None:
    a = random_sparse(10, 9, 0.4, seed=3)
    code = sparse_mv_code(5, 3)
    coded = code.encode(split_columns(a, 3))
    xs = np.arange(20.0).reshape(10, 2)  # t x p: p vectors at once
    assert_close(matvec(code, coded, xs, alive=[0, 2, 4], n_cols=9), a.T @ xs)
    fractions = [Fraction(j, 3) for j in range(10)]
    got = matvec(code, coded, fractions, alive=[1, 2, 3], n_cols=9)
    assert got.dtype == np.float64
    assert_close(got, a.T @ (np.arange(10) / 3))
    one = sparse_mv_code(1, 1)  # n = 1: the only worker holds A itself
    (block,) = one.encode(split_columns(a, 1))
    assert_close(matvec(one, [block], np.ones(10), alive=[0]), a.T @ np.ones(10))


def test_chebyshev_points_name_their_argument() -> None:
    with pytest.raises(ValueError, match=r"^n must be >= 1, got 0$"):
        chebyshev_points(0)


def test_a_single_chebyshev_point_is_the_middle() -> None:
    (point,) = chebyshev_points(1)
    assert abs(point) <= 1e-15


# ------------------------------------------------------------------ every refusal, exactly


def one_row() -> np.ndarray:
    return np.ones((4, 6))


REFUSALS: list[tuple[str, Any, type[Exception], str]] = [
    ("n a bool", lambda: weight_lower_bound(True, 1), ValueError, "n must be an integer, got True"),
    ("n 0", lambda: weight_lower_bound(0, 1), ValueError, "n must be >= 1, got 0"),
    ("k 0", lambda: weight_lower_bound(3, 0), ValueError, "k must be >= 1, got 0"),
    (
        "k > n",
        lambda: weight_lower_bound(3, 4),
        Infeasible,
        "k must be at most n (any k of n workers decode), got k=4 > n=3",
    ),
    ("k_a 0", lambda: product_counting_bound(4, 0, 1), ValueError, "k_a must be >= 1, got 0"),
    ("k_b 0", lambda: product_counting_bound(4, 1, 0), ValueError, "k_b must be >= 1, got 0"),
    (
        "K > n",
        lambda: product_counting_bound(4, 3, 2),
        Infeasible,
        "k_a * k_b must be at most n (any k_a * k_b of n workers decode), got k_a * k_b=6 > n=4",
    ),
    ("weight 0", lambda: cyclic_support(5, 3, 0), ValueError, "weight must be in [1, 3], got 0"),
    ("weight > k", lambda: cyclic_support(5, 3, 4), ValueError, "weight must be in [1, 3], got 4"),
    ("n_items 0", lambda: hall_resilient([(0,)], 0), ValueError, "n_items must be >= 1, got 0"),
    (
        "few holders",
        lambda: hall_resilient([(0,)], 2),
        ValueError,
        "support must list at least n_items=2 holders, got 1",
    ),
    (
        "negative item",
        lambda: hall_resilient([(0,), (-1,)], 2),
        ValueError,
        "support items must lie in [0, 2), got [-1]",
    ),
    (
        "item too large",
        lambda: hall_resilient([(0,), (2, 1)], 2),
        ValueError,
        "support items must lie in [0, 2), got [1, 2]",
    ),
    (
        "1-D matrix",
        lambda: split_columns(np.ones(3), 1),
        InvalidInput,
        "matrix must be a 2-D matrix, got shape (3,)",
    ),
    (
        "1-D sparse matrix",
        lambda: split_columns(sp.coo_array(np.ones(3)), 1),
        InvalidInput,
        "matrix must be 2-D, got ndim=1",
    ),
    (
        "NaN matrix",
        lambda: split_columns(np.array([[np.nan]]), 1),
        InvalidInput,
        "matrix holds non-finite values",
    ),
    (
        "inf sparse matrix",
        lambda: split_columns(sp.csr_matrix(np.array([[np.inf]])), 1),
        InvalidInput,
        "matrix holds non-finite values",
    ),
    ("split k 0", lambda: split_columns(one_row(), 0), ValueError, "k must be >= 1, got 0"),
    (
        "no columns",
        lambda: split_columns(np.ones((2, 0)), 1),
        InvalidInput,
        "matrix must have at least one row and column, got shape (2, 0)",
    ),
    (
        "no rows",
        lambda: split_columns(np.ones((0, 2)), 1),
        InvalidInput,
        "matrix must have at least one row and column, got shape (0, 2)",
    ),
    (
        "no blocks",
        lambda: join_columns([]),
        ValueError,
        "block_results must hold at least one block, got 0",
    ),
    (
        "n_cols 0",
        lambda: join_columns([np.ones(2)], 0),
        ValueError,
        "n_cols must be in [1, 2], got 0",
    ),
    (
        "n_cols 3",
        lambda: join_columns([np.ones(2)], 3),
        ValueError,
        "n_cols must be in [1, 2], got 3",
    ),
    (
        "blocks a string",
        lambda: sparse_mv_code(5, 3).encode("abc"),
        InvalidInput,
        "blocks must be a sequence of 3 matrices, got <class 'str'>",
    ),
    (
        "blocks an iterator",
        lambda: sparse_mv_code(5, 3).encode(iter(split_columns(one_row(), 3))),
        InvalidInput,
        "blocks must be a sequence of 3 matrices, got <class 'list_iterator'>",
    ),
    (
        "worker too large",
        lambda: sparse_mv_code(5, 3).encode(split_columns(one_row(), 3), [5]),
        ValueError,
        "workers[] must be in [0, 4], got 5",
    ),
    (
        "worker negative",
        lambda: sparse_mv_code(5, 3).encode(split_columns(one_row(), 3), [0, -1]),
        ValueError,
        "workers[] must be in [0, 4], got -1",
    ),
    ("draws 0", lambda: sparse_mm_code(4, 2, 1, draws=0), ValueError, "draws must be >= 1, got 0"),
    (
        "attempts 0",
        lambda: sparse_mm_code(4, 2, 1, attempts=0),
        ValueError,
        "attempts must be >= 1, got 0",
    ),
    (
        "max_condition < 1",
        lambda: sparse_mm_code(4, 2, 1, max_condition=0.5),
        ValueError,
        "max_condition must be a number >= 1, got 0.5",
    ),
    (
        "max_condition a string",
        lambda: sparse_mm_code(4, 2, 1, max_condition="2"),
        ValueError,
        "max_condition must be a number >= 1, got '2'",
    ),
    (
        "points misshapen",
        lambda: polynomial_code(3, 2, points=[0.0, 1.0]),
        ValueError,
        "points must have shape (3,), got (2,)",
    ),
    (
        "points repeated",
        lambda: polynomial_code(3, 2, points=[0.0, 1.0, 0.0]),
        ValueError,
        "points must be finite and pairwise distinct",
    ),
    (
        "points infinite",
        lambda: polynomial_code(3, 2, points=[0.0, 1.0, np.inf]),
        ValueError,
        "points must be finite and pairwise distinct",
    ),
    ("poly k_a 0", lambda: polynomial_code(3, 0), ValueError, "k_a must be >= 1, got 0"),
    ("poly k_b 0", lambda: polynomial_code(3, 1, 0), ValueError, "k_b must be >= 1, got 0"),
    (
        "poly K > n",
        lambda: polynomial_code(4, 3, 2),
        Infeasible,
        "k_a * k_b must be at most n (any k_a * k_b of n workers decode), got k_a * k_b=6 > n=4",
    ),
    (
        "mm K > n",
        lambda: sparse_mm_code(5, 2, 3),
        Infeasible,
        "k_a * k_b must be at most n (any k_a * k_b of n workers decode), got k_a * k_b=6 > n=5",
    ),
    ("mm k_a 0", lambda: sparse_mm_code(3, 0, 1), ValueError, "k_a must be >= 1, got 0"),
    ("mm k_b 0", lambda: sparse_mm_code(3, 1, 0), ValueError, "k_b must be >= 1, got 0"),
    (
        "seed a float",
        lambda: dense_mds_code(3, 2, seed=1.0),
        ValueError,
        "seed must be an integer, got 1.0",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_every_refusal_names_the_argument_and_the_bound(
    call: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        call()
    assert type(raised.value) is error and str(raised.value) == message


def test_bounds_are_inclusive_and_numpy_integers_count() -> None:
    assert weight_lower_bound(np.int64(6), np.int32(4)) == 2
    assert cyclic_support(3, 3, 3) == ((0, 1, 2),) * 3
    assert cyclic_support(3, 3, 1) == ((0,), (1,), (2,))
    assert hall_resilient([(0, 1), (1,)], 2) is True  # items up to n_items - 1
    assert hall_resilient([(0,), (1,)], 2) is True  # exactly n_items holders
    assert join_columns([np.ones(2), np.zeros(2)], 4).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert join_columns([np.ones(2)], 1).tolist() == [1.0]
    assert [b.shape for b in split_columns(np.ones((1, 1)), 1)] == [(1, 1)]
    code = sparse_mv_code(5, 3)
    assert len(code.encode(split_columns(one_row(), 3), [0, 4])) == 2


def test_an_impossible_condition_bound_is_infeasible_with_the_search_log() -> None:
    with pytest.raises(Infeasible) as raised:
        sparse_mm_code(5, 2, 2, max_condition=1.0, draws=1, attempts=1)
    assert re.fullmatch(
        r"no weight pair verified for n=5, k_a=2, k_b=2: \[\"\(1, 2\): rejected, no placement "
        r"met Hall's condition \(1 placements\)\", \"\(2, 1\): rejected, no placement met "
        r"Hall's condition \(1 placements\)\", '\(2, 2\): rejected, Hall holds but worst "
        r"condition [0-9.e+]+ > 1 \(1 placements\)'\]",
        str(raised.value),
    )


def test_the_polynomial_codes_sample_is_seeded_with_zero_by_default() -> None:
    default = polynomial_code(18, 9)  # C(18, 9) = 48620 subsets: a seeded sample of 2000
    assert (default.condition_scope, default.condition_subsets) == ("sampled", 2000)
    assert default.worst_condition == polynomial_code(18, 9, seed=0).worst_condition
    assert default.worst_condition != polynomial_code(18, 9, seed=1).worst_condition


# ----------------------------------------------------------------- singular decoding matrices

EPS = float(np.finfo(np.float64).eps)


def hand_code(generator: np.ndarray) -> MatVecCode:
    """A MatVecCode with a generator chosen by hand (singular values known exactly)."""
    n, k = generator.shape
    return MatVecCode(
        name="hand",
        n_workers=n,
        k=k,
        generator=generator,
        worst_condition=math.inf,
        condition_scope="exhaustive",
        condition_subsets=0,
        weight=k,
        lower_bound=1,
        support=tuple(tuple(range(k)) for _ in range(n)),
        support_resilient=False,
    )


def test_decoding_refuses_a_rank_cut_at_k_eps_16_inclusive() -> None:
    cut = 2 * EPS * 16  # k = 2: the smallest singular value must exceed k eps 16 times the top
    results = {0: np.array([3.0, 4.0]), 1: np.array([5e-16, 6e-16])}
    for bottom in (0.0, cut * (1 - 2**-8), cut):
        with pytest.raises(
            NotDecodable, match=r"^hand: workers \(0, 1\) give a singular decoding matrix$"
        ):
            hand_code(np.array([[1.0, 0.0], [0.0, bottom]])).decode(results)
    above = cut * (1 + 2**-8)
    blocks = hand_code(np.array([[1.0, 0.0], [0.0, above]])).decode(results)
    assert blocks[0].tolist() == [3.0, 4.0]
    assert_close(blocks[1] * above, results[1])
    with pytest.raises(NotDecodable, match="singular"):
        hand_code(np.zeros((2, 2))).decode(results)


def test_decoding_with_the_identity_is_exact() -> None:
    # top singular value exactly 1: uncoded blocks pass the rank check and come back unchanged
    results = {0: np.array([1.5, -2.0]), 1: np.array([0.25, 8.0]), 2: np.array([3.0, 1.0])}
    blocks = hand_code(np.eye(3)).decode(results)
    assert [b.tolist() for b in blocks] == [[1.5, -2.0], [0.25, 8.0], [3.0, 1.0]]


def test_sparse_and_two_dimensional_results_are_decoded() -> None:
    code = hand_code(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]))
    x0, x1 = np.array([[1.0, 2.0]]), np.array([[3.0, -1.0]])
    results = {0: sp.csr_matrix(x0), 2: sp.csr_matrix(2.0 * x1)}
    blocks = code.decode(results)
    assert all(b.shape == (1, 2) and b.dtype == np.float64 for b in blocks)
    assert_close(blocks[0], x0)
    assert_close(blocks[1], x1)


def test_the_worst_condition_scan_cuts_at_size_eps_16_inclusive() -> None:
    cut = 2 * EPS * 16
    index = np.array([[0, 1], [0, 2]])
    for bottom in (0.0, cut * (1 - 2**-8), cut):
        generator = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, bottom]])
        assert _worst_condition(generator, index) == math.inf
    above = cut * (1 + 2**-8)
    generator = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, above]])
    assert _worst_condition(generator, index) == 1.0 / above
    assert _worst_condition(np.zeros((3, 2)), index) == math.inf
    assert _worst_condition(np.eye(2), np.array([[0, 1]])) == 1.0
    # the worst over every batch of 4096 subsets, wherever it lies
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.5]])
    for many in ([[0, 1]] * 4096 + [[0, 2]], [[0, 2]] + [[0, 1]] * 4096):
        assert _worst_condition(rows, np.array(many)) == 2.0


# ------------------------------------------------------------------- Hall's condition, exactly


def every_subset_has_a_matching(support: list[tuple[int, ...]], n_items: int) -> bool:
    """Brute force: every n_items-subset of holders can be matched onto all items."""
    for chosen in itertools.combinations(range(len(support)), n_items):
        if not any(
            all(item in support[h] for item, h in zip(range(n_items), order, strict=True))
            for order in itertools.permutations(chosen)
        ):
            return False
    return True


def test_hall_resilient_agrees_with_brute_force_on_random_supports() -> None:
    rng = np.random.default_rng(19)
    outcomes = []
    for _ in range(300):
        n_items = int(rng.integers(1, 5))
        n = int(rng.integers(n_items, 7))
        support = [
            tuple(int(j) for j in np.flatnonzero(rng.random(n_items) < 0.55)) for _ in range(n)
        ]
        want = every_subset_has_a_matching(support, n_items)
        assert hall_resilient(support, n_items) is want, (support, n_items)
        outcomes.append(want)
    assert 30 <= sum(outcomes) <= 270  # both answers are exercised


def test_hall_resilient_ignores_repeats_and_order_and_reads_any_iterables() -> None:
    assert hall_resilient([(1, 0, 1), iter([0, 1]), {1, 0}], 2) is True
    assert hall_resilient([(0,), (0, 0), (1,)], 2) is False
    assert hall_resilient([(), (0,)], 1) is False  # a holder with nothing may be the one left
    assert hall_resilient([(0,)], 1) is True  # s = 0: one matching of the support itself


# ----------------------------------------------------------------------- encoding and scaling


def test_encoding_cancels_exactly_and_stores_no_zeros() -> None:
    block = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0]]))
    code = hand_code(np.array([[1.0, 1.0], [1.0, 0.0]]))
    cancelled, plain = code.encode([block, -block])
    assert cancelled.nnz == 0 and cancelled.shape == (2, 2)
    assert plain.nnz == 2 and (plain != block).nnz == 0
    assert all(isinstance(c, sp.csr_matrix) and c.dtype == np.float64 for c in (cancelled, plain))
    assert code.coefficients is code.generator


def test_blocks_of_integer_matrices_are_float64() -> None:
    blocks = split_columns(sp.csr_matrix(np.array([[1, 0, 2], [0, 3, 0]], dtype=np.int64)), 2)
    assert all(b.dtype == np.float64 and b.shape == (2, 2) for b in blocks)
    assert np.array_equal(blocks[1].toarray(), [[2.0, 0.0], [0.0, 0.0]])


def test_unit_rows_leave_zero_rows_alone() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaled = _unit_rows(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]]))
    assert scaled.tolist() == [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]]


def test_decode_names_the_misshapen_result_exactly() -> None:
    code = hand_code(np.eye(3))
    good = np.zeros(4)
    with pytest.raises(
        InvalidInput,
        match=r"^results\[2\] must be a 1-D or 2-D array shaped like results\[0\] \(4,\), "
        r"got shape \(5,\)$",
    ):
        code.decode({0: good, 1: good, 2: np.zeros(5)})
    with pytest.raises(InvalidInput, match=r"^results\[0\] must be a 1-D or 2-D array"):
        code.decode({0: np.zeros((1, 1, 1)), 1: np.zeros((1, 1, 1)), 2: np.zeros((1, 1, 1))})
    with pytest.raises(InvalidInput, match=r"^results\[0\] must be a 1-D or 2-D array"):
        code.decode({0: np.float64(1.0), 1: np.float64(1.0), 2: np.float64(1.0)})
    with pytest.raises(InvalidInput, match=r"^results\[2\] holds non-finite values$"):
        code.decode({0: good, 1: good, 2: np.full(4, np.inf)})
    with pytest.raises(NotDecodable, match=r"^hand: need results from k=3 workers, got 0$"):
        code.decode({})


def test_product_code_properties() -> None:
    code = polynomial_code(6, 2, 2)
    assert code.weight_product == 4 and code.verification == "exhaustive"
    assert code.counting_bound == 2  # ceil(4 * 3 / 6)
    assert code.search_log == ("polynomial code: every worker combines every block",)
    assert code.name == "polynomial_code"
    assert code.resilience == 2 and code.condition_number() == code.worst_condition
    sparse = sparse_mm_code(8, 2, 2)
    assert sparse.weight_product == sparse.weight[0] * sparse.weight[1] == 4
    assert sparse.name == "sparse_mm_code"
    assert sparse.condition_subsets == 70 and sparse.condition_scope == "exhaustive"  # C(8, 4)
    assert code.condition_subsets == 15  # C(6, 4)
    with pytest.raises(NotDecodable, match=r"^sparse_mm_code: need results from k=4 workers"):
        sparse.decode({0: np.ones(2)})


# ------------------------------------------------------------------- constructions' details


def test_greedy_placement_fills_deficits_then_the_least_covered_cells_first_in_order() -> None:
    # 1 x 1 windows on a 2 x 2 torus: every cell once, in row-major order
    assert _greedy_starts(4, (2, 2), (1, 1), 1, None) == ((0, 0), (0, 1), (1, 0), (1, 1))
    # 2 x 1 windows (whole columns): the two columns, then (no deficit left) the least covered
    # rectangle, ties to the first candidate: column 0 again, then column 1
    assert _greedy_starts(4, (2, 2), (2, 1), 1, None) == ((0, 0), (0, 1), (0, 0), (0, 1))
    assert _greedy_starts(6, (3, 2), (2, 1), 2, None) == (
        (0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1),
    )  # fmt: skip


def test_greedy_placement_with_an_rng_breaks_ties_at_random_but_stays_greedy() -> None:
    seen = set()
    for seed in range(6):
        starts = _greedy_starts(4, (2, 2), (2, 1), 1, np.random.default_rng(seed))
        columns = [b for _, b in starts]
        assert sorted(columns) == [0, 0, 1, 1]  # every cell held twice, as without the rng
        assert len(set(columns[:2])) == 2  # the first two remove the whole deficit
        seen.add(starts)
    assert len(seen) >= 3


def test_draws_default_to_one_descended_draw_or_eight_plain_ones() -> None:
    exhaustive = sparse_mv_code(8, 4)
    assert exhaustive.condition_scope == "exhaustive"
    assert exhaustive.worst_condition == sparse_mv_code(8, 4, draws=MATVEC_DRAWS).worst_condition
    assert exhaustive.worst_condition != sparse_mv_code(8, 4, draws=2).worst_condition
    sampled = sparse_mv_code(24, 12)
    assert sampled.condition_scope == "sampled" and sampled.condition_subsets == 2000
    assert sampled.worst_condition == sparse_mv_code(24, 12, draws=DEFAULT_DRAWS).worst_condition
    assert sampled.worst_condition != sparse_mv_code(24, 12, draws=1).worst_condition
    assert (MATVEC_DRAWS, DEFAULT_DRAWS) == (1, 8)


def test_the_dense_code_records_what_it_is() -> None:
    code = dense_mds_code(6, 4)
    assert (code.name, code.weight, code.lower_bound) == ("dense_mds_code", 4, 2)
    assert code.support == ((0, 1, 2, 3),) * 6 and code.support_resilient is True
    assert code.condition_subsets == 15 and code.condition_scope == "exhaustive"
    assert np.all(code.generator != 0.0)
    assert_close(np.linalg.norm(code.generator, axis=1), np.ones(6))
    sparse = sparse_mv_code(6, 4)
    assert (sparse.name, sparse.weight, sparse.lower_bound) == ("sparse_mv_code", 2, 2)
    assert np.all((sparse.generator != 0.0) == _mask_of(sparse.support, 4))
    assert not sparse.generator.flags.writeable and not code.generator.flags.writeable


def _mask_of(support: tuple[tuple[int, ...], ...], width: int) -> np.ndarray:
    mask = np.zeros((len(support), width), dtype=bool)
    for i, items in enumerate(support):
        mask[i, list(items)] = True
    return mask


def test_the_weight_search_tries_pairs_by_product_then_balance_and_logs_each() -> None:
    code = sparse_mm_code(7, 3, 2)  # bound ceil(6 * 2 / 7) = 2
    assert code.weight == (2, 2) and code.counting_bound == 2
    rejected = "rejected, no placement met Hall's condition (16 placements)"
    assert code.search_log[:3] == (
        f"(1, 2): {rejected}",
        f"(2, 1): {rejected}",
        f"(3, 1): {rejected}",
    )
    assert re.fullmatch(
        r"\(2, 2\): accepted, worst condition [0-9.e+]+ \(exhaustive over 7 subsets\)",
        code.search_log[3],
    )
    # repeated placements are tried once: 15 distinct ones out of 16 attempts here
    assert sparse_mm_code(6, 2, 2).search_log[0] == (
        "(1, 2): rejected, no placement met Hall's condition (15 placements)"
    )
    assert sparse_mm_code(6, 2, 2, attempts=1).search_log[0] == (
        "(1, 2): rejected, no placement met Hall's condition (1 placements)"
    )


def test_max_condition_is_an_inclusive_bound() -> None:
    code = sparse_mm_code(8, 2, 2)
    again = sparse_mm_code(8, 2, 2, max_condition=code.worst_condition)
    assert again.weight == (2, 2) and again.worst_condition == code.worst_condition
    assert np.array_equal(again.generator, code.generator)
    with pytest.raises(Infeasible, match=r"Hall holds but worst condition .* \(16 placements\)"):
        sparse_mm_code(8, 2, 2, max_condition=code.worst_condition * (1 - 1e-12))


def test_the_first_placement_is_the_deterministic_greedy_one_for_every_seed() -> None:
    for n, k_a, k_b in [(8, 2, 2), (9, 3, 2), (10, 3, 3)]:
        codes = [sparse_mm_code(n, k_a, k_b, seed=seed) for seed in range(3)]
        starts = _greedy_starts(n, (k_a, k_b), codes[0].weight, n - k_a * k_b + 1, None)
        for code in codes:
            assert code.search_log[-1].startswith(f"{code.weight}: accepted")
            assert code.support_a == tuple(_window(a, code.weight[0], k_a) for a, _ in starts)
            assert code.support_b == tuple(_window(b, code.weight[1], k_b) for _, b in starts)
        assert codes[0].worst_condition != codes[1].worst_condition  # the seed draws coefficients


def test_polynomial_codes_at_given_points() -> None:
    code = polynomial_code(4, 2, 1, points=[-1, 0, 1, 2])  # integer points: evaluated as float64
    assert code.coefficients[0].dtype == np.float64 and code.generator.dtype == np.float64
    assert code.coefficients[0].tolist() == [[1.0, -1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 2.0]]
    assert code.coefficients[1].tolist() == [[1.0]] * 4
    a = random_sparse(6, 4, 0.5, seed=5)
    coded = code.encode(split_columns(a, 2))
    x = np.arange(6.0)
    assert_close(matvec(code, coded, x, alive=[1, 3], n_cols=4), a.T @ x)
    with pytest.raises(
        NotDecodable, match=r"^polynomial_code: need results from k=2 workers, got 1$"
    ):
        matvec(code, coded, x, alive=[2])


def test_windows_run_forward_cyclically() -> None:
    assert _window(1, 2, 3) == (1, 2)
    assert _window(2, 2, 3) == (0, 2)  # wraps to the start
    assert _window(0, 3, 3) == (0, 1, 2) and _window(2, 1, 4) == (2,)


def greedy_by_hand(
    n: int, shape: tuple[int, int], window: tuple[int, int], target: int
) -> list[tuple[int, int]]:
    """The documented rule, in plain loops: most deficit (cells below target) removed, then the
    least covered rectangle, then the first in row-major order."""
    coverage = [[0] * shape[1] for _ in range(shape[0])]
    starts = []
    for _ in range(n):
        best = None
        for a in range(shape[0]):
            for b in range(shape[1]):
                cells = [
                    coverage[(a + u) % shape[0]][(b + v) % shape[1]]
                    for u in range(window[0])
                    for v in range(window[1])
                ]
                key = (-sum(max(target - c, 0) for c in cells), sum(cells))
                if best is None or key < best[0]:
                    best = (key, (a, b))
        assert best is not None
        a, b = best[1]
        for u in range(window[0]):
            for v in range(window[1]):
                coverage[(a + u) % shape[0]][(b + v) % shape[1]] += 1
        starts.append((a, b))
    return starts


@pytest.mark.parametrize(
    ("n", "shape", "window", "target"),
    [
        (12, (3, 4), (2, 3), 3),
        (12, (4, 3), (3, 2), 3),
        (9, (3, 2), (2, 1), 3),
        (7, (2, 3), (1, 2), 2),
    ],
)
def test_greedy_placement_follows_the_documented_rule(
    n: int, shape: tuple[int, int], window: tuple[int, int], target: int
) -> None:
    # (12, (3, 4), (2, 3), 3): a rectangle over already covered cells must not count them
    assert list(_greedy_starts(n, shape, window, target, None)) == greedy_by_hand(
        n, shape, window, target
    )


def test_every_pair_from_the_bound_up_is_tried_by_product_then_balance() -> None:
    # n = 9, K = 8: bound ceil(8 * 2 / 9) = 2; with max_condition 1 every pair is rejected
    with pytest.raises(Infeasible) as raised:
        sparse_mm_code(9, 2, 4, max_condition=1.0, draws=1, attempts=1)
    tried = re.findall(r"\((\d), (\d)\): rejected", str(raised.value))
    assert [(int(a), int(b)) for a, b in tried] == [
        (1, 2), (2, 1), (1, 3), (2, 2), (1, 4), (2, 3), (2, 4),
    ]  # fmt: skip


def test_worker_selection_is_sorted_and_uses_all_of_exactly_k() -> None:
    code = dense_mds_code(6, 3)
    chosen = code.select_workers([5, 0, 3, 1])
    assert len(chosen) == 3 and list(chosen) == sorted(chosen) and set(chosen) <= {0, 1, 3, 5}
    assert code.select_workers([4, 2, 0]) == (0, 2, 4)
    with pytest.raises(
        NotDecodable, match=r"^dense_mds_code: need results from k=3 workers, got 2$"
    ):
        code.select_workers([1, 2])
    with pytest.raises(
        ValueError, match=r"^available must hold indices in \[0, 6\), got \[0, 1, 9\]$"
    ):
        code.select_workers([0, 1, 9])
    with pytest.raises(
        ValueError, match=r"^results must map worker index -> array, got <class 'list'>$"
    ):
        code.decode([np.ones(2)] * 3)  # type: ignore[arg-type]


def test_worker_matvec_computes_in_float64_even_for_integer_operands() -> None:
    block = sp.csr_matrix(np.array([[2**40, 0], [0, 3]], dtype=np.int64))
    x = np.array([2**40, 1], dtype=np.int64)  # 2^80 overflows int64, not float64
    got = worker_matvec(block, x)
    assert got.dtype == np.float64 and got.tolist() == [2.0**80, 3.0]


def test_joined_blocks_are_float64_with_or_without_n_cols() -> None:
    joined = join_columns([np.array([1, 2]), np.array([3, 4])])
    assert joined.dtype == np.float64 and joined.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert join_columns([np.array([[1], [2]])], 1).dtype == np.float64


def test_exact_fraction_results_are_decoded_as_float64() -> None:
    code = hand_code(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]))
    results = {0: [Fraction(1, 3), Fraction(2)], 1: [Fraction(4, 3), Fraction(5)]}
    blocks = code.decode(results)
    assert all(b.dtype == np.float64 for b in blocks)
    assert_close(blocks[0], np.array([1 / 3, 2.0]))
    assert_close(blocks[1], np.array([1.0, 3.0]))


def test_matvec_codes_default_to_seed_zero_and_pass_draws_on() -> None:
    for build in (sparse_mv_code, dense_mds_code):
        default = build(6, 4)
        assert np.array_equal(default.generator, build(6, 4, seed=0).generator)
        assert not np.array_equal(default.generator, build(6, 4, seed=1).generator)
    assert not np.array_equal(
        dense_mds_code(6, 4, draws=3).generator, dense_mds_code(6, 4).generator
    )
