r"""The master's round rule for gradient coding with partial recovery.

A partial-recovery scheme (:mod:`edgecode.codes.partial`) places k partitions on n workers;
worker i answers with one response of shape ``[V_i, dim]`` whose row m is the plain sum of the
gradients of the partitions in ``scheme.messages[i][m]``
(:func:`~edgecode.codes.partial_schemes.worker_encoding`). The master's rule
(:class:`PartialRecoveryRule`, one per round) takes the responses in arrival order and ends the
round at the FIRST arrival set A from which at least ``need = ceil(alpha k)`` partitions are
recovered, each with coefficient exactly 1 (pairwise disjoint messages of workers in A, added):
R = the recovered partitions. The value it yields is

* ``"rescale"`` (default): ``(k / |R|) sum_{j in R} g_j``;
* ``"none"``: ``sum_{j in R} g_j``;
* ``"inverse-probability"``: ``sum_{j in R} g_j / pi_j``, pi_j = P(j in R) (Horvitz-Thompson).

Bias. Over a uniformly random arrival order (exchangeable workers), ``"rescale"`` is unbiased,
E[value] = sum_j g_j, exactly when P(j in R | |R|) is the same for every j: true for the cyclic
scheme (by rotation, once ties between optimal arc sets are broken on a rotated copy: pass the
round number as ``rotation``) and for a subset design on one replication size (by permuting
workers), false for a subset design mixing two sizes, whose less replicated partitions are
recovered less often (n=10, s=3, alpha=0.9: weights 0.78 and 1.04, see
:func:`recovery_weights`). ``"inverse-probability"`` is unbiased for every design under
exchangeable workers. None of them is unbiased when some workers are persistently slower.

Speed. Everything that depends only on the scheme is computed once by :class:`PartialDecoder`
and shared by all rounds: the partitions recovered from EVERY arrival set (a table over the 2^n
bit masks when n <= ``MASK_LIMIT``; for subset designs it depends only on |A|, for any n). An
arrival is then a shape check, one table look-up and either adding the newly covered rows into a
running sum (subset designs: every message is one partition and R only grows) or keeping a
reference (cyclic: the best disjoint arcs can change with every arrival, so they are chosen
once, at the end, from a per-mask cache).

Example
-------
>>> import numpy as np
>>> from edgecode.codes.partial import cyclic_partial
>>> from edgecode.codes.partial_schemes import worker_encoding
>>> scheme = cyclic_partial(6, 2, 0.5)
>>> decoder = PartialDecoder(scheme)
>>> G = np.random.default_rng(0).standard_normal((scheme.n_partitions, 3))
>>> rule = decoder.rule(3)
>>> done = [rule.offer(w, worker_encoding(scheme, w).encode(G)) for w in (4, 1, 3)]
>>> result = rule.result()
>>> len(result.recovered) >= decoder.need, bool(np.allclose(
...     result.value, result.scale * G[list(result.recovered)].sum(axis=0)))
(True, True)
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.typing import NDArray

from edgecode.codes.combine import Decoded
from edgecode.codes.partial import (
    CyclicPartial,
    PartialRecoveryScheme,
    SubsetDesign,
    _coverage_batch,
)
from edgecode.errors import Infeasible, InvalidInput

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]

#: Up to this many workers the recovered count of every arrival set is tabulated (2^n entries).
MASK_LIMIT = 16
#: Up to this many workers the decoder chooses, at construction, the messages to add for every
#: arrival set that can end a round (later ones are chosen on first use and cached).
SELECTION_LIMIT = 12
#: How the rule weights the recovered partitions (see the module docstring).
SCALES: tuple[str, ...] = ("rescale", "none", "inverse-probability")


def _is_count(value: object) -> bool:
    """An integer >= 0 (bools excluded)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and int(value) >= 0


def _mask_bits(n: int) -> BoolArray:
    """(2^n, n): row A is the bit mask A as booleans (worker i = bit i)."""
    masks = np.arange(1 << n, dtype=np.int64)
    return np.asarray((masks[:, None] >> np.arange(n)) & 1, dtype=np.bool_)


