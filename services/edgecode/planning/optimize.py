"""The planner: choose nodes, tolerances, K and unequal loads that minimise the expected round time.

What is optimised
-----------------
A plan (see :mod:`edgecode.planning.plans`) is a *structure* -- which edges and workers take
part, ``s_edge`` and ``s_worker_i`` for every selected edge -- plus integer counts ``K``,
``c_i``, ``l_w``. The objective is the exact expected round time
(:func:`edgecode.planning.timing.expected_round_time`).

Load rule (for a fixed structure and K)
---------------------------------------
Loads equalise the workers' finish quantiles, faster workers getting more (``_rule.py``):

1. the master waits for ``k_e = n - s_edge`` of ``n`` edges; the level
   ``p_top = I^{-1}_{1/2}(k_e, s_edge + 1)`` is the median of the ``k_e``-th order statistic of
   ``n`` uniforms. Edge i waits for ``k_i = m_i - s_worker_i`` workers; its workers' level
   ``p_i = I^{-1}_{p_top}(k_i, s_worker_i + 1)`` makes "``k_i`` of ``m_i`` arrived" happen with
   probability ``p_top`` when every worker is at its ``p_i``-quantile;
2. ``a_w`` = the ``p_i``-quantile of worker w's time per unit of data, ``(shift + X) M``;
3. continuous coverages ``g_i`` (``sum g_i = s_edge + 1``, ``g_i <= 1``) and shares are the
   water-filling solution that makes every selected worker's representative arrival
   ``g_i u_w a_w + link_w + link_i`` equal (capped at ``u_w <= 1``, ``g_i <= 1``);
4. integer counts: ``c_i`` near ``K g_i`` and ``l_w`` near ``c_i u_w`` with the exact sums,
   rounded so as to minimise the largest representative arrival (min-max).

Search (``optimize``)
---------------------
Small clusters (at most ``SMALL_CLUSTER`` = 16 workers): from every ``s_edge`` and every
uniform ``s_worker``, steepest descent over the complete neighbourhood (one ``s_worker`` to any
value, one worker or one edge in or out with any tolerances, any ``s_edge``) until no move
improves -- on every cluster tested this reaches the exhaustive optimum of the rule.

Larger clusters: a scan of ``s_edge`` (every value up to ``FULL_S_EDGE_SCAN`` = 8 edges, else a
geometric grid and the neighbours of its best) with uniform ``s_worker``, then coordinate
descent from the best one or two. Moves of edge i's inner configuration (another ``s_worker_i``,
one worker out or back in) are *screened* all at once: at the current master level Theta the
rule would give the edge the coverage ``cap_i(Theta - link_i)`` of its new configuration, which
changes ``P(T > t)`` by exactly ``-B_i(t) (G_i'(t) - G_i(t))`` (``B_i`` = probability that
exactly ``k_e - 1`` of the other edges have delivered, ``G_i`` = edge i's delivery CDF), while
the other edges absorb the coverage difference at their marginal cost ``dE/dg_j`` (measured by a
small coverage probe of each edge the same way). The best screened moves (all edges' together,
and the three best alone) are then evaluated with the rule's re-equalised loads; ``s_edge +- 1``
and the two least-covered edges out are tried directly. The number of evaluations is budgeted
(``max(80, min(400, 150000 / N))`` beyond 16 workers), so large clusters stop early.

When K is free, the search runs at ``K_max`` (:func:`default_max_partitions`); for up to 64
workers K is then chosen among a few candidates (multiples of N and of 12, 24, 60, 120) by the
rule's expected time.

Refinement
----------
The rule is a heuristic; the best one or two structures' loads are then refined by projected
gradient descent (40 steps up to 64 workers, 12 up to 300, else 3) on the continuous loads (shares ``u_w`` per edge on ``{sum u = s_w + 1, u <= 1}``,
coverages ``g_i`` on ``{sum g = s_edge + 1, g <= 1}``), with the exact gradient
``dE/df_w = -integral B_j(t) D_w(t) dF_w(t)/df_w dt`` (``D_w`` = probability that exactly
``k_j - 1`` of the other workers of edge j have arrived), then rounded to integers with the exact
sums. The refined plan is kept only when its exact expected time is lower.

Exhaustive search (``exhaustive_optimum``)
------------------------------------------
Ranges over every ``s_edge < n'``, every non-empty subset of edges (``n'`` of them), every
non-empty subset of each selected edge's workers (``m_i'`` of them) and every
``s_worker_i < m_i'``, with the load rule above at the given K (or ``K_max``) -- no
refinement unless asked. The optimum is exact over that set: candidates are ranked with a fast
evaluation and every candidate within a safety band of the best is re-evaluated exactly.

Example
-------
>>> from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec
>>> fast = [WorkerSpec(f"f{j}", 0.05, 20.0) for j in range(3)]
>>> slow = [WorkerSpec(f"s{j}", 0.20, 4.0) for j in range(3)]
>>> spec = ClusterSpec(edges=(EdgeSpec("a", tuple(fast)), EdgeSpec("b", tuple(slow))))
>>> plan = optimize(spec)
>>> check_plan(plan, spec)
>>> plan.expected_round_seconds < expected_round_time(spec, uncoded_plan(spec))
True
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import betaincinv

from edgecode.errors import Infeasible
from edgecode.planning import _rule
from edgecode.planning.plans import build_plan, check_plan, one_layer_plan
from edgecode.planning.spec import ClusterSpec, EdgeSpec, Plan, WorkerSpec
from edgecode.planning.timing import (
    _GL_NODES,
    _GL_WEIGHTS,
    _arrival_probabilities,
    _boundaries,
    _count_tail,
    _deliveries,
    _expected_time,
    _expected_time_and_gradient,
    _GroupModel,
    _model_from_arrays,
    _pivotal,
    _quick_expected_time,
    expected_round_time,
)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

#: Integration tolerance of the search's evaluations (the returned plan is evaluated at 1e-10).
SEARCH_RTOL = 1e-6
#: Search evaluations use one Gauss-Legendre panel per interval between at most this many
#: breakpoints (no error control); final plans are evaluated adaptively with all of them.
SEARCH_BREAKS = 64
#: Up to this many edges every s_edge is searched.
FULL_S_EDGE_SCAN = 8
#: Clusters with at most this many workers get the complete local-search neighbourhood.
SMALL_CLUSTER = 16
#: Largest enumeration exhaustive_optimum accepts.
EXHAUSTIVE_LIMIT = 250_000


def default_max_partitions(n_workers: int) -> int:
    """``K_max = 240 * ceil(N / 20)``: at least 12 partitions per worker at zero redundancy."""
    return 240 * max(1, math.ceil(n_workers / 20))


# --------------------------------------------------------------------------------------------
# structures and their evaluation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Structure:
    s_edge: int
    wmask: BoolArray  # (n, m)
    s_w: IntArray  # (n,)

    def key(self) -> bytes:
        return (
            bytes([self.s_edge % 256, self.s_edge // 256])
            + self.wmask.tobytes()
            + self.s_w.astype(np.int64).tobytes()
        )

    @property
    def emask(self) -> BoolArray:
        return np.asarray(self.wmask.any(axis=1))


@dataclass
class _Result:
    value: float
    structure: _Structure
    c: IntArray
    l: IntArray
    theta: float = math.nan


@dataclass
class _Evaluator:
    cluster: _rule.Cluster
    K: int
    level: float = 0.5
    rtol: float = SEARCH_RTOL
    max_breaks: int | None = SEARCH_BREAKS
    cache: dict[bytes, _Result | None] = field(default_factory=dict)
    evaluations: int = 0
    #: the search stops starting new descent rounds beyond this many evaluations
    budget: int = 10**9

    @property
    def exhausted(self) -> bool:
        return self.evaluations >= self.budget

    def evaluate(self, structures: Sequence[_Structure]) -> list[_Result | None]:
        """Rule + expected time for each structure (None when infeasible at this K)."""
        todo = [s for s in structures if s.key() not in self.cache]
        unique: dict[bytes, _Structure] = {s.key(): s for s in todo}
        if unique:
            batch = list(unique.values())
            wmask = np.stack([s.wmask for s in batch])
            s_w = np.stack([s.s_w for s in batch])
            s_e = np.array([s.s_edge for s in batch], dtype=np.int64)
            c, l, feasible, theta = _rule.apply(self.cluster, wmask, s_w, s_e, self.K, self.level)
            for b, structure in enumerate(batch):
                if not feasible[b]:
                    self.cache[structure.key()] = None
                    continue
                model = _rule.model(
                    self.cluster, structure.wmask, structure.s_w, structure.s_edge, l[b], self.K
                )
                if self.max_breaks is None:
                    value = _expected_time(model, self.rtol)
                else:
                    value = _quick_expected_time(model, self.max_breaks)
                self.evaluations += 1
                self.cache[structure.key()] = _Result(value, structure, c[b], l[b], float(theta[b]))
        return [self.cache[s.key()] for s in structures]

    def best(self, structures: Sequence[_Structure]) -> _Result | None:
        results = [r for r in self.evaluate(structures) if r is not None]
        return min(results, key=lambda r: r.value) if results else None


def _valid(structure: _Structure) -> bool:
    m_sel = structure.wmask.sum(axis=1)
    emask = m_sel > 0
    if not emask.any() or structure.s_edge < 0 or structure.s_edge >= emask.sum():
        return False
    return bool(
        np.all((structure.s_w >= 0) & np.where(emask, structure.s_w < m_sel, structure.s_w == 0))
    )


# --------------------------------------------------------------------------------------------
# screening of inner moves (fixed coverage): dE = -integral B_i(t) (G_i'(t) - G_i(t)) dt
# --------------------------------------------------------------------------------------------


def _inner_candidates(
    structure: _Structure,
    result: _Result,
    cluster: _rule.Cluster,
    i: int,
    full: bool,
    coarse: bool = False,
) -> list[tuple[BoolArray, int]]:
    """Inner moves of edge i: another s_worker, one worker out or one back in.

    ``full``: every s_worker and every worker. Otherwise every s_worker (within +-4 beyond 12
    workers), the 4 (beyond 12 workers: 2) workers with the smallest loads out, and as many of
    the fastest unselected workers (mean per-unit time) back in. ``coarse`` (many edges):
    s_worker within +-2 and 2 workers each way.
    """
    row = structure.wmask[i]
    size = int(row.sum())
    s_w = int(structure.s_w[i])
    members = np.nonzero(row)[0]
    outside = np.nonzero(~row & cluster.mask[i])[0]
    if full or (size <= 12 and not coarse):
        span: Iterable[int] = range(size)
    else:
        reach = 2 if coarse else 4
        span = range(max(0, s_w - reach), min(size, s_w + reach + 1))
    if not full:
        few = 4 if size <= 12 and not coarse else 2
        members = members[np.argsort(result.l[i, members], kind="stable")[:few]]
        speed = cluster.shift[i, outside] + 1.0 / cluster.rate[i, outside]
        outside = outside[np.argsort(speed, kind="stable")[:few]]
    out: list[tuple[BoolArray, int]] = []
    for s in span:
        if s != s_w and 0 <= s < size:
            out.append((row, s))
    if size >= 2:
        for w in members:
            smaller = row.copy()
            smaller[w] = False
            for s in sorted({min(s_w, size - 2), max(0, s_w - 1)}):
                out.append((smaller, s))
    for w in outside:
        larger = row.copy()
        larger[w] = True
        for s in (s_w, s_w + 1):
            out.append((larger, s))
    return out


def _screen(
    ev: _Evaluator, current: _Result, full: bool
) -> list[tuple[float, int, BoolArray, int]]:
    """Predicted change of E[T] of every inner move of every selected edge (fixed coverages)."""
    cl = ev.cluster
    st = current.structure
    model = _rule.model(cl, st.wmask, st.s_w, st.s_edge, current.l, ev.K)
    # A fixed (non-adaptive) rule is enough to rank moves: Gauss-Legendre panels between
    # (at most 24) breakpoints, and 8 panels below t_lo where a faster candidate may matter.
    t_lo, _, boundaries = _boundaries(model, 1e-6, 12)
    if t_lo > 0:
        boundaries = np.concatenate([np.linspace(0.0, t_lo, 5)[:-1], boundaries])
    half = 0.5 * np.diff(boundaries)
    nodes = (
        (0.5 * (boundaries[1:] + boundaries[:-1]))[:, None] + half[:, None] * _GL_NODES
    ).ravel()
    weights = (half[:, None] * _GL_WEIGHTS).ravel()
    ge, lt = _deliveries(model, nodes)
    pivot = _pivotal(ge, lt, model.top_need)  # (g, T) over selected edges
    rows = np.nonzero(st.emask)[0]
    n_sel = rows.size
    k_e = n_sel - st.s_edge
    p_top = float(betaincinv(k_e, st.s_edge + 1, ev.level))
    moves: list[tuple[int, BoolArray, int]] = []
    coarse = not full and n_sel > FULL_S_EDGE_SCAN * 3
    for g_index, i in enumerate(rows):
        for mask_row, s in _inner_candidates(st, current, cl, int(i), full, coarse):
            moves.append((g_index, mask_row, s))
    # One probe per edge: same configuration, a little more coverage (marginal cost dE/dg).
    probes = len(moves)
    for g_index, i in enumerate(rows):
        moves.append((g_index, st.wmask[i], int(st.s_w[i])))
    index = np.array([rows[g] for g, _, _ in moves])
    group = np.array([g for g, _, _ in moves])
    wmask = np.stack([mk for _, mk, _ in moves])[:, None, :]
    s_w = np.array([s for _, _, s in moves], dtype=np.int64)[:, None]
    sub = _rule.Cluster(
        spec=cl.spec,
        sizes=cl.sizes[index],
        mask=cl.mask[index][:, None],
        shift=cl.shift[index][:, None],
        rate=cl.rate[index][:, None],
        link=cl.link[index][:, None],
        straggle=cl.straggle[index][:, None],
        slow=cl.slow[index][:, None],
        edge_link=cl.edge_link[index][:, None],
    )
    k = wmask.sum(axis=-1) - s_w
    p = np.asarray(betaincinv(k, s_w + 1, p_top), dtype=np.float64)
    a = _rule.unit_costs(sub, p)
    # The rule gives a changed edge the coverage it serves by the current master level Theta;
    # the other edges absorb the difference at their marginal cost dE/dg (first order).
    level_at_edge = np.array([[current.theta]]) - sub.edge_link
    cover = np.minimum(_rule.edge_capacity(a, sub.link, wmask, s_w, level_at_edge), 1.0)[:, 0]
    lower = -(-wmask[:, 0].sum(axis=-1) // (s_w[:, 0] + 1))
    c_new = np.clip(np.round(cover * ev.K).astype(np.int64), lower, ev.K)
    c_old = current.c[index]
    if n_sel == 1:
        c_new = c_old.copy()
    step = np.maximum(1, c_old[probes:] // 50)
    c_new[probes:] = c_old[probes:] + step
    loads = _rule.worker_loads(sub, a, wmask, s_w, c_new[:, None], ev.K)[:, 0]
    sel = wmask[:, 0]
    cand = _model_from_arrays(
        fractions=loads / ev.K,
        shifts=cl.shift[index],
        rates=cl.rate[index],
        worker_links=cl.link[index],
        straggle=cl.straggle[index],
        slow=cl.slow[index],
        mask=sel,
        need=sel.sum(axis=-1) - s_w[:, 0],
        links=cl.edge_link[index],
        top_need=1,
    )
    p_arr, q_arr = _arrival_probabilities(cand, nodes)
    cand_ge, _ = _count_tail(p_arr, q_arr, cand.mask, cand.need)
    change = -((pivot[group] * (cand_ge - ge[group])) @ weights)
    marginal = change[probes:] / (step / ev.K)  # dE/dg_j >= 0 (more coverage, slower)
    others = (marginal.sum() - marginal) / max(1, n_sel - 1)
    change = change[:probes] - (c_new[:probes] - c_old[:probes]) / ev.K * others[group[:probes]]
    return [(float(change[j]), int(index[j]), moves[j][1], moves[j][2]) for j in range(probes)]


def _descend(ev: _Evaluator, start: _Result, full: bool, rounds: int) -> _Result:
    """Coordinate descent on inner configurations (screened), then confirmed by evaluation."""
    current = start
    for _ in range(rounds):
        if ev.exhausted:
            break
        screened = _screen(ev, current, full)
        best_per_edge: dict[int, tuple[float, BoolArray, int]] = {}
        for change, i, mask_row, s in screened:
            if change < -1e-12 * current.value and (
                i not in best_per_edge or change < best_per_edge[i][0]
            ):
                best_per_edge[i] = (change, mask_row, s)
        if not best_per_edge:
            break
        ordered = sorted(best_per_edge.items(), key=lambda item: item[1][0])
        trials: list[_Structure] = []
        combined_mask = current.structure.wmask.copy()
        combined_sw = current.structure.s_w.copy()
        for i, (_, mask_row, s) in ordered:
            combined_mask[i] = mask_row
            combined_sw[i] = s
        trials.append(_Structure(current.structure.s_edge, combined_mask, combined_sw))
        for i, (_, mask_row, s) in ordered[: 3 if len(ordered) > 1 else 0]:
            wm = current.structure.wmask.copy()
            sw = current.structure.s_w.copy()
            wm[i] = mask_row
            sw[i] = s
            trials.append(_Structure(current.structure.s_edge, wm, sw))
        best = ev.best([t for t in trials if _valid(t)])
        if best is None or best.value >= current.value * (1 - 1e-12):
            break
        current = best
    return current


def _neighbours(structure: _Structure, full: bool, worst_edges: Iterable[int]) -> list[_Structure]:
    """Top-level moves: s_edge +- 1, an edge out (its s_edge kept or lowered), an edge back in."""
    out: list[_Structure] = []
    n_sel = int(structure.emask.sum())
    for s_e in (structure.s_edge - 1, structure.s_edge + 1):
        out.append(_Structure(s_e, structure.wmask, structure.s_w))
    candidates = range(structure.wmask.shape[0]) if full else worst_edges
    for i in candidates:
        if structure.emask[i] and n_sel >= 2:
            wm = structure.wmask.copy()
            wm[i] = False
            sw = structure.s_w.copy()
            sw[i] = 0
            for s_e in {min(structure.s_edge, n_sel - 2), max(0, structure.s_edge - 1)}:
                out.append(_Structure(s_e, wm, sw))
    return [s for s in out if _valid(s)]


def _local_search(ev: _Evaluator, start: _Result, full: bool, max_rounds: int) -> _Result:
    current = start
    for _ in range(max_rounds):
        if ev.exhausted:
            break
        improved = _descend(ev, current, full, rounds=max_rounds)
        coverage_order = np.argsort(improved.c + np.where(improved.structure.emask, 0, 10**9))
        neighbours = _neighbours(improved.structure, full, [int(i) for i in coverage_order[:2]])
        if full:
            neighbours += _complete_neighbourhood(improved.structure, ev.cluster)
        best = ev.best(neighbours)
        if best is not None and best.value < improved.value * (1 - 1e-12):
            current = best
            continue
        current = improved
        break
    return current


def _complete_neighbourhood(structure: _Structure, cluster: _rule.Cluster) -> list[_Structure]:
    """Every single change: one s_worker to any value, one worker or one edge in or out."""
    out: list[_Structure] = []
    n, _m = structure.wmask.shape
    for i in range(n):
        size = int(cluster.sizes[i])
        for s in range(size):
            sw = structure.s_w.copy()
            sw[i] = s
            out.append(_Structure(structure.s_edge, structure.wmask, sw))
        for w in range(size):
            wm = structure.wmask.copy()
            wm[i, w] = not wm[i, w]
            for s in range(size):
                sw = structure.s_w.copy()
                sw[i] = s if wm[i].any() else 0
                for s_e in range(n):
                    out.append(_Structure(s_e, wm, sw))
        if not structure.emask[i]:
            wm = structure.wmask.copy()
            wm[i, :size] = True
            for s in range(size):
                sw = structure.s_w.copy()
                sw[i] = s
                for s_e in range(n):
                    out.append(_Structure(s_e, wm, sw))
    for s_e in range(n):
        out.append(_Structure(s_e, structure.wmask, structure.s_w))
    return [s for s in out if _valid(s)]


def _s_edge_scan(n: int) -> list[int]:
    if n <= FULL_S_EDGE_SCAN:
        return list(range(n))
    values = {0, 1, 2, 3, n - 1}
    x = 3.0
    while x < n - 1:
        values.add(round(x))
        x *= 1.4
    return sorted(values)


def _search(ev: _Evaluator, keep: int = 3) -> list[_Result]:
    """Best structures found (best first, at most ``keep``).

    Small clusters (up to ``SMALL_CLUSTER`` workers): every s_edge, every uniform s_worker start,
    descent with the complete neighbourhood until no move improves. Larger ones: a scan of
    s_edge (all up to ``FULL_S_EDGE_SCAN`` edges, else a geometric grid and the neighbours of its
    best) with uniform s_worker 0 and 1, screened descent from the three best, then top-level
    moves (s_edge +- 1, the two least-covered edges out) and descent again while they improve.
    """
    cl = ev.cluster
    n = cl.n
    full = int(cl.mask.sum()) <= SMALL_CLUSTER
    all_in = cl.mask.copy()

    def starts(values: Iterable[int]) -> list[_Structure]:
        spread = list(
            range(int(cl.sizes.max())) if full else range(2 if n <= FULL_S_EDGE_SCAN else 1)
        )
        if ev.K < int(cl.mask.sum()):
            # few partitions: only high tolerances let every worker hold one (c_i (s_w+1) >= m_i)
            spread.append(int(cl.sizes.max()) - 1)
        return [
            _Structure(s_e, all_in, np.minimum(t, cl.sizes - 1).astype(np.int64))
            for s_e in values
            for t in spread
        ]

    def best_per_s_edge(values: Iterable[int]) -> list[_Result]:
        by_s_edge: dict[int, _Result] = {}
        for result in ev.evaluate(starts(values)):
            if result is None:
                continue
            s_e = result.structure.s_edge
            if s_e not in by_s_edge or result.value < by_s_edge[s_e].value:
                by_s_edge[s_e] = result
        return sorted(by_s_edge.values(), key=lambda r: r.value)

    scan = _s_edge_scan(n)
    seeds = best_per_s_edge(scan)
    if n > FULL_S_EDGE_SCAN and seeds:
        around = {seeds[0].structure.s_edge + d for d in range(-2, 3)} - set(scan)
        seeds = sorted(
            seeds + best_per_s_edge(v for v in around if 0 <= v < n), key=lambda r: r.value
        )
    found: dict[bytes, _Result] = {}
    chosen = seeds if full else [r for r in seeds[:2] if r.value <= seeds[0].value * 1.02]
    for seed in chosen:
        result = _local_search(ev, seed, full, max_rounds=20 if full else 3 if n <= 24 else 4)
        found[result.structure.key()] = result
    for seed in seeds:
        found.setdefault(seed.structure.key(), seed)
    return sorted(found.values(), key=lambda r: r.value)[:keep]


# --------------------------------------------------------------------------------------------
# refinement of loads (projected gradient on continuous loads)
# --------------------------------------------------------------------------------------------


def _project(
    y: FloatArray,
    total: FloatArray,
    lo: FloatArray | float,
    hi: FloatArray | float,
    mask: BoolArray,
) -> FloatArray:
    """Euclidean projection of each row onto {sum = total, lo <= x <= hi} (masked entries 0)."""
    left = np.where(mask, y - hi, np.inf).min(axis=-1) - 1.0
    right = np.where(mask, y - lo, -np.inf).max(axis=-1) + 1.0
    for _ in range(80):
        mid = 0.5 * (left + right)
        x = np.where(mask, np.clip(y - mid[..., None], lo, hi), 0.0)
        big = x.sum(axis=-1) > total
        left = np.where(big, mid, left)
        right = np.where(big, right, mid)
    return np.where(mask, np.clip(y - right[..., None], lo, hi), 0.0)


def _round_counts(
    target: FloatArray, total: IntArray, lo: IntArray, hi: IntArray, mask: BoolArray
) -> IntArray:
    """Integers near ``target`` per row with the given sums and bounds (largest remainder)."""
    base = np.where(mask, np.clip(np.floor(target), lo, hi), 0).astype(np.int64)
    rest = total - base.sum(axis=-1)
    frac = target - base
    for _ in range(int(mask.shape[-1] * (np.max(hi) + 1))):
        if not rest.any():
            break
        grow = np.where(mask & (base < hi), frac, -np.inf).argmax(axis=-1)
        shrink = np.where(mask & (base > lo), frac, np.inf).argmin(axis=-1)
        up = np.zeros_like(base)
        np.put_along_axis(up, grow[..., None], (rest > 0)[..., None].astype(np.int64), axis=-1)
        down = np.zeros_like(base)
        np.put_along_axis(down, shrink[..., None], (rest < 0)[..., None].astype(np.int64), axis=-1)
        base = base + up - down
        frac = target - base
        rest = total - base.sum(axis=-1)
    return base


def _refine(ev: _Evaluator, result: _Result, iterations: int) -> _Result:
    """Projected gradient descent on continuous loads, then rounding; keeps the better plan."""
    cl = ev.cluster
    st = result.structure
    rows = np.nonzero(st.emask)[0]
    sel = st.wmask[rows]
    s_w = st.s_w[rows]
    K = ev.K
    s_e = st.s_edge
    need = sel.sum(axis=-1) - s_w
    top_need = int(rows.size - s_e)
    coverage = result.c[rows] / K
    shares = np.where(sel, result.l[rows] / np.maximum(result.c[rows], 1)[:, None], 0.0)
    lo_cover = np.ceil(sel.sum(axis=-1) / (s_w + 1)) / K

    def build(f: FloatArray) -> _GroupModel:
        return _model_from_arrays(
            f,
            cl.shift[rows],
            cl.rate[rows],
            cl.link[rows],
            cl.straggle[rows],
            cl.slow[rows],
            sel,
            need,
            cl.edge_link[rows],
            top_need,
        )

    def value_and_gradient(g: FloatArray, u: FloatArray) -> tuple[float, FloatArray]:
        f = g[:, None] * u
        return _expected_time_and_gradient(
            build(f),
            f,
            cl.rate[rows],
            cl.link[rows],
            cl.slow[rows],
            ev.rtol,
            ev.max_breaks,
            quick=ev.max_breaks is not None,
        )

    def value(g: FloatArray, u: FloatArray) -> float:
        model = build(g[:, None] * u)
        if ev.max_breaks is None:
            return _expected_time(model, ev.rtol)
        return _quick_expected_time(model, ev.max_breaks)

    g, u = coverage.astype(np.float64), shares.astype(np.float64)
    current, grad_f = value_and_gradient(g, u)
    step = 0.2
    for _ in range(iterations):
        grad_u = np.where(sel, g[:, None] * grad_f, 0.0)
        grad_g = (u * grad_f).sum(axis=-1)
        centred_u = np.where(sel, grad_u - (grad_u.sum(-1) / sel.sum(-1))[:, None], 0.0)
        scale_u = np.abs(centred_u).max() + 1e-300
        centred_g = grad_g - grad_g.mean()
        scale_g = np.abs(centred_g).max() + 1e-300
        improved = False
        for _ in range(6):
            lo_u = np.where(sel, 1.0 / (K * np.maximum(g, 1.0 / K))[:, None], 0.0)
            new_u = _project(
                u - step * (s_w + 1)[:, None] / sel.sum(-1)[:, None] * centred_u / scale_u,
                (s_w + 1).astype(np.float64),
                lo_u,
                1.0,
                sel,
            )
            new_g = _project(
                g[None] - step * (s_e + 1) / rows.size * centred_g[None] / scale_g,
                np.array([s_e + 1.0]),
                lo_cover[None],
                1.0,
                np.ones((1, rows.size), dtype=bool),
            )[0]
            trial = value(new_g, new_u)
            if trial < current * (1 - 1e-10):
                g, u = new_g, new_u
                current, grad_f = value_and_gradient(g, u)
                step = min(0.5, step * 1.5)
                improved = True
                break
            step *= 0.35
        if not improved:
            break
    total_c = np.array(K * (s_e + 1))
    lo_c = np.ceil(sel.sum(axis=-1) / (s_w + 1)).astype(np.int64)
    c_rows = _round_counts(
        (K * g)[None],
        total_c[None],
        lo_c[None],
        np.full((1, rows.size), K),
        np.ones((1, rows.size), dtype=bool),
    )[0]
    l_rows = _round_counts(
        c_rows[:, None] * u,
        c_rows * (s_w + 1),
        np.ones_like(sel, np.int64),
        np.broadcast_to(c_rows[:, None], sel.shape).astype(np.int64),
        sel,
    )
    c = np.zeros_like(result.c)
    c[rows] = c_rows
    l = np.zeros_like(result.l)
    l[rows] = np.where(sel, l_rows, 0)
    model = _rule.model(cl, st.wmask, st.s_w, s_e, l, K)
    rounded = (
        _expected_time(model, ev.rtol)
        if ev.max_breaks is None
        else _quick_expected_time(model, ev.max_breaks)
    )
    if rounded < result.value:
        return _Result(rounded, st, c, l)
    return result


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def _partitions_argument(spec: ClusterSpec, partitions: int | None) -> int | None:
    K = partitions if partitions is not None else spec.partitions
    if K is not None and (int(K) != K or K < 1):
        raise ValueError(f"partitions must be an integer >= 1, got {K!r}")
    return None if K is None else int(K)


def _to_plan(ev: _Evaluator, result: _Result, extra: dict[str, Any]) -> Plan:
    cl = ev.cluster
    spec = cl.spec
    st = result.structure
    loads = [[int(result.l[i, j]) for j in range(len(e.workers))] for i, e in enumerate(spec.edges)]
    plan = build_plan(
        spec,
        "hgc",
        ev.K,
        st.s_edge,
        [int(x) if st.emask[i] else 0 for i, x in enumerate(st.s_w)],
        [int(x) for x in result.c],
        loads,
        extra=extra,
    )
    check_plan(plan, spec)
    return replace(plan, expected_round_seconds=expected_round_time(spec, plan))


def _k_candidates(spec: ClusterSpec, K_max: int) -> list[int]:
    n_workers = spec.n_workers
    values = {K_max}
    for base in (12, 24, 60, 120):
        values.update(range(base, K_max + 1, base) if base * 8 >= K_max else ())
    values.update(j * n_workers for j in range(1, K_max // n_workers + 1))
    return sorted(v for v in values if v <= K_max)


#: Up to this many workers, :func:`optimize` repeats the rule search at other quantile levels.
CANDIDATE_LEVEL_WORKERS = 64
#: The extra quantile levels tried: bimodal runtimes (Bernoulli, Markov) want a high level.
CANDIDATE_LEVELS = (0.8, 0.95)
#: Up to this many workers, :func:`optimize` also evaluates the uniform plans (the paper's).
CANDIDATE_UNIFORM_WORKERS = 300


def optimize(
    spec: ClusterSpec,
    partitions: int | None = None,
    *,
    max_partitions: int | None = None,
    refine: bool = True,
    level: float = 0.5,
) -> Plan:
    """The hierarchical plan ("hgc") with the smallest expected round time the planner finds.

    Besides the rule search at ``level``, small clusters (:data:`CANDIDATE_LEVEL_WORKERS`) repeat
    it at :data:`CANDIDATE_LEVELS`, and clusters of up to :data:`CANDIDATE_UNIFORM_WORKERS`
    evaluate the uniform plans (the paper's parameters; for each s_edge the s_worker scan stops
    once the expected time has risen twice in a row). The plan with the smallest exact expected
    time wins, so the result is never slower than those candidates.
    ``plan.extra["candidate"]`` says which won.
    """
    began = time.perf_counter()
    candidates = [
        _optimize_rule(spec, partitions, max_partitions=max_partitions, refine=refine, level=level)
    ]
    candidates[0].extra["candidate"] = f"rule search (level {level})"
    if spec.n_workers <= CANDIDATE_LEVEL_WORKERS:
        for other in CANDIDATE_LEVELS:
            if other != level:
                found = _optimize_rule(
                    spec, partitions, max_partitions=max_partitions, refine=refine, level=other
                )
                found.extra["candidate"] = f"rule search (level {other})"
                candidates.append(found)
    if spec.n_workers <= CANDIDATE_UNIFORM_WORKERS:
        candidates.extend(
            _uniform_candidates(spec, partitions if partitions is not None else spec.partitions)
        )
    plan = replace(
        min(candidates, key=lambda c: c.expected_round_seconds or math.inf), scheme="hgc"
    )
    plan.extra["seconds"] = time.perf_counter() - began
    return plan


def _uniform_candidates(spec: ClusterSpec, partitions: int | None) -> list[Plan]:
    sizes = [len(e.workers) for e in spec.edges]
    found: list[Plan] = []
    for s_edge in range(len(sizes)):
        best_here, rises = math.inf, 0
        for s_worker in range(min(sizes)):
            try:
                plan = uniform_plan(spec, s_edge, s_worker, partitions)
            except (Infeasible, ValueError):
                continue
            seconds = plan.expected_round_seconds or math.inf
            plan.extra["candidate"] = f"uniform s_edge={s_edge} s_worker={s_worker}"
            found.append(plan)
            rises = rises + 1 if seconds > best_here else 0
            best_here = min(best_here, seconds)
            if rises >= 2:
                break
    return found


def _optimize_rule(
    spec: ClusterSpec,
    partitions: int | None = None,
    *,
    max_partitions: int | None = None,
    refine: bool = True,
    level: float = 0.5,
) -> Plan:
    """The rule search (with K choice and load refinement) at one quantile level.

    ``partitions`` (or ``spec.partitions``) fixes K; otherwise K is chosen up to
    ``max_partitions`` (default :func:`default_max_partitions`). ``refine=False`` returns the
    best plan of the load rule (what :func:`exhaustive_optimum` compares with). ``level`` is the
    rule's quantile level of the master (0.5: median). ``plan.extra`` records the search:
    ``evaluations``, ``seconds``, ``rule_seconds`` (expected time before refinement).
    See the module docstring for the method.
    """
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    began = time.perf_counter()
    cluster = _rule.cluster_arrays(spec)
    fixed = _partitions_argument(spec, partitions)
    K_max = max_partitions if max_partitions is not None else default_max_partitions(spec.n_workers)
    if K_max < 1:
        raise ValueError(f"max_partitions must be >= 1, got {max_partitions!r}")
    ev = _Evaluator(cluster, fixed if fixed is not None else K_max, level)
    size = int(cluster.mask.sum())
    if size > SMALL_CLUSTER:
        ev.budget = max(80, min(400, 150_000 // size))
    results = _search(ev)
    if not results:
        raise Infeasible(
            f"no structure is feasible with K = {ev.K} partitions (every selected "
            "worker needs at least one); raise partitions"
        )
    best = results[0]
    evaluations = ev.evaluations
    if fixed is None and spec.n_workers <= 64:
        # choose K: same structure, rule loads, among a few candidates
        for K in _k_candidates(spec, K_max):
            if K == ev.K:
                continue
            trial = _Evaluator(cluster, K, level)
            found = trial.best([best.structure])
            evaluations += trial.evaluations
            if found is not None and found.value < best.value * (1 - 1e-9):
                best, ev = found, trial
    rule_best = best
    if refine:
        size = int(cluster.mask.sum())
        iterations = 40 if size <= 64 else 12 if size <= 300 else 3
        refined = [_refine(ev, best, iterations)]
        if fixed is not None or len(results) > 1:
            for other in results[1:2]:
                if other.value < best.value * 1.02:
                    refined.append(_refine(_Evaluator(cluster, ev.K, level), other, iterations))
        best = min(refined, key=lambda r: r.value)
    extra = {
        "evaluations": evaluations + ev.evaluations,
        "method": "rule search + refinement" if refine else "rule search",
    }
    # Final choice on exact values (the search compared fast evaluations).
    rule_plan = _to_plan(ev, rule_best, dict(extra))
    plan = rule_plan if best is rule_best else _to_plan(ev, best, dict(extra))
    assert plan.expected_round_seconds is not None
    assert rule_plan.expected_round_seconds is not None
    if rule_plan.expected_round_seconds <= plan.expected_round_seconds:
        plan = rule_plan
    plan.extra["rule_seconds"] = rule_plan.expected_round_seconds
    plan.extra["seconds"] = time.perf_counter() - began
    return plan


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
    fixed = _partitions_argument(spec, partitions)
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
    ranked: list[tuple[float, _Structure]] = []
    batch: list[_Structure] = []

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
                    batch.append(_Structure(s_e, wmask, s_w))
                if len(batch) >= 2048:
                    flush()
    flush()
    if not ranked:
        raise Infeasible(f"no structure is feasible with K = {K} partitions")
    ranked.sort(key=lambda item: item[0])
    cutoff = ranked[0][0] * (1 + band)
    finalists = [s for v, s in ranked if v <= cutoff]
    exact = _Evaluator(cluster, K, level, rtol=1e-10, max_breaks=None)
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
    plan = _to_plan(exact, best, dict(info))
    if refine:
        refined = _to_plan(exact, _refine(exact, best, 40), dict(info))
        assert refined.expected_round_seconds is not None
        assert plan.expected_round_seconds is not None
        if refined.expected_round_seconds < plan.expected_round_seconds:
            plan = refined
    return plan


# --------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------


def _with_time(spec: ClusterSpec, plan: Plan) -> Plan:
    check_plan(plan, spec)
    return replace(plan, expected_round_seconds=expected_round_time(spec, plan))


def uncoded_plan(spec: ClusterSpec) -> Plan:
    """Every worker holds 1 of K = N partitions; the master waits for all (with its time)."""
    rows = [[1] * len(e.workers) for e in spec.edges]
    return _with_time(spec, one_layer_plan(spec, "uncoded", spec.n_workers, 0, rows))


def flat_plan(spec: ClusterSpec, s: int) -> Plan:
    """Flat cyclic repetition over all N workers: each holds s + 1 of K = N partitions, the
    master waits for the first N - s (messages forwarded by the edges)."""
    N = spec.n_workers
    if int(s) != s or not (0 <= s < N):
        raise ValueError(f"s must be an integer in [0, {N}), got {s!r}")
    rows = [[int(s) + 1] * len(e.workers) for e in spec.edges]
    return _with_time(spec, one_layer_plan(spec, "flat", N, int(s), rows))


def ignore_plan(spec: ClusterSpec, s: int) -> Plan:
    """Ignore stragglers: each worker holds 1 of K = N partitions, the master uses the first
    N - s messages and rescales (biased); compare with ``flat_plan(spec, s)``."""
    N = spec.n_workers
    if int(s) != s or not (0 <= s < N):
        raise ValueError(f"s must be an integer in [0, {N}), got {s!r}")
    rows = [[1] * len(e.workers) for e in spec.edges]
    return _with_time(spec, one_layer_plan(spec, "ignore", N, int(s), rows))


def uniform_plan(
    spec: ClusterSpec, s_edge: int, s_worker: int, partitions: int | None = None
) -> Plan:
    """The paper's uniform hierarchical plan: every node, one s_worker, equal loads.

    Edge i covers ``c_i = K (s_edge + 1) m_i / sum(m)`` partitions and every worker holds
    ``D = K (s_edge + 1)(s_worker + 1) / sum(m)``, meeting the bound
    ``D / K = (s_e + 1)(s_w + 1) / sum(m)``. K is the smallest making these integers unless
    ``partitions`` is given. Raises :class:`~edgecode.errors.Infeasible` when
    ``m_i (s_edge + 1) > sum(m)`` for some edge or ``s_worker >= min(m_i)``, or when the given K
    does not make the counts integral.
    """
    sizes = [len(e.workers) for e in spec.edges]
    total = sum(sizes)
    if int(s_edge) != s_edge or not (0 <= s_edge < len(sizes)):
        raise ValueError(f"s_edge must be an integer in [0, {len(sizes)}), got {s_edge!r}")
    if int(s_worker) != s_worker or not (0 <= s_worker < min(sizes)):
        raise Infeasible(
            f"s_worker must be an integer in [0, {min(sizes)}) (the smallest edge), "
            f"got {s_worker!r}"
        )
    if max(sizes) * (s_edge + 1) > total:
        raise Infeasible(
            f"an edge with {max(sizes)} of {total} workers would cover more than "
            f"all the data at s_edge = {s_edge}: need m_i (s_edge + 1) <= sum(m)"
        )
    K_min = 1
    for m_i in sizes:
        for numerator in ((s_edge + 1) * m_i, (s_edge + 1) * (s_worker + 1)):
            K_min = math.lcm(K_min, total // math.gcd(total, numerator))
    K = K_min if partitions is None else int(partitions)
    if K % K_min:
        raise Infeasible(f"uniform plan needs K to be a multiple of {K_min}, got {K}")
    c = [K * (s_edge + 1) * m_i // total for m_i in sizes]
    D = K * (s_edge + 1) * (s_worker + 1) // total
    plan = build_plan(
        spec,
        "hgc",
        K,
        s_edge,
        [s_worker] * len(sizes),
        c,
        [[D] * m_i for m_i in sizes],
        extra={"variant": "uniform"},
    )
    return _with_time(spec, plan)


def best_uniform_plan(spec: ClusterSpec) -> Plan:
    """The uniform plan with the smallest expected time over all feasible (s_edge, s_worker)."""
    best: Plan | None = None
    sizes = [len(e.workers) for e in spec.edges]
    for s_edge in range(len(sizes)):
        for s_worker in range(min(sizes)):
            try:
                plan = uniform_plan(spec, s_edge, s_worker)
            except Infeasible:
                continue
            assert plan.expected_round_seconds is not None
            if best is None or plan.expected_round_seconds < (best.expected_round_seconds or 0):
                best = plan
    if best is None:
        raise Infeasible("no uniform plan is feasible on this cluster")
    return best


def best_flat_plan(spec: ClusterSpec) -> Plan:
    """The flat cyclic plan with the smallest expected time over all s."""
    plans = [flat_plan(spec, s) for s in range(spec.n_workers)]
    return min(plans, key=lambda p: p.expected_round_seconds or math.inf)


# --------------------------------------------------------------------------------------------
# re-planning and benchmark
# --------------------------------------------------------------------------------------------


def updated_spec(
    spec: ClusterSpec, models: Mapping[str, tuple[float, float] | WorkerSpec]
) -> ClusterSpec:
    """``spec`` with the named workers' ``(shift, rate)`` (or whole WorkerSpec) replaced."""
    known = {w.name for e in spec.edges for w in e.workers}
    unknown = set(models) - known
    if unknown:
        raise ValueError(f"models: unknown workers {sorted(unknown)}")
    edges = []
    for edge in spec.edges:
        workers = []
        for w in edge.workers:
            new = models.get(w.name)
            if isinstance(new, WorkerSpec):
                workers.append(replace(new, name=w.name))
            elif new is not None:
                shift, rate = new
                workers.append(replace(w, shift=float(shift), rate=float(rate)))
            else:
                workers.append(w)
        edges.append(replace(edge, workers=tuple(workers)))
    return replace(spec, edges=tuple(edges))


