"""Unit tests of edgecode.planning.timing: exact expected round time, CDF, Monte Carlo, rule.

The exact values are checked against closed forms and against an independent reference
written here: the Poisson-binomial tails by enumerating every arrival pattern and the integral by
``scipy.integrate.quad`` over the breakpoints.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from scipy import integrate

from edgecode.planning.plans import build_plan, one_layer_plan
from edgecode.planning.spec import ClusterSpec, EdgeSpec, Plan, WorkerSpec
from edgecode.planning.timing import (
    _bounds,
    _fixed_rule,
    _group_model,
    _integrate,
    _quick_expected_time,
    expected_round_time,
    monte_carlo_round_time,
    round_structure,
    round_time_cdf,
    round_times,
    sample_round_times,
    simulate_round_times,
)


def _cluster(rng: np.random.Generator, sizes: list[int], mixed: bool = False) -> ClusterSpec:
    edges = []
    for i, m in enumerate(sizes):
        workers = []
        for j in range(m):
            worker = WorkerSpec(
                f"w{i}{j}",
                float(rng.uniform(0.0, 0.4)),
                float(rng.uniform(1.0, 25.0)),
                float(rng.uniform(0.0, 0.02)),
            )
            if mixed and rng.random() < 0.5:
                worker = replace(
                    worker,
                    model="bernoulli",
                    p_straggle=float(rng.uniform(0.05, 0.4)),
                    slow_factor=float(rng.uniform(1.5, 5.0)),
                )
            workers.append(worker)
        edges.append(EdgeSpec(f"e{i}", tuple(workers), float(rng.uniform(0.0, 0.03))))
    return ClusterSpec(tuple(edges))


def _single(shift: float, rate: float, link: float = 0.0, edge_link: float = 0.0) -> ClusterSpec:
    return ClusterSpec((EdgeSpec("e", (WorkerSpec("w", shift, rate, link),), edge_link),))


def _reference(spec: ClusterSpec, plan: Plan) -> float:
    """E[T] by quad over the breakpoints with tails by enumeration of arrival patterns."""
    st = round_structure(spec, plan)

    def arrived(w: int, x: float) -> float:
        total = 0.0
        pi = st.straggle_probabilities[w]
        for weight, factor in ((1 - pi, 1.0), (pi, st.slow_factors[w])):
            start = st.worker_links[w] + st.fractions[w] * factor * st.shifts[w]
            rate = st.rates[w] / (st.fractions[w] * factor)
            if weight > 0 and x > start:
                total += weight * (1 - math.exp(-rate * (x - start)))
        return total

    def at_least(probabilities: list[float], k: int) -> float:
        total = 0.0
        for pattern in itertools.product((0, 1), repeat=len(probabilities)):
            if sum(pattern) >= k:
                total += math.prod(
                    p if bit else 1 - p for p, bit in zip(probabilities, pattern, strict=True)
                )
        return total

    def survival(t: float) -> float:
        groups = []
        for j in range(st.n_groups):
            members = np.flatnonzero(st.group == j)
            x = t - st.group_links[j]
            groups.append(at_least([arrived(int(w), x) for w in members], int(st.group_need[j])))
        return 1.0 - at_least(groups, st.need)

    points = sorted(
        {
            float(
                st.worker_links[w]
                + st.fractions[w] * f * st.shifts[w]
                + st.group_links[st.group[w]]
            )
            for w in range(st.n_workers)
            for f in (1.0, st.slow_factors[w])
        }
    )
    slowest = float(np.max(st.fractions * st.slow_factors / st.rates))
    upper = points[-1] + 60 * slowest
    value, _ = integrate.quad(
        survival, 0.0, upper, points=points, limit=400, epsabs=1e-13, epsrel=1e-11
    )
    return float(value)


def _hgc(
    spec: ClusterSpec,
    K: int,
    s_edge: int,
    s_workers: list[int],
    coverage: list[int],
    loads: list[list[int]],
) -> Plan:
    return build_plan(spec, "hgc", K, s_edge, s_workers, coverage, loads)


def test_single_worker_closed_form() -> None:
    spec = _single(0.2, 5.0, link=0.01, edge_link=0.03)
    plan = _hgc(spec, 4, 0, [0], [4], [[4]])
    # link 0.01 + shift 0.2 + mean 1 / 5 + edge link 0.03 (integration tolerance 1e-10)
    assert expected_round_time(spec, plan) == pytest.approx(0.44, rel=1e-9)


def test_order_statistics_of_exponentials() -> None:
    """k-th arrival of m i.i.d. Exp(lambda): sum_{j<k} 1 / ((m - j) lambda)."""
    m, rate = 6, 3.0
    workers = tuple(WorkerSpec(f"w{j}", 0.0, rate) for j in range(m))
    spec = ClusterSpec((EdgeSpec("e", workers),))
    for s in range(m):
        plan = _hgc(spec, m, 0, [s], [m], [[s + 1] * m])
        lam = rate / ((s + 1) / m)  # each holds (s + 1) / m of the data
        k = m - s
        expected = sum(1.0 / ((m - j) * lam) for j in range(k))
        assert expected_round_time(spec, plan) == pytest.approx(expected, rel=1e-9)


def test_max_and_min_of_non_identical_exponentials() -> None:
    rates = [1.0, 2.5, 7.0]
    workers = tuple(WorkerSpec(f"w{j}", 0.0, r) for j, r in enumerate(rates))
    spec = ClusterSpec((EdgeSpec("e", workers),))
    lam = [3 * r for r in rates]  # each holds a third
    uncoded = one_layer_plan(spec, "uncoded", 3, 0, [[1, 1, 1]])
    inclusion_exclusion = sum(
        (-1) ** (len(sub) + 1) / sum(sub)
        for r in range(1, 4)
        for sub in itertools.combinations(lam, r)
    )
    assert expected_round_time(spec, uncoded) == pytest.approx(inclusion_exclusion, rel=1e-9)
    first = one_layer_plan(spec, "ignore", 3, 2, [[1, 1, 1]])
    assert expected_round_time(spec, first) == pytest.approx(1 / sum(lam), rel=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_matches_independent_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    spec = _cluster(rng, [3, 2, 3], mixed=seed % 2 == 1)
    plans = [
        _hgc(spec, 12, 1, [1, 0, 2], [8, 6, 10], [[6, 5, 5], [3, 3], [10, 10, 10]]),
        _hgc(spec, 6, 0, [0, 1, 0], [2, 2, 2], [[1, 0, 1], [2, 2], [1, 0, 1]]),
        one_layer_plan(spec, "flat", 8, 1, [[2, 2, 2], [2, 2], [2, 2, 2]]),
        one_layer_plan(spec, "uncoded", 8, 0, [[1, 1, 1], [1, 1], [1, 1, 1]]),
        one_layer_plan(spec, "ignore", 8, 2, [[1, 1, 1], [1, 1], [1, 1, 1]]),
    ]
    for plan in plans:
        exact = expected_round_time(spec, plan)
        assert exact == pytest.approx(_reference(spec, plan), rel=1e-8), plan.scheme


@pytest.mark.parametrize("seed", range(4))
def test_exact_agrees_with_monte_carlo(seed: int) -> None:
    """Exact vs 100k Monte Carlo rounds: within 1% and within 5 standard errors."""
    rng = np.random.default_rng(100 + seed)
    spec = _cluster(rng, [4, 3, 5, 2], mixed=seed >= 2)
    plan = _hgc(
        spec,
        24,
        1,
        [1, 0, 2, 0],
        [12, 8, 16, 12],
        [[8, 6, 5, 5], [4, 2, 2], [12, 10, 10, 8, 8], [6, 6]],
    )
    flat = one_layer_plan(spec, "flat", 14, 2, [[3] * 4, [3] * 3, [3] * 5, [3] * 2])
    for candidate in (plan, flat):
        exact = expected_round_time(spec, candidate)
        estimate = monte_carlo_round_time(spec, candidate, 100_000, rng)
        assert abs(estimate.mean - exact) < 0.01 * exact
        assert abs(estimate.mean - exact) < 5 * estimate.stderr


def test_cdf_is_a_distribution_and_matches_samples() -> None:
    rng = np.random.default_rng(7)
    spec = _cluster(rng, [3, 3], mixed=True)
    plan = _hgc(spec, 6, 1, [1, 0], [6, 6], [[4, 4, 4], [2, 2, 2]])
    t = np.linspace(0.0, 1.0, 201)
    cdf = round_time_cdf(spec, plan, t)
    assert np.all(np.diff(cdf) >= -1e-15) and cdf[0] == 0.0
    assert 0 <= cdf.min() and cdf.max() <= 1
    samples = sample_round_times(spec, plan, 50_000, rng)
    empirical = (samples[:, None] <= t).mean(axis=0)
    assert np.max(np.abs(empirical - cdf)) < 0.01
    # E[T] = integral of the survival function
    grid = np.linspace(0.0, 20.0, 400_001)
    survival = 1.0 - round_time_cdf(spec, plan, grid)
    assert np.trapezoid(survival, grid) == pytest.approx(expected_round_time(spec, plan), rel=1e-6)


def test_round_times_applies_both_layers() -> None:
    workers_a = tuple(WorkerSpec(f"a{j}", 0.1, 1.0, link_seconds=0.5 * j) for j in range(3))
    workers_b = tuple(WorkerSpec(f"b{j}", 0.1, 1.0) for j in range(2))
    spec = ClusterSpec((EdgeSpec("A", workers_a, 1.0), EdgeSpec("B", workers_b, 2.0)))
    plan = _hgc(spec, 2, 1, [1, 0], [2, 2], [[2, 1, 1], [1, 1]])
    st = round_structure(spec, plan)
    compute = np.array([[3.0, 1.0, 0.2, 5.0, 0.5]])
    # edge A: arrivals 3.0, 1.5, 1.2 -> 2nd = 1.5, +1 = 2.5; edge B: arrivals 5, 0.5 -> 5, +2 = 7
    # master needs 1 of 2 edges: 2.5
    assert round_times(st, compute)[0] == pytest.approx(2.5)
    flat = one_layer_plan(spec, "flat", 5, 1, [[2, 2, 2], [2, 2]])
    st = round_structure(spec, flat)
    assert st.n_groups == 1 and st.need == 1 and st.group_need[0] == 4
    # forwarded: A links +1, B links +2: arrivals 4, 2.5, 2.2, 7, 2.5 -> 4th = 4.0
    assert round_times(st, compute)[0] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="compute_times"):
        round_times(st, np.zeros((2, 4)))


def test_validation() -> None:
    spec = _single(0.1, 1.0)
    plan = _hgc(spec, 2, 0, [0], [2], [[2]])
    with pytest.raises(ValueError, match="rtol"):
        expected_round_time(spec, plan, rtol=0.0)
    with pytest.raises(ValueError, match="samples"):
        monte_carlo_round_time(spec, plan, 1, np.random.default_rng(0))
    bad = _hgc(spec, 2, 0, [0], [2], [[1]])
    with pytest.raises(ValueError, match="c_i"):
        expected_round_time(spec, bad)


def test_simulated_markov_rounds_match_the_stationary_expectation() -> None:
    """Consecutive rounds with persistent classes average to the exact stationary E[T]."""
    rng = np.random.default_rng(12)
    workers = tuple(
        WorkerSpec(
            f"w{j}",
            0.1,
            8.0,
            model="markov",
            p_slow=0.9,
            p_active=0.05,
            q_as=0.2,
            q_sa=0.4,
            slow_factor=4.0,
        )
        for j in range(4)
    )
    spec = ClusterSpec((EdgeSpec("e", workers, 0.01),))
    plan = _hgc(spec, 4, 0, [1], [4], [[2, 2, 2, 2]])
    times = simulate_round_times(spec, plan, 200_000, rng, stationary=True)
    assert times.shape == (200_000,)
    assert times.mean() == pytest.approx(expected_round_time(spec, plan), rel=0.01)


def test_quick_estimate_of_the_search() -> None:
    """The search's fixed rule (one Gauss-Legendre panel per interval, no error control) is
    exact to ~1e-9 when no breakpoints are merged; above ``max_breaks`` (default 64) inner
    breakpoints they are thinned, at a cost in accuracy."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        spec = _cluster(rng, [3, 2, 3], mixed=seed == 1)
        plan = _hgc(spec, 12, 1, [1, 0, 2], [8, 6, 10], [[6, 5, 5], [3, 3], [10, 10, 10]])
        model = _group_model(round_structure(spec, plan))
        exact = expected_round_time(spec, plan)
        assert abs(_quick_expected_time(model) - exact) <= 1e-8 * exact
    # the first of 80 workers, half of them Bernoulli stragglers: ~100 inner breakpoints
    spec = _cluster(np.random.default_rng(9), [40, 40], mixed=True)
    plan = one_layer_plan(spec, "ignore", 80, 79, [[1] * 40] * 2)
    model = _group_model(round_structure(spec, plan))
    exact = expected_round_time(spec, plan)
    t_lo, nodes, weights = _fixed_rule(model, 16)
    assert nodes.size == weights.size <= 8 * (16 + 9) and np.all(nodes > t_lo)
    assert abs(_quick_expected_time(model, 1_000) - exact) <= 1e-9 * exact
    assert abs(_quick_expected_time(model) - exact) <= 1e-4 * exact
    assert _quick_expected_time(model) == _quick_expected_time(model, 64)
    assert _quick_expected_time(model, 16) != _quick_expected_time(model, 1_000)
    # a heavy straggling tail (a third of the rounds 10x slower) is covered too
    slow = WorkerSpec("w", 0.1, 1.0, model="bernoulli", p_straggle=0.3, slow_factor=10.0)
    spec = ClusterSpec((EdgeSpec("e", (slow,)),))
    plan = one_layer_plan(spec, "uncoded", 1, 0, [[1]])
    exact = expected_round_time(spec, plan)
    assert exact == pytest.approx(0.7 * 1.1 + 0.3 * 11.0, rel=1e-9)
    quick = _quick_expected_time(_group_model(round_structure(spec, plan)))
    assert abs(quick - exact) <= 1e-7 * exact


