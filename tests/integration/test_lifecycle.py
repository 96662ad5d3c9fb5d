"""Nothing is kept forever (issue 10, "Lifecycle"): a finished job's data leaves its workers
and edges, so memory stays flat over many jobs; idle jobs expire; registrations expire.

Real processes for the memory claim (it is about the processes); pure logic with a fake clock
for the expiry rules.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgecode.aggregator.logic import DECODE, AggregatorLogic
from edgecode.cluster.local import LocalCluster, default_setup
from edgecode.coordinator.logic import CoordinatorLogic
from edgecode.master.client import FINAL_STATES, MasterClient
from edgecode.records import JobConfig, PlacementHeader
from edgecode.worker.logic import WorkerLogic

JOBS = 30
WARM_UP = 5
#: growth of a worker's resident memory from job WARM_UP to job JOBS (issue 10)
MAX_GROWTH_MB = 5.0


@pytest.mark.timeout(600)
def test_worker_memory_is_flat_over_thirty_jobs() -> None:
    setup = default_setup(edges=2, workers_per_edge=2, straggler="none", compute_seconds=0.0)
    with LocalCluster(setup) as cluster:
        client = MasterClient(cluster.master_address)
        try:
            after_warm_up: dict[str, float] = {}
            for i in range(JOBS):
                config = JobConfig(
                    scheme=("hgc", "flat", "uncoded")[i % 3],
                    dataset="digits",  # the biggest bundled set: ~1 MB placed per job
                    rounds=2,
                    s_edge=0,
                    s_worker=1,
                    checkpoint_every=0,
                    job_id=f"life-{i}",
                )
                status = client.wait(client.submit(config), timeout=120)
                assert status.state in FINAL_STATES and status.message == "2 rounds", status
                if i + 1 == WARM_UP:
                    after_warm_up = cluster.rss_mb("worker")
            # The master's DropJob of the last job is sent after its final status: let it land.
            end = cluster.rss_mb("worker")
        finally:
            client.close()
    growth = np.array([end[name] - after_warm_up[name] for name in after_warm_up])
    assert growth.size == len(setup.workers)
    assert np.all(np.isfinite(growth)) and np.all(growth < MAX_GROWTH_MB), dict(
        zip(after_warm_up, growth, strict=True)
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _header(job_id: str) -> PlacementHeader:
    return PlacementHeader(job_id, "least_squares", 2, 1, (0,), (1.0,), 0.0, 1, 1, rows=(3,))


def test_idle_jobs_expire_on_workers_and_edges() -> None:
    clock = Clock()
    worker = WorkerLogic("w", clock=clock)
    builder = worker.begin_placement(_header("old"))
    builder.add(0, np.ones((3, 2)), np.ones(3))
    builder.finish()
    clock.now = 10.0
    builder = worker.begin_placement(_header("young"))
    builder.add(0, np.ones((3, 2)), np.ones(3))
    builder.finish()
    assert worker.expire(ttl_seconds=5.0) == ["old"]
    assert set(worker.jobs()) == {"young"}

    class Client:
        closed = False

        def close(self) -> None:
            Client.closed = True

    edge = AggregatorLogic("e", lambda names, addresses: Client(), clock=clock)  # type: ignore[arg-type,return-value]
    edge.configure("job", ["w"], ["w:1"], DECODE, 1.0, np.eye(1), np.ones(1), 0, 1)
    clock.now = 20.0
    assert edge.expire(ttl_seconds=30.0) == []
    clock.now = 60.0
    assert edge.expire(ttl_seconds=30.0) == ["job"] and Client.closed


def test_registrations_expire_without_heartbeats() -> None:
    clock = Clock()
    coordinator = CoordinatorLogic(heartbeat_seconds=1.0, dead_after_seconds=5.0, clock=clock)
    coordinator.register("w0", "worker", "127.0.0.1:1", edge="e0")
    coordinator.register("w1", "worker", "127.0.0.1:2", edge="e0")
    clock.now = 30.0
    assert coordinator.heartbeat("w1")
    members, dead = coordinator.members(include_dead=True)
    assert {m.name for m in members} == {"w0", "w1"} and dead == ["w0"]  # dead, still known
    clock.now = 100.0  # w0 silent for 100 s > 12 x 5 s: forgotten; w1 silent 70 s: forgotten
    assert coordinator.heartbeat("w1") is False
    members, dead = coordinator.members(include_dead=True)
    assert members == [] and dead == []
