"""The round rules of the exact and baseline schemes (the :class:`~edgecode.codes.combine.Rule`
protocol): exact decoding from the first decodable set (flat and hierarchical codes, both
layers, with cached decoding vectors), all-of-n (uncoded), the fastest n - s rescaled (ignore
stragglers) and the first k results of a matrix code.

Example
-------
>>> import numpy as np
>>> from edgecode.codes.flat import fractional_repetition
>>> code = fractional_repetition(4, 1)
>>> rule = ExactRule(4, code.decode_vector, needed=3)
>>> [rule.offer(i, code.B[i] @ np.eye(4)) for i in (3, 0, 1)]
[False, False, True]
>>> rule.result().value.tolist()
[1.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from edgecode.codes.combine import Decoded, MessageBuffer
from edgecode.errors import InvalidInput, NotDecodable

FloatArray = np.ndarray


class ExactRule:
    """Exact decoding from the first decodable set of senders.

    ``decode_vector(alive)`` returns a vector over all senders (zero outside ``alive``) whose
    combination of the messages is the exact target, or raises :class:`NotDecodable`; codes
    cache it per alive set (``GradientCode.decode_vector`` for flat codes and the edge layer,
    ``HierarchicalCode.master_decode_vector`` for the master of a hierarchical code).
    """

    def __init__(
        self,
        n_senders: int,
        decode_vector: Callable[[Sequence[int]], FloatArray],
        needed: int = 1,
    ) -> None:
        self.n_senders = n_senders
        self._decode_vector = decode_vector
        #: no decoding is attempted below this many arrivals (n - s for a code tolerating s)
        self._needed = max(1, needed)
        self._buffer: MessageBuffer | None = None
        self._weights: FloatArray | None = None

    def offer(self, sender: int, message: FloatArray) -> bool:
        if self._buffer is None:
            self._buffer = MessageBuffer(self.n_senders, int(message.shape[0]))
        self._buffer.add(sender, message)
        if len(self._buffer.senders) < self._needed:
            return False
        try:
            self._weights = self._decode_vector(self._buffer.senders)
        except NotDecodable:
            return False
        return True

    def result(self) -> Decoded:
        if self._buffer is None or self._weights is None:
            raise NotDecodable("the round is not decodable yet")
        weights = self._weights
        used = tuple(i for i in self._buffer.senders if weights[i] != 0)
        return Decoded(self._buffer.combine(weights), used, weights)

    def at_deadline(self) -> Decoded | None:
        return None

    def failure(self) -> str:
        arrived = 0 if self._buffer is None else len(self._buffer.senders)
        return (
            f"{arrived} of {self.n_senders} usable results arrived and they do not determine the "
            f"exact answer (at least {self._needed} needed)"
        )


def all_of(n_senders: int) -> ExactRule:
    """Uncoded: every sender's plain sum is needed; the result is their sum."""
    ones = np.ones(n_senders)

    def decode_vector(alive: Sequence[int]) -> FloatArray:
        if len(set(alive)) < n_senders:
            raise NotDecodable(f"uncoded: {len(set(alive))} of {n_senders} results arrived")
        return ones

    return ExactRule(n_senders, decode_vector, needed=n_senders)


class FastestRule:
    """Ignore stragglers: the first ``n - s`` senders' plain sums, rescaled by ``n / (n - s)``
    (fast, and biased: the baseline that is NOT exact)."""

    def __init__(self, n_senders: int, stragglers: int) -> None:
        if not 0 <= stragglers < n_senders:
            raise InvalidInput(f"stragglers must be in [0, {n_senders - 1}], got {stragglers}")
        self.n_senders = n_senders
        self._needed = n_senders - stragglers
        self._scale = n_senders / self._needed
        self._buffer: MessageBuffer | None = None

    def offer(self, sender: int, message: FloatArray) -> bool:
        if self._buffer is None:
            self._buffer = MessageBuffer(self.n_senders, int(message.shape[0]))
        self._buffer.add(sender, message)
        return len(self._buffer.senders) >= self._needed

    def result(self) -> Decoded:
        if self._buffer is None or len(self._buffer.senders) < self._needed:
            raise NotDecodable("fewer than n - s results arrived")
        weights = np.zeros(self.n_senders)
        weights[list(self._buffer.senders)] = self._scale
        return Decoded(
            self._buffer.combine(weights),
            self._buffer.senders,
            weights,
            exact=False,
            scale=self._scale,
        )

    def at_deadline(self) -> Decoded | None:
        return None

    def failure(self) -> str:
        arrived = 0 if self._buffer is None else len(self._buffer.senders)
        return f"{arrived} of the {self._needed} fastest results needed arrived"


class MatrixCode(Protocol):
    """What :class:`FirstKRule` needs of a k-of-n matrix code (``codes.matrix``)."""

    @property
    def k(self) -> int: ...

    @property
    def n_workers(self) -> int: ...

    def decode(self, results: Mapping[int, Any]) -> list[FloatArray]: ...

    def select_workers(self, available: Iterable[int]) -> tuple[int, ...]: ...


class FirstKRule:
    """First k results of a k-of-n matrix code that give a non-singular decoding matrix.

    Worker i's result is divided by ``scale[i]`` (a product code's B-side coefficient) before
    decoding; :attr:`Decoded.value` holds the k block results stacked along axis 0.
    """

    def __init__(self, code: MatrixCode, scale: FloatArray | None = None) -> None:
        self.n_senders = code.n_workers
        self._code = code
        self._scale = np.ones(code.n_workers) if scale is None else np.asarray(scale)
        self._results: dict[int, FloatArray] = {}
        self._blocks: list[FloatArray] | None = None

    def offer(self, sender: int, message: FloatArray) -> bool:
        self._results[sender] = np.asarray(message) / self._scale[sender]
        if len(self._results) < self._code.k:
            return False
        try:
            self._blocks = self._code.decode(self._results)
        except NotDecodable:
            return False  # a singular subset: wait for one more result
        return True

    def result(self) -> Decoded:
        if self._blocks is None:
            raise NotDecodable("fewer than k usable results")
        used = self._code.select_workers(self._results.keys())
        return Decoded(np.stack(self._blocks), tuple(used))

    def at_deadline(self) -> Decoded | None:
        return None

    def failure(self) -> str:
        return f"{len(self._results)} of the {self._code.k} results needed arrived"
