"""The load rule: integer partition counts for a given structure (private; see optimize.py).

A *structure* fixes which edges and workers take part, ``s_edge`` and every ``s_worker_i``. The
rule turns it, for a number of partitions K, into the counts ``c_i`` (edge coverage) and ``l_w``
(worker loads) of an exact plan. Everything here works on a batch of structures at once (leading
axis B) over padded cluster arrays (edges x worker slots), so the optimizer (batch of one or of a
few candidates) and the exhaustive search (batches of thousands) run literally the same code.

Steps (maths in :mod:`edgecode.planning.optimize`):

1. quantile levels: ``p_top`` = median of the ``k_e``-th order statistic of ``n`` uniforms
   (``k_e = n - s_edge``); inside edge i the workers' level ``p_i`` solves
   ``P(at least k_i of m_i i.i.d. events of probability p_i) = p_top``, i.e.
   ``p_i = I^{-1}_{p_top}(k_i, s_worker_i + 1)`` (inverse regularised incomplete beta);
2. unit cost ``a_w`` = the ``p_i``-quantile of the worker's per-unit time ``(shift + X) M``;
3. continuous coverages: with ``h_w(L) = (L - link_w)_+ / a_w`` (the fraction of the data worker
   w gets through by collector time L), the largest coverage edge i can serve by L is
   ``cap_i(L) = min_{j <= s_w} T_j / (s_w + 1 - j)``, ``T_j`` the sum of all but the j largest
   ``h_w`` (the water-filling solution of ``sum_w min(1, h_w / g) = s_w + 1``); the master level
   Theta solves ``sum_i min(1, cap_i(Theta - link_i)) = s_edge + 1`` (bisection) and
   ``g_i = min(1, cap_i(Theta - link_i))``;
4. integer coverages: ``c_i`` from ``K g_i`` with the sum ``K (s_edge + 1)``, bounds
   ``ceil(m_i / (s_w + 1)) <= c_i <= K``, minimising the largest overrun
   ``beta_i (c_i - K g_i)``, ``beta_i = (Theta - link_i) / (K g_i)`` (seconds per partition);
5. integer loads: inside edge i, the ``c_i (s_w + 1)`` units go to the cheapest unit slots, the
   l-th unit of worker w costing ``l a_w / K + link_w`` (min-max of the workers' representative
   arrival times), with ``1 <= l_w <= c_i``; ties go to the lower worker index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import betaincinv

from edgecode.planning.hosts import HostArrays, host_arrays
from edgecode.planning.spec import ClusterSpec
from edgecode.planning.timing import _GroupModel, _model_from_arrays
from edgecode.stragglers import straggle_probability

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

#: Bisection steps (each halves the bracket: 64 reach float precision).
_BISECTIONS = 64


@dataclass(frozen=True)
class Cluster:
    """Padded arrays of a spec: ``(n_edges, max workers per edge)``."""

    spec: ClusterSpec
    sizes: IntArray
    mask: BoolArray
    shift: FloatArray
    rate: FloatArray
    link: FloatArray
    straggle: FloatArray
    slow: FloatArray
    edge_link: FloatArray
    #: workers sharing a machine (None: none measured); see planning.hosts
    hosts: HostArrays | None = None

    @property
    def n(self) -> int:
        return int(self.sizes.size)

    @property
    def m(self) -> int:
        return int(self.mask.shape[1])

    @property
    def mixed(self) -> bool:
        return bool(np.any(self.mask & (self.straggle > 0) & (self.slow != 1.0)))


def cluster_arrays(spec: ClusterSpec) -> Cluster:
    n = len(spec.edges)
    sizes = np.array([len(e.workers) for e in spec.edges], dtype=np.int64)
    m = int(sizes.max())
    mask = np.arange(m)[None, :] < sizes[:, None]
    values = np.zeros((5, n, m))
    values[1] = 1.0  # rate on padding
    values[4] = 1.0  # slow factor on padding
    for i, edge in enumerate(spec.edges):
        for j, w in enumerate(edge.workers):
            values[:, i, j] = (
                w.shift,
                w.rate,
                w.link_seconds,
                straggle_probability(w),
                w.slow_factor,
            )
    return Cluster(
        spec=spec,
        sizes=sizes,
        mask=mask,
        shift=values[0],
        rate=values[1],
        link=values[2],
        straggle=values[3],
        slow=values[4],
        edge_link=np.array([e.link_seconds for e in spec.edges], dtype=np.float64),
        hosts=host_arrays(spec),
    )


def levels(
    wmask: BoolArray, s_w: IntArray, s_e: IntArray, level: float | FloatArray = 0.5
) -> FloatArray:
    """Quantile level ``p_i`` of every edge's workers, shape (B, n) (step 1); ``level`` is the
    master's quantile level, one for the batch or one per structure (B,)."""
    m_sel = wmask.sum(axis=-1)
    emask = m_sel > 0
    n_sel = emask.sum(axis=-1)
    k_e = np.maximum(n_sel - s_e, 1)
    p_top = betaincinv(k_e, s_e + 1, level)
    k = np.maximum(m_sel - s_w, 1)
    return np.asarray(betaincinv(k, s_w + 1, p_top[:, None]), dtype=np.float64)


