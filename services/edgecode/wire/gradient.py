"""The gradient fast path: a hand-written proto3 codec for ``ComputeGradientResponse``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecode.errors import InvalidInput
from edgecode.wire.tensors import _all_finite

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
    job_id: str,
    round_: int,
    worker: str,
    compute_seconds: float,
    gradient: np.ndarray,
    sequence: int = 0,
) -> bytes:
    """Serialized ``ComputeGradientResponse`` with ``gradient`` as its tensor (one copy);
    ``sequence``: the request's number on a ComputeGradients stream."""
    values = np.ascontiguousarray(gradient, dtype=np.float64)
    data = values.data.cast("B")
    # never empty: ascontiguousarray makes a 0-d gradient 1-D, and a zero dimension is b"\x00"
    shape = b"".join(_varint(int(d)) for d in values.shape)
    tensor_head = _length_field(1, b"float64") + _length_field(2, shape)
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
    if sequence:
        tail += _key(8, _WIRE_VARINT) + _varint(sequence)
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


@dataclass(frozen=True)
class StreamAnswer:
    """The head of an answer on a ComputeGradients stream: the request it answers and, for a
    failed round, the gRPC status code (non-zero) and message."""

    sequence: int
    error_code: int
    error: str


def stream_answer(data: bytes) -> StreamAnswer:
    """The sequence and error fields of a serialized ``ComputeGradientResponse`` (the tensor is
    not read: :func:`decode_gradient_response` reads and validates it)."""
    sequence = code = 0
    error = ""
    for number, wire_type, value in _fields(memoryview(data), "gradient response"):
        if number == 8 and wire_type == _WIRE_VARINT:
            sequence = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 6 and wire_type == _WIRE_VARINT:
            code = value
        elif number == 7 and wire_type == _WIRE_LENGTH:
            error = bytes(value[:1000]).decode("utf-8", errors="replace")
    return StreamAnswer(sequence, code, error)


def decode_gradient_response(data: bytes) -> GradientResponse:
    """Parse a serialized ``ComputeGradientResponse`` without copying its tensor; validates like
    :func:`tensor_from_proto` (dtype float64, 1-D, or 2-D for several vectors per answer, byte
    length, finite values)."""
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
    if len(dims) not in (1, 2):
        raise InvalidInput(f"gradient: expected a 1-D or 2-D tensor, got shape {dims}")
    size = dims[0] if len(dims) == 1 else dims[0] * dims[1]
    if len(payload) != size * 8:
        raise InvalidInput(
            f"gradient: shape {dims} of float64 needs {size * 8} bytes, got {len(payload)}"
        )
    array: np.ndarray = np.frombuffer(payload, dtype="<f8").reshape(dims)
    if not _all_finite(array):
        raise InvalidInput("gradient: contains NaN or infinite values")
    return GradientResponse(job_id, int(round_), worker, seconds, array)