def test_cdf_takes_any_real_times_in_any_shape() -> None:
    spec = _cluster(np.random.default_rng(0), [3, 3], mixed=True)
    plan = _hgc(spec, 6, 1, [1, 0], [6, 6], [[4, 4, 4], [2, 2, 2]])
    t = np.linspace(0.0, 50.0, 2001)
    cdf = round_time_cdf(spec, plan, t)
    # the tails are sums of probabilities: rounding may exceed 1 by an ulp, which is clipped
    assert cdf.min() == 0.0 and cdf.max() == 1.0
    grid = round_time_cdf(spec, plan, t[:6].reshape(2, 3))
    assert grid.shape == (2, 3) and np.array_equal(grid.ravel(), cdf[:6])
    exact = round_time_cdf(spec, plan, [Fraction(1, 4), 1])
    assert np.array_equal(exact, round_time_cdf(spec, plan, [0.25, 1.0]))
    with pytest.raises(ValueError, match=r"^t must be finite$"):
        round_time_cdf(spec, plan, [0.0, math.inf])


def _markov_spec() -> ClusterSpec:
    workers = tuple(
        WorkerSpec(f"w{j}", 0.1, 8.0, model="markov", p_slow=0.9, p_active=0.05, q_as=0.2, q_sa=0.4)
        for j in range(4)
    )
    return ClusterSpec((EdgeSpec("e", workers, 0.01),))


