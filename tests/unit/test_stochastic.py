"""Unit tests of edgecode.codes.stochastic (stochastic gradient coding as used by GOCO)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from edgecode.codes.stochastic import StochasticCode, stochastic


def _exact_expectation(code: StochasticCode, G: np.ndarray) -> np.ndarray:
    """E[sum_i g_i], summing over all 2^n straggler patterns weighted by their probability."""
    expectation = np.zeros(G.shape[1])
    total_probability = 0.0
    for pattern in itertools.product([False, True], repeat=code.n_workers):
        alive = np.array(pattern)
        probability = code.pattern_probability(alive)
        expectation += probability * code.encode(alive, G).sum(axis=0)
        total_probability += probability
    assert total_probability == pytest.approx(1.0, abs=1e-12)
    return expectation


@pytest.mark.parametrize(("n", "d"), [(5, 1), (5, 2), (6, 3), (7, 7), (4, 4)])
def test_cyclic_placement(n: int, d: int) -> None:
    code = stochastic(n, d, 0.2)
    assert code.n_partitions == n
    for j, holders in enumerate(code.holders):
        assert holders == tuple(sorted((j + u) % n for u in range(d)))
    for i, partitions in enumerate(code.partitions_of_worker):
        assert len(partitions) == d
        assert all(i in code.holders[j] for j in partitions)
    assert code.computation_load == d / n
    B = code.B
    assert B.shape == (n, n)
    np.testing.assert_array_equal(B != 0, B == code.weight)
    np.testing.assert_array_equal((B != 0).sum(axis=0), np.full(n, d))
    assert code.weight == 1 / (d * 0.8)


@pytest.mark.parametrize(("n", "d", "k"), [(5, 2, 7), (6, 3, 4), (4, 4, 9), (7, 1, 20), (3, 2, 1)])
def test_even_placement_for_other_partition_counts(n: int, d: int, k: int) -> None:
    code = stochastic(n, d, 0.5, n_partitions=k)
    assert code.n_partitions == k
    assert all(len(set(h)) == len(h) == d for h in code.holders)
    counts = [len(p) for p in code.partitions_of_worker]
    assert sum(counts) == k * d
    assert max(counts) - min(counts) <= 1
    assert code.B.shape == (n, k)
    np.testing.assert_array_equal((code.B != 0).sum(axis=0), np.full(k, d))


@pytest.mark.parametrize(
    ("n", "d", "p", "k"), [(4, 2, 0.5, None), (5, 4, 0.75, None), (4, 1, 0.0, None), (6, 2, 0.5, 9)]
)
def test_exact_unbiasedness_in_exact_arithmetic(n: int, d: int, p: float, k: int | None) -> None:
    # d (1 - p) is a power of two, integer gradients: every float operation below is exact
    code = stochastic(n, d, p, n_partitions=k)
    G = np.random.default_rng(0).integers(-50, 50, size=(code.n_partitions, 3)).astype(float)
    np.testing.assert_array_equal(_exact_expectation(code, G), G.sum(axis=0))


@pytest.mark.parametrize(("n", "d", "p"), [(5, 2, 0.3), (6, 3, 0.1), (7, 2, 0.65), (8, 8, 0.9)])
def test_unbiasedness_over_all_patterns(n: int, d: int, p: float) -> None:
    code = stochastic(n, d, p)
    G = np.random.default_rng(1).standard_normal((n, 4))
    np.testing.assert_allclose(_exact_expectation(code, G), G.sum(axis=0), rtol=0, atol=1e-12)


def test_the_exact_check_detects_a_missing_correction() -> None:
    # without the 1/(1 - p) factor the sum is biased by (1 - p); the same check must catch it
    code = stochastic(5, 2, 0.3)
    uncorrected = StochasticCode(
        n_workers=5,
        n_partitions=5,
        replication=2,
        straggle_probability=0.0,  # weight 1/d, while the workers really straggle with p = 0.3
        holders=code.holders,
        partitions_of_worker=code.partitions_of_worker,
    )
    G = np.random.default_rng(2).standard_normal((5, 2))
    expectation = np.zeros(2)
    for pattern in itertools.product([False, True], repeat=5):
        expectation += code.pattern_probability(pattern) * uncorrected.encode(pattern, G).sum(0)
    np.testing.assert_allclose(expectation, 0.7 * G.sum(axis=0), atol=1e-12)
    assert not np.allclose(expectation, G.sum(axis=0), atol=1e-6)


def test_monte_carlo_mean_is_unbiased() -> None:
    code = stochastic(8, 3, 0.4)
    rng = np.random.default_rng(2024)
    G = rng.standard_normal((8, 5))
    rounds = 20_000
    draws = np.array([code.encode(code.sample_alive(rng), G).sum(axis=0) for _ in range(rounds)])
    mean = draws.mean(axis=0)
    standard_error = draws.std(axis=0, ddof=1) / np.sqrt(rounds)
    assert np.all(np.abs(mean - G.sum(axis=0)) < 5 * standard_error)
    # and the straggle frequency matches p
    alive = np.array([code.sample_alive(rng) for _ in range(5_000)])
    assert abs(1 - alive.mean() - 0.4) < 0.01


def test_encode_zeroes_stragglers_and_accepts_masks_or_sets() -> None:
    code = stochastic(5, 2, 0.5)
    G = np.arange(10, dtype=float).reshape(5, 2)
    from_set = code.encode({0, 3}, G)
    from_mask = code.encode(np.array([True, False, False, True, False]), G)
    from_list = code.encode([True, False, False, True, False], G)
    np.testing.assert_array_equal(from_set, from_mask)
    np.testing.assert_array_equal(from_set, from_list)
    np.testing.assert_array_equal(from_set[[1, 2, 4]], 0.0)
    np.testing.assert_array_equal(
        from_set[0], code.weight * G[list(code.partitions_of_worker[0])].sum(0)
    )
    np.testing.assert_array_equal(code.encode(set(), G), np.zeros((5, 2)))
    np.testing.assert_array_equal(code.encode(range(5), G[:, 0]), code.B @ G[:, 0])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": 0, "d": 1, "p": 0.1}, "n"),
        ({"n": 4, "d": 0, "p": 0.1}, "d"),
        ({"n": 4, "d": 5, "p": 0.1}, "d"),
        ({"n": 4, "d": 2, "p": 1.0}, "p"),
        ({"n": 4, "d": 2, "p": -0.1}, "p"),
        ({"n": 4, "d": 2, "p": float("nan")}, "p"),
        ({"n": 4, "d": 2, "p": 0.1, "n_partitions": 0}, "n_partitions"),
        ({"n": 4, "d": 2.0, "p": 0.1}, "d"),
    ],
)
def test_rejects_bad_parameters(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must"):
        stochastic(**kwargs)


def test_encode_rejects_bad_shapes() -> None:
    code = stochastic(4, 2, 0.1)
    with pytest.raises(ValueError, match="partial_gradients must have shape"):
        code.encode({0}, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="alive mask must have shape"):
        code.encode(np.ones(3, dtype=bool), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="alive"):
        code.encode({7}, np.zeros((4, 2)))


# -- survivors of the mutation run (docs/notes/mutation.md) -------------------------------------


class _FixedRandom:
    """A stand-in for np.random.Generator whose ``random`` returns given values."""

    def __init__(self, values: list[float]) -> None:
        self.values = np.array(values)

    def random(self, size: int | tuple[int, ...]) -> np.ndarray:
        return self.values[: int(np.prod(size))].reshape(size)


def test_sampled_masks_straggle_below_p_and_finish_from_p_on() -> None:
    """Worker i finishes when its uniform draw is >= p (so P(finish) = 1 - p exactly)."""
    code = stochastic(4, 2, 0.5)
    draws = [0.5, 0.2, 0.7, 0.0, 0.49, 0.51, 0.5, 0.99]
    alive = code.sample_alive(_FixedRandom(draws))  # type: ignore[arg-type]
    np.testing.assert_array_equal(alive, [True, False, True, False])
    rounds = code.sample_alive_rounds(_FixedRandom(draws), 2)  # type: ignore[arg-type]
    np.testing.assert_array_equal(rounds, [[True, False, True, False], [False, True, True, True]])
    assert rounds.shape == (2, 4) and rounds.dtype == np.bool_
    assert code.sample_alive_rounds(np.random.default_rng(0), 0).shape == (0, 4)
    with pytest.raises(ValueError, match=r"^rounds must be in >= 0, got -1$"):
        code.sample_alive_rounds(np.random.default_rng(0), -1)
    with pytest.raises(ValueError, match=r"^rounds must be an integer, got True \(bool\)$"):
        code.sample_alive_rounds(np.random.default_rng(0), True)


@pytest.mark.parametrize(
    ("n", "d", "p", "k"), [(4, 2, 0.3, None), (3, 1, 0.5, None), (4, 3, 0.2, 6)]
)
def test_sum_variance_is_the_exact_variance_over_all_patterns(
    n: int, d: int, p: float, k: int | None
) -> None:
    code = stochastic(n, d, p, n_partitions=k)
    G = np.random.default_rng(3).standard_normal((code.n_partitions, 3))
    mean = np.zeros(3)
    second = np.zeros(3)
    for pattern in itertools.product([False, True], repeat=n):
        total = code.encode(np.array(pattern), G).sum(axis=0)
        probability = code.pattern_probability(np.array(pattern))
        mean += probability * total
        second += probability * total**2
    exact = second - mean**2
    variance = code.sum_variance(G)
    assert variance.shape == (3,)
    errors = np.abs(variance - exact) / np.abs(exact)
    assert np.all(np.isfinite(errors)) and np.all(errors <= 1e-10)
    one = code.sum_variance(G[:, 0])
    assert one.shape == () and abs(float(one) - exact[0]) <= 1e-10 * abs(exact[0])
    assert stochastic(2, 1, 0.5).sum_variance(np.array([1.0, 3.0])) == 10.0


def test_shape_errors_are_exact() -> None:
    code = stochastic(4, 2, 0.1)
    message = r"^partial_gradients must have shape \(4,\) or \(4, dim\), got \(4, 2, 1\)$"
    with pytest.raises(ValueError, match=message):
        code.encode({0}, np.zeros((4, 2, 1)))
    with pytest.raises(ValueError, match=message):
        code.sum_variance(np.zeros((4, 2, 1)))
    with pytest.raises(ValueError, match=r"^partial_gradients must have shape .* got \(3,\)$"):
        code.sum_variance(np.zeros(3))
    with pytest.raises(ValueError, match=r"^alive mask must have shape \(4,\), got \(3,\)$"):
        code.alive_mask(np.ones(3, dtype=bool))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 2.0, "d": 1, "p": 0.1}, r"n must be an integer, got 2.0 \(float\)"),
        ({"n": True, "d": 1, "p": 0.1}, r"n must be an integer, got True \(bool\)"),
        ({"n": 0, "d": 1, "p": 0.1}, r"n must be in >= 1, got 0"),
        ({"n": 4, "d": 5, "p": 0.1}, r"d must be in \[1, 4\], got 5"),
        ({"n": 4, "d": 0, "p": 0.1}, r"d must be in \[1, 4\], got 0"),
        ({"n": 4, "d": 2, "p": 1.0}, r"p must be in \[0, 1\), got 1.0"),
        ({"n": 4, "d": 2, "p": True}, r"p must be a real number in \[0, 1\), got True"),
        ({"n": 4, "d": 2, "p": "0.1"}, r"p must be a real number in \[0, 1\), got '0.1'"),
        ({"n": 4, "d": 2, "p": float("inf")}, r"p must be a real number in \[0, 1\), got inf"),
        ({"n": 4, "d": 2, "p": 0.1, "n_partitions": 0}, r"n_partitions must be in >= 1, got 0"),
    ],
)
def test_parameter_errors_are_exact(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        stochastic(**kwargs)


def test_boundary_parameters_are_accepted() -> None:
    code = stochastic(np.int64(4), 4, 0)  # type: ignore[arg-type]
    assert (code.n_workers, code.replication) == (4, 4)
    assert code.straggle_probability == 0.0 and isinstance(code.straggle_probability, float)
    assert stochastic(1, 1, 0.0).partitions_of_worker == ((0,),)


def test_alive_mask_forms() -> None:
    code = stochastic(4, 2, 0.5)
    given = np.array([True, False, True, False])
    mask = code.alive_mask(given)
    mask[0] = False
    assert given[0]  # a copy, never the caller's array
    np.testing.assert_array_equal(code.alive_mask((True, False, False, True)), [1, 0, 0, 1])
    np.testing.assert_array_equal(code.alive_mask(np.array([0, 2])), [1, 0, 1, 0])
    np.testing.assert_array_equal(code.alive_mask([3]), [0, 0, 0, 1])
    np.testing.assert_array_equal(code.alive_mask(iter([1])), [0, 1, 0, 0])
    assert code.alive_mask([]).dtype == np.bool_ and not code.alive_mask([]).any()


def test_uneven_placement_and_its_load() -> None:
    """k d = 14 slots over 5 workers: the first 14 mod 5 = 4 workers get 3, the last 2."""
    code = stochastic(5, 2, 0.5, n_partitions=7)
    assert [len(p) for p in code.partitions_of_worker] == [3, 3, 3, 3, 2]
    assert code.computation_load == 3 / 7
    assert code.holders == tuple(tuple(h) for h in code.holders)
    assert all(isinstance(h, tuple) for h in code.holders)
    assert all(isinstance(w, tuple) for w in code.partitions_of_worker)
    assert code.B.shape == (5, 7) and code.weight == 1.0


def test_pattern_probability_and_weight_values() -> None:
    code = stochastic(3, 1, 0.25)
    assert code.pattern_probability([0]) == 0.75 * 0.25**2
    assert code.pattern_probability(np.array([True, True, True])) == 0.75**3
    assert code.weight == 1 / (1 * 0.75)
    assert stochastic(4, 2, 0.5).weight == 1.0


def test_exact_fractions_come_back_as_float64() -> None:
    """Gradients given as exact fractions (an object array) are read as float64."""
    from fractions import Fraction

    code = stochastic(4, 2, 0.5)
    G = np.array([[Fraction(1, 3)], [Fraction(2, 3)], [Fraction(1)], [Fraction(-1, 2)]])
    encoded = code.encode(range(4), G)
    variance = code.sum_variance(G)
    assert encoded.dtype == np.float64 and variance.dtype == np.float64
    expected = code.B @ G.astype(np.float64)
    assert np.all(np.isfinite(encoded)) and np.all(np.abs(encoded - expected) <= 1e-15)
    reference = code.sum_variance(G.astype(np.float64))
    assert variance.shape == (1,) and np.isfinite(variance[0])
    assert abs(variance[0] - reference[0]) <= 1e-15
