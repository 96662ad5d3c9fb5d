"""The discrete-event simulator: hand-checked rounds, an independent order-statistic reference,
straggler-model state across rounds, agreement with the planner's exact expectation, figures."""

from __future__ import annotations

import numpy as np
import pytest

from edgecode.planning.spec import (
    ClusterSpec,
    EdgePlan,
    EdgeSpec,
    Plan,
    WorkerPlan,
    WorkerSpec,
)
from edgecode.sim import SimResult, compile_plan, simulate
from edgecode.sim.engine import FloatArray, SamplerFactory, Topology, play_round


class FixedSampler:
    """Replays given whole-data-set runtimes, one row per round, scaled by the data fraction."""

    def __init__(self, rows: list[list[float]], fractions: FloatArray) -> None:
        self.rows = [np.asarray(r, dtype=np.float64) for r in rows]
        self.fractions = fractions
        self.calls = 0

    def sample(self, rng: np.random.Generator) -> FloatArray:
        row = self.rows[self.calls % len(self.rows)]
        self.calls += 1
        return self.fractions * row


class ExponentialSampler:
    """shift + Exp(rate) per worker; the test's own draw, independent of stragglers.py."""

    def __init__(self, workers: tuple[WorkerSpec, ...], fractions: FloatArray) -> None:
        self.shift = np.array([w.shift for w in workers])
        self.rate = np.array([w.rate for w in workers])
        self.fractions = fractions

    def sample(self, rng: np.random.Generator) -> FloatArray:
        return self.fractions * (self.shift + rng.exponential(1.0 / self.rate))


def _spec(edges: list[list[tuple[float, float, float]]], edge_links: list[float]) -> ClusterSpec:
    return ClusterSpec(
        edges=tuple(
            EdgeSpec(
                f"e{i}",
                tuple(
                    WorkerSpec(f"w{i}{j}", shift, rate, link)
                    for j, (shift, rate, link) in enumerate(workers)
                ),
                link_seconds=edge_links[i],
            )
            for i, workers in enumerate(edges)
        )
    )


def _plan(
    spec: ClusterSpec,
    scheme: str,
    partitions: int,
    s_edge: int,
    s_workers: list[int],
    loads: list[list[int]],
) -> Plan:
    edges = []
    for edge, s_worker, edge_loads in zip(spec.edges, s_workers, loads, strict=True):
        workers = tuple(
            WorkerPlan(w.name, load > 0, load)
            for w, load in zip(edge.workers, edge_loads, strict=True)
        )
        covered = sum(edge_loads) // (s_worker + 1)
        edges.append(EdgePlan(edge.name, s_worker, edge.link_seconds, covered, workers))
    return Plan(scheme, partitions, s_edge, tuple(edges))


def _fixed(rows: list[list[float]]) -> SamplerFactory:
    return lambda workers, fractions: FixedSampler(rows, fractions)


# --- hand-checked rounds ---------------------------------------------------------------------------


def test_hierarchical_round_by_hand() -> None:
    # two edges of three workers, each worker holds 1 of K=3 partitions (s_w=1 inside each edge
    # would need 2 copies; the engine does not check exactness, only wait counts)
    spec = _spec([[(0, 1, 0.1)] * 3, [(0, 1, 0.2)] * 3], edge_links=[1.0, 0.5])
    plan = _plan(spec, "hgc", 3, 1, [1, 1], [[1, 1, 1], [1, 1, 1]])
    # fraction 1/3: compute = runtime / 3
    runtimes = [[3.0, 6.0, 30.0, 9.0, 3.0, 12.0]]  # one round, edge 0 then edge 1
    result = simulate(spec, plan, 1, np.random.default_rng(0), sampler_factory=_fixed(runtimes))
    # edge 0: arrivals 1.1, 2.1, 10.1 -> done at the 2nd: 2.1, master gets it at 3.1
    # edge 1: arrivals 3.2, 1.2, 4.2 -> done at 3.2, master gets it at 3.7
    # s_edge = 1 -> master waits for the first edge: 3.1
    assert result.round_seconds[0] == pytest.approx(3.1)
    # edge 0 stopped waiting at 2.1 (worker 2 late); edge 1 was cut off by the master at 3.1
    # before its second arrival (3.2): workers 0 and 2 of edge 1 straggle too
    assert result.stragglers[0] == 3


