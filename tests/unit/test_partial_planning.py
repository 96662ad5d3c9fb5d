"""Round time of partial-recovery schemes: exact integral vs Monte Carlo, the two exact paths
against each other, the round-end distribution, the auto design and the benchmark targets."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from edgecode.codes.partial import PartialRecoveryScheme, cyclic_partial, subset_design
from edgecode.codes.partial_rule import PartialDecoder
from edgecode.codes.partial_schemes import InvalidPartialParameters
from edgecode.errors import InvalidInput
from edgecode.planning import partial as planning_partial
from edgecode.planning.partial import (
    _expected,
    _model,
    _survival,
    choose_partial_design,
    full_coding_round_time,
    guaranteed_arrivals,
    partial_expected_round_time,
    partial_round_time_cdf,
    partial_structure,
    sample_partial_rounds,
    stop_arrival_distribution,
)
from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec
from edgecode.sim.partial import bench_cluster

#: z-score beyond which a Monte Carlo mean disagrees with an exact value
Z_LIMIT = 4.5


def _mixed_cluster(n: int) -> ClusterSpec:
    """Unequal workers on two edges: shifted exponential and Bernoulli, links on both levels."""
    workers = []
    for i in range(n):
        extra = {"model": "bernoulli", "p_straggle": 0.25, "slow_factor": 4.0} if i % 3 == 0 else {}
        workers.append(
            WorkerSpec(
                f"w{i}",
                0.5 + 0.1 * i,
                1.0 + 0.5 * (i % 4),
                link_seconds=0.002 * (i % 2),
                **extra,  # type: ignore[arg-type]
            )
        )
    half = n // 2
    return ClusterSpec(
        edges=(
            EdgeSpec("a", tuple(workers[:half]), link_seconds=0.003),
            EdgeSpec("b", tuple(workers[half:]), link_seconds=0.001),
        )
    )


SCHEMES = [
    cyclic_partial(7, 2, 0.7),
    cyclic_partial(7, 2, 0.7, 2),
    cyclic_partial(8, 3, 0.9, 3),
    subset_design(7, 2, 0.8),
    subset_design(8, 3, 1.0),
]


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda c: f"{type(c).__name__}-n{c.n_workers}")
def test_exact_expected_round_time_agrees_with_monte_carlo(scheme: PartialRecoveryScheme) -> None:
    spec = _mixed_cluster(scheme.n_workers)
    exact = partial_expected_round_time(spec, scheme)
    times, used = sample_partial_rounds(spec, scheme, 40_000, np.random.default_rng(7))
    z = abs(times.mean() - exact) / (times.std(ddof=1) / math.sqrt(times.size))
    assert math.isfinite(exact) and z < Z_LIMIT, (exact, times.mean(), z)
    assert np.all(used <= scheme.n_workers - scheme.stragglers)


def test_the_mask_integral_and_the_order_statistic_agree_on_subset_designs() -> None:
    """Subset designs end at a fixed arrival count: the Poisson-binomial path of planning.timing
    and the sum over all 2^n arrival sets must give the same E[T] and the same survival."""
    spec = _mixed_cluster(8)
    decoder = PartialDecoder(subset_design(8, 3, 0.8))
    structure = partial_structure(spec, decoder)
    order_statistic = _expected(structure, 1e-11)
    model = _model(structure)
    insufficient = (~decoder.sufficient_masks()).astype(np.float64)
    t = np.linspace(0.0, 3.0, 301)
    by_sets = _survival(model, insufficient, t)
    from edgecode.planning.timing import _boundaries, _integrate
    from edgecode.planning.timing import _survival as flat_survival

    by_count = flat_survival(model, t)
    assert np.all(np.isfinite(by_sets)) and np.max(np.abs(by_sets - by_count)) <= 1e-12
    t_lo, atol, boundaries = _boundaries(model, 1e-11, None)
    integral, _, _ = _integrate(lambda x: _survival(model, insufficient, x), boundaries, atol / 2)
    assert math.isclose(t_lo + integral, order_statistic, rel_tol=1e-9)


def test_cdf_is_a_distribution_matching_the_samples() -> None:
    spec = _mixed_cluster(7)
    scheme = cyclic_partial(7, 2, 0.7, 2)
    times, _ = sample_partial_rounds(spec, scheme, 20_000, np.random.default_rng(8))
    grid = np.quantile(times, np.linspace(0.05, 0.95, 19))
    cdf = partial_round_time_cdf(spec, scheme, grid)
    empirical = np.searchsorted(np.sort(times), grid, side="right") / times.size
    gaps = np.abs(cdf - empirical)
    assert np.all(np.isfinite(gaps)) and np.all(gaps <= 0.015)
    assert np.all(np.diff(cdf) >= 0) and cdf[0] >= 0 and cdf[-1] <= 1
    assert partial_round_time_cdf(spec, scheme, [0.0])[0] == 0.0


@pytest.mark.parametrize(
    "scheme", [cyclic_partial(10, 3, 0.8), cyclic_partial(10, 3, 1.0), subset_design(10, 3, 0.9)]
)
def test_round_end_distribution_matches_identical_workers(scheme: PartialRecoveryScheme) -> None:
    spec = bench_cluster("shifted_exponential")
    decoder = PartialDecoder(scheme)
    distribution = stop_arrival_distribution(decoder)
    assert math.isclose(distribution.sum(), 1.0, rel_tol=1e-12) and np.all(distribution >= 0)
    guaranteed = guaranteed_arrivals(decoder)
    assert guaranteed <= scheme.n_workers - scheme.stragglers
    samples = 40_000
    _, used = sample_partial_rounds(spec, scheme, samples, np.random.default_rng(9))
    observed = np.bincount(used, minlength=distribution.size) / samples
    stderr = np.sqrt(distribution * (1 - distribution) / samples) + 1e-12
    z = np.abs(observed - distribution) / stderr
    assert np.all(np.isfinite(z)) and np.all(z < Z_LIMIT)
    assert used.max() <= guaranteed


def test_cyclic_rounds_can_end_before_n_minus_s_arrivals() -> None:
    distribution = stop_arrival_distribution(PartialDecoder(cyclic_partial(10, 3, 0.8)))
    assert distribution[:7].sum() > 0.5  # most rounds end before the 7th arrival
    subset = stop_arrival_distribution(PartialDecoder(subset_design(10, 3, 0.8)))
    assert subset[7] == 1.0


def test_extra_vectors_cost_time_and_one_vector_does_not() -> None:
    spec = bench_cluster("shifted_exponential")
    one, two = cyclic_partial(10, 3, 0.8, 1), cyclic_partial(10, 3, 0.8, 2)
    assert partial_expected_round_time(spec, one, vector_seconds=0.5) == pytest.approx(
        partial_expected_round_time(spec, one), rel=1e-12
    )
    slow = partial_expected_round_time(spec, two, vector_seconds=0.05)
    fast = partial_expected_round_time(spec, two, vector_seconds=0.0)
    assert slow > fast + 0.04


def test_full_coding_is_the_flat_cyclic_repetition_round() -> None:
    """Full coding waits for the (n - s)-th arrival of workers holding (s + 1)/n of the data:
    the same order statistic computed through a subset design of size s + 1 (same load)."""
    spec = bench_cluster("bernoulli")
    full = full_coding_round_time(spec, 3)
    same_round = partial_expected_round_time(spec, subset_design(10, 3, 1.0), vector_seconds=0.0)
    # the subset design's V = 84 vectors add (V - 1) * 0 seconds: only the path delay remains
    assert math.isclose(full, same_round, rel_tol=1e-9)


@pytest.mark.parametrize("model", ["shifted_exponential", "bernoulli"])
def test_auto_design_and_the_benchmark_targets(model: str) -> None:
    """n = 10, s = 3: the auto choice is the fastest option; at alpha = 0.8 it expects at most
    0.8 x full coding's round time; the subset design's load is the LP bound and cyclic's is
    within the stated gap (d/n <= 1.7 x the bound)."""
    spec = bench_cluster(model)
    for alpha in (1.0, 0.9, 0.8):
        choice = choose_partial_design(spec, 3, alpha)
        times = [o.expected_round_seconds for o in choice.options]
        assert choice.best.expected_round_seconds == min(times)
        assert all(math.isfinite(t) and t > 0 for t in times)
        for option in choice.options:
            ratio = option.computation_load / option.lower_bound
            if option.label.startswith("subset"):
                assert ratio == pytest.approx(1.0, rel=1e-12)
            else:
                assert 1.0 <= ratio <= 1.7
        if alpha == 0.8:
            assert choice.best.expected_round_seconds <= 0.8 * choice.full_coding_seconds


def test_auto_design_respects_the_vector_cap_and_validates() -> None:
    spec = bench_cluster("shifted_exponential")
    capped = choose_partial_design(spec, 3, 0.9, max_vectors=1)
    assert [o.communication_load for o in capped.options] == [1]
    with pytest.raises(InvalidInput, match="0 < alpha <= 1"):
        choose_partial_design(spec, 3, 1.2)
    with pytest.raises(InvalidInput, match=r"s must be an integer in \[0, 10\)"):
        choose_partial_design(spec, 10, 0.9)
    with pytest.raises(InvalidPartialParameters, match="max_vectors=0"):
        choose_partial_design(spec, 3, 0.9, max_vectors=0)
    with pytest.raises(InvalidInput, match="the scheme has n=7 workers but the spec has 10"):
        partial_expected_round_time(spec, cyclic_partial(7, 2, 0.7))
    with pytest.raises(InvalidInput, match="vector_seconds must be finite and >= 0"):
        partial_expected_round_time(spec, cyclic_partial(10, 2, 0.7), vector_seconds=-1.0)


def test_docstring_examples_run() -> None:
    failures, attempted = doctest.testmod(planning_partial, raise_on_error=False)
    assert attempted > 0 and failures == 0
