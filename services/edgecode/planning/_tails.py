"""Arrival probabilities of worker slots, the innermost loop of every expected-time evaluation
(private; used by :mod:`edgecode.planning.timing` and :mod:`edgecode.planning._batch`).

A worker whose round time is a mixture of shifted exponentials (component c: weight ``w_c``,
offset ``b_c``, rate ``lambda_c``) has arrived by edge time x with probability
``sum_c w_c (1 - exp(-lambda_c max(x - b_c, 0)))``; both that and its complement are returned,
each a sum of non-negative terms (no ``1 - p`` cancellation in the count recursion).

Example
-------
>>> import numpy as np
>>> x = np.array([[[0.0, 1.0]]])  # (B, n, T) = (1, 1, 2)
>>> one = np.ones((1, 1, 1, 1))  # one worker, one component: offset 0, rate 1, weight 1
>>> q, p = slot_tails(x, 0 * one, one, one)
>>> bool(np.allclose(p[0, 0, 0], [0.0, 1 - np.exp(-1.0)]) and np.allclose(p + q, 1.0))
True
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def slot_tails(
    x: FloatArray, offsets: FloatArray, rates: FloatArray, weight: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """``(q, p)`` (m, B, n, T): each worker slot's probability of not having arrived and of
    having arrived by edge time ``x`` (B, n, T), the mixtures ``sum_c w_c exp(-delay_c)`` and
    ``sum_c w_c (-expm1(-delay_c))`` with ``delay = rate max(x - offset, 0)`` (``offsets``,
    ``rates``, ``weight`` (B, n, m, C)); slots first, the count recursion's order. With one
    component (weight 1; padding is masked by the count recursion, ``timing._count_tail``) no mixture products/sums.

    In place in two buffers of the (m, B, n, C, T) size: fresh temporaries of that size cost
    page faults (a micro-benchmark of 200 bimodal 4 x 4 structures: 17 -> 8.8 ms at 80 nodes);
    the same bits as the formula written out."""
    minus = np.subtract(x[None, :, :, None, :], np.moveaxis(offsets, 2, 0)[..., None])
    np.maximum(minus, 0.0, out=minus)
    minus *= -np.moveaxis(rates, 2, 0)[..., None]  # -delay
    if offsets.shape[-1] == 1:
        minus = minus[:, :, :, 0]
        p = np.expm1(minus)
        np.negative(p, out=p)
        return np.exp(minus, out=minus), p
    w = np.moveaxis(weight, 2, 0)[..., None]
    part = np.exp(minus)
    part *= w
    q = _components_sum(part)
    np.expm1(minus, out=part)
    part *= w
    p = _components_sum(part)  # sum_c w_c (-expm1) = -(sum_c w_c expm1): negation is exact
    np.negative(p, out=p)
    return q, p


def _components_sum(part: FloatArray) -> FloatArray:
    """``part.sum(axis=3)`` (the same bits): with two components one addition of the two
    slices, several times faster than numpy's reduction over a short middle axis."""
    if part.shape[3] == 2:
        return np.asarray(part[:, :, :, 0] + part[:, :, :, 1])
    return np.asarray(part.sum(axis=3))