def test_uncoded_waits_for_everyone_and_nobody_straggles() -> None:
    spec = _spec([[(0, 1, 0.1)] * 2, [(0, 1, 0.0)] * 2], edge_links=[1.0, 0.5])
    # uncoded ignores any s in the plan
    plan = _plan(spec, "uncoded", 4, 1, [1, 1], [[1, 1], [1, 1]])
    runtimes = [[4.0, 8.0, 40.0, 4.0]]
    result = simulate(spec, plan, 2, np.random.default_rng(0), sampler_factory=_fixed(runtimes))
    # slowest path: edge 1 worker 0: 40/4 + 0 + 0.5 = 10.5
    np.testing.assert_allclose(result.round_seconds, [10.5, 10.5])
    np.testing.assert_array_equal(result.stragglers, [0, 0])


@pytest.mark.parametrize("scheme", ["flat", "ignore"])
def test_flat_waits_for_the_n_minus_s_th_relayed_message(scheme: str) -> None:
    spec = _spec([[(0, 1, 0.1)] * 2, [(0, 1, 0.0)] * 2], edge_links=[1.0, 0.5])
    plan = _plan(spec, scheme, 4, 1, [0, 0], [[2, 2], [2, 2]])
    runtimes = [[4.0, 8.0, 40.0, 4.0]]  # fraction 1/2
    result = simulate(spec, plan, 1, np.random.default_rng(0), sampler_factory=_fixed(runtimes))
    # master arrivals: 2+0.1+1=3.1, 4+0.1+1=5.1, 20+0.5=20.5, 2+0.5=2.5 -> 3rd fastest: 5.1
    assert result.round_seconds[0] == pytest.approx(5.1)
    assert result.stragglers[0] == 1


def test_unequal_loads_scale_compute_time() -> None:
    spec = _spec([[(0, 1, 0.0), (0, 1, 0.0)]], edge_links=[0.0])
    plan = _plan(spec, "uncoded", 4, 0, [0], [[3, 1]])
    result = simulate(spec, plan, 1, np.random.default_rng(0), sampler_factory=_fixed([[1.0, 2.0]]))
    assert result.round_seconds[0] == pytest.approx(0.75)  # max(3/4 * 1, 1/4 * 2)


def test_unselected_workers_and_edges_do_not_take_part() -> None:
    spec = _spec([[(0, 1, 0.0), (0, 1, 0.0)], [(0, 1, 0.0)]], edge_links=[0.0, 100.0])
    plan = _plan(spec, "hgc", 1, 0, [0, 0], [[1, 0], [0]])
    top = compile_plan(spec, plan)
    assert [w.name for w in top.workers] == ["w00"]
    assert top.edge_names == ("e0",)
    result = simulate(spec, plan, 1, np.random.default_rng(0), sampler_factory=_fixed([[2.0]]))
    assert result.round_seconds[0] == pytest.approx(2.0)


# --- an independent reference: order statistics with numpy -----------------------------------------


def _reference_round_times(top: Topology, compute: FloatArray) -> FloatArray:
    """Round times for a (rounds, workers) matrix of compute times, by sorting, not by events."""
    arrival = compute + top.worker_link  # at the edge
    if not top.hierarchical:
        at_master = arrival + top.edge_link[top.worker_edge]
        return np.sort(at_master, axis=1)[:, top.master_need - 1]
    edge_times = []
    for e in range(len(top.edge_names)):
        mine = np.sort(arrival[:, top.worker_edge == e], axis=1)
        edge_times.append(mine[:, top.edge_need[e] - 1] + top.edge_link[e])
    return np.sort(np.stack(edge_times, axis=1), axis=1)[:, top.master_need - 1]


@pytest.mark.parametrize(
    ("scheme", "s_edge", "s_workers"),
    [
        ("hgc", 1, [1, 2, 0]),
        ("hgc", 0, [2, 1, 1]),
        ("uncoded", 0, [0, 0, 0]),
        ("flat", 4, [0, 0, 0]),
        ("ignore", 2, [0, 0, 0]),
    ],
)
def test_events_agree_with_order_statistics(scheme: str, s_edge: int, s_workers: list[int]) -> None:
    rng = np.random.default_rng(7)
    sizes = [3, 4, 2]
    spec = _spec(
        [
            [(rng.uniform(0, 1), rng.uniform(0.5, 5), rng.uniform(0, 0.2)) for _ in range(m)]
            for m in sizes
        ],
        edge_links=list(rng.uniform(0, 0.5, 3)),
    )
    loads = [list(rng.integers(1, 5, m)) for m in sizes]
    plan = _plan(spec, scheme, 10, s_edge, s_workers, [[int(x) for x in row] for row in loads])
    top = compile_plan(spec, plan)
    rounds = 400
    result = simulate(
        spec, plan, rounds, np.random.default_rng(1), sampler_factory=ExponentialSampler
    )
    draws = np.random.default_rng(1)
    sampler = ExponentialSampler(top.workers, top.fraction)
    compute = np.stack([sampler.sample(draws) for _ in range(rounds)])
    np.testing.assert_allclose(
        result.round_seconds, _reference_round_times(top, compute), rtol=1e-12, atol=1e-12
    )
    n = len(top.workers)
    if scheme in ("flat", "ignore"):
        assert (result.stragglers == n - top.master_need).all()
    else:
        tolerated = int(n - top.edge_need.sum())
        assert (result.stragglers >= tolerated).all()
        assert (result.stragglers <= n).all()


