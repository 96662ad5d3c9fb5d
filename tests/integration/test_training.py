"""Training on a real local cluster (separate processes, real gRPC on loopback): exactness of
the coded schemes at every round, and faults (killed workers, edges and master)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgecode.cluster.local import ClusterSetup, EdgeSetup, LocalCluster, WorkerSetup, default_setup
from edgecode.master.client import MasterClient, param_history_of, params_of, state_name
from edgecode.master.logic import JobConfig

ROUNDS = 24


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _come_and_go_setup() -> ClusterSetup:
    """2 edges x 4 workers; stragglers come and go (Bernoulli) on three workers, one edge slow."""
    straggle = {
        "edge-0-w1": "bernoulli:p=0.4,factor=6",
        "edge-1-w2": "bernoulli:p=0.4,factor=6",
        "edge-1-w3": "bernoulli:p=0.3,factor=6",
    }
    workers = tuple(
        WorkerSetup(f"edge-{e}-w{w}", f"edge-{e}", straggle.get(f"edge-{e}-w{w}", "none"))
        for e in range(2)
        for w in range(4)
    )
    return ClusterSetup((EdgeSetup("edge-0"), EdgeSetup("edge-1", 0.01)), workers, 0.024, seed=3)


def _job(scheme: str, **changes: object) -> JobConfig:
    values = {
        "scheme": scheme,
        "rounds": ROUNDS,
        "seed": 7,
        "record_params": True,
        "checkpoint_every": 0,
        "s_edge": 1,
        "s_worker": 1,
        "s_flat": 1,
        "round_deadline_seconds": 20.0,
    }
    values.update(changes)
    return JobConfig(**values)  # type: ignore[arg-type]


def _run(client: MasterClient, config: JobConfig) -> tuple[list[np.ndarray], object]:
    status = client.wait(client.submit(config), timeout=180)
    assert state_name(status) == "succeeded", status.message
    history = param_history_of(status)
    assert len(history) == config.rounds
    return history, status


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(_come_and_go_setup()) as running:
        yield running


@pytest.fixture(scope="module")
def uncoded_reference(cluster) -> list[np.ndarray]:
    client = MasterClient(cluster.master_address)
    history, _ = _run(client, _job("uncoded"))
    client.close()
    return history


@pytest.mark.parametrize("scheme", ["hgc", "flat"])
def test_coded_schemes_follow_uncoded_at_every_round(cluster, uncoded_reference, scheme) -> None:
    client = MasterClient(cluster.master_address)
    history, status = _run(client, _job(scheme))
    client.close()
    deviations = [_relative(a, b) for a, b in zip(history, uncoded_reference, strict=True)]
    assert np.all(np.isfinite(deviations)) and np.all(np.array(deviations) <= 1e-9), deviations
    # Stragglers really came and went: the number skipped varies from round to round.
    assert sum(r.stragglers for r in status.history) > 0


def test_ignore_stragglers_visibly_deviates(cluster, uncoded_reference) -> None:
    client = MasterClient(cluster.master_address)
    history, _ = _run(client, _job("ignore"))
    client.close()
    assert _relative(history[-1], uncoded_reference[-1]) > 1e-4


def test_hgc_is_exact_with_more_partitions(cluster, uncoded_reference) -> None:
    client = MasterClient(cluster.master_address)
    history, _ = _run(client, _job("hgc", partitions=24))
    client.close()
    deviations = np.array(
        [_relative(a, b) for a, b in zip(history, uncoded_reference, strict=True)]
    )
    assert np.all(np.isfinite(deviations)) and np.all(deviations <= 1e-9), deviations


def _wait_for_round(client: MasterClient, job_id: str, round_: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.status(job_id).round < round_:
        assert time.monotonic() < deadline, f"job did not reach round {round_}"
        time.sleep(0.02)


def _reference(setup: ClusterSetup, config: JobConfig) -> list[np.ndarray]:
    with LocalCluster(setup) as reference_cluster:
        client = MasterClient(reference_cluster.master_address)
        history, _ = _run(client, config)
        client.close()
    return history


FAULT_JOB = {"rounds": 40, "round_deadline_seconds": 5.0}


def test_killing_tolerated_nodes_keeps_the_trajectory() -> None:
    """Kill s_w = 1 worker of edge 0 and s_e = 1 whole edge mid-job: same trajectory."""
    setup = default_setup(compute_seconds=0.032, seed=5)
    reference = _reference(setup, _job("uncoded", **FAULT_JOB))
    with LocalCluster(setup) as faulty:
        client = MasterClient(faulty.master_address)
        job_id = client.submit(_job("hgc", **FAULT_JOB))
        _wait_for_round(client, job_id, 8)
        faulty.kill("edge-0-w2")
        faulty.kill("edge-1")
        status = client.wait(job_id, timeout=180)
        client.close()
    assert state_name(status) == "succeeded", status.message
    history = param_history_of(status)
    deviations = np.array([_relative(a, b) for a, b in zip(history, reference, strict=True)])
    assert np.all(np.isfinite(deviations)) and np.all(deviations <= 1e-9), deviations


def test_more_failures_than_tolerated_replans_and_stays_exact() -> None:
    """Kill two workers of edge 0 (s_w = 1) and edge 1 (s_e = 1): the round cannot be decoded,
    the master re-plans around the unreachable nodes, and the gradient is never wrong."""
    setup = default_setup(compute_seconds=0.032, seed=6)
    reference = _reference(setup, _job("uncoded", **FAULT_JOB))
    with LocalCluster(setup) as faulty:
        client = MasterClient(faulty.master_address)
        job_id = client.submit(_job("hgc", **FAULT_JOB))
        _wait_for_round(client, job_id, 8)
        for name in ("edge-0-w2", "edge-0-w3", "edge-1"):
            faulty.kill(name)
        status = client.wait(job_id, timeout=180)
        client.close()
    assert state_name(status) == "succeeded", status.message
    assert status.placements >= 2, "the master should have re-placed the data around the dead nodes"
    history = param_history_of(status)
    deviations = np.array([_relative(a, b) for a, b in zip(history, reference, strict=True)])
    assert np.all(np.isfinite(deviations)) and np.all(deviations <= 1e-9), deviations


def test_too_many_failures_fail_the_job_with_a_clear_message() -> None:
    setup = default_setup(edges=1, workers_per_edge=2, compute_seconds=0.032)
    with LocalCluster(setup) as faulty:
        client = MasterClient(faulty.master_address)
        job_id = client.submit(_job("hgc", rounds=200, round_deadline_seconds=3.0, s_edge=0))
        _wait_for_round(client, job_id, 3)
        before = params_of(client.status(job_id, include_params=True)).copy()
        faulty.kill("edge-0-w0")
        faulty.kill("edge-0-w1")
        status = client.wait(job_id, timeout=120)
        client.close()
    assert state_name(status) == "failed"
    assert "could not be decoded" in status.message or "no alive" in status.message
    # The model keeps the parameters of the last completed round.
    history = param_history_of(status)
    assert len(history) == status.round
    np.testing.assert_allclose(params_of(status), history[-1])
    assert (
        status.round >= 3
        and np.all(np.isfinite(params_of(status)))
        and before.shape == history[-1].shape
    )


def test_master_restart_resumes_from_checkpoint() -> None:
    setup = default_setup(compute_seconds=0.08, seed=8)
    config = _job("hgc", rounds=40, checkpoint_every=2, job_id="resume-me", record_params=False)
    with LocalCluster(setup) as cluster:
        client = MasterClient(cluster.master_address)
        client.submit(config)
        _wait_for_round(client, "resume-me", 15)
        client.close()
        master = cluster.restart_master()
        client = MasterClient(master.address)
        deadline = time.monotonic() + 60
        while True:  # the restarted master picks the job up from its checkpoint by itself
            try:
                status = client.status("resume-me")
                break
            except Exception:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert status.round >= 14, "no completed round before the last checkpoint may be lost"
        status = client.wait("resume-me", timeout=180)
        reference_client = MasterClient(cluster.master_address)
        reference = reference_client.wait(
            reference_client.submit(_job("uncoded", rounds=40, job_id="ref")), timeout=180
        )
        reference_client.close()
        client.close()
    assert state_name(status) == "succeeded", status.message
    assert [r.round for r in status.history] == list(range(40))
    assert _relative(params_of(status), params_of(reference)) <= 1e-9