class PartialDecoder:
    """What the round rule needs from a scheme, computed once and shared by every round.

    ``need = ceil(alpha k)``; ``vectors[i]`` the rows of worker i's response; the recovered
    count of an arrival set A (bit mask) is ``recovered_count(A)``: a look-up in a table over
    all 2^n masks (n <= MASK_LIMIT), in a table over |A| for subset designs (any n), otherwise
    the scheme's decoder. Recovery only grows with A, so the round ends at the first arrival
    whose set reaches ``need``. ``scale`` is one of :data:`SCALES`; for
    ``"inverse-probability"``, ``inclusion`` holds pi_j (exchangeable workers).
    """

    def __init__(self, scheme: PartialRecoveryScheme, scale: str = "rescale") -> None:
        if not isinstance(scheme, PartialRecoveryScheme):
            raise InvalidInput(f"scheme must be a PartialRecoveryScheme, got {type(scheme)!r}")
        if scale not in SCALES:
            raise InvalidInput(f"scale must be one of {SCALES}, got {scale!r}")
        self.scheme = scheme
        self.scale: str = scale
        self.n_workers = scheme.n_workers
        self.n_partitions = scheme.n_partitions
        self.need = scheme.min_recovered
        messages = scheme.messages
        #: per worker, per message, the partitions it sums (as index arrays)
        self.message_parts: tuple[tuple[IntArray, ...], ...] = tuple(
            tuple(np.array(msg, dtype=np.int64) for msg in worker) for worker in messages
        )
        self.vectors: tuple[int, ...] = tuple(len(m) for m in messages)
        #: every message is a single partition: R is the union of the arrived workers' partitions
        self.singletons = all(len(msg) == 1 for worker in messages for msg in worker)
        self.partition_of: tuple[IntArray, ...] = tuple(
            np.array([msg[0] for msg in worker] if self.singletons else [], dtype=np.int64)
            for worker in messages
        )
        #: recovered count by number of arrivals (subset designs), else None
        self.by_arrivals: IntArray | None = None
        #: recovered count of every arrival mask (n <= MASK_LIMIT), else None
        self.table: IntArray | None = None
        if isinstance(scheme, SubsetDesign):
            n = self.n_workers
            pairs = list(zip(scheme.sizes, scheme.multiplicities, strict=True))
            lost = [sum(a * math.comb(n - m, r) for r, a in pairs) for m in range(n + 1)]
            self.by_arrivals = np.array([self.n_partitions - x for x in lost], dtype=np.int64)
        elif self.n_workers <= MASK_LIMIT:
            self.table = self._tabulate()
        self._selections: dict[int, tuple[tuple[int, int], ...]] = {}
        if not self.singletons and self.n_workers <= SELECTION_LIMIT:
            for mask in np.flatnonzero(stop_set_probabilities(self)).tolist():
                self.selection(mask)
        self.weights: FloatArray | None = None
        if scale == "inverse-probability":
            self.weights = 1.0 / inclusion_probabilities(self)
            for worker in messages:
                for msg in worker:
                    if np.ptp(self.weights[list(msg)]) > 0:
                        raise InvalidInput(
                            "inverse-probability weights differ inside one message of "
                            f"{type(scheme).__name__}: use scale='rescale'"
                        )

    def response_shape(self, length: int) -> tuple[int | None, int]:
        """The shape of every worker's response, ``(V, length)``; V is None when workers send
        different numbers of vectors (then see ``vectors[i]``). For the round collector."""
        counts = set(self.vectors)
        return (counts.pop() if len(counts) == 1 else None), int(length)

    def _tabulate(self) -> IntArray:
        alive = _mask_bits(self.n_workers)
        scheme = self.scheme
        if isinstance(scheme, CyclicPartial):
            return np.asarray(_coverage_batch(self.n_workers, list(scheme.arcs), alive), np.int64)
        return np.array([int(scheme._coverage(row).sum()) for row in alive], dtype=np.int64)

    # -- recovery as a function of the arrival set ------------------------------------------

    def recovered_count(self, mask: int) -> int:
        """Partitions recovered from the workers in bit mask ``mask``."""
        if self.by_arrivals is not None:
            return int(self.by_arrivals[mask.bit_count()])
        if self.table is not None:
            return int(self.table[mask])
        return int(self.scheme._coverage(self._alive(mask)).sum())

    def counts(self) -> IntArray:
        """(2^n,) the recovered count of every arrival set (n <= MASK_LIMIT)."""
        n = self.n_workers
        if n > MASK_LIMIT:
            raise Infeasible(f"tabulating 2^{n} arrival sets: n must be <= {MASK_LIMIT}")
        if self.by_arrivals is not None:
            return np.asarray(self.by_arrivals[_mask_bits(n).sum(axis=1)], dtype=np.int64)
        assert self.table is not None
        return self.table

    def sufficient_masks(self) -> BoolArray:
        """(2^n,) booleans: the arrival sets from which ``need`` partitions are recovered."""
        return np.asarray(self.counts() >= self.need, dtype=np.bool_)

    @property
    def count_only(self) -> bool:
        """Whether recovery depends only on the number of arrivals (see
        :attr:`arrivals_needed`)."""
        return self.by_arrivals is not None

    @property
    def arrivals_needed(self) -> int | None:
        """For count-only schemes, the number of arrivals that ends every round."""
        if self.by_arrivals is None:
            return None
        return int(np.argmax(self.by_arrivals >= self.need))

    def selection(self, mask: int, rotation: int = 0) -> tuple[tuple[int, int], ...]:
        """The (worker, message) pairs the decoder adds for arrival set ``mask``.

        For a cyclic scheme the disjoint arcs are chosen on the set rotated by ``-rotation``
        and rotated back, so that averaging over rotations makes the choice rotation-equivariant
        (ties between optimal arc sets are otherwise always broken the same way).
        """
        n = self.n_workers
        shift = rotation % n if isinstance(self.scheme, CyclicPartial) else 0
        if shift:
            mask = ((mask >> shift) | (mask << (n - shift))) & ((1 << n) - 1)
        chosen = self._selections.get(mask)
        if chosen is None:
            workers, indices = self.scheme._select(self._alive(mask))
            chosen = tuple(zip(workers.tolist(), indices.tolist(), strict=True))
            if len(self._selections) < 1 << MASK_LIMIT:
                self._selections[mask] = chosen
        if shift:
            chosen = tuple(((w + shift) % n, m) for w, m in chosen)
        return chosen

    def _alive(self, mask: int) -> BoolArray:
        return np.asarray((mask >> np.arange(self.n_workers)) & 1, dtype=np.bool_)

    def rule(self, length: int, rotation: int = 0) -> PartialRecoveryRule:
        """A fresh :class:`PartialRecoveryRule` for one round of vectors of ``length``.

        ``rotation``: pass the round number (or a uniform draw in [0, n)) so that cyclic schemes
        recover every partition equally often (see :meth:`selection`).
        """
        return PartialRecoveryRule(self, length, rotation)


