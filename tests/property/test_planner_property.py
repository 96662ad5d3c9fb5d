"""Property tests of the planner: every plan it or the baselines produce is exact and its
expected time is what the timing model says; sampled round times respect the plan's rule."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecode.errors import Infeasible
from edgecode.planning.baselines import flat_plan, ignore_plan, uncoded_plan, uniform_plan
from edgecode.planning.optimize import optimize
from edgecode.planning.plans import check_plan
from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec
from edgecode.planning.timing import expected_round_time, round_structure, sample_round_times

_worker = st.tuples(
    st.floats(0.0, 1.0),  # shift
    st.floats(0.5, 50.0),  # rate
    st.floats(0.0, 0.05),  # link
    st.sampled_from(["shifted_exponential", "bernoulli"]),
    st.floats(0.0, 0.5),  # p_straggle
    st.floats(1.0, 8.0),  # slow factor
)


@st.composite
def clusters(draw: st.DrawFn) -> ClusterSpec:
    n = draw(st.integers(1, 3))
    edges = []
    for i in range(n):
        rows = draw(st.lists(_worker, min_size=1, max_size=4))
        workers = tuple(
            WorkerSpec(
                f"e{i}w{j}", shift, rate, link, model=model, p_straggle=p, slow_factor=factor
            )
            for j, (shift, rate, link, model, p, factor) in enumerate(rows)
        )
        edges.append(EdgeSpec(f"e{i}", workers, draw(st.floats(0.0, 0.05))))
    partitions = draw(st.sampled_from([None, 1, 5, 12, 24]))
    return ClusterSpec(tuple(edges), partitions=partitions)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=clusters())
def test_optimized_plans_are_exact_and_timed(spec: ClusterSpec) -> None:
    plan = optimize(spec)
    check_plan(plan, spec)
    if spec.partitions is not None:
        assert plan.partitions == spec.partitions
    assert plan.expected_round_seconds is not None
    assert plan.expected_round_seconds == expected_round_time(spec, plan)
    # the hierarchical structure contains "uncoded" (s = 0, every node): never worse than it
    # when the partitions can be split evenly enough for the rule to reproduce it
    if spec.partitions is None:
        uncoded = uncoded_plan(spec).expected_round_seconds
        assert uncoded is not None
        assert plan.expected_round_seconds <= uncoded * (1 + 1e-9)


@settings(max_examples=25, deadline=None)
@given(spec=clusters(), data=st.data())
def test_baselines_are_valid(spec: ClusterSpec, data: st.DataObject) -> None:
    s = data.draw(st.integers(0, spec.n_workers - 1))
    for plan in (uncoded_plan(spec), flat_plan(spec, s), ignore_plan(spec, s)):
        check_plan(plan, spec)
    sizes = [len(e.workers) for e in spec.edges]
    s_edge = data.draw(st.integers(0, len(sizes) - 1))
    s_worker = data.draw(st.integers(0, max(sizes) - 1))
    try:
        plan = uniform_plan(spec, s_edge, s_worker)
    except Infeasible:
        assert s_worker >= min(sizes) or max(sizes) * (s_edge + 1) > sum(sizes)
        return
    check_plan(plan, spec)
    loads = {w.partitions for e in plan.edges for w in e.workers}
    assert len(loads) == 1
    assert loads.pop() * sum(sizes) == plan.partitions * (s_edge + 1) * (s_worker + 1)


@settings(max_examples=20, deadline=None)
@given(spec=clusters(), seed=st.integers(0, 2**32 - 1))
def test_round_times_never_beat_the_fastest_possible_arrivals(spec: ClusterSpec, seed: int) -> None:
    plan = optimize(spec, refine=False)
    structure = round_structure(spec, plan)
    times = sample_round_times(spec, plan, 200, np.random.default_rng(seed))
    earliest = structure.worker_links + structure.fractions * structure.shifts
    assert np.all(times >= earliest.min() - 1e-12)
    assert np.all(np.isfinite(times))