# --- argument checking ------------------------------------------------------------------------------


def test_bad_plans_are_rejected_with_the_reason() -> None:
    spec = _spec([[(0, 1, 0.0)] * 2], edge_links=[0.0])
    with pytest.raises(ValueError, match="scheme"):
        compile_plan(spec, _plan(spec, "magic", 2, 0, [0], [[1, 1]]))
    with pytest.raises(ValueError, match="s_worker"):
        compile_plan(spec, _plan(spec, "hgc", 2, 0, [2], [[1, 1]]))
    with pytest.raises(ValueError, match="tolerance"):
        compile_plan(spec, _plan(spec, "hgc", 2, 1, [0], [[1, 1]]))
    with pytest.raises(ValueError, match="no worker"):
        compile_plan(spec, _plan(spec, "hgc", 2, 0, [0], [[0, 0]]))
    other = _spec([[(0, 1, 0.0)] * 2, [(0, 1, 0.0)]], edge_links=[0.0, 0.0])
    with pytest.raises(ValueError, match="not in the spec"):
        compile_plan(spec, _plan(other, "hgc", 2, 0, [0, 0], [[1, 1], [1]]))
    with pytest.raises(ValueError, match="rounds"):
        simulate(spec, _plan(spec, "hgc", 2, 0, [0], [[1, 1]]), 0, np.random.default_rng(0))


def test_result_statistics() -> None:
    result = SimResult("hgc", np.array([1.0, 2.0, 3.0]), np.array([0, 1, 0]), 2.1)
    assert result.rounds == 3
    assert result.mean_round_seconds == pytest.approx(2.0)
    assert result.standard_error == pytest.approx(1.0 / np.sqrt(3))


def test_play_round_is_reusable_at_any_start_time() -> None:
    spec = _spec([[(0, 1, 0.1)] * 3], edge_links=[0.3])
    top = compile_plan(spec, _plan(spec, "hgc", 3, 0, [1], [[1, 1, 1]]))
    compute = np.array([0.5, 0.1, 2.0])
    for start in (0.0, 1e3):
        duration, late = play_round(top, compute, start)
        assert duration == pytest.approx(0.5 + 0.1 + 0.3)
        assert late == 1


# --- the spec's straggler models ---------------------------------------------------------------------


def _one_edge(workers: list[WorkerSpec]) -> tuple[ClusterSpec, Plan]:
    spec = ClusterSpec(edges=(EdgeSpec("e", tuple(workers)),))
    plan = _plan(spec, "uncoded", len(workers), 0, [0], [[1] * len(workers)])
    return spec, plan


def test_markov_class_persists_across_rounds() -> None:
    # q_as = q_sa = 1: the class flips after every round; slow rounds always straggle (x10),
    # active rounds never; the rate is huge so the exponential part vanishes
    worker = WorkerSpec(
        "m",
        1.0,
        1e12,
        model="markov",
        p_slow=1.0,
        p_active=0.0,
        q_as=1.0,
        q_sa=1.0,
        slow_factor=10.0,
        slow=True,
    )
    spec, plan = _one_edge([worker])
    result = simulate(spec, plan, 6, np.random.default_rng(3))
    np.testing.assert_allclose(result.round_seconds, [10, 1, 10, 1, 10, 1], rtol=1e-9)


def test_markov_class_that_never_moves_keeps_straggling() -> None:
    slow = WorkerSpec("m", 1.0, 1e12, model="markov", p_slow=1.0, slow_factor=3.0, slow=True)
    spec, plan = _one_edge([slow])
    result = simulate(spec, plan, 50, np.random.default_rng(3))
    np.testing.assert_allclose(result.round_seconds, 3.0, rtol=1e-9)


