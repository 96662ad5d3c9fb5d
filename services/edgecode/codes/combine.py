"""Combining received coded vectors: the decoder's hot path.

Messages are written, as they arrive, into consecutive rows of one preallocated C-contiguous
buffer, so decoding is a single ``coefficients @ buffer[:received]`` over a contiguous slice: no
stacking copy, no Python loop over vectors. That is why combining costs the same as a bare numpy
dot of the same arrays (``edgecode bench codes`` measures the two side by side).

Example
-------
>>> import numpy as np
>>> buffer = MessageBuffer(n_senders=4, length=3)
>>> buffer.add(2, np.ones(3)); buffer.add(0, np.full(3, 2.0))
>>> buffer.combine(np.array([0.5, 0.0, 1.0, 0.0])).tolist()
[2.0, 2.0, 2.0]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edgecode.codes._linalg import FloatArray
from edgecode.errors import InvalidInput


class MessageBuffer:
    """Arrival-ordered storage for at most one vector per sender."""

    def __init__(self, n_senders: int, length: int) -> None:
        if n_senders < 1 or length < 0:
            raise ValueError(f"need n_senders >= 1 and length >= 0, got {n_senders}, {length}")
        self._rows = np.empty((n_senders, length))
        self._order: list[int] = []
        self._slot: dict[int, int] = {}

    @property
    def senders(self) -> tuple[int, ...]:
        """The senders whose vectors have arrived, in arrival order."""
        return tuple(self._order)

    def add(self, sender: int, vector: FloatArray) -> None:
        """Store ``sender``'s vector (copied into the buffer). A repeat replaces the first."""
        n_senders, length = self._rows.shape
        if not 0 <= sender < n_senders:
            raise InvalidInput(f"sender must be in [0, {n_senders}), got {sender}")
        if vector.shape != (length,):
            raise InvalidInput(
                f"vector from sender {sender} must have shape ({length},), got {vector.shape}"
            )
        slot = self._slot.get(sender)
        if slot is None:
            slot = len(self._order)
            self._slot[sender] = slot
            self._order.append(sender)
        self._rows[slot] = vector

    def combine(self, decode_vector: FloatArray) -> FloatArray:
        """``sum_i decode_vector[i] * vector_i`` over the arrived senders (one BLAS call)."""
        weights = decode_vector[self._order]
        return np.asarray(weights @ self._rows[: len(self._order)], dtype=np.float64)


@dataclass(frozen=True)
class Decoded:
    """What a round yields once its rule is satisfied (or its deadline passed).

    ``value`` is the combined result (the gradient sum, or stacked block results for a matrix
    code); ``used`` the senders whose messages got a non-zero weight; ``weights`` the decoding
    vector over ALL senders (zero for the unused ones) when the rule is linear. ``exact`` is False
    for approximate rules; ``residual`` is then ``||B_A^T a - target||^2 / K``. ``recovered`` lists
    the partitions a partial-recovery rule recovered (each with coefficient exactly 1), and
    ``scale`` the factor the rule already applied to ``value`` (ignore-stragglers: n / (n - s)).
    """

    value: FloatArray
    used: tuple[int, ...]
    weights: FloatArray | None = None
    exact: bool = True
    residual: float = 0.0
    recovered: tuple[int, ...] | None = None
    scale: float = 1.0
    #: per-partition weight a_A^T B_A (approximate rules: which partitions were used, and how much)
    partition_weights: FloatArray | None = field(default=None, repr=False)
    #: verifying rules: senders whose messages contradicted the others (excluded from ``value``)
    suspects: tuple[int, ...] = ()
    #: verifying rules: True when a spare arrival confirmed the result, False when accepted
    #: unchecked (no spare in time); None for rules that do not verify
    verified: bool | None = None


class Rule(Protocol):
    """Decides when a round is complete and what it yields; one instance per round.

    The round collector (:mod:`edgecode.rounds`) validates every arrival's shape and finiteness
    and then calls :meth:`offer`; it stops at the first ``True``, cancels every call still
    outstanding and asks :meth:`result`. When the deadline passes (or every call ended) first,
    it asks :meth:`at_deadline`: an approximate rule returns the best combination of what arrived,
    an exact one returns None and the round fails with :meth:`failure` as the reason.
    """

    #: number of senders (message slots), indices 0..n_senders-1
    n_senders: int

    def offer(self, sender: int, message: FloatArray) -> bool:
        """Take one validated message; True once the round is complete."""
        ...

    def result(self) -> Decoded:
        """The complete round's result (only after :meth:`offer` returned True)."""
        ...

    def at_deadline(self) -> Decoded | None:
        """The result when the round ends without :meth:`offer` returning True, or None."""
        ...

    def failure(self) -> str:
        """Why the arrivals so far are not enough, in words (names no gRPC detail)."""
        ...
