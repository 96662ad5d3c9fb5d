"""The shared-machine floor of the planner (planning/hosts.py) and what it does to plans."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from edgecode.planning import optimize, uniform_plan
from edgecode.planning.baselines import timed
from edgecode.planning.hosts import floors, host_arrays, plan_floor, planned_seconds
from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec
from edgecode.planning.timing import expected_round_time

EDGES = {
    "edge-0": ("worker-0", "worker-1", "worker-2"),
    "edge-1": ("worker-3", "worker-4", "worker-5"),
}
#: the emulated (QEMU arm64) workers of docker-compose.arm64.yml
SLOW = ("worker-2", "worker-5")


def mixed_cluster(hosted: bool, cores: float = 2.0) -> ClusterSpec:
    """The compose arm64 cluster as the coordinator fits it: four native workers whose compute
    is small beside their RPC overhead, two emulated ones ~100x slower, all on one machine."""

    def worker(name: str) -> WorkerSpec:
        shift, link = (1.0, 0.1) if name in SLOW else (0.01, 0.04)
        extra = dict(host="box", host_cpus=cores, cpu_seconds=0.8 * shift) if hosted else {}
        return WorkerSpec(name, shift, 1 / (0.3 * shift), link_seconds=link, **extra)  # type: ignore[arg-type]

    return ClusterSpec(
        tuple(
            EdgeSpec(edge, tuple(worker(w) for w in workers), link_seconds=0.005)
            for edge, workers in EDGES.items()
        )
    )


def held(plan) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {w.name: w.partitions for e in plan.edges for w in e.workers}


def uniform_plans(spec: ClusterSpec) -> list:  # type: ignore[type-arg]
    plans = []
    for s_edge, s_worker in itertools.product(range(2), range(3)):
        plans.append(timed(spec, uniform_plan(spec, s_edge, s_worker)))
    return plans


def test_floor_is_the_busiest_hosts_cpu_work_per_round_over_its_cores() -> None:
    rng = np.random.default_rng(5)
    hosts_of = [["a", "a", "b"], ["b", "", "a"]]
    cpus = {"a": 2.0, "b": 3.0}
    cpu = rng.uniform(0.1, 2.0, size=(2, 3))
    spec = ClusterSpec(
        tuple(
            EdgeSpec(
                f"e{i}",
                tuple(
                    WorkerSpec(
                        f"w{i}{j}",
                        1.0,
                        1.0,
                        host=hosts_of[i][j],
                        host_cpus=cpus.get(hosts_of[i][j], 0.0),
                        cpu_seconds=float(cpu[i, j]),
                    )
                    for j in range(3)
                ),
            )
            for i in range(2)
        )
    )
    arrays = host_arrays(spec)
    assert arrays is not None
    loads = rng.integers(0, 9, size=(40, 2, 3))
    K = rng.integers(8, 20, size=40)
    got = floors(arrays, loads, K)
    expected = np.array(
        [
            max(
                sum(
                    cpu[i, j] * loads[b, i, j] / K[b]
                    for i in range(2)
                    for j in range(3)
                    if hosts_of[i][j] == h
                )
                / cpus[h]
                for h in cpus
            )
            for b in range(40)
        ]
    )
    errors = np.abs(got - expected)
    assert np.all(np.isfinite(got)) and np.all(errors <= 1e-12 * np.maximum(expected, 1.0)), errors
    # the worker with no host ("") adds nothing: raising its CPU cost changes no floor
    louder = host_arrays(
        dataclasses.replace(
            spec,
            edges=(
                spec.edges[0],
                dataclasses.replace(
                    spec.edges[1],
                    workers=(
                        spec.edges[1].workers[0],
                        dataclasses.replace(spec.edges[1].workers[1], cpu_seconds=1e3),
                        spec.edges[1].workers[2],
                    ),
                ),
            ),
        )
    )
    assert np.array_equal(floors(louder, loads, K), got)


def test_no_floor_without_a_shared_host() -> None:
    assert host_arrays(mixed_cluster(hosted=False)) is None
    # one worker per machine: the independent model already sees it
    spec = mixed_cluster(hosted=True)
    alone = ClusterSpec(
        tuple(
            dataclasses.replace(
                e, workers=tuple(dataclasses.replace(w, host=w.name) for w in e.workers)
            )
            for e in spec.edges
        )
    )
    assert host_arrays(alone) is None
    assert np.array_equal(floors(None, np.ones((3, 2, 3), np.int64), 4), np.zeros(3))
    assert plan_floor(alone, [[1, 1, 1], [1, 1, 1]], 6) == 0.0


def test_the_shared_machine_gives_the_slow_workers_less_and_beats_every_uniform_plan() -> None:
    independent = optimize(mixed_cluster(hosted=False))
    spec = mixed_cluster(hosted=True)
    plan = optimize(spec)
    partitions = held(plan)
    # the independent-worker model loads every worker alike on this cluster (why issue 18 was
    # open); with the shared machine the emulated workers hold less than every native one
    assert len(set(held(independent).values())) == 1, held(independent)
    assert max(partitions[w] for w in SLOW) < min(
        v for k, v in partitions.items() if k not in SLOW
    ), partitions
    planned = plan.expected_round_seconds
    assert planned is not None and np.isfinite(planned)
    exact = max(
        expected_round_time(spec, plan),
        plan_floor(spec, [[w.partitions for w in e.workers] for e in plan.edges], plan.partitions),
    )
    assert abs(planned - exact) <= 1e-9 * exact, (planned, exact)
    uniform = np.array([p.expected_round_seconds for p in uniform_plans(spec)])
    assert np.all(np.isfinite(uniform)) and np.all(planned < uniform), (planned, uniform)


def test_a_floor_that_never_binds_changes_no_plan() -> None:
    plain = optimize(mixed_cluster(hosted=False))
    roomy = optimize(mixed_cluster(hosted=True, cores=1e6))
    assert held(roomy) == held(plain) and roomy.s_edge == plain.s_edge
    assert roomy.partitions == plain.partitions
    assert roomy.expected_round_seconds == pytest.approx(plain.expected_round_seconds, rel=1e-12)


def test_planned_seconds_matches_workers_by_name() -> None:
    spec = mixed_cluster(hosted=True)
    plan = uniform_plan(spec, 1, 2)  # everyone holds everything (K = 1)
    reordered = dataclasses.replace(plan, edges=tuple(reversed(plan.edges)))
    work = sum(w.cpu_seconds for e in spec.edges for w in e.workers)
    assert planned_seconds(spec, reordered, 0.0) == pytest.approx(work / 2.0, rel=1e-12)
    assert planned_seconds(spec, reordered, 99.0) == 99.0
