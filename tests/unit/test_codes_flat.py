"""Flat gradient codes at small sizes, fast: every alive set (and superset) of every (n, s) with
n <= 7, the construction's parts, and the argument checks. The heavy sweeps (n <= 16, and
sampled up to 64) are in tests/property/test_flat_codes.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgecode.codes import GradientCode, cyclic_repetition, fractional_repetition, placement_code
from edgecode.codes._linalg import conditions, subsets
from edgecode.codes._mds import mds_bases
from edgecode.codes.flat import (
    _balanced_functional,
    _null_vectors,
    _unit_codewords,
    cyclic_holders,
)
from edgecode.errors import NotDecodable

BOUND = 1e-12


def check_all_alive_sets(code: GradientCode) -> None:
    """Every alive set of size >= n - s: the decoding vector vanishes outside it and reproduces
    the targets (each residual finite and <= BOUND); every smaller set is refused."""
    n, s = code.n_workers, code.stragglers
    residuals, sets = [], []
    for size in range(n + 1):
        for alive in itertools.combinations(range(n), size):
            if size < n - s:
                with pytest.raises(NotDecodable, match=f"needs at least {n - s}"):
                    code.decode_vector(alive)
                continue
            a = code.decode_vector(alive)
            assert a.shape == (n,) and a.dtype == np.float64
            assert np.all(a[[i for i in range(n) if i not in alive]] == 0.0), alive
            residuals.append(float(np.max(np.abs(a @ code.B - code.targets))))
            sets.append(alive)
    values = np.array(residuals)
    assert np.all(np.isfinite(values)) and np.all(values <= BOUND), sets[int(np.argmax(values))]


@pytest.mark.parametrize("n", range(1, 8))
def test_cyclic_codes_decode_every_alive_set(n: int) -> None:
    for s in range(n):
        code = cyclic_repetition(n, s)
        assert code.name == "cyclic"
        assert code.B.shape == (n, n) and code.stragglers == s
        assert code.partitions_of_worker == tuple(
            tuple(sorted((i + u) % n for u in range(s + 1))) for i in range(n)
        )
        assert code.load == pytest.approx((s + 1) / n) == code.load_bound
        check_all_alive_sets(code)


@pytest.mark.parametrize(("n", "s"), [(4, 1), (6, 2), (6, 1), (6, 5), (8, 3)])
def test_fractional_codes_decode_every_alive_set(n: int, s: int) -> None:
    code = fractional_repetition(n, s)
    assert code.name == "fractional" and code.n_workers == n == code.n_partitions
    groups = [tuple(range(g, g + s + 1)) for g in range(0, n, s + 1)]
    assert code.holders == tuple(groups[j // (s + 1)] for j in range(n))
    assert np.array_equal(code.B, np.kron(np.eye(n // (s + 1)), np.ones((s + 1, s + 1))))
    check_all_alive_sets(code)


def test_cyclic_placement() -> None:
    assert cyclic_holders(5, 2) == [[0, 3, 4], [0, 1, 4], [0, 1, 2], [1, 2, 3], [2, 3, 4]]
    code = cyclic_repetition(5, 2)
    assert code.holders == tuple(tuple(h) for h in cyclic_holders(5, 2))
    for j, held in enumerate(code.holders):
        assert set(np.flatnonzero(code.B[:, j])) == set(held)


@pytest.mark.parametrize(
    ("holders", "n", "s", "targets"),
    [
        ([[0, 1], [1, 2], [2, 0], [0, 2]], 3, 1, [1.0, -2.0, 0.5, 3.0]),  # s < n - s
        ([[0, 1, 2, 3], [1, 2, 3, 4], [0, 2, 4, 1]], 5, 3, [2.0, 1.0, -1.0]),  # s >= n - s
        ([[0, 1, 2], [2, 3, 4], [4, 0, 1]], 5, 2, [1.0, 0.0, 4.0]),  # a zero target
        ([[0, 1, 2]], 3, 2, [5.0]),  # every worker holds the partition
    ],
)
def test_placement_code_reproduces_any_targets(holders, n, s, targets) -> None:
    code = placement_code(holders, n, s, targets=targets)
    assert code.name == "placement" and code.stragglers == s
    np.testing.assert_array_equal(code.targets, targets)
    for j, held in enumerate(holders):
        assert set(np.flatnonzero(code.B[:, j])) <= set(held)
        assert (np.flatnonzero(code.B[:, j]).size == len(held)) == (targets[j] != 0.0)
    check_all_alive_sets(code)


def test_all_zero_targets_give_the_zero_code() -> None:
    code = placement_code([[0, 1], [1, 2]], 3, 1, targets=[0.0, 0.0])
    assert np.array_equal(code.B, np.zeros((3, 2)))
    assert np.array_equal(code.decode_vector([0, 1]), np.zeros(3))


def test_uncoded_placement() -> None:
    code = placement_code([[2], [0], [2]], 3, 0, targets=[1.0, 2.0, 3.0])
    assert code.name == "uncoded" and code.holders == ((2,), (0,), (2,))
    assert np.array_equal(code.B, [[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 3.0]])


def test_codewords_vanish_outside_their_holders_in_both_branches() -> None:
    for n, s in [(6, 2), (6, 4), (5, 1), (5, 3)]:
        code = cyclic_repetition(n, s)
        holders = code.holders
        Q, W = mds_bases(n, s)
        words, directions = _unit_codewords(holders, Q, W)
        np.testing.assert_allclose(np.linalg.norm(words, axis=0), 1.0, rtol=1e-14)
        np.testing.assert_allclose(Q @ directions, words, atol=1e-14)  # they lie in span(Q)
        np.testing.assert_allclose(W.T @ words, 0.0, atol=1e-14)
        for j, held in enumerate(holders):
            outside = [i for i in range(n) if i not in held]
            assert np.all(words[outside, j] == 0.0)


def test_null_vectors() -> None:
    blocks = np.array([[[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]])
    v = _null_vectors(blocks)[0]
    np.testing.assert_allclose(blocks[0] @ v, 0.0, atol=1e-15)
    assert np.linalg.norm(v) == pytest.approx(1.0)
    assert _null_vectors(np.zeros((3, 0, 1))).tolist() == [[1.0], [1.0], [1.0]]


@pytest.mark.parametrize("degrees", [(0.0, 60.0, 120.0), (0.0, 10.0, 100.0), (20.0, 75.0, 170.0)])
def test_balanced_functional_solves_its_linear_programme(degrees: tuple[float, ...]) -> None:
    """psi maximises min_j sign_j psi . y_j over the box |psi_i| <= 1 (signs from the top
    singular vector); checked against a dense search of the box's boundary, where the
    optimum of this scale-increasing objective lies."""
    angles = np.radians(degrees)
    directions = np.vstack([np.cos(angles), np.sin(angles)])
    psi = _balanced_functional(directions)
    assert np.abs(psi @ directions).max() == pytest.approx(1.0, rel=1e-12)
    start = np.linalg.svd(directions)[0][:, 0]
    signs = np.where(start @ directions >= 0.0, 1.0, -1.0)
    t = np.linspace(-1.0, 1.0, 20_001)
    ones = np.ones_like(t)
    boundary = np.concatenate(
        [np.stack([t, ones]), np.stack([t, -ones]), np.stack([ones, t]), np.stack([-ones, t])],
        axis=1,
    )
    values = ((directions * signs).T @ boundary).min(axis=0)
    best = boundary[:, int(np.argmax(values))]
    cosine = abs(psi @ best) / (np.linalg.norm(psi) * np.linalg.norm(best))
    assert cosine == pytest.approx(1.0, abs=1e-6), (psi, best)
    assert np.all(signs * (psi @ directions) > 0.0)


def test_decode_vector_cache_and_errors() -> None:
    code = cyclic_repetition(6, 2)
    first = code.decode_vector([5, 0, 1, 2])
    assert code.decode_vector((0, 1, 2, 5)) is first and not first.flags.writeable
    with pytest.raises(NotDecodable, match=r"^cyclic code: 3 workers alive, needs at least 4 "):
        code.decode_vector([0, 1, 2])
    with pytest.raises(ValueError, match=r"indices in \[0, 6\)"):
        code.decode_vector([0, 1, 2, 6])
    broken = GradientCode(
        B=np.zeros((3, 2)),
        stragglers=1,
        holders=((0, 1), (1, 2)),
        name="broken",
        targets=np.ones(2),
    )
    with pytest.raises(NotDecodable, match=r"^broken code: the target is not a combination"):
        broken.decode_vector([0, 1])


def test_condition_number_is_the_worst_alive_set() -> None:
    code = cyclic_repetition(7, 3)
    every = np.array(list(itertools.combinations(range(7), 4)), dtype=np.intp)
    direct = conditions(code.B[every])
    assert np.all(np.isfinite(direct))
    assert code.condition_number() == pytest.approx(float(direct.max()), rel=1e-12)
    assert code.condition_is_exact() and not cyclic_repetition(36, 18).condition_is_exact()
    assert 1.0 <= code.condition_number() <= 100.0
    wide = cyclic_repetition(24, 12)  # C(24, 12) = 2.7e6 alive sets: sampled with the rng
    sample = np.array(list(subsets(24, 12, rng=np.random.default_rng(3))), dtype=np.intp)
    direct = float(conditions(wide.B[sample]).max())
    assert wide.condition_number(np.random.default_rng(3)) == pytest.approx(direct, rel=1e-12)


def test_seed_and_draws_change_the_code_not_its_exactness() -> None:
    base = cyclic_repetition(7, 3)
    assert np.array_equal(base.B, cyclic_repetition(7, 3).B)
    assert np.array_equal(base.B, cyclic_repetition(7, 3, seed=0).B)  # the default seed is 0
    holders = cyclic_holders(7, 3)
    assert np.array_equal(placement_code(holders, 7, 3).B, placement_code(holders, 7, 3, seed=0).B)
    # with one draw (the identity assignment) only the subspace can differ: the seed picks it
    one, other = cyclic_repetition(7, 3, draws=1), cyclic_repetition(7, 3, seed=1, draws=1)
    assert not np.array_equal(one.B, other.B)
    for other in (cyclic_repetition(7, 3, seed=1), cyclic_repetition(7, 3, draws=1)):
        assert not np.array_equal(base.B, other.B)
        check_all_alive_sets(other)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: cyclic_repetition(4, 4), r"^s \(stragglers\) must be .* \[0, 3\], got 4$"),
        (lambda: cyclic_repetition(3, -1), r"s \(stragglers\)"),
        (lambda: cyclic_repetition(0, 0), r"^n \(workers\) must be a positive integer, got 0$"),
        (lambda: cyclic_repetition(2.0, 1), r"n \(workers\)"),
        (lambda: fractional_repetition(6, 3), r"^fractional repetition needs \(s \+ 1\) \| n"),
        (lambda: placement_code([], 3, 1), r"^holders must name the holders of at least one"),
        (lambda: placement_code([[0, 1], [1, 1]], 3, 1), r"holders\[1\] must list exactly"),
        (
            lambda: placement_code([[0, 1, 2]], 3, 1),
            r"^holders\[0\] must list exactly s \+ 1 = 2 distinct workers, got \[0, 1, 2\]$",
        ),
        (lambda: placement_code([[0, 3]], 3, 1), r"holders\[0\] must hold indices"),
        (lambda: placement_code([[0, 1]], 3, 1, targets=[1.0, 2.0]), r"^targets must be 1 finite"),
        (lambda: placement_code([[0, 1]], 3, 1, targets=[np.inf]), "targets must be 1 finite"),
        (lambda: placement_code([[0, 1]], 3, 1, draws=0), r"^draws must be >= 1, got 0$"),
    ],
)
def test_bad_arguments_name_the_argument(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# -- survivors of the mutation run (docs/notes/mutation.md) -------------------------------------


def test_balanced_functional_falls_back_to_the_singular_vector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should the solver fail (status != 0), psi is the top left singular vector, normalised
    so that max_j |psi @ y_j| = 1."""
    import types

    import edgecode.codes.flat as flat

    angles = np.array([0.1, 0.7, 1.3])
    directions = np.vstack([np.cos(angles), np.sin(angles)])
    monkeypatch.setattr(
        flat, "linprog", lambda *args, **kwargs: types.SimpleNamespace(status=2, x=None)
    )
    psi = _balanced_functional(directions)
    start = np.linalg.svd(directions, full_matrices=False)[0][:, 0]
    expected = start / np.abs(start @ directions).max()
    assert np.all(np.isfinite(psi)) and np.all(np.abs(psi - expected) <= 1e-15)


def test_zero_targets_never_divide_by_a_vanishing_functional() -> None:
    """With every target 0, psi = ones, and a column with ones @ y_j = 0 exactly must get
    scale 0 (not 0 / 0)."""
    from edgecode.codes.flat import _scale_to_targets

    r = np.sqrt(0.5)
    directions = np.array([[r, 1.0], [-r, 0.0]])
    assert np.ones(2) @ directions[:, 0] == 0.0
    B = _scale_to_targets(np.eye(2), directions, np.zeros(2))
    assert np.all(np.isfinite(B)) and np.all(B == 0.0)


def test_integer_targets_become_float64() -> None:
    code = placement_code([[0, 1], [1, 2], [2, 0]], 3, 1, targets=[1, 2, 3])
    assert code.targets.dtype == np.float64 and code.B.dtype == np.float64
    np.testing.assert_array_equal(code.targets, [1.0, 2.0, 3.0])
    residual = np.abs(code.decode_vector([0, 2]) @ code.B - code.targets)
    assert np.all(np.isfinite(residual)) and np.all(residual <= BOUND)
