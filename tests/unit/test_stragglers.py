"""Unit tests of edgecode.stragglers: samplers, stateful runtimes, fitting."""

from __future__ import annotations

import numpy as np
import pytest

from edgecode.planning.spec import WorkerSpec
from edgecode.stragglers import (
    BernoulliRuntime,
    MarkovRuntime,
    ShiftedExponentialRuntime,
    TraceRuntime,
    fit_shifted_exponential,
    fit_worker,
    replay_trace,
    runtime_for,
    sample_bernoulli,
    sample_compute_times,
    sample_markov,
    sample_markov_classes,
    sample_shifted_exponential,
    straggle_probability,
)


def test_shifted_exponential_moments() -> None:
    rng = np.random.default_rng(0)
    t = sample_shifted_exponential(0.2, 5.0, 0.25, rng, size=200_000)
    assert t.min() >= 0.25 * 0.2
    assert t.mean() == pytest.approx(0.25 * (0.2 + 1 / 5.0), rel=5e-3)
    assert t.std() == pytest.approx(0.25 / 5.0, rel=1e-2)


def test_shifted_exponential_broadcasts_per_worker() -> None:
    rng = np.random.default_rng(1)
    t = sample_shifted_exponential([0.1, 0.5], [10.0, 2.0], [1.0, 0.5], rng, size=(50_000, 2))
    assert t.shape == (50_000, 2)
    np.testing.assert_allclose(t.mean(axis=0), [0.2, 0.5], rtol=1e-2)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"shift": -1.0}, "shift"),
        ({"rate": 0.0}, "rate"),
        ({"load_fraction": 1.5}, "load_fraction"),
        ({"rate": float("nan")}, "rate"),
    ],
)
def test_shifted_exponential_validates(kwargs: dict[str, float], name: str) -> None:
    args = {"shift": 0.1, "rate": 1.0, "load_fraction": 0.5} | kwargs
    with pytest.raises(ValueError, match=name):
        sample_shifted_exponential(
            args["shift"], args["rate"], args["load_fraction"], np.random.default_rng(0)
        )


def test_bernoulli_mixture_mean_and_support() -> None:
    rng = np.random.default_rng(2)
    t = sample_bernoulli(0.1, 10.0, 0.3, 4.0, 1.0, rng, size=200_000)
    base_mean = 0.1 + 0.1
    assert t.mean() == pytest.approx(base_mean * (1 + 0.3 * 3.0), rel=1e-2)
    # a straggling round takes at least slow_factor * shift = 0.4; a plain one exceeds it w.p. e^-3
    assert np.mean(t >= 0.4) == pytest.approx(0.3 + 0.7 * np.exp(-3.0), abs=0.005)
    with pytest.raises(ValueError, match="p_straggle"):
        sample_bernoulli(0.1, 1.0, 1.5, 2.0, 1.0, rng)


def test_markov_classes_stationary_and_sojourns() -> None:
    rng = np.random.default_rng(3)
    q_as, q_sa = 0.05, 0.2
    classes = sample_markov_classes(q_as, q_sa, 400_000, rng, slow=True)
    assert classes[0]
    assert classes.mean() == pytest.approx(q_as / (q_as + q_sa), abs=0.01)
    # mean sojourn in the slow class is 1 / q_sa
    changes = np.flatnonzero(np.diff(classes.astype(np.int8)) != 0) + 1
    runs = np.split(classes, changes)
    slow_runs = [len(r) for r in runs[:-1] if r[0]]
    assert np.mean(slow_runs) == pytest.approx(1 / q_sa, rel=0.05)


def test_markov_fixed_classes_never_move() -> None:
    rng = np.random.default_rng(4)
    assert sample_markov_classes(0.0, 0.0, 1000, rng, slow=True).all()
    assert not sample_markov_classes(0.0, 0.0, 1000, rng, slow=False).any()
    assert sample_markov_classes(0.3, 0.3, 0, rng).size == 0


def test_markov_times_follow_the_class() -> None:
    rng = np.random.default_rng(5)
    # always slow, always straggles when slow, never when active
    t = sample_markov(0.1, 1e9, 1.0, 0.0, 0.0, 0.0, 5.0, 1.0, 100, rng, slow=True)
    np.testing.assert_allclose(t, 0.5, rtol=1e-6)
    t = sample_markov(0.1, 1e9, 1.0, 0.0, 0.0, 0.0, 5.0, 1.0, 100, rng, slow=False)
    np.testing.assert_allclose(t, 0.1, rtol=1e-6)
    worker = WorkerSpec(
        "w",
        0.1,
        10.0,
        model="markov",
        p_slow=0.8,
        p_active=0.1,
        q_as=0.1,
        q_sa=0.3,
        slow_factor=3.0,
    )
    t = sample_markov(0.1, 10.0, 0.8, 0.1, 0.1, 0.3, 3.0, 1.0, 400_000, rng)
    p = straggle_probability(worker)
    assert p == pytest.approx(0.25 * 0.8 + 0.75 * 0.1)
    assert t.mean() == pytest.approx(0.2 * (1 + 2.0 * p), rel=2e-2)


def test_straggle_probability_per_model() -> None:
    assert straggle_probability(WorkerSpec("a", 0.1, 1.0)) == 0.0
    assert straggle_probability(WorkerSpec("b", 0.1, 1.0, model="bernoulli", p_straggle=0.2)) == 0.2
    fixed = WorkerSpec("c", 0.1, 1.0, model="markov", p_slow=0.6, p_active=0.1, slow=True)
    assert straggle_probability(fixed) == 0.6


