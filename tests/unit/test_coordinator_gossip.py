"""The coordinator's gossip jobs (edgecode.coordinator.gossip and gossip_plan) over in-memory peers:
real PeerNode objects and real threads, no sockets (see gossip_fakes)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from gossip_fakes import Network

from edgecode.coordinator.gossip import GossipJobs
from edgecode.coordinator.gossip_plan import order_peers, plan_gossip_job, remaining_components
from edgecode.errors import AlreadyExists, Infeasible, InvalidInput, RoundFailed, UnknownJob
from edgecode.gossip_records import (
    JOB_FAILED,
    SUCCEEDED,
    GossipJobSpec,
    GossipJobStatus,
    records_as_row,
)
from edgecode.learning.datasets import get_dataset
from edgecode.learning.gossip import ring

DATASET = "synthetic-lsq:n=240,d=4,noise=0.5"
POLL = 0.02
DEAD_AFTER = 0.3


def spec(**changes: Any) -> GossipJobSpec:
    base = GossipJobSpec(
        job_id="job",
        graph="ring",
        scheme="goco",
        replication=2,
        straggle_probability=0.2,
        dataset=DATASET,
        rounds=30,
        learning_rate=0.5,
        decay_rounds=20.0,
        partition_deadline_seconds=1.0,
        gossip_deadline_seconds=2.0,
        seed=3,
    )
    return replace(base, **changes)


class Recorder:
    """A GossipMetricsPort that keeps what it is told."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, float, float, float, int]] = []
        self.dead: list[tuple[str, int]] = []
        self.forgotten: list[str] = []

    def recorded(
        self, job_id: str, scheme: str, loss: float, gap: float, consensus: float, skipped: int
    ) -> None:
        self.rows.append((job_id, scheme, loss, gap, consensus, skipped))

    def dead_peers(self, job_id: str, count: int) -> None:
        self.dead.append((job_id, count))

    def forget(self, job_id: str) -> None:
        self.forgotten.append(job_id)


@pytest.fixture
def network() -> Iterator[Network]:
    net = Network(6)
    yield net
    net.close()


def jobs_on(network: Network, metrics: Any = None, **kwargs: Any) -> GossipJobs:
    return GossipJobs(
        network.peers,
        network.client,
        metrics=metrics,
        poll_seconds=POLL,
        dead_after_seconds=DEAD_AFTER,
        call_timeout=5.0,
        **kwargs,
    )


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def finished(jobs: GossipJobs, job_id: str = "job", timeout: float = 60.0) -> GossipJobStatus:
    wait_until(lambda: jobs.status(job_id).state in ("succeeded", "failed", "stopped"), timeout)
    return jobs.status(job_id)


# --------------------------------------------------------------------------- records


def test_records_are_computed_from_every_peers_report(network: Network) -> None:
    metrics = Recorder()
    jobs = jobs_on(network, metrics)
    status = jobs.launch(spec(rounds=12))
    assert status.state == "running" and status.n_peers == 6 and status.graph == "ring"
    assert status.peer_names == tuple(f"peer-{i}" for i in range(6))
    final = finished(jobs)
    assert final.state == SUCCEEDED, final.message
    assert [r.round for r in final.records] == list(range(12))

    # Independently: the least-squares optimum and gap from numpy, the consensus by hand.
    data = get_dataset(DATASET, np.random.default_rng(3))
    A = np.hstack([data.X, np.ones((data.n_rows, 1))])
    optimum = np.linalg.lstsq(A, data.y, rcond=None)[0]

    def loss(x: np.ndarray) -> float:
        return 0.5 * float(np.sum((A @ x - data.y) ** 2))

    by_round: dict[int, dict[str, Any]] = {}
    for address, report in network.recorded:
        by_round.setdefault(report.round, {})[address] = report
    for record in final.records:
        reports = by_round[record.round]
        assert len(reports) == 6 and record.peers == 6
        X = np.array([reports[a].params for a in network.addresses])
        mean = X.mean(axis=0)
        expected_gap = (loss(mean) - loss(optimum)) / (loss(np.zeros(5)) - loss(optimum))
        expected_consensus = np.mean(np.sum((X - mean) ** 2, axis=1))
        errors = np.array(
            [
                abs(record.loss - loss(mean) / data.n_rows) / (loss(mean) / data.n_rows),
                abs(record.gap - expected_gap) / max(expected_gap, 1e-6),
                abs(record.consensus_distance - expected_consensus)
                / max(expected_consensus, 1e-300),
            ]
        )
        assert np.all(np.isfinite(errors)) and np.all(errors <= 1e-8), (record, errors)
        assert record.skipped_gradients == sum(r.skipped_gradient for r in reports.values())
        assert record.missing_values == 0
        assert record.wall_seconds >= record.max_round_seconds > 0
        assert len(record.peer_timings) == 6
        for timing in record.peer_timings:
            report = reports[network.addresses[timing.peer]]
            assert timing.compute_seconds == report.compute_seconds
            assert timing.gossip_seconds == pytest.approx(
                report.round_seconds - report.compute_seconds
            )
    assert len(metrics.rows) == 12
    assert [m[3] for m in metrics.rows] == [r.gap for r in final.records]
    row = records_as_row(final)
    assert row["loss"] == [r.loss for r in final.records]
    assert len(row["consensus_distance"]) == len(row["skipped_gradients"]) == 12


