"""Gradients of the expected round time with respect to the workers' loads (private).

For the load refinement (:mod:`edgecode.planning._refine`) and the search's screening of moves
(:mod:`edgecode.planning._search`), on the model of :mod:`edgecode.planning.timing`:

    P(T > t) = C_j + B_j(t) (1 - G_j(t)),     B_j = P(exactly k - 1 of the OTHER groups delivered),

so a change of group j's delivery probability changes the survival by ``-B_j dG_j``; inside
group j, ``G_j`` changes with worker w's arrival probability ``F_w`` by ``D_w dF_w``, ``D_w`` =
P(exactly ``k_j - 1`` of the other workers of j arrived). Hence

    dE[T] / df_w = -integral B_j(t) D_w(t) dF_w(t)/df_w dt.
"""

from __future__ import annotations

import numpy as np

from edgecode.planning.timing import (
    _CHUNK_ELEMENTS,
    BoolArray,
    FloatArray,
    IntArray,
    _boundaries,
    _count_tail,
    _fixed_rule,
    _GroupModel,
    _integrate,
    _survival,
)


def _pivotal(ge: FloatArray, lt: FloatArray, need: int) -> FloatArray:
    """P(exactly need - 1 of the OTHER groups delivered), for every group: (g, T).

    ``P(T > t) = C_j + B_j (1 - G_j)`` with this ``B_j``, so a change of group j's delivery
    probability changes the survival by ``-B_j dG_j``.
    """
    g = ge.shape[0]
    by_success = need - 1 <= g - need
    r = np.array([need - 1 if by_success else g - need])
    count = (ge if by_success else lt)[None]
    other = (lt if by_success else ge)[None]
    return np.asarray(_exactly_others(count, other, np.ones((1, g), dtype=bool), r)[0])


def _exactly_others(
    count: FloatArray, other: FloatArray, mask: BoolArray, r: IntArray
) -> FloatArray:
    """P(exactly ``r[j]`` of the OTHER items of group j happen), for every item: (g, m, T).

    Prefix and suffix distributions of the count (truncated at ``max(r)``), then
    ``sum_a prefix_w(a) suffix_w(r - a)``.
    """
    g, m, T = count.shape
    R = int(r.max())
    count = np.where(mask[..., None], count, 0.0)
    other = np.where(mask[..., None], other, 1.0)
    prefix = np.zeros((m + 1, g, R + 1, T))
    suffix = np.zeros((m + 1, g, R + 1, T))
    prefix[0, :, 0] = 1.0
    suffix[m, :, 0] = 1.0
    for j in range(m):
        prefix[j + 1] = prefix[j] * other[:, j, None]
        prefix[j + 1, :, 1:] += prefix[j, :, :-1] * count[:, j, None]
        k = m - 1 - j
        suffix[k] = suffix[k + 1] * other[:, k, None]
        suffix[k, :, 1:] += suffix[k + 1, :, :-1] * count[:, k, None]
    out = np.zeros((g, m, T))
    for a in range(R + 1):
        b = r - a  # (g,)
        valid = b >= 0
        picked = suffix[1:, np.arange(g), np.maximum(b, 0)]  # (m, g, T)
        term = prefix[:-1, :, a] * picked
        out += np.where(valid[None, :, None], term, 0.0).transpose(1, 0, 2)
    return out


