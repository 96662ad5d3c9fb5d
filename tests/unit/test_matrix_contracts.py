"""Contracts of the matrix codes (edgecode.codes.matrix) that test_matrix_codes.py leaves open,
each found by a mutant surviving it (docs/notes/mutation.md lists which): argument names in
every error, the unpadded and padded end-to-end results, dtypes of what workers compute.
Small codes only (n <= 8): the whole file runs in a few seconds.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from edgecode.codes.matrix import (
    chebyshev_points,
    matmul,
    matvec,
    polynomial_code,
    sparse_mv_code,
    split_columns,
    worker_product,
)
from edgecode.errors import InvalidInput

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