def test_trace_replay_cycles_and_scales() -> None:
    trace = [1.0, 2.0, 3.0]
    np.testing.assert_allclose(replay_trace(trace, 0.5, 5, start=1), [1.0, 1.5, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(replay_trace(trace, 0.5, 2, per_unit_load=False), [1.0, 2.0])
    with pytest.raises(ValueError, match="trace"):
        replay_trace([], 0.5, 3)
    runtime = TraceRuntime(np.array(trace))
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(4):
        seen.append(runtime.sample(0.5, rng))
        runtime.advance(rng)
    assert seen == [0.5, 1.0, 1.5, 0.5]


def test_stateful_runtimes() -> None:
    rng = np.random.default_rng(6)
    plain = runtime_for(WorkerSpec("a", 0.2, 5.0))
    assert isinstance(plain, ShiftedExponentialRuntime)
    assert plain.sample(0.5, rng) >= 0.1
    bern = runtime_for(WorkerSpec("b", 0.2, 5.0, model="bernoulli", p_straggle=1.0, slow_factor=2))
    assert isinstance(bern, BernoulliRuntime)
    assert bern.sample(1.0, rng) >= 0.4
    markov = runtime_for(
        WorkerSpec(
            "c",
            0.2,
            5.0,
            model="markov",
            p_slow=1.0,
            q_as=0.0,
            q_sa=1.0,
            slow=True,
            slow_factor=10.0,
        )
    )
    assert isinstance(markov, MarkovRuntime)
    assert markov.sample(1.0, rng) >= 2.0  # slow and straggling
    markov.advance(rng)  # q_sa = 1: moves to active
    assert not markov.slow
    assert markov.sample(1.0, rng) < 2.0 + 10.0  # active: p_active = 0
    markov.advance(rng)  # q_as = 0: stays active
    assert not markov.slow


def test_sample_compute_times_matches_models() -> None:
    rng = np.random.default_rng(7)
    workers = [
        WorkerSpec("a", 0.1, 10.0),
        WorkerSpec("b", 0.1, 10.0, model="bernoulli", p_straggle=0.5, slow_factor=3.0),
        WorkerSpec("c", 0.1, 10.0, model="markov", p_slow=1.0, q_as=0.5, q_sa=0.5, slow_factor=2.0),
    ]
    t = sample_compute_times(workers, [1.0, 0.5, 1.0], 100_000, rng, stationary=True)
    assert t.shape == (100_000, 3)
    np.testing.assert_allclose(t.mean(axis=0), [0.2, 0.1 * 2.0, 0.2 * 1.5], rtol=2e-2)


def test_fit_recovers_parameters() -> None:
    rng = np.random.default_rng(8)
    fractions = rng.choice([0.1, 0.25, 0.5], size=50_000)
    times = sample_shifted_exponential(0.3, 4.0, fractions, rng)
    shift, rate = fit_shifted_exponential(times, fractions)
    assert shift == pytest.approx(0.3, abs=1e-3)
    assert rate == pytest.approx(4.0, rel=2e-2)


def test_fit_is_unbiased_for_small_samples() -> None:
    """The documented correction: E[1/rate_hat] = 1/rate and E[shift_hat] = shift at n = 4."""
    rng = np.random.default_rng(9)
    draws = sample_shifted_exponential(1.0, 2.0, 1.0, rng, size=(40_000, 4))
    fits = np.array([fit_shifted_exponential(row, np.ones(4)) for row in draws])
    assert fits[:, 0].mean() == pytest.approx(1.0, abs=5e-3)
    assert (1 / fits[:, 1]).mean() == pytest.approx(0.5, rel=1e-2)
    # the plain MLE 1/rate = mean - min would be biased low by the factor (n - 1) / n
    mle = (draws.mean(axis=1) - draws.min(axis=1)).mean()
    assert mle == pytest.approx(0.5 * 3 / 4, rel=1e-2)


def test_fit_degenerate_inputs() -> None:
    assert fit_shifted_exponential([0.4], [0.5]) == pytest.approx((0.4, 2.5))
    shift, rate = fit_shifted_exponential([0.2, 0.2, 0.2], [1.0, 1.0, 1.0])
    assert np.isfinite(rate) and rate > 0
    assert shift + 1 / rate == pytest.approx(0.2)
    assert fit_shifted_exponential([0.0, 0.0], [1.0, 1.0]) == (0.0, 1e12)
    for times, fractions, name in (
        ([], [], "times"),
        ([1.0], [0.0], "fractions"),
        ([1.0, 2.0], [1.0], "fractions"),
        ([-1.0], [1.0], "times"),
    ):
        with pytest.raises(ValueError, match=name):
            fit_shifted_exponential(times, fractions)


def test_fit_worker_replaces_model() -> None:
    worker = WorkerSpec("w", 9.0, 9.0, link_seconds=0.01)
    fitted = fit_worker(worker, [0.3, 0.5, 0.4], [1.0, 1.0, 1.0])
    assert fitted.name == "w" and fitted.link_seconds == 0.01
    assert (fitted.shift, fitted.rate) == fit_shifted_exponential([0.3, 0.5, 0.4], [1.0] * 3)
    # three samples: the slowest is censored at the middle one (0.4 s)
    spread = ((0.4 - 0.3) + 1 * (0.4 - 0.3)) / 1
    assert fitted.rate == pytest.approx(1 / spread)
    assert fitted.shift == pytest.approx(0.3 - spread / 3)
