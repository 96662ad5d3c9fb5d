"""The gradient fast path (edgecode.wire.gradient), fast: protobuf's exact bytes for fixed cases
(defaults omitted, -0.0 kept, negative rounds, 2-D gradients), every refusal with its message,
and fields the decoder must skip or ignore. The Hypothesis round trip over random messages and
arbitrary bytes is in tests/property/test_wire_fast_path.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgecode.errors import InvalidInput
from edgecode.v1 import worker_pb2
from edgecode.wire.gradient import (
    _read_varint,
    _varint,
    decode_gradient_response,
    encode_gradient_response,
)
from edgecode.wire.tensors import tensor_to_proto


def reference(job_id: str, round_: int, worker: str, seconds: float, gradient: np.ndarray) -> bytes:
    """What protobuf itself writes for the same response."""
    message = worker_pb2.ComputeGradientResponse(
        job_id=job_id, round=round_, worker=worker, compute_seconds=seconds
    )
    tensor_to_proto(np.asarray(gradient, dtype=np.float64), out=message.gradient)
    return bytes(message.SerializeToString())


def key(field: int, wire_type: int) -> bytes:
    return bytes([field << 3 | wire_type])


def tensor_bytes(dtype: bytes, shape: bytes | None, data: bytes) -> bytes:
    """A Tensor submessage written by hand: dtype, shape (packed varints), data."""
    out = key(1, 2) + bytes([len(dtype)]) + dtype
    if shape is not None:
        out += key(2, 2) + bytes([len(shape)]) + shape
    return out + key(3, 2) + bytes([len(data)]) + data


def response_with_tensor(tensor: bytes) -> bytes:
    return key(4, 2) + bytes([len(tensor)]) + tensor


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (2**63 - 1, b"\xff" * 8 + b"\x7f"),
        (-1, b"\xff" * 9 + b"\x01"),
        (-(2**63), b"\x80" * 9 + b"\x01"),
    ],
)
def test_varints_are_protobufs_base_128_with_ten_byte_negatives(value: int, encoded: bytes) -> None:
    assert _varint(value) == encoded
    back, end = _read_varint(memoryview(encoded + b"\x05"), 0, "x")
    assert end == len(encoded)
    assert back == (value + (1 << 64) if value < 0 else value)


@pytest.mark.parametrize(
    ("job_id", "round_", "worker", "seconds", "gradient"),
    [
        ("job-1", 7, "w-3", 0.25, np.arange(5.0)),
        ("", 0, "", 0.0, np.arange(3.0)),  # every default omitted
        ("j", 0, "w", -0.0, np.zeros(2)),  # -0.0 is not the default: kept
        ("j", -1, "w", 1.5, np.array([-1e300, 1e-300])),  # a negative round takes ten bytes
        ("j", 2**63 - 1, "w", 2.0, np.arange(6.0).reshape(2, 3)),  # several vectors
        ("j", -(2**63), "w", 3.0, np.empty(0)),  # no data: the bytes field is omitted
        ("jöb", 300, "wörker", 1e9, np.ones((3, 1))),
    ],
)
def test_encoding_is_byte_identical_to_protobuf_and_decodes_back(
    job_id: str, round_: int, worker: str, seconds: float, gradient: np.ndarray
) -> None:
    encoded = encode_gradient_response(job_id, round_, worker, seconds, gradient)
    assert encoded == reference(job_id, round_, worker, seconds, gradient)
    decoded = decode_gradient_response(encoded)
    assert (decoded.job_id, decoded.round, decoded.worker) == (job_id, round_, worker)
    assert np.float64(decoded.compute_seconds).tobytes() == np.float64(seconds).tobytes()
    assert decoded.gradient.dtype == np.float64 and decoded.gradient.shape == gradient.shape
    assert np.array_equal(decoded.gradient, gradient)
    assert type(decoded.round) is int and type(decoded.compute_seconds) is float


def test_float32_and_strided_gradients_are_written_as_contiguous_float64() -> None:
    gradient = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    encoded = encode_gradient_response("j", 1, "w", 0.5, gradient)
    assert encoded == reference("j", 1, "w", 0.5, gradient.astype(np.float64))
    assert np.array_equal(decode_gradient_response(encoded).gradient, gradient)


def test_the_decoded_gradient_is_a_read_only_view_of_the_received_bytes() -> None:
    encoded = encode_gradient_response("j", 1, "w", 0.5, np.arange(4.0))
    gradient = decode_gradient_response(encoded).gradient
    assert not gradient.flags.writeable
    assert np.shares_memory(gradient, np.frombuffer(encoded, dtype=np.uint8))


def test_an_unpacked_shape_and_unknown_fields_of_every_wire_type_are_read() -> None:
    data = np.array([1.5, -2.0]).tobytes()
    tensor = key(1, 2) + b"\x07float64" + key(2, 0) + b"\x02" + key(3, 2) + b"\x10" + data
    unknown = (
        key(9, 0) + b"\x96\x01"  # varint
        + key(10, 1) + bytes(8)  # fixed64
        + key(11, 2) + b"\x02ab"  # length-delimited
        + key(12, 5) + bytes(4)  # fixed32
    )  # fmt: skip
    message = unknown + key(1, 2) + b"\x01j" + response_with_tensor(tensor)
    decoded = decode_gradient_response(message)
    assert decoded.job_id == "j" and decoded.round == 0 and decoded.worker == ""
    assert decoded.compute_seconds == 0.0
    assert np.array_equal(decoded.gradient, [1.5, -2.0])
    # the same unknown fields ending the message exactly (fixed32 last) are fine too
    assert decode_gradient_response(message + key(12, 5) + bytes(4)).job_id == "j"


def test_known_field_numbers_with_another_wire_type_are_ignored() -> None:
    good = encode_gradient_response("job", 4, "wk", 0.5, np.arange(2.0))
    odd = (
        key(1, 0) + b"\x05"  # job_id as a varint
        + key(2, 2) + b"\x01\x09"  # round as bytes
        + key(3, 1) + bytes(8)  # worker as fixed64
        + key(5, 2) + b"\x08" + np.float64(9.0).tobytes()  # seconds as bytes
        + key(4, 0) + b"\x01"  # the tensor as a varint
    )  # fmt: skip
    decoded = decode_gradient_response(good + odd)
    assert (decoded.job_id, decoded.round, decoded.worker) == ("job", 4, "wk")
    assert decoded.compute_seconds == 0.5 and np.array_equal(decoded.gradient, [0.0, 1.0])
    inner = key(1, 0) + b"\x01" + key(3, 0) + b"\x01" + tensor_bytes(b"float64", b"\x01", bytes(8))
    assert np.array_equal(decode_gradient_response(response_with_tensor(inner)).gradient, [0.0])


def test_unknown_fields_inside_the_tensor_are_skipped() -> None:
    data = np.float64(4.0).tobytes()
    tensor = tensor_bytes(b"float64", b"\x01", data) + key(9, 2) + b"\x03abc" + key(10, 0) + b"\x01"
    assert np.array_equal(decode_gradient_response(response_with_tensor(tensor)).gradient, [4.0])


def test_a_zero_dimensional_gradient_is_sent_as_one_value() -> None:
    encoded = encode_gradient_response("j", 1, "w", 0.5, np.float64(3.0))  # type: ignore[arg-type]
    assert encoded == reference("j", 1, "w", 0.5, np.array([3.0]))
    assert np.array_equal(decode_gradient_response(encoded).gradient, [3.0])


def test_the_last_tensor_field_wins_as_in_protobuf() -> None:
    first = tensor_bytes(b"float64", b"\x01", np.float64(1.0).tobytes())
    second = tensor_bytes(b"float64", b"\x01", np.float64(2.0).tobytes())
    decoded = decode_gradient_response(response_with_tensor(first) + response_with_tensor(second))
    assert np.array_equal(decoded.gradient, [2.0])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x80", r"^gradient response: truncated or overlong varint$"),
        (b"\x80" * 10 + b"\x01", r"^gradient response: truncated or overlong varint$"),
        (key(2, 0) + b"\xff", r"^gradient response: truncated or overlong varint$"),
        (key(1, 2) + b"\x80", r"^gradient response: truncated or overlong varint$"),
        (key(5, 1) + bytes(7), r"^gradient response: truncated fixed64 field 5$"),
        (key(12, 5) + bytes(3), r"^gradient response: truncated fixed32 field 12$"),
        (key(1, 2) + b"\x03ab", r"^gradient response: field 1 runs past the end of the message$"),
        (key(1, 3), r"^gradient response: unsupported wire type 3$"),
        (key(1, 4), r"^gradient response: unsupported wire type 4$"),
        (key(1, 6), r"^gradient response: unsupported wire type 6$"),
        (key(1, 7), r"^gradient response: unsupported wire type 7$"),
        (response_with_tensor(key(3, 2) + b"\x09" + bytes(8)), r"^gradient: field 3 runs past"),
        (
            response_with_tensor(key(1, 2) + b"\x07float64" + key(2, 2) + b"\x01\x80"),
            r"^gradient\.shape: truncated or overlong varint$",
        ),
        (b"", r"^gradient: expected dtype float64, got ''$"),
        (
            response_with_tensor(tensor_bytes(b"float32", b"\x01", bytes(4))),
            r"^gradient: expected dtype float64, got 'float32'$",
        ),
        (
            response_with_tensor(tensor_bytes(b"float64", None, bytes(8))),
            r"^gradient: expected a 1-D or 2-D tensor, got shape \[\]$",
        ),
        (
            response_with_tensor(tensor_bytes(b"float64", b"\x01\x01\x01", bytes(8))),
            r"^gradient: expected a 1-D or 2-D tensor, got shape \[1, 1, 1\]$",
        ),
        (
            response_with_tensor(tensor_bytes(b"float64", b"\x03", bytes(16))),
            r"^gradient: shape \[3\] of float64 needs 24 bytes, got 16$",
        ),
        (
            response_with_tensor(tensor_bytes(b"float64", b"\x02\x03", bytes(40))),
            r"^gradient: shape \[2, 3\] of float64 needs 48 bytes, got 40$",
        ),
        (
            response_with_tensor(tensor_bytes(b"float64", b"\x02\x03", bytes(56))),
            r"^gradient: shape \[2, 3\] of float64 needs 48 bytes, got 56$",
        ),
    ],
)
def test_malformed_messages_are_refused_naming_the_problem(data: bytes, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        decode_gradient_response(data)


def test_a_truncated_response_is_refused_at_every_cut() -> None:
    good = encode_gradient_response("job", 3, "w", 0.5, np.arange(3.0))
    seconds_field = 9  # key + 8 bytes, the last field
    for end in range(1, len(good)):
        if end == len(good) - seconds_field:  # a complete message without compute_seconds
            assert decode_gradient_response(good[:end]).compute_seconds == 0.0
            continue
        with pytest.raises(InvalidInput):
            decode_gradient_response(good[:end])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_gradients_are_refused(bad: float) -> None:
    encoded = encode_gradient_response("j", 1, "w", 0.5, np.array([[1.0, bad], [0.0, 0.0]]))
    with pytest.raises(InvalidInput, match=r"^gradient: contains NaN or infinite values$"):
        decode_gradient_response(encoded)


def test_huge_finite_gradients_whose_sum_overflows_are_accepted() -> None:
    gradient = np.array([1.7e308, 1.7e308, -1.0])
    assert np.array_equal(
        decode_gradient_response(encode_gradient_response("j", 1, "w", 0.5, gradient)).gradient,
        gradient,
    )


def test_names_must_be_utf8() -> None:
    bad_name = key(1, 2) + b"\x01\xff"
    with pytest.raises(UnicodeDecodeError):
        decode_gradient_response(bad_name)
    with pytest.raises(UnicodeDecodeError):
        decode_gradient_response(key(3, 2) + b"\x01\xff")
    with pytest.raises(UnicodeDecodeError):
        decode_gradient_response(response_with_tensor(key(1, 2) + b"\x01\xff"))