class PartialRecoveryRule:
    """The master's rule for one partial-recovery round (the ``codes.combine.Rule`` protocol).

    :meth:`offer` takes worker ``sender``'s response, shape ``(vectors[sender], length)``, and
    returns True at the first arrival set from which ``need = ceil(alpha k)`` partitions are
    recovered; :meth:`result` then gives ``Decoded(value = sum_{j in R} w_j g_j, recovered = R,
    partition_weights = w (zero outside R), scale, used = the workers whose messages were added,
    exact = |R| == k, residual = ||w - 1||^2 / k)`` with ``w_j = scale = k / |R|`` ("rescale"),
    1 ("none") or 1 / pi_j ("inverse-probability"; ``scale`` is then their mean over R).

    The caller (the round collector) has checked finiteness; the rule checks the shape and keeps
    a reference to each message until :meth:`result` (do not modify a message once offered).
    A sender answering twice raises :class:`InvalidInput`; offers after completion are ignored.
    """

    def __init__(self, decoder: PartialDecoder, length: int, rotation: int = 0) -> None:
        if not _is_count(length):
            raise InvalidInput(f"length must be an integer >= 0, got {length!r}")
        self.decoder: PartialDecoder = decoder
        self.n_senders: int = decoder.n_workers
        self.length: int = int(length)
        self._rotation: int = int(rotation)
        self._mask: int = 0
        self._arrived: list[int] = []
        self._count: int = 0
        self._complete: bool = False
        self._stored: dict[int, FloatArray] = {}
        # singleton designs: running sum of the newly covered rows (sized lazily otherwise)
        size = decoder.n_partitions if decoder.singletons else 0
        self._covered: BoolArray = np.zeros(size, dtype=np.bool_)
        self._sum: FloatArray = np.zeros(self.length if decoder.singletons else 0)
        self._contributors: list[int] = []

    @property
    def arrived(self) -> tuple[int, ...]:
        """The senders offered so far, in arrival order."""
        return tuple(self._arrived)

    @property
    def recovered_count(self) -> int:
        """Partitions recoverable from the arrivals so far."""
        return self._count

    def message_shape(self, sender: int) -> tuple[int, int]:
        """The shape ``(V, length)`` of ``sender``'s response."""
        return self.decoder.vectors[sender], self.length

    def offer(self, sender: int, message: FloatArray) -> bool:
        """Take ``sender``'s response; True once ``need`` partitions are recovered."""
        if self._complete:
            return True
        decoder = self.decoder
        if not 0 <= sender < self.n_senders:
            raise InvalidInput(f"sender must be in [0, {self.n_senders}), got {sender}")
        bit = 1 << sender
        if self._mask & bit:
            raise InvalidInput(f"sender {sender} already answered this round")
        expected = (decoder.vectors[sender], self.length)
        if message.shape != expected:
            raise InvalidInput(
                f"response of worker {sender} must have shape {expected} (its {expected[0]} "
                f"message(s) of length {self.length}), got {message.shape}"
            )
        self._mask |= bit
        self._arrived.append(sender)
        if decoder.singletons:
            self._add_new_rows(sender, message)
        else:
            self._stored[sender] = message
        self._count = decoder.recovered_count(self._mask)
        self._complete = self._count >= decoder.need
        return self._complete

    def _add_new_rows(self, sender: int, message: FloatArray) -> None:
        parts = self.decoder.partition_of[sender]
        new = ~self._covered[parts]
        if not new.any():
            return
        self._covered[parts[new]] = True
        weights = self.decoder.weights
        if weights is None:
            self._sum += message[new].sum(axis=0)
        else:
            self._sum += weights[parts[new]] @ message[new]
        self._contributors.append(sender)

    def result(self) -> Decoded:
        """The round's result (only after :meth:`offer` returned True)."""
        if not self._complete:
            raise InvalidInput(f"the round is not complete: {self.failure()}")
        decoder = self.decoder
        k = decoder.n_partitions
        if decoder.singletons:
            covered = self._covered
            value = self._sum.copy()
            used = tuple(sorted(self._contributors))
        else:
            value, covered, used = self._combine_selection()
        count = int(covered.sum())
        if decoder.weights is not None:
            weights = np.where(covered, decoder.weights, 0.0)
            scale = float(weights.sum()) / count
        else:
            scale = k / count if decoder.scale == "rescale" else 1.0
            if scale != 1.0:
                value *= scale
            weights = np.where(covered, scale, 0.0)
        return Decoded(
            value=value,
            used=used,
            exact=count == k,
            residual=float(np.sum((weights - 1.0) ** 2)) / k,
            recovered=tuple(np.flatnonzero(covered).tolist()),
            scale=scale,
            partition_weights=weights,
        )

    def _combine_selection(self) -> tuple[FloatArray, BoolArray, tuple[int, ...]]:
        decoder = self.decoder
        chosen = decoder.selection(self._mask, self._rotation)
        value = np.zeros(self.length)
        covered = np.zeros(decoder.n_partitions, dtype=np.bool_)
        for w, m in chosen:
            parts = decoder.message_parts[w][m]
            if decoder.weights is None:
                value += self._stored[w][m]
            else:  # equal weights inside a message (checked by the decoder)
                value += decoder.weights[parts[0]] * self._stored[w][m]
            covered[parts] = True
        return value, covered, tuple(sorted({w for w, _ in chosen}))

    def at_deadline(self) -> Decoded | None:
        """A partial round that has not reached ``need`` fails: None (unless complete)."""
        return self.result() if self._complete else None

    def failure(self) -> str:
        """Why the arrivals so far are not enough."""
        d = self.decoder
        return (
            f"recovered {self._count} of the ceil(alpha k) = {d.need} partitions needed "
            f"(alpha={d.scheme.alpha}, k={d.n_partitions}) from {len(self._arrived)} of "
            f"{d.n_workers} workers (arrived: {sorted(self._arrived)})"
        )


