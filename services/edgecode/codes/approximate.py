"""Approximate gradient coding: the optimal least-squares combination of whatever arrived.

Model (Johri, Yardi, Bodas 2021; papers.md section 2). Worker i sends ``m_i = B[i] @ g``, with
``B`` (n, K) the code's coefficient matrix and ``g`` the K partial gradients stacked (K, d). From
the messages of an alive set A the master forms ``sum_{i in A} a_i m_i = w @ g`` with the
*partition weights* ``w = B_A^T a`` (K,). The optimal decoding vector is the minimum-norm minimiser

    a*(A) = argmin_a || B_A^T a - t ||_2            (t = targets, all ones for a gradient code)

computed by a truncated SVD (``numpy.linalg.lstsq`` with a relative singular-value cut-off
:data:`RCOND`, so a nearly dependent set of rows cannot blow the weights up). The round reports the
*decoding residual* ``rho(A) = ||B_A^T a* - t||^2 / K`` (``rho = ||t||^2 / K`` when nothing
arrived, 1 for all-ones targets) and ``w`` itself: partition j *had weight* in the round when
``|w_j| > USAGE_THRESHOLD`` (see :func:`used_partitions`).

Facts the tests check on every alive set of small codes:

- when A is decodable (t lies in the row space of B_A) the residual is 0 and ``a*`` is the
  minimum-norm exact decoding vector, the one :meth:`GradientCode.decode_vector` returns;
- otherwise ``a*`` attains the least-squares optimum of a direct solve;
- fractional repetition: ``w_j = 1`` for the partitions of every group with an alive worker and
  0 for the others, so ``rho`` is the fraction of partitions whose whole group straggled.

Decoding vectors are cached per alive set (bounded LRU), so a decoder shared across rounds pays
one SVD per distinct set.

Example
-------
>>> import numpy as np
>>> from edgecode.codes.flat import fractional_repetition
>>> decoder = LeastSquaresDecoder(fractional_repetition(6, 1).B)
>>> d = decoder.decode([0, 1, 2])            # group 2 (workers 4, 5) straggled
>>> d.partition_weights.round(12).tolist(), round(d.residual, 12), d.exact
([1.0, 1.0, 1.0, 1.0, 0.0, 0.0], 0.333333333333, False)
>>> rule = decoder.rule(length=2, wait=3)
>>> [rule.offer(i, np.array([2.0, float(i)])) for i in (4, 0, 1)]
[False, False, True]
>>> rule.result().value.round(12).tolist()     # 1 * m_4 + 0.5 * m_0 + 0.5 * m_1
[4.0, 4.5]
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edgecode.codes._linalg import DECODE_TOLERANCE, FloatArray, normalize_alive
from edgecode.codes.combine import Decoded, MessageBuffer

BoolArray = NDArray[np.bool_]

#: Singular values below RCOND * (largest) are treated as zero by the least-squares solve.
RCOND = 1e-10
#: A partition "had weight" in a round when its weight exceeds this (targets are O(1)).
USAGE_THRESHOLD = 1e-6
#: Decoding vectors kept per decoder (least recently used ones are dropped first).
CACHE_SIZE = 4096


@dataclass(frozen=True)
class LeastSquaresDecoding:
    """The optimal decoding of one alive set.

    ``weights`` (n,) is ``a*``, zero outside ``alive``; ``partition_weights`` (K,) is
    ``B_A^T a*``; ``residual`` is ``||B_A^T a* - t||^2 / K``; ``exact`` says the set is decodable.
    """

    alive: tuple[int, ...]
    weights: FloatArray
    partition_weights: FloatArray
    residual: float
    exact: bool

    @property
    def used(self) -> tuple[int, ...]:
        """The alive senders that got a non-zero weight."""
        scale = float(np.abs(self.weights).max(initial=0.0))
        return tuple(int(i) for i in np.flatnonzero(np.abs(self.weights) > 1e-12 * scale))


def used_partitions(partition_weights: FloatArray, threshold: float = USAGE_THRESHOLD) -> BoolArray:
    """Which partitions had weight: ``|w_j| > threshold`` (shape of ``partition_weights``)."""
    return np.asarray(np.abs(partition_weights) > threshold, dtype=np.bool_)


class LeastSquaresDecoder:
    """Optimal least-squares decoding vectors of a code ``B`` (n, K), cached per alive set.

    ``targets`` (K,) defaults to all ones. Raises ``ValueError`` on a non-finite or non-2-D
    ``B`` or mismatched ``targets``.
    """

    def __init__(
        self,
        B: FloatArray,
        targets: FloatArray | None = None,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        matrix = np.array(B, dtype=np.float64)
        if matrix.ndim != 2 or 0 in matrix.shape or not np.all(np.isfinite(matrix)):
            raise ValueError(
                f"B must be a finite non-empty (n, K) matrix, got shape {matrix.shape}"
            )
        goal = np.ones(matrix.shape[1]) if targets is None else np.array(targets, dtype=float)
        if goal.shape != (matrix.shape[1],) or not np.all(np.isfinite(goal)):
            raise ValueError(f"targets must be {matrix.shape[1]} finite numbers, got {goal.shape}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        matrix.setflags(write=False)
        goal.setflags(write=False)
        self.B = matrix
        self.targets = goal
        self._cache: OrderedDict[tuple[int, ...], LeastSquaresDecoding] = OrderedDict()
        self._cache_size = cache_size
        self._support = [np.flatnonzero(row) for row in matrix]

    @property
    def n_senders(self) -> int:
        return int(self.B.shape[0])

    @property
    def n_partitions(self) -> int:
        return int(self.B.shape[1])

    def decode(self, alive: Iterable[int]) -> LeastSquaresDecoding:
        """The optimal decoding of the senders in ``alive`` (any subset, possibly empty)."""
        key = normalize_alive(alive, self.n_senders)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        decoding = self._solve(key)
        if self._cache_size:
            self._cache[key] = decoding
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return decoding

    def _solve(self, alive: tuple[int, ...]) -> LeastSquaresDecoding:
        weights = np.zeros(self.n_senders)
        if alive:
            rows = self.B[list(alive)]
            solution, *_ = np.linalg.lstsq(rows.T, self.targets, rcond=RCOND)
            weights[list(alive)] = solution
            partition_weights = np.asarray(solution @ rows, dtype=np.float64)
        else:
            partition_weights = np.zeros(self.n_partitions)
        error = partition_weights - self.targets
        residual = float(error @ error) / self.n_partitions
        # The same acceptance test as the exact decoder (codes._linalg.solve_combination).
        scale = float(np.linalg.norm(self.targets)) or 1.0
        allowed = DECODE_TOLERANCE * scale * max(1.0, float(np.linalg.norm(weights)))
        exact = bool(alive) and float(np.linalg.norm(error)) <= allowed * max(
            1.0, float(np.abs(self.B[list(alive)]).max(initial=1.0))
        )
        for array in (weights, partition_weights):
            array.setflags(write=False)
        return LeastSquaresDecoding(alive, weights, partition_weights, residual, exact)

    def covers(self, alive: Iterable[int]) -> bool:
        """Whether every partition with a non-zero target has a holder in ``alive`` (a cheap
        necessary condition for decodability)."""
        held = np.zeros(self.n_partitions, dtype=bool)
        for i in normalize_alive(alive, self.n_senders):
            held[self._support[i]] = True
        return bool(np.all(held | (self.targets == 0.0)))

    def rule(
        self, length: int, wait: int | None = None, until_exact: bool = False
    ) -> LeastSquaresRule:
        """A round rule over this decoder (see :class:`LeastSquaresRule`)."""
        return LeastSquaresRule(self, length, wait=wait, until_exact=until_exact)


class LeastSquaresRule:
    """Round rule of approximate gradient coding: end at ``wait`` arrivals or at the deadline.

    Satisfies :class:`edgecode.codes.combine.Rule`. :meth:`offer` returns True once ``wait``
    senders have answered (``wait=None``: never before every sender has; then the deadline ends
    the round), or, with ``until_exact``, as soon as the arrived set is decodable. The result is
    the optimal least-squares combination of what arrived, with ``exact``, ``residual``,
    ``weights``, ``used`` and ``partition_weights`` filled in; :meth:`at_deadline` returns it
    too, or None when nothing arrived. One rule per round; share the decoder across rounds.
    """

    def __init__(
        self,
        decoder: LeastSquaresDecoder,
        length: int,
        wait: int | None = None,
        until_exact: bool = False,
    ) -> None:
        n = decoder.n_senders
        if wait is not None and not (isinstance(wait, int | np.integer) and 1 <= wait <= n):
            raise ValueError(f"wait must be None or an integer in [1, {n}], got {wait!r}")
        self.n_senders = n
        self.decoder = decoder
        self.wait = n if wait is None else int(wait)
        self.until_exact = until_exact
        self._buffer = MessageBuffer(n, length)
        self._uncovered = int(np.count_nonzero(decoder.targets))
        self._holders_heard = np.zeros(decoder.n_partitions, dtype=np.int64)
        self._done = False

    def offer(self, sender: int, message: FloatArray) -> bool:
        """Store ``sender``'s message; True once the round is complete."""
        first = sender not in self._buffer.senders
        self._buffer.add(sender, message)
        if first and self.until_exact:
            support = self.decoder._support[sender]
            newly = support[
                (self._holders_heard[support] == 0) & (self.decoder.targets[support] != 0)
            ]
            self._uncovered -= int(newly.size)
            self._holders_heard[support] += 1
        arrived = len(self._buffer.senders)
        if arrived >= self.wait:
            self._done = True
        elif self.until_exact and first and self._uncovered == 0:
            self._done = self.decoder.decode(self._buffer.senders).exact
        return self._done

    def result(self) -> Decoded:
        """The least-squares combination of every message that arrived."""
        decoding = self.decoder.decode(self._buffer.senders)
        return Decoded(
            value=self._buffer.combine(np.asarray(decoding.weights)),
            used=decoding.used,
            weights=decoding.weights,
            exact=decoding.exact,
            residual=decoding.residual,
            partition_weights=decoding.partition_weights,
        )

    def at_deadline(self) -> Decoded | None:
        """The best combination of what arrived, or None when nothing did."""
        return self.result() if self._buffer.senders else None

    def failure(self) -> str:
        arrived = len(self._buffer.senders)
        if arrived == 0:
            return f"no message arrived from any of the {self.n_senders} senders"
        return f"{arrived} of {self.n_senders} senders answered; the rule waits for {self.wait}"
