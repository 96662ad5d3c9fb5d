"""The ONLY module that converts between numpy/scipy objects and protobuf messages.

Every ``*_from_proto`` validates what it reads and raises :class:`~edgecode.errors.InvalidInput`
naming the field: an unknown dtype, a shape that does not match the byte length, a negative
dimension, non-finite values where finite ones are required, a malformed CSR structure. A bad
message therefore never reaches the model; the runtime maps InvalidInput to INVALID_ARGUMENT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from edgecode.errors import InvalidInput
from edgecode.planning.spec import EdgePlan, Plan, WorkerPlan
from edgecode.v1 import common_pb2, coordinator_pb2

#: dtypes accepted on the wire (little-endian, as numpy writes them on every supported platform).
DTYPES: dict[str, np.dtype[Any]] = {
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
}
#: Largest number of dimensions accepted.
MAX_NDIM = 4


def tensor_to_proto(array: Any, out: common_pb2.Tensor | None = None) -> common_pb2.Tensor:
    """Encode a numpy array (little-endian bytes). With ``out`` (a Tensor field of a message
    being built, e.g. ``response.gradient``) it is filled in place, which saves copying a
    multi-megabyte submessage into its parent."""
    values = np.asarray(array)
    name = values.dtype.name
    if name not in DTYPES:
        raise InvalidInput(f"tensor dtype {name} is not one of {sorted(DTYPES)}")
    message = common_pb2.Tensor() if out is None else out
    message.dtype = name
    del message.shape[:]
    message.shape.extend(values.shape)
    message.data = np.ascontiguousarray(values, dtype=DTYPES[name]).tobytes()
    return message


def tensor_from_proto(
    message: common_pb2.Tensor,
    field: str,
    *,
    dtype: str | None = None,
    shape: Sequence[int | None] | None = None,
    finite: bool = True,
) -> np.ndarray:
    """Decode and validate a tensor. ``shape`` entries of None match any length.

    The returned array is read-only and shares memory with the message bytes (no copy).
    """
    if message.dtype not in DTYPES:
        raise InvalidInput(f"{field}: dtype {message.dtype!r} is not one of {sorted(DTYPES)}")
    if dtype is not None and message.dtype != dtype:
        raise InvalidInput(f"{field}: expected dtype {dtype}, got {message.dtype}")
    dims = list(message.shape)
    if len(dims) > MAX_NDIM or any(d < 0 for d in dims):
        raise InvalidInput(f"{field}: invalid shape {dims}")
    if shape is not None and (
        len(dims) != len(shape)
        or any(w is not None and d != w for d, w in zip(dims, shape, strict=True))
    ):
        raise InvalidInput(f"{field}: expected shape {list(shape)}, got {dims}")
    kind = DTYPES[message.dtype]
    expected_bytes = math.prod(dims) * kind.itemsize
    data = message.data  # one access: upb hands out a new bytes object on every access
    if len(data) != expected_bytes:
        raise InvalidInput(
            f"{field}: shape {dims} of {message.dtype} needs {expected_bytes} bytes, got {len(data)}"
        )
    array: np.ndarray = np.frombuffer(data, dtype=kind).reshape(dims)
    if finite and kind.kind == "f" and not _all_finite(array):
        raise InvalidInput(f"{field}: contains NaN or infinite values")
    return array


def _all_finite(array: np.ndarray) -> bool:
    """One pass, no temporary: a finite sum proves every value finite (NaN and inf propagate);
    only a non-finite sum (a bad value, or an overflow of huge ones) needs the exact check."""
    with np.errstate(
        over="ignore", invalid="ignore"
    ):  # an overflow only sends us to the exact check
        total = float(np.sum(array)) if array.size else 0.0
    return math.isfinite(total) or bool(np.all(np.isfinite(array)))


def csr_to_proto(matrix: Any) -> common_pb2.CsrMatrix:
    """Encode a scipy sparse matrix as CSR (int64 indices, float64 values)."""
    csr = sp.csr_matrix(matrix)
    return common_pb2.CsrMatrix(
        rows=csr.shape[0],
        cols=csr.shape[1],
        indptr=tensor_to_proto(csr.indptr.astype(np.int64)),
        indices=tensor_to_proto(csr.indices.astype(np.int64)),
        data=tensor_to_proto(csr.data.astype(np.float64)),
    )


def csr_from_proto(message: common_pb2.CsrMatrix, field: str) -> sp.csr_matrix:
    """Decode and validate a CSR matrix: monotone indptr, column indices in range, finite data."""
    rows, cols = int(message.rows), int(message.cols)
    if rows < 0 or cols < 0:
        raise InvalidInput(f"{field}: invalid shape ({rows}, {cols})")
    indptr = tensor_from_proto(message.indptr, f"{field}.indptr", dtype="int64", shape=[rows + 1])
    nnz = int(indptr[-1]) if rows >= 0 and indptr.size else 0
    indices = tensor_from_proto(message.indices, f"{field}.indices", dtype="int64", shape=[None])
    data = tensor_from_proto(message.data, f"{field}.data", dtype="float64", shape=[None])
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or nnz != indices.size or nnz != data.size:
        raise InvalidInput(f"{field}: malformed CSR structure (indptr must rise from 0 to nnz)")
    if indices.size and (indices.min() < 0 or indices.max() >= cols):
        raise InvalidInput(f"{field}: column index out of range [0, {cols})")
    return sp.csr_matrix((data.copy(), indices.copy(), indptr.copy()), shape=(rows, cols))


def plan_to_proto(plan: Plan, fitted: bool = True) -> coordinator_pb2.PlanResponse:
    return coordinator_pb2.PlanResponse(
        s_edge=plan.s_edge,
        partitions=plan.partitions,
        expected_round_seconds=plan.expected_round_seconds or 0.0,
        fitted=fitted,
        edges=[
            coordinator_pb2.EdgeAssignment(
                name=e.name,
                s_worker=e.s_worker,
                link_seconds=e.link_seconds,
                partitions=e.partitions,
                workers=[
                    coordinator_pb2.WorkerAssignment(
                        name=w.name, selected=w.selected, partitions=w.partitions
                    )
                    for w in e.workers
                ],
            )
            for e in plan.edges
        ],
    )


def plan_from_proto(message: coordinator_pb2.PlanResponse) -> Plan:
    if message.partitions < 1 or message.s_edge < 0:
        raise InvalidInput(
            f"plan: partitions {message.partitions} / s_edge {message.s_edge} invalid"
        )
    return Plan(
        scheme="hgc",
        partitions=int(message.partitions),
        s_edge=int(message.s_edge),
        expected_round_seconds=float(message.expected_round_seconds) or None,
        edges=tuple(
            EdgePlan(
                name=e.name,
                s_worker=int(e.s_worker),
                link_seconds=float(e.link_seconds),
                partitions=int(e.partitions),
                workers=tuple(
                    WorkerPlan(name=w.name, selected=bool(w.selected), partitions=int(w.partitions))
                    for w in e.workers
                ),
            )
            for e in message.edges
        ),
    )


# ---- the gradient fast path ----------------------------------------------------------------------
#
# ComputeGradientResponse carries a multi-megabyte tensor every round. protobuf copies it three
# times on the way out (array -> bytes -> message arena -> wire) and twice on the way in. These two
# functions produce and read the SAME bytes (proto3 wire format, fields in number order, defaults
# omitted: byte-identical to SerializeToString, which the tests check) with one copy out and none
# in: the decoded gradient is a read-only view of the received buffer.

_WIRE_VARINT, _WIRE_FIXED64, _WIRE_LENGTH = 0, 1, 2


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 negatives take 10 bytes, as protobuf writes them
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _length_field(field: int, payload: bytes) -> bytes:
    return _key(field, _WIRE_LENGTH) + _varint(len(payload)) + payload


def encode_gradient_response(
    job_id: str, round_: int, worker: str, compute_seconds: float, gradient: np.ndarray
) -> bytes:
    """Serialized ``ComputeGradientResponse`` with ``gradient`` as its tensor (one copy)."""
    values = np.ascontiguousarray(gradient, dtype=np.float64)
    data = values.data.cast("B")
    shape = b"".join(_varint(int(d)) for d in values.shape)
    tensor_head = _length_field(1, b"float64") + (_length_field(2, shape) if shape else b"")
    if len(data):
        tensor_head += _key(3, _WIRE_LENGTH) + _varint(len(data))
    tensor_size = len(tensor_head) + len(data)
    head = b""
    if job_id:
        head += _length_field(1, job_id.encode())
    if round_:
        head += _key(2, _WIRE_VARINT) + _varint(round_)
    if worker:
        head += _length_field(3, worker.encode())
    head += _key(4, _WIRE_LENGTH) + _varint(tensor_size) + tensor_head
    seconds = np.float64(compute_seconds).astype("<f8").tobytes()
    # proto3 omits a double only when its bits are +0.0 (it keeps -0.0)
    tail = _key(5, _WIRE_FIXED64) + seconds if seconds != bytes(8) else b""
    return b"".join((head, data, tail))


@dataclass(frozen=True)
class GradientResponse:
    job_id: str
    round: int
    worker: str
    compute_seconds: float
    gradient: np.ndarray


def _read_varint(buffer: memoryview, position: int, field: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(buffer) or shift > 63:
            raise InvalidInput(f"{field}: truncated or overlong varint")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _fields(buffer: memoryview, field: str) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) for every field; a length-delimited value is a view."""
    position, fields = 0, []
    value: Any
    while position < len(buffer):
        key, position = _read_varint(buffer, position, field)
        number, wire_type = key >> 3, key & 7
        if wire_type == _WIRE_VARINT:
            value, position = _read_varint(buffer, position, field)
        elif wire_type == _WIRE_FIXED64:
            if position + 8 > len(buffer):
                raise InvalidInput(f"{field}: truncated fixed64 field {number}")
            value, position = buffer[position : position + 8], position + 8
        elif wire_type == _WIRE_LENGTH:
            size, position = _read_varint(buffer, position, field)
            if position + size > len(buffer):
                raise InvalidInput(f"{field}: field {number} runs past the end of the message")
            value, position = buffer[position : position + size], position + size
        elif wire_type == 5:
            if position + 4 > len(buffer):
                raise InvalidInput(f"{field}: truncated fixed32 field {number}")
            value, position = buffer[position : position + 4], position + 4
        else:
            raise InvalidInput(f"{field}: unsupported wire type {wire_type}")
        fields.append((number, wire_type, value))
    return fields


