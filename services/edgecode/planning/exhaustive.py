"""The exhaustive reference: the best structure over ALL of them, with the load rule.

Ranges over every ``s_edge < n'``, every non-empty subset of edges (``n'`` of them), every
non-empty subset of each selected edge's workers (``m_i'`` of them) and every
``s_worker_i < m_i'``, with the load rule (:mod:`edgecode.planning._rule`) at the given K (or
``K_max``) -- no refinement unless asked. The optimum is exact over that set: candidates are
ranked with a fast batched evaluation (:mod:`edgecode.planning._batch`) and every candidate within a safety
band of the best is re-evaluated exactly. Tests compare :func:`edgecode.planning.optimize.optimize`
with it on small clusters.

Example
-------
>>> from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec
>>> workers = tuple(WorkerSpec(f"w{j}", 0.1 * (j + 1), 5.0) for j in range(3))
>>> spec = ClusterSpec(edges=(EdgeSpec("e", workers),), partitions=12)
>>> plan = exhaustive_optimum(spec)
>>> plan.extra["structures"]  # 7 worker subsets with 1 + 1 + 1 + 2 + 2 + 2 + 3 tolerances
12
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from edgecode.errors import Infeasible
from edgecode.planning import _batch, _refine, _rule
from edgecode.planning._evaluate import (
    BoolArray,
    Evaluator,
    Structure,
    default_max_partitions,
    partitions_argument,
    to_plan,
)
from edgecode.planning.spec import ClusterSpec, Plan

#: Largest enumeration exhaustive_optimum accepts.
EXHAUSTIVE_LIMIT = 250_000


def exhaustive_optimum(
    spec: ClusterSpec,
    partitions: int | None = None,
    *,
    max_partitions: int | None = None,
    refine: bool = False,
    level: float = 0.5,
    band: float = 0.005,
) -> Plan:
    """The best plan over ALL structures with the load rule (small clusters only).

    Ranges over every ``s_edge``, every non-empty subset of edges, every non-empty subset of
    each selected edge's workers and every ``s_worker_i`` below that subset's size, with the
    rule's loads at K = ``partitions`` / ``spec.partitions`` / ``max_partitions`` (default
    :func:`default_max_partitions`; K is NOT re-chosen). Candidates are evaluated at a loose
    tolerance, then all within ``band`` (relative) of the best are re-evaluated at 1e-10.
    With ``refine`` the winner's loads are refined as in :func:`optimize`. Raises
    ``ValueError`` when the enumeration exceeds ``EXHAUSTIVE_LIMIT`` structures.
    ``plan.extra["structures"]`` is the number enumerated.
    """
    cluster = _rule.cluster_arrays(spec)
    fixed = partitions_argument(spec, partitions)
    K = fixed if fixed is not None else (max_partitions or default_max_partitions(spec.n_workers))
    inner = _inner_options(cluster)
    total = sum(
        r * math.prod(len(inner[i]) for i in edges)
        for r in range(1, cluster.n + 1)
        for edges in itertools.combinations(range(cluster.n), r)
    )
    if total > EXHAUSTIVE_LIMIT:
        raise ValueError(
            f"exhaustive_optimum: {total} structures exceed the limit "
            f"{EXHAUSTIVE_LIMIT}; use optimize()"
        )
    ranked = _ranked(cluster, inner, K, level)
    if not ranked:
        raise Infeasible(f"no structure is feasible with K = {K} partitions")
    cutoff = ranked[0][0] * (1 + band)
    finalists = [s for v, s in ranked if v <= cutoff]
    exact = Evaluator(cluster, K, level, rtol=1e-10, max_breaks=None)
    exact_values = exact.evaluate(finalists)
    error = max(
        abs(r.value - v) / r.value for (v, _), r in zip(ranked, exact_values, strict=False) if r
    )
    if error > band / 4:
        raise RuntimeError(
            f"exhaustive_optimum: ranking error {error:.2e} too large for the band {band}"
        )
    best = exact.best(finalists)
    assert best is not None
    info = {
        "structures": total,
        "finalists": len(finalists),
        "ranking_error": error,
        "rule_seconds": best.value,
    }
    plan = to_plan(cluster, K, best, dict(info))
    if refine:
        refined = to_plan(cluster, K, _refine.refine(exact, best, 40), dict(info))
        assert refined.expected_round_seconds is not None
        assert plan.expected_round_seconds is not None
        if refined.expected_round_seconds < plan.expected_round_seconds:
            plan = refined
    return plan


def _inner_options(cluster: _rule.Cluster) -> list[list[tuple[BoolArray, int]]]:
    """Per edge: every non-empty subset of its workers with every s_worker below its size."""
    inner = []
    for i in range(cluster.n):
        size = int(cluster.sizes[i])
        options: list[tuple[BoolArray, int]] = []
        for r in range(1, size + 1):
            for subset in itertools.combinations(range(size), r):
                row = np.zeros(cluster.m, dtype=bool)
                row[list(subset)] = True
                options.extend((row, s) for s in range(r))
        inner.append(options)
    return inner


def _ranked(
    cluster: _rule.Cluster, inner: list[list[tuple[BoolArray, int]]], K: int, level: float
) -> list[tuple[float, Structure]]:
    """Every feasible structure with its expected time on a fixed rule (every kink, 6-point
    Gauss-Legendre panels), best first, evaluated in batches."""
    n = cluster.n
    ranked: list[tuple[float, Structure]] = []
    batch: list[Structure] = []

    def flush() -> None:
        wmask = np.stack([st.wmask for st in batch])
        s_w = np.stack([st.s_w for st in batch])
        s_e = np.array([st.s_edge for st in batch], dtype=np.int64)
        _, loads, feasible, _ = _rule.apply(cluster, wmask, s_w, s_e, K, level)
        keep = np.nonzero(feasible)[0]
        if keep.size:
            values = _batch.expected_times(
                cluster, wmask[keep], s_w[keep], s_e[keep], loads[keep], K, None, order=6
            )
            ranked.extend((float(v), batch[b]) for v, b in zip(values, keep, strict=True))
        batch.clear()

    for r in range(1, n + 1):
        for edges in itertools.combinations(range(n), r):
            for combo in itertools.product(*(inner[i] for i in edges)):
                wmask = np.zeros((n, cluster.m), dtype=bool)
                s_w = np.zeros(n, dtype=np.int64)
                for i, (row, s) in zip(edges, combo, strict=True):
                    wmask[i] = row
                    s_w[i] = s
                batch.extend(Structure(s_e, wmask, s_w) for s_e in range(r))
                if len(batch) >= 2048:
                    flush()
    if batch:
        flush()
    ranked.sort(key=lambda item: item[0])
    return ranked


__all__ = ["EXHAUSTIVE_LIMIT", "exhaustive_optimum"]
