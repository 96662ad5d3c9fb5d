"""Data shuffling for approximate gradient coding: new assignments and the transfers behind them.

The code ``B`` (n rows, K partitions) never changes ("the same code structure"); what a shuffle
changes is which worker plays which row. An :class:`Assignment` says that worker ``w`` plays row
``rows[w]`` and therefore holds the partitions ``supp(B[rows[w]])`` and sends
``B[rows[w]] @ g``: the master decodes with ``assignment.sender_matrix(B) = B[rows]`` (row w is
sender w). Partition j keeps its index: decoded partition weights need no relabelling.

A shuffle from ``before`` to ``after`` is realised by worker-to-worker transfers: every worker
receives each partition of its new row that it does not already hold, from a worker that holds
it under ``before`` (the one that has sent the fewest bytes so far, so uploads spread). Workers
must keep their old partitions until every transfer of the shuffle is done. The bytes moved are
``sum_w sum_{j in new(w) \\ old(w)} bytes_j``.

Policies (``--shuffle random|aware``, every tau rounds):

- ``random`` (the paper's): a uniformly random permutation of the rows; with a byte budget,
  random transpositions of two workers' rows, each kept when the total stays within budget;
- ``aware`` (ours): with ``p_w`` the predicted probability that worker w straggles (the class
  filter, :class:`edgecode.stragglers.ClassFilter`), partition j is lost in a round with
  probability about ``risk_j = prod_{h holds j} p_h``. Greedy swaps of two workers' rows lower
  ``sum_j risk_j`` (the expected number of partitions without weight), always starting from the
  riskiest partition: one of its holders (most likely to straggle first) trades rows with a
  worker less likely to straggle. A swap is taken only when it lowers the total by at least
  :data:`MIN_SWAP_GAIN` (and :data:`MIN_GAIN` per partition it moves) and keeps the bytes moved
  within the budget, so the policy moves nothing when every worker looks alike (i.i.d.
  stragglers), stops once no partition is held mostly by slow workers, and does not chase the
  class filter's noise (see :data:`MIN_SWAP_GAIN`).

Example
-------
>>> import numpy as np
>>> from edgecode.codes.flat import fractional_repetition
>>> B = fractional_repetition(4, 1).B                 # groups {0, 1} and {2, 3}
>>> p = np.array([0.9, 0.9, 0.05, 0.05])              # workers 0 and 1 are slow
>>> moved = aware_shuffle(B, Assignment.identity(4), p)
>>> moved.after.holders(B)                            # every partition now has an active holder
((1, 2), (1, 2), (0, 3), (0, 3))
>>> moved.partitions_moved, [(t.source, t.destination, t.partition) for t in moved.transfers]
(4, [(2, 0, 2), (3, 0, 3), (0, 2, 0), (1, 2, 1)])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

POLICIES = ("random", "aware")
#: Straggle probabilities are floored here so risks stay positive and comparable.
PROBABILITY_FLOOR = 1e-6
#: Candidate partners (least likely to straggle first) tried per holder of a risky partition.
CANDIDATES = 24
#: Smallest drop of the expected number of partitions without weight per round, per partition
#: moved, for which the aware policy swaps two workers. Giving an all-slow pair of the s = 1
#: code an active holder gains about p_slow^2 / 2 per partition moved (0.32 at p_slow = 0.8).
MIN_GAIN = 1e-3
#: Smallest drop of the expected number of partitions without weight per round for which the
#: aware policy swaps two workers. One late answer of an active worker lifts the straggle
#: probability the master's filter predicts for it from 0.05 to about 0.27 for a few rounds;
#: moving a slow worker (about 0.77) away from it gains about 0.77 x 0.22 per partition they
#: share: 0.17 (crc, s = 1) or 0.34 (frc, s = 1). Real moves gain more: parting two adjacent
#: slow workers 0.72 (crc, s = 1) or three 0.53 (crc, s = 2, p_slow = 0.8); an active holder
#: for an all-slow group 1.2 (frc, s = 1) or 1.4 (frc, s = 2). Chasing the noise made ``bench
#: shuffle`` (crc) shuffle 8-10 times in 120 rounds instead of 1-3; each shuffle slows the one
#: or two rounds it overlaps by about 15 ms on the 2-core machine (docs/notes/shuffle.md).
MIN_SWAP_GAIN = 0.4
#: Random transpositions tried per worker by a budgeted random shuffle.
ATTEMPTS_PER_WORKER = 4


@dataclass(frozen=True)
class Assignment:
    """Worker ``w`` plays code row ``rows[w]``; ``rows`` is a permutation of ``range(n)``."""

    rows: tuple[int, ...]

    def __post_init__(self) -> None:
        if sorted(self.rows) != list(range(len(self.rows))) or not self.rows:
            raise ValueError(f"rows must be a permutation of range(n), got {self.rows}")

    @classmethod
    def identity(cls, n: int) -> Assignment:
        """Worker i plays row i."""
        return cls(tuple(range(n)))

    @property
    def n_workers(self) -> int:
        return len(self.rows)

    def sender_matrix(self, B: FloatArray) -> FloatArray:
        """``B[rows]``: the code in sender (worker) order, what the master decodes with."""
        return np.asarray(np.asarray(B)[list(self.rows)], dtype=np.float64)

    def partitions_of(self, B: FloatArray) -> tuple[tuple[int, ...], ...]:
        """For every worker, the partitions it holds."""
        matrix = _check_code(B, self.n_workers)
        return tuple(tuple(int(j) for j in np.flatnonzero(matrix[row])) for row in self.rows)

    def holders(self, B: FloatArray) -> tuple[tuple[int, ...], ...]:
        """For every partition, the workers holding it (sorted)."""
        result: list[list[int]] = [[] for _ in range(np.shape(B)[1])]
        for worker, parts in enumerate(self.partitions_of(B)):
            for j in parts:
                result[j].append(worker)
        return tuple(tuple(h) for h in result)


@dataclass(frozen=True)
class Transfer:
    """Stream ``partition`` (``bytes`` long) from worker ``source`` to worker ``destination``."""

    source: int
    destination: int
    partition: int
    bytes: int


@dataclass(frozen=True)
class Shuffle:
    """A new assignment and the transfers that realise it from the old one."""

    before: Assignment
    after: Assignment
    transfers: tuple[Transfer, ...]

    @property
    def bytes_moved(self) -> int:
        return sum(t.bytes for t in self.transfers)

    @property
    def partitions_moved(self) -> int:
        return len(self.transfers)


def _check_code(B: ArrayLike, n: int) -> NDArray[np.float64]:
    matrix = np.asarray(B, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != n or matrix.shape[1] == 0:
        raise ValueError(f"B must be a ({n}, K) code matrix, got shape {matrix.shape}")
    return matrix


def _check_bytes(partition_bytes: ArrayLike | None, k: int) -> IntArray:
    if partition_bytes is None:
        return np.ones(k, dtype=np.int64)
    sizes = np.asarray(partition_bytes)
    if sizes.shape != (k,) or not np.all(sizes >= 0) or not np.all(sizes == np.round(sizes)):
        raise ValueError(f"partition_bytes must be {k} integers >= 0, got {partition_bytes!r}")
    return sizes.astype(np.int64)


def _check_budget(budget_bytes: float | None) -> float:
    if budget_bytes is None:
        return float("inf")
    if not budget_bytes >= 0:
        raise ValueError(f"budget_bytes must be None or >= 0, got {budget_bytes!r}")
    return float(budget_bytes)


def plan_transfers(
    B: FloatArray,
    before: Assignment,
    after: Assignment,
    partition_bytes: ArrayLike | None = None,
) -> tuple[Transfer, ...]:
    """The transfers that take every worker from its ``before`` partitions to its ``after`` ones.

    Destinations in worker order, partitions in increasing order; the source of a partition is
    the ``before`` holder that has sent the fewest bytes so far (then the lowest index).
    ``partition_bytes`` (K,) defaults to 1 per partition (then bytes count partitions).
    """
    if before.n_workers != after.n_workers:
        raise ValueError(f"assignments differ in size: {before.n_workers} vs {after.n_workers}")
    sizes = _check_bytes(partition_bytes, np.shape(B)[1])
    old = [set(parts) for parts in before.partitions_of(B)]
    holders = before.holders(B)
    sent = np.zeros(before.n_workers, dtype=np.int64)
    transfers = []
    for worker, parts in enumerate(after.partitions_of(B)):
        for j in parts:
            if j in old[worker]:
                continue
            source = min(holders[j], key=lambda h: (int(sent[h]), h))
            sent[source] += sizes[j]
            transfers.append(Transfer(int(source), worker, j, int(sizes[j])))
    return tuple(transfers)


class _Swapper:
    """Working state of a shuffle by transpositions: rows, per-worker cost vs the start."""

    def __init__(self, B: FloatArray, start: Assignment, sizes: IntArray) -> None:
        self.parts = [frozenset(int(j) for j in np.flatnonzero(row)) for row in B]
        self.rows = list(start.rows)
        self.original = [self.parts[row] for row in self.rows]
        self.sizes = sizes
        self.cost = [0] * len(self.rows)
        self.total = 0

    def cost_of(self, worker: int, row: int) -> int:
        """Bytes worker ``worker`` must receive to play ``row``."""
        return int(sum(self.sizes[j] for j in self.parts[row] - self.original[worker]))

    def swap_cost(self, a: int, b: int) -> tuple[int, int, int]:
        """Total bytes after swapping the rows of workers a and b, and their new costs."""
        cost_a = self.cost_of(a, self.rows[b])
        cost_b = self.cost_of(b, self.rows[a])
        return self.total - self.cost[a] - self.cost[b] + cost_a + cost_b, cost_a, cost_b

    def swap(self, a: int, b: int) -> None:
        total, cost_a, cost_b = self.swap_cost(a, b)
        self.rows[a], self.rows[b] = self.rows[b], self.rows[a]
        self.cost[a], self.cost[b], self.total = cost_a, cost_b, total


def random_shuffle(
    B: FloatArray,
    current: Assignment,
    rng: np.random.Generator,
    partition_bytes: ArrayLike | None = None,
    budget_bytes: float | None = None,
) -> Shuffle:
    """The paper's shuffle: a uniform random permutation of the rows among the workers.

    With ``budget_bytes``: ``ATTEMPTS_PER_WORKER x n`` random transpositions of two workers'
    rows, each kept when the bytes moved stay within the budget.
    """
    matrix = _check_code(B, current.n_workers)
    sizes = _check_bytes(partition_bytes, matrix.shape[1])
    budget = _check_budget(budget_bytes)
    n = current.n_workers
    if budget == float("inf"):
        after = Assignment(tuple(current.rows[int(i)] for i in rng.permutation(n)))
    else:
        state = _Swapper(matrix, current, sizes)
        for _ in range(ATTEMPTS_PER_WORKER * n if n > 1 else 0):
            a, b = (int(i) for i in rng.choice(n, size=2, replace=False))
            if state.swap_cost(a, b)[0] <= budget:
                state.swap(a, b)
        after = Assignment(tuple(state.rows))
    return Shuffle(current, after, plan_transfers(matrix, current, after, sizes))


def aware_shuffle(
    B: FloatArray,
    current: Assignment,
    straggle_probability: ArrayLike,
    partition_bytes: ArrayLike | None = None,
    budget_bytes: float | None = None,
    min_gain: float = MIN_GAIN,
    min_swap_gain: float = MIN_SWAP_GAIN,
) -> Shuffle:
    """Move the partitions held mostly by likely stragglers onto workers unlikely to straggle.

    ``straggle_probability`` (n,) in [0, 1]: each worker's predicted probability of straggling
    (e.g. :meth:`edgecode.stragglers.ClassFilter.straggle_probability`). Greedy transpositions
    lower ``sum_j prod_{h holds j} p_h`` within ``budget_bytes`` (see the module docstring); a
    swap must lower it by at least ``min_swap_gain`` and by ``min_gain`` per partition it moves,
    so estimates that differ only by noise move nothing.
    """
    if not min_gain >= 0:
        raise ValueError(f"min_gain must be >= 0, got {min_gain!r}")
    if not min_swap_gain >= 0:
        raise ValueError(f"min_swap_gain must be >= 0, got {min_swap_gain!r}")
    matrix = _check_code(B, current.n_workers)
    sizes = _check_bytes(partition_bytes, matrix.shape[1])
    budget = _check_budget(budget_bytes)
    p = np.asarray(straggle_probability, dtype=np.float64)
    if p.shape != (current.n_workers,) or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(
            f"straggle_probability must be {current.n_workers} numbers in [0, 1], got {p!r}"
        )
    q = np.maximum(p, PROBABILITY_FLOOR)
    state = _Swapper(matrix, current, sizes)
    holders = [set(h) for h in current.holders(matrix)]
    risk = np.array([float(np.prod(q[list(h)])) for h in holders])
    for _ in range(current.n_workers * matrix.shape[1]):  # each swap strictly lowers the total
        move = _best_move(state, holders, risk, q, budget, (min_gain, min_swap_gain))
        if move is None:
            break
        slow, fast = move
        _apply(state, holders, risk, q, slow, fast)
    after = Assignment(tuple(state.rows))
    return Shuffle(current, after, plan_transfers(matrix, current, after, sizes))


def _swap_delta(state: _Swapper, risk: FloatArray, q: FloatArray, a: int, b: int) -> float:
    """Change of sum_j risk_j when workers a and b trade rows."""
    parts_a, parts_b = state.parts[state.rows[a]], state.parts[state.rows[b]]
    ratio = q[b] / q[a]
    gain = sum(risk[j] for j in parts_a - parts_b) * (ratio - 1.0)
    return float(gain + sum(risk[j] for j in parts_b - parts_a) * (1.0 / ratio - 1.0))


def _best_move(
    state: _Swapper,
    holders: list[set[int]],
    risk: FloatArray,
    q: FloatArray,
    budget: float,
    gains: tuple[float, float],
) -> tuple[int, int] | None:
    """The best budget-feasible improving swap for the riskiest partition that has one.

    Partners are tried least likely to straggle first and, among equals, those whose own
    partitions are least at risk (they can take a slow worker's place at the smallest cost).
    """
    tolerance = max(1e-12 * float(risk.sum()), gains[1])
    row_risk = [sum(risk[j] for j in state.parts[row]) for row in state.rows]
    by_speed = sorted(range(len(state.rows)), key=lambda w: (q[w], row_risk[w], w))
    for j in np.argsort(-risk, kind="stable"):
        best: tuple[float, int, int] | None = None
        for slow in sorted(holders[j], key=lambda w: -q[w]):
            partners = [w for w in by_speed if q[w] < q[slow] and w not in holders[j]]
            for fast in partners[:CANDIDATES]:
                delta = _swap_delta(state, risk, q, slow, fast)
                moves = len(state.parts[state.rows[slow]] ^ state.parts[state.rows[fast]])
                if delta < -max(tolerance, gains[0] * moves) and (best is None or delta < best[0]):
                    if state.swap_cost(slow, fast)[0] <= budget:
                        best = (delta, slow, fast)
        if best is not None:
            return best[1], best[2]
    return None


def _apply(
    state: _Swapper,
    holders: list[set[int]],
    risk: FloatArray,
    q: FloatArray,
    a: int,
    b: int,
) -> None:
    parts_a, parts_b = state.parts[state.rows[a]], state.parts[state.rows[b]]
    for j in parts_a - parts_b:
        holders[j].remove(a)
        holders[j].add(b)
        risk[j] *= q[b] / q[a]
    for j in parts_b - parts_a:
        holders[j].remove(b)
        holders[j].add(a)
        risk[j] *= q[a] / q[b]
    state.swap(a, b)


def shuffle(
    policy: str,
    B: FloatArray,
    current: Assignment,
    *,
    rng: np.random.Generator,
    straggle_probability: ArrayLike | None = None,
    partition_bytes: ArrayLike | None = None,
    budget_bytes: float | None = None,
) -> Shuffle:
    """Dispatch on ``policy`` (one of :data:`POLICIES`); ``aware`` needs
    ``straggle_probability``."""
    if policy == "random":
        return random_shuffle(B, current, rng, partition_bytes, budget_bytes)
    if policy == "aware":
        if straggle_probability is None:
            raise ValueError("the aware policy needs straggle_probability")
        return aware_shuffle(B, current, straggle_probability, partition_bytes, budget_bytes)
    raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
