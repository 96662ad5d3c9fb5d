"""Paper 2 on a real local cluster (issue 13): approximate decoding with persistently slow
workers, with and without shuffling; and a worker killed in the middle of a shuffle.

10 workers in 2 edges, fractional repetition with s = 1 (pairs of workers hold the same data),
the master waiting for 7 answers. Three slow workers straggle every round (fixed classes,
p_slow = 1), so a pair made of two slow workers never contributes without shuffling.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from edgecode.cluster.local import ClusterSetup, EdgeSetup, LocalCluster, WorkerSetup
from edgecode.master.client import MasterClient, state_name
from edgecode.records import JobConfig

NAMES = [f"edge-{0 if i < 5 else 1}-w{i}" for i in range(10)]
#: frc with s = 1 pairs workers (0,1), (2,3), ...: w0 and w1 slow make their pair's data unused
SLOW = ("edge-0-w0", "edge-0-w1", "edge-1-w7")


def _setup() -> ClusterSetup:
    workers = tuple(
        WorkerSetup(
            name,
            name[:6],
            "markov:p_slow=1.0,p_active=0.0,q_as=0.0,q_sa=0.0,factor=20,slow=1"
            if name in SLOW
            else "none",
        )
        for name in NAMES
    )
    return ClusterSetup((EdgeSetup("edge-0"), EdgeSetup("edge-1")), workers, 0.02, seed=2)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(_setup()) as running:
        yield running


def _job(**changes: object) -> JobConfig:
    values: dict[str, object] = {
        "scheme": "approx",
        "base_code": "frc",
        "dataset": "synthetic-lsq:n=400,d=5",
        "rounds": 200,
        "seed": 3,
        "s_flat": 1,
        "wait": 7,
        "checkpoint_every": 0,
        "round_deadline_seconds": 10.0,
        "shuffle_every": 10,
        "shuffle": "aware",
    }
    values.update(changes)
    return JobConfig(**values)  # type: ignore[arg-type]


@pytest.mark.timeout(900)
def test_aware_shuffling_keeps_every_partition_in_use(cluster: LocalCluster) -> None:
    client = MasterClient(cluster.master_address)
    try:
        plain = client.wait(client.submit(_job(job_id="plain")), timeout=600)
        aware = client.wait(
            client.submit(_job(scheme="approx-shuffle", job_id="aware")), timeout=600
        )
    finally:
        client.close()
    assert state_name(plain) == "succeeded", plain.message
    assert state_name(aware) == "succeeded", aware.message
    without = np.array(plain.partition_usage)
    shuffled = np.array(aware.partition_usage)
    assert without.size == shuffled.size == 10
    # Without shuffling: the pair of two slow workers (partitions 0 and 1) is never used.
    assert np.all(without[[0, 1]] <= 0.05), without
    # With aware shuffling: every partition's usage is at least 0.8 x the mean usage.
    assert np.all(np.isfinite(shuffled)) and np.all(shuffled >= 0.8 * shuffled.mean()), shuffled
    assert aware.shuffles >= 1 and aware.shuffle_bytes > 0


@pytest.mark.timeout(600)
def test_a_worker_killed_mid_shuffle_leaves_a_consistent_epoch() -> None:
    """A worker is killed while shuffles move data every few rounds: the shuffle in flight is
    abandoned (or completes around it), the job goes on on a consistent epoch and ends."""
    setup = _setup()
    with LocalCluster(setup) as cluster:
        client = MasterClient(cluster.master_address)
        try:
            config = _job(scheme="approx-shuffle", shuffle="random", shuffle_every=2, rounds=60)
            job_id = client.submit(config)
            for status in client.watch(job_id, timeout=300):
                if status.shuffles >= 1 and status.round >= 7:
                    cluster.kill("edge-1-w5")
                    break
            started = time.monotonic()
            status = client.wait(job_id, timeout=300)
        finally:
            client.close()
    assert state_name(status) == "succeeded", status.message
    assert len(status.history) == 60
    losses = np.array([r.loss for r in status.history])
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert time.monotonic() - started < 240
