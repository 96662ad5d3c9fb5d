"""Several load refinements in lockstep (private; see :mod:`edgecode.planning._refine`).

The planner refines the loads of up to six structures of one cluster, each by its own projected
gradient descent (:func:`edgecode.planning._refine.descend`). A descent step costs a few hundred
small numpy calls (the line search's trial loads and their expected times, then the gradient at
the accepted one), whatever the cluster's size up to 16 workers: the work is in the calls, not
in the arithmetic. :func:`descend_many` runs the descents side by side and answers each step's
questions of all of them in one batch: the trials of every descent in one evaluation, the
gradients in another.

The descents' groups (selected edges) are padded to the largest count among them with groups
of no worker (they never deliver and are masked out of the master's count), the mixture
components to the largest count with components of weight 0, and each model's quadrature
nodes with zero weights. Each descent takes the steps it would take alone: the same trial
loads, accepted by the same rule, only the expected times and gradients may differ in their
last bits (the count recursions of a batch truncate at the largest threshold among its groups).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgecode.planning import _rule
from edgecode.planning._evaluate import SEARCH_BREAKS, FloatArray, IntArray, Result
from edgecode.planning._gradient import _exactly_others
from edgecode.planning._refine import (
    SETTLED,
    Continuous,
    _fixed_rules,
    _Objective,
    _trial_loads,
    descend,
)
from edgecode.planning._tails import slot_tails
from edgecode.planning.timing import BoolArray, _count_tail


@dataclass
class _Descent:
    """One descent's objective and state (continuous loads over its selected edges)."""

    objective: _Objective
    result: Result
    K: int
    g: FloatArray
    u: FloatArray
    value: float = np.nan
    grad: FloatArray | None = None
    step: float = 0.2
    small: int = 0
    steps_left: int = 0
    #: the accepted trial's padded model index in the last evaluation batch
    accepted: tuple[_Batch, int] | None = None
    running: bool = True


@dataclass(frozen=True)
class _Batch:
    """Padded models of B loads (groups G, slots m, components C) and their fixed rules."""

    offsets: FloatArray  # (B, G, m, C)
    rates: FloatArray
    weights: FloatArray
    mask: BoolArray  # (B, G, m)
    need: IntArray  # (B, G)
    links: FloatArray  # (B, G)
    top_need: IntArray  # (B,)
    groups: BoolArray  # (B, G) real groups
    t_lo: FloatArray  # (B,)
    nodes: FloatArray  # (B, T)
    quadrature: FloatArray  # (B, T), 0 on padding
    sizes: IntArray  # (B,) nodes of each model


def descend_all(
    cluster: _rule.Cluster, starts: Sequence[tuple[Result, int]], iterations: int
) -> list[Continuous]:
    """The descents from ``starts`` (search quadrature): in lockstep (:func:`descend_many`), or
    one by one where some model has more kinks than the fixed rule keeps (large clusters)."""
    try:
        return descend_many(cluster, starts, iterations)
    except _TooManyKinks:
        return [descend(cluster, result, K, iterations) for result, K in starts]


def descend_many(
    cluster: _rule.Cluster,
    starts: Sequence[tuple[Result, int]],
    iterations: int,
    max_breaks: int = SEARCH_BREAKS,
) -> list[Continuous]:
    """``[descend(cluster, result, K, iterations, max_breaks) for result, K in starts]``
    (:func:`edgecode.planning._refine.descend`, search quadrature) in lockstep: each round
    evaluates the line-search trials of every running descent in one batch and the gradients
    at the accepted trials in another."""
    descents = [_start(cluster, result, K, iterations, max_breaks) for result, K in starts]
    _gradients(descents, None)
    while True:
        running = [d for d in descents if d.running and d.steps_left > 0]
        if not running:
            break
        trials = [
            _trial_loads(d.objective, d.result.structure, d.K, d.g, d.u, d.grad, d.step)
            for d in running
        ]
        batch = _models(
            [d.objective for d in running],
            [t[0] for t in trials],
            [t[1] for t in trials],
            max_breaks,
        )
        values = _values(batch)
        moved: list[_Descent] = []
        offset = 0
        for d, (new_g, new_u, sizes) in zip(running, trials, strict=True):
            d.steps_left -= 1
            count = new_g.shape[0]
            accepted = next(
                (i for i in range(count) if values[offset + i] < d.value * (1 - 1e-10)), None
            )
            if accepted is None:
                d.running = False
            else:
                d.g, d.u = new_g[accepted], new_u[accepted]
                d.step = min(0.5, sizes[accepted] * 1.5)
                d.accepted = (batch, offset + accepted)
                d.grad = None
                moved.append(d)
                gain = 1.0 - values[offset + accepted] / d.value
                d.small = d.small + 1 if gain < SETTLED else 0
            offset += count
        _gradients(moved, batch)
        for d in moved:
            if d.small == 2:
                d.running = False
    return [Continuous(d.result.structure, d.objective.rows, d.g, d.u, d.value) for d in descents]


