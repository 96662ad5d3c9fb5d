"""Exact-value tests of edgecode.codes.approximate that kill its mutants (issue 19).

Each test pins one promise of the module: dtypes and read-only arrays, the argument checks at
their bounds, the LRU cache, ``covers``, the decode tolerance (inside and outside it, and exactly
at it) and the rule's ``wait`` / ``until_exact`` semantics.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgecode.codes import fractional_repetition
from edgecode.codes._linalg import DECODE_TOLERANCE
from edgecode.codes.approximate import (
    USAGE_THRESHOLD,
    LeastSquaresDecoder,
    LeastSquaresRule,
    used_partitions,
)


def test_used_partitions_is_a_strict_threshold_with_bool_dtype() -> None:
    weights = np.array([USAGE_THRESHOLD, -USAGE_THRESHOLD, 2e-6, 0.0, -1.0, 0.5])
    used = used_partitions(weights)
    assert used.dtype == np.bool_ and used.shape == (6,)
    assert used.tolist() == [False, False, True, False, True, True]
    assert used_partitions(weights, threshold=0.5).tolist() == [False] * 4 + [True, False]


def test_int_inputs_are_stored_as_read_only_float64() -> None:
    decoder = LeastSquaresDecoder(np.array([[1, 0], [0, 2]]), targets=np.array([3, 4]))
    assert decoder.B.dtype == np.float64 and decoder.targets.dtype == np.float64
    with pytest.raises(ValueError, match="read-only"):
        decoder.B[0, 0] = 5.0
    with pytest.raises(ValueError, match="read-only"):
        decoder.targets[0] = 5.0
    d = decoder.decode([1, 0])
    assert d.alive == (0, 1)
    assert d.weights.dtype == np.float64 and d.partition_weights.dtype == np.float64
    assert d.weights.tolist() == pytest.approx([3.0, 2.0], abs=1e-12)
    assert d.exact and d.residual == pytest.approx(0.0, abs=1e-24)
    for array in (d.weights, d.partition_weights):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 1.0


@pytest.mark.parametrize("shape", [(1, 3), (3, 1), (1, 1)])
def test_a_single_row_or_column_is_a_valid_code(shape: tuple[int, int]) -> None:
    decoder = LeastSquaresDecoder(np.ones(shape))
    assert (decoder.n_senders, decoder.n_partitions) == shape
    assert decoder.decode([0]).alive == (0,)


@pytest.mark.parametrize("shape", [(0, 3), (3, 0)])
def test_an_empty_code_is_rejected(shape: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match=r"B must be .*\(0, 3\)|B must be .*\(3, 0\)"):
        LeastSquaresDecoder(np.ones(shape))


def test_cache_size_zero_is_allowed_and_caches_nothing() -> None:
    decoder = LeastSquaresDecoder(fractional_repetition(4, 1).B, cache_size=0)
    first = decoder.decode([0, 2])
    again = decoder.decode([0, 2])
    assert again is not first and again.weights.tolist() == first.weights.tolist()
    with pytest.raises(ValueError, match=r"cache_size must be >= 0, got -1"):
        LeastSquaresDecoder(np.eye(2), cache_size=-1)


def test_cache_keeps_exactly_cache_size_sets_least_recently_used_out() -> None:
    decoder = LeastSquaresDecoder(fractional_repetition(4, 1).B, cache_size=2)
    a = decoder.decode([0])
    b = decoder.decode([1])
    assert decoder.decode([0]) is a and decoder.decode([1]) is b  # two fit
    assert decoder.decode([0]) is a  # a is now the most recently used
    decoder.decode([2])  # evicts b, the least recently used
    assert decoder.decode([0]) is a
    assert decoder.decode([1]) is not b


def test_covers_default_general_and_zero_targets() -> None:
    B = fractional_repetition(4, 1).B  # groups {0, 1} and {2, 3}
    ones = LeastSquaresDecoder(B)
    assert not ones.covers([]) and not ones.covers([0]) and ones.covers([1, 2])
    half = LeastSquaresDecoder(B, targets=np.array([2.0, 2.0, 0.0, 0.0]))
    assert half.covers([0]) and half.covers([1, 3]) and not half.covers([2]) and not half.covers([])
    zero = LeastSquaresDecoder(B, targets=np.zeros(4))
    assert zero.covers([]) and zero.covers([3])


def test_singular_values_below_rcond_are_cut() -> None:
    # sigma_2 / sigma_1 = 1e-12 < RCOND: the second direction is dropped, the weights stay O(1)
    d = LeastSquaresDecoder(np.array([[1.0, 0.0], [0.0, 1e-12]])).decode([0, 1])
    assert d.weights.tolist() == pytest.approx([1.0, 0.0], abs=1e-12)
    assert d.partition_weights.tolist() == pytest.approx([1.0, 0.0], abs=1e-12)
    assert not d.exact and d.residual == pytest.approx(0.5)
    # 1e-9 is above the cut-off: it is kept, and the set decodes exactly
    kept = LeastSquaresDecoder(np.array([[1.0, 0.0], [0.0, 1e-9]])).decode([0, 1])
    assert kept.exact and kept.weights[1] == pytest.approx(1e9, rel=1e-9)


def _one_row(t0: float, c: float, t1: float) -> bool:
    """B = [[c, 0]], targets (t0, t1): a* = t0 / c, the error is (0, -t1), so ||error|| = |t1|."""
    d = LeastSquaresDecoder(np.array([[c, 0.0]]), targets=np.array([t0, t1])).decode([0])
    assert d.weights[0] == pytest.approx(t0 / c, rel=1e-12)
    return d.exact


@pytest.mark.parametrize(
    ("t0", "c"),
    [
        (1.0, 1.0),  # every factor 1
        (1e3, 1e3),  # ||t|| = 1e3, ||a|| = 1, max |B| = 1e3
        (1e-3, 1e-3),  # ||t|| = 1e-3 (below 1), ||a|| = 1, max |B| = 1
        (1e3, 1.0),  # ||a|| = 1e3
        (1.0, 1e3),  # max |B| = 1e3, ||a|| = 1e-3 (below 1)
        (1.0, 1e-3),  # ||a|| = 1e3, max |B| = 1e-3 (below 1)
    ],
)
def test_decode_tolerance_scales_with_targets_weights_and_coefficients(t0: float, c: float) -> None:
    # accepted when ||error|| <= TOL * ||t|| * max(1, ||a||) * max(1, max |B_A|)
    bound = DECODE_TOLERANCE * t0 * max(1.0, t0 / c) * max(1.0, c)
    assert _one_row(t0, c, 0.5 * bound)
    assert not _one_row(t0, c, 2.0 * bound)


def test_decode_tolerance_is_inclusive() -> None:
    # t = (1, 1e-8): ||t|| rounds to 1, a* = 1, ||error|| = 1e-8 = the bound exactly
    assert float(np.linalg.norm([1.0, DECODE_TOLERANCE])) == 1.0
    assert _one_row(1.0, 1.0, DECODE_TOLERANCE)
    assert not _one_row(1.0, 1.0, np.nextafter(DECODE_TOLERANCE, 1.0))


def test_zero_targets_decode_exactly_from_any_sender() -> None:
    decoder = LeastSquaresDecoder(fractional_repetition(4, 1).B, targets=np.zeros(4))
    d = decoder.decode([3])
    assert d.exact and d.residual == 0.0 and d.weights.tolist() == [0.0] * 4
    assert not decoder.decode([]).exact


@pytest.mark.parametrize("wait", [1, 6, np.int64(1), np.int64(6)])
def test_wait_bounds_are_inclusive(wait: int) -> None:
    rule = LeastSquaresDecoder(fractional_repetition(6, 1).B).rule(length=1, wait=wait)
    assert rule.wait == int(wait)
    answers = [rule.offer(i, np.ones(1)) for i in range(6)]
    assert answers == [False] * (int(wait) - 1) + [True] * (7 - int(wait))


def test_rule_constructor_defaults_to_no_until_exact() -> None:
    decoder = LeastSquaresDecoder(fractional_repetition(6, 1).B)
    rule = LeastSquaresRule(decoder, 1)
    assert rule.until_exact is False and rule.wait == 6
    # {0, 2, 4} is decodable, but without until_exact only wait = 6 ends the round
    assert [rule.offer(i, np.ones(1)) for i in (0, 2, 4)] == [False, False, False]
    assert decoder.decode([0, 2, 4]).exact


def test_zero_targets_end_the_round_early_only_with_until_exact() -> None:
    decoder = LeastSquaresDecoder(np.eye(3), targets=np.zeros(3))
    plain = decoder.rule(length=1)
    assert [plain.offer(i, np.ones(1)) for i in range(3)] == [False, False, True]
    eager = decoder.rule(length=1, until_exact=True)
    assert eager.offer(1, np.ones(1))


def test_until_exact_with_repeated_senders() -> None:
    decoder = LeastSquaresDecoder(fractional_repetition(6, 1).B)
    rule = decoder.rule(length=1, until_exact=True)
    answers = [rule.offer(i, np.ones(1)) for i in (0, 0, 1, 2, 2, 4)]
    assert answers == [False] * 5 + [True]
