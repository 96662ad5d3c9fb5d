"""codes.combine.MessageBuffer: its refusals (exact messages), the bounds at their edges, and a
repeated sender replacing its first vector in place (arrival order kept)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecode.codes.combine import MessageBuffer
from edgecode.errors import InvalidInput


@pytest.mark.parametrize(("n_senders", "length"), [(0, 3), (-1, 3), (2, -1), (0, -1)])
def test_a_buffer_without_senders_or_with_a_negative_length_is_refused(
    n_senders: int, length: int
) -> None:
    with pytest.raises(ValueError) as refused:
        MessageBuffer(n_senders, length)
    assert str(refused.value) == (f"need n_senders >= 1 and length >= 0, got {n_senders}, {length}")


def test_empty_vectors_and_a_single_sender_are_allowed() -> None:
    buffer = MessageBuffer(1, 0)
    buffer.add(0, np.zeros(0))
    combined = buffer.combine(np.array([3.0]))
    assert combined.shape == (0,) and combined.dtype == np.float64


@pytest.mark.parametrize("sender", [-1, 3, 4])
def test_a_sender_outside_the_code_is_refused_and_nothing_is_stored(sender: int) -> None:
    buffer = MessageBuffer(3, 2)
    with pytest.raises(InvalidInput) as refused:
        buffer.add(sender, np.ones(2))
    assert str(refused.value) == f"sender must be in [0, 3), got {sender}"
    assert buffer.senders == ()
    buffer.add(2, np.ones(2))  # the last sender is inside
    assert buffer.senders == (2,)


def test_a_vector_of_the_wrong_shape_is_refused() -> None:
    buffer = MessageBuffer(3, 2)
    with pytest.raises(InvalidInput) as refused:
        buffer.add(1, np.ones(3))
    assert str(refused.value) == "vector from sender 1 must have shape (2,), got (3,)"
    assert buffer.senders == ()


def test_a_repeated_sender_replaces_its_vector_and_keeps_its_place() -> None:
    buffer = MessageBuffer(3, 2)
    buffer.add(1, np.array([1.0, 2.0]))
    buffer.add(0, np.array([10.0, 20.0]))
    buffer.add(1, np.array([5.0, 7.0]))
    assert buffer.senders == (1, 0)
    combined = buffer.combine(np.array([1.0, 2.0, 100.0]))
    np.testing.assert_array_equal(combined, [10.0 * 1 + 5.0 * 2, 20.0 * 1 + 7.0 * 2])
    assert combined.dtype == np.float64
    # the buffer holds a copy: changing the caller's array afterwards changes nothing
    vector = np.array([1.0, 1.0])
    buffer.add(2, vector)
    vector[:] = 99.0
    np.testing.assert_array_equal(buffer.combine(np.array([0.0, 0.0, 1.0])), [1.0, 1.0])
