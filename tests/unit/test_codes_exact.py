"""Exactness machinery of the coding core: the accurate residual and the refinement step of
decoding, and the well-conditioned MDS subspaces behind the universal code.

Exact references come from rational arithmetic (``fractions.Fraction``), never from the code
under test.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from edgecode.codes import _mds, cyclic_repetition, hierarchical, placement_code
from edgecode.codes._linalg import accurate_residual, conditions, solve_combination
from edgecode.codes._mds import (
    _SMOOTH_POWER,
    ASCENT_ROUNDS,
    ASCENT_STEPS,
    SAMPLED_SUBSETS,
    _build_bases,
    _cached_bases,
    _complement,
    _descend_on,
    _scatter_rows,
    descend_worst_case,
    inverse_scores,
    mds_bases,
    orthonormalize,
    subset_index,
)

EPS = 2.0**-53


def exact_residual(rows: np.ndarray, a: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``target - a @ rows`` in rational arithmetic, rounded once at the end."""
    m, k = rows.shape
    return np.array(
        [
            float(
                Fraction(target[j]) - sum(Fraction(a[i]) * Fraction(rows[i, j]) for i in range(m))
            )
            for j in range(k)
        ]
    )


def test_accurate_residual_is_correctly_rounded_up_to_eps_squared() -> None:
    rng = np.random.default_rng(0)
    worst_plain = 0.0
    for _ in range(100):
        m, k = (int(x) for x in rng.integers(1, 12, size=2))
        rows = rng.standard_normal((m, k)) * 10.0 ** rng.integers(-3, 3, (m, k))
        a = rng.standard_normal(m) * 1e3
        target = a @ rows + rng.standard_normal(k) * 1e-12  # heavy cancellation
        exact = exact_residual(rows, a, target)
        got = accurate_residual(rows, a, target)
        bound = 2 * EPS * np.abs(exact) + (m + 2) ** 2 * EPS**2 * (
            np.abs(a) @ np.abs(rows) + np.abs(target)
        )
        assert np.all(np.abs(got - exact) <= bound), (m, k, np.max(np.abs(got - exact) / bound))
        plain = target - a @ rows
        worst_plain = max(worst_plain, float(np.max(np.abs(plain - exact) / np.abs(exact))))
    assert worst_plain > 1e-3, "the cases must be hard: plain float64 gets them wrong"


