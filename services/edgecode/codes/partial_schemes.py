r"""Partial-recovery designs at the public edge: validated construction, the candidates the
``auto`` choice compares, and what each worker computes and sends.

* :func:`partial_scheme` builds one certified scheme (:mod:`edgecode.codes.partial`) and turns
  every impossible request into :class:`InvalidPartialParameters` naming the violated bound;
* :func:`partial_designs` lists the candidates for (n, s, alpha): the subset design (meets the
  LP bound on the computation load, one vector per held partition) and the cyclic scheme for
  every useful number of vectors V (fewer vectors, more load);
* :func:`worker_encoding` is worker i's part: the partitions to place on it and the 0/1 matrix
  whose rows are its V messages, each a plain sum of partition gradients; its response is
  ``encode(gradients)`` of shape ``[V, dim]``.

Example
-------
>>> scheme = partial_scheme(10, 3, 0.8)
>>> design_label(scheme), scheme.computation_load, scheme.communication_load
('cyclic d=2 V=1', 0.2, 1)
>>> worker_encoding(scheme, 9).partitions
(0, 9)
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from numpy.typing import NDArray

from edgecode.codes.partial import (
    MAX_PARTITIONS,
    CyclicPartial,
    PartialRecoveryScheme,
    SubsetDesign,
    cyclic_formula_d,
    cyclic_partial,
    partial_load_optimum,
    subset_design,
)
from edgecode.errors import Infeasible, InvalidInput

FloatArray = NDArray[np.float64]

DESIGNS: tuple[str, ...] = ("subset", "cyclic")


class InvalidPartialParameters(InvalidInput, Infeasible):
    """(n, s, alpha, V, d) that no partial scheme of the requested kind satisfies.

    An :class:`InvalidInput` first (so a service reports INVALID_ARGUMENT) and an
    :class:`Infeasible`; the message names the bound that is violated.
    """


# --------------------------------------------------------------------------------------------
# parameters and designs (public edge)
# --------------------------------------------------------------------------------------------


def check_alpha(alpha: object) -> Fraction:
    """``alpha`` as an exact fraction in (0, 1]; :class:`InvalidInput` naming the bound otherwise.

    Floats are read through their shortest decimal form (0.9 is 9/10).

    >>> check_alpha(0.9)
    Fraction(9, 10)
    """
    bad = isinstance(alpha, bool) or not isinstance(alpha, numbers.Real)
    if not bad:
        value = float(alpha)  # type: ignore[arg-type]
        bad = not 0.0 < value <= 1.0  # also False for nan and +-inf
    if bad:
        raise InvalidInput(
            f"alpha must be a fraction of the partitions in (0, 1] (0 < alpha <= 1), got {alpha!r}"
        )
    if isinstance(alpha, numbers.Rational):
        return Fraction(int(alpha.numerator), int(alpha.denominator))
    return Fraction(repr(float(alpha)))  # type: ignore[arg-type]


def _check_count(value: object, name: str, low: int, high: int | None, why: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInput(f"{name} must be an integer, got {value!r}")
    number = int(value)
    if number < low or (high is not None and number > high):
        bound = f"{low} <= {name}" + (f" <= {high}" if high is not None else "")
        raise InvalidPartialParameters(f"{name}={number} violates {bound} ({why})")
    return number


def partial_scheme(
    n: int,
    s: int,
    alpha: float | Fraction,
    design: str = "cyclic",
    *,
    vectors: int | None = None,
    d: int | None = None,
    max_partitions: int = MAX_PARTITIONS,
) -> PartialRecoveryScheme:
    """Build and certify one partial-recovery scheme, validating every argument at this edge.

    ``design="subset"``: :func:`~edgecode.codes.partial.subset_design` (meets the LP bound; one
    vector per held partition, so ``vectors``, if given, must be at least that many).
    ``design="cyclic"``: :func:`~edgecode.codes.partial.cyclic_partial` with ``vectors``
    (default 1) vectors per worker and the least certified ``d`` unless ``d`` is given.

    Raises :class:`InvalidInput` for a bad alpha and :class:`InvalidPartialParameters` (an
    InvalidInput and an Infeasible) naming the violated bound: s < n, the LP bound on the
    computation load, the cyclic lower bound d >= s + 1 - floor(n (1 - alpha)), the worst-case
    coverage ceil(alpha n), the partition cap, or the vectors a subset design needs.

    >>> partial_scheme(10, 3, 0.8).d
    2
    >>> try:
    ...     partial_scheme(10, 3, 0.9, "cyclic", d=2)
    ... except InvalidPartialParameters as exc:
    ...     print(exc)
    d=2 is below the cyclic lower bound s + 1 - floor(n (1 - alpha)) = 3 (n=10, s=3, alpha=9/10)
    """
    exact_alpha = check_alpha(alpha)
    n = _check_count(n, "n", 1, None, "at least one worker")
    s = _check_count(s, "s", 0, n - 1, "at least one worker must answer")
    if design not in DESIGNS:
        raise InvalidInput(f"design must be one of {DESIGNS}, got {design!r}")
    where = f"n={n}, s={s}, alpha={exact_alpha}"
    try:
        if design == "subset":
            return _subset(n, s, exact_alpha, vectors, max_partitions, where)
        return _cyclic(n, s, exact_alpha, vectors, d, where)
    except Infeasible as exc:
        if isinstance(exc, InvalidPartialParameters):
            raise
        raise InvalidPartialParameters(str(exc)) from exc


def _subset(
    n: int, s: int, alpha: Fraction, vectors: int | None, cap: int, where: str
) -> SubsetDesign:
    cap = _check_count(cap, "max_partitions", 1, None, "a cap on k")
    scheme = subset_design(n, s, alpha, max_partitions=cap)
    if vectors is not None:
        held = scheme.partitions_per_worker
        _check_count(
            vectors,
            "vectors",
            held,
            None,
            f"the subset design for {where} sends one "
            f"vector per held partition and a worker holds {held}",
        )
    return scheme


def _cyclic(
    n: int, s: int, alpha: Fraction, vectors: int | None, d: int | None, where: str
) -> CyclicPartial:
    count = 1 if vectors is None else _check_count(vectors, "vectors", 1, None, "one at least")
    if d is not None:
        d = _check_count(d, "d", 1, n, "partitions held out of n")
        # the LP bound holds for every scheme; the cyclic bound (above it) for cyclic ones
        bound = partial_load_optimum(n, s, alpha).load
        if Fraction(d, n) < bound:
            raise InvalidPartialParameters(
                f"load d/n = {d}/{n} is below the LP bound L*(n, s, alpha) = {float(bound):.6g} "
                f"({where})"
            )
        least = cyclic_formula_d(n, s, alpha)
        if d < least:
            raise InvalidPartialParameters(
                f"d={d} is below the cyclic lower bound s + 1 - floor(n (1 - alpha)) = {least} "
                f"({where})"
            )
    return cyclic_partial(n, s, alpha, count, d=d)


def partial_designs(
    n: int,
    s: int,
    alpha: float | Fraction,
    *,
    max_partitions: int = MAX_PARTITIONS,
    max_vectors: int | None = None,
) -> list[PartialRecoveryScheme]:
    """The candidate designs for (n, s, alpha): the subset design (when it fits the caps) and the
    cyclic scheme for every distinct V = 1, 2, ... (more vectors stop helping once V = d).

    Each is certified for every straggler set of size s. ``max_vectors`` (>= 1) drops designs
    whose workers send more vectors (the cyclic scheme with V = 1 always stays).

    >>> [design_label(c) for c in partial_designs(10, 3, 0.8)]
    ['subset r=1x6,2x1 k=105', 'cyclic d=2 V=1', 'cyclic d=2 V=2']
    """
    exact_alpha = check_alpha(alpha)
    out: list[PartialRecoveryScheme] = []
    try:
        subset = partial_scheme(n, s, exact_alpha, "subset", max_partitions=max_partitions)
        out.append(subset)
    except InvalidPartialParameters as exc:
        if "max_partitions" not in str(exc):
            raise
    vectors = 1
    while True:
        scheme = partial_scheme(n, s, exact_alpha, "cyclic", vectors=vectors)
        assert isinstance(scheme, CyclicPartial)
        out.append(scheme)
        if vectors >= scheme.d:
            break
        vectors += 1
    if max_vectors is not None:
        limit = _check_count(max_vectors, "max_vectors", 1, None, "one vector at least")
        # never empty: the cyclic scheme with V = 1 sends one vector and limit >= 1
        out = [c for c in out if c.communication_load <= limit]
    return out


def design_label(scheme: PartialRecoveryScheme) -> str:
    """A short name: ``subset r=1x3,2x4 k=210`` (size x multiplicity) or ``cyclic d=3 V=1``."""
    if isinstance(scheme, SubsetDesign):
        mix = ",".join(f"{r}x{a}" for r, a in zip(scheme.sizes, scheme.multiplicities, strict=True))
        approx = "" if scheme.exact else " (approx.)"
        return f"subset r={mix} k={scheme.n_partitions}{approx}"
    if isinstance(scheme, CyclicPartial):
        return f"cyclic d={scheme.d} V={scheme.communication_load}"
    return type(scheme).__name__


# --------------------------------------------------------------------------------------------
# what a worker sends
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerEncoding:
    """Worker ``worker``'s part of a scheme: its partitions and the 0/1 sums it sends.

    ``partitions`` (sorted) are the partitions the worker holds (the data to place on it);
    ``sums`` has shape ``(V, len(partitions))``: row m marks the partitions message m adds.
    """

    worker: int
    partitions: tuple[int, ...]
    sums: FloatArray

    @property
    def vectors(self) -> int:
        return int(self.sums.shape[0])

    def encode(self, gradients: NDArray[np.floating]) -> FloatArray:
        """The response ``[V, dim]`` from the worker's partition gradients.

        ``gradients`` is either ``(len(partitions), dim)`` (the worker's own, in
        ``partitions`` order) or ``(k, dim)`` (all partitions; the worker's rows are taken).
        """
        rows = np.asarray(gradients, dtype=np.float64)
        if rows.ndim != 2:
            raise InvalidInput(f"gradients must be 2-D (partitions, dim), got shape {rows.shape}")
        held = len(self.partitions)
        if rows.shape[0] != held:
            if held and rows.shape[0] > max(self.partitions):
                rows = rows[list(self.partitions)]
            else:
                raise InvalidInput(
                    f"worker {self.worker} holds {held} partitions: gradients must have "
                    f"{held} rows (or all k), got {rows.shape[0]}"
                )
        out = np.empty((self.vectors, rows.shape[1]))
        for m, mask in enumerate(self.sums.astype(bool)):
            np.sum(rows[mask], axis=0, out=out[m])  # a plain sum of whole gradients
        return out


def worker_encoding(scheme: PartialRecoveryScheme, worker: int) -> WorkerEncoding:
    """The :class:`WorkerEncoding` of ``worker`` (what to place on it, what it sends).

    >>> from edgecode.codes.partial import cyclic_partial
    >>> enc = worker_encoding(cyclic_partial(6, 2, 0.9, vectors_per_worker=2), 5)
    >>> enc.partitions, enc.sums.tolist()
    ((0, 1, 5), [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    """
    n = scheme.n_workers
    if isinstance(worker, bool) or not isinstance(worker, numbers.Integral):
        raise InvalidInput(f"worker must be an integer, got {worker!r}")
    if not 0 <= int(worker) < n:
        raise InvalidInput(f"worker must be in [0, {n}), got {worker}")
    messages = scheme.messages[int(worker)]
    held = tuple(sorted({j for message in messages for j in message}))
    column = {j: c for c, j in enumerate(held)}
    sums = np.zeros((len(messages), len(held)))
    for m, message in enumerate(messages):
        sums[m, [column[j] for j in message]] = 1.0
    return WorkerEncoding(int(worker), held, sums)
