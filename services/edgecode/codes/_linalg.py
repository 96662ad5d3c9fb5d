"""Small linear-algebra and combinatorics helpers shared by the codes (private)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from edgecode.errors import NotDecodable

FloatArray = NDArray[np.float64]

#: Above this many subsets, worst-case searches sample instead of enumerating.
ENUMERATION_LIMIT = 20_000
#: Relative residual above which a decoding is declared impossible.
DECODE_TOLERANCE = 1e-8


def normalize_alive(alive: Iterable[int], n: int, name: str = "alive") -> tuple[int, ...]:
    """Return ``alive`` as a sorted tuple of distinct node indices in ``range(n)``."""
    try:
        nodes = sorted({int(i) for i in alive})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an iterable of node indices, got {alive!r}") from exc
    if nodes and (nodes[0] < 0 or nodes[-1] >= n):
        raise ValueError(f"{name} must hold indices in [0, {n}), got {nodes}")
    return tuple(nodes)


def subsets(
    n: int,
    size: int,
    rng: np.random.Generator | None = None,
    limit: int = ENUMERATION_LIMIT,
    samples: int = 2_000,
) -> Iterator[tuple[int, ...]]:
    """All ``size``-subsets of ``range(n)`` when there are at most ``limit`` of them, else
    ``samples`` uniformly drawn ones (with ``rng``; a fixed seed when none is given)."""
    if math.comb(n, size) <= limit:
        yield from itertools.combinations(range(n), size)
        return
    rng = rng if rng is not None else np.random.default_rng(0)
    for _ in range(samples):
        yield tuple(sorted(rng.choice(n, size=size, replace=False).tolist()))


def is_enumerable(n: int, size: int, limit: int = ENUMERATION_LIMIT) -> bool:
    """Whether :func:`subsets` enumerates every subset (rather than sampling)."""
    return math.comb(n, size) <= limit


def condition(matrix: FloatArray) -> float:
    """2-norm condition number over the non-zero singular values (inf when all vanish)."""
    return float(conditions(matrix[np.newaxis])[0])


def conditions(matrices: FloatArray) -> FloatArray:
    """:func:`condition` of every matrix in a stack (N, m, k), from one batched SVD.

    Singular values below ``sigma_max * max(m, k) * 16 eps`` count as zero (numerical rank).
    A matrix with a non-finite entry gets NaN.
    """
    if matrices.shape[0] == 0:
        return np.zeros(0)
    if matrices.shape[1] == 0 or matrices.shape[2] == 0:
        return np.full(matrices.shape[0], math.inf)
    finite = np.isfinite(matrices).all(axis=(1, 2))
    if not finite.all():  # NaN for a matrix holding a non-finite entry (an SVD would fail)
        partial = np.full(matrices.shape[0], math.nan)
        partial[finite] = conditions(matrices[finite])
        return partial
    singular = np.linalg.svd(matrices, compute_uv=False)
    top = singular[:, 0]
    cut = top * max(matrices.shape[1:]) * np.finfo(np.float64).eps * 16
    kept = np.where(singular > cut[:, None], singular, np.inf).min(axis=1)
    # top == 0 leaves kept = inf (no division by zero); then the matrix has no rank at all.
    ratio: FloatArray = np.where(top > 0.0, top / kept, math.inf)
    return ratio


def worst_condition(
    B: FloatArray, size: int, rng: np.random.Generator | None = None, chunk: int = 4096
) -> float:
    """Largest :func:`condition` of ``B[A]`` over the ``size``-subsets A of its rows (every one
    up to ``ENUMERATION_LIMIT``, else the sample of :func:`subsets`), batched ``chunk`` at a
    time; NaN when a coefficient is not finite."""
    index = np.array(list(subsets(B.shape[0], size, rng)), dtype=np.intp).reshape(-1, size)
    values = [conditions(B[index[start : start + chunk]]) for start in range(0, len(index), chunk)]
    return float(np.max(np.concatenate(values)))  # np.max keeps a NaN


def solve_combination(rows: FloatArray, target: FloatArray, what: str) -> FloatArray:
    """Minimum-norm ``a`` with ``a @ rows == target``; :class:`NotDecodable` when none exists.

    ``rows`` is (m, k): the messages available; ``target`` is (k,). The minimum-norm solution
    spreads weight over redundant messages, which averages rounding errors instead of adding them.
    One step of iterative refinement follows, with the residual ``target - a @ rows`` computed
    in twice the working precision (:func:`accurate_residual`): whatever LAPACK driver solved
    the least-squares problem, the returned ``a`` then meets ``a @ rows == target`` to about
    eps * |target| in exact arithmetic.
    """
    if not np.all(np.isfinite(rows)):
        raise NotDecodable(f"{what}: the messages' coefficients are not all finite")
    solve = _pseudo_inverse_solver(rows)
    solution = solve(target)
    solution = solution + solve(accurate_residual(rows, solution, target))
    residual = float(np.linalg.norm(solution @ rows - target))
    # A non-finite target makes the residual NaN, which fails the test too.
    if not residual <= DECODE_TOLERANCE * float(np.linalg.norm(target)) * max(
        1.0, float(np.linalg.norm(solution)) * float(np.abs(rows).max(initial=1.0))
    ):
        raise NotDecodable(f"{what}: the target is not a combination of the messages that arrived")
    return solution


def _pseudo_inverse_solver(rows: FloatArray) -> Callable[[FloatArray], FloatArray]:
    """``y -> `` the minimum-norm ``a`` minimising ``|a @ rows - y|`` (what ``lstsq`` returns),
    from one SVD of ``rows`` reused for the refinement step."""
    if rows.size == 0:
        return lambda y: np.zeros(rows.shape[0])
    u, singular, vt = np.linalg.svd(rows, full_matrices=False)  # rows = u diag(singular) vt
    # Singular values below the rounding level of the largest are rank deficiency, not signal:
    # inverting them would blow rounding errors up.
    keep = singular > singular[0] * max(rows.shape) * np.finfo(np.float64).eps
    inverse = np.zeros_like(singular)
    inverse[keep] = 1.0 / singular[keep]

    def solve(y: FloatArray) -> FloatArray:
        result: FloatArray = u @ (inverse * (vt @ y))
        return result

    return solve


#: Dekker's splitting constant 2^27 + 1: x = hi + lo with hi, lo of at most 26 bits each.
_SPLIT = 134_217_729.0


def accurate_residual(rows: FloatArray, solution: FloatArray, target: FloatArray) -> FloatArray:
    """``target - solution @ rows`` as if computed in twice the working precision, then rounded.

    In the manner of Ogita, Rump and Oishi's Dot2 (SIAM J. Sci. Comput. 2005): every product
    ``a_i rows[i, j]`` is split exactly into a float and its rounding error (Dekker's
    TwoProduct), the terms are added pairwise in a tree whose every addition is split exactly
    too (Knuth's TwoSum), and the errors are added at the end. The error is at most about
    ``eps |result| + m eps^2 sum_i |a_i rows[i, j]|``. Plain elementwise numpy arithmetic (no
    BLAS, no fused multiply-add), so every machine gives the same bits.
    """
    a = solution[:, np.newaxis]
    products = a * rows
    a_hi, a_lo = _split(a)
    rows_hi, rows_lo = _split(rows)
    errors = (((a_hi * rows_hi - products) + a_hi * rows_lo + a_lo * rows_hi) + a_lo * rows_lo).sum(
        axis=0
    )
    terms = np.vstack([-target[np.newaxis], products])
    while terms.shape[0] > 1:
        if terms.shape[0] % 2:
            terms = np.vstack([terms, np.zeros((1, terms.shape[1]))])
        left, right = terms[0::2], terms[1::2]
        sums = left + right
        virtual = sums - left
        errors = errors + ((left - (sums - virtual)) + (right - virtual)).sum(axis=0)
        terms = sums
    result: FloatArray = -(terms[0] + errors)
    return result


def _split(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    scaled = _SPLIT * x
    high = scaled - (scaled - x)
    return high, x - high


def cyclic_fill(slot_counts: Sequence[int], n_items: int) -> list[list[int]]:
    """Hand ``n_items`` items to holders so that holder h gets ``slot_counts[h]`` distinct items.

    Slots are laid out holder after holder and slot t takes item ``t mod n_items``; as long as
    every count is at most ``n_items`` the items a holder gets are distinct, and when the counts
    add up to ``n_items * r`` every item ends with exactly r distinct holders.
    Returns ``items_of_holder``.
    """
    items_of_holder: list[list[int]] = []
    t = 0
    for count in slot_counts:
        if count > n_items:
            raise ValueError(f"a holder cannot take {count} distinct items out of {n_items}")
        items_of_holder.append(sorted((t + u) % n_items for u in range(count)))
        t += count
    return items_of_holder


def holders_of_items(items_of_holder: Sequence[Sequence[int]], n_items: int) -> list[list[int]]:
    """Invert a placement: for every item, the sorted list of its holders."""
    holders: list[list[int]] = [[] for _ in range(n_items)]
    for h, items in enumerate(items_of_holder):
        for j in items:
            holders[j].append(h)
    return holders


def partitions_of_rows(B: FloatArray) -> tuple[tuple[int, ...], ...]:
    """For every row (worker) of a coefficient matrix, the columns (partitions) it uses."""
    return tuple(tuple(int(j) for j in np.flatnonzero(row)) for row in B)


def max_load(B: FloatArray) -> float:
    """Largest fraction of the columns used by one row: a code's computation load."""
    return max(int(np.count_nonzero(row)) for row in B) / int(B.shape[1])
