"""Flat (one-layer) gradient codes: fractional repetition, cyclic repetition and the universal
placement code.

Model (Tandon et al., ICML 2017). The data set is cut into k partitions with partial gradients
g_1..g_k. Worker i sends one vector ``B[i] @ [g_1..g_k]``. The code tolerates s stragglers when,
for every set A of at least n - s workers, some ``a`` supported on A has ``a @ B == targets``
(all ones for a plain gradient code), so that ``sum_i a_i (B[i] @ g) == sum_j targets_j g_j``.
Every worker then holds at least (s + 1) k / n partitions.

The universal construction (papers.md, section 1) works for ANY placement in which each
partition j is held by exactly s + 1 of the n workers (its holder set T_j). Take an [n, n - s]
real MDS code V (a subspace of R^n of dimension d = n - s whose projection onto any d
coordinates is one-to-one) and a linear functional psi on V. Column j of B is the codeword
c_j of V that vanishes outside T_j (an MDS code of minimum distance s + 1 has one, unique up
to scale), scaled so that ``psi(c_j) = targets_j``. For an alive set A with |A| = d, the
functional ``v -> a @ v`` with a supported on A equals psi on V for exactly one a (project V
onto A and invert), so ``a @ c_j = psi(c_j) = targets_j`` for every j. (This is papers.md's
recipe with V = row space of G and psi = phi in the basis G.)

Numerical quality. With Q an orthonormal basis of V and ``c_j = Q y_j``,
``B[A] = Q[A] Y`` and ``cond(B[A]) <= cond(Q[A]) cond(Y)``. The first factor depends on V
only: :func:`edgecode.codes._mds.mds_bases` chooses V to make its WORST alive set well
conditioned (over every alive set when they can be enumerated, through the smaller dual
problem). The second depends on the placement: ``draws`` assignments of V's rows to the
workers are compared on ``cond`` of the unit codewords' coordinates, and psi makes the
values ``psi(c_j / |c_j|)`` as equal as a linear programme can, so no column is blown up by a
small ``psi(c_j)``. Decoding vectors are refined once (:func:`~edgecode.codes._linalg.
solve_combination`) and cached. ``edgecode codes verify --table`` prints the worst condition
number and decoding error for every (n, s) with n <= 16 over every alive set.

Example
-------
>>> import numpy as np
>>> code = cyclic_repetition(6, 2)
>>> a = code.decode_vector([0, 2, 3, 5])
>>> bool(np.allclose(a @ code.B, 1.0))
True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog

from edgecode.codes._linalg import (
    FloatArray,
    condition,
    is_enumerable,
    max_load,
    normalize_alive,
    partitions_of_rows,
    solve_combination,
    worst_condition,
)
from edgecode.codes._mds import mds_bases
from edgecode.errors import NotDecodable

#: Assignments of the subspace's rows to workers compared when constructing a placement code.
DEFAULT_DRAWS = 8


@dataclass(eq=False)
class GradientCode:
    """A linear gradient code: ``B`` (n_workers, n_partitions) and the stragglers it tolerates.

    ``decode_vector(alive)`` returns ``a`` (n_workers,), zero outside ``alive``, with
    ``a @ B == targets``; it is cached per alive set.
    """

    B: FloatArray
    stragglers: int
    holders: tuple[tuple[int, ...], ...]
    name: str
    targets: FloatArray
    _cache: dict[tuple[int, ...], FloatArray] = field(default_factory=dict, repr=False)

    @property
    def n_workers(self) -> int:
        return int(self.B.shape[0])

    @property
    def n_partitions(self) -> int:
        return int(self.B.shape[1])

    @property
    def partitions_of_worker(self) -> tuple[tuple[int, ...], ...]:
        """For every worker, the partitions whose gradients it needs."""
        return partitions_of_rows(self.B)

    @property
    def load(self) -> float:
        """Largest fraction of the partitions held by one worker."""
        return max_load(self.B)

    @property
    def load_bound(self) -> float:
        """The lower bound (s + 1) / n on the load of any code tolerating s stragglers."""
        return (self.stragglers + 1) / self.n_workers

    def decode_vector(self, alive: Iterable[int]) -> FloatArray:
        """Decoding vector for the workers in ``alive`` (any set of size >= n - s).

        Raises :class:`~edgecode.errors.NotDecodable` (a ``ValueError``) when ``alive`` is too
        small or does not determine the targets.
        """
        key = normalize_alive(alive, self.n_workers)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if len(key) < self.n_workers - self.stragglers:
            raise NotDecodable(
                f"{self.name} code: {len(key)} workers alive, needs at least "
                f"{self.n_workers - self.stragglers} (n={self.n_workers}, s={self.stragglers})"
            )
        a = np.zeros(self.n_workers)
        a[list(key)] = solve_combination(self.B[list(key)], self.targets, f"{self.name} code")
        a.setflags(write=False)
        self._cache[key] = a
        return a

    def condition_number(self, rng: np.random.Generator | None = None) -> float:
        """Worst-case condition number of ``B[A]`` over alive sets A of size n - s.

        Every set is enumerated when there are at most ``ENUMERATION_LIMIT``; otherwise 2,000
        sets are sampled (with ``rng``, or a fixed seed) and the result is a lower estimate.
        """
        return worst_condition(self.B, self.n_workers - self.stragglers, rng)

    def condition_is_exact(self) -> bool:
        """Whether :meth:`condition_number` enumerates every alive set."""
        return is_enumerable(self.n_workers, self.n_workers - self.stragglers)


def _check_sizes(n: int, s: int) -> None:
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n (workers) must be a positive integer, got {n!r}")
    if not isinstance(s, int | np.integer) or not 0 <= s < n:
        raise ValueError(f"s (stragglers) must be an integer in [0, n-1] = [0, {n - 1}], got {s!r}")


def fractional_repetition(n: int, s: int) -> GradientCode:
    """Tandon's fractional repetition code: n / (s + 1) groups of s + 1 workers.

    Requires (s + 1) | n. The data set is cut into n partitions; group g holds partitions
    g(s+1) .. g(s+1)+s and each of its workers sends their plain sum. Any n - s alive workers
    leave at least one alive worker per group, and one message per group adds up to the full
    gradient. Load (s + 1) / n, which meets the bound.
    """
    _check_sizes(n, s)
    if n % (s + 1):
        raise ValueError(f"fractional repetition needs (s + 1) | n, got n={n}, s={s}")
    B = np.zeros((n, n))
    for worker in range(n):
        group = worker // (s + 1)
        B[worker, group * (s + 1) : (group + 1) * (s + 1)] = 1.0
    holders = tuple(
        tuple(range((j // (s + 1)) * (s + 1), (j // (s + 1) + 1) * (s + 1))) for j in range(n)
    )
    return GradientCode(B=B, stragglers=s, holders=holders, name="fractional", targets=np.ones(n))


def cyclic_holders(n: int, s: int) -> list[list[int]]:
    """Cyclic placement: worker i holds partitions i..i+s (mod n); partition j is held by
    workers j-s..j (mod n)."""
    return [sorted((j - u) % n for u in range(s + 1)) for j in range(n)]


def cyclic_repetition(n: int, s: int, seed: int = 0, draws: int = DEFAULT_DRAWS) -> GradientCode:
    """Tandon's cyclic repetition code: n partitions, worker i holds partitions i..i+s (mod n).

    Built with the universal construction on the cyclic placement; load (s + 1) / n.
    """
    _check_sizes(n, s)
    code = placement_code(cyclic_holders(n, s), n, s, seed=seed, draws=draws)
    code.name = "cyclic"
    return code


def placement_code(
    holders: Sequence[Sequence[int]],
    n: int,
    s: int,
    targets: Sequence[float] | FloatArray | None = None,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
) -> GradientCode:
    """The universal code for a placement where partition j is held by the workers
    ``holders[j]``, exactly s + 1 distinct ones out of n.

    ``targets`` (default all ones) are the coefficients the decoder must reproduce:
    ``decode_vector(A) @ B == targets`` for every alive set of size >= n - s. The inner codes of
    a hierarchical code use the edge-layer coefficients as targets. ``seed`` selects the
    subspace V (cached per (n, s, seed)); ``draws`` is the number of assignments of its rows to
    the workers compared (the first is the identity). See the module docstring.

    >>> code = placement_code([[0, 1], [1, 2], [2, 0]], 3, 1, targets=[1.0, 2.0, 3.0])
    >>> bool(np.allclose(code.decode_vector([0, 2]) @ code.B, [1.0, 2.0, 3.0]))
    True
    """
    _check_sizes(n, s)
    holder_sets = _validate_holders(holders, n, s)
    k = len(holder_sets)
    goal = np.ones(k) if targets is None else np.asarray(targets, dtype=np.float64)
    if goal.shape != (k,) or not np.all(np.isfinite(goal)):
        raise ValueError(f"targets must be {k} finite numbers, got shape {goal.shape}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if s == 0:
        # One holder per partition: the plain (uncoded) code, coefficient = target.
        B = np.zeros((n, k))
        for j, (holder,) in enumerate(holder_sets):
            B[holder, j] = goal[j]
        return GradientCode(B=B, stragglers=0, holders=holder_sets, name="uncoded", targets=goal)
    basis, dual = mds_bases(n, s, seed)
    rng = np.random.default_rng([seed, n, s, k])
    best: tuple[float, FloatArray, FloatArray] | None = None
    for draw in range(draws):
        # Which worker gets which row of the bases: the worst alive set does not care (it
        # ranges over all of them), but this placement's codewords do.
        order = np.arange(n) if draw == 0 else rng.permutation(n)
        codewords, directions = _unit_codewords(holder_sets, basis[order], dual[order])
        score = condition(directions)
        if best is None or score < best[0]:
            best = (score, codewords, directions)
    assert best is not None
    B = _scale_to_targets(best[1], best[2], goal)
    return GradientCode(B=B, stragglers=s, holders=holder_sets, name="placement", targets=goal)


def _validate_holders(
    holders: Sequence[Sequence[int]], n: int, s: int
) -> tuple[tuple[int, ...], ...]:
    if len(holders) == 0:
        raise ValueError("holders must name the holders of at least one partition")
    result = []
    for j, raw in enumerate(holders):
        nodes = normalize_alive(raw, n, name=f"holders[{j}]")
        if len(nodes) != s + 1 or len(nodes) != len(raw):
            raise ValueError(
                f"holders[{j}] must list exactly s + 1 = {s + 1} distinct workers, got {list(raw)}"
            )
        result.append(nodes)
    return tuple(result)


def _unit_codewords(
    holders: tuple[tuple[int, ...], ...], basis: FloatArray, dual: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Unit codewords ``c_j`` of V = span(basis) vanishing outside ``holders[j]`` (n x k), and
    their coordinates ``basis^T c_j`` (d x k, unit columns).

    ``basis`` (n x d) and ``dual`` (n x s) are orthonormal bases of V and of its complement.
    The codeword on T = holders[j] is the null vector of ``basis[outside T]`` (d - 1 rows)
    mapped by the basis, or directly the null vector of ``dual[T]^T`` (s rows) on T,
    whichever system is smaller.
    """
    n, d = basis.shape
    support = np.array(holders, dtype=np.intp)  # (k, s + 1)
    codewords = np.zeros((n, len(holders)))
    if dual.shape[1] < d:
        on_support = _null_vectors(dual[support].transpose(0, 2, 1))  # (k, s + 1)
    else:
        outside = np.array([np.setdiff1d(np.arange(n), held) for held in holders], dtype=np.intp)
        inside = _null_vectors(basis[outside]) @ basis.T  # (k, n): zero outside up to rounding
        on_support = np.take_along_axis(inside, support, axis=1)
    np.put_along_axis(codewords.T, support, on_support, axis=1)
    codewords /= np.linalg.norm(codewords, axis=0)
    return codewords, np.asarray(basis.T @ codewords, dtype=np.float64)


