"""Refinement of a structure's loads by projected gradient descent (private).

The load rule is a heuristic; :func:`refine` improves a structure's loads by projected gradient
descent on the continuous loads (shares ``u_w`` per edge on ``{sum u = s_w + 1, u <= 1}``,
coverages ``g_i`` on ``{sum g = s_edge + 1, g <= 1}``), with the exact gradient
``dE/df_w = -integral B_j(t) D_w(t) dF_w(t)/df_w dt`` (``B_j`` = probability that exactly
``k_e - 1`` of the other edges have delivered, ``D_w`` = probability that exactly ``k_j - 1`` of
the other workers of edge j have arrived), then rounds to integers with the exact sums. The
refined loads are kept only when their expected time is lower.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgecode.planning import _rule
from edgecode.planning._evaluate import (
    SEARCH_BREAKS,
    SEARCH_RTOL,
    BoolArray,
    Evaluator,
    FloatArray,
    IntArray,
    Result,
    Structure,
)
from edgecode.planning._gradient import _expected_time_and_gradient
from edgecode.planning._tails import slot_tails
from edgecode.planning.timing import (
    _GL_NODES,
    _GL_WEIGHTS,
    _count_tail,
    _expected_time,
    _GroupModel,
    _model_from_arrays,
    _quick_expected_time,
)


def _project(
    y: FloatArray,
    total: FloatArray,
    lo: FloatArray | float,
    hi: FloatArray | float,
    mask: BoolArray,
) -> FloatArray:
    """Euclidean projection of each row onto {sum = total, lo <= x <= hi} (masked entries 0).

    The projection is ``clip(y - tau, lo, hi)`` with ``phi(tau) = sum clip(y - tau, lo, hi) =
    total``; ``phi`` is piecewise linear and non-increasing with knots ``y - hi`` and ``y - lo``,
    so it is evaluated at every knot and ``tau`` interpolated on the piece that crosses ``total``.
    """
    lo_b = np.broadcast_to(lo, y.shape)
    hi_b = np.broadcast_to(hi, y.shape)
    both = np.concatenate([mask, mask], axis=-1)
    knots = np.concatenate([y - hi_b, y - lo_b], axis=-1)
    knots = np.sort(np.where(both, knots, np.where(both, knots, -np.inf).max(axis=-1)[..., None]))
    values = np.clip(y[..., None, :] - knots[..., :, None], lo_b[..., None, :], hi_b[..., None, :])
    phi = np.where(mask[..., None, :], values, 0.0).sum(axis=-1)  # (..., 2m), non-increasing
    goal = np.asarray(total)[..., None]
    last = np.maximum((phi >= goal).sum(axis=-1) - 1, 0)[..., None]
    after = np.minimum(last + 1, knots.shape[-1] - 1)
    t0, t1 = _pick(knots, last), _pick(knots, after)
    p0, p1 = _pick(phi, last), _pick(phi, after)
    drop = p0 - p1
    safe = np.where(drop > 0, drop, 1.0)
    tau = np.where(drop > 0, t0 + (p0 - goal) * (t1 - t0) / safe, t0)
    return np.where(mask, np.clip(y - tau, lo_b, hi_b), 0.0)


def _pick(values: FloatArray, index: IntArray) -> FloatArray:
    """``take_along_axis(values, index, -1)`` for an index (..., 1) with the leading shape of
    ``values`` (one flat fancy-indexing step; numpy's general routine costs far more on these
    small arrays)."""
    flat = values.reshape(-1, values.shape[-1])
    return np.asarray(flat[np.arange(flat.shape[0]), index.reshape(-1)].reshape(index.shape))


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


#: Descent stops after two steps in a row that each gain less than this (relative).
SETTLED = 1e-5
#: Trial steps of a line search (each 0.35 times the previous), evaluated in batches ending at
#: these trials: all six in one batch costs about what the first one alone does on 6-8 workers
#: (the first is accepted in ~40 % of the steps, the second in ~45 %; docs/notes/planner.md).
LINE_STEPS = 6
LINE_BATCHES = (6,)


@dataclass(frozen=True)
class Continuous:
    """Continuous loads of a structure: over its selected edges (``rows``), the coverages ``g``
    (sum ``s_edge + 1``) and the workers' shares ``u`` of their edge's coverage (sum
    ``s_worker + 1`` per edge), and their expected time (search accuracy)."""

    structure: Structure
    rows: IntArray
    g: FloatArray
    u: FloatArray
    value: float


def _fixed_rules(
    batch: _GroupModel, weights: FloatArray, max_breaks: int
) -> tuple[FloatArray, FloatArray, FloatArray, IntArray] | None:
    """:func:`edgecode.planning.timing._fixed_rule` of B models at once, the same bits:
    ``(t_lo (B,), nodes (B, T), weights (B, T), nodes per model (B,))``, each row padded with
    its last boundary (zero-width panels); None when some model has more than ``max_breaks``
    kinks inside its range (thinned one model at a time).

    ``batch`` has offsets and rates (B, n, m, C) over one structure; ``weights`` its mixture
    weights broadcast to that shape. The rule's panel boundaries are the distinct values of
    ``t_lo``, the kinks in ``(t_lo, t_hi)``, seven geometric tail splits and ``t_hi``; here they
    are sorted per row with the excluded kinks at infinity and compacted."""
    B = batch.offsets.shape[0]
    n = batch.mask.shape[0]
    present = weights[0] > 0
    master = batch.offsets + batch.links[:, None, None]  # (B, n, m, C)
    earliest = np.where(present, master, np.inf).min(axis=3)
    earliest = np.where(batch.mask, earliest, np.inf)
    group_lo = np.sort(earliest, axis=2)[:, np.arange(n), batch.need - 1]  # (B, n)
    t_lo = np.sort(group_lo, axis=1)[:, batch.top_need - 1]
    fastest = np.where(present, batch.rates, 0.0).max(axis=3)[:, batch.mask].sum(axis=1)
    mean_lo = np.maximum(t_lo, earliest.reshape(B, -1).min(axis=1) + 1.0 / fastest)
    breaks = master[:, present]  # (B, count)
    rates = batch.rates[:, present]
    count = breaks.shape[1]
    atol = 1e-8 * mean_lo
    room = np.log(np.maximum(4.0 * count * weights[0][present] / (rates * atol[:, None]), 1.0))
    t_hi = np.maximum((breaks + room / rates).max(axis=1), t_lo)
    inside = (breaks > t_lo[:, None]) & (breaks < t_hi[:, None])
    kinks = np.where(inside, breaks, np.inf)
    kinks.sort(axis=1)
    if _distinct(kinks).sum(axis=1).max() > max_breaks:
        return None
    last = np.maximum(t_lo, np.where(inside, breaks, -np.inf).max(axis=1))
    splits = np.exp2(-2.0 * np.arange(7, 0, -1, dtype=np.float64))
    tail = last[:, None] + (t_hi - last)[:, None] * splits
    values = np.concatenate([t_lo[:, None], kinks, tail, t_hi[:, None]], axis=1)
    values.sort(axis=1)
    keep = _distinct(values)
    sizes = keep.sum(axis=1)
    packed = np.take_along_axis(values, np.argsort(~keep, axis=1, kind="stable"), axis=1)
    width = int(sizes.max())
    packed = packed[:, :width]
    column = np.arange(width)[None, :]
    bounds = np.where(column < sizes[:, None], packed, packed[np.arange(B), sizes - 1][:, None])
    half = 0.5 * np.diff(bounds, axis=1)
    middle = 0.5 * (bounds[:, 1:] + bounds[:, :-1])
    nodes = (middle[..., None] + half[..., None] * _GL_NODES).reshape(B, -1)
    quadrature = (half[..., None] * _GL_WEIGHTS).reshape(B, -1)
    return t_lo, nodes, quadrature, (sizes - 1) * _GL_NODES.size


def _distinct(rows: FloatArray) -> BoolArray:
    """The first of each run of equal finite values in rows sorted ascending (what
    ``np.unique`` keeps)."""
    keep = np.isfinite(rows)
    keep[:, 1:] &= rows[:, 1:] != rows[:, :-1]
    return keep


@dataclass(frozen=True)
class _Trial:
    """A trial load's ``E[T]`` and, when evaluated in a batch on the fixed rule, its model and
    rule ``(t_lo, nodes, weights)``."""

    value: float
    model: _GroupModel | None = None
    rule: tuple[float, FloatArray, FloatArray] | None = None


@dataclass(frozen=True)
class _Objective:
    """``E[T]`` (and its gradient) of a structure as a function of continuous ``(g, u)``."""

    cluster: _rule.Cluster
    rows: IntArray
    sel: BoolArray
    need: IntArray
    top_need: int
    max_breaks: int | None
    rtol: float

    def model(self, g: FloatArray, u: FloatArray) -> _GroupModel:
        cl, rows = self.cluster, self.rows
        return _model_from_arrays(
            g[..., None] * u,
            cl.shift[rows],
            cl.rate[rows],
            cl.link[rows],
            cl.straggle[rows],
            cl.slow[rows],
            self.sel,
            self.need,
            cl.edge_link[rows],
            self.top_need,
        )

    def value(self, g: FloatArray, u: FloatArray) -> float:
        model = self.model(g, u)
        if self.max_breaks is None:
            return _expected_time(model, self.rtol)
        return _quick_expected_time(model, self.max_breaks)

    def values(self, g: FloatArray, u: FloatArray) -> list[_Trial]:
        """:meth:`value` of B loads ``g (B, n), u (B, n, m)`` at once, the same bits (with each
        load's model and fixed rule, for :meth:`value_and_gradient` there).

        The B models (elementwise in the loads) get their fixed rules at once
        (:func:`_fixed_rules`); their groups are stacked into one count recursion (the groups
        are the same, so the recursion's truncation and branches are those of one model), and
        each E[T] sums its own nodes only."""
        batch = self.model(g, u)  # offsets, rates (B, n, m, C)
        weights = np.broadcast_to(batch.weights, batch.offsets.shape)
        rules = None if self.max_breaks is None else _fixed_rules(batch, weights, self.max_breaks)
        if rules is None:
            return [_Trial(self.value(g[b], u[b])) for b in range(g.shape[0])]
        t_lo, t, quadrature, sizes = rules
        B, T = t.shape
        x = t[:, None, :] - batch.links[None, :, None]  # (B, n, T)
        q, p = slot_tails(x, batch.offsets, batch.rates, weights)
        n, m = batch.mask.shape
        mask = np.broadcast_to(batch.mask, (B, n, m)).reshape(B * n, m)
        need = np.broadcast_to(batch.need, (B, n)).reshape(B * n)
        ge, lt = _count_tail(
            p.reshape(m, B * n, T), q.reshape(m, B * n, T), mask, need, slots_first=True
        )
        _, left = _count_tail(
            ge.reshape(B, n, T),
            lt.reshape(B, n, T),
            np.ones((B, n), dtype=bool),
            np.full(B, batch.top_need),
        )
        return [
            _Trial(
                float(t_lo[b]) + float(left[b, : sizes[b]] @ quadrature[b, : sizes[b]]),
                _GroupModel(
                    batch.offsets[b],
                    batch.rates[b],
                    weights[b],
                    batch.mask,
                    batch.need,
                    batch.links,
                    batch.top_need,
                ),
                (float(t_lo[b]), t[b, : sizes[b]], quadrature[b, : sizes[b]]),
            )
            for b in range(B)
        ]

    def value_and_gradient(
        self, g: FloatArray, u: FloatArray, trial: _Trial | None = None
    ) -> tuple[float, FloatArray]:
        """``E[T]`` and ``dE/df_w`` (selected edges x slots); ``trial``: the loads' model and
        rule from :meth:`values`."""
        cl, rows = self.cluster, self.rows
        model = self.model(g, u) if trial is None or trial.model is None else trial.model
        return _expected_time_and_gradient(
            model,
            g[:, None] * u,
            cl.rate[rows],
            cl.link[rows],
            cl.slow[rows],
            self.rtol,
            self.max_breaks,
            quick=self.max_breaks is not None,
            rule=None if trial is None else trial.rule,
        )


def descend(
    cluster: _rule.Cluster,
    result: Result,
    K: int,
    iterations: int,
    max_breaks: int | None = SEARCH_BREAKS,
    rtol: float = SEARCH_RTOL,
) -> Continuous:
    """Projected gradient descent from ``result``'s integer loads (out of ``K``).

    Each step moves ``u`` and ``g`` against their gradient (centred, scaled to a largest move of
    ``step``) and projects back onto their sets (every worker keeps at least one of the K
    partitions), accepting the first of six shrinking steps that lowers ``E[T]``; it stops after
    ``iterations`` steps, when no step helps, or after two steps that each gain less than
    :data:`SETTLED`.
    """
    st = result.structure
    rows = np.nonzero(st.emask)[0]
    sel = st.wmask[rows]
    need = sel.sum(axis=-1) - st.s_w[rows]
    objective = _Objective(cluster, rows, sel, need, int(rows.size - st.s_edge), max_breaks, rtol)
    g = (result.c[rows] / K).astype(np.float64)
    u = np.where(sel, result.l[rows] / np.maximum(result.c[rows], 1)[:, None], 0.0)
    current, grad_f = objective.value_and_gradient(g, u)
    step = 0.2
    small = 0
    for _ in range(iterations):
        found = _line_search(objective, st, K, g, u, grad_f, current, step)
        if found is None:
            break
        g, u, step, trial = found
        gain = 1.0 - trial.value / current
        current, grad_f = objective.value_and_gradient(g, u, trial)
        # Integer loads out of K are within about 1/K of these; far smaller gains are not worth
        # another gradient.
        small = small + 1 if gain < SETTLED else 0
        if small == 2:
            break
    return Continuous(st, rows, g, u, current)


def _line_search(
    objective: _Objective,
    st: Structure,
    K: int,
    g: FloatArray,
    u: FloatArray,
    grad_f: FloatArray,
    current: float,
    step: float,
) -> tuple[FloatArray, FloatArray, float, _Trial] | None:
    """The first of six shrinking projected steps that lowers ``E[T]``: ``(g, u, next step,
    its trial)``, or None."""
    sel, rows = objective.sel, objective.rows
    s_w, s_e = st.s_w[rows], st.s_edge
    size = sel.sum(-1)
    grad_u = np.where(sel, g[:, None] * grad_f, 0.0)
    grad_g = (u * grad_f).sum(axis=-1)
    centred_u = np.where(sel, grad_u - (grad_u.sum(-1) / size)[:, None], 0.0)
    centred_u = centred_u / (np.abs(centred_u).max() + 1e-300)
    centred_g = grad_g - grad_g.mean()
    centred_g = centred_g / (np.abs(centred_g).max() + 1e-300)
    lo_cover = np.ceil(size / (s_w + 1)) / K
    lo_u = np.where(sel, 1.0 / (K * np.maximum(g, 1.0 / K))[:, None], 0.0)
    steps = [step]
    for _ in range(LINE_STEPS - 1):
        steps.append(steps[-1] * 0.35)
    size_b = np.array(steps)[:, None, None]
    new_u = _project(
        u[None] - size_b * (s_w + 1)[None, :, None] / size[None, :, None] * centred_u[None],
        (s_w + 1).astype(np.float64),
        lo_u,
        1.0,
        np.broadcast_to(sel, (LINE_STEPS, *sel.shape)),
    )
    new_g = _project(
        g[None] - size_b[:, :, 0] * (s_e + 1) / rows.size * centred_g[None],
        np.array([s_e + 1.0]),
        lo_cover[None],
        1.0,
        np.ones((LINE_STEPS, rows.size), dtype=bool),
    )
    start = 0
    for stop in LINE_BATCHES:
        trials = objective.values(new_g[start:stop], new_u[start:stop])
        for i, trial in enumerate(trials, start):
            if trial.value < current * (1 - 1e-10):
                return new_g[i], new_u[i], min(0.5, steps[i] * 1.5), trial
        start = stop
    return None


def rounded(loads: Continuous, K: int) -> tuple[IntArray, IntArray] | None:
    """Integer ``(c (n,), l (n, m))`` out of ``K`` near ``K g`` and ``c_i u`` with the exact sums
    and bounds (largest remainder); None when K is too small for every selected worker."""
    return rounded_many(loads, [K])[0]


def rounded_many(loads: Continuous, Ks: Sequence[int]) -> list[tuple[IntArray, IntArray] | None]:
    """:func:`rounded` at each K of ``Ks``, all at once."""
    st = loads.structure
    rows = loads.rows
    sel = st.wmask[rows]
    s_w = st.s_w[rows]
    lo_c = np.ceil(sel.sum(axis=-1) / (s_w + 1)).astype(np.int64)
    K_all = np.asarray(Ks, dtype=np.int64)
    fits = np.nonzero(lo_c.sum() <= K_all * (st.s_edge + 1))[0]
    out: list[tuple[IntArray, IntArray] | None] = [None] * K_all.size
    if fits.size == 0:
        return out
    K_fit = K_all[fits]
    B, g = K_fit.size, rows.size
    c_rows = _round_counts(
        K_fit[:, None] * loads.g[None],
        K_fit * (st.s_edge + 1),
        np.broadcast_to(lo_c, (B, g)),
        np.broadcast_to(K_fit[:, None], (B, g)),
        np.ones((B, g), dtype=bool),
    )
    select = np.broadcast_to(sel, (B, *sel.shape))
    l_rows = _round_counts(
        c_rows[..., None] * loads.u[None],
        c_rows * (s_w + 1),
        np.ones(select.shape, np.int64),
        np.broadcast_to(c_rows[..., None], select.shape).astype(np.int64),
        select,
    )
    n, m = st.wmask.shape
    for b, k in enumerate(fits):
        c = np.zeros(n, dtype=np.int64)
        c[rows] = c_rows[b]
        l = np.zeros((n, m), dtype=np.int64)
        l[rows] = np.where(sel, l_rows[b], 0)
        out[int(k)] = (c, l)
    return out


def refine(ev: Evaluator, result: Result, iterations: int) -> Result:
    """Projected gradient descent on continuous loads, then rounding at ``ev.K``; keeps the
    better of ``result`` and the rounded loads."""
    loads = descend(ev.cluster, result, ev.K, iterations, ev.max_breaks, ev.rtol)
    counts = rounded(loads, ev.K)
    if counts is None:
        return result
    c, l = counts
    st = result.structure
    model = _rule.model(ev.cluster, st.wmask, st.s_w, st.s_edge, l, ev.K)
    value = (
        _expected_time(model, ev.rtol)
        if ev.max_breaks is None
        else _quick_expected_time(model, ev.max_breaks)
    )
    if value < result.value:
        return Result(value, st, c, l)
    return result
