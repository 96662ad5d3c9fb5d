"""The in-place arrival probabilities of worker slots (planning._tails.slot_tails): the same
bits as the mixture formula written out, which every expected time of the planner rests on."""

from __future__ import annotations

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