def replan(
    spec: ClusterSpec,
    models: Mapping[str, tuple[float, float] | WorkerSpec] | None = None,
    dead: Iterable[str] = (),
    current: Plan | None = None,
    min_gain: float = 0.0,
    partitions: int | None = None,
) -> tuple[ClusterSpec, Plan]:
    """Re-plan after new measurements: ``(updated spec, new plan)``.

    ``models`` maps worker names to fitted ``(shift, rate)`` (e.g. from
    :func:`edgecode.stragglers.fit_shifted_exponential`) or to whole ``WorkerSpec``; workers in
    ``dead`` (and edges left without live workers) are unselected. The plan covers every worker
    of ``spec`` (dead ones unselected) and its expected time is for the updated models. With
    ``current``, the current plan is kept (re-timed) when it uses no dead worker and the new
    optimum is not at least ``min_gain`` (relative) faster -- moving data has a cost.
    """
    new_spec = updated_spec(spec, models or {})
    dead_set = set(dead)
    known = {w.name for e in spec.edges for w in e.workers}
    if dead_set - known:
        raise ValueError(f"dead: unknown workers {sorted(dead_set - known)}")
    alive_edges = []
    for edge in new_spec.edges:
        alive = tuple(w for w in edge.workers if w.name not in dead_set)
        if alive:
            alive_edges.append(EdgeSpec(edge.name, alive, edge.link_seconds))
    if not alive_edges:
        raise Infeasible("every worker is dead")
    live_spec = ClusterSpec(tuple(alive_edges), partitions=new_spec.partitions)
    live_plan = optimize(live_spec, partitions)
    loads = {w.name: w.partitions for e in live_plan.edges for w in e.workers}
    edge_by_name = {e.name: e for e in live_plan.edges}
    worker_rows = [[loads.get(w.name, 0) for w in e.workers] for e in new_spec.edges]
    s_workers = [
        edge_by_name[e.name].s_worker if e.name in edge_by_name else 0 for e in new_spec.edges
    ]
    coverage = [
        edge_by_name[e.name].partitions if e.name in edge_by_name else 0 for e in new_spec.edges
    ]
    plan = build_plan(
        new_spec,
        "hgc",
        live_plan.partitions,
        live_plan.s_edge,
        s_workers,
        coverage,
        worker_rows,
        live_plan.expected_round_seconds,
        dict(live_plan.extra),
    )
    check_plan(plan, new_spec)
    if current is not None:
        uses_dead = any(w.selected and w.name in dead_set for e in current.edges for w in e.workers)
        if not uses_dead:
            kept = _with_time(new_spec, current)
            assert kept.expected_round_seconds is not None and plan.expected_round_seconds
            if plan.expected_round_seconds > kept.expected_round_seconds * (1 - min_gain):
                return new_spec, kept
    return new_spec, plan