def test_simulated_rounds_start_in_the_spec_class_unless_stationary() -> None:
    spec = _markov_spec()
    plan = _hgc(spec, 4, 0, [1], [4], [[2, 2, 2, 2]])
    default = simulate_round_times(spec, plan, 50, np.random.default_rng(3))
    same = simulate_round_times(spec, plan, 50, np.random.default_rng(3), stationary=False)
    drawn = simulate_round_times(spec, plan, 50, np.random.default_rng(3), stationary=True)
    assert np.array_equal(default, same) and not np.array_equal(default, drawn)


def test_monte_carlo_sample_and_batch_limits() -> None:
    spec = _single(0.1, 1.0)
    plan = _hgc(spec, 2, 0, [0], [2], [[2]])
    assert monte_carlo_round_time(spec, plan, 2, np.random.default_rng(0)).samples == 2
    assert monte_carlo_round_time(spec, plan, 5, np.random.default_rng(0), batch=1).samples == 5
    for samples in (1, 2.5):
        with pytest.raises(ValueError, match=r"^samples must be an integer >= 2, got "):
            monte_carlo_round_time(spec, plan, samples, np.random.default_rng(0))
    for batch in (0, 1.5):
        with pytest.raises(ValueError, match=r"^batch must be an integer >= 1, got "):
            monte_carlo_round_time(spec, plan, 4, np.random.default_rng(0), batch=batch)
    # the default batch is 20,000 rounds (the batches decide the order of the draws)
    default = monte_carlo_round_time(spec, plan, 20_001, np.random.default_rng(1))
    explicit = monte_carlo_round_time(spec, plan, 20_001, np.random.default_rng(1), batch=20_000)
    assert default == explicit