def unit_costs(
    cluster: Cluster, p: FloatArray, memo: dict[float, FloatArray] | None = None
) -> FloatArray:
    """``p``-quantile of each worker's per-unit time ``(shift + X) M``, shape (B, n, m) (step 2).

    ``memo`` (level -> the (n, m) quantiles of every worker at that level, for this cluster)
    keeps the bimodal quantiles (a root search each) from one call to the next."""
    z = -np.log1p(-p)[..., None]
    fast = cluster.shift + z / cluster.rate
    if not cluster.mixed:
        return np.asarray(fast)
    if p.ndim == 2 and cluster.shift.ndim == 2:
        # A batch repeats few levels (they depend on the edge's size and tolerances only): the
        # quantiles of each distinct level are found once, for every edge, and picked. (The
        # search's screening passes clusters of per-move rows (P, 1, m) instead: not here.)
        distinct, inverse = np.unique(p, return_inverse=True)
        edge = np.broadcast_to(np.arange(p.shape[1]), p.shape)
        if memo is not None:
            missing = [x for x in distinct.tolist() if x not in memo]
            if missing:
                found = _mixture_quantiles(cluster, np.array(missing)[:, None])
                memo.update(zip(missing, found, strict=True))
            table = np.stack([memo[x] for x in distinct.tolist()])
            return np.asarray(table[inverse.reshape(p.shape), edge])
        if distinct.size < p.shape[0]:
            table = _mixture_quantiles(cluster, distinct[:, None])
            return np.asarray(table[inverse.reshape(p.shape), edge])
    return _mixture_quantiles(cluster, p)


def _mixture_quantiles(cluster: Cluster, p: FloatArray) -> FloatArray:
    """The ``p``-quantiles (``p`` (..., n) broadcast with the cluster arrays (n, m)) of
    ``(shift + X) M`` for a straggling multiplier ``M`` (``slow`` with probability
    ``straggle``, else 1); elementwise, so a level's quantiles do not depend on the others."""
    z = -np.log1p(-p)[..., None]
    fast = cluster.shift + z / cluster.rate
    pi = cluster.straggle
    slow = cluster.slow
    lo = np.broadcast_to(fast, np.broadcast_shapes(fast.shape, slow.shape))
    hi = slow * fast
    target = p[..., None]

    def cdf(y: FloatArray) -> FloatArray:
        first = -np.expm1(-cluster.rate * np.maximum(y - cluster.shift, 0.0))
        second = -np.expm1(-cluster.rate * np.maximum(y / slow - cluster.shift, 0.0))
        return np.asarray((1.0 - pi) * first + pi * second)

    goal = np.broadcast_to(target, np.broadcast_shapes(target.shape, lo.shape))
    return increasing_root(cdf, lo, np.broadcast_to(hi, goal.shape), goal)


