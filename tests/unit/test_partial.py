"""Unit tests of edgecode.codes.partial: the LP bound, the subset designs, the cyclic schemes."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.optimize import linprog

from edgecode.codes import partial
from edgecode.codes.partial import (
    CyclicPartial,
    PartialRecoveryScheme,
    SubsetDesign,
    cyclic_formula_d,
    cyclic_least_d,
    cyclic_partial,
    cyclic_worst_coverage,
    partial_load_lower_bound,
    partial_load_optimum,
    required_partitions,
    subset_design,
)
from edgecode.errors import Infeasible, NotDecodable

FIXTURE = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "partial_bounds.json").read_text(encoding="utf-8")
)
LP_CASES = FIXTURE["lp_lower_bound"]["cases"]
CYCLIC_CASES = FIXTURE["cyclic_least_d"]["cases"]
ALPHA_GRID = [Fraction(i, 20) for i in range(1, 21)]


def _case_id(case: dict[str, Any]) -> str:
    return f"n{case['n']}-s{case['s']}-a{case['alpha']}"


def _check_scheme(scheme: PartialRecoveryScheme, stragglers: tuple[int, ...], G: Any) -> None:
    """decode is 0/1 with >= ceil(alpha k) ones and equals the sum of the chosen messages."""
    coefficients = scheme.decode(stragglers)
    assert coefficients.shape == (scheme.n_partitions,)
    assert set(np.unique(coefficients).tolist()) <= {0.0, 1.0}
    assert coefficients.sum() >= scheme.min_recovered
    chosen = scheme.decode_messages(stragglers)
    assert all(w not in stragglers for w, _ in chosen)
    messages = scheme.messages
    support = [j for w, m in chosen for j in messages[w][m]]
    assert len(support) == len(set(support)), "chosen messages overlap"
    assert sorted(support) == np.flatnonzero(coefficients).tolist()
    total = np.zeros(G.shape[1])
    for (w, m), c in chosen.items():
        total += c * scheme.encode(w, G)[m]
    np.testing.assert_allclose(total, coefficients @ G, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# the LP lower bound
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", LP_CASES, ids=_case_id)
def test_lp_matches_reference_values(case: dict[str, Any]) -> None:
    alpha = Fraction(case["alpha"])
    optimum = partial_load_optimum(case["n"], case["s"], alpha)
    assert optimum.n_load == Fraction(case["exact_n_load"])
    assert optimum.sizes == tuple(case["sizes"])
    assert optimum.weights == tuple(Fraction(w) for w in case["weights"])
    assert round(float(optimum.n_load), 3) == case["paper_n_load"]
    # the float alpha of the papers.md examples gives the same exact answer
    assert partial_load_optimum(case["n"], case["s"], float(alpha)).n_load == optimum.n_load
    assert partial_load_lower_bound(case["n"], case["s"], float(alpha)) == pytest.approx(
        float(optimum.n_load) / case["n"], abs=1e-15
    )


@pytest.mark.parametrize("case", FIXTURE["lp_lower_bound"]["boundary_cases"], ids=_case_id)
def test_lp_boundary_cases_survive_float_alpha(case: dict[str, Any]) -> None:
    # 1 - alpha == C(s, 1)/C(n, 1) exactly: r = 1 alone is feasible, load 1/n
    optimum = partial_load_optimum(case["n"], case["s"], case["alpha"])
    assert optimum.n_load == Fraction(case["exact_n_load"])
    assert optimum.lost_fraction == 1 - Fraction(str(case["alpha"]))


def test_lp_reads_float_alpha_through_its_repr() -> None:
    assert partial_load_optimum(12, 4, Fraction(2, 3)).n_load == 1
    # 0.6666666666666667 > 2/3: r = 1 loses 1/3 > 1 - alpha, so the load rises above 1/n
    assert partial_load_optimum(12, 4, 0.6666666666666667).n_load > 1


@pytest.mark.parametrize("n", range(1, 13))
def test_lp_at_alpha_one_is_full_gradient_coding(n: int) -> None:
    for s in range(n):
        optimum = partial_load_optimum(n, s, 1)
        assert optimum.n_load == s + 1
        assert optimum.sizes == (s + 1,)
        assert partial_load_lower_bound(n, s, 1.0) == (s + 1) / n


def test_lp_optimum_is_feasible_and_matches_linprog() -> None:
    for n in range(1, 13):
        for s in range(n):
            loss = np.array([math.comb(s, r) / math.comb(n, r) for r in range(1, n + 1)])
            cost = np.arange(1, n + 1) / n
            for alpha in ALPHA_GRID[1::2]:
                optimum = partial_load_optimum(n, s, alpha)
                # exact feasibility of the returned mixture
                assert sum(optimum.weights) == 1 and min(optimum.weights) > 0
                assert optimum.lost_fraction <= 1 - alpha
                assert optimum.n_load == sum(
                    (r * w for r, w in zip(optimum.sizes, optimum.weights, strict=True)),
                    Fraction(0),
                )
                result = linprog(
                    cost,
                    A_ub=loss[None, :],
                    b_ub=[float(1 - alpha)],
                    A_eq=np.ones((1, n)),
                    b_eq=[1.0],
                    bounds=(0, None),
                    method="highs",
                )
                assert result.status == 0
                assert float(optimum.load) == pytest.approx(result.fun, abs=1e-9), (n, s, alpha)


def test_lp_load_grows_with_alpha() -> None:
    for n, s in [(10, 3), (12, 4), (9, 8)]:
        loads = [partial_load_optimum(n, s, a).load for a in ALPHA_GRID]
        assert loads == sorted(loads)
        assert loads[-1] == Fraction(s + 1, n)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((0, 0, 0.5), "n"),
        ((5, 5, 0.5), "s"),
        ((5, -1, 0.5), "s"),
        ((5.0, 1, 0.5), "n"),
        ((True, 0, 0.5), "n"),
        ((5, 1, 0.0), "alpha"),
        ((5, 1, 1.5), "alpha"),
        ((5, 1, float("nan")), "alpha"),
        ((5, 1, "0.5"), "alpha"),
        ((5, 1, True), "alpha"),
    ],
)
def test_lp_rejects_bad_arguments(args: tuple[Any, Any, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        partial_load_optimum(*args)


def test_required_partitions_is_an_exact_ceiling() -> None:
    assert required_partitions(0.9, 10) == 9
    assert required_partitions(0.7, 10) == 7  # 0.7 * 10 = 7.000000000000001 in floats
    assert required_partitions(Fraction(1, 3), 10) == 4


# ---------------------------------------------------------------------------------------------
# subset designs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", LP_CASES, ids=_case_id)
def test_subset_design_meets_the_bound(case: dict[str, Any]) -> None:
    design = subset_design(case["n"], case["s"], Fraction(case["alpha"]))
    assert isinstance(design, SubsetDesign)
    assert design.exact
    assert design.n_partitions == case["k"]
    assert design.multiplicities == tuple(case["multiplicities"])
    assert design.load_exact * case["n"] == Fraction(case["exact_n_load"])
    assert design.computation_load == float(design.load_exact)
    assert design.computation_load == pytest.approx(design.lower_bound, abs=1e-15)
    # every worker holds the same number of partitions and sends one vector per partition
    held = design.membership.sum(axis=0)
    assert held.min() == held.max() == design.partitions_per_worker
    assert design.communication_load == design.partitions_per_worker
    # every partition sits on an r-subset of the design's sizes, each subset a_r times
    sizes = design.membership.sum(axis=1)
    for r, a in zip(design.sizes, design.multiplicities, strict=True):
        assert (sizes == r).sum() == a * math.comb(case["n"], r)


@pytest.mark.parametrize("case", LP_CASES[:3], ids=_case_id)
def test_subset_design_recovers_exactly_the_partitions_with_an_alive_holder(
    case: dict[str, Any],
) -> None:
    n, s = case["n"], case["s"]
    design = subset_design(n, s, Fraction(case["alpha"]))
    rng = np.random.default_rng(7)
    G = rng.standard_normal((design.n_partitions, 3))
    for size in range(s + 1):
        for stragglers in itertools.combinations(range(n), size):
            coefficients = design.decode(stragglers)
            alive = [i for i in range(n) if i not in stragglers]
            expected = design.membership[:, alive].any(axis=1)
            np.testing.assert_array_equal(coefficients, expected.astype(float))
            lost = sum(
                a * math.comb(size, r)
                for r, a in zip(design.sizes, design.multiplicities, strict=True)
            )
            assert coefficients.sum() == design.n_partitions - lost >= design.min_recovered
    for stragglers in itertools.combinations(range(n), s):
        if stragglers[0] == 0:  # a sample of the sets for the (slower) message check
            _check_scheme(design, stragglers, G)


def test_subset_design_cap_raises_or_approximates_honestly() -> None:
    with pytest.raises(Infeasible, match="k=210"):
        subset_design(10, 3, 0.9, max_partitions=150)
    approx = subset_design(10, 3, 0.9, max_partitions=150, approximate=True)
    assert not approx.exact
    assert approx.n_partitions <= 150
    assert approx.computation_load > approx.lower_bound
    assert approx.load_exact == Fraction(approx.partitions_per_worker, approx.n_partitions)
    for stragglers in itertools.combinations(range(10), 3):
        assert approx.decode(stragglers).sum() >= approx.min_recovered
    # a single size whose subsets alone exceed the cap cannot be approximated
    with pytest.raises(Infeasible, match="C\\(10,4\\)=210"):
        subset_design(10, 3, 1.0, max_partitions=100, approximate=True)


def test_subset_design_rejects_too_many_stragglers_and_bad_input() -> None:
    design = subset_design(6, 2, 0.8)
    with pytest.raises(NotDecodable, match="at most 2"):
        design.decode({0, 1, 2})
    with pytest.raises(NotDecodable):
        design.decode_messages([3, 4, 5])
    with pytest.raises(ValueError, match="stragglers"):
        design.decode({6})
    with pytest.raises(ValueError, match="partial_gradients"):
        design.encode(0, np.zeros((design.n_partitions + 1, 2)))
    with pytest.raises(ValueError, match="worker"):
        design.encode(6, np.zeros((design.n_partitions, 2)))
    with pytest.raises(ValueError, match="max_partitions"):
        subset_design(6, 2, 0.8, max_partitions=0)


# ---------------------------------------------------------------------------------------------
# cyclic schemes
# ---------------------------------------------------------------------------------------------


def _naive_worst_coverage(n: int, s: int, d: int, vectors: int) -> int:
    """Independent reference: every subset of alive messages, keep the disjoint ones."""
    arcs = partial._cyclic_arcs(n, d, vectors)
    supports = [frozenset((a.start + u) % n for u in range(a.length)) for a in arcs]
    worst = n
    for stragglers in itertools.combinations(range(n), s):
        alive = [i for i, a in enumerate(arcs) if a.worker not in stragglers]
        best = 0
        for mask in range(1 << len(alive)):
            picked = [supports[alive[b]] for b in range(len(alive)) if mask >> b & 1]
            covered = frozenset().union(*picked)
            if sum(map(len, picked)) == len(covered):
                best = max(best, len(covered))
        worst = min(worst, best)
    return worst


@pytest.mark.parametrize(
    ("n", "s", "vectors"), [(5, 1, 1), (5, 2, 2), (6, 2, 1), (6, 3, 2), (7, 2, 1), (7, 1, 3)]
)
def test_worst_coverage_matches_naive_enumeration(n: int, s: int, vectors: int) -> None:
    for d in range(1, n + 1):
        arcs_per_worker = min(d, vectors)
        if n * arcs_per_worker > 14:  # keep the 2^messages reference small
            continue
        expected = _naive_worst_coverage(n, s, d, vectors)
        assert cyclic_worst_coverage(n, s, d, vectors) == expected, d


@pytest.mark.parametrize(("n", "d", "vectors"), [(9, 4, 1), (10, 6, 2), (11, 5, 3), (12, 7, 1)])
def test_scalar_decoder_agrees_with_vectorised_search(n: int, d: int, vectors: int) -> None:
    arcs = partial._cyclic_arcs(n, d, vectors)
    rng = np.random.default_rng(3)
    alive = rng.random((300, n)) < 0.6
    batch = partial._coverage_batch(n, arcs, alive)
    for row, value in zip(alive, batch, strict=True):
        chosen = partial._best_circle(n, arcs, row)
        assert sum(a.length for a in chosen) == value


@pytest.mark.parametrize("case", CYCLIC_CASES, ids=lambda c: f"{_case_id(c)}-c{c['c']}")
def test_cyclic_least_d_reference_cases(case: dict[str, Any]) -> None:
    n, s, alpha, c = case["n"], case["s"], Fraction(case["alpha"]), case["c"]
    assert cyclic_formula_d(n, s, alpha) == case["formula_d"]
    assert cyclic_least_d(n, s, alpha, c) == case["least_d"]
    need = math.ceil(alpha * n)
    assert cyclic_worst_coverage(n, s, case["least_d"], c) >= need
    for d in range(1, case["least_d"]):
        assert cyclic_worst_coverage(n, s, d, c) < need


def test_cyclic_formula_against_brute_force_on_the_grid() -> None:
    """papers.md: least d = max(1, s + 1 - floor(n(1 - alpha))) for one vector per worker.

    Finding (recorded in the fixture): with plain-sum messages and the disjoint-arc decoder the
    formula is a lower bound that is often not enough for c = 1; it is exact for c >= d.
    """
    summary: dict[int, dict[str, int]] = {}
    for c in (1, 2, 3, 14):
        cases = agree = max_gap = 0
        for n in range(1, 15):
            for s in range(n):
                worst = {d: cyclic_worst_coverage(n, s, d, c) for d in range(1, n + 1)}
                for alpha in ALPHA_GRID:
                    need = math.ceil(alpha * n)
                    least = min(d for d, cover in worst.items() if cover >= need)
                    formula = cyclic_formula_d(n, s, alpha)
                    assert least >= formula, (n, s, alpha, c)  # the formula is a lower bound
                    cases += 1
                    agree += least == formula
                    max_gap = max(max_gap, least - formula)
        summary[c] = {"cases": cases, "agree": agree, "max_gap": max_gap}
    recorded = {int(c): v for c, v in FIXTURE["cyclic_least_d"]["grid_summary"].items()}
    assert summary == recorded
    assert summary[14]["agree"] == summary[14]["cases"]


def test_general_linear_decoding_can_beat_disjoint_arcs() -> None:
    # n=6, s=1, d=4: disjoint arcs of length 4 cover only 4 of the 6 partitions, while the
    # all-ones vector is a linear combination of the 5 alive messages
    assert cyclic_worst_coverage(6, 1, 4) == 4
    B = np.array([[1.0 if (j - i) % 6 < 4 else 0.0 for j in range(6)] for i in range(1, 6)])
    a, *_ = np.linalg.lstsq(B.T, np.ones(6), rcond=None)
    np.testing.assert_allclose(a @ B, np.ones(6), atol=1e-12)


@pytest.mark.parametrize(
    ("n", "s", "alpha", "c"), [(10, 3, 0.9, 1), (12, 4, 0.75, 2), (8, 3, 1, 3)]
)
def test_cyclic_scheme_decodes_every_straggler_set(n: int, s: int, alpha: float, c: int) -> None:
    scheme = cyclic_partial(n, s, alpha, vectors_per_worker=c)
    assert isinstance(scheme, CyclicPartial)
    assert scheme.n_partitions == n
    assert scheme.d == cyclic_least_d(n, s, alpha, c)
    assert scheme.computation_load == scheme.d / n >= scheme.lower_bound
    assert scheme.communication_load == min(c, scheme.d) == len(scheme.chunk_lengths)
    assert sum(scheme.chunk_lengths) == scheme.d
    assert all(len(m) == scheme.communication_load for m in scheme.messages)
    assert scheme.holders == [sorted((j - u) % n for u in range(scheme.d)) for j in range(n)]
    G = np.random.default_rng(11).standard_normal((n, 4))
    worst = n
    for size in range(s + 1):
        for stragglers in itertools.combinations(range(n), size):
            _check_scheme(scheme, stragglers, G)
            if size == s:
                worst = min(worst, int(scheme.decode(stragglers).sum()))
    assert worst == scheme.worst_case_recovered


def test_cyclic_explicit_d_is_checked() -> None:
    with pytest.raises(Infeasible, match="leave only 8"):
        cyclic_partial(12, 4, 0.75, d=2)
    assert cyclic_partial(12, 4, 0.75, vectors_per_worker=2, d=2).worst_case_recovered >= 9
    assert cyclic_partial(12, 4, 0.75, d=12).worst_case_recovered == 12
    with pytest.raises(ValueError, match="d must be in"):
        cyclic_partial(12, 4, 0.75, d=13)
    with pytest.raises(ValueError, match="vectors_per_worker"):
        cyclic_partial(12, 4, 0.75, vectors_per_worker=0)


def test_cyclic_refuses_what_it_cannot_certify() -> None:
    with pytest.raises(Infeasible, match="straggler patterns"):
        cyclic_worst_coverage(60, 6, 10)


def test_cyclic_without_stragglers_needs_one_partition_each() -> None:
    scheme = cyclic_partial(7, 0, 1.0)
    assert scheme.d == 1 and scheme.worst_case_recovered == 7
    np.testing.assert_array_equal(scheme.decode(()), np.ones(7))
    with pytest.raises(NotDecodable):
        scheme.decode({3})