def nearly_dependent_system(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Integer rows (|entries| < 2^20) with two near-duplicate pairs (cond ~ 1e6) and an exact
    consistent target ``x @ rows`` (integers below 2^53, so no rounding anywhere)."""
    rows = rng.integers(-(2**20), 2**20, (5, 8)).astype(np.float64)
    rows[1] = rows[0] + rng.integers(-1, 2, 8)
    rows[3] = rows[2] + rng.integers(-2, 3, 8)
    target = rng.integers(-50, 50, 5).astype(np.float64) @ rows
    return rows, target


def test_refined_decoding_vector_meets_the_representation_floor() -> None:
    """After the refinement step ``a @ rows == target`` holds in exact arithmetic to within
    eps * |a| |rows| componentwise: as well as any float64 vector can. (Plain lstsq misses it
    by up to ~30x on these systems.)"""
    rng = np.random.default_rng(5)
    for _ in range(40):
        rows, target = nearly_dependent_system(rng)
        a = solve_combination(rows, target, "test")
        floor = EPS * (np.abs(a) @ np.abs(rows))
        residual = np.abs(exact_residual(rows, a, target))
        assert np.all(np.isfinite(a)) and np.all(residual <= floor), np.max(residual / floor)


@pytest.mark.parametrize(("n", "s"), [(2, 1), (5, 1), (5, 4), (7, 3), (8, 5), (9, 4), (12, 6)])
def test_mds_bases_are_orthonormal_complements(n: int, s: int) -> None:
    Q, W = mds_bases(n, s)
    assert Q.shape == (n, n - s) and W.shape == (n, s)
    np.testing.assert_allclose(Q.T @ Q, np.eye(n - s), atol=1e-12)
    np.testing.assert_allclose(W.T @ W, np.eye(s), atol=1e-12)
    np.testing.assert_allclose(Q.T @ W, 0.0, atol=1e-12)
    assert not Q.flags.writeable and not W.flags.writeable
    assert mds_bases(n, s) is mds_bases(n, s), "cached per (n, s, seed)"


def test_one_dimensional_frames_are_the_constant_vector() -> None:
    """r = 1 is solved exactly: every coordinate of the frame has magnitude 1 / sqrt(n)."""
    for n in (2, 6, 11):
        Q, W = mds_bases(n, n - 1)
        np.testing.assert_allclose(np.abs(Q[:, 0]), 1 / math.sqrt(n), rtol=1e-14)
        _, W = mds_bases(n, 1)
        np.testing.assert_allclose(np.abs(W[:, 0]), 1 / math.sqrt(n), rtol=1e-14)


def test_duality_sigma_min_of_q_rows_equals_that_of_the_complement_rows() -> None:
    """The CS decomposition identity the construction relies on."""
    n, s = 9, 4
    Q, W = mds_bases(n, s)
    for alive in itertools.combinations(range(n), n - s):
        rest = [i for i in range(n) if i not in alive]
        left = np.linalg.svd(Q[list(alive)], compute_uv=False)[-1]
        right = np.linalg.svd(W[rest], compute_uv=False)[-1]
        assert left == pytest.approx(right, rel=1e-9, abs=1e-14), alive


#: Worst cond(Q[A]) over ALL alive sets, measured on this construction, with ~2x headroom.
#: A Gaussian draw's worst case is heavy-tailed: the median over draws at (16, 8) is 1.1e5.
SUBSPACE_BOUNDS = {(10, 5): 400.0, (12, 6): 1_000.0, (14, 10): 1_500.0, (16, 8): 1.2e4}


@pytest.mark.parametrize(("n", "s"), sorted(SUBSPACE_BOUNDS))
def test_subspace_worst_alive_set_is_well_conditioned(n: int, s: int) -> None:
    Q, _ = mds_bases(n, s)
    every = np.array(list(itertools.combinations(range(n), n - s)), dtype=np.intp)
    values = conditions(Q[every])
    assert np.all(np.isfinite(values)) and np.all(values <= SUBSPACE_BOUNDS[n, s]), (
        every[int(np.argmax(values))],
        float(np.max(values)),
    )


def test_columns_are_balanced_by_the_functional() -> None:
    """No column is blown up by a small psi(c_j): with equal targets, column norms of the
    cyclic code stay within a small factor of each other."""
    for n, s in [(8, 3), (12, 5), (16, 8), (16, 2)]:
        norms = np.linalg.norm(cyclic_repetition(n, s).B, axis=0)
        assert np.all(np.isfinite(norms)) and norms.max() <= 4.0 * norms.min(), (n, s, norms)


def test_targets_scale_their_columns_only() -> None:
    holders = [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 0], [4, 0, 1]]
    one = placement_code(holders, 5, 2)
    scaled = placement_code(holders, 5, 2, targets=[1.0, 2.0, -3.0, 0.5, 1.0])
    np.testing.assert_allclose(scaled.B, one.B * [1.0, 2.0, -3.0, 0.5, 1.0], rtol=1e-12)


@pytest.mark.parametrize(("m", "s_e", "s_w"), [([4, 4, 4, 4], 2, 2), ([6, 6, 4], 1, 2)])
def test_hierarchical_layers_are_well_conditioned(m: list[int], s_e: int, s_w: int) -> None:
    code = hierarchical(m, s_e, s_w)
    layers = code.condition_numbers()
    values = np.array([layers["edge"], layers["worker"]])
    assert np.all(np.isfinite(values)) and np.all(values <= 1e3), layers


def test_inverse_scores_are_squared_frobenius_norms_of_the_inverses() -> None:
    matrix = np.array([[2.0, 0.0], [0.0, 4.0], [1.0, 1.0]])
    index = np.array([[0, 1], [1, 2]], dtype=np.intp)
    inverses, scores = inverse_scores(matrix, index)
    np.testing.assert_allclose(inverses[0], np.diag([0.5, 0.25]))
    np.testing.assert_allclose(scores, [0.25 + 0.0625, np.sum(np.linalg.inv(matrix[[1, 2]]) ** 2)])
    singular = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    three = np.array([[0, 1], [1, 2], [0, 2]], dtype=np.intp)
    inverses, scores = inverse_scores(singular, three)
    assert scores.tolist() == [math.inf] * 3 and inverses.shape == (3, 2, 2)


def test_subset_index_enumerates_or_samples() -> None:
    rng = np.random.default_rng(0)
    index, exhaustive = subset_index(6, 3, rng)
    assert exhaustive and index.tolist() == [list(c) for c in itertools.combinations(range(6), 3)]
    sampled, exhaustive = subset_index(30, 15, rng)
    assert not exhaustive and sampled.shape == (SAMPLED_SUBSETS, 15)  # no repeats in 1.5e8
    assert np.all(np.diff(sampled, axis=1) > 0) and sampled.max() < 30
    assert subset_index(6, 3, rng, limit=20)[1] is True  # C(6, 3) = 20: at the limit
    few, exhaustive = subset_index(6, 3, rng, limit=19)  # 2000 draws of 20 subsets
    assert not exhaustive and few.shape == (20, 3) and few.dtype == np.intp
    assert not index.flags.writeable and sampled.dtype == np.intp


def test_scatter_and_complement() -> None:
    values = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    np.testing.assert_array_equal(
        _scatter_rows(np.array([2, 0, 2]), values, 4), [[3, 4], [0, 0], [6, 8], [0, 0]]
    )
    frame = orthonormalize(np.random.default_rng(1).standard_normal((7, 3)))
    np.testing.assert_allclose(frame.T @ frame, np.eye(3), atol=1e-14)
    rest = _complement(frame)
    assert rest.shape == (7, 4)
    np.testing.assert_allclose(rest.T @ rest, np.eye(4), atol=1e-14)
    np.testing.assert_allclose(frame.T @ rest, 0.0, atol=1e-14)


def bad_frame(n: int, r: int, seed: int) -> np.ndarray:
    """An orthonormal frame with one nearly singular r x r block (rows 0 .. r-1)."""
    values = np.random.default_rng(seed).standard_normal((n, r))
    values[r - 1] = values[0] + 1e-7 * values[r - 1]
    return orthonormalize(values)


def test_descent_repairs_a_bad_frame_and_never_worsens() -> None:
    n, r = 9, 4
    index, _ = subset_index(n, r, np.random.default_rng(0))
    start = bad_frame(n, r, 2)
    before = inverse_scores(start, index)[1].max()
    after_frame = descend_worst_case(start, index)
    after = inverse_scores(after_frame, index)[1]
    assert before > 1e12 and np.all(np.isfinite(after)) and after.max() < 1e4
    np.testing.assert_allclose(after_frame.T @ after_frame, np.eye(r), atol=1e-12)
    # a frame that is already good stays at least as good
    again = inverse_scores(descend_worst_case(after_frame, index), index)[1].max()
    assert again <= after.max()


def test_descent_keeps_a_sparsity_mask_and_unit_rows() -> None:
    n, k = 8, 4
    mask = np.zeros((n, k))
    for i in range(n):
        mask[i, [i % k, (i + 1) % k, (i + 2) % k]] = 1.0

    def unit_rows(values: np.ndarray) -> np.ndarray:
        masked = values * mask
        return masked / np.linalg.norm(masked, axis=1, keepdims=True)

    start = unit_rows(np.random.default_rng(3).standard_normal((n, k)))
    index, _ = subset_index(n, k, np.random.default_rng(0))
    result = descend_worst_case(start, index, retract=unit_rows)
    assert np.all(result[mask == 0.0] == 0.0)
    np.testing.assert_allclose(np.linalg.norm(result, axis=1), 1.0, rtol=1e-14)
    before, after = inverse_scores(start, index)[1], inverse_scores(result, index)[1]
    assert np.all(np.isfinite(after)) and after.max() < before.max()


def test_bases_are_deterministic_in_the_seed() -> None:
    first = mds_bases(8, 3)
    _cached_bases.cache_clear()
    again = mds_bases(8, 3, seed=0)
    assert first is not again and np.array_equal(first[0], again[0])
    assert not np.array_equal(first[0], mds_bases(8, 3, seed=1)[0])


@pytest.mark.parametrize(("n", "s"), [(6, 2), (6, 4), (30, 10)])
def test_two_dimensional_and_sampled_frames_are_valid(n: int, s: int) -> None:
    """r = 2 (the smallest descended frame) and a frame too large to enumerate (C(30, 10))."""
    Q, W = mds_bases(n, s)
    np.testing.assert_allclose(Q.T @ Q, np.eye(n - s), atol=1e-12)
    np.testing.assert_allclose(Q.T @ W, 0.0, atol=1e-12)
    index, _ = subset_index(n, n - s, np.random.default_rng(1))
    assert np.all(np.isfinite(conditions(Q[index])))


def test_frames_between_the_two_limits_are_descended() -> None:
    """C(55, 3) = 26,235 three-subsets: above ENUMERATION_LIMIT but below
    FRAME_ENUMERATION_LIMIT, so the frame W (55 x 3) is improved against all of them. A Gaussian
    frame's worst 3 x 3 block has cond ~4e6 (seed 5); the descended one, measured 7.3e3."""
    _, W = mds_bases(55, 3)
    index, exhaustive = subset_index(55, 3, np.random.default_rng(0), limit=50_000)
    assert exhaustive
    values = conditions(W[index])
    assert np.all(np.isfinite(values)) and values.max() <= 1.5e4, values.max()


def keep(values: np.ndarray) -> np.ndarray:
    """A retraction that changes nothing (the steps are then plain arithmetic)."""
    return np.array(values, dtype=np.float64)


def test_one_descent_step_follows_the_normalised_weighted_gradient() -> None:
    """r = 1, blocks are single rows x_i: h_i = 1 / x_i^2, dh_i / dx_i = -2 / x_i^3, weights
    (h_i / max h)^(p/2 - 1). One step moves by ``step`` along the negative unit gradient; it
    lowers the worst score, so it is kept and the step grows by 1.2."""
    index = np.array([[0], [1]], dtype=np.intp)
    start = np.array([[1.0], [1.25]])
    h = 1.0 / start[:, 0] ** 2
    gradient = -((h / h.max()) ** (_SMOOTH_POWER / 2 - 1)) / start[:, 0] ** 3
    expected = start[:, 0] - 0.1 * gradient / np.linalg.norm(gradient)
    moved, step = _descend_on(start, index, 0.1, 1, keep)
    np.testing.assert_allclose(moved[:, 0], expected, rtol=1e-14)
    assert step == pytest.approx(0.12, rel=1e-15)
    # a unit gradient (norm exactly 1) is a step like any other
    moved, step = _descend_on(np.array([[1.0]]), np.array([[0]], dtype=np.intp), 0.1, 1, keep)
    assert moved.tolist() == [[1.1]] and step == pytest.approx(0.12, rel=1e-15)


def test_a_step_that_does_not_lower_the_worst_score_is_refused_and_halves() -> None:
    """A step too small to change any entry leaves the worst score equal: refused."""
    start = np.array([[1.0], [2.0]])
    moved, step = _descend_on(start, np.array([[0], [1]], dtype=np.intp), 1e-300, 3, keep)
    assert np.array_equal(moved, start) and step == 1e-300 / 8


def test_descent_stops_at_a_non_finite_gradient() -> None:
    """A block so small that its score overflows gives no direction: the input comes back."""
    start = np.array([[1e-200], [2.0]])
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        moved, step = _descend_on(start, np.array([[0], [1]], dtype=np.intp), 0.1, 3, keep)
    assert np.array_equal(moved, start) and step == 0.1


def test_descent_schedule_when_every_step_succeeds() -> None:
    """Three equal rows: every step lowers all three scores, so all ASCENT_STEPS steps are
    kept, the first of length 0.1, each 1.2 times the previous, along (1, 1, 1) / sqrt(3)."""
    index = np.array([[0], [1], [2]], dtype=np.intp)
    result = descend_worst_case(np.ones((3, 1)), index, retract=keep)
    grown = 1.0 + 0.1 / math.sqrt(3) * sum(1.2**k for k in range(ASCENT_STEPS))
    np.testing.assert_allclose(result[:, 0], grown, rtol=1e-12)


def test_descent_schedule_when_no_step_succeeds() -> None:
    """A retraction that always returns the start: every step is refused and halves, and every
    round is refused and restarts with half the previous round's first step."""
    start = orthonormalize(np.random.default_rng(4).standard_normal((6, 2)))
    lengths: list[float] = []

    def back_to_start(values: np.ndarray) -> np.ndarray:
        lengths.append(float(np.linalg.norm(values - start)))
        return start.copy()

    index, _ = subset_index(6, 2, np.random.default_rng(0))
    result = descend_worst_case(start, index, retract=back_to_start)
    assert np.array_equal(result, start)
    per_round = ASCENT_STEPS // ASCENT_ROUNDS
    expected = [0.1 * 0.5 ** (r + k) for r in range(ASCENT_ROUNDS) for k in range(per_round)]
    np.testing.assert_allclose(lengths, expected, rtol=1e-9)


def test_frames_have_the_smaller_of_the_two_dimensions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The frame F is n x min(d, s): its r x r blocks are scored (d = 3 < s = 6 and back)."""
    sizes: list[int] = []
    original = _mds.subset_index

    def spy(n: int, size: int, rng: np.random.Generator, limit: int = 0) -> tuple:
        sizes.append(size)
        return original(n, size, rng, limit=limit)

    monkeypatch.setattr(_mds, "subset_index", spy)
    for s in (6, 3):
        Q, W = _build_bases(9, s, 0)
        assert Q.shape == (9, 9 - s) and W.shape == (9, s)
    assert sizes == [3, 3]


def test_non_finite_blocks_score_infinity() -> None:
    """A NaN entry gives a NaN inverse without LinAlgError: its score is inf (a NaN would be
    dropped by the max over subsets)."""
    matrix = np.array([[np.nan], [2.0]])
    _, scores = inverse_scores(matrix, np.array([[0], [1]], dtype=np.intp))
    assert scores.tolist() == [math.inf, 0.25]


def test_no_subsets_of_a_size_above_n() -> None:
    index, exhaustive = subset_index(3, 4, np.random.default_rng(0))
    assert exhaustive and index.shape == (0, 4) and index.dtype == np.intp


def test_single_precision_inputs_come_back_in_double() -> None:
    """Every helper returns float64 whatever the input's precision (the codes are float64)."""
    frame = orthonormalize(np.random.default_rng(5).standard_normal((5, 2))).astype(np.float32)
    index, _ = subset_index(5, 2, np.random.default_rng(0))
    inverses, scores = inverse_scores(frame, index)
    assert inverses.dtype == np.float64 and scores.dtype == np.float64
    assert orthonormalize(frame).dtype == np.float64 and _complement(frame).dtype == np.float64
    assert _descend_on(frame, index, 0.1, 0, keep)[0].dtype == np.float64

    def refuse(values: np.ndarray) -> np.ndarray:
        return frame.copy()  # every step refused: the input itself comes back

    assert descend_worst_case(frame, index, retract=refuse).dtype == np.float64
