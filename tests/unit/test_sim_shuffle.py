"""The shuffling simulator (edgecode.sim.shuffle) and its figure."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgecode.codes.approximate import LeastSquaresDecoder
from edgecode.learning import synthetic_least_squares
from edgecode.planning.shuffle import Assignment, random_shuffle
from edgecode.sim.shuffle import (
    SCHEMES,
    ShuffleScenario,
    _first_decodable,
    compare_shuffle,
    partition_rows,
    run_schemes,
    sample_unit_times,
    simulate_shuffle,
    train_runs,
    transfer_time,
)
from edgecode.sim.shuffle_figures import plot_shuffle, running_min_usage
from edgecode.stragglers import StraggleClasses

#: 12 workers in 6 pairs; pair {w0, w1} is all slow.
PERSISTENT_12 = StraggleClasses(3, ("w0", "w1", "w5"), 0.95, 0.05)
#: 40 workers in 20 pairs (s = 1); the 8 named slow workers fill pairs 0 and 1 and four others.
PERSISTENT = StraggleClasses(8, ("w0", "w1", "w2", "w3", "w10", "w20", "w30", "w35"), 0.95, 0.05)


def test_scenario_defaults_and_validation() -> None:
    scenario = ShuffleScenario(workers=100, stragglers=4)
    # 20 slow (p 0.8) + 80 active (p 0.05): mean 20, sd sqrt(3.2 + 3.8): wait 100 - ceil(25.3)
    assert scenario.resolved_wait == 74
    assert scenario.resolved_transfer_seconds == pytest.approx(1.25 / 100)
    for bad in (
        {"code": "mds"},
        {"workers": 10, "stragglers": 3},  # frc needs (s + 1) | n
        {"wait": 0},
        {"tau": 0},
        {"deadline": 0.0},
        {"budget": -1},
        {"transfer_seconds": -1.0},
        {"classes": StraggleClasses(11)},
    ):
        with pytest.raises(ValueError):
            ShuffleScenario(**({"workers": 10, "stragglers": 1, "classes": PERSISTENT_12} | bad))  # type: ignore[arg-type]


def test_schemes_share_draws_and_are_reproducible() -> None:
    scenario = ShuffleScenario(workers=12, stragglers=1, rounds=20, tau=4, classes=PERSISTENT_12)
    first, again = run_schemes(scenario, seed=3), run_schemes(scenario, seed=3)
    for scheme in SCHEMES:
        np.testing.assert_array_equal(
            first[scheme].partition_weights, again[scheme].partition_weights
        )
        np.testing.assert_array_equal(first[scheme].round_seconds, again[scheme].round_seconds)
    # approx and approx-shuffle-* play the same straggler draws: identical until the first shuffle
    for scheme in ("approx-shuffle-random", "approx-shuffle-aware"):
        np.testing.assert_array_equal(
            first[scheme].round_seconds[:4], first["approx"].round_seconds[:4]
        )


def test_approx_rounds_follow_the_rule() -> None:
    scenario = ShuffleScenario(workers=12, stragglers=1, rounds=30, wait=8, classes=PERSISTENT_12)
    unit, slow = sample_unit_times(scenario, np.random.default_rng(0))
    run = simulate_shuffle(scenario, "approx", unit, slow, np.random.default_rng(1))
    times = unit * (2 / 12)
    errs = []
    for r in range(30):
        end = np.sort(times[r])[7]
        assert run.round_seconds[r] == end
        alive = times[r] <= end
        groups = {w // 2 for w in np.flatnonzero(alive)}
        expected = np.array([float(j // 2 in groups) for j in range(12)])
        errs.append(np.abs(run.partition_weights[r] - expected).max())
        errs.append(abs(run.residual[r] - float(np.sum(expected == 0)) / 12))
    errs_a = np.asarray(errs)
    assert np.all(np.isfinite(errs_a)) and np.all(errs_a <= 1e-9)
    assert run.slow_only == (0, 1)  # pair {w0, w1} is all slow


def test_deadline_cuts_rounds() -> None:
    scenario = ShuffleScenario(
        workers=12, stragglers=1, rounds=30, deadline=0.2, classes=PERSISTENT_12
    )
    run = run_schemes(scenario, seed=0, schemes=["approx"])["approx"]
    assert np.all(run.round_seconds <= 0.2) and np.any(run.round_seconds == 0.2)


@pytest.mark.parametrize("code", ["frc", "crc"])
def test_exact_waits_for_the_first_decodable_prefix(code: str) -> None:
    n, s = 8, 1 if code == "frc" else 2
    scenario = ShuffleScenario(
        workers=n, stragglers=s, code=code, rounds=25, classes=StraggleClasses(2, (), 0.9, 0.1)
    )
    B = scenario.code_matrix()
    decoder = LeastSquaresDecoder(B)
    rng = np.random.default_rng(7)
    for _ in range(25):
        order = rng.permutation(n)
        k = _first_decodable(decoder, order, B)
        linear = next(m for m in range(1, n + 1) if decoder.decode(order[:m]).exact)
        assert k == linear
    unit, slow = sample_unit_times(scenario, np.random.default_rng(2))
    run = simulate_shuffle(scenario, "exact", unit, slow, rng, B)
    errs = np.abs(run.partition_weights - 1.0)
    assert np.all(np.isfinite(errs)) and np.all(errs <= 1e-9)


def test_ignore_rescales_what_arrived() -> None:
    scenario = ShuffleScenario(
        workers=10, stragglers=1, rounds=5, wait=6, classes=StraggleClasses(0, (), 0.0, 0.3)
    )
    run = run_schemes(scenario, seed=1, schemes=["ignore"])["ignore"]
    assert np.all(np.sum(run.partition_weights > 0, axis=1) == 6)
    np.testing.assert_allclose(run.partition_weights.sum(axis=1), 10.0)
    np.testing.assert_allclose(run.residual, (6 * (10 / 6 - 1) ** 2 + 4) / 10)


def test_persistent_slow_nodes_aware_shuffling_restores_usage() -> None:
    """The paper-2 target at small scale: with fixed slow nodes, aware shuffling keeps every
    partition's usage >= 0.8 x the mean, while without shuffling the partitions held only by
    slow nodes stay near 0."""
    scenario = ShuffleScenario(workers=40, stragglers=1, rounds=150, tau=10, classes=PERSISTENT)
    rows = {row["scheme"]: row for row in compare_shuffle(scenario, seed=0)}
    assert rows["approx"]["slow_only_partitions"] == 4
    assert rows["approx"]["slow_only_usage"] <= 0.15
    assert rows["approx"]["min_over_mean"] <= 0.15
    assert rows["approx-shuffle-aware"]["min_over_mean"] >= 0.8
    assert rows["approx-shuffle-random"]["min_over_mean"] >= 0.6
    # aware moves data once the filter has found the slow nodes, then (almost) never again
    assert 0 < rows["approx-shuffle-aware"]["moved_partitions"] <= 24
    assert rows["approx-shuffle-random"]["moved_partitions"] > 10 * 24
    assert rows["approx-shuffle-aware"]["mean_residual"] < rows["approx"]["mean_residual"]


def test_aware_moves_nothing_under_iid_stragglers() -> None:
    classes = StraggleClasses(0, (), 0.0, 0.2)
    scenario = ShuffleScenario(workers=40, stragglers=1, rounds=100, tau=10, classes=classes)
    rows = {row["scheme"]: row for row in compare_shuffle(scenario, seed=4)}
    assert rows["approx-shuffle-aware"]["moved_partitions"] == 0
    assert (
        rows["approx-shuffle-aware"]["mean_round_seconds"] == rows["approx"]["mean_round_seconds"]
    )


def test_transfer_time_is_the_busiest_worker() -> None:
    from edgecode.codes import fractional_repetition

    B = fractional_repetition(6, 1).B
    step = random_shuffle(B, Assignment.identity(6), np.random.default_rng(0))
    sent = np.bincount([t.source for t in step.transfers], minlength=6)
    got = np.bincount([t.destination for t in step.transfers], minlength=6)
    assert transfer_time(step, 0.5) == 0.5 * max(sent.max(), got.max())
    assert (
        transfer_time(
            random_shuffle(B, Assignment.identity(6), np.random.default_rng(0), budget_bytes=0), 1.0
        )
        == 0.0
    )


def test_training_replay_and_figure(tmp_path) -> None:
    scenario = ShuffleScenario(workers=12, stragglers=1, rounds=40, tau=5, classes=PERSISTENT_12)
    runs = run_schemes(scenario, seed=2)
    data = synthetic_least_squares(240, 4, np.random.default_rng(0))
    curves = train_runs(runs, data, rng=np.random.default_rng(1))
    for curve in curves.values():
        assert np.all(np.isfinite(curve.loss)) and curve.loss[-1] < curve.loss[0]
        assert curve.loss_at(-1.0) == curve.loss[0] and curve.loss_at(1e9) == curve.loss[-1]
    # the exact gradient is plain gradient descent: monotone, and the noiseless optimum is 0
    assert np.all(np.diff(curves["exact"].loss) <= 1e-12) and curves[
        "exact"
    ].optimum == pytest.approx(0)
    assert curves["exact"].loss[-1] < 1e-6
    parts = partition_rows(data, 12, heterogeneous=True)
    assert sorted(np.concatenate(parts).tolist()) == list(range(240))
    assert all(data.y[a].max() <= data.y[b].min() for a, b in itertools.pairwise(parts))
    low, mean = running_min_usage(runs["approx"])
    assert np.all(low <= mean) and low.shape == (40,)
    path = plot_shuffle(runs, tmp_path / "fig.png", curves=curves, title="t")
    assert path.stat().st_size > 10_000 and path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="runs"):
        plot_shuffle({}, tmp_path / "none.png")


def test_filter_model_and_min_swap_gain_reach_the_aware_policy() -> None:
    """The cluster of ``bench shuffle`` (10 workers, 0, 1 and 7 slow, wait 7) with the master's
    filter model: the aware policy settles after one or two shuffles; chasing every gain
    (``min_swap_gain = 0``, the policy before the fix) keeps shuffling on the filter's noise.
    Both keep every partition in use."""
    from edgecode.bench.shuffle_sim import BENCH_CLASSES, MASTER_FILTER_MODEL
    from edgecode.master.epochs import FILTER_MODEL
    from edgecode.stragglers import parse_straggle_classes

    assert MASTER_FILTER_MODEL == FILTER_MODEL
    base = ShuffleScenario(
        workers=10,
        code="crc",
        stragglers=1,
        classes=parse_straggle_classes(BENCH_CLASSES),
        rounds=120,
        wait=7,
        filter_model=MASTER_FILTER_MODEL,
    )
    assert base.class_filter().straggle_probability() == pytest.approx(
        np.full(10, 0.02 / 0.07 * 0.8 + 0.05 / 0.07 * 0.05)
    )
    settled, chasing = [], []
    for seed in range(3):
        runs = run_schemes(base, seed, ("approx", "approx-shuffle-aware"))
        noisy = run_schemes(
            ShuffleScenario(**{**base.__dict__, "min_swap_gain": 0.0}),
            seed,
            ("approx-shuffle-aware",),
        )["approx-shuffle-aware"]
        settled.append(runs["approx-shuffle-aware"].summary()["shuffles"])
        chasing.append(noisy.summary()["shuffles"])
        for run in (runs["approx-shuffle-aware"], noisy):
            usage = run.partition_usage
            assert np.all(np.isfinite(usage)) and usage.min() >= 0.8 * usage.mean()
        assert runs["approx"].partition_usage.min() < 0.5  # partition 1: workers 0 and 1
    assert all(1 <= k <= 3 for k in settled), settled
    assert sum(chasing) >= 2 * sum(settled) + 6, (settled, chasing)
    for bad in ({"filter_model": {"p_late": 0.5}}, {"min_swap_gain": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ShuffleScenario(**{**base.__dict__, **bad})


def test_placement_errors_of_the_bench_cluster() -> None:
    """Every placement of the 3 slow workers on the cyclic code's 10 rows: the one the aware
    policy picks has the smallest risk and an error within 20 % of the best placement's (the
    Monte Carlo error over 1000 rounds; 1.6 % over 4000), far below the identity's (workers 0
    and 1 adjacent), whose error is mostly a systematic bias; the squared bias never exceeds
    the error (Jensen)."""
    from edgecode.bench.shuffle_sim import placement_errors

    rows = placement_errors("crc", rounds=1000, seed=0)
    errors = np.array([row["error"] for row in rows])
    biases = np.array([row["bias"] for row in rows])
    assert len(rows) == 120 and np.all(np.isfinite(errors)) and np.all(np.isfinite(biases))
    assert np.all(biases <= errors + 1e-12) and np.all(np.diff(errors) >= 0)
    chosen = [row for row in rows if row["aware"]]
    identity = next(row for row in rows if row["slow_rows"] == (0, 1, 7))
    assert len(chosen) == 1
    assert chosen[0]["risk"] == pytest.approx(min(row["risk"] for row in rows))
    assert chosen[0]["error"] <= 1.2 * errors[0] and chosen[0]["error"] < 0.5 * identity["error"]
    assert identity["bias"] > 0.5 * identity["error"] and chosen[0]["bias"] < 0.1 * identity["bias"]