def _start(
    cluster: _rule.Cluster, result: Result, K: int, iterations: int, max_breaks: int
) -> _Descent:
    st = result.structure
    rows = np.nonzero(st.emask)[0]
    sel = st.wmask[rows]
    need = sel.sum(axis=-1) - st.s_w[rows]
    objective = _Objective(cluster, rows, sel, need, int(rows.size - st.s_edge), max_breaks, 1e-6)
    g = (result.c[rows] / K).astype(np.float64)
    u = np.where(sel, result.l[rows] / np.maximum(result.c[rows], 1)[:, None], 0.0)
    return _Descent(objective, result, K, g, u, steps_left=iterations)


def _models(
    objectives: Sequence[_Objective],
    gs: Sequence[FloatArray],
    us: Sequence[FloatArray],
    max_breaks: int,
) -> _Batch:
    """The padded models of every objective's loads ``gs[k] (S_k, n_k), us[k]`` and their
    fixed rules (computed per objective, as :meth:`_Objective.values` does)."""
    parts = []
    for objective, g, u in zip(objectives, gs, us, strict=True):
        model = objective.model(g, u)  # offsets (S, n_k, m, C)
        weights = np.broadcast_to(model.weights, model.offsets.shape)
        rules = _fixed_rules(model, weights, max_breaks)
        if rules is None:
            raise _TooManyKinks
        parts.append((model, weights, rules))
    G = max(p[0].mask.shape[0] for p in parts)
    C = max(p[0].offsets.shape[-1] for p in parts)
    T = max(p[2][1].shape[1] for p in parts)
    m = parts[0][0].mask.shape[1]
    B = sum(p[0].offsets.shape[0] for p in parts)
    offsets = np.zeros((B, G, m, C))
    rates = np.ones((B, G, m, C))
    weights = np.zeros((B, G, m, C))
    mask = np.zeros((B, G, m), dtype=bool)
    need = np.ones((B, G), dtype=np.int64)
    links = np.zeros((B, G))
    top_need = np.zeros(B, dtype=np.int64)
    groups = np.zeros((B, G), dtype=bool)
    t_lo = np.zeros(B)
    nodes = np.zeros((B, T))
    quadrature = np.zeros((B, T))
    sizes = np.zeros(B, dtype=np.int64)
    row = 0
    for model, w, (lo, t, q, size) in parts:
        S, n, _, c = model.offsets.shape
        block = slice(row, row + S)
        offsets[block, :n, :, :c] = model.offsets
        rates[block, :n, :, :c] = model.rates
        weights[block, :n, :, :c] = w
        mask[block, :n] = model.mask
        need[block, :n] = model.need
        links[block, :n] = model.links
        top_need[block] = model.top_need
        groups[block, :n] = True
        t_lo[block] = lo
        nodes[block, : t.shape[1]] = t
        nodes[block, t.shape[1] :] = t[:, -1:]
        quadrature[block, : q.shape[1]] = q
        sizes[block] = size
        row += S
    return _Batch(
        offsets, rates, weights, mask, need, links, top_need, groups, t_lo, nodes, quadrature, sizes
    )


class _TooManyKinks(Exception):
    """Some model has more kinks than the fixed rule keeps."""


def _tails(batch: _Batch) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """``(p, q)`` (B, G, m, T) of every slot and the groups' delivery tails ``ge, lt``
    (B, G, T) (no-worker groups: never delivered)."""
    B, G, m, _ = batch.offsets.shape
    T = batch.nodes.shape[1]
    x = batch.nodes[:, None, :] - batch.links[:, :, None]  # (B, G, T)
    q, p = slot_tails(x, batch.offsets, batch.rates, batch.weights)  # (m, B, G, T)
    ge, lt = _count_tail(
        p.reshape(m, B * G, T),
        q.reshape(m, B * G, T),
        batch.mask.reshape(B * G, m),
        batch.need.reshape(B * G),
        slots_first=True,
    )
    ge = np.where(batch.groups[..., None], ge.reshape(B, G, T), 0.0)
    lt = np.where(batch.groups[..., None], lt.reshape(B, G, T), 1.0)
    return np.moveaxis(p, 0, 2), np.moveaxis(q, 0, 2), ge, lt


def _values(batch: _Batch) -> list[float]:
    """E[T] of every model of the batch on its own fixed rule."""
    _, _, ge, lt = _tails(batch)
    _, left = _count_tail(ge, lt, batch.groups, batch.top_need)
    return [
        float(batch.t_lo[b]) + float(left[b, :s] @ batch.quadrature[b, :s])
        for b, s in enumerate(batch.sizes.tolist())
    ]


