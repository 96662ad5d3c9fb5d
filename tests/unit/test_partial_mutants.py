"""Survivors of the mutation run of edgecode.codes.partial (docs/notes/mutation.md): exact
argument messages, the encoder's sums, and the approximate subset design's multiplicities
against a brute-force search."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from edgecode.codes.partial import (
    PartialRecoveryScheme,
    _approximate_multiplicities,
    cyclic_partial,
    cyclic_worst_coverage,
    partial_load_optimum,
    required_partitions,
    subset_design,
)
from edgecode.errors import Infeasible, NotDecodable


def test_required_partitions_values_and_messages() -> None:
    assert required_partitions(0.9, 10) == 9 and required_partitions(0.75, 10) == 8
    assert required_partitions(Fraction(1, 3), 1) == 1 and required_partitions(1, 7) == 7
    assert required_partitions(0.5, 3) == 2  # ceil(1.5)
    with pytest.raises(ValueError, match=r"^k must be in >= 1, got 0$"):
        required_partitions(0.5, 0)
    with pytest.raises(ValueError, match=r"^k must be an integer, got True \(bool\)$"):
        required_partitions(0.5, True)


def _brute_force(n: int, s: int, alpha: float, cap: int) -> tuple[int, int]:
    """The (a1, a2) with a2 >= 1, k = a1 C(n, r1) + a2 C(n, r2) <= cap and lost <= (1 - alpha) k
    of least (load, k), by trying every pair."""
    optimum = partial_load_optimum(n, s, alpha)
    r1, r2 = optimum.sizes
    c1, c2 = math.comb(n, r1), math.comb(n, r2)
    budget = 1 - optimum.alpha
    best: tuple[Fraction, int, int, int] | None = None
    for a1 in range(cap // c1 + 1):
        for a2 in range(1, cap // c2 + 1):
            k = a1 * c1 + a2 * c2
            lost = a1 * math.comb(s, r1) + a2 * math.comb(s, r2)
            if k > cap or lost > budget * k:
                continue
            load = Fraction(a1 * math.comb(n - 1, r1 - 1) + a2 * math.comb(n - 1, r2 - 1), k)
            if best is None or (load, k) < best[:2]:
                best = (load, k, a1, a2)
    assert best is not None
    return best[2], best[3]


@pytest.mark.parametrize(
    ("n", "s", "alpha", "cap"),
    [
        (10, 3, 0.9, 150),
        (10, 3, 0.9, 100),
        (10, 3, 0.9, 45),
        (8, 2, 0.8, 60),
        (8, 2, 0.8, 200),
        (9, 3, 0.85, 100),
        (12, 4, 0.75, 150),
        (6, 2, 0.8, 40),
        (4, 1, 0.8, 20),
        (4, 2, 0.85, 20),
    ],
)
def test_approximate_multiplicities_are_the_best_pair(
    n: int, s: int, alpha: float, cap: int
) -> None:
    optimum = partial_load_optimum(n, s, alpha)
    sizes, multiplicities = _approximate_multiplicities(n, s, optimum, cap)
    assert sizes == optimum.sizes
    assert multiplicities == _brute_force(n, s, alpha, cap)


def test_approximate_multiplicities_messages() -> None:
    two = partial_load_optimum(10, 3, 0.9)  # sizes (1, 2): C(10, 2) = 45
    with pytest.raises(Infeasible) as caught:
        _approximate_multiplicities(10, 3, two, 44)
    assert str(caught.value) == (
        "even one partition per 2-subset of 10 workers needs C(10,2)=45 partitions, "
        "above max_partitions=44"
    )
    one = partial_load_optimum(10, 3, 1)
    (r,) = one.sizes
    with pytest.raises(Infeasible) as single:
        _approximate_multiplicities(10, 3, one, 5)
    assert str(single.value) == (
        f"a design on all {r}-subsets of 10 workers needs C(10,{r})={math.comb(10, r)} "
        "partitions, above max_partitions=5"
    )


@pytest.mark.parametrize(
    "scheme",
    [cyclic_partial(6, 2, 0.8, 2), cyclic_partial(7, 3, 0.6, 2, d=3), subset_design(5, 1, 0.9)],
)
def test_encode_sends_each_message_sum(scheme) -> None:  # type: ignore[no-untyped-def]
    G = np.random.default_rng(0).standard_normal((scheme.n_partitions, 3))
    errors = []
    for w in range(scheme.n_workers):
        sent = scheme.encode(w, G)
        assert sent.shape == (len(scheme.messages[w]), 3) and sent.dtype == np.float64
        expected = np.array([G[list(m)].sum(axis=0) for m in scheme.messages[w]])
        errors.append(float(np.abs(sent - expected).max()))
    errs = np.array(errors)
    assert np.all(np.isfinite(errs)) and np.all(errs <= 1e-15)
    exact = np.array([[Fraction(j + 1, 3)] for j in range(scheme.n_partitions)], dtype=object)
    as_float = scheme.encode(0, exact)
    assert as_float.dtype == np.float64
    k = scheme.n_partitions
    with pytest.raises(
        ValueError, match=rf"^partial_gradients must have shape \({k}, dim\), got \({k},\)$"
    ):
        scheme.encode(0, np.zeros(k))
    n = scheme.n_workers
    with pytest.raises(ValueError, match=rf"^worker must be in \[0, {n - 1}\], got {n}$"):
        scheme.encode(n, G)
    with pytest.raises(ValueError, match=r"^worker must be in \[0, \d+\], got -1$"):
        scheme.encode(-1, G)


def _worst_by_brute_force(n: int, s: int, d: int, vectors: int) -> int:
    from edgecode.codes.partial import _best_circle, _cyclic_arcs

    arcs = _cyclic_arcs(n, d, vectors)
    worst = n
    for stragglers in itertools.combinations(range(n), s):
        alive = np.ones(n, dtype=np.bool_)
        alive[list(stragglers)] = False
        worst = min(worst, sum(arc.length for arc in _best_circle(n, arcs, alive)))
    return worst


@pytest.mark.parametrize(
    ("n", "s", "d", "vectors"),
    [
        (5, 0, 2, 1),
        (5, 1, 2, 1),
        (6, 2, 3, 1),
        (7, 2, 2, 1),
        (7, 3, 3, 2),
        (8, 3, 4, 2),
        (8, 4, 5, 3),
        (6, 5, 6, 1),
        (7, 1, 7, 7),
    ],
)
def test_worst_coverage_is_the_minimum_over_every_straggler_set(
    n: int, s: int, d: int, vectors: int
) -> None:
    assert cyclic_worst_coverage(n, s, d, vectors) == _worst_by_brute_force(n, s, d, vectors)


def test_worst_coverage_across_batches() -> None:
    """C(17, 4) = 2,380 patterns with worker 0: more than one batch of 2,048."""
    from edgecode.codes.partial import _coverage_batch, _cyclic_arcs

    n, s, d = 18, 5, 4
    arcs = _cyclic_arcs(n, d, 1)
    sets = np.array(list(itertools.combinations(range(n), s)), dtype=np.int64)
    alive = np.ones((len(sets), n), dtype=np.bool_)
    alive[np.arange(len(sets))[:, None], sets] = False
    assert cyclic_worst_coverage(n, s, d) == int(_coverage_batch(n, arcs, alive).min())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 0, 1), r"n must be in >= 1, got 0"),
        ((5, 5, 1), r"s must be in \[0, 4\], got 5"),
        ((5, -1, 1), r"s must be in \[0, 4\], got -1"),
        ((5, 1, 0), r"d must be in \[1, 5\], got 0"),
        ((5, 1, 6), r"d must be in \[1, 5\], got 6"),
        ((5, 1, 2, 0), r"vectors_per_worker must be in >= 1, got 0"),
        ((5, 1, 2.0), r"d must be an integer, got 2.0 \(float\)"),
    ],
)
def test_worst_coverage_argument_messages(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        cyclic_worst_coverage(*args)  # type: ignore[arg-type]


def test_worst_coverage_search_limit_message() -> None:
    with pytest.raises(Infeasible) as caught:
        cyclic_worst_coverage(40, 6, 3)
    assert str(caught.value) == (
        "certifying a cyclic scheme with n=40, s=6 needs C(39,5)=575757 straggler patterns, "
        "above 200000"
    )
    # C(39, 4) = 82,251 is within the limit: no refusal (d = 40 covers everything)
    assert cyclic_worst_coverage(40, 5, 40) == 40


def test_subset_design_caps_and_the_approximation_on_one_size() -> None:
    with pytest.raises(ValueError, match=r"^max_partitions must be in >= 1, got 0$"):
        subset_design(10, 3, 0.9, max_partitions=0)
    with pytest.raises(Infeasible, match="max_partitions=1;"):
        subset_design(10, 3, 0.9, max_partitions=1)
    at_cap = subset_design(10, 3, 0.9, max_partitions=210)  # k = 210 exactly: allowed
    assert at_cap.exact is True and at_cap.n_partitions == 210
    # with room for 45 partitions only the 2-subsets fit: a_1 = 0, one partition per pair
    pairs = subset_design(10, 3, 0.9, max_partitions=45, approximate=True)
    assert pairs.exact is False
    assert (pairs.sizes, pairs.multiplicities, pairs.n_partitions) == ((2,), (1,), 45)
    assert np.all(pairs.membership.sum(axis=1) == 2)
    held = {tuple(np.flatnonzero(row).tolist()) for row in pairs.membership}
    assert held == set(itertools.combinations(range(10), 2))
    assert pairs.load_exact == Fraction(9, 45)


def test_cyclic_arguments_and_least_d() -> None:
    from edgecode.codes.partial import cyclic_formula_d, cyclic_least_d

    with pytest.raises(ValueError, match=r"^vectors_per_worker must be in >= 1, got 0$"):
        cyclic_partial(6, 2, 0.5, 0)
    with pytest.raises(ValueError, match=r"^vectors_per_worker must be in >= 1, got 0$"):
        cyclic_least_d(6, 2, 0.5, vectors_per_worker=0)
    with pytest.raises(ValueError, match=r"^d must be in \[1, 6\], got 7$"):
        cyclic_partial(6, 2, 0.5, d=7)
    assert cyclic_partial(6, 2, 0.5, d=1).d == 1
    scheme = cyclic_partial(12, 4, 0.75)
    assert scheme.formula_d == cyclic_formula_d(12, 4, 0.75) == 2
    assert cyclic_least_d(12, 4, 0.75) == 3 and cyclic_least_d(12, 4, 0.75, 2) == 2


def test_too_many_stragglers_are_named() -> None:
    scheme = cyclic_partial(6, 2, 0.5)
    with pytest.raises(ValueError) as caught:
        scheme.decode([9])
    assert str(caught.value) == "stragglers must hold indices in [0, 6), got [9]"


def test_subset_selection_names_workers_by_int() -> None:
    """The decoder's selection indexes messages by (worker, message): integers, so the rule's
    replay (recovery_weights) works on a subset design."""
    from edgecode.codes.partial_rule import PartialDecoder, recovery_weights

    design = subset_design(5, 1, 1)
    workers, messages = design._select(np.ones(5, dtype=np.bool_))
    assert workers.dtype == np.int64 and messages.dtype == np.int64
    weights = recovery_weights(PartialDecoder(design))
    assert np.all(np.isfinite(weights)) and np.all(np.abs(weights - 1.0) <= 1e-12)


class _Bare(PartialRecoveryScheme):
    """The base class's own encode and decode: worker 0 sends g_0, worker 1 nothing; the
    decoder claims to recover ``covered`` partitions."""

    def __init__(self, covered: int) -> None:
        fields = {
            "n_workers": 2,
            "n_partitions": 2,
            "stragglers": 0,
            "alpha": Fraction(1),
            "lower_bound": 0.5,
            "covered": covered,
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    @property
    def messages(self) -> Any:
        return (((0,),), ())

    @property
    def partitions_per_worker(self) -> int:
        return 1

    @property
    def communication_load(self) -> int:
        return 1

    def _select(self, alive: np.ndarray) -> Any:
        return np.array([0], dtype=np.int64), np.array([0], dtype=np.int64)

    def _coverage(self, alive: np.ndarray) -> Any:
        return np.arange(2) < self.covered  # type: ignore[attr-defined]


def test_base_encode_and_decode_of_a_bare_scheme() -> None:
    bare = _Bare(covered=1)
    G = np.arange(6, dtype=np.float64).reshape(2, 3)
    np.testing.assert_array_equal(bare.encode(0, G), G[:1])
    silent = bare.encode(1, G)
    assert silent.shape == (0, 3) and silent.dtype == np.float64
    # one partition of the ceil(1 * 2) = 2 needed: the guard refuses, saying so
    with pytest.raises(NotDecodable) as caught:
        bare.decode([])
    assert str(caught.value) == "recovered 1 partitions, fewer than ceil(alpha k) = 2"
    np.testing.assert_array_equal(_Bare(covered=2).decode([]), [1.0, 1.0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 0, 0.5), "n must be in >= 1, got 0"),
        ((2.0, 1, 0.5), "n must be an integer, got 2.0 (float)"),
        ((5, 5, 0.5), "s must be in [0, 4], got 5"),
        ((5, -1, 0.5), "s must be in [0, 4], got -1"),
        ((5, 1.0, 0.5), "s must be an integer, got 1.0 (float)"),
    ],
)
def test_code_arguments_in_full(args: tuple[object, ...], message: str) -> None:
    from edgecode.codes.partial import cyclic_formula_d

    with pytest.raises(ValueError) as caught:
        cyclic_formula_d(*args)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_worst_coverage_search_limit_boundary() -> None:
    """C(48, 4) = 194,580 patterns are searched; C(49, 4) = 211,876 are refused."""
    assert cyclic_worst_coverage(49, 5, 49) == 49
    with pytest.raises(Infeasible, match=r"C\(49,4\)=211876 straggler patterns, above 200000"):
        cyclic_worst_coverage(50, 5, 3)
