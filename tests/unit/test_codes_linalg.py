"""The coding core's linear-algebra and combinatorics helpers (``edgecode.codes._linalg``)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from edgecode.codes._linalg import (
    DECODE_TOLERANCE,
    ENUMERATION_LIMIT,
    condition,
    conditions,
    cyclic_fill,
    holders_of_items,
    is_enumerable,
    max_load,
    normalize_alive,
    partitions_of_rows,
    solve_combination,
    subsets,
    worst_condition,
)
from edgecode.errors import NotDecodable


def test_normalize_alive_sorts_dedupes_and_names_the_argument() -> None:
    assert normalize_alive([3, 1, 3, 0], 4) == (0, 1, 3)
    assert normalize_alive(np.array([2, 0]), 3) == (0, 2)
    assert normalize_alive([], 3) == ()
    with pytest.raises(ValueError, match=r"^alive must hold indices in \[0, 4\), got \[0, 4\]$"):
        normalize_alive([4, 0], 4)
    with pytest.raises(ValueError, match=r"^edges must hold indices in \[0, 2\), got \[-1\]$"):
        normalize_alive([-1], 2, name="edges")
    with pytest.raises(ValueError, match=r"^alive must be an iterable of node indices, got 3$"):
        normalize_alive(3, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="iterable of node indices"):
        normalize_alive(["a"], 4)
    with pytest.raises(ValueError, match=r"got \[0, 1, 5\]"):
        normalize_alive([5, 0, 1], 4)


def test_subsets_enumerate_up_to_the_limit_and_sample_above() -> None:
    assert list(subsets(4, 2)) == list(itertools.combinations(range(4), 2))
    assert list(subsets(5, 5)) == [(0, 1, 2, 3, 4)]
    assert len(list(subsets(6, 3, limit=20))) == 20  # C(6, 3) = 20: still enumerated
    sampled = list(subsets(6, 3, rng=np.random.default_rng(1), limit=19, samples=50))
    assert len(sampled) == 50
    assert all(len(set(s)) == 3 and list(s) == sorted(s) and max(s) < 6 for s in sampled)
    assert len(set(sampled)) > 10
    again = list(subsets(6, 3, limit=19, samples=50))  # no rng: the fixed seed 0
    assert again == list(subsets(6, 3, rng=np.random.default_rng(0), limit=19, samples=50))
    assert len(list(subsets(30, 15))) == 2_000  # the default sample
    assert list(subsets(30, 15, rng=np.random.default_rng(1)))[:3] != list(subsets(30, 15))[:3]
    assert is_enumerable(16, 8) and not is_enumerable(30, 15)
    assert is_enumerable(6, 3, limit=20) and not is_enumerable(6, 3, limit=19)
    assert ENUMERATION_LIMIT == 20_000


def test_condition_counts_only_the_numerical_rank() -> None:
    assert condition(np.diag([4.0, 2.0])) == pytest.approx(2.0, rel=1e-15)
    assert condition(np.diag([5.0, 1.0, 0.0])) == pytest.approx(5.0, rel=1e-15)
    assert condition(np.diag([1.0, 1e-13])) == pytest.approx(1e13)  # above the rank cut
    assert condition(np.diag([1.0, 1e-15])) == 1.0  # below 2 * 16 eps: rank 1
    assert condition(np.zeros((2, 3))) == math.inf
    assert condition(np.ones((1, 4))) == pytest.approx(1.0)
    stack = np.stack([np.diag([3.0, 1.0]), np.diag([1.0, 1.0]), np.zeros((2, 2))])
    np.testing.assert_array_equal(conditions(stack), [pytest.approx(3.0), 1.0, math.inf])
    assert conditions(np.zeros((0, 2, 2))).shape == (0,)
    np.testing.assert_array_equal(conditions(np.zeros((2, 0, 3))), [math.inf, math.inf])
    np.testing.assert_array_equal(conditions(np.ones((2, 3, 1))), [1.0, 1.0])
    mixed = conditions(np.stack([np.diag([np.nan, 1.0]), np.diag([3.0, 1.0])]))
    assert math.isnan(mixed[0]) and mixed[1] == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("small", "expected"),
    [
        (9e-15, 1.0),  # below the cut 3 * 16 eps = 1.07e-14: rank 1
        (48 * 2.0**-52, 1.0),  # exactly at the cut: still rank 1
        (1.1e-14, 1 / 1.1e-14),  # above it: kept
    ],
)
def test_rank_cut_is_max_dimension_times_16_eps(small: float, expected: float) -> None:
    matrix = np.array([[1.0, 0.0], [0.0, small], [0.0, 0.0]])  # 3 x 2: the cut uses 3
    assert conditions(matrix[np.newaxis])[0] == pytest.approx(expected, rel=1e-12)


def test_conditions_match_one_by_one_svds() -> None:
    rng = np.random.default_rng(3)
    stack = rng.standard_normal((50, 3, 5))
    one_by_one = [
        float(np.linalg.svd(m, compute_uv=False)[0] / np.linalg.svd(m, compute_uv=False)[-1])
        for m in stack
    ]
    np.testing.assert_allclose(conditions(stack), one_by_one, rtol=1e-12)


def test_worst_condition_scans_every_subset_in_chunks_and_keeps_nan() -> None:
    rng = np.random.default_rng(4)
    B = rng.standard_normal((9, 6))
    every = [conditions(B[list(a)][np.newaxis])[0] for a in itertools.combinations(range(9), 5)]
    assert worst_condition(B, 5) == pytest.approx(max(every), rel=1e-12)
    assert worst_condition(B, 5, chunk=7) == worst_condition(B, 5)
    B[2, 3] = np.nan
    assert math.isnan(worst_condition(B, 5, chunk=7))


def test_worst_condition_sees_the_first_subset_and_uses_the_given_rng() -> None:
    rng = np.random.default_rng(6)
    B = rng.standard_normal((9, 5))
    B[:5, 4] = 1e-8 * rng.standard_normal(5)  # rows 0..4 nearly in a 4-dim subspace
    assert worst_condition(B, 5, chunk=7) > 1e6  # only the subset (0, 1, 2, 3, 4) is bad
    wide = rng.standard_normal((30, 6))
    sample = np.array(list(subsets(30, 15, rng=np.random.default_rng(7))), dtype=np.intp)
    direct = float(conditions(wide[sample]).max())
    assert worst_condition(wide, 15, rng=np.random.default_rng(7)) == direct


def test_solve_combination_returns_the_minimum_norm_combination() -> None:
    rows = np.array([[1.0, 2.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])  # two equal messages
    a = solve_combination(rows, np.array([2.0, 4.0, 3.0]), "test")
    np.testing.assert_allclose(a, [1.0, 1.0, 1.0], rtol=1e-14)  # split evenly, not 2 + 0
    assert a.dtype == np.float64 and a.shape == (3,)
    empty = solve_combination(np.zeros((0, 2)), np.zeros(2), "test")
    assert empty.shape == (0,)
    assert solve_combination(np.array([[2.0]]), np.array([4.0]), "test").tolist() == [2.0]
    with pytest.raises(NotDecodable, match=r"^x: the messages' coefficients are not all finite$"):
        solve_combination(np.array([[1.0, np.nan]]), np.ones(2), "x")


# One message (1, 0) and the target (t0, t1): the best combination is a = t0, with residual
# |t1|. It decodes iff |t1| <= DECODE_TOLERANCE * |t| * max(1, |a| * max|rows|).
THRESHOLD_CASES = [
    ((1.0, DECODE_TOLERANCE), True),  # exactly at the threshold: decodes
    ((1.0, 1.5 * DECODE_TOLERANCE), False),  # 1.5x over: refused
    ((1e3, 1e-3), True),  # threshold 1e-8 * 1e3 * 1e3 = 1e-2
    ((1e3, 2e-2), False),
    ((1e-3, 0.9e-8 * 1e-3), True),  # small target: the scale max(1, ...) = 1 applies
    ((1e-3, 2e-8 * 1e-3), False),
    ((0.0, 0.0), True),  # nothing to decode
]


@pytest.mark.parametrize(("target", "decodes"), THRESHOLD_CASES)
def test_decodability_threshold(target: tuple[float, float], decodes: bool) -> None:
    rows = np.array([[1.0, 0.0]])
    if decodes:
        a = solve_combination(rows, np.array(target), "test")
        assert a.tolist() == [target[0]]
    else:
        with pytest.raises(NotDecodable, match=r"^pick: the target is not a combination of the"):
            solve_combination(rows, np.array(target), "pick")


@pytest.mark.parametrize(
    ("scale", "decodes", "refused"),
    [
        # |a| max(1, max|rows|) = 1e3 * 1e3: tolerance 1e-8 * 1e3 * 1e3 = 1e-2
        (1e3, 5e-3, 2e-2),
        # |a| = 1e6 and max|rows| counts as 1: tolerance 1e-8 * 1e3 * 1e6 = 10
        (1e-3, 5.0, 15.0),
    ],
)
def test_the_threshold_scales_with_the_combination(
    scale: float, decodes: float, refused: float
) -> None:
    """Tolerance DECODE_TOLERANCE |t| max(1, |a| max(1, max|rows|)): a combination with large
    weights may carry that much more rounding."""
    rows = np.array([[scale, 0.0]])
    a = solve_combination(rows, np.array([1e3, decodes]), "test")
    assert a[0] == pytest.approx(1e3 / scale, rel=1e-15)
    with pytest.raises(NotDecodable):
        solve_combination(rows, np.array([1e3, refused]), "test")


@pytest.mark.parametrize("small", [1e-16, 2 * 2.0**-52])  # below and exactly at 2 eps
def test_negligible_singular_values_are_not_inverted(small: float) -> None:
    """A direction carried only at the rounding level of the largest singular value (cut:
    sigma_max * max(m, k) * eps) is rank deficiency: inverting it would amplify rounding."""
    rows = np.array([[1.0, 0.0], [0.0, small]])
    a = solve_combination(rows, np.array([1.0, small]), "test")
    assert a.tolist() == [1.0, 0.0]


def test_rank_deficient_messages_still_decode_exactly() -> None:
    rows = np.array([[1.0, 1.0], [2.0, 2.0], [1.0, -1.0]])
    a = solve_combination(rows, np.array([3.0, 1.0]), "test")
    np.testing.assert_allclose(a @ rows, [3.0, 1.0], rtol=0, atol=1e-15)
    # The minimum-norm split of (2, 2) over the two parallel messages is 1 : 2.
    assert a[1] == pytest.approx(2 * a[0], rel=1e-13)


def test_placement_helpers() -> None:
    assert cyclic_fill([2, 2, 2], 3) == [[0, 1], [0, 2], [1, 2]]
    assert cyclic_fill([3, 1, 0, 2], 3) == [[0, 1, 2], [0], [], [1, 2]]
    with pytest.raises(ValueError, match=r"^a holder cannot take 4 distinct items out of 3$"):
        cyclic_fill([4], 3)
    assert holders_of_items([[0, 1], [1], []], 3) == [[0], [0, 1], []]
    B = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    assert partitions_of_rows(B) == ((0, 2), (), (1,))
    assert max_load(B) == pytest.approx(2 / 3)
