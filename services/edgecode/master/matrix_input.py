"""What a matrix job is made of, checked at the edge: A and B as float64 CSR, read from files or
assembled from streamed row chunks, and cut into block-columns in a seeded random column order.

Nothing here places anything: a matrix job refuses bad input (a shape that does not fit, a
non-CSR B, NaN) before a single block leaves the master.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import scipy.sparse as sp

from edgecode.codes.matrix import split_columns
from edgecode.errors import InvalidInput


def load_matrix(path: str | Path, name: str = "matrix", csr_only: bool = False) -> Any:
    """A sparse matrix from ``.npz`` (scipy.sparse.save_npz) or ``.mtx`` (Matrix Market), as CSR.

    ``csr_only``: the file must hold a CSR matrix (B of an A^T B job: it is placed as CSR
    blocks, and a CSC or COO file is refused rather than silently converted).
    """
    file = Path(path)
    if not file.is_file():
        raise InvalidInput(f"{name} file {str(file)!r} does not exist")
    try:
        if file.suffix == ".npz":
            matrix = sp.load_npz(file)
        elif file.suffix in (".mtx", ".gz") and file.name.endswith((".mtx", ".mtx.gz")):
            matrix = scipy.io.mmread(file)
        else:
            raise InvalidInput(f"{name} file must be .npz or .mtx, got {file.name!r}")
    except InvalidInput:
        raise
    except Exception as exc:  # a corrupt file is bad input, not a crash
        raise InvalidInput(f"cannot read {name} file {file.name!r}: {exc}") from None
    if csr_only:
        return checked_rhs(matrix, name)
    return checked_matrix(matrix, name)


def checked_matrix(matrix: Any, name: str) -> Any:
    """``matrix`` as float64 CSR, 2-D, non-empty and finite (else InvalidInput)."""
    csr = sp.csr_matrix(matrix, dtype=np.float64) if sp.issparse(matrix) else None
    if csr is None:
        array = np.asarray(matrix, dtype=np.float64)
        if array.ndim != 2:
            raise InvalidInput(f"{name} must be 2-D, got shape {array.shape}")
        csr = sp.csr_matrix(array)
    if csr.shape[0] < 1 or csr.shape[1] < 1:
        raise InvalidInput(f"{name} must have at least one row and column, got {csr.shape}")
    if not np.all(np.isfinite(csr.data)):
        raise InvalidInput(f"{name} holds NaN or infinite values")
    return csr


def checked_rhs(matrix: Any, name: str = "rhs") -> Any:
    """B of an A^T B job: a scipy.sparse CSR matrix (float64 after the check), finite, non-empty.

    A dense array or another sparse format is refused: the point of coding B is that it stays
    sparse, and a dense B belongs in ``Matmul``'s operand (column by column through A's code).
    """
    if not sp.issparse(matrix):
        raise InvalidInput(
            f"{name} (B) must be a scipy.sparse CSR matrix, got {type(matrix).__name__}; "
            "send a dense B as the operand of a product instead"
        )
    if matrix.format != "csr":
        raise InvalidInput(f"{name} (B) must be CSR, got {matrix.format.upper()}")
    return checked_matrix(matrix, name)


class MatrixAssembler:
    """A streamed matrix: row chunks in order, checked against the announced shape and nnz."""

    def __init__(self, rows: int, cols: int, nnz: int, name: str = "matrix") -> None:
        if rows < 1 or cols < 1 or nnz < 0 or nnz > rows * cols:
            raise InvalidInput(f"{name}: shape ({rows}, {cols}) with {nnz} non-zeros is invalid")
        self.rows, self.cols, self.nnz = rows, cols, nnz
        self.name = name
        self.next_row = 0
        self.arrived = 0
        self.chunks: list[Any] = []

    def add(self, first_row: int, chunk: Any) -> None:
        if first_row != self.next_row:
            raise InvalidInput(
                f"{self.name}: chunk starts at row {first_row}, expected {self.next_row}"
            )
        if chunk.shape[1] != self.cols or self.next_row + chunk.shape[0] > self.rows:
            raise InvalidInput(
                f"{self.name}: chunk of shape {chunk.shape} does not fit ({self.rows}, "
                f"{self.cols}) at row {first_row}"
            )
        self.arrived += int(chunk.nnz)
        if self.arrived > self.nnz:
            raise InvalidInput(f"{self.name}: more than the announced {self.nnz} non-zeros arrived")
        self.chunks.append(chunk)
        self.next_row += int(chunk.shape[0])

    def finish(self) -> Any:
        if self.next_row != self.rows or self.arrived != self.nnz:
            raise InvalidInput(
                f"{self.name}: {self.next_row} of {self.rows} rows and {self.arrived} of "
                f"{self.nnz} non-zeros arrived"
            )
        return checked_matrix(sp.vstack(self.chunks, format="csr"), self.name)


def balanced_split(
    matrix: Any, k: int, seed: int = 0, stream: int = 0
) -> tuple[np.ndarray, list[Any]]:
    """``matrix``'s columns in a seeded random order, split into k equal-width blocks.

    Real sparse matrices (a vocabulary, a graph) have columns of very different density, so
    equal-width blocks in the matrix's own order give some workers almost no work and others
    most of it; a random order evens the non-zeros out for every scheme. Entry i of the joined
    result belongs to column ``order[i]``. ``stream`` separates the orders of A (0) and B (1).
    """
    # A's key is the one used before B existed (so A^T x results stay as they were)
    key = [seed, 0x5EED] if stream == 0 else [seed, 0x5EED, stream]
    order = np.random.default_rng(key).permutation(matrix.shape[1])
    return order, split_columns(sp.csr_matrix(matrix)[:, order].tocsr(), k)


def unpermute(value: np.ndarray, order: np.ndarray | None, axis: int) -> np.ndarray:
    """Undo :func:`balanced_split`'s order along ``axis``: entry i goes back to ``order[i]``."""
    if order is None:
        return value
    result = np.empty_like(value)
    index: list[Any] = [slice(None)] * value.ndim
    index[axis] = order
    result[tuple(index)] = value
    return result
