r"""Stochastic gradient coding, as used by GOCO (Li and Skoglund, *Gradient Coding in
Decentralized Learning for Evading Stragglers*, arXiv 2024).

Every partition j of the data is placed on exactly d of the n workers. In a round each worker
straggles independently with probability p; a worker i that finishes sends

    g_i = (1 / (d (1 - p))) * sum_{j in D_i} g_j          (D_i: the partitions worker i holds)

and a straggler sends nothing (g_i = 0). Partition j reaches sum_i g_i through each of its d
holders with probability 1 - p and weight 1 / (d (1 - p)), so

    E[sum_i g_i] = sum_j d (1 - p) / (d (1 - p)) g_j = sum_j g_j:

the encoded gradients are an unbiased estimate of the full gradient, whatever straggles.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgecode.codes._linalg import cyclic_fill, holders_of_items, normalize_alive

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def _check_int(value: object, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    number = operator.index(value)
    if number < low or (high is not None and number > high):
        expected = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be in {expected}, got {number}")
    return number


@dataclass(frozen=True, eq=False)
class StochasticCode:
    """A stochastic gradient code: placement with d holders per partition and weight 1/(d(1-p)).

    ``B`` is (n, k) with ``B[i, j] = weight`` when worker i holds partition j, else 0; a worker's
    encoded gradient is ``B[i] @ G`` when it is alive and 0 when it straggles.
    """

    n_workers: int
    n_partitions: int
    replication: int
    straggle_probability: float
    #: per partition, its d holders (sorted)
    holders: tuple[tuple[int, ...], ...]
    #: per worker, its partitions (sorted)
    partitions_of_worker: tuple[tuple[int, ...], ...]

    @property
    def weight(self) -> float:
        """The unbiasing weight 1 / (d (1 - p))."""
        return 1.0 / (self.replication * (1.0 - self.straggle_probability))

    @property
    def B(self) -> FloatArray:  # the coding literature's name for it
        """The (n, k) encoding matrix: ``weight`` where worker i holds partition j, else 0."""
        matrix = np.zeros((self.n_workers, self.n_partitions))
        for worker, partitions in enumerate(self.partitions_of_worker):
            matrix[worker, list(partitions)] = self.weight
        return matrix

    @property
    def computation_load(self) -> float:
        """The largest fraction of the partitions a worker holds (d / n for k = n)."""
        return max(len(p) for p in self.partitions_of_worker) / self.n_partitions

    def alive_mask(self, alive: ArrayLike | Iterable[int]) -> BoolArray:
        """``alive`` as a boolean mask of shape (n,): either already a boolean mask of that
        shape, or an iterable of the indices of the workers that finished."""
        if isinstance(alive, np.ndarray | list | tuple):
            as_array = np.asarray(alive)
            if as_array.dtype == np.bool_:
                if as_array.shape != (self.n_workers,):
                    raise ValueError(
                        f"alive mask must have shape ({self.n_workers},), got {as_array.shape}"
                    )
                return as_array.copy()
        mask = np.zeros(self.n_workers, dtype=np.bool_)
        mask[list(normalize_alive(alive, self.n_workers))] = True  # type: ignore[arg-type]
        return mask

    def encode(
        self, alive: ArrayLike | Iterable[int], partial_gradients: NDArray[np.floating]
    ) -> FloatArray:
        """Every worker's encoded gradient: shape (n, dim) for partial gradients of shape (k, dim)
        (or (n,) for shape (k,)); row i is ``B[i] @ G`` if worker i is alive, else 0.

        ``alive`` is a boolean mask of shape (n,) or an iterable of alive worker indices.
        """
        mask = self.alive_mask(alive)
        gradients = np.asarray(partial_gradients, dtype=np.float64)
        if gradients.ndim not in (1, 2) or gradients.shape[0] != self.n_partitions:
            raise ValueError(
                f"partial_gradients must have shape ({self.n_partitions},) or "
                f"({self.n_partitions}, dim), got {gradients.shape}"
            )
        encoded: FloatArray = (self.B * mask[:, None]) @ gradients
        return encoded

    def sample_alive(self, rng: np.random.Generator) -> BoolArray:
        """One round's alive mask: each worker straggles independently with probability p."""
        return np.asarray(rng.random(self.n_workers) >= self.straggle_probability)

    def sample_alive_rounds(self, rng: np.random.Generator, rounds: int) -> BoolArray:
        """Alive masks of ``rounds`` independent rounds, shape (rounds, n) (row t = round t)."""
        count = _check_int(rounds, "rounds", 0)
        return np.asarray(rng.random((count, self.n_workers)) >= self.straggle_probability)

    def sum_variance(self, partial_gradients: NDArray[np.floating]) -> FloatArray:
        r"""The exact per-coordinate variance of ``sum_i g_i`` over the straggler patterns.

        Worker i contributes ``a_i w S_i`` with ``S_i = sum_{j in D_i} G_j`` and independent
        ``a_i ~ Bernoulli(1 - p)``, so ``Var[sum_i g_i] = w^2 p (1 - p) sum_i S_i^2``
        (element-wise). Shape (dim,) for G of shape (k, dim), () for shape (k,).

        >>> stochastic(2, 1, 0.5).sum_variance(np.array([1.0, 3.0])).tolist()
        10.0
        """
        gradients = np.asarray(partial_gradients, dtype=np.float64)
        if gradients.ndim not in (1, 2) or gradients.shape[0] != self.n_partitions:
            raise ValueError(
                f"partial_gradients must have shape ({self.n_partitions},) or "
                f"({self.n_partitions}, dim), got {gradients.shape}"
            )
        placement = (self.B != 0).astype(np.float64)
        sums = placement @ gradients
        p = self.straggle_probability
        variance: FloatArray = self.weight**2 * p * (1.0 - p) * np.sum(sums * sums, axis=0)
        return variance

    def pattern_probability(self, alive: ArrayLike | Iterable[int]) -> float:
        """P(exactly the workers in ``alive`` finish) = (1-p)^|alive| p^(n-|alive|)."""
        count = int(self.alive_mask(alive).sum())
        p = self.straggle_probability
        return (1.0 - p) ** count * p ** (self.n_workers - count)