def test_markov_runs_are_longer_than_bernoulli_with_the_same_marginal() -> None:
    # stationary P(slow) = 0.02 / (0.02 + 0.08) = 0.2 for both; Markov straggling comes in runs
    markov = WorkerSpec(
        "m",
        1.0,
        1e12,
        model="markov",
        p_slow=1.0,
        p_active=0.0,
        q_as=0.02,
        q_sa=0.08,
        slow_factor=2.0,
    )
    bernoulli = WorkerSpec("m", 1.0, 1e12, model="bernoulli", p_straggle=0.2, slow_factor=2.0)
    runs = {}
    for worker in (markov, bernoulli):
        spec, plan = _one_edge([worker])
        slow = simulate(spec, plan, 20_000, np.random.default_rng(5)).round_seconds > 1.5
        assert slow.mean() == pytest.approx(0.2, abs=0.03)
        starts = np.count_nonzero(slow[1:] & ~slow[:-1]) + int(slow[0])
        runs[worker.model] = slow.sum() / starts
    assert runs["bernoulli"] == pytest.approx(1.25, rel=0.1)  # geometric with p = 0.8
    assert runs["markov"] == pytest.approx(1 / 0.08, rel=0.2)


def test_shifted_exponential_draws_have_the_model_mean() -> None:
    workers = [
        WorkerSpec("a", 0.5, 4.0),
        WorkerSpec("b", 0.2, 1.0, model="bernoulli", p_straggle=0.3, slow_factor=3.0),
    ]
    spec, plan = _one_edge(workers)
    top = compile_plan(spec, plan)
    from edgecode.sim.engine import spec_sampler

    sampler = spec_sampler(top.workers, top.fraction)
    rng = np.random.default_rng(11)
    draws = np.stack([sampler.sample(rng) for _ in range(40_000)])
    means = draws.mean(axis=0)
    assert means[0] == pytest.approx(0.5 * (0.5 + 0.25), rel=0.02)
    assert means[1] == pytest.approx(0.5 * (0.2 + 1.0) * (0.7 + 0.3 * 3.0), rel=0.02)


def test_trace_replay_through_runtime_sampler() -> None:
    from edgecode.sim.engine import runtime_sampler
    from edgecode.stragglers import TraceRuntime

    spec, plan = _one_edge([WorkerSpec("a", 0.0, 1.0), WorkerSpec("b", 0.0, 1.0)])
    traces = {"a": np.array([2.0, 4.0]), "b": np.array([1.0, 1.0, 6.0])}
    factory = runtime_sampler(lambda worker: TraceRuntime(traces[worker.name]))
    result = simulate(spec, plan, 4, np.random.default_rng(0), sampler_factory=factory)
    # half the data each: max(a, b) / 2 per round
    np.testing.assert_allclose(result.round_seconds, [1.0, 2.0, 3.0, 2.0])


# --- agreement with the planner -------------------------------------------------------------------


def _mixed_cluster() -> tuple[ClusterSpec, Plan]:
    from edgecode.planning.plans import build_plan

    rng = np.random.default_rng(2024)
    sizes = [3, 4, 2]
    edges = []
    for i, m in enumerate(sizes):
        workers = [
            WorkerSpec(
                f"w{i}{j}",
                float(rng.uniform(0.1, 1.0)),
                float(rng.uniform(0.5, 6.0)),
                float(rng.uniform(0.0, 0.05)),
            )
            for j in range(m)
        ]
        edges.append(EdgeSpec(f"e{i}", tuple(workers), float(rng.uniform(0.0, 0.1))))
    # the last worker straggles: Bernoulli in edge 0, Markov (fast mixing) in edge 1
    edges[0] = EdgeSpec(
        "e0",
        (
            *edges[0].workers[:2],
            WorkerSpec("w02", 0.3, 2.0, 0.01, model="bernoulli", p_straggle=0.2, slow_factor=4.0),
        ),
        0.02,
    )
    edges[1] = EdgeSpec(
        "e1",
        (
            *edges[1].workers[:3],
            WorkerSpec(
                "w13",
                0.3,
                2.0,
                0.01,
                model="markov",
                p_slow=0.8,
                p_active=0.05,
                q_as=0.3,
                q_sa=0.5,
                slow_factor=4.0,
            ),
        ),
        0.03,
    )
    spec = ClusterSpec(edges=tuple(edges))
    # K = 6, s_edge = 1: coverages 4 + 4 + 4 = 12; s_worker = 1, 2, 0
    plan = build_plan(spec, "hgc", 6, 1, [1, 2, 0], [4, 4, 4], [[3, 3, 2], [3, 3, 3, 3], [2, 2]])
    return spec, plan


