r"""Gradient coding with partial recovery (Sarmasarkar, Lalitha, Karamchandani, IEEE Trans. Commun.
71(2), 2023; arXiv 2102.10163).

The data set is cut into k partitions with partial gradients g_1..g_k. Every worker sends one or
more vectors, each the plain SUM of the gradients of some of its partitions. From any n - s
workers the master must recover the sum of at least ceil(alpha k) of the g_j, every recovered
partition with coefficient exactly 1 and every other one with coefficient exactly 0.

Three pieces live here:

* :func:`partial_load_optimum` / :func:`partial_load_lower_bound` - the linear program that bounds
  the computation load of ANY scheme, solved exactly with fractions;
* :func:`subset_design` - one partition per r-subset of workers, mixing the (at most two) r of
  the LP optimum; it meets the bound, at the cost of many partitions and one vector per partition;
* :func:`cyclic_partial` - n partitions on a cycle, worker i holding i..i+d-1 (mod n), sending 1..d
  vectors (chunk sums); fewer vectors, more load.

Every scheme is a :class:`PartialRecoveryScheme`: it reports its loads beside the LP bound, lists
its messages, and decodes any straggler set of size at most s.

``alpha`` is handled as an exact rational everywhere: a float is read through its shortest
decimal representation (``0.9`` is 9/10), so that boundary cases such as
``C(s, r) / C(n, r) == 1 - alpha`` are not lost to rounding.
"""

from __future__ import annotations

import abc
import functools
import itertools
import math
import numbers
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from edgecode.codes._linalg import holders_of_items, is_enumerable, normalize_alive, subsets
from edgecode.errors import Infeasible, NotDecodable

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]
#: Per worker, its messages; each message is the tuple of partitions whose gradients it sums.
Messages = tuple[tuple[tuple[int, ...], ...], ...]

#: Largest number of partitions :func:`subset_design` builds.
MAX_PARTITIONS = 200_000
#: Largest number of straggler patterns the cyclic worst-case search enumerates (those that
#: contain worker 0, see :func:`cyclic_worst_coverage`).
CYCLIC_SEARCH_LIMIT = 200_000
#: Straggler patterns evaluated together in one vectorised pass.
_BATCH = 2_048


# --------------------------------------------------------------------------------------------
# argument checks (public edge)
# --------------------------------------------------------------------------------------------