def test_monte_carlo_pools_its_batches_exactly() -> None:
    """Mean and standard error over batches equal those of the same draws in one array."""
    rng = np.random.default_rng(5)
    spec = _cluster(rng, [3, 2], mixed=True)
    plan = one_layer_plan(spec, "flat", 5, 1, [[2, 2, 2], [2, 2]])
    for batch in (1_000, 300, 7):
        estimate = monte_carlo_round_time(spec, plan, 1_000, np.random.default_rng(2), batch)
        draws = np.random.default_rng(2)
        sizes = [min(batch, 1_000 - start) for start in range(0, 1_000, batch)]
        values = np.concatenate([sample_round_times(spec, plan, n, draws) for n in sizes])
        assert estimate.samples == 1_000
        assert estimate.mean == pytest.approx(values.mean(), rel=1e-12)
        assert estimate.stderr == pytest.approx(values.std(ddof=1) / math.sqrt(1_000), rel=1e-10)


def test_round_times_take_any_leading_shape() -> None:
    """``(..., n_workers) -> (...)``, and the k-th arrival is the k-th smallest (checked against a
    full sort on random times, where a partition at the wrong index would show)."""
    rng = np.random.default_rng(8)
    spec = _cluster(rng, [6, 5, 7], mixed=False)
    plans = [
        _hgc(spec, 6, 1, [2, 1, 3], [4, 4, 4], [[2] * 6, [2, 2, 2, 1, 1], [3, 3, 2, 2, 2, 2, 2]]),
        one_layer_plan(spec, "flat", 18, 7, [[8] * 6, [8] * 5, [8] * 7]),
    ]
    for plan in plans:
        st = round_structure(spec, plan)
        compute = rng.exponential(1.0, (2, 3, st.n_workers))
        arrivals = compute + st.worker_links
        deliveries = np.stack(
            [
                np.sort(arrivals[..., st.group == j], axis=-1)[..., st.group_need[j] - 1]
                + st.group_links[j]
                for j in range(st.n_groups)
            ],
            axis=-1,
        )
        expected = np.sort(deliveries, axis=-1)[..., st.need - 1]
        result = round_times(st, compute)
        assert result.shape == (2, 3) and np.array_equal(result, expected)
        single = round_times(st, compute[1, 2])
        assert single.shape == () and single == expected[1, 2]
        assert np.array_equal(round_times(st, compute[0]), expected[0])