# --------------------------------------------------------------------------------------------
# which partitions a round recovers, over a uniformly random arrival order
# --------------------------------------------------------------------------------------------


def stop_set_probabilities(decoder: PartialDecoder) -> FloatArray:
    """(2^n,) P(the round stops with arrival set A), for a uniformly random arrival order.

    The round stops at A (|A| = m) after the arrival of x in A iff A is sufficient and
    A - {x} is not (recovery grows with the set), which has probability (m-1)! (n-m)! / n! for
    each such x. Needs n <= MASK_LIMIT.
    """
    n = decoder.n_workers
    sufficient = decoder.sufficient_masks()
    masks = np.arange(1 << n, dtype=np.int64)
    bits = _mask_bits(n)
    pivots = np.zeros(masks.size, dtype=np.int64)
    for i in range(n):
        pivots += bits[:, i] & sufficient & ~sufficient[masks ^ (1 << i)]
    sizes = bits.sum(axis=1)
    per_order = np.array(
        [math.factorial(max(m - 1, 0)) * math.factorial(n - m) for m in range(n + 1)], float
    ) / math.factorial(n)
    return np.asarray(pivots * per_order[sizes], dtype=np.float64)


def inclusion_probabilities(decoder: PartialDecoder) -> FloatArray:
    """pi_j = P(partition j is recovered), shape (k,), over a uniformly random arrival order
    (and, for cyclic schemes, a uniformly random ``rotation``).

    Subset designs (any n): every round ends with a uniformly random m-set, m =
    ``arrivals_needed``, so pi_j = 1 - C(n - r_j, m) / C(n, m) for a partition on r_j workers.
    Cyclic schemes: by rotation pi_j = E|R| / k. Otherwise: enumeration (n <= MASK_LIMIT).
    """
    n, k = decoder.n_workers, decoder.n_partitions
    scheme = decoder.scheme
    if isinstance(scheme, SubsetDesign):
        m = decoder.arrivals_needed
        assert m is not None
        replication = scheme.membership.sum(axis=1)
        lost = np.array([math.comb(n - int(r), m) for r in replication], dtype=np.float64)
        return np.asarray(1.0 - lost / math.comb(n, m), dtype=np.float64)
    stops = stop_set_probabilities(decoder)
    if isinstance(scheme, CyclicPartial):
        return np.full(k, float(stops @ decoder.counts()) / k)
    out = np.zeros(k)
    for mask in np.flatnonzero(stops).tolist():
        out[np.flatnonzero(scheme._coverage(decoder._alive(mask)))] += stops[mask]
    return out


def recovery_weights(decoder: PartialDecoder) -> FloatArray:
    """E[w_j] (the weight of g_j in the rule's value, zero when j is not recovered), shape (k,),
    over a uniformly random arrival order and, for cyclic schemes, a uniformly random rotation.

    The value is unbiased (E[value] = sum_j g_j for every gradient) iff every entry is 1. This
    replays the rule's own selection on every stopping set (n <= MASK_LIMIT), independently of
    :func:`inclusion_probabilities`.
    """
    k = decoder.n_partitions
    stops = stop_set_probabilities(decoder)
    rotations = decoder.n_workers if isinstance(decoder.scheme, CyclicPartial) else 1
    out = np.zeros(k)
    for mask in np.flatnonzero(stops).tolist():
        for t in range(rotations):
            covered = np.zeros(k, dtype=np.bool_)
            for w, msg in decoder.selection(mask, t):
                covered[decoder.message_parts[w][msg]] = True
            if decoder.weights is not None:
                weights = np.where(covered, decoder.weights, 0.0)
            else:
                scale = k / int(covered.sum()) if decoder.scale == "rescale" else 1.0
                weights = np.where(covered, scale, 0.0)
            out += stops[mask] * weights / rotations
    return out