def test_events_agree_with_the_planners_order_statistics() -> None:
    from edgecode.planning.timing import round_structure, round_times

    spec, plan = _mixed_cluster()
    top = compile_plan(spec, plan)
    result = simulate(spec, plan, 300, np.random.default_rng(4), sampler_factory=ExponentialSampler)
    sampler = ExponentialSampler(top.workers, top.fraction)
    draws = np.random.default_rng(4)
    compute = np.stack([sampler.sample(draws) for _ in range(300)])
    expected = round_times(round_structure(spec, plan), compute)
    np.testing.assert_allclose(result.round_seconds, expected, rtol=1e-12)


@pytest.mark.parametrize("scheme", ["hgc", "uncoded", "flat", "ignore"])
def test_simulated_mean_matches_the_exact_expectation(scheme: str) -> None:
    from edgecode.planning.plans import one_layer_plan
    from edgecode.planning.timing import expected_round_time

    spec, plan = _mixed_cluster()
    if scheme == "uncoded":
        plan = one_layer_plan(spec, scheme, 9, 0, [[1] * len(e.workers) for e in spec.edges])
    elif scheme == "ignore":
        plan = one_layer_plan(spec, scheme, 9, 2, [[1] * len(e.workers) for e in spec.edges])
    elif scheme == "flat":  # cyclic repetition, s = 2: every worker holds 3 of 9
        plan = one_layer_plan(spec, scheme, 9, 2, [[3] * len(e.workers) for e in spec.edges])
    exact = expected_round_time(spec, plan)
    result = simulate(spec, plan, 20_000, np.random.default_rng(8))
    # the Markov worker's rounds are correlated: allow a little more than the i.i.d. error bar
    assert abs(result.mean_round_seconds - exact) < 5 * result.standard_error, (
        result.mean_round_seconds,
        exact,
        result.standard_error,
    )
    assert abs(result.mean_round_seconds - exact) / exact < 0.02


# --- the compared schemes and the report sweep ----------------------------------------------------


def _timed(value: float) -> Plan:
    return Plan("flat", 1, 0, (), expected_round_seconds=value)


def test_tolerance_search_finds_the_minimum_of_a_valley() -> None:
    from edgecode.sim.compare import _search_tolerance

    for count, low in ((10, 7), (500, 0), (500, 37), (500, 499), (5000, 1234)):
        calls: list[int] = []

        def build(s: int, low: int = low, count: int = count, calls: list[int] = calls) -> Plan:
            calls.append(s)
            return _timed(1.0 + abs(s - low) / count)

        best = _search_tolerance(build, count)
        assert best is not None and best.expected_round_seconds == pytest.approx(1.0), (count, low)
        if count > 32:
            assert len(calls) < count / 2  # it did not try everything


def test_tolerance_search_skips_infeasible_values() -> None:
    from edgecode.errors import Infeasible
    from edgecode.sim.compare import _search_tolerance

    def build(s: int) -> Plan | None:
        if s % 2:
            raise Infeasible("odd")
        return None if s == 4 else _timed(10.0 - s)

    best = _search_tolerance(build, 7)
    assert best is not None and best.expected_round_seconds == 4.0  # s = 6


def test_describe_and_default_ignored() -> None:
    from edgecode.sim.compare import default_ignored, describe

    spec = _spec([[(0, 1, 0.0)] * 2, [(0, 1, 0.0)] * 2], edge_links=[0.0, 0.0])
    plan = _plan(spec, "hgc", 2, 1, [1, 0], [[2, 2], [2, 0]])
    assert describe(plan) == "K=2 s_edge=1 s_worker=1,0 edges=2/2 workers=3/4"
    flat = _plan(spec, "flat", 4, 1, [0, 0], [[2, 2], [2, 2]])
    assert describe(flat) == "K=4 s=1 workers=4/4"
    assert [default_ignored(n) for n in (1, 2, 10, 14, 15, 1000)] == [0, 1, 1, 1, 2, 100]