def test_a_gossip_job_converges_in_memory(network: Network) -> None:
    jobs = jobs_on(network)
    jobs.launch(
        spec(
            rounds=80,
            straggle="bernoulli:p=0.2,factor=1000",
            compute_seconds=1e-4,
            partition_deadline_seconds=0.01,
        )
    )
    final_status = finished(jobs)
    assert final_status.state == SUCCEEDED
    gaps = np.array([r.gap for r in final_status.records])
    consensus = np.array([r.consensus_distance for r in final_status.records])
    assert np.all(np.isfinite(gaps)) and gaps[-1] <= 1e-4
    optimum = get_dataset(DATASET, np.random.default_rng(3)).optimum
    assert optimum is not None
    # consensus ~ eta_t^2: down two orders of magnitude, and tiny next to ||x*||^2
    assert np.all(np.isfinite(consensus)) and consensus[-1] <= 1e-2 * consensus.max()
    assert consensus[-1] <= 1e-4 * float(optimum @ optimum)
    skipped = sum(r.skipped_gradients for r in final_status.records)
    assert 0.1 * 80 * 6 <= skipped <= 0.3 * 80 * 6  # Bernoulli(0.2) stragglers really skipped


def test_params_every_k_rounds_give_nan_elsewhere(network: Network) -> None:
    jobs = jobs_on(network)
    jobs.launch(spec(rounds=9, report_params_every=4))
    final = finished(jobs)
    measured = [r.round for r in final.records if math.isfinite(r.loss)]
    assert measured == [3, 7, 8]  # every 4th round and the last
    assert all(math.isnan(r.consensus_distance) for r in final.records if r.round not in measured)


# --------------------------------------------------------------------------- faults


def test_a_dead_peer_is_left_out_and_the_job_continues(network: Network) -> None:
    metrics = Recorder()
    jobs = jobs_on(network, metrics)
    jobs.launch(spec(rounds=40, gossip_deadline_seconds=0.05, compute_seconds=0.1))
    wait_until(lambda: jobs.status("job").rounds_done >= 3)
    network.dead.add(network.addresses[2])
    final = finished(jobs)
    assert final.state == SUCCEEDED, final.message
    assert final.dead == (2,) and "1 unreachable" in final.message
    assert metrics.dead == [("job", 0), ("job", 1)]
    late = [r for r in final.records if r.peers == 5]
    assert len(late) >= 20 and late[-1].round == 39
    for r in late:
        assert [t.peer for t in r.peer_timings] == [0, 1, 3, 4, 5]
    # its neighbours (1 and 3) miss its value in every round once the values it had sent
    # ahead before it died are used up
    for r in late[5:]:
        timings = {t.peer: t for t in r.peer_timings}
        assert timings[1].missing >= 1 and timings[3].missing >= 1, r
    gaps = np.array([r.gap for r in final.records])
    assert np.all(np.isfinite(gaps))


def test_a_disconnected_remainder_stops_the_job_with_a_message(network: Network) -> None:
    jobs = jobs_on(network)
    jobs.launch(spec(rounds=500, gossip_deadline_seconds=0.05, compute_seconds=0.1))
    wait_until(lambda: jobs.status("job").rounds_done >= 2)
    network.dead.update({network.addresses[1], network.addresses[4]})
    final = finished(jobs)
    assert final.state == JOB_FAILED
    assert final.dead == (1, 4)
    assert "disconnected" in final.message and "{0, 5}" in final.message
    assert "{2, 3}" in final.message and "peer-1 (peer 1)" in final.message
    # the job was stopped on every remaining peer
    for i in (0, 2, 3, 5):
        node = network.nodes[network.addresses[i]]
        wait_until(lambda node=node: "job" not in node.jobs())


