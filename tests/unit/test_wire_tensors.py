"""Tensors and CSR matrices on the wire (edgecode.wire.tensors), fast: exact bytes, every
refusal with its message, the finiteness check's overflow path, and the CSR row chunks. The
Hypothesis round trips are in tests/property/test_wire_roundtrip.py and test_wire_fast_path.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from edgecode.errors import InvalidInput
from edgecode.v1 import common_pb2
from edgecode.wire.tensors import (
    MAX_NDIM,
    SMALL_FINITE_CHECK,
    _all_finite,
    csr_from_proto,
    csr_row_chunks,
    csr_to_proto,
    tensor_from_proto,
    tensor_to_proto,
)


def tensor(dtype: str, shape: list[int], data: bytes) -> common_pb2.Tensor:
    return common_pb2.Tensor(dtype=dtype, shape=shape, data=data)


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "int32"])
def test_tensors_are_little_endian_bytes_with_dtype_and_shape(dtype: str) -> None:
    values = np.arange(6, dtype=dtype).reshape(2, 3)
    message = tensor_to_proto(values)
    assert message.dtype == dtype and list(message.shape) == [2, 3]
    assert message.data == values.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    back = tensor_from_proto(message, "x")
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, values)
    assert not back.flags.writeable


def test_big_endian_and_strided_input_is_written_little_endian_and_contiguous() -> None:
    values = np.arange(12, dtype=">f8").reshape(3, 4)[:, ::2]
    message = tensor_to_proto(values)
    assert message.dtype == "float64" and list(message.shape) == [3, 2]
    assert message.data == np.ascontiguousarray(values, dtype="<f8").tobytes()


def test_encoding_in_place_replaces_the_previous_shape() -> None:
    out = tensor_to_proto(np.zeros((2, 2, 2)))
    same = tensor_to_proto(np.ones(3, dtype=np.int32), out=out)
    assert same is out and out.dtype == "int32" and list(out.shape) == [3]
    assert np.array_equal(tensor_from_proto(out, "x"), [1, 1, 1])


def test_unknown_dtypes_are_refused_both_ways() -> None:
    with pytest.raises(
        InvalidInput,
        match=r"^tensor dtype bool is not one of \['float32', 'float64', 'int32', 'int64'\]$",
    ):
        tensor_to_proto(np.array([True]))
    with pytest.raises(
        InvalidInput,
        match=r"^g: dtype 'float16' is not one of \['float32', 'float64', 'int32', 'int64'\]$",
    ):
        tensor_from_proto(tensor("float16", [1], b"\x00\x00"), "g")


def test_decoding_checks_the_expected_dtype_and_shape() -> None:
    message = tensor_to_proto(np.zeros((2, 3)))
    with pytest.raises(InvalidInput, match=r"^g: expected dtype float32, got float64$"):
        tensor_from_proto(message, "g", dtype="float32")
    assert tensor_from_proto(message, "g", dtype="float64").shape == (2, 3)
    with pytest.raises(InvalidInput, match=r"^g: expected shape \[2, 4\], got \[2, 3\]$"):
        tensor_from_proto(message, "g", shape=[2, 4])
    with pytest.raises(InvalidInput, match=r"^g: expected shape \[6\], got \[2, 3\]$"):
        tensor_from_proto(message, "g", shape=[6])
    assert tensor_from_proto(message, "g", shape=[None, 3]).shape == (2, 3)
    assert tensor_from_proto(message, "g", shape=[2, None]).shape == (2, 3)
    with pytest.raises(InvalidInput, match=r"^g: expected shape \[None, 4\], got \[2, 3\]$"):
        tensor_from_proto(message, "g", shape=[None, 4])


def test_shapes_are_limited_in_rank_and_sign() -> None:
    deepest = np.zeros((1,) * MAX_NDIM)
    assert MAX_NDIM == 4 and tensor_from_proto(tensor_to_proto(deepest), "t").shape == deepest.shape
    with pytest.raises(InvalidInput, match=r"^t: invalid shape \[1, 1, 1, 1, 1\]$"):
        tensor_from_proto(tensor("float64", [1] * 5, bytes(8)), "t")
    with pytest.raises(InvalidInput, match=r"^t: invalid shape \[-1\]$"):
        tensor_from_proto(tensor("float64", [-1], b""), "t")
    empty = tensor_from_proto(tensor("float64", [0, 3], b""), "t")
    assert empty.shape == (0, 3)


def test_the_byte_length_must_match_the_shape() -> None:
    with pytest.raises(
        InvalidInput, match=r"^t: shape \[2, 2\] of float32 needs 16 bytes, got 12$"
    ):
        tensor_from_proto(tensor("float32", [2, 2], bytes(12)), "t")
    with pytest.raises(InvalidInput, match=r"^t: shape \[\] of int64 needs 8 bytes, got 0$"):
        tensor_from_proto(tensor("int64", [], b""), "t")
    assert tensor_from_proto(tensor("int64", [], bytes(8)), "t").shape == ()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_floats_are_refused_unless_allowed(bad: float) -> None:
    for dtype in ("float64", "float32"):
        message = tensor_to_proto(np.array([1.0, bad, 2.0], dtype=dtype))
        with pytest.raises(InvalidInput, match=r"^w: contains NaN or infinite values$"):
            tensor_from_proto(message, "w")
        allowed = tensor_from_proto(message, "w", finite=False)
        assert allowed.shape == (3,) and not np.isfinite(allowed[1])


def test_large_arrays_take_the_one_pass_sum_and_are_checked_exactly() -> None:
    """Past SMALL_FINITE_CHECK values the check sums first: an overflowing sum of finite
    values, and NaN / inf anywhere, must still get the exact answer (warnings are errors
    here, so the sum's error state is checked too)."""
    n = SMALL_FINITE_CHECK + 1
    huge = np.full(n, 1.5e308)
    huge[-1] = -1.0
    assert _all_finite(huge) and _all_finite(np.ones(n)) and _all_finite(-huge)
    for bad in (np.nan, np.inf, -np.inf):
        values = np.ones(n)
        values[n // 2] = bad
        assert not _all_finite(values), bad
    cancelling = np.ones(n)
    cancelling[:2] = (np.inf, -np.inf)  # the sum is NaN: the invalid operation is silenced
    assert not _all_finite(cancelling)
    assert np.array_equal(tensor_from_proto(tensor_to_proto(huge), "w"), huge)


def test_huge_finite_values_whose_sum_overflows_are_accepted() -> None:
    huge = np.array([1.5e308, 1.5e308, -1.0])
    assert _all_finite(huge) and _all_finite(np.zeros(0)) and _all_finite(np.array([-1e308] * 3))
    assert not _all_finite(np.array([1.5e308, 1.5e308, np.nan]))
    assert not _all_finite(np.array([1.0, np.inf]))
    # inf - inf is NaN in the sum: no "invalid value" warning (warnings are errors here)
    assert not _all_finite(np.array([np.inf, -np.inf]))
    assert np.array_equal(tensor_from_proto(tensor_to_proto(huge), "w"), huge)


def test_csr_round_trip_and_its_types() -> None:
    matrix = sp.random(6, 5, density=0.4, format="csr", random_state=np.random.default_rng(0))
    message = csr_to_proto(matrix.astype(np.float32))
    assert (message.rows, message.cols) == (6, 5)
    assert message.indptr.dtype == "int64" and message.indices.dtype == "int64"
    assert message.data.dtype == "float64"
    back = csr_from_proto(message, "a")
    assert back.shape == (6, 5) and back.dtype == np.float64
    np.testing.assert_allclose(back.toarray(), matrix.astype(np.float32).toarray(), rtol=0)
    back.data[:] = 7.0  # a writable copy, not a view of the message's bytes
    assert np.all(csr_from_proto(message, "a").data != 7.0)
    empty = csr_from_proto(csr_to_proto(sp.csr_matrix((0, 4))), "a")
    assert empty.shape == (0, 4) and empty.nnz == 0
    no_columns = csr_from_proto(csr_to_proto(sp.csr_matrix((3, 0))), "a")
    assert no_columns.shape == (3, 0) and no_columns.nnz == 0


def csr_message(rows: int, cols: int, indptr: list[int], indices: list[int], data: list[float]):
    return common_pb2.CsrMatrix(
        rows=rows,
        cols=cols,
        indptr=tensor_to_proto(np.array(indptr, dtype=np.int64)),
        indices=tensor_to_proto(np.array(indices, dtype=np.int64)),
        data=tensor_to_proto(np.array(data, dtype=np.float64)),
    )


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (csr_message(-1, 2, [0], [], []), r"^a: invalid shape \(-1, 2\)$"),
        (csr_message(1, -2, [0, 0], [], []), r"^a: invalid shape \(1, -2\)$"),
        (csr_message(2, 2, [0, 1], [0], [1.0]), r"^a\.indptr: expected shape \[3\], got \[2\]$"),
        (csr_message(1, 2, [1, 1], [0], [1.0]), r"^a: malformed CSR structure"),
        (csr_message(2, 2, [0, 2, 1], [0, 1], [1.0, 2.0]), r"^a: malformed CSR structure"),
        (csr_message(1, 2, [0, 2], [0], [1.0, 2.0]), r"^a: malformed CSR structure"),
        (csr_message(1, 2, [0, 2], [0, 1], [1.0]), r"^a: malformed CSR structure"),
        (csr_message(1, 2, [0, 1], [2], [1.0]), r"^a: column index out of range \[0, 2\)$"),
        (csr_message(1, 2, [0, 1], [-1], [1.0]), r"^a: column index out of range \[0, 2\)$"),
        (csr_message(1, 2, [0, 1], [1], [np.nan]), r"^a\.data: contains NaN"),
        (csr_message(3, 2, [0, 2, 1, 2], [0, 1], [1.0, 2.0]), r"^a: malformed CSR structure"),
        (
            common_pb2.CsrMatrix(
                rows=1,
                cols=2,
                indptr=tensor_to_proto(np.array([0.0, 1.0])),
                indices=tensor_to_proto(np.array([1])),
                data=tensor_to_proto(np.array([1.0])),
            ),
            r"^a\.indptr: expected dtype int64, got float64$",
        ),
        (
            common_pb2.CsrMatrix(
                rows=1,
                cols=2,
                indptr=tensor_to_proto(np.array([0, 1])),
                indices=tensor_to_proto(np.array([1], dtype=np.int32)),
                data=tensor_to_proto(np.array([1.0])),
            ),
            r"^a\.indices: expected dtype int64, got int32$",
        ),
        (
            common_pb2.CsrMatrix(
                rows=1,
                cols=2,
                indptr=tensor_to_proto(np.array([0, 1])),
                indices=tensor_to_proto(np.array([[1]])),
                data=tensor_to_proto(np.array([1.0])),
            ),
            r"^a\.indices: expected shape \[None\], got \[1, 1\]$",
        ),
        (
            common_pb2.CsrMatrix(
                rows=1,
                cols=2,
                indptr=tensor_to_proto(np.array([0, 1])),
                indices=tensor_to_proto(np.array([1])),
                data=tensor_to_proto(np.array([1.0], dtype=np.float32)),
            ),
            r"^a\.data: expected dtype float64, got float32$",
        ),
        (
            common_pb2.CsrMatrix(
                rows=1,
                cols=2,
                indptr=tensor_to_proto(np.array([0, 1])),
                indices=tensor_to_proto(np.array([1])),
                data=tensor_to_proto(np.array([[1.0]])),
            ),
            r"^a\.data: expected shape \[None\], got \[1, 1\]$",
        ),
    ],
)
def test_malformed_csr_is_refused_naming_the_field(message, error: str) -> None:
    with pytest.raises(InvalidInput, match=error):
        csr_from_proto(message, "a")


def test_csr_edge_columns_are_accepted() -> None:
    back = csr_from_proto(csr_message(2, 3, [0, 1, 2], [0, 2], [1.0, 2.0]), "a")
    assert back.toarray().tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]


def test_csr_row_chunks_cover_every_row_once_under_the_budget() -> None:
    matrix = sp.random(50, 40, density=0.25, format="csr", random_state=np.random.default_rng(1))
    per_row = (matrix.nnz * 16) // 50 + 8  # bytes of a row: 16 per value, 8 per row
    chunks = list(csr_row_chunks(matrix, 10 * per_row))
    assert [start for start, _ in chunks] == list(range(0, 50, 10))
    assert all(rows.shape == (10, 40) for _, rows in chunks)
    assert (sp.vstack([rows for _, rows in chunks]) != matrix).nnz == 0
    # a budget below one row still moves one row at a time; an empty matrix yields nothing
    assert [start for start, _ in csr_row_chunks(matrix, 1)] == list(range(50))
    assert list(csr_row_chunks(sp.csr_matrix((0, 3)), 100)) == []
    # all-zero rows are 8 bytes each
    assert [s for s, _ in csr_row_chunks(sp.csr_matrix((5, 3)), 16)] == [0, 2, 4]
