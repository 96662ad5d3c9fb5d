"""The exhaustive reference: the best structure over ALL of them, with the load rule.

Ranges over every ``s_edge < n'``, every non-empty subset of edges (``n'`` of them), every
non-empty subset of each selected edge's workers (``m_i'`` of them) and every
``s_worker_i < m_i'``, with the load rule (:mod:`edgecode.planning._rule`) at the given K (or
``K_max``) -- no refinement unless asked. The optimum is exact over that set: candidates are
ranked with a fast batched evaluation (:func:`_batch_values`) and every candidate within a safety
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
from edgecode.planning import _refine, _rule
from edgecode.planning._evaluate import (
    BoolArray,
    Evaluator,
    FloatArray,
    IntArray,
    Structure,
    default_max_partitions,
    partitions_argument,
    to_plan,
)
from edgecode.planning.spec import ClusterSpec, Plan
from edgecode.planning.timing import _count_tail

#: Largest enumeration exhaustive_optimum accepts.
EXHAUSTIVE_LIMIT = 250_000

_BATCH_NODES, _BATCH_WEIGHTS = np.polynomial.legendre.leggauss(6)


def _batch_values(
    cluster: _rule.Cluster, wmask: BoolArray, s_w: IntArray, s_e: IntArray, loads: IntArray, K: int
) -> FloatArray:
    """Expected times of a batch of structures with their loads, on a fixed Gauss-Legendre rule
    (one 8-point panel between consecutive breakpoints, geometric tail), all at once.

    Same model as :func:`edgecode.planning.timing.expected_round_time`; used to rank the
    exhaustive enumeration (finalists are re-evaluated adaptively).
    """
    B, n, m = wmask.shape
    emask: BoolArray = np.asarray(wmask.any(axis=-1))
    f = np.where(wmask, loads / K, 1.0)
    mixed = cluster.mixed
    if mixed:
        multiplier = np.stack([np.ones_like(cluster.slow), cluster.slow], axis=-1)
        weight = np.stack([1.0 - cluster.straggle, cluster.straggle], axis=-1)
    else:
        multiplier = np.ones((n, m, 1))
        weight = np.ones((n, m, 1))
    weight = np.where(wmask[..., None], weight, 0.0)  # (B, n, m, C)
    offsets = cluster.link[..., None] + f[..., None] * multiplier * cluster.shift[..., None]
    rates = cluster.rate[..., None] / (f[..., None] * multiplier)
    master = offsets + cluster.edge_link[:, None, None]
    present = weight > 0
    earliest = np.where(present, master, np.inf).min(axis=-1)  # (B, n, m)
    need = np.where(emask, wmask.sum(axis=-1) - s_w, 1)
    group_lo = np.take_along_axis(np.sort(earliest, axis=-1), (need - 1)[..., None], axis=-1)[
        ..., 0
    ]
    group_lo = np.where(emask, group_lo, np.inf)
    top_need = emask.sum(axis=-1) - s_e
    t_lo = np.take_along_axis(np.sort(group_lo, axis=-1), (top_need - 1)[:, None], axis=-1)[:, 0]
    fastest = np.where(present, rates, 0.0).max(axis=-1).sum(axis=(-1, -2))
    mean_lo = np.maximum(t_lo, np.where(wmask, earliest, np.inf).min(axis=(-1, -2)) + 1 / fastest)
    atol = 1e-8 * mean_lo[:, None, None, None]
    count = present.sum(axis=(-1, -2, -3))[:, None, None, None]
    room = np.log(np.maximum(4.0 * count * weight / (rates * atol), 1.0)) / rates
    t_hi = np.where(present, master + room, -np.inf).max(axis=(-1, -2, -3))
    t_hi = np.maximum(t_hi, t_lo)
    breaks = np.where(present, master, t_lo[:, None, None, None]).reshape(B, -1)
    breaks = np.clip(breaks, t_lo[:, None], t_hi[:, None])
    last = breaks.max(axis=-1)
    tail = last[:, None] + (t_hi - last)[:, None] * np.exp2(-2.5 * np.arange(5, 0, -1))
    bounds = np.sort(np.concatenate([t_lo[:, None], breaks, tail, t_hi[:, None]], axis=-1), -1)
    half = 0.5 * np.diff(bounds, axis=-1)
    nodes = (0.5 * (bounds[:, 1:] + bounds[:, :-1]))[..., None] + half[..., None] * _BATCH_NODES
    nodes = nodes.reshape(B, -1)
    weights = (half[..., None] * _BATCH_WEIGHTS).reshape(B, -1)
    x = nodes[:, None, None, None, :] - cluster.edge_link[None, :, None, None, None]
    delay = np.maximum(x - offsets[..., None], 0.0) * rates[..., None]
    w = weight[..., None]
    q = np.sum(w * np.exp(-delay), axis=3)  # (B, n, m, T)
    p = np.sum(w * -np.expm1(-delay), axis=3)
    slot_mask = wmask.copy()
    slot_mask[..., 0] |= ~emask  # an unselected edge: one dummy slot that never arrives
    T = nodes.shape[1]
    ge, lt = _count_tail(
        p.reshape(B * n, m, T),
        np.where(wmask[..., None], q, 1.0).reshape(B * n, m, T),
        slot_mask.reshape(B * n, m),
        need.reshape(B * n),
    )
    ge = np.where(emask[..., None], ge.reshape(B, n, T), 0.0)
    lt = np.where(emask[..., None], lt.reshape(B, n, T), 1.0)
    _, survival = _count_tail(ge, lt, emask, top_need)
    return np.asarray(t_lo + (survival * weights).sum(axis=-1))


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
    n = cluster.n
    inner: list[list[tuple[BoolArray, int]]] = []
    for i in range(n):
        size = int(cluster.sizes[i])
        options: list[tuple[BoolArray, int]] = []
        for r in range(1, size + 1):
            for subset in itertools.combinations(range(size), r):
                row = np.zeros(cluster.m, dtype=bool)
                row[list(subset)] = True
                options.extend((row, s) for s in range(r))
        inner.append(options)
    total = 0
    for r in range(1, n + 1):
        for edges in itertools.combinations(range(n), r):
            total += r * math.prod(len(inner[i]) for i in edges)
    if total > EXHAUSTIVE_LIMIT:
        raise ValueError(
            f"exhaustive_optimum: {total} structures exceed the limit "
            f"{EXHAUSTIVE_LIMIT}; use optimize()"
        )
    ranked: list[tuple[float, Structure]] = []
    batch: list[Structure] = []

    def flush() -> None:
        if not batch:
            return
        wmask = np.stack([st.wmask for st in batch])
        s_w = np.stack([st.s_w for st in batch])
        s_e = np.array([st.s_edge for st in batch], dtype=np.int64)
        _, loads, feasible, _ = _rule.apply(cluster, wmask, s_w, s_e, K, level)
        values = _batch_values(cluster, wmask, s_w, s_e, loads, K)
        ranked.extend(
            (float(v), st) for v, st, ok in zip(values, batch, feasible, strict=False) if ok
        )
        batch.clear()

    for r in range(1, n + 1):
        for edges in itertools.combinations(range(n), r):
            for combo in itertools.product(*(inner[i] for i in edges)):
                wmask = np.zeros((n, cluster.m), dtype=bool)
                s_w = np.zeros(n, dtype=np.int64)
                for i, (row, s) in zip(edges, combo, strict=True):
                    wmask[i] = row
                    s_w[i] = s
                for s_e in range(r):
                    batch.append(Structure(s_e, wmask, s_w))
                if len(batch) >= 2048:
                    flush()
    flush()
    if not ranked:
        raise Infeasible(f"no structure is feasible with K = {K} partitions")
    ranked.sort(key=lambda item: item[0])
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


__all__ = ["EXHAUSTIVE_LIMIT", "exhaustive_optimum"]