def stochastic(n: int, d: int, p: float, n_partitions: int | None = None) -> StochasticCode:
    r"""Stochastic gradient code with each partition on exactly ``d`` of ``n`` workers.

    Placement: with k = n (the default) partition j lives on workers j, j+1, ..., j+d-1 (mod n),
    so worker i holds partitions i-d+1, ..., i (mod n). For k != n the k d slots are spread as
    evenly as possible, worker i getting floor(k d / n) or one more, and filled cyclically
    (slot t holds partition t mod k), which again gives every partition exactly d distinct
    holders. The weight is 1 / (d (1 - p)), which makes ``sum_i encode(...)[i]`` unbiased.

    Parameters: ``n >= 1`` workers, ``1 <= d <= n`` holders per partition, straggle probability
    ``0 <= p < 1``, ``n_partitions >= 1`` (k).

    Example
    -------
    >>> code = stochastic(4, 2, 0.5)
    >>> code.partitions_of_worker, code.weight
    (((0, 3), (0, 1), (1, 2), (2, 3)), 1.0)
    >>> code.encode({0, 2}, np.eye(4)).tolist()
    [[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """
    n = _check_int(n, "n", 1)
    d = _check_int(d, "d", 1, n)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(float(p)):
        raise ValueError(f"p must be a real number in [0, 1), got {p!r}")
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p!r}")
    k = n if n_partitions is None else _check_int(n_partitions, "n_partitions", 1)
    if k == n:
        partitions_of_worker = [sorted((i - u) % n for u in range(d)) for i in range(n)]
    else:
        total, extra = divmod(k * d, n)
        partitions_of_worker = cyclic_fill([total + (i < extra) for i in range(n)], k)
    holders = holders_of_items(partitions_of_worker, k)
    return StochasticCode(
        n_workers=n,
        n_partitions=k,
        replication=d,
        straggle_probability=float(p),
        holders=tuple(tuple(h) for h in holders),
        partitions_of_worker=tuple(tuple(w) for w in partitions_of_worker),
    )
