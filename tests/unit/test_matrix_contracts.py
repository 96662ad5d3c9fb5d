"""Contracts of the matrix codes (edgecode.codes.matrix) that test_matrix_codes.py leaves open,
each found by a mutant surviving it (docs/notes/mutation.md lists which): argument names in
every error, the unpadded and padded end-to-end results, dtypes of what workers compute.
Small codes only (n <= 8): the whole file runs in a few seconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from edgecode.codes.matrix import (
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
