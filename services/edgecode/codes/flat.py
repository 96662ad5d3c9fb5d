"""Flat (one-layer) gradient codes: fractional repetition, cyclic repetition and the universal
placement code.

Model (Tandon et al., ICML 2017). The data set is cut into k partitions with partial gradients
g_1..g_k. Worker i sends one vector ``B[i] @ [g_1..g_k]``. The code tolerates s stragglers when,
for every set A of at least n - s workers, some ``a`` supported on A has ``a @ B == targets``
(all ones for a plain gradient code), so that ``sum_i a_i (B[i] @ g) == sum_j targets_j g_j``.
Every worker then holds at least (s + 1) k / n partitions.

The universal construction (papers.md, section 1) works for ANY placement in which each
partition j is held by exactly s + 1 of the n workers (its holder set T_j): draw a generic
G in R^{(n-s) x n} and phi in R^{n-s}; the column of partition j is ``c_j = G^T m_j`` for the
(unique up to scale) m_j that makes c_j vanish outside T_j, scaled so that
``phi @ m_j == targets_j``. For an alive set A with |A| = n - s, ``G[:, A] a = phi`` gives
``a @ c_j = (G a) @ m_j = phi @ m_j = targets_j`` for every j. Coefficients are the best of
several seeded draws on the worst-case condition number over alive sets.

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

from edgecode.codes._linalg import (
    FloatArray,
    condition,
    is_enumerable,
    max_load,
    normalize_alive,
    partitions_of_rows,
    solve_combination,
    subsets,
)
from edgecode.errors import NotDecodable

#: Coefficient draws compared when constructing a placement code.
DEFAULT_DRAWS = 8
#: Alive sets scored per draw while choosing coefficients (all of them when fewer exist).
SELECTION_SETS = 300


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
        size = self.n_workers - self.stragglers
        return max(condition(self.B[list(alive)]) for alive in subsets(self.n_workers, size, rng))

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
    a hierarchical code use the edge-layer coefficients as targets.
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
    best: tuple[float, FloatArray] | None = None
    for draw in range(draws):
        rng = np.random.default_rng([seed, draw])
        B = _universal_columns(holder_sets, n, s, goal, rng)
        score = _worst_condition(B, n, s, np.random.default_rng([seed, draw, 1]))
        if best is None or score < best[0]:
            best = (score, B)
    assert best is not None
    return GradientCode(
        B=best[1], stragglers=s, holders=holder_sets, name="placement", targets=goal
    )


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


def _universal_columns(
    holders: tuple[tuple[int, ...], ...],
    n: int,
    s: int,
    targets: FloatArray,
    rng: np.random.Generator,
) -> FloatArray:
    generator = rng.standard_normal((n - s, n))
    phi = rng.standard_normal(n - s)
    B = np.zeros((n, len(holders)))
    for j, held_by in enumerate(holders):
        if targets[j] == 0.0:
            continue
        outside = np.setdiff1d(np.arange(n), held_by)
        if outside.size:
            # m_j spans the left null space of G[:, outside]: (G^T m_j) vanishes outside T_j.
            _, _, vt = np.linalg.svd(generator[:, outside].T)
            m_j = vt[-1]
        else:
            m_j = phi.copy()
        column = generator.T @ m_j
        column[outside] = 0.0
        B[:, j] = column * (targets[j] / (phi @ m_j))
    return B


def _worst_condition(B: FloatArray, n: int, s: int, rng: np.random.Generator) -> float:
    size = n - s
    worst = 0.0
    for alive in subsets(n, size, rng, limit=SELECTION_SETS, samples=SELECTION_SETS):
        worst = max(worst, condition(B[list(alive)]))
    return worst
