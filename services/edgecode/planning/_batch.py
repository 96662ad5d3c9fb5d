"""Expected round times of many structures at once, on a fixed quadrature (private).

The search and the exhaustive enumeration rank thousands of candidate plans; evaluating them one
by one costs a few hundred numpy calls each. Here a batch of B structures over the padded
cluster arrays (edges x worker slots, as in :mod:`edgecode.planning._rule`) is evaluated with
the same model as :func:`edgecode.planning.timing.expected_round_time`:

    E[T] = t_lo + integral_{t_lo}^{t_hi} P(T > t) dt,

with, per structure, its own ``t_lo`` (the order statistic of the earliest arrivals), ``t_hi``
(union bound on the tail at ``1e-8`` relative), one ``order``-point Gauss-Legendre panel between
consecutive kinks of the shifted exponentials (at most ``max_breaks`` of them, evenly picked),
and seven geometric panels for the tail -- the fixed rule of
:func:`edgecode.planning.timing._fixed_rule`, without error control. An unselected edge becomes
a group that never delivers and is masked out of the master's count.

Example
-------
>>> import numpy as np
>>> from edgecode.planning import _rule
>>> from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec
>>> spec = ClusterSpec(edges=(EdgeSpec("e", (WorkerSpec("a", 0.0, 1.0), WorkerSpec("b", 0.0, 2.0))),))
>>> cluster = _rule.cluster_arrays(spec)
>>> wmask = np.ones((1, 1, 2), dtype=bool)  # both workers, wait for both: E[max(Exp(2), Exp(4))]
>>> loads = np.ones((1, 1, 2), dtype=np.int64)
>>> value = expected_times(cluster, wmask, np.zeros((1, 1), np.int64), np.zeros(1, np.int64), loads, 2)
>>> bool(abs(value[0] - (0.5 + 0.25 - 1 / 6)) < 1e-6)
True
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgecode.planning import _rule
from edgecode.planning._tails import slot_tails
from edgecode.planning.timing import _count_tail, _quick_expected_time

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

#: Cap on (structures x edges x slots x components x nodes) evaluated at once, to bound memory.
_CHUNK_ELEMENTS = 3_000_000
#: Geometric panels of the tail (as in timing._boundaries).
_TAIL_PANELS = 7
#: Up to this many worker slots (edges x largest edge) structures are integrated together.
BATCH_SLOTS = 64
#: Gauss-Legendre order of timing._fixed_rule (the per-structure path uses it).
_QUICK_ORDER = 8


def expected_times(
    cluster: _rule.Cluster,
    wmask: BoolArray,
    s_w: IntArray,
    s_e: IntArray,
    loads: IntArray,
    K: ArrayLike,
    max_breaks: int | None = 64,
    order: int = 8,
) -> FloatArray:
    """``E[T]`` (B,) of B structures ``(wmask (B, n, m), s_w (B, n), s_e (B,))`` with integer
    ``loads`` (B, n, m) out of ``K`` partitions (an int or one per structure).

    ``max_breaks=None`` keeps every kink. Beyond :data:`BATCH_SLOTS` worker slots the structures
    are integrated one by one (same rule, selected edges only). Every structure must be valid (``s_e`` below its
    selected edges, each ``s_w`` below its edge's selected workers, loads >= 1 where selected).
    """
    B, n, m = wmask.shape
    K_all = np.broadcast_to(np.asarray(K, dtype=np.float64), (B,))
    if n * m > BATCH_SLOTS and max_breaks is not None and order == _QUICK_ORDER:
        # Large clusters: the work per structure dwarfs the call overhead, and one structure at
        # a time keeps only its selected edges and its own count-state depth.
        return np.array(
            [
                _quick_expected_time(
                    _rule.model(cluster, wmask[b], s_w[b], int(s_e[b]), loads[b], float(K_all[b])),
                    max_breaks,
                )
                for b in range(B)
            ]
        )
    components = 2 if cluster.mixed else 1
    breaks = n * m * components if max_breaks is None else min(n * m * components, max_breaks)
    per_structure = n * m * components * (breaks + _TAIL_PANELS + 2) * order
    step = max(1, _CHUNK_ELEMENTS // per_structure)
    out = np.empty(B)
    for start in range(0, B, step):
        part = slice(start, start + step)
        out[part] = _chunk(
            cluster, wmask[part], s_w[part], s_e[part], loads[part], K_all[part], max_breaks, order
        )
    return out


@functools.lru_cache(maxsize=8)
def _gauss_legendre(order: int) -> tuple[FloatArray, FloatArray]:
    """Gauss-Legendre nodes and weights on [-1, 1] (computed once per order)."""
    nodes, weights = np.polynomial.legendre.leggauss(order)
    nodes.flags.writeable = False
    weights.flags.writeable = False
    return nodes, weights


def _chunk(
    cluster: _rule.Cluster,
    wmask: BoolArray,
    s_w: IntArray,
    s_e: IntArray,
    loads: IntArray,
    K: FloatArray,
    max_breaks: int | None,
    order: int,
) -> FloatArray:
    B = wmask.shape[0]
    emask, need, top_need, offsets, rates, weight = _arrivals(cluster, wmask, s_w, s_e, loads, K)
    t_lo, boundaries = _boundaries(
        cluster, wmask, emask, need, top_need, offsets, rates, weight, max_breaks
    )
    nodes_1d, weights_1d = _gauss_legendre(order)
    half = 0.5 * np.diff(boundaries, axis=-1)
    middle = 0.5 * (boundaries[:, 1:] + boundaries[:, :-1])
    nodes = (middle[..., None] + half[..., None] * nodes_1d).reshape(B, -1)
    quadrature = (half[..., None] * weights_1d).reshape(B, -1)
    survival = _survival(cluster, wmask, emask, need, top_need, offsets, rates, weight, nodes)
    return np.asarray(t_lo + (survival * quadrature).sum(axis=-1))


def brackets(
    cluster: _rule.Cluster,
    wmask: BoolArray,
    s_w: IntArray,
    s_e: IntArray,
    loads: IntArray,
    K: ArrayLike,
    max_breaks: int | None = 64,
    points: int = 2,
    stride: int = 1,
) -> tuple[FloatArray, FloatArray]:
    """Guaranteed ``(lower, upper)`` bounds (B,) on ``E[T]`` of B structures (arguments as in
    :func:`expected_times`), from ``P(T > t)`` at a few points only.

    ``S(t) = P(T > t)`` does not increase, so on a grid ``t_lo = b_0 < ... < b_Q = t_hi``
    (the quadrature's panel boundaries, every ``stride``-th of them and the last, each panel
    cut into ``points`` equal parts)
    ``sum (b_{j+1} - b_j) S(b_{j+1}) <= integral <= sum (b_{j+1} - b_j) S(b_j)``; the upper
    bound adds the tail beyond ``t_hi`` (union bound, at most ``1e-8`` of the mean's lower
    bound, see :func:`_boundaries`). About ``points / order`` of an evaluation's work: the
    search integrates only the candidates these bounds cannot rule out.
    """
    B, n, m = wmask.shape
    K_all = np.broadcast_to(np.asarray(K, dtype=np.float64), (B,))
    components = 2 if cluster.mixed else 1
    breaks = n * m * components if max_breaks is None else min(n * m * components, max_breaks)
    per_structure = n * m * components * (breaks + _TAIL_PANELS + 2) * points // stride
    step = max(1, _CHUNK_ELEMENTS // max(1, per_structure))
    lower, upper = np.empty(B), np.empty(B)
    for start in range(0, B, step):
        part = slice(start, start + step)
        lower[part], upper[part] = _bracket_chunk(
            cluster,
            wmask[part],
            s_w[part],
            s_e[part],
            loads[part],
            K_all[part],
            max_breaks,
            points,
            stride,
        )
    return lower, upper


def _bracket_chunk(
    cluster: _rule.Cluster,
    wmask: BoolArray,
    s_w: IntArray,
    s_e: IntArray,
    loads: IntArray,
    K: FloatArray,
    max_breaks: int | None,
    points: int,
    stride: int = 1,
) -> tuple[FloatArray, FloatArray]:
    B = wmask.shape[0]
    emask, need, top_need, offsets, rates, weight = _arrivals(cluster, wmask, s_w, s_e, loads, K)
    t_lo, boundaries = _boundaries(
        cluster, wmask, emask, need, top_need, offsets, rates, weight, max_breaks
    )
    if stride > 1:
        # a coarser grid of the same boundaries (sorted, t_lo first, t_hi last): looser bounds
        boundaries = np.concatenate([boundaries[:, :-1:stride], boundaries[:, -1:]], axis=-1)
    fractions = np.arange(points, dtype=np.float64) / points
    width = np.diff(boundaries, axis=-1)
    grid = (boundaries[:, :-1, None] + width[..., None] * fractions).reshape(B, -1)
    grid = np.concatenate([grid, boundaries[:, -1:]], axis=-1)
    survival = _survival(cluster, wmask, emask, need, top_need, offsets, rates, weight, grid)
    step = np.diff(grid, axis=-1)
    lower = t_lo + (step * survival[:, 1:]).sum(axis=-1)
    # the tail beyond t_hi: below 1e-8 of a lower bound of the mean, itself below t_hi
    upper = t_lo + (step * survival[:, :-1]).sum(axis=-1) + 1e-8 * grid[:, -1]
    return lower, upper


def _arrivals(
    cluster: _rule.Cluster,
    wmask: BoolArray,
    s_w: IntArray,
    s_e: IntArray,
    loads: IntArray,
    K: FloatArray,
) -> tuple[BoolArray, IntArray, IntArray, FloatArray, FloatArray, FloatArray]:
    """The arrival model of a batch: ``emask (B, n)``, ``need (B, n)``, ``top_need (B,)`` and
    per mixture component ``offsets, rates, weight (B, n, m, C)``."""
    n, m = wmask.shape[1:]
    emask: BoolArray = np.asarray(wmask.any(axis=-1))
    f = np.where(wmask, loads / K[:, None, None], 1.0)
    if cluster.mixed:
        multiplier = np.stack([np.ones_like(cluster.slow), cluster.slow], axis=-1)
        weight = np.stack([1.0 - cluster.straggle, cluster.straggle], axis=-1)
    else:
        multiplier = np.ones((n, m, 1))
        weight = np.ones((n, m, 1))
    weight = np.where(wmask[..., None], weight, 0.0)  # (B, n, m, C)
    offsets = cluster.link[..., None] + f[..., None] * multiplier * cluster.shift[..., None]
    rates = cluster.rate[..., None] / (f[..., None] * multiplier)
    need = np.where(emask, wmask.sum(axis=-1) - s_w, 1)
    top_need = emask.sum(axis=-1) - s_e
    return emask, need, top_need, offsets, rates, weight


def lower_bounds(
    cluster: _rule.Cluster,
    wmask: BoolArray,
    s_w: IntArray,
    s_e: IntArray,
    loads: IntArray,
    K: ArrayLike,
) -> FloatArray:
    """``t_lo`` (B,): the round cannot end earlier (every arrival is at least its shift and
    links after the start), so ``E[T] >= t_lo``; a candidate whose ``t_lo`` is no better than
    the incumbent's expected time cannot beat it and needs no integration."""
    B = wmask.shape[0]
    K_all = np.broadcast_to(np.asarray(K, dtype=np.float64), (B,))
    emask: BoolArray = np.asarray(wmask.any(axis=-1))
    f = np.where(wmask, loads / K_all[:, None, None], 1.0)
    # A straggling round is only slower (M >= 1): M = 1 gives the earliest arrival.
    master = cluster.link + f * cluster.shift + cluster.edge_link[:, None]
    need = np.where(emask, wmask.sum(axis=-1) - s_w, 1)
    top_need = emask.sum(axis=-1) - s_e
    return _t_lo(np.where(wmask, master, np.inf), emask, need, top_need)


def _t_lo(earliest: FloatArray, emask: BoolArray, need: IntArray, top_need: IntArray) -> FloatArray:
    """The ``top_need``-th of the edges' ``need``-th earliest arrivals (B,)."""
    group_lo = np.take_along_axis(np.sort(earliest, axis=-1), (need - 1)[..., None], axis=-1)
    group_lo = np.where(emask, group_lo[..., 0], np.inf)
    return np.take_along_axis(np.sort(group_lo, axis=-1), (top_need - 1)[:, None], axis=-1)[:, 0]


def _boundaries(
    cluster: _rule.Cluster,
    wmask: BoolArray,
    emask: BoolArray,
    need: IntArray,
    top_need: IntArray,
    offsets: FloatArray,
    rates: FloatArray,
    weight: FloatArray,
    max_breaks: int | None,
) -> tuple[FloatArray, FloatArray]:
    """``t_lo`` (B,) and sorted panel boundaries (B, Q): t_lo, the kinks inside (t_lo, t_hi)
    (at most ``max_breaks``, evenly picked in sorted order as ``timing._boundaries`` does; the
    others moved to t_hi, giving empty panels), the geometric tail splits, t_hi."""
    B = wmask.shape[0]
    master = offsets + cluster.edge_link[:, None, None]
    present = weight > 0
    earliest = np.where(present, master, np.inf).min(axis=-1)  # (B, n, m)
    t_lo = _t_lo(earliest, emask, need, top_need)
    fastest = np.where(present, rates, 0.0).max(axis=-1).sum(axis=(-1, -2))
    mean_lo = np.maximum(t_lo, np.where(wmask, earliest, np.inf).min(axis=(-1, -2)) + 1 / fastest)
    atol = 1e-8 * mean_lo[:, None, None, None]
    count = present.sum(axis=(-1, -2, -3))[:, None, None, None]
    # Tail: sum_c w exp(-lambda (t - B)) / lambda <= atol / 4 for t >= t_hi.
    with np.errstate(divide="ignore"):
        room = np.log(np.maximum(4.0 * count * weight / (rates * atol), 1.0)) / rates
    t_hi = np.maximum(np.where(present, master + room, -np.inf).max(axis=(-1, -2, -3)), t_lo)
    inside = present & (master > t_lo[:, None, None, None]) & (master < t_hi[:, None, None, None])
    count = inside.sum(axis=(-1, -2, -3))
    # Sorted, the kinks outside (t_lo, t_hi) come last: keep only as many columns as the
    # structure with the most kinks inside needs.
    kinks = np.sort(np.where(inside, master, np.inf).reshape(B, -1), axis=-1)
    kinks = kinks[:, : int(count.max(initial=0))]
    if max_breaks is not None and kinks.shape[1] > max_breaks:
        picks = np.linspace(0.0, 1.0, max_breaks)[None, :] * np.maximum(count - 1, 0)[:, None]
        kinks = np.take_along_axis(kinks, np.round(picks).astype(np.int64), axis=-1)
        kinks = np.where(np.arange(max_breaks) < count[:, None], kinks, np.inf)
    last = np.maximum(
        t_lo, np.where(np.isfinite(kinks), kinks, -np.inf).max(axis=-1, initial=-np.inf)
    )
    kinks = np.where(np.isfinite(kinks), kinks, t_hi[:, None])
    powers = np.exp2(-2.0 * np.arange(_TAIL_PANELS, 0, -1, dtype=np.float64))
    tail = last[:, None] + (t_hi - last)[:, None] * powers
    edges = np.concatenate([t_lo[:, None], kinks, tail, t_hi[:, None]], axis=-1)
    return t_lo, np.sort(edges, axis=-1)


def _survival(
    cluster: _rule.Cluster,
    wmask: BoolArray,
    emask: BoolArray,
    need: IntArray,
    top_need: IntArray,
    offsets: FloatArray,
    rates: FloatArray,
    weight: FloatArray,
    nodes: FloatArray,
) -> FloatArray:
    """P(T > t) at every structure's own nodes (B, T)."""
    B, n, m = wmask.shape
    T = nodes.shape[1]
    # Worker slots first (m, B, n, C, T): the order of the count recursion, no transposes.
    x = nodes[:, None, :] - cluster.edge_link[None, :, None]  # (B, n, T)
    q, p = slot_tails(x, offsets, rates, weight)
    slot_mask = wmask.copy()
    slot_mask[..., 0] |= ~emask  # an unselected edge: one dummy slot that never arrives
    ge, lt = _count_tail(
        p.reshape(m, B * n, T),
        q.reshape(m, B * n, T),
        slot_mask.reshape(B * n, m),
        need.reshape(B * n),
        slots_first=True,
    )
    ge = np.where(emask[..., None], ge.reshape(B, n, T), 0.0)
    lt = np.where(emask[..., None], lt.reshape(B, n, T), 1.0)
    _, survival = _count_tail(ge, lt, emask, top_need)
    return np.asarray(survival)
