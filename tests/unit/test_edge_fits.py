"""Workers' runtimes are fitted over their edge: the noise of three profiling rounds does not size
the shares of identical workers, and a worker whose link really is slower, or whose compute
really is noisier, keeps it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecode.coordinator.logic import CoordinatorLogic, pooled_fits, pooled_links
from edgecode.stragglers import fit_shifted_exponential

#: Seconds beyond compute (ms) that the edges saw in the three profiling rounds of
#: `edgecode bench train`'s cluster without stragglers (8 identical workers; the first round is
#: the warm-up): the previous fit (each worker's median) gave links of 3.4-6.5 ms.
PROFILED_MS = {
    "edge-0-w0": [13.81, 5.27, 2.34],
    "edge-0-w1": [15.4, 4.0, 4.26],
    "edge-0-w2": [20.24, 5.0, 4.18],
    "edge-0-w3": [22.83, 6.03, 3.44],
    "edge-1-w0": [9.3, 3.2, 6.54],
    "edge-1-w1": [12.39, 2.92, 6.03],
    "edge-1-w2": [13.69, 1.95, 6.34],
    "edge-1-w3": [14.31, 5.94, 4.16],
}
#: Emulated compute for the whole data set (each worker held an eighth).
WHOLE_SECONDS = 0.0806


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def profiled(extra_ms: dict[str, float] | None = None) -> CoordinatorLogic:
    """The bench's cluster after its three profiling rounds (``extra_ms`` added to a worker's
    every link sample)."""
    logic = CoordinatorLogic(clock=Clock())
    for edge in ("edge-0", "edge-1"):
        logic.register(edge, "edge", f"{edge}:1")
    for worker in PROFILED_MS:
        logic.register(worker, "worker", f"{worker}:1", worker[:6], 0.0)
    rng = np.random.default_rng(0)
    for r in range(3):
        timings = []
        for worker, samples in PROFILED_MS.items():
            compute = WHOLE_SECONDS / 8 * (1 + 0.01 * rng.random())
            link = (samples[r] + (extra_ms or {}).get(worker, 0.0)) / 1e3
            timings.append((worker, compute, 1 / 8, compute + link))
        logic.report(timings, round_seconds=0.02, predicted=0.0)
    return logic


def shares(logic: CoordinatorLogic) -> dict[str, int]:
    plan, fitted, _ = logic.plan(0, (), 455)
    assert fitted
    return {w.name: w.partitions for e in plan.edges for w in e.workers if w.selected}


def links_ms(logic: CoordinatorLogic) -> dict[str, float]:
    spec, _ = logic.cluster_spec()
    return {w.name: w.link_seconds * 1e3 for e in spec.edges for w in e.workers}


def test_identical_workers_get_even_shares_after_three_noisy_profiling_rounds() -> None:
    # each worker's own median: shares 47 to 60 of 420 (the largest 1.14x the mean)
    counts = np.array(list(shares(profiled()).values()), dtype=np.float64)
    assert counts.size == 8
    assert counts.max() <= 1.06 * counts.mean(), counts
    links = np.array(list(links_ms(profiled()).values()))
    assert np.all(np.isfinite(links))
    assert links.max() - links.min() <= 0.5, links


def test_a_worker_with_a_slow_link_keeps_it_and_gets_less_work() -> None:
    logic = profiled({"edge-0-w1": 20.0})
    links = links_ms(logic)
    assert 22.0 <= links["edge-0-w1"] <= 27.0, links
    others = [v for k, v in links.items() if k != "edge-0-w1"]
    assert all(2.0 <= v <= 7.0 for v in others), links
    counts = shares(logic)
    # less work than any other worker, or none (left out of the plan)
    assert counts.get("edge-0-w1", 0) < min(v for k, v in counts.items() if k != "edge-0-w1")


samples = st.lists(
    st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=12),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(samples, st.floats(-0.5, 0.5))
def test_estimates_lie_between_the_workers_own_and_move_with_a_common_shift(
    groups: list[list[float]], shift: float
) -> None:
    pooled = np.array(pooled_links(groups))
    assert pooled.shape == (len(groups),)
    assert np.all(np.isfinite(pooled))
    trimmed = [np.sort(g)[: len(g) - (0 if len(g) < 3 else -(-len(g) // 5))] for g in groups]
    means = np.array([t.mean() for t in trimmed])
    assert np.all(pooled >= means.min() - 1e-12) and np.all(pooled <= means.max() + 1e-12)
    moved = np.array(pooled_links([[x + shift for x in g] for g in groups]))
    np.testing.assert_allclose(moved, pooled + shift, rtol=0, atol=1e-9)
    if len(groups) < 3:
        np.testing.assert_allclose(pooled, means, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "bad", [[[]], [[float("nan")]], [[0.1, float("inf")]], [[[0.1, 0.2]]]], ids=str
)
def test_bad_samples_are_refused(bad: list[list[float]]) -> None:
    with pytest.raises(ValueError, match="link samples"):
        pooled_links(bad)


#: Another profiling of the same cluster on a busier machine: (link ms, compute ms for the whole
#: data set) per round. Fitted alone, the compute spreads ranged 0.14-12.7 ms and the shares
#: 41-55 of 376 (the largest 1.17x the mean).
BUSY_PROFILE = {
    "edge-0-w0": ([6.32, 3.15, 4.28], [87.25, 80.92, 90.82]),
    "edge-0-w1": ([6.37, 2.57, 3.31], [84.95, 81.02, 81.14]),
    "edge-0-w2": ([9.49, 4.11, 5.37], [89.68, 81.01, 85.6]),
    "edge-0-w3": ([12.88, 5.19, 3.95], [83.51, 82.96, 91.29]),
    "edge-1-w0": ([8.96, 3.11, 5.37], [83.76, 81.04, 89.41]),
    "edge-1-w1": ([11.34, 5.21, 6.31], [81.68, 87.99, 85.01]),
    "edge-1-w2": ([14.93, 4.57, 3.71], [81.13, 82.8, 81.25]),
    "edge-1-w3": ([16.49, 4.6, 3.57], [80.9, 80.83, 80.93]),
}


def test_identical_workers_get_even_shares_when_their_compute_noise_differs_by_chance() -> None:
    logic = CoordinatorLogic(clock=Clock())
    for edge in ("edge-0", "edge-1"):
        logic.register(edge, "edge", f"{edge}:1")
    for worker in BUSY_PROFILE:
        logic.register(worker, "worker", f"{worker}:1", worker[:6], 0.0)
    for r in range(3):
        timings = []
        for worker, (links, whole) in BUSY_PROFILE.items():
            compute = whole[r] / 8e3
            timings.append((worker, compute, 1 / 8, compute + links[r] / 1e3))
        logic.report(timings, round_seconds=0.02, predicted=0.0)
    counts = np.array(list(shares(logic).values()), dtype=np.float64)
    assert counts.size == 8
    assert counts.max() <= 1.10 * counts.mean(), counts


def test_a_worker_whose_compute_really_is_noisier_keeps_most_of_its_spread() -> None:
    rng = np.random.default_rng(3)
    ones = [1.0] * 20
    groups = [(list(0.08 + rng.exponential(0.001, 20)), ones) for _ in range(3)]
    groups.append((list(0.08 + rng.exponential(0.04, 20)), ones))
    alone = [1 / fit_shifted_exponential(*g)[1] for g in groups]
    pooled = [1 / rate for _, rate in pooled_fits(groups)]
    assert pooled[3] >= 0.8 * alone[3], (alone, pooled)
    assert max(pooled[:3]) <= 0.2 * pooled[3], (alone, pooled)


fit_groups = st.lists(
    st.lists(st.floats(1e-3, 1.0, allow_nan=False), min_size=1, max_size=12),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(fit_groups)
def test_pooled_spreads_lie_between_the_own_fits_and_shifts_below_the_fastest_round(
    groups: list[list[float]],
) -> None:
    samples = [(g, [1.0] * len(g)) for g in groups]
    alone = [fit_shifted_exponential(*x) for x in samples]
    pooled = pooled_fits(samples)
    assert len(pooled) == len(groups)
    spreads = np.array([1 / rate for _, rate in alone])
    for (shift, rate), (own_shift, own_rate), g in zip(pooled, alone, groups, strict=True):
        assert np.isfinite(shift) and np.isfinite(rate) and rate > 0
        assert 0.0 <= shift <= min(g) + 1e-12
        spread = 1 / rate
        assert spreads.min() * (1 - 1e-9) - 1e-12 <= spread <= spreads.max() * (1 + 1e-9) + 1e-12
        if len(g) < 3:  # too few rounds to know its noise: its own fit
            assert (shift, rate) == (own_shift, own_rate)