def decode_gradient_response(data: bytes) -> GradientResponse:
    """Parse a serialized ``ComputeGradientResponse`` without copying its tensor; validates like
    :func:`tensor_from_proto` (dtype float64, byte length, finite values)."""
    buffer = memoryview(data)
    job_id = worker = ""
    round_, seconds = 0, 0.0
    tensor: memoryview | None = None
    for number, wire_type, value in _fields(buffer, "gradient response"):
        if number == 1 and wire_type == _WIRE_LENGTH:
            job_id = bytes(value).decode("utf-8", errors="strict")
        elif number == 2 and wire_type == _WIRE_VARINT:
            round_ = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 3 and wire_type == _WIRE_LENGTH:
            worker = bytes(value).decode("utf-8", errors="strict")
        elif number == 4 and wire_type == _WIRE_LENGTH:
            tensor = value
        elif number == 5 and wire_type == _WIRE_FIXED64:
            seconds = float(np.frombuffer(value, dtype="<f8")[0])
    dtype, dims, payload = "", [], memoryview(b"")
    for number, wire_type, value in _fields(
        tensor if tensor is not None else memoryview(b""), "gradient"
    ):
        if number == 1 and wire_type == _WIRE_LENGTH:
            dtype = bytes(value).decode("utf-8", errors="strict")
        elif number == 2 and wire_type == _WIRE_LENGTH:
            position = 0
            while position < len(value):
                dim, position = _read_varint(value, position, "gradient.shape")
                dims.append(dim)
        elif number == 2 and wire_type == _WIRE_VARINT:
            dims.append(value)
        elif number == 3 and wire_type == _WIRE_LENGTH:
            payload = value
    if dtype != "float64":
        raise InvalidInput(f"gradient: expected dtype float64, got {dtype!r}")
    if len(dims) != 1:
        raise InvalidInput(f"gradient: expected a 1-D tensor, got shape {dims}")
    if len(payload) != dims[0] * 8:
        raise InvalidInput(
            f"gradient: shape {dims} of float64 needs {dims[0] * 8} bytes, got {len(payload)}"
        )
    array: np.ndarray = np.frombuffer(payload, dtype="<f8")
    if not _all_finite(array):
        raise InvalidInput("gradient: contains NaN or infinite values")
    return GradientResponse(job_id, int(round_), worker, seconds, array)