def _check_int(value: object, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    number = operator.index(value)
    if number < low or (high is not None and number > high):
        expected = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be in {expected}, got {number}")
    return number


def _as_alpha(alpha: object) -> Fraction:
    """``alpha`` as an exact fraction in (0, 1]; floats are read via their shortest repr."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise ValueError(f"alpha must be a real number in (0, 1], got {alpha!r}")
    if isinstance(alpha, numbers.Rational):
        exact = Fraction(int(alpha.numerator), int(alpha.denominator))
    else:
        value = float(alpha)
        if not math.isfinite(value):
            raise ValueError(f"alpha must be a real number in (0, 1], got {alpha!r}")
        exact = Fraction(repr(value))
    if not 0 < exact <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
    return exact


def _check_code(n: object, s: object, alpha: object) -> tuple[int, int, Fraction]:
    n_workers = _check_int(n, "n", 1)
    stragglers = _check_int(s, "s", 0, n_workers - 1)
    return n_workers, stragglers, _as_alpha(alpha)


def _ceil_fraction(value: Fraction) -> int:
    return -((-value.numerator) // value.denominator)


def required_partitions(alpha: float | Fraction, k: int) -> int:
    """ceil(alpha k): the fewest partitions a decoding must recover (alpha read exactly).

    >>> required_partitions(0.9, 10), required_partitions(0.75, 10)
    (9, 8)
    """
    return _ceil_fraction(_as_alpha(alpha) * _check_int(k, "k", 1))


# --------------------------------------------------------------------------------------------
# the lower bound
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartialLoadOptimum:
    """An optimal vertex of the computation-load LP (see :func:`partial_load_optimum`).

    ``sizes`` are the replication factors r in use (one, or two in increasing order) and
    ``weights`` the data fractions w_r on them (positive, summing to 1). ``n_load`` is
    n * load = sum_r w_r r, i.e. the average number of workers a unit of data is placed on.
    """

    n_workers: int
    stragglers: int
    alpha: Fraction
    sizes: tuple[int, ...]
    weights: tuple[Fraction, ...]
    n_load: Fraction

    @property
    def load(self) -> Fraction:
        """The minimal computation load itself: n_load / n."""
        return self.n_load / self.n_workers

    @property
    def lost_fraction(self) -> Fraction:
        """sum_r w_r C(s, r) / C(n, r): the data fraction a worst straggler set removes."""
        return sum(
            (w * _loss_ratio(self.n_workers, self.stragglers, r) for r, w in self._pairs()),
            Fraction(0),
        )

    def _pairs(self) -> Iterator[tuple[int, Fraction]]:
        return zip(self.sizes, self.weights, strict=True)


def _loss_ratio(n: int, s: int, r: int) -> Fraction:
    """C(s, r) / C(n, r): the fraction of the r-subsets of n workers inside a fixed s-set."""
    return Fraction(math.comb(s, r), math.comb(n, r))


def partial_load_optimum(n: int, s: int, alpha: float | Fraction) -> PartialLoadOptimum:
    r"""Solve the computation-load LP of partial recovery exactly.

    With w_r the fraction of the data placed on exactly r workers (r = 1..n; every partition is
    placed somewhere), a partition whose holders all straggle is lost whatever the decoder.
    Over a uniformly random s-set of stragglers, data on r workers is lost with probability
    C(n-r, s-r)/C(n, s) = C(s,r)/C(n,r); the worst s-set loses at least the average, so
    sum_r w_r C(s,r)/C(n,r) <= 1 - alpha is necessary, and the computation load is at least

        L*(n, s, alpha) = min  sum_r w_r r / n
                          s.t. sum_r w_r = 1,  sum_r w_r C(s,r)/C(n,r) <= 1 - alpha,  w >= 0.

    Two constraints, so an optimal vertex uses at most two r. f_r = C(s,r)/C(n,r) falls strictly
    from s/n to f_{s+1} = 0 while the cost r grows, so with r* the least r with f_r <= 1 - alpha
    the optimum is either r* alone or a pair r1 < r* <= r2 <= s + 1 with the loss constraint
    tight: w_{r2} = (f_{r1} - (1 - alpha)) / (f_{r1} - f_{r2}). All such vertices are compared
    in exact arithmetic; ties go to fewer sizes, then smaller sizes. At alpha = 1 the answer is
    r* = s + 1, the load (s + 1) / n of full gradient coding.

    Parameters: ``n >= 1`` workers, ``0 <= s < n`` stragglers, ``0 < alpha <= 1``.

    Example
    -------
    >>> opt = partial_load_optimum(10, 3, 0.9)
    >>> opt.sizes, [str(w) for w in opt.weights], opt.n_load
    ((1, 2), ['1/7', '6/7'], Fraction(13, 7))
    """
    n, s, exact_alpha = _check_code(n, s, alpha)
    budget = 1 - exact_alpha
    loss = {r: _loss_ratio(n, s, r) for r in range(1, min(n, s + 1) + 1)}
    r_star = min(r for r, f in loss.items() if f <= budget)
    # (value, number of sizes, sizes, weights)
    best: tuple[Fraction, int, tuple[int, ...], tuple[Fraction, ...]] = (
        Fraction(r_star),
        1,
        (r_star,),
        (Fraction(1),),
    )
    for r1 in range(1, r_star):
        for r2 in range(r_star, min(n, s + 1) + 1):
            if loss[r2] >= budget:
                continue
            w2 = (loss[r1] - budget) / (loss[r1] - loss[r2])
            w1 = 1 - w2
            candidate = (w1 * r1 + w2 * r2, 2, (r1, r2), (w1, w2))
            if candidate[:3] < best[:3]:
                best = candidate
    value, _, sizes, weights = best
    return PartialLoadOptimum(n, s, exact_alpha, sizes, weights, value)


def partial_load_lower_bound(n: int, s: int, alpha: float | Fraction) -> float:
    """The minimal computation load L*(n, s, alpha) of :func:`partial_load_optimum`, as a float.

    Example
    -------
    >>> round(10 * partial_load_lower_bound(10, 3, 0.8), 3)
    1.429
    >>> partial_load_lower_bound(10, 3, 1.0) == 4 / 10
    True
    """
    return float(partial_load_optimum(n, s, alpha).load)


# --------------------------------------------------------------------------------------------
# schemes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PartialRecoveryScheme(abc.ABC):
    """A partial-recovery gradient code: placement, messages and decoder.

    Worker i sends ``len(messages[i])`` vectors; message m of worker i is
    ``sum(g_j for j in messages[i][m])``. For every straggler set S with |S| <= s,
    :meth:`decode_messages` picks messages of alive workers with pairwise disjoint supports,
    and adding them (coefficient 1 each) gives ``decode(S) @ [g_1..g_k]`` where ``decode(S)`` is
    a 0/1 vector with at least ``min_recovered = ceil(alpha k)`` ones.
    """

    n_workers: int
    n_partitions: int
    stragglers: int
    alpha: Fraction
    #: the LP bound L*(n, s, alpha) on the computation load, for comparison
    lower_bound: float

    # -- loads ---------------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def messages(self) -> Messages:
        """Per worker, per message, the partitions whose gradients the message sums."""

    @property
    @abc.abstractmethod
    def partitions_per_worker(self) -> int:
        """The largest number of partitions any worker holds."""

    @property
    @abc.abstractmethod
    def communication_load(self) -> int:
        """Vectors per worker (the largest count over workers)."""

    @property
    def computation_load(self) -> float:
        """partitions_per_worker / n_partitions: the fraction of the data a worker processes."""
        return self.partitions_per_worker / self.n_partitions

    @property
    def min_recovered(self) -> int:
        """ceil(alpha k): the partitions every decoding recovers at least."""
        return _ceil_fraction(self.alpha * self.n_partitions)

    @property
    def holders(self) -> list[list[int]]:
        """For every partition, the sorted workers that hold it."""
        held = [sorted({j for message in worker for j in message}) for worker in self.messages]
        return holders_of_items(held, self.n_partitions)

    # -- encoding and decoding -----------------------------------------------------------------

    def encode(self, worker: int, partial_gradients: NDArray[np.floating]) -> FloatArray:
        """The vectors ``worker`` sends: shape (len(messages[worker]), dim) for gradients of shape
        (k, dim); row m is the sum of the rows of ``partial_gradients`` listed in message m."""
        worker = _check_int(worker, "worker", 0, self.n_workers - 1)
        gradients = self._check_gradients(partial_gradients)
        return (
            np.stack([gradients[list(message)].sum(axis=0) for message in self.messages[worker]])
            if self.messages[worker]
            else np.zeros((0, gradients.shape[1]))
        )

    def decode_messages(self, stragglers: Iterable[int]) -> dict[tuple[int, int], float]:
        """The decoding: ``{(worker, message_index): 1.0}`` over the messages to add.

        Raises :class:`NotDecodable` when more than ``s`` workers straggle.
        """
        alive = self._alive_mask(stragglers)
        workers, indices = self._select(alive)
        return {(int(w), int(m)): 1.0 for w, m in zip(workers, indices, strict=True)}

    def decode(self, stragglers: Iterable[int]) -> FloatArray:
        """The 0/1 vector of shape (k,) of the partitions recovered when ``stragglers`` are out.

        It has at least :attr:`min_recovered` ones for every straggler set of size <= s;
        :class:`NotDecodable` beyond s stragglers.
        """
        alive = self._alive_mask(stragglers)
        recovered = self._coverage(alive)
        count = int(recovered.sum())
        if count < self.min_recovered:  # unreachable for a certified scheme; kept as a guard
            raise NotDecodable(
                f"recovered {count} partitions, fewer than ceil(alpha k) = {self.min_recovered}"
            )
        return recovered.astype(np.float64)

    # -- helpers -------------------------------------------------------------------------------

    def _alive_mask(self, stragglers: Iterable[int]) -> BoolArray:
        out = normalize_alive(stragglers, self.n_workers, name="stragglers")
        if len(out) > self.stragglers:
            raise NotDecodable(
                f"{len(out)} stragglers {list(out)}: the scheme tolerates at most {self.stragglers}"
            )
        alive = np.ones(self.n_workers, dtype=np.bool_)
        alive[list(out)] = False
        return alive

    def _check_gradients(self, partial_gradients: NDArray[np.floating]) -> FloatArray:
        gradients = np.asarray(partial_gradients, dtype=np.float64)
        if gradients.ndim != 2 or gradients.shape[0] != self.n_partitions:
            raise ValueError(
                f"partial_gradients must have shape ({self.n_partitions}, dim), "
                f"got {gradients.shape}"
            )
        return gradients

    @abc.abstractmethod
    def _select(self, alive: BoolArray) -> tuple[IntArray, IntArray]:
        """(workers, message indices) of disjoint messages, all from alive workers."""

    @abc.abstractmethod
    def _coverage(self, alive: BoolArray) -> BoolArray:
        """Boolean (k,) vector of the partitions covered by :meth:`_select`."""


# --------------------------------------------------------------------------------------------
# r-subset designs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SubsetDesign(PartialRecoveryScheme):
    """One partition per r-subset of workers, ``multiplicities[i]`` copies for ``sizes[i]``.

    Each worker sends every partition gradient it holds as its own vector, so the master gets
    g_j as soon as one holder of j is alive; it recovers exactly the partitions with an alive
    holder. ``exact`` says whether the data fractions equal the LP weights (then
    ``computation_load == lower_bound``); otherwise they are the best approximation found within
    the partition cap and the achieved load is what ``computation_load`` reports.
    """

    sizes: tuple[int, ...]
    multiplicities: tuple[int, ...]
    exact: bool
    #: the achieved computation load as an exact fraction
    load_exact: Fraction
    #: (k, n) boolean: membership[j, i] iff worker i holds partition j
    membership: BoolArray

    @property
    def partitions_of_worker(self) -> tuple[IntArray, ...]:
        """Per worker, the sorted indices of its partitions (= its messages, in order)."""
        return tuple(
            np.flatnonzero(self.membership[:, i]).astype(np.int64) for i in range(self.n_workers)
        )

    @property
    def messages(self) -> Messages:
        return tuple(tuple((int(j),) for j in part) for part in self.partitions_of_worker)

    @property
    def partitions_per_worker(self) -> int:
        return int(self.membership.sum(axis=0).max())

    @property
    def communication_load(self) -> int:
        return self.partitions_per_worker

    def encode(self, worker: int, partial_gradients: NDArray[np.floating]) -> FloatArray:
        worker = _check_int(worker, "worker", 0, self.n_workers - 1)
        gradients = self._check_gradients(partial_gradients)
        return gradients[np.flatnonzero(self.membership[:, worker])].copy()

    def _coverage(self, alive: BoolArray) -> BoolArray:
        return np.asarray((self.membership & alive[None, :]).any(axis=1), dtype=np.bool_)

    def _select(self, alive: BoolArray) -> tuple[IntArray, IntArray]:
        usable = self.membership & alive[None, :]
        partitions = np.flatnonzero(usable.any(axis=1))
        workers = usable[partitions].argmax(axis=1)  # first alive holder
        return workers.astype(np.int64), self._message_index[partitions, workers]

    @functools.cached_property
    def _message_index(self) -> IntArray:
        """(k, n): the message index of partition j at worker i = the rank of j among the
        partitions of i (meaningful where membership[j, i])."""
        return np.cumsum(self.membership, axis=0, dtype=np.int64) - 1


def subset_design(
    n: int,
    s: int,
    alpha: float | Fraction,
    *,
    max_partitions: int = MAX_PARTITIONS,
    approximate: bool = False,
) -> SubsetDesign:
    r"""The r-subset design meeting the computation-load bound of :func:`partial_load_optimum`.

    Construction: take the optimal mixture {(r, w_r)} (one or two sizes). Put a_r partitions on
    every r-subset of the n workers, with a_r C(n, r) / k = w_r and k = sum_r a_r C(n, r): with
    x_r = w_r / C(n, r) in lowest terms, k = lcm of the denominators of the x_r and a_r = x_r k.
    A straggler set S (|S| = s) makes unrecoverable exactly the partitions whose holders all lie
    in S, i.e. sum_r a_r C(s, r) = k sum_r w_r C(s,r)/C(n,r) <= (1 - alpha) k of them, so at least
    ceil(alpha k) are recovered. A worker holds sum_r a_r C(n-1, r-1) partitions, a fraction
    sum_r w_r r / n of the data: the bound with equality. Communication: one vector per partition
    held.

    If k would exceed ``max_partitions``, :class:`Infeasible` is raised, unless ``approximate``:
    then the integer multiplicities (a_1, a_2) on the same sizes with k <= max_partitions,
    a_1 C(s,r_1) + a_2 C(s,r_2) <= (1 - alpha) k and the least load are used (``exact=False``;
    ``computation_load`` reports the achieved load, ``lower_bound`` the LP value).

    Example
    -------
    >>> design = subset_design(10, 3, 0.9)
    >>> design.sizes, design.multiplicities, design.n_partitions
    ((1, 2), (3, 4), 210)
    >>> design.load_exact * 10, bool(design.decode({0, 4, 7}).sum() >= design.min_recovered)
    (Fraction(13, 7), True)
    """
    optimum = partial_load_optimum(n, s, alpha)
    n, s = optimum.n_workers, optimum.stragglers
    cap = _check_int(max_partitions, "max_partitions", 1)
    per_subset = [w / math.comb(n, r) for r, w in optimum._pairs()]
    k = math.lcm(*(x.denominator for x in per_subset))
    multiplicities = tuple(int(x * k) for x in per_subset)
    sizes = optimum.sizes
    exact = True
    if k > cap:
        if not approximate:
            raise Infeasible(
                f"the exact subset design for n={n}, s={s}, alpha={optimum.alpha} needs "
                f"k={k} partitions (sizes {sizes}, multiplicities {multiplicities}), above "
                f"max_partitions={cap}; raise the cap or pass approximate=True"
            )
        sizes, multiplicities = _approximate_multiplicities(n, s, optimum, cap)
        exact = False
    k = sum(a * math.comb(n, r) for r, a in zip(sizes, multiplicities, strict=True))
    membership = np.zeros((k, n), dtype=np.bool_)
    row = 0
    for r, a in zip(sizes, multiplicities, strict=True):
        if a == 0:
            continue
        subsets_r = np.array(list(itertools.combinations(range(n), r)), dtype=np.int64)
        holders = np.repeat(subsets_r, a, axis=0)
        rows = np.arange(row, row + holders.shape[0])
        membership[rows[:, None], holders] = True
        row += holders.shape[0]
    per_worker = sum(
        a * math.comb(n - 1, r - 1) for r, a in zip(sizes, multiplicities, strict=True)
    )
    kept = [(r, a) for r, a in zip(sizes, multiplicities, strict=True) if a > 0]
    return SubsetDesign(
        n_workers=n,
        n_partitions=k,
        stragglers=s,
        alpha=optimum.alpha,
        lower_bound=float(optimum.load),
        sizes=tuple(r for r, _ in kept),
        multiplicities=tuple(a for _, a in kept),
        exact=exact,
        load_exact=Fraction(per_worker, k),
        membership=membership,
    )


def _approximate_multiplicities(
    n: int, s: int, optimum: PartialLoadOptimum, cap: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Best integer (a_1, a_2) on the optimum's two sizes with at most ``cap`` partitions."""
    if len(optimum.sizes) == 1:  # a single size is exact with a = 1 unless C(n, r) > cap
        (r,) = optimum.sizes
        raise Infeasible(
            f"a design on all {r}-subsets of {n} workers needs C({n},{r})={math.comb(n, r)} "
            f"partitions, above max_partitions={cap}"
        )
    r1, r2 = optimum.sizes
    c1, c2 = math.comb(n, r1), math.comb(n, r2)
    if c2 > cap:
        raise Infeasible(
            f"even one partition per {r2}-subset of {n} workers needs C({n},{r2})={c2} "
            f"partitions, above max_partitions={cap}"
        )
    budget = 1 - optimum.alpha
    # loss a1*C(s,r1) + a2*C(s,r2) <= budget*(a1*c1 + a2*c2)  <=>  a2 >= a1 * excess / slack
    excess = math.comb(s, r1) - budget * c1  # > 0: r1 alone loses too much
    slack = budget * c2 - math.comb(s, r2)  # > 0: r2 alone has room
    best: tuple[Fraction, int, int, int] | None = None
    for a1 in range(0, (cap - c2) // c1 + 1):
        a2 = max(1, _ceil_fraction(Fraction(a1) * excess / slack))
        k = a1 * c1 + a2 * c2
        if k > cap:
            break
        load = Fraction(a1 * math.comb(n - 1, r1 - 1) + a2 * math.comb(n - 1, r2 - 1), k)
        candidate = (load, k, a1, a2)
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    assert best is not None  # a1 = 0, a2 = 1 always fits: c2 <= cap
    return (r1, r2), (best[2], best[3])


# --------------------------------------------------------------------------------------------
# cyclic schemes
# --------------------------------------------------------------------------------------------


class Arc(NamedTuple):
    """Message ``message`` of ``worker``: the sum of partitions start..start+length-1 (mod n)."""

    worker: int
    message: int
    start: int
    length: int


def _chunk_lengths(d: int, vectors: int) -> tuple[int, ...]:
    """``d`` split into ``min(vectors, d)`` contiguous chunks, the longer ones first."""
    count = min(vectors, d)
    base, extra = divmod(d, count)
    return tuple(base + 1 if m < extra else base for m in range(count))


def _cyclic_arcs(n: int, d: int, vectors: int) -> list[Arc]:
    arcs = []
    for worker in range(n):
        offset = 0
        for message, length in enumerate(_chunk_lengths(d, vectors)):
            arcs.append(Arc(worker, message, (worker + offset) % n, length))
            offset += length
    return arcs


def cyclic_formula_d(n: int, s: int, alpha: float | Fraction) -> int:
    """papers.md's least d for one vector per worker: max(1, s + 1 - floor(n (1 - alpha))).

    It is a valid LOWER bound for every decoder: s consecutive stragglers leave
    s - d + 1 partitions with no alive holder, and at most floor(n (1 - alpha)) may be lost.
    With the disjoint-arc decoder it is not always enough (see :func:`cyclic_least_d`).

    >>> cyclic_formula_d(10, 3, 0.9)
    3
    """
    n, s, exact_alpha = _check_code(n, s, alpha)
    return max(1, s + 1 - math.floor(n * (1 - exact_alpha)))


def _best_line(
    lo: int, hi: int, starting: list[list[Arc]], alive: BoolArray
) -> tuple[int, list[Arc]]:
    """Most positions of [lo, hi) covered by disjoint alive arcs lying inside it (exact DP)."""
    best = [0] * (hi - lo + 1)
    take: list[Arc | None] = [None] * (hi - lo + 1)
    for p in range(hi - 1, lo - 1, -1):
        best[p - lo] = best[p - lo + 1]
        for arc in starting[p]:
            end = p + arc.length
            if end <= hi and alive[arc.worker] and arc.length + best[end - lo] > best[p - lo]:
                best[p - lo] = arc.length + best[end - lo]
                take[p - lo] = arc
    chosen = []
    p = lo
    while p < hi:
        taken = take[p - lo]
        if taken is None:
            p += 1
        else:
            chosen.append(taken)
            p += taken.length
    return best[0], chosen


def _best_circle(n: int, arcs: list[Arc], alive: BoolArray) -> list[Arc]:
    """Disjoint alive arcs of the n-cycle covering the most positions.

    At most one chosen arc contains position 0 together with n - 1 (two would share 0). Either
    none does, and the problem is weighted interval scheduling on the line [0, n); or arc W
    = [a, n) + [0, e) does, and the rest is interval scheduling on [e, a). The best of these
    n-cycle cuts is the optimum.
    """
    straight: list[list[Arc]] = [[] for _ in range(n)]
    wrapping = []
    for arc in arcs:
        if arc.start + arc.length <= n:
            straight[arc.start].append(arc)
        elif alive[arc.worker]:
            wrapping.append(arc)
    value, chosen = _best_line(0, n, straight, alive)
    for arc in wrapping:
        rest, others = _best_line(arc.start + arc.length - n, arc.start, straight, alive)
        if arc.length + rest > value:
            value, chosen = arc.length + rest, [arc, *others]
    return chosen


def _coverage_batch(n: int, arcs: list[Arc], alive: BoolArray) -> IntArray:
    """The value of :func:`_best_circle` for every row of ``alive`` (shape (B, n)) at once."""

    def line(lo: int, hi: int) -> IntArray:
        best: list[IntArray] = [np.zeros(alive.shape[0], dtype=np.int64)] * (hi - lo + 1)
        for p in range(hi - 1, lo - 1, -1):
            current = best[p - lo + 1]
            for arc in straight[p]:
                end = p + arc.length
                if end <= hi:
                    current = np.where(
                        alive[:, arc.worker],
                        np.maximum(current, arc.length + best[end - lo]),
                        current,
                    )
            best[p - lo] = current
        return best[0]

    straight: list[list[Arc]] = [[] for _ in range(n)]
    for arc in arcs:
        if arc.start + arc.length <= n:
            straight[arc.start].append(arc)
    value = line(0, n)
    for arc in arcs:
        if arc.start + arc.length > n:
            through = arc.length + line(arc.start + arc.length - n, arc.start)
            value = np.where(alive[:, arc.worker], np.maximum(value, through), value)
    return value


def cyclic_worst_coverage(n: int, s: int, d: int, vectors_per_worker: int = 1) -> int:
    """min over straggler sets |S| = s of the partitions the disjoint-arc decoder recovers.

    The scheme is that of :func:`cyclic_partial`. It is invariant under rotating the workers and
    coverage can only grow when a straggler comes back, so the minimum is over the s-sets that
    contain worker 0: C(n-1, s-1) of them, all enumerated (vectorised DP, batches of patterns).
    Raises :class:`Infeasible` if there are more than ``CYCLIC_SEARCH_LIMIT``.

    >>> cyclic_worst_coverage(6, 2, 3), cyclic_worst_coverage(7, 1, 2)
    (6, 6)
    """
    n = _check_int(n, "n", 1)
    s = _check_int(s, "s", 0, n - 1)
    d = _check_int(d, "d", 1, n)
    vectors = _check_int(vectors_per_worker, "vectors_per_worker", 1)
    arcs = _cyclic_arcs(n, d, vectors)
    if s == 0:
        return int(_coverage_batch(n, arcs, np.ones((1, n), dtype=np.bool_))[0])
    if not is_enumerable(n - 1, s - 1, limit=CYCLIC_SEARCH_LIMIT):
        raise Infeasible(
            f"certifying a cyclic scheme with n={n}, s={s} needs C({n - 1},{s - 1})="
            f"{math.comb(n - 1, s - 1)} straggler patterns, above {CYCLIC_SEARCH_LIMIT}"
        )
    worst = n
    patterns = subsets(n - 1, s - 1, limit=CYCLIC_SEARCH_LIMIT)
    while batch := list(itertools.islice(patterns, _BATCH)):
        alive = np.ones((len(batch), n), dtype=np.bool_)
        alive[:, 0] = False
        if s > 1:
            others = np.array(batch, dtype=np.int64) + 1
            alive[np.arange(len(batch))[:, None], others] = False
        worst = min(worst, int(_coverage_batch(n, arcs, alive).min()))
    return worst


def cyclic_least_d(n: int, s: int, alpha: float | Fraction, vectors_per_worker: int = 1) -> int:
    """The least d for which the cyclic scheme recovers ceil(alpha n) partitions from every
    n - s workers, found by exhaustive search (:func:`cyclic_worst_coverage` for d = 1, 2, ...).

    d = n always works (every alive worker's chunks tile the cycle). Coverage is not monotone in
    d (arcs of length d tile the cycle only when d fits), hence the scan from 1.

    >>> cyclic_least_d(12, 4, 0.75), cyclic_formula_d(12, 4, 0.75)
    (3, 2)
    >>> cyclic_least_d(12, 4, 0.75, vectors_per_worker=2)
    2
    """
    n, s, exact_alpha = _check_code(n, s, alpha)
    vectors = _check_int(vectors_per_worker, "vectors_per_worker", 1)
    return _least_d(n, s, _ceil_fraction(exact_alpha * n), vectors)[0]


def _least_d(n: int, s: int, need: int, vectors: int) -> tuple[int, int]:
    """(least d, its worst-case coverage) for the cyclic scheme to recover ``need``."""
    for d in range(1, n + 1):
        worst = cyclic_worst_coverage(n, s, d, vectors)
        if worst >= need:
            return d, worst
    raise AssertionError("unreachable: d = n always recovers every partition")


@dataclass(frozen=True, eq=False)
class CyclicPartial(PartialRecoveryScheme):
    """n partitions on a cycle; worker i holds i..i+d-1 (mod n) and sends the sums of
    ``len(chunk_lengths)`` contiguous chunks of them.

    Decoder: among the chunks (arcs of the cycle) of the alive workers, take pairwise disjoint
    arcs covering the most partitions (exact weighted interval scheduling on a circle: cut at
    the one chosen arc through position 0, if any, then a DP on the line), each with coefficient
    1. General linear combinations can sometimes recover more, e.g. (g0+g1) + (g2+g3) - (g1+g2)
    = g0 + g3 recovers two partitions from overlapping arcs; this decoder does not use them, so
    the certified ``d`` is the least for the disjoint-arc decoder, not for every decoder.
    """

    d: int
    chunk_lengths: tuple[int, ...]
    #: papers.md's least d for one vector per worker (a lower bound, see cyclic_formula_d)
    formula_d: int
    #: min over |S| = s of the partitions recovered (exhaustive)
    worst_case_recovered: int
    arcs: tuple[Arc, ...]

    @property
    def messages(self) -> Messages:
        per_worker: list[list[tuple[int, ...]]] = [[] for _ in range(self.n_workers)]
        for arc in self.arcs:
            per_worker[arc.worker].append(
                tuple((arc.start + u) % self.n_workers for u in range(arc.length))
            )
        return tuple(tuple(m) for m in per_worker)

    @property
    def partitions_per_worker(self) -> int:
        return self.d

    @property
    def communication_load(self) -> int:
        return len(self.chunk_lengths)

    def _select(self, alive: BoolArray) -> tuple[IntArray, IntArray]:
        chosen = _best_circle(self.n_workers, list(self.arcs), alive)
        return (
            np.array([a.worker for a in chosen], dtype=np.int64),
            np.array([a.message for a in chosen], dtype=np.int64),
        )

    def _coverage(self, alive: BoolArray) -> BoolArray:
        covered = np.zeros(self.n_partitions, dtype=np.bool_)
        for arc in _best_circle(self.n_workers, list(self.arcs), alive):
            covered[(arc.start + np.arange(arc.length)) % self.n_workers] = True
        return covered


def cyclic_partial(
    n: int,
    s: int,
    alpha: float | Fraction,
    vectors_per_worker: int = 1,
    *,
    d: int | None = None,
) -> CyclicPartial:
    r"""The cyclic partial-recovery scheme with n partitions and the least certified d.

    Construction: worker i holds partitions i, i+1, ..., i+d-1 (mod n) (computation load d/n)
    and splits them into c = min(vectors_per_worker, d) contiguous chunks (sizes differing by at
    most one, longer first); it sends each chunk's gradient sum (communication load c). c = 1 is
    the cheapest in communication; c = d sends every partition separately, and then exactly the
    partitions with an alive holder are recovered, so d = max(1, s + 1 - floor(n(1 - alpha)))
    (:func:`cyclic_formula_d`) is both necessary and sufficient; in between, c trades vectors
    against load.

    ``d`` defaults to :func:`cyclic_least_d` (exhaustive over straggler patterns); an explicit
    ``d`` is checked the same way and :class:`Infeasible` is raised if some straggler set leaves
    fewer than ceil(alpha n) partitions, or if the patterns are too many to enumerate.

    Example
    -------
    >>> code = cyclic_partial(12, 4, 0.75)
    >>> code.d, code.communication_load, code.computation_load
    (3, 1, 0.25)
    >>> coefficients = code.decode({2, 5, 6, 9})
    >>> int(coefficients.sum()) >= code.min_recovered == 9
    True
    """
    n, s, exact_alpha = _check_code(n, s, alpha)
    vectors = _check_int(vectors_per_worker, "vectors_per_worker", 1)
    need = _ceil_fraction(exact_alpha * n)
    if d is None:
        d, worst = _least_d(n, s, need, vectors)
    else:
        d = _check_int(d, "d", 1, n)
        worst = cyclic_worst_coverage(n, s, d, vectors)
        if worst < need:
            raise Infeasible(
                f"cyclic scheme with n={n}, d={d}, {min(vectors, d)} vector(s) per worker: some "
                f"{s} stragglers leave only {worst} of the ceil(alpha n)={need} partitions needed"
            )
    return CyclicPartial(
        n_workers=n,
        n_partitions=n,
        stragglers=s,
        alpha=exact_alpha,
        lower_bound=partial_load_lower_bound(n, s, exact_alpha),
        d=d,
        chunk_lengths=_chunk_lengths(d, vectors),
        formula_d=cyclic_formula_d(n, s, exact_alpha),
        worst_case_recovered=worst,
        arcs=tuple(_cyclic_arcs(n, d, vectors)),
    )