def _gradients(descents: Sequence[_Descent], batch: _Batch | None) -> None:
    """Set every descent's value and gradient at its loads: from the accepted trial's model and
    rule in ``batch``, or (None) from models built afresh."""
    if not descents:
        return
    if batch is None:
        models = _models(
            [d.objective for d in descents],
            [d.g[None] for d in descents],
            [d.u[None] for d in descents],
            descents[0].objective.max_breaks or SEARCH_BREAKS,
        )
        picks = np.arange(len(descents))
    else:
        models = batch
        picks = np.array([d.accepted[1] for d in descents if d.accepted is not None])
    sub = _take(models, picks)
    cluster = descents[0].objective.cluster
    G = sub.mask.shape[1]
    m = sub.mask.shape[2]
    fractions = np.ones((len(descents), G, m))
    rate_w = np.ones((len(descents), G, m))
    link_w = np.zeros((len(descents), G, m))
    slow_w = np.ones((len(descents), G, m))
    for k, d in enumerate(descents):
        rows = d.objective.rows
        n = rows.size
        fractions[k, :n] = d.g[:, None] * d.u
        rate_w[k, :n] = cluster.rate[rows]
        link_w[k, :n] = cluster.link[rows]
        slow_w[k, :n] = cluster.slow[rows]
    survival, slope = _survival_and_gradient_many(sub, fractions, rate_w, link_w, slow_w)
    for k, d in enumerate(descents):
        s = int(sub.sizes[k])
        n = d.objective.rows.size
        w = sub.quadrature[k, :s]
        d.value = float(sub.t_lo[k]) + float(survival[k, :s] @ w)
        gradient = slope[k, :n, :, :s] @ w
        d.grad = np.where(d.objective.sel, gradient, 0.0)


def _take(batch: _Batch, picks: IntArray) -> _Batch:
    return _Batch(*(getattr(batch, f)[picks] for f in batch.__dataclass_fields__))


def _survival_and_gradient_many(
    batch: _Batch,
    fractions: FloatArray,
    rates: FloatArray,
    links: FloatArray,
    slow: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """:func:`edgecode.planning._gradient._survival_and_gradient` of every model of the batch
    at its own nodes: ``P(T > t)`` (B, T) and its slope in each worker's fraction
    (B, G, m, T)."""
    B, G, m, C = batch.offsets.shape
    T = batch.nodes.shape[1]
    x = batch.nodes[:, None, None, None, :] - batch.links[:, :, None, None, None]
    delay = np.maximum(x - batch.offsets[..., None], 0.0) * batch.rates[..., None]
    decay = np.exp(-delay)
    w = batch.weights[..., None]
    weighted = w * decay
    q = np.sum(weighted, axis=3)  # (B, G, m, T)
    p = np.sum(w * -np.expm1(-delay), axis=3)
    sizes = batch.mask.sum(axis=-1)
    by_success = batch.need - 1 <= sizes - batch.need
    r = np.where(by_success, batch.need - 1, sizes - batch.need)
    count = np.where(by_success[..., None, None], p, q)
    other = np.where(by_success[..., None, None], q, p)
    D = _exactly_others(
        count.reshape(B * G, m, T),
        other.reshape(B * G, m, T),
        batch.mask.reshape(B * G, m),
        np.maximum(r, 0).reshape(B * G),
    ).reshape(B, G, m, T)
    ge, lt = _count_tail(
        p.reshape(B * G, m, T),
        q.reshape(B * G, m, T),
        batch.mask.reshape(B * G, m),
        batch.need.reshape(B * G),
    )
    ge = np.where(batch.groups[..., None], ge.reshape(B, G, T), 0.0)
    lt = np.where(batch.groups[..., None], lt.reshape(B, G, T), 1.0)
    _, survival = _count_tail(ge, lt, batch.groups, batch.top_need)
    k = batch.top_need
    g_real = batch.groups.sum(axis=-1)
    top_by_success = k - 1 <= g_real - k
    top_r = np.where(top_by_success, k - 1, g_real - k)
    top_count = np.where(top_by_success[:, None, None], ge, lt)
    top_other = np.where(top_by_success[:, None, None], lt, ge)
    pivot = _exactly_others(top_count, top_other, batch.groups, top_r)  # (B, G, T)
    f = np.where(batch.mask, fractions, 1.0)
    active = x > batch.offsets[..., None]
    numerator = rates[..., None] * (x[..., 0, :] - links[..., None])  # (B, G, m, T)
    if C == 1:
        dF = np.where(active[..., 0, :], weighted[..., 0, :], 0.0) * (
            -numerator / (f * f)[..., None]
        )
    else:
        multiplier = np.stack([np.ones_like(slow), np.where(batch.mask, slow, 1.0)], axis=-1)
        scale = -numerator[..., None, :] / ((f * f)[..., None] * multiplier)[..., None]
        dF = np.sum(np.where(active, weighted * scale, 0.0), axis=3)
    return survival, np.asarray(-pivot[:, :, None, :] * D * dF)
