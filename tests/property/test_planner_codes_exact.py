"""Exactness of the default path (issue 19): a code built from an ``optimize()`` plan decodes the
exact gradient sum from EVERY straggler pattern the plan claims to tolerate.

The plan is turned into a code the way the master does it (``master.logic._code_from_plan``:
``codes.hierarchical_from_counts`` with the plan's K, s_edge, per-edge coverage and s_worker and
per-worker loads, edges and workers in spec order). A pattern is a set of workers that answered;
the plan tolerates it when at least ``n - s_edge`` of its ``n`` taking-part edges each have at
least ``m_i - s_worker_i`` of their ``m_i`` taking-part workers in it. Every such pattern of these
small clusters (at most 8 workers: 256 sets) is decoded layer by layer, as edges and master do.
"""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecode.codes import HierarchicalCode, hierarchical_from_counts
from edgecode.planning.optimize import optimize
from edgecode.planning.plans import check_plan
from edgecode.planning.spec import ClusterSpec, EdgeSpec, Plan, WorkerSpec

_worker = st.tuples(
    st.floats(0.0, 0.5),  # shift
    st.floats(0.5, 20.0),  # rate: small rates make the random part dominate
    st.floats(0.0, 0.02),  # link
    st.sampled_from(["shifted_exponential", "bernoulli"]),
    st.floats(0.0, 0.4),  # p_straggle
    st.floats(1.0, 10.0),  # slow factor
)


@st.composite
def clusters(draw: st.DrawFn) -> ClusterSpec:
    sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3).filter(lambda s: sum(s) <= 8))
    edges = []
    for i, size in enumerate(sizes):
        rows = draw(st.lists(_worker, min_size=size, max_size=size))
        workers = tuple(
            WorkerSpec(f"e{i}w{j}", shift, rate, link, model=model, p_straggle=p, slow_factor=f)
            for j, (shift, rate, link, model, p, f) in enumerate(rows)
        )
        edges.append(EdgeSpec(f"e{i}", workers, draw(st.floats(0.0, 0.02))))
    return ClusterSpec(tuple(edges), partitions=draw(st.sampled_from([None, 6, 12, 24])))


def code_from_plan(plan: Plan, spec: ClusterSpec) -> HierarchicalCode:
    """As ``master.logic._code_from_plan`` does, with the spec as the topology."""
    by_name = {e.name: e for e in plan.edges}
    coverage, s_workers, loads = [], [], []
    for edge in spec.edges:
        planned = by_name[edge.name]
        held = {w.name: w.partitions for w in planned.workers}
        coverage.append(planned.partitions)
        s_workers.append(planned.s_worker)
        loads.append([int(held.get(w.name, 0)) for w in edge.workers])
    return hierarchical_from_counts(plan.partitions, plan.s_edge, coverage, s_workers, loads)


def tolerated(plan: Plan, alive: set[str]) -> bool:
    taking = [e for e in plan.edges if e.selected]
    good = sum(
        sum(w.name in alive for w in e.workers if w.selected)
        >= sum(w.selected for w in e.workers) - e.s_worker
        for e in taking
    )
    return good >= len(taking) - plan.s_edge


def decode_errors(plan: Plan, spec: ClusterSpec, seed: int) -> tuple[np.ndarray, int]:
    """Relative error of the decoded sum for every tolerated pattern, and their count."""
    code = code_from_plan(plan, spec)
    names = [w.name for e in spec.edges for w in e.workers]
    gradients = np.random.default_rng(seed).standard_normal((plan.partitions, 3))
    messages = code.B @ gradients
    true = gradients.sum(axis=0)
    offsets = code.worker_offsets
    errors = []
    for size in range(len(names) + 1):
        for alive in itertools.combinations(range(len(names)), size):
            if not tolerated(plan, {names[w] for w in alive}):
                continue
            edge_results = {}
            for edge in code.active_edges:
                start, count = offsets[edge], code.workers_per_edge[edge]
                local = [w - start for w in alive if start <= w < start + count]
                inner = code.inner_codes[edge]
                assert inner is not None
                taking = code.active_workers[edge]
                if sum(w in local for w in taking) < len(taking) - code.s_workers[edge]:
                    continue  # this edge straggles; the master does without it
                vector = code.edge_decode_vector(edge, local)
                edge_results[edge] = vector @ messages[start : start + count]
            master = code.master_decode_vector(edge_results)
            decoded = sum(master[e] * z for e, z in edge_results.items())
            errors.append(float(np.linalg.norm(decoded - true) / np.linalg.norm(true)))
    return np.array(errors), len(errors)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=clusters(), seed=st.integers(0, 2**32 - 1))
def test_every_tolerated_pattern_decodes_exactly(spec: ClusterSpec, seed: int) -> None:
    plan = optimize(spec)
    check_plan(plan, spec)
    errors, count = decode_errors(plan, spec, seed)
    assert count >= 1  # at least everyone alive
    assert np.all(np.isfinite(errors)), errors
    assert np.all(errors <= 1e-9), errors.max()


def test_the_property_exercises_redundancy() -> None:
    """Bimodal clusters where the planner tolerates stragglers: many patterns are checked."""
    rng = np.random.default_rng(7)
    checked = []
    for _ in range(4):
        edges = tuple(
            EdgeSpec(
                f"e{i}",
                tuple(
                    WorkerSpec(
                        f"e{i}w{j}",
                        float(rng.uniform(0.05, 0.2)),
                        float(rng.uniform(5, 20)),
                        model="bernoulli",
                        p_straggle=0.3,
                        slow_factor=8.0,
                    )
                    for j in range(3)
                ),
                0.005,
            )
            for i in range(2)
        )
        spec = ClusterSpec(edges, partitions=12)
        plan = optimize(spec)
        assert plan.s_edge > 0 or any(e.s_worker > 0 for e in plan.edges)
        errors, count = decode_errors(plan, spec, seed=int(rng.integers(2**31)))
        assert np.all(np.isfinite(errors)) and np.all(errors <= 1e-9)
        checked.append(count)
    assert min(checked) > 1