def test_compare_schemes_on_an_example() -> None:
    from pathlib import Path

    from edgecode.planning.plans import check_plan
    from edgecode.planning.spec import load_spec
    from edgecode.sim.compare import LABELS, compare_schemes, faster_than_optimized

    spec = load_spec(Path(__file__).parents[2] / "examples" / "homogeneous.toml")
    schemes = compare_schemes(spec)
    assert [s.label for s in schemes] == list(LABELS)
    for scheme in schemes:
        check_plan(scheme.plan, spec)
    by_label = {s.label: s.expected_round_seconds for s in schemes}
    assert by_label["hgc-optimized"] < by_label["uncoded"]
    assert faster_than_optimized(schemes) == []
    ignore = schemes[1].plan
    assert ignore.scheme == "ignore" and ignore.s_edge == 1  # a tenth of 12 workers


def test_cluster_family_is_fixed_hardware_with_bernoulli_stragglers() -> None:
    from edgecode.sim.compare import cluster_family

    a = cluster_family(0.1, 4.0, edges=3, workers_per_edge=2)
    b = cluster_family(0.3, 8.0, edges=3, workers_per_edge=2)
    assert a.n_workers == 6 and len(a.edges) == 3
    for wa, wb in zip(
        (w for e in a.edges for w in e.workers),
        (w for e in b.edges for w in e.workers),
        strict=True,
    ):
        assert (wa.name, wa.shift, wa.rate) == (wb.name, wb.shift, wb.rate)
        assert wa.model == "bernoulli" and (wa.p_straggle, wa.slow_factor) == (0.1, 4.0)


def test_speedup_sweep_runs_small() -> None:
    from functools import partial

    from edgecode.sim.compare import LABELS, cluster_family, speedup_sweep

    ticks: list[int] = []
    family = partial(cluster_family, edges=2, workers_per_edge=2)
    sweep = speedup_sweep(
        [(0.0, 1.0), (0.3, 8.0)], 50, np.random.default_rng(0), family=family, progress=ticks.append
    )
    assert sum(ticks) == 2 * len(LABELS) * 50
    assert [(pt.p_straggle, pt.slowdown) for pt in sweep] == [(0.0, 1.0), (0.3, 8.0)]
    for point in sweep:
        assert point.speedup("uncoded") == pytest.approx(1.0)
        assert point.speedup("uncoded", predicted=True) == pytest.approx(1.0)
        assert point.speedup("hgc-optimized", predicted=True) >= 1.0 - 1e-9
    # stragglers make uncoded rounds longer
    assert sweep[1].expected("uncoded") > sweep[0].expected("uncoded")
    with pytest.raises(ValueError, match="rounds"):
        speedup_sweep([(0.0, 1.0)], 1, np.random.default_rng(0), family=family)


# --- figures ----------------------------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_round_time_figure(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edgecode.sim.figures import plot_round_times

    rng = np.random.default_rng(0)
    results = {
        label: SimResult("hgc", rng.exponential(scale, 300), np.zeros(300, dtype=np.int64), scale)
        for label, scale in (("uncoded", 2.0), ("hgc-optimized", 1.0), ("custom", 1.5))
    }
    results["single"] = SimResult("hgc", np.array([1.0]), np.array([0]), None)
    path = plot_round_times(results, tmp_path / "rounds.png", title="test")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="at least one"):
        plot_round_times({}, tmp_path / "empty.png")


def test_speedup_figure(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edgecode.sim.figures import SpeedupPanel, plot_speedup

    x = np.array([1.0, 2.0, 4.0, 8.0])
    panels = [
        SpeedupPanel("a", "p", x / 10, {"hgc-optimized": x}, {"hgc-optimized": x * 1.01}),
        SpeedupPanel("b", "slowdown", x, {"flat-cyclic": x / 2}, log_x=True),
    ]
    path = plot_speedup(panels, tmp_path / "speedup.png", title="t")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="panel"):
        plot_speedup([], tmp_path / "none.png", title="t")


# --- examples -----------------------------------------------------------------------------------------


def test_examples_load_and_the_generated_one_is_current() -> None:
    import subprocess
    import sys
    from pathlib import Path

    from edgecode.planning.spec import load_spec

    examples = Path(__file__).parents[2] / "examples"
    sizes = {
        "homogeneous": 12,
        "one-slow-edge": 16,
        "raspberry-pi-fleet": 10,
        "thousand-workers": 1000,
    }
    for name, workers in sizes.items():
        assert load_spec(examples / f"{name}.toml").n_workers == workers
    check = subprocess.run(
        [sys.executable, str(examples / "make_thousand_workers.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
