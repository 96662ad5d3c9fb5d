"""The vectorised GOCO simulator (edgecode.sim.goco)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecode.errors import InvalidInput
from edgecode.learning.datasets import partition_bounds, synthetic_least_squares
from edgecode.learning.gossip import (
    StepSchedule,
    build_topology,
    gossip_scheme,
    partition_order,
    peer_step_size,
)
from edgecode.learning.models import LeastSquares
from edgecode.sim.goco import (
    GossipRun,
    TimeModel,
    goco_comparison,
    gossip_curves,
    least_squares_peers,
    mean_smoothness,
    plot_gossip_runs,
    simulate_gossip,
)


def _setup(graph: str, name: str, p: float, *, rows: int = 240, features: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    data = synthetic_least_squares(rows, features, rng, noise=1.0)
    topology = build_topology(graph, 12, rng)
    scheme = gossip_scheme(name, 12, p, replication=2)
    problem = least_squares_peers(data, scheme.code, non_iid=True)
    return data, topology, scheme, problem


@pytest.mark.parametrize(("d", "l2"), [(1, 0.0), (2, 0.0), (3, 0.7)])
def test_local_gradients_are_the_models_summed_partial_gradients(d: int, l2: float) -> None:
    rng = np.random.default_rng(1)
    data = synthetic_least_squares(77, 4, rng, noise=0.3)
    scheme = gossip_scheme("goco", 7, 0.2, replication=d)
    problem = least_squares_peers(data, scheme.code, non_iid=True, l2=l2)
    X = rng.standard_normal((7, 5))
    model = LeastSquares(l2=l2)
    order = partition_order(data, non_iid=True)
    blocks = [order[a:b] for a, b in partition_bounds(77, 7)]
    expected = np.array(
        [
            sum(
                model.gradient(X[i], data.X[blocks[j]], data.y[blocks[j]], reg_share=1 / 7)
                for j in scheme.code.partitions_of_worker[i]
            )
            for i in range(7)
        ]
    )
    err = np.abs(problem.local_gradients(X) - expected)
    assert np.all(np.isfinite(err)) and np.all(err <= 1e-10 * np.abs(expected).max())
    # the optimum zeroes the full gradient; the gap is F(x) - F*
    full = model.gradient(problem.optimum, data.X, data.y)
    assert np.all(np.abs(full) <= 1e-9 * np.abs(data.y).sum())
    x = rng.standard_normal(5)
    gap = model.loss(x, data.X, data.y) - model.loss(problem.optimum, data.X, data.y)
    assert problem.gaps(x[None, :])[0] == pytest.approx(gap, rel=1e-9)


def test_the_optimum_is_the_known_one_without_noise() -> None:
    data = synthetic_least_squares(60, 3, np.random.default_rng(2))
    problem = least_squares_peers(data, gossip_scheme("gossip", 6, 0.1).code, non_iid=False)
    assert data.optimum is not None
    np.testing.assert_allclose(problem.optimum, data.optimum, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("graph", "rounds", "lr", "decay"),
    [("ring", 3000, 0.2, 20.0), ("torus", 800, 0.2, 20.0)],
)
def test_goco_reaches_the_optimum_and_consensus(
    graph: str, rounds: int, lr: float, decay: float
) -> None:
    data, topology, scheme, problem = _setup(graph, "goco", 0.5)
    step = StepSchedule(peer_step_size(lr / mean_smoothness(data), 12, data.n_rows), decay)
    run = simulate_gossip(problem, topology, scheme, rounds, step, np.random.default_rng(1))
    assert np.all(np.isfinite(run.gap)) and np.all(np.isfinite(run.consensus))
    assert run.gap[0] == pytest.approx(1.0)
    assert run.gap[-1] <= 1e-4
    spread = run.consensus / np.sum(problem.optimum**2)
    assert spread[0] == 0.0 and spread[-1] <= 1e-5 and spread[-1] <= 1e-3 * spread.max()
    # the peers themselves are all near x*, not just their mean
    err = np.linalg.norm(run.final - problem.optimum, axis=1) / np.linalg.norm(problem.optimum)
    assert np.all(np.isfinite(err)) and np.all(err <= 1e-2)
    assert 0 < run.skipped.sum() < 12 * rounds


@pytest.mark.parametrize("name", ["gossip", "gossip-wait"])
def test_the_baselines_converge_too(name: str) -> None:
    data, topology, scheme, problem = _setup("torus", name, 0.5)
    step = StepSchedule(peer_step_size(0.2 / mean_smoothness(data), 12, data.n_rows), 20.0)
    run = simulate_gossip(problem, topology, scheme, 800, step, np.random.default_rng(1))
    assert np.all(np.isfinite(run.gap)) and run.gap[-1] <= 1e-3
    if name == "gossip-wait":
        assert run.skipped.sum() == 0
    else:
        assert abs(run.skipped.mean() / 12 - 0.5) <= 0.05


def test_a_constant_step_stalls_at_a_noise_floor() -> None:
    # why the schedule decays: with stragglers and non-iid data a constant step stops improving
    data, topology, scheme, problem = _setup("torus", "goco", 0.5)
    eta = peer_step_size(0.2 / mean_smoothness(data), 12, data.n_rows)
    constant = simulate_gossip(
        problem, topology, scheme, 800, StepSchedule(eta), np.random.default_rng(1)
    )
    decaying = simulate_gossip(
        problem, topology, scheme, 800, StepSchedule(eta, 20.0), np.random.default_rng(1)
    )
    assert constant.gap[-1] > 10 * decaying.gap[-1]


def test_fixed_patterns_and_initial_values() -> None:
    _data, topology, scheme, problem = _setup("ring", "goco", 0.5)
    alive = np.zeros((5, 12), dtype=bool)  # everyone straggles: pure gossip
    X0 = np.random.default_rng(3).standard_normal((12, problem.dim))
    run = simulate_gossip(
        problem, topology, scheme, 5, StepSchedule(1.0), np.random.default_rng(0),
        alive=alive, initial=X0,
    )  # fmt: skip
    expected = X0
    for _ in range(5):
        expected = topology.mix(expected)
    np.testing.assert_allclose(run.final, expected, rtol=0, atol=1e-13)
    assert run.skipped.tolist() == [12] * 5
    with pytest.raises(ValueError, match="alive must have shape"):
        simulate_gossip(
            problem, topology, scheme, 4, StepSchedule(1.0), np.random.default_rng(0), alive=alive
        )
    with pytest.raises(InvalidInput, match="initial"):
        simulate_gossip(
            problem, topology, scheme, 5, StepSchedule(1.0), np.random.default_rng(0),
            initial=np.full((12, problem.dim), np.nan),
        )  # fmt: skip
    other = build_topology("ring", 6, np.random.default_rng(0))
    with pytest.raises(ValueError, match="same number of peers"):
        simulate_gossip(problem, other, scheme, 5, StepSchedule(1.0), np.random.default_rng(0))


def test_a_diverging_run_reports_inf_without_warnings() -> None:
    data, topology, scheme, problem = _setup("ring", "goco", 0.5)
    step = StepSchedule(peer_step_size(1e6 / mean_smoothness(data), 12, data.n_rows))
    run = simulate_gossip(problem, topology, scheme, 400, step, np.random.default_rng(0))
    assert np.isinf(run.gap[-1]) and run.rounds_to(1e-3) is None


def test_wall_clock_model() -> None:
    data, topology, goco, problem = _setup("ring", "goco", 0.5)
    alive = np.ones((3, 12), dtype=bool)
    alive[1, 4] = False
    time = TimeModel(unit_seconds=2.0, slow_factor=5.0, gossip_seconds=0.5)
    step = StepSchedule(0.0)
    rng = np.random.default_rng(0)
    run = simulate_gossip(problem, topology, goco, 3, step, rng, alive=alive, time=time)
    np.testing.assert_allclose(run.wall_seconds, [0.0, 4.5, 9.0, 13.5])  # 2 partitions each
    wait = gossip_scheme("gossip-wait", 12, 0.5)
    problem1 = least_squares_peers(data, wait.code, non_iid=True)
    run = simulate_gossip(problem1, topology, wait, 3, step, rng, alive=alive, time=time)
    # round 1: peer 4 computes 5 x 2 s and ends at 2.5 + 10 + 0.5 = 13; round 2: peers 3, 4
    # and 5 start when 4 is done and end at 13 + 2 + 0.5 = 15.5
    np.testing.assert_allclose(run.wall_seconds, [0.0, 2.5, 13.0, 15.5])
    with pytest.raises(ValueError, match="slow_factor"):
        TimeModel(slow_factor=0.5)


def test_rounds_to_a_target_needs_the_gap_to_stay_below_it() -> None:
    gap = np.array([1.0, 0.05, 0.2, 0.05, 0.01])
    run = GossipRun(
        "goco", "ring", 0.5, 2, StepSchedule(0.1), gap, np.zeros(5),
        np.arange(5) * 2.0, np.zeros(4, dtype=np.int64), np.zeros((2, 2)),
    )  # fmt: skip
    assert run.rounds_to(0.1) == 3 and run.wall_to(0.1) == 6.0
    assert run.rounds_to(0.001) is None and run.wall_to(0.001) is None
    assert run.rounds_to(2.0) == 0


def test_goco_beats_uncoded_gossip_after_the_same_rounds() -> None:
    # the benchmark target on a short budget: ring and torus, 12 peers, non-iid, p >= 0.3
    rows = goco_comparison(
        np.random.default_rng(0),
        probabilities=(0.3, 0.5, 0.7),
        schemes=("goco", "gossip"),
        rounds=300,
        repeats=3,
        learning_rates=(0.1, 0.2, 0.4),
    )
    assert len(rows) == 2 * 3 * 2
    table = {(r.graph.split(":")[0], r.p, r.scheme): r for r in rows}
    for graph in ("ring", "torus"):
        for p in (0.3, 0.5, 0.7):
            goco, gossip = table[graph, p, "goco"], table[graph, p, "gossip"]
            assert np.isfinite(goco.gap) and np.isfinite(gossip.gap)
            assert goco.gap <= gossip.gap, (graph, p, goco.gap, gossip.gap)
            assert goco.replication == 2 and gossip.replication == 1


def test_comparison_rows_and_figure(tmp_path: Path) -> None:
    rows = goco_comparison(
        np.random.default_rng(1),
        graphs=("torus",),
        probabilities=(0.5,),
        rounds=60,
        repeats=2,
        learning_rates=(0.2,),
        target_gap=0.05,
    )
    assert [r.scheme for r in rows] == ["goco", "gossip", "gossip-wait"]
    for row in rows:
        assert row.rounds == 60 and row.lr == 0.2 and row.p == 0.5
        assert np.isfinite(row.gap) and row.gap_stderr >= 0
        assert row.rounds_to_target is not None and row.wall_to_target is not None
    wait = rows[2]
    assert wait.wall_to_target > rows[0].wall_to_target  # waiting for stragglers costs time
    runs = gossip_curves(np.random.default_rng(2), n_peers=64, rounds=30, rows_per_peer=5)
    assert set(runs) == {"goco", "gossip", "gossip-wait"}
    path = plot_gossip_runs(runs, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="at least one run"):
        plot_gossip_runs({}, tmp_path / "none.png")