def edge_capacity(
    a: FloatArray, v: FloatArray, wmask: BoolArray, s_w: IntArray, level: FloatArray
) -> FloatArray:
    """``cap_i(L)``: coverage each edge serves by collector time ``level`` (B, n) (step 3)."""
    h = np.where(wmask, np.maximum(level[..., None] - v, 0.0) / a, 0.0)
    # tails[j] = the sum of all but the j largest (the cumulative sums of h ascending, reversed)
    tails = np.cumsum(np.sort(h, axis=-1), axis=-1)[..., ::-1]
    j = np.arange(h.shape[-1])
    denominator = s_w[..., None] + 1 - j
    candidates = np.where(j <= s_w[..., None], tails / np.maximum(denominator, 1), np.inf)
    return np.asarray(candidates.min(axis=-1))


def coverages(
    cluster: Cluster, a: FloatArray, wmask: BoolArray, s_w: IntArray, s_e: IntArray
) -> tuple[FloatArray, FloatArray]:
    """Continuous coverages ``g`` (B, n) and the master level Theta (B,) (step 3)."""
    emask: BoolArray = np.asarray(wmask.any(axis=-1))
    v = cluster.link
    start = np.where(wmask, cluster.edge_link[:, None] + v, np.inf).min(axis=(-1, -2))
    stop = np.where(wmask, cluster.edge_link[:, None] + v + a, -np.inf).max(axis=(-1, -2))

    def served(theta: FloatArray) -> FloatArray:
        cap = edge_capacity(a, v, wmask, s_w, theta[:, None] - cluster.edge_link)
        return np.asarray(np.where(emask, np.minimum(cap, 1.0), 0.0).sum(axis=-1))

    def served_at(theta: FloatArray, rows: IntArray) -> FloatArray:
        cap = edge_capacity(a[rows], v, wmask[rows], s_w[rows], theta[:, None] - cluster.edge_link)
        return np.asarray(np.where(emask[rows], np.minimum(cap, 1.0), 0.0).sum(axis=-1))

    goal = (s_e + 1).astype(np.float64)
    theta = increasing_root(served, start, stop, goal, at=served_at)
    cap = edge_capacity(a, v, wmask, s_w, theta[:, None] - cluster.edge_link)
    # Where served is flat at the goal (every selected edge covers all of its data or none),
    # Theta is the left end of that stretch: when the last edge to cover everything reaches 1.
    whole = emask & (cap >= 1.0)
    flat = np.all(~emask | whole | (cap <= 0.0), axis=-1) & whole.any(axis=-1)
    if flat.any():
        reach = _full_coverage_levels(a[flat], v, wmask[flat], s_w[flat])
        left = np.where(whole[flat], reach + cluster.edge_link, -np.inf).max(axis=-1)
        theta[flat] = np.minimum(theta[flat], left)
        cap = edge_capacity(a, v, wmask, s_w, theta[:, None] - cluster.edge_link)
    return np.where(emask, np.minimum(cap, 1.0), 0.0), theta


def _full_coverage_levels(
    a: FloatArray, v: FloatArray, wmask: BoolArray, s_w: IntArray
) -> FloatArray:
    """The collector time L where ``cap_i(L) = 1`` for every edge (B, n); strictly increasing
    there, so the root is unique. Edges without selected workers give ``-inf``."""
    selected = wmask.any(axis=-1)
    lo = np.where(wmask, v, np.inf).min(axis=-1)
    hi = np.where(wmask, v + a, -np.inf).max(axis=-1)
    lo = np.where(selected, lo, 0.0)
    hi = np.where(selected, hi, 1.0)

    def capacity(level: FloatArray) -> FloatArray:
        return edge_capacity(a, v, wmask, s_w, level)

    m = a.shape[-1]
    a_rows, w_rows = a.reshape(-1, m), wmask.reshape(-1, m)
    v_rows, s_rows = np.broadcast_to(v, a.shape).reshape(-1, m), s_w.reshape(-1)

    def capacity_at(level: FloatArray, rows: IntArray) -> FloatArray:
        return edge_capacity(a_rows[rows], v_rows[rows], w_rows[rows], s_rows[rows], level)

    reach = increasing_root(capacity, lo, hi, np.where(selected, 1.0, 0.0), at=capacity_at)
    return np.where(selected, reach, -np.inf)