def bench_planner(
    sizes: Sequence[tuple[int, int]], rng: np.random.Generator, repeats: int = 1
) -> list[dict[str, Any]]:
    """Time :func:`optimize` on random heterogeneous clusters of ``(edges, workers per edge)``.

    Workers: shift ~ U(0.05, 0.5) s, rate ~ U(1, 20) /s, link ~ U(0, 0.01) s; edge links
    ~ U(0, 0.02) s. Returns one dict per size: edges, workers, seconds (best of ``repeats``),
    evaluations, expected_round_seconds, uncoded_seconds.
    """
    rows = []
    for n_edges, per_edge in sizes:
        spec = random_cluster(n_edges, per_edge, rng)
        timings = []
        plan: Plan | None = None
        for _ in range(repeats):
            began = time.perf_counter()
            plan = optimize(spec)
            timings.append(time.perf_counter() - began)
        assert plan is not None
        rows.append(
            {
                "edges": n_edges,
                "workers": n_edges * per_edge,
                "seconds": min(timings),
                "evaluations": plan.extra.get("evaluations"),
                "expected_round_seconds": plan.expected_round_seconds,
                "uncoded_seconds": uncoded_plan(spec).expected_round_seconds,
            }
        )
    return rows


def random_cluster(
    n_edges: int,
    per_edge: int | Sequence[int],
    rng: np.random.Generator,
    partitions: int | None = None,
) -> ClusterSpec:
    """A random heterogeneous cluster (see :func:`bench_planner` for the distributions)."""
    counts = [per_edge] * n_edges if isinstance(per_edge, int) else list(per_edge)
    edges = []
    for i, count in enumerate(counts):
        workers = tuple(
            WorkerSpec(
                f"e{i}-w{j}",
                float(rng.uniform(0.05, 0.5)),
                float(rng.uniform(1.0, 20.0)),
                float(rng.uniform(0.0, 0.01)),
            )
            for j in range(count)
        )
        edges.append(EdgeSpec(f"e{i}", workers, float(rng.uniform(0.0, 0.02))))
    return ClusterSpec(tuple(edges), partitions=partitions)


__all__ = [
    "bench_planner",
    "best_flat_plan",
    "best_uniform_plan",
    "check_plan",
    "default_max_partitions",
    "exhaustive_optimum",
    "flat_plan",
    "ignore_plan",
    "optimize",
    "random_cluster",
    "replan",
    "uncoded_plan",
    "uniform_plan",
    "updated_spec",
]
