"""The in-place arrival probabilities of worker slots (planning._tails.slot_tails): the same
bits as the mixture formula written out, which every expected time of the planner rests on."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from edgecode.planning._tails import slot_tails


def _formula(
    x: np.ndarray, offsets: np.ndarray, rates: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``sum_c w_c exp(-delay_c)`` and ``sum_c w_c (-expm1(-delay_c))`` (m, B, n, T), written
    out with fresh temporaries (the code before the in-place version)."""
    delay = np.maximum(x[None, :, :, None, :] - np.moveaxis(offsets, 2, 0)[..., None], 0.0)
    delay = delay * np.moveaxis(rates, 2, 0)[..., None]
    w = np.moveaxis(weight, 2, 0)[..., None]
    return np.sum(w * np.exp(-delay), axis=3), np.sum(w * -np.expm1(-delay), axis=3)


def _inputs(
    rng: np.random.Generator, components: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    B, n, m, T = 5, 3, 4, 17
    offsets = rng.uniform(0.0, 1.0, (B, n, m, components))
    # rates from slow to very fast: delays from ~0 (no cancellation allowed) to ~1e3 (q ~ 0)
    rates = 10.0 ** rng.uniform(-2.0, 3.0, (B, n, m, components))
    if components == 1:
        weight = np.ones((B, n, m, 1))
    else:
        first = rng.uniform(0.0, 1.0, (B, n, m))
        weight = np.stack([first, 1.0 - first], axis=-1)
    # times before, at and after the offsets
    x = rng.uniform(-0.5, 3.0, (B, n, T))
    x[..., 0] = offsets[..., 0, 0]
    return x, offsets, rates, weight


@pytest.mark.parametrize("components", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_slot_tails_are_the_bits_of_the_mixture_formula(components: int, seed: int) -> None:
    x, offsets, rates, weight = _inputs(np.random.default_rng(seed), components)
    q, p = slot_tails(x, offsets, rates, weight)
    q_ref, p_ref = _formula(x, offsets, rates, weight)
    assert q.shape == p.shape == (offsets.shape[2], *x.shape)
    assert np.all(np.isfinite(q)) and np.all(np.isfinite(p))
    # bit for bit: the planner's plans must not move by a last bit
    assert np.array_equal(q, q_ref) and np.array_equal(p, p_ref)
    # both are probabilities and complements (to rounding)
    assert np.all((q >= 0) & (q <= 1 + 1e-15) & (p >= 0) & (p <= 1 + 1e-15))
    assert np.all(np.abs(p + q - 1.0) <= 1e-15)
    # before its offsets a slot has not arrived: p exactly 0 (no 1 - q cancellation)
    first = np.moveaxis(offsets, 2, 0).min(axis=-1)[..., None]  # (m, B, n, 1)
    before = x[None] <= first
    assert before.any() and np.all(p[before] == 0.0) and np.all(q[before] == 1.0)


def test_tiny_delays_keep_their_relative_precision() -> None:
    # p = 1 - exp(-delay) for delays of 1e-14 .. 1e-6: expm1 keeps ~16 digits, 1 - exp would
    # keep only ~16 + log10(delay) of them
    delay = 10.0 ** np.arange(-14.0, -5.0)
    x = delay[None, None, :]  # (1, 1, T): offset 0, rate 1, so the delay is x exactly
    one = np.ones((1, 1, 1, 1))
    q, p = slot_tails(x, 0.0 * one, one, one)
    exact = delay - delay**2 / 2 + delay**3 / 6
    rel = np.abs(p[0, 0, 0] / exact - 1.0)
    assert np.all(np.isfinite(rel)) and np.all(rel <= 1e-15)
    assert np.all(np.abs(q[0, 0, 0] - (1.0 - exact)) <= 2e-16)


@pytest.mark.parametrize("mixed", [False, True])
def test_arrival_probabilities_against_the_formula_slot_by_slot(mixed: bool) -> None:
    """``timing._arrival_probabilities`` (the partial-recovery planner and the structure search
    use it): P(arrived) and P(not arrived) of every slot (g, m) at every master time, against
    ``sum_c w_c (1 - exp(-rate_c max(t - link_g - offset_c, 0)))`` written out per element."""
    from edgecode.planning.timing import _arrival_probabilities, _model_from_arrays

    rng = np.random.default_rng(11)
    model = _model_from_arrays(
        rng.uniform(0.2, 0.8, (2, 3)),
        rng.uniform(0.0, 0.3, (2, 3)),
        rng.uniform(1.0, 10.0, (2, 3)),
        rng.uniform(0.0, 0.01, (2, 3)),
        np.full((2, 3), 0.3 if mixed else 0.0),
        np.full((2, 3), 3.0 if mixed else 1.0),
        np.array([[True, True, True], [True, True, False]]),
        np.array([2, 1]),
        np.array([0.0, 0.02]),
        1,
    )
    t = np.array([0.0, 0.01, 0.05, 0.2, 0.7, 3.0])
    arrived, waiting = _arrival_probabilities(model, t)
    g, m, components = model.offsets.shape
    assert arrived.shape == waiting.shape == (g, m, t.size)
    want_arrived = np.zeros((g, m, t.size))
    want_waiting = np.zeros((g, m, t.size))
    for a, b, c, k in itertools.product(range(g), range(m), range(components), range(t.size)):
        delay = model.rates[a, b, c] * max(t[k] - model.links[a] - model.offsets[a, b, c], 0.0)
        want_arrived[a, b, k] += model.weights[a, b, c] * -math.expm1(-delay)
        want_waiting[a, b, k] += model.weights[a, b, c] * math.exp(-delay)
    errors = np.abs(np.concatenate([arrived - want_arrived, waiting - want_waiting]))
    assert np.all(np.isfinite(errors)) and np.all(errors <= 1e-14), errors.max()
    assert np.any(want_arrived > 0.1) and np.any(want_waiting > 0.1)  # both sides exercised