def integer_coverages(
    cluster: Cluster,
    g: FloatArray,
    theta: FloatArray,
    wmask: BoolArray,
    s_w: IntArray,
    s_e: IntArray,
    K: int | IntArray,
) -> tuple[IntArray, BoolArray]:
    """Integer ``c`` (B, n) and whether the structure is feasible for its K (step 4); ``K`` is
    one number or one per structure (B,)."""
    emask = wmask.any(axis=-1)
    m_sel = wmask.sum(axis=-1)
    lower = np.where(emask, -(-m_sel // (s_w + 1)), 0)
    K_b = np.broadcast_to(np.asarray(K, dtype=np.int64), s_e.shape)
    total = K_b * (s_e + 1)
    feasible = lower.sum(axis=-1) <= total
    target = K_b[:, None] * g
    beta = np.maximum(theta[:, None] - cluster.edge_link, 1e-300) / np.maximum(target, 1.0)
    c = np.where(emask, np.clip(np.floor(target + 1e-9).astype(np.int64), lower, K_b[:, None]), 0)
    rows = np.arange(c.shape[0])
    for _ in range(int(c.shape[1] * (K_b.max(initial=0) + 1)) + 1):
        rest = np.where(feasible, total - c.sum(axis=-1), 0)
        if not rest.any():
            break
        grow = np.where(emask & (c < K_b[:, None]), beta * (c + 1 - target), np.inf).argmin(axis=-1)
        shrink = np.where(emask & (c > lower), beta * (c - target), -np.inf).argmax(axis=-1)
        c[rows, grow] += rest > 0
        c[rows, shrink] -= rest < 0
    return c, feasible


def worker_loads(
    cluster: Cluster, a: FloatArray, wmask: BoolArray, s_w: IntArray, c: IntArray, K: int | IntArray
) -> IntArray:
    """Integer loads ``l`` (B, n, m) for the coverages ``c`` (step 5).

    The level theta where the continuous counts ``clip((theta - link_w) K / a_w, 1, c_i)`` add
    up to the edge's ``c_i (s_w + 1)`` units is solved first; every worker then holds the units
    cheaper than theta (the integer part, never more than the units) and the few units left go
    one by one to the cheapest next unit.
    """
    v = cluster.link
    K_b = np.asarray(K, dtype=np.float64)
    unit = a / (K_b[..., None, None] if K_b.ndim else K_b)
    units = (c * (s_w + 1)).astype(np.float64)
    cap = c[..., None]
    selected = wmask.any(axis=-1)
    lo = np.where(wmask, v + unit, np.inf).min(axis=-1)
    hi = np.where(wmask, v + unit * cap, -np.inf).max(axis=-1)
    lo = np.where(selected, lo, 0.0)
    hi = np.where(selected, hi, 1.0)

    def continuous(theta: FloatArray) -> FloatArray:
        share = np.clip((theta[..., None] - v) / unit, 1.0, cap)
        return np.asarray(np.where(wmask, share, 0.0).sum(axis=-1))

    shape = np.broadcast_shapes(unit.shape, wmask.shape)
    m = shape[-1]
    unit_rows = np.broadcast_to(unit, shape).reshape(-1, m)
    v_rows = np.broadcast_to(v, shape).reshape(-1, m)
    cap_rows = np.broadcast_to(cap, (*shape[:-1], 1)).reshape(-1, 1)
    w_rows = np.broadcast_to(wmask, shape).reshape(-1, m)

    def continuous_at(theta: FloatArray, rows: IntArray) -> FloatArray:
        share = np.clip((theta[:, None] - v_rows[rows]) / unit_rows[rows], 1.0, cap_rows[rows])
        return np.asarray(np.where(w_rows[rows], share, 0.0).sum(axis=-1))

    theta = increasing_root(continuous, lo, hi, np.where(selected, units, 0.0), at=continuous_at)
    loads = np.where(wmask, np.clip(np.floor((theta[..., None] - v) / unit), 1, cap), 0)
    loads = loads.astype(np.int64)
    shape = loads.shape
    unit_b = np.broadcast_to(unit, shape)
    v_b = np.broadcast_to(v, shape)
    cap_b = np.broadcast_to(cap, shape)
    mask_b = np.broadcast_to(wmask, shape)
    rest = np.where(selected, c * (s_w + 1) - loads.sum(axis=-1), 0)
    while (rest > 0).any():
        cost = np.where(mask_b & (loads < cap_b), unit_b * (loads + 1) + v_b, np.inf)
        pick = cost.argmin(axis=-1)[..., None]
        grow = (rest > 0)[..., None].astype(np.int64)
        np.put_along_axis(loads, pick, np.take_along_axis(loads, pick, axis=-1) + grow, axis=-1)
        rest = rest - grow[..., 0]
    return loads


def increasing_root(
    func: Callable[[FloatArray], FloatArray],
    lo: FloatArray,
    hi: FloatArray,
    goal: FloatArray,
    rtol: float = 1e-14,
    *,
    at: Callable[[FloatArray, IntArray], FloatArray] | None = None,
) -> FloatArray:
    """Elementwise ``x`` in ``[lo, hi]`` with ``func(x) = goal`` for a continuous non-decreasing
    piecewise-linear ``func`` (the smallest ``x`` with ``func(x) >= goal`` up to ``rtol``).

    Regula falsi with the Illinois modification (the retained end's value is halved when the same
    end is kept twice), so that the iterate lands on the root as soon as it brackets a single
    linear piece; the trial point is kept at least the tolerance inside the bracket (a root at
    one end is then confirmed in one step) and every eighth step bisects, which bounds the count
    by that of bisection. An exact hit ends the search; where ``func`` is flat at ``goal`` it may
    lie anywhere on that stretch (callers that need its left end find it themselves). At most
    ``_BISECTIONS`` steps.

    ``at(x, index)``, if given, is ``func`` at the elements ``index`` (flat indices into the
    shape of ``lo``; ``x`` 1-D) only: each step then evaluates only the elements still
    searching (most settle in a few steps). The same arithmetic per element, so the same bits.
    """
    lo = np.array(lo, dtype=np.float64)
    hi = np.array(hi, dtype=np.float64)
    f_lo = func(lo) - goal
    f_hi = func(hi) - goal
    done = (f_lo >= 0) | (f_hi <= 0)
    hi = np.where(f_lo >= 0, lo, hi)
    if at is not None:
        return _compacted_root(at, lo, hi, f_lo, f_hi, goal, done, rtol)
    kept = np.zeros(lo.shape, dtype=np.int8)  # +1: lo kept last time, -1: hi kept
    for step in range(_BISECTIONS):
        width = hi - lo
        tol = rtol * np.maximum(np.abs(hi), np.abs(lo))
        done |= width <= 2.0 * tol
        if done.all():
            break
        x = _trial(step, lo, hi, f_lo, f_hi, width, tol)
        x = np.where(done, hi, x)
        f_x = func(x) - goal
        below = (f_x < 0) & ~done
        above = (f_x >= 0) & ~done
        lo, hi, f_lo, f_hi, kept = _kept_side(x, f_x, below, above, lo, hi, f_lo, f_hi, kept)
        done |= f_x == 0
    return hi


def _trial(
    step: int,
    lo: FloatArray,
    hi: FloatArray,
    f_lo: FloatArray,
    f_hi: FloatArray,
    width: FloatArray,
    tol: FloatArray,
) -> FloatArray:
    """The next point of the Illinois search: the secant inside the bracket (a bisection every
    8th step, or where the secant is not finite), kept ``tol`` away from either end."""
    if step % 8 == 7:
        return lo + 0.5 * width
    with np.errstate(divide="ignore", invalid="ignore"):
        x = lo - f_lo * width / (f_hi - f_lo)
    return np.clip(np.where(np.isfinite(x), x, lo + 0.5 * width), lo + tol, hi - tol)


def _kept_side(
    x: FloatArray,
    f_x: FloatArray,
    below: BoolArray,
    above: BoolArray,
    lo: FloatArray,
    hi: FloatArray,
    f_lo: FloatArray,
    f_hi: FloatArray,
    kept: np.ndarray,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, np.ndarray]:
    """``x`` replaces the bracket's end on its side; the end kept twice in a row has its value
    halved (Illinois). ``kept``: +1 lo kept last time, -1 hi kept."""
    f_hi = np.where(below & (kept == -1), 0.5 * f_hi, f_hi)
    f_lo = np.where(above & (kept == 1), 0.5 * f_lo, f_lo)
    lo = np.where(below, x, lo)
    f_lo = np.where(below, f_x, f_lo)
    hi = np.where(above, x, hi)
    f_hi = np.where(above, f_x, f_hi)
    kept = np.where(below, -1, np.where(above, 1, kept)).astype(np.int8)
    return lo, hi, f_lo, f_hi, kept


def _compacted_root(
    at: Callable[[FloatArray, IntArray], FloatArray],
    lo: FloatArray,
    hi: FloatArray,
    f_lo: FloatArray,
    f_hi: FloatArray,
    goal: FloatArray,
    done: BoolArray,
    rtol: float,
) -> FloatArray:
    """The steps of :func:`increasing_root` on the elements still searching only (``at``)."""
    out = hi.ravel().copy()
    index = np.nonzero(~done.ravel())[0]
    lo = lo.ravel()[index]
    hi = hi.ravel()[index]
    f_lo = f_lo.ravel()[index]
    f_hi = f_hi.ravel()[index]
    goal = np.broadcast_to(goal, done.shape).ravel()[index]
    kept = np.zeros(index.size, dtype=np.int8)  # +1: lo kept last time, -1: hi kept
    for step in range(_BISECTIONS):
        width = hi - lo
        tol = rtol * np.maximum(np.abs(hi), np.abs(lo))
        settled = width <= 2.0 * tol
        if settled.any():
            out[index[settled]] = hi[settled]
            go = ~settled
            index, kept = index[go], kept[go]
            lo, hi, f_lo, f_hi, goal = lo[go], hi[go], f_lo[go], f_hi[go], goal[go]
            width, tol = width[go], tol[go]
        if index.size == 0:
            break
        x = _trial(step, lo, hi, f_lo, f_hi, width, tol)
        f_x = at(x, index) - goal
        below = f_x < 0
        above = f_x >= 0
        lo, hi, f_lo, f_hi, kept = _kept_side(x, f_x, below, above, lo, hi, f_lo, f_hi, kept)
        hit = f_x == 0
        if hit.any():
            out[index[hit]] = hi[hit]
            go = ~hit
            index, kept = index[go], kept[go]
            lo, hi, f_lo, f_hi, goal = lo[go], hi[go], f_lo[go], f_hi[go], goal[go]
    out[index] = hi
    return out.reshape(done.shape)


def apply(
    cluster: Cluster,
    wmask: BoolArray,
    s_w: IntArray,
    s_e: IntArray,
    K: int | IntArray,
    level: float | FloatArray = 0.5,
    *,
    memo: dict[float, FloatArray] | None = None,
) -> tuple[IntArray, IntArray, BoolArray, FloatArray]:
    """The whole rule for a batch: ``(c (B, n), l (B, n, m), feasible (B,), Theta (B,))``.

    ``K`` and ``level`` are one value for the batch or one per structure (B,); ``memo``: see
    :func:`unit_costs` (one dict per cluster, kept by the caller)."""
    p = levels(wmask, s_w, s_e, level)
    a = unit_costs(cluster, p, memo)
    g, theta = coverages(cluster, a, wmask, s_w, s_e)
    c, feasible = integer_coverages(cluster, g, theta, wmask, s_w, s_e, K)
    l = worker_loads(cluster, a, wmask, s_w, np.where(feasible[:, None], c, 1), K)
    return c, np.where(wmask & feasible[:, None, None], l, 0), feasible, theta


def model(
    cluster: Cluster, wmask: BoolArray, s_w: IntArray, s_e: int, l: IntArray, K: float
) -> _GroupModel:
    """Timing model of one structure with loads ``l`` (n, m): selected edges become groups."""
    emask = wmask.any(axis=-1)
    rows = np.nonzero(emask)[0]
    sel = wmask[rows]
    return _model_from_arrays(
        fractions=l[rows] / K,
        shifts=cluster.shift[rows],
        rates=cluster.rate[rows],
        worker_links=cluster.link[rows],
        straggle=cluster.straggle[rows],
        slow=cluster.slow[rows],
        mask=sel,
        need=sel.sum(axis=-1) - s_w[rows],
        links=cluster.edge_link[rows],
        top_need=int(rows.size - s_e),
    )