def test_integration_starts_at_the_order_statistic_of_the_earliest_arrivals() -> None:
    """Two workers holding half each, one plain (its slow component has weight 0 and is left
    out), one Bernoulli: earliest arrivals 0.08 and 0.17, the round needs both."""
    plain = WorkerSpec("a", 0.1, 0.2, link_seconds=0.01)
    mixed = WorkerSpec("b", 0.3, 0.25, model="bernoulli", p_straggle=0.5, slow_factor=3.0)
    spec = ClusterSpec((EdgeSpec("e", (plain, mixed), 0.02),))
    plan = one_layer_plan(spec, "uncoded", 2, 0, [[1, 1]])
    t_lo, mean_lo, breaks, rates, weights = _bounds(_group_model(round_structure(spec, plan)))
    assert t_lo == pytest.approx(0.17, rel=1e-12)
    # E[T] >= earliest arrival + mean of the first of the fastest components: 1 / (0.4 + 0.5)
    assert mean_lo == pytest.approx(0.08 + 1 / 0.9, rel=1e-12)
    order = np.argsort(breaks)
    np.testing.assert_allclose(breaks[order], [0.08, 0.17, 0.47], rtol=1e-12)
    np.testing.assert_allclose(rates[order], [0.4, 0.5, 0.25 / 1.5], rtol=1e-12)
    np.testing.assert_allclose(weights[order], [1.0, 0.5, 0.5], rtol=1e-12)


