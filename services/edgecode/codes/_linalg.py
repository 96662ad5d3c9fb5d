"""Small linear-algebra and combinatorics helpers shared by the codes (private)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence

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
    singular = np.linalg.svd(matrix, compute_uv=False)
    if singular.size == 0 or singular[0] == 0.0:
        return math.inf
    rank_cut = singular[0] * max(matrix.shape) * np.finfo(np.float64).eps * 16
    kept = singular[singular > rank_cut]
    return float(kept[0] / kept[-1])


def solve_combination(rows: FloatArray, target: FloatArray, what: str) -> FloatArray:
    """Minimum-norm ``a`` with ``a @ rows == target``; :class:`NotDecodable` when none exists.

    ``rows`` is (m, k): the messages available; ``target`` is (k,). The minimum-norm solution
    spreads weight over redundant messages, which averages rounding errors instead of adding them.
    """
    solution, *_ = np.linalg.lstsq(rows.T, target, rcond=None)
    residual = float(np.linalg.norm(solution @ rows - target))
    scale = float(np.linalg.norm(target)) or 1.0
    if not np.all(np.isfinite(solution)) or residual > DECODE_TOLERANCE * scale * max(
        1.0, float(np.linalg.norm(solution)) * float(np.abs(rows).max(initial=1.0))
    ):
        raise NotDecodable(f"{what}: the target is not a combination of the messages that arrived")
    return np.asarray(solution, dtype=np.float64)


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