def _survival_and_gradient(
    model: _GroupModel,
    fractions: FloatArray,
    rates: FloatArray,
    links: FloatArray,
    slow: FloatArray,
    t: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """``P(T > t)`` (T,) and ``dP(T > t) / d f_w`` (g, m, T) for every worker slot, sharing one
    evaluation of the arrival probabilities and of the groups' delivery tails.

    ``dS/df_w = -B_j(t) D_w(t) dF_w/df_w``: B_j = P(exactly k - 1 of the other groups delivered),
    D_w = P(exactly k_j - 1 of the other workers of group j arrived), and for each mixture
    component ``dF/df = -exp(-lambda (x - b)) rate (x - link) / (f^2 M)`` for ``x > b``.
    """
    g, _, C = model.offsets.shape
    x = t[None, None, None, :] - model.links[:, None, None, None]
    delay = np.maximum(x - model.offsets[..., None], 0.0) * model.rates[..., None]
    decay = np.exp(-delay)
    if C == 1:
        # one component of weight 1 (0 on padding): no mixture sums
        q = np.where(model.mask[..., None], decay[:, :, 0], 0.0)
        p = np.where(model.mask[..., None], -np.expm1(-delay[:, :, 0]), 0.0)
        weighted = decay * model.weights[..., None]
    else:
        w = model.weights[..., None]
        weighted = w * decay
        q = np.sum(weighted, axis=2)
        p = np.sum(w * -np.expm1(-delay), axis=2)
    sizes = model.mask.sum(axis=1)
    by_success = model.need - 1 <= sizes - model.need
    r = np.where(by_success, model.need - 1, sizes - model.need)
    count = np.where(by_success[:, None, None], p, q)
    other = np.where(by_success[:, None, None], q, p)
    D = _exactly_others(count, other, model.mask, r)
    ge, lt = _count_tail(p, q, model.mask, model.need)
    top_mask = np.ones((1, g), dtype=bool)
    k = model.top_need
    _, survival = _count_tail(ge[None], lt[None], top_mask, np.array([k]))
    top_by_success = k - 1 <= g - k
    top_r = np.array([k - 1 if top_by_success else g - k])
    top_count = (ge if top_by_success else lt)[None]
    top_other = (lt if top_by_success else ge)[None]
    B = _exactly_others(top_count, top_other, top_mask, top_r)[0]  # (g, T)
    f = np.where(model.mask, fractions, 1.0)
    active = x > model.offsets[..., None]
    numerator = rates[..., None] * (x[..., 0, :] - links[..., None])  # (g, m, T)
    if C == 1:
        dF = np.where(active[:, :, 0], weighted[:, :, 0], 0.0) * (-numerator / (f * f)[..., None])
    else:
        multiplier = np.stack([np.ones_like(slow), np.where(model.mask, slow, 1.0)], axis=-1)
        scale = -numerator[:, :, None, :] / ((f * f)[..., None] * multiplier)[..., None]
        dF = np.sum(np.where(active, weighted * scale, 0.0), axis=2)
    return survival[0], np.asarray(-B[:, None, :] * D * dF)


def _expected_time_and_gradient(
    model: _GroupModel,
    fractions: FloatArray,
    rates: FloatArray,
    links: FloatArray,
    slow: FloatArray,
    rtol: float = 1e-8,
    max_breaks: int | None = None,
    quick: bool = False,
    rule: tuple[float, FloatArray, FloatArray] | None = None,
) -> tuple[float, FloatArray]:
    """E[T] and dE[T]/df_w (g, m) (zero on padding), on the adaptive rule of E[T].

    ``fractions, rates, links, slow`` are the (g, m) worker arrays the model was built from;
    ``quick`` uses the fixed rule of :func:`_fixed_rule` instead of the adaptive one (or
    ``rule``, that rule's ``(t_lo, nodes, weights)`` when already computed).
    """
    g, m, C = model.offsets.shape
    step = max(64, _CHUNK_ELEMENTS // max(1, 4 * g * m * C))
    gradient = np.zeros(model.mask.shape)
    if quick:
        t_lo, nodes, weights = _fixed_rule(model, max_breaks or 64) if rule is None else rule
        integral = 0.0
        for start in range(0, nodes.size, step):
            part = slice(start, start + step)
            survival, slope = _survival_and_gradient(
                model, fractions, rates, links, slow, nodes[part]
            )
            integral += float(survival @ weights[part])
            gradient += slope @ weights[part]
    else:
        t_lo, atol, boundaries = _boundaries(model, rtol, max_breaks)
        integral, nodes, weights = _integrate(lambda t: _survival(model, t), boundaries, atol / 2)
        for start in range(0, nodes.size, step):
            part = slice(start, start + step)
            slope = _survival_and_gradient(model, fractions, rates, links, slow, nodes[part])[1]
            gradient += slope @ weights[part]
    return t_lo + integral, np.where(model.mask, gradient, 0.0)