def test_a_late_peer_is_unresponsive_not_dead(network: Network) -> None:
    jobs = jobs_on(network)
    jobs.launch(spec(rounds=40, compute_seconds=0.05))
    network.late.add(network.addresses[4])
    wait_until(lambda: jobs.status("job").unresponsive == (4,))
    time.sleep(3 * DEAD_AFTER)
    status = jobs.status("job")
    assert status.dead == () and status.state == "running"
    network.late.clear()
    final = finished(jobs)
    assert final.state == SUCCEEDED and final.unresponsive == () and final.rounds_done == 40
    assert all(r.peers == 6 for r in final.records)


def test_stop_a_running_job(network: Network) -> None:
    jobs = jobs_on(network)
    jobs.launch(spec(rounds=10_000, compute_seconds=0.05))
    wait_until(lambda: jobs.status("job").rounds_done >= 1)
    stopped = jobs.stop("job")
    assert stopped.state == "stopped" and stopped.message == "stopped on request"
    for node in network.nodes.values():
        wait_until(lambda node=node: "job" not in node.jobs())
    assert jobs.stop("job").state == "stopped"  # idempotent
    with pytest.raises(UnknownJob):
        jobs.status("other")


# --------------------------------------------------------------------------- launching


def test_launch_refusals(network: Network) -> None:
    jobs = jobs_on(network)
    with pytest.raises(Infeasible, match="needs 7 peers, 6 are registered"):
        jobs.launch(spec(peers=7))
    with pytest.raises(Infeasible, match="disconnected"):
        jobs.launch(spec(graph="", edges=((0, 1), (2, 3), (3, 4), (4, 5), (5, 2))))
    with pytest.raises(InvalidInput, match="reads no file"):
        jobs.launch(spec(dataset="/etc/passwd"))
    with pytest.raises(InvalidInput, match="replication d must be at most the number of peers 6"):
        jobs.launch(spec(replication=7))
    with pytest.raises(InvalidInput, match="scheme"):
        jobs.launch(spec(scheme="allreduce"))
    jobs.launch(spec(rounds=10_000, compute_seconds=0.05))
    with pytest.raises(AlreadyExists):
        jobs.launch(spec())
    jobs.stop("job")


def test_a_peer_that_cannot_be_placed_fails_the_launch(network: Network) -> None:
    network.dead.add(network.addresses[3])
    jobs = jobs_on(network)
    with pytest.raises(RoundFailed, match=r"place failed on 1 peer\(s\), first peer-3"):
        jobs.launch(spec())
    assert jobs.status("job").state == JOB_FAILED
    for i in (0, 1, 2, 4, 5):
        node = network.nodes[network.addresses[i]]
        wait_until(lambda node=node: "job" not in node.jobs())


def test_the_plan(network: Network) -> None:
    peers = network.peers()
    assert [name for name, _ in order_peers([*peers, ("peer-10", "x"), ("odd", "y")])] == [
        *(f"peer-{i}" for i in range(6)),
        "peer-10",
        "odd",
    ]
    goco = plan_gossip_job(spec(partition_deadline_seconds=0.5), peers)
    for i, a in enumerate(goco.assignments):
        assert a.peer == i and a.n_peers == 6
        assert [n.index for n in a.neighbours] == sorted({(i - 1) % 6, (i + 1) % 6})
        assert all(
            n.address == f"mem:{n.index}" and n.name == f"peer-{n.index}" for n in a.neighbours
        )
        assert math.isclose(a.self_weight + sum(n.weight for n in a.neighbours), 1.0)
        assert a.partitions == tuple(sorted({i, (i - 1) % 6}))
        assert a.compute_deadline_seconds == 2 * 0.5
        assert a.coefficient == pytest.approx(1 / (2 * 0.8)) and not a.wait_for_gradient
    assert goco.addresses == tuple(f"mem:{i}" for i in range(6))
    gossip = plan_gossip_job(spec(scheme="gossip", partition_deadline_seconds=0.5), peers)
    assert all(a.coefficient == 1.0 and len(a.partitions) == 1 for a in gossip.assignments)
    assert all(a.compute_deadline_seconds == 0.5 for a in gossip.assignments)
    waiting = plan_gossip_job(spec(scheme="gossip-wait"), peers)
    assert all(a.wait_for_gradient for a in waiting.assignments)
    four = plan_gossip_job(spec(peers=4, graph="complete"), peers)
    assert four.names == tuple(f"peer-{i}" for i in range(4))
    assert four.topology.spectral_gap == pytest.approx(1.0)


def test_remaining_components() -> None:
    graph = ring(8)
    assert remaining_components(graph, []) == [list(range(8))]
    assert remaining_components(graph, [3]) == [[0, 1, 2, 4, 5, 6, 7]]
    assert remaining_components(graph, [3, 7]) == [[0, 1, 2], [4, 5, 6]]
    assert remaining_components(graph, list(range(8))) == []
