"""The gradient fast path writes exactly protobuf's bytes and reads them back exactly, and refuses
malformed messages with InvalidInput (never a crash, never a wrong gradient)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgecode import wire
from edgecode.errors import InvalidInput
from edgecode.v1 import worker_pb2

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
gradients = arrays(np.float64, st.integers(0, 300), elements=finite)


def _reference(
    job_id: str, round_: int, worker: str, seconds: float, gradient: np.ndarray
) -> bytes:
    message = worker_pb2.ComputeGradientResponse(
        job_id=job_id, round=round_, worker=worker, compute_seconds=seconds
    )
    wire.tensor_to_proto(gradient, out=message.gradient)
    return bytes(message.SerializeToString())


@settings(max_examples=300, deadline=None)
@given(
    job_id=st.text(max_size=20),
    round_=st.integers(-(2**63), 2**63 - 1),
    worker=st.text(max_size=20),
    seconds=finite,
    gradient=gradients,
)
def test_same_bytes_as_protobuf_and_round_trip(job_id, round_, worker, seconds, gradient) -> None:
    encoded = wire.encode_gradient_response(job_id, round_, worker, seconds, gradient)
    assert encoded == _reference(job_id, round_, worker, seconds, gradient)
    decoded = wire.decode_gradient_response(encoded)
    assert (decoded.job_id, decoded.round, decoded.worker) == (job_id, round_, worker)
    assert np.float64(decoded.compute_seconds).tobytes() == np.float64(seconds).tobytes()
    np.testing.assert_array_equal(decoded.gradient, gradient)
    parsed = worker_pb2.ComputeGradientResponse.FromString(encoded)  # protobuf reads our bytes too
    assert parsed.job_id == job_id and parsed.round == round_


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    try:
        decoded = wire.decode_gradient_response(data)
    except InvalidInput:
        return
    except UnicodeDecodeError:
        return  # a non-UTF-8 name: refused as a deserialization failure by gRPC
    assert decoded.gradient.dtype == np.float64 and np.all(np.isfinite(decoded.gradient))


def test_bad_messages_are_refused() -> None:
    good = wire.encode_gradient_response("j", 1, "w", 0.5, np.arange(4.0))
    with pytest.raises(InvalidInput, match=r"runs past the end|truncated"):
        wire.decode_gradient_response(good[:-12])
    bad = worker_pb2.ComputeGradientResponse(job_id="j", round=1)
    wire.tensor_to_proto(np.arange(4, dtype=np.int64), out=bad.gradient)
    with pytest.raises(InvalidInput, match="expected dtype float64"):
        wire.decode_gradient_response(bad.SerializeToString())
    nan = wire.encode_gradient_response("j", 1, "w", 0.5, np.array([1.0, np.nan]))
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        wire.decode_gradient_response(nan)
    short = worker_pb2.ComputeGradientResponse(job_id="j")
    short.gradient.dtype = "float64"
    short.gradient.shape.append(3)
    short.gradient.data = b"\0" * 16
    with pytest.raises(InvalidInput, match="needs 24 bytes, got 16"):
        wire.decode_gradient_response(short.SerializeToString())
    with pytest.raises(InvalidInput, match="expected dtype float64"):
        wire.decode_gradient_response(b"")