def _scale_to_targets(
    codewords: FloatArray, directions: FloatArray, targets: FloatArray
) -> FloatArray:
    """Column j of the code: ``codewords[:, j] * targets[j] / (psi @ directions[:, j])`` with
    one balanced functional psi, so that ``psi(c_j) = targets[j]`` for every j."""
    used = targets != 0.0
    psi = _balanced_functional(directions[:, used]) if used.any() else np.ones(len(directions))
    scale = np.divide(targets, psi @ directions, out=np.zeros(len(targets)), where=used)
    return np.asarray(codewords * scale, dtype=np.float64)


def _null_vectors(blocks: FloatArray) -> FloatArray:
    """For each block (m x (m + 1), full rank) a unit vector spanning its null space: the
    last column of the complete QR factor of the block's transpose."""
    if blocks.shape[1] == 0:
        return np.ones((blocks.shape[0], 1))
    q, _ = np.linalg.qr(blocks.transpose(0, 2, 1), mode="complete")
    return np.asarray(q[:, :, -1], dtype=np.float64)


def _balanced_functional(directions: FloatArray) -> FloatArray:
    """A functional psi with ``|psi @ y_j|`` as large as possible for the worst unit column
    y_j of ``directions`` (d x k), normalised so that the largest is 1.

    Column j of the code is ``y_j * targets[j] / (psi @ y_j)``, so a small ``psi @ y_j`` makes
    one column huge and the decoding matrices ill conditioned. The sign pattern comes from the
    top left singular vector (the most aligned direction); psi solves the linear programme
    ``max tau : sign_j (psi @ y_j) >= tau, -1 <= psi_i <= 1``. (Should the solver fail, the
    singular vector itself is used.)
    """
    d = directions.shape[0]
    start = np.linalg.svd(directions, full_matrices=False)[0][:, 0]
    signs = np.where(start @ directions >= 0.0, 1.0, -1.0)
    objective = np.zeros(d + 1)
    objective[-1] = -1.0
    constraints = np.hstack([-(directions * signs).T, np.ones((directions.shape[1], 1))])
    result = linprog(
        objective,
        A_ub=constraints,
        b_ub=np.zeros(directions.shape[1]),
        bounds=[(-1.0, 1.0)] * d + [(0.0, None)],
        method="highs",
    )
    psi: FloatArray = result.x[:d] if result.status == 0 else start
    normalised: FloatArray = psi / np.abs(psi @ directions).max()
    return normalised