def test_a_practically_deterministic_worker() -> None:
    """Rate 1e14: the tail bound needs no room beyond the only breakpoint, so the integral runs
    over no panel at all and E[T] is the shift."""
    spec = _single(1.0, 1e14)
    plan = _hgc(spec, 2, 0, [0], [2], [[2]])
    assert expected_round_time(spec, plan) == pytest.approx(1.0, rel=1e-12)


def test_adaptive_integration_meets_its_tolerance_and_returns_its_rule() -> None:
    """sqrt on [1, 5] (no kink) and |x - 2.3| on [1, 5] (a kink inside a panel): the error is
    below atol, and the returned nodes and weights reproduce the total; an empty interval
    integrates to 0 with an empty rule."""
    cases = [
        (np.sqrt, (5.0**1.5 - 1.0) * 2.0 / 3.0),
        (lambda x: np.abs(x - 2.3), (1.3**2 + 2.7**2) / 2.0),
    ]
    for func, exact in cases:
        for atol in (1e-6, 1e-11):
            total, nodes, weights = _integrate(func, np.array([1.0, 3.0, 5.0]), atol)
            assert abs(total - exact) <= atol, (atol, total - exact)
            assert nodes.shape == weights.shape and np.all((nodes > 1.0) & (nodes < 5.0))
            assert float(func(nodes) @ weights) == pytest.approx(total, rel=1e-14)
    total, nodes, weights = _integrate(np.sqrt, np.array([2.0, 2.0]), 1e-9)
    assert total == 0.0 and nodes.shape == (0,) and weights.shape == (0,)


def test_a_group_needing_more_than_half_of_all_workers() -> None:
    """Edge 0 needs all 6 of its workers (the count recursion then tracks misses, truncated at
    one): more than half of the cluster's 7 workers, so a miss cap taken from the cluster's size
    instead of the group's would show. Checked against the enumeration reference."""
    rng = np.random.default_rng(21)
    spec = _cluster(rng, [6, 1], mixed=True)
    plan = _hgc(spec, 6, 1, [0, 0], [6, 6], [[1] * 6, [6]])
    assert expected_round_time(spec, plan) == pytest.approx(_reference(spec, plan), rel=1e-8)


@pytest.mark.parametrize("rtol", [0.0, 1.0, 1.5, -1e-3])
def test_rtol_must_be_inside_zero_one(rtol: float) -> None:
    spec = _single(0.1, 1.0)
    plan = _hgc(spec, 2, 0, [0], [2], [[2]])
    with pytest.raises(ValueError, match=r"^rtol must be in \(0, 1\), got "):
        expected_round_time(spec, plan, rtol=rtol)


def test_round_structure_names_its_groups_and_skips_unselected_edges() -> None:
    spec = _cluster(np.random.default_rng(2), [3, 2, 3])
    only_middle = _hgc(spec, 6, 0, [0, 1, 0], [0, 6, 0], [[0, 0, 0], [6, 6], [0, 0, 0]])
    st = round_structure(spec, only_middle)
    assert st.group_names == ("e1",) and st.worker_names == ("w10", "w11")
    assert st.need == 1 and st.group_need.tolist() == [1]
    flat = one_layer_plan(spec, "flat", 8, 1, [[2, 2, 2], [2, 2], [2, 2, 2]])
    st = round_structure(spec, flat)
    assert st.group_names == ("master",) and st.group_links.tolist() == [0.0]
    hgc = _hgc(spec, 6, 0, [0, 1, 0], [2, 2, 2], [[1, 0, 1], [2, 2], [1, 0, 1]])
    st = round_structure(spec, hgc)
    assert st.group_names == ("e0", "e1", "e2")
    assert st.worker_names == ("w00", "w02", "w10", "w11", "w20", "w22")
