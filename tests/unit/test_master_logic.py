"""MasterLogic running whole small jobs in-process: real AggregatorLogic and WorkerLogic objects
behind fake Transport / ClusterView ports (tests/unit/inprocess.py), no gRPC, no sockets.

- hgc, flat and uncoded follow the plain full-gradient trajectory (computed here, independently)
  to 1e-9 relative at EVERY round, with stragglers every round; ignore-stragglers does not;
- a round with more failures than tolerated re-plans around the unreachable nodes (and stays
  exact), or fails with a message naming them while keeping the last completed round's
  parameters;
- cancel, checkpoints and resume after a (simulated) master crash;
- re-planning re-places the data only when the plan's STRUCTURE changed;
- the job's end drops it on every node that took part;
- the metrics Protocol records what happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from inprocess import Cluster, MemoryCheckpoints, RecordingMetrics, Transport, grid

from edgecode.errors import AlreadyExists, InvalidInput, UnknownJob
from edgecode.learning.datasets import load_split
from edgecode.learning.models import get_model
from edgecode.learning.optimizers import get_optimizer
from edgecode.master.checkpoints import (
    Checkpoint,
    DamagedCheckpoint,
    FileCheckpoints,
    SavedJob,
    config_hash,
)
from edgecode.master.jobs import Job
from edgecode.master.logic import MasterLogic
from edgecode.master.ports import Topology
from edgecode.planning.spec import EdgePlan, Plan, WorkerPlan
from edgecode.records import CANCELLED, FAILED, RUNNING, SUCCEEDED, JobConfig

TOL = 1e-9
DATASET = "synthetic-lsq:n=150,d=4"


def job_config(scheme: str = "hgc", **changes: object) -> JobConfig:
    base = JobConfig(
        scheme=scheme,
        dataset=DATASET,
        rounds=6,
        s_edge=1,
        s_worker=1,
        s_flat=2,
        seed=3,
        l2=0.05,
        checkpoint_every=0,
        round_deadline_seconds=10.0,
        record_params=True,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def reference(config: JobConfig) -> tuple[list[np.ndarray], list[float]]:
    """The plain full-gradient trajectory (parameters and mean loss after every round), computed
    without any code, edge or worker: the same data, initial point and optimizer as the master."""
    rng = np.random.default_rng(config.seed)
    train, _ = load_split(config.dataset, rng)
    model = get_model(config.model or train.default_model, l2=config.l2)
    params = model.init_params(rng, train.n_features, train.n_classes)
    lr = config.learning_rate or None
    optimizer = get_optimizer(config.optimizer, **({"lr": lr} if lr else {}))
    trajectory, losses = [], []
    for _ in range(config.rounds):
        params = optimizer.step(params, model.gradient(params, train.X, train.y), train.n_rows)
        trajectory.append(params)
        losses.append(model.loss(params, train.X, train.y) / train.n_rows)
    return trajectory, losses


def deviations(got: list[np.ndarray], want: list[np.ndarray]) -> np.ndarray:
    assert len(got) == len(want)
    return np.array(
        [
            float(np.linalg.norm(a - b) / np.linalg.norm(b)) if np.all(np.isfinite(a)) else np.nan
            for a, b in zip(got, want, strict=True)
        ]
    )


def assert_exact(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    errs = deviations(got, want)
    assert np.all(np.isfinite(errs)) and np.all(errs <= TOL), errs


class Harness:
    def __init__(
        self,
        topology: Topology | None = None,
        plans: Callable[[int], tuple[Plan, float]] | None = None,
        store: object | None = None,
    ) -> None:
        self.topology = topology or grid(3, 3)
        self.transport = Transport(self.topology)
        self.cluster = Cluster(self.topology, plans)
        self.metrics = RecordingMetrics()
        self.store = store if store is not None else MemoryCheckpoints()
        self.logic = MasterLogic(self.transport, self.cluster, self.store, self.metrics)  # type: ignore[arg-type]

    def wait(self, job: Job, timeout: float = 60.0) -> Job:
        """The job once it ended and its trainer is done (its final record saved and its drops
        sent: they come last)."""
        with job.changed:
            assert job.changed.wait_for(lambda: job.finished, timeout=timeout), job.status()
        if job.layout is not None:
            nodes = {n.name for n in job.layout.topology.nodes}
            self.transport.wait_for_drops(job.job_id, nodes, timeout=timeout)
        return job

    def run(self, config: JobConfig) -> Job:
        return self.wait(self.logic.job(self.logic.submit(config)))

    def close(self) -> None:
        self.logic.close()
        self.transport.release()


@pytest.fixture
def harness() -> Iterator[Harness]:
    made = Harness()
    yield made
    made.close()


def stragglers_every_round(h: Harness, scheme: str) -> None:
    """hgc: one whole edge hangs and one worker of every other edge is slow, a different
    pattern every round. flat / ignore: two slow workers every round."""

    def pattern(round_: int) -> tuple[int, list[int]]:
        rng = np.random.default_rng(1000 + round_)
        return int(rng.integers(3)), [int(x) for x in rng.integers(3, size=3)]

    if scheme == "hgc":
        h.transport.hang = lambda edge, r: edge == f"e{pattern(r)[0]}"

        def slow(worker: str, r: int) -> bool:
            index = int(worker[1:])
            hung, local = pattern(r)
            return index // 3 != hung and index % 3 == local[index // 3]

        h.transport.workers.slow = slow
    elif scheme in ("flat", "ignore"):
        h.transport.workers.slow = lambda worker, r: int(worker[1:]) in (r % 9, (r + 4) % 9)


def all_nodes(topology: Topology) -> set[str]:
    return {n.name for n in topology.nodes}


def assert_dropped(h: Harness, job_id: str, expected: set[str], edges: set[str]) -> None:
    dropped = h.transport.wait_for_drops(job_id, expected, timeout=2.0)
    assert {d.node for d in dropped} >= expected
    assert all(d.is_edge == (d.node in edges) for d in dropped)
    for name, worker in h.transport.workers.logic.items():
        if name in expected:
            assert job_id not in worker.jobs(), f"{name} still holds the job's data"
    for name, edge in h.transport.edges.items():
        if name in expected:
            assert edge.drop(job_id) is False, f"edge {name} still knows the job"


# ---- trajectories ------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["hgc", "flat", "uncoded"])
def test_coded_schemes_follow_the_full_gradient_trajectory_at_every_round(
    harness: Harness, scheme: str
) -> None:
    config = job_config(scheme)
    stragglers_every_round(harness, scheme)
    job = harness.run(config)
    assert job.state == SUCCEEDED, job.message
    want, losses = reference(config)
    assert_exact(job.param_history, want)
    status = job.status(include_params=True)
    assert status.round == config.rounds and len(status.history) == config.rounds
    assert status.params is not None
    assert_exact([status.params], [want[-1]])
    recorded = np.array([r.loss for r in status.history])
    assert np.all(np.isfinite(recorded)) and np.allclose(recorded, losses, rtol=1e-9, atol=0)
    expected_stragglers = {"hgc": 5, "flat": 2, "uncoded": 0}[scheme]
    assert [r.stragglers for r in status.history] == [expected_stragglers] * config.rounds
    assert job.placements == 1
    assert_dropped(harness, job.job_id, all_nodes(harness.topology), {"e0", "e1", "e2"})
    # Decoding edges answer a round with one message (their calls end with it, uncancelled);
    # forwarding edges with as many as arrive.
    assert job.layout is not None
    decoding = {a.edge.name for a in job.layout.assignments() if a.mode == "decode"}
    assert decoding == ({"e0", "e1", "e2"} if scheme != "flat" else set())
    assert job.layout.edge_messages() == dict.fromkeys(decoding, 1)


def test_ignore_stragglers_does_not_follow_the_trajectory(harness: Harness) -> None:
    config = job_config("ignore")
    stragglers_every_round(harness, "ignore")
    job = harness.run(config)
    assert job.state == SUCCEEDED, job.message
    errs = deviations(job.param_history, reference(config)[0])
    assert np.all(np.isfinite(errs)) and errs[-1] > 1e-3, errs
    assert [r.stragglers for r in job.history] == [2] * config.rounds


def test_the_metrics_record_every_round(harness: Harness) -> None:
    config = job_config("hgc", rounds=4)
    stragglers_every_round(harness, "hgc")
    job = harness.run(config)
    assert job.state == SUCCEEDED, job.message
    metrics, rounds = harness.metrics, config.rounds
    _, losses = reference(config)
    done = metrics.of("round_done")
    assert len(done) == rounds
    for record, (scheme, job_id, seconds, stragglers, loss, predicted, timings) in zip(
        job.history, done, strict=True
    ):
        assert (scheme, job_id, stragglers, predicted) == ("hgc", job.job_id, 5, 0.0)
        assert loss == record.loss and seconds == record.seconds and seconds >= 0
        assert sum(t.arrived for t in timings) == 4 and len(timings) == 6
        assert all(t.edge in ("e0", "e1", "e2") and t.load_fraction > 0 for t in timings)
    assert np.allclose([d[4] for d in done], losses, rtol=1e-9, atol=0)
    (placed,) = metrics.of("placed")
    assert placed[0] > 0
    n_params = 5
    assert metrics.of("sent") == [(8 * n_params,)] * (3 * rounds)  # params to 3 edges per round
    assert len(metrics.of("decoded")) == rounds
    answered = [node for node, _ in metrics.of("response")]
    assert answered.count("e0") + answered.count("e1") + answered.count("e2") == 3 * rounds
    assert harness.cluster.reports, "the coordinator never heard of a round"
    timings, seconds, predicted = harness.cluster.reports[0]
    assert len(timings) == 6 and seconds >= 0 and predicted == 0.0


# ---- failures ----------------------------------------------------------------------------------


def test_too_many_dead_edges_replan_around_them_and_stay_exact(harness: Harness) -> None:
    config = job_config("hgc")
    harness.transport.on_round = lambda r: harness.transport.kill("e1", "e2") if r == 3 else None
    job = harness.run(config)
    assert job.state == SUCCEEDED, job.message
    assert_exact(job.param_history, reference(config)[0])
    assert harness.transport.unreachable_calls == [tuple(n.name for n in harness.topology.nodes)]
    assert job.placements == 2
    epochs = sorted((p.header.epoch, p.worker) for p in harness.transport.placed)
    assert epochs == [(1, f"w{i}") for i in range(9)] + [(2, f"w{i}") for i in range(3)]
    # every node that took part and is alive forgets the job (w3..w8 still hold epoch 1 data)
    assert_dropped(harness, job.job_id, {"e0", *(f"w{i}" for i in range(9))}, {"e0", "e1", "e2"})


def test_dead_workers_behind_live_edges_are_found_and_replanned_around(harness: Harness) -> None:
    config = job_config("hgc")
    dead = [f"w{i}" for i in range(3, 9)]
    harness.transport.on_round = lambda r: harness.transport.kill(*dead) if r == 2 else None
    job = harness.run(config)
    assert job.state == SUCCEEDED, job.message
    assert_exact(job.param_history, reference(config)[0])
    assert job.placements == 2
    layout = job.layout
    assert layout is not None and [e.name for e in layout.topology.edges] == ["e0"]


def test_too_many_failures_fail_the_job_naming_them_and_keep_the_last_parameters(
    harness: Harness,
) -> None:
    config = job_config("hgc")
    harness.transport.on_round = lambda r: (
        harness.transport.kill("e0", "e1", "e2") if r == 3 else None
    )
    job = harness.run(config)
    assert job.state == FAILED
    message = job.message
    assert "round 3 failed" in message
    assert "e0 (unreachable)" in message
    assert "the unreachable nodes e0, e1, e2" in message
    assert "keeps the parameters of round 3" in message
    assert job.round == 3 and len(job.history) == 3
    want = reference(config)[0]
    status = job.status(include_params=True)
    assert status.params is not None
    assert_exact([status.params], [want[2]])
    assert_exact(job.param_history, want[:3])
    assert harness.store.records[job.job_id].state == FAILED  # type: ignore[attr-defined]
    assert_dropped(harness, job.job_id, {f"w{i}" for i in range(9)}, {"e0", "e1", "e2"})


def test_silent_edges_are_named_when_the_retry_fails_too(harness: Harness) -> None:
    config = job_config("hgc", round_deadline_seconds=0.2)
    harness.transport.hang = lambda edge, r: r == 2 and edge in ("e1", "e2")
    job = harness.run(config)
    assert job.state == FAILED
    assert "all answered a health check" in job.message
    assert job.message.count("no answer from: e1, e2") == 2  # the round and its retry
    assert job.round == 2
    assert_exact(job.param_history, reference(config)[0][:2])


def test_a_hung_round_is_retried_on_a_fresh_epoch(harness: Harness) -> None:
    config = job_config("hgc", round_deadline_seconds=0.2)
    attempts: dict[str, int] = {}

    def hang(edge: str, r: int) -> bool:
        if r != 2 or edge not in ("e1", "e2"):
            return False
        attempts[edge] = attempts.get(edge, 0) + 1
        return attempts[edge] == 1  # only the first attempt hangs

    harness.transport.hang = hang
    job = harness.run(config)
    assert job.state == SUCCEEDED, job.message
    assert_exact(job.param_history, reference(config)[0])
    assert job.placements == 2


# ---- cancel, checkpoints, resume ---------------------------------------------------------------


def test_cancel_stops_after_the_current_round_and_checkpoints(harness: Harness) -> None:
    config = job_config("hgc", rounds=10, job_id="stop-me")
    harness.transport.on_round = lambda r: harness.logic.cancel("stop-me") if r == 3 else None
    job = harness.run(config)
    assert job.state == CANCELLED
    assert job.message == "cancelled after round 4" and job.round == 4
    want = reference(config)[0]
    assert_exact(job.param_history, want[:4])
    store = harness.store
    assert isinstance(store, MemoryCheckpoints)
    checkpoint = store.checkpoints["stop-me"]
    assert checkpoint.round == 4 and checkpoint.config_hash == config_hash(job.config)
    assert_exact([checkpoint.params], [want[3]])
    assert store.records["stop-me"].state == CANCELLED
    assert_dropped(harness, "stop-me", all_nodes(harness.topology), {"e0", "e1", "e2"})


@pytest.mark.parametrize("end", ["cancel", "finish"])
def test_a_job_is_announced_final_only_after_its_checkpoint_is_saved(end: str) -> None:
    """A client that sees the job end (and resubmits it, or restarts the master) must find the
    checkpoint of the rounds the status reports."""

    class Watching(MemoryCheckpoints):
        def __init__(self) -> None:
            super().__init__()
            self.job: Job | None = None
            self.states: list[str] = []

        def save(self, job_id: str, checkpoint: Checkpoint) -> None:
            assert self.job is not None
            self.states.append(self.job.state)
            super().save(job_id, checkpoint)

    store = Watching()
    h = Harness(store=store)
    config = job_config("hgc", rounds=5 if end == "finish" else 10, job_id="watched")

    def on_round(r: int) -> None:
        if r == 3:
            store.job = h.logic.job("watched")
            if end == "cancel":
                h.logic.cancel("watched")

    h.transport.on_round = on_round
    try:
        job = h.run(config)
    finally:
        h.close()
    assert job.state == (CANCELLED if end == "cancel" else SUCCEEDED)
    assert store.states == [RUNNING]  # saved while the job still ran
    assert store.checkpoints["watched"].round == job.round


@pytest.mark.parametrize("kind", ["memory", "files"])
def test_a_restarted_master_resumes_from_the_checkpoint_exactly(kind: str, tmp_path: Path) -> None:
    store = MemoryCheckpoints() if kind == "memory" else FileCheckpoints(tmp_path)
    config = job_config("hgc", rounds=8, checkpoint_every=3, job_id="resume")
    first = Harness(store=store)
    first.transport.on_round = lambda r: first.logic.cancel("resume") if r == 4 else None
    try:
        stopped = first.run(config)
    finally:
        first.close()
    assert stopped.state == CANCELLED and stopped.round == 5
    # A crash leaves the job record as it was while the job ran (no final state written).
    store.save_job(SavedJob(stopped.config, RUNNING))

    second = Harness(store=store)  # a new master, a new cluster: the data is placed again
    try:
        assert second.logic.resume_all() == ["resume"]
        job = second.wait(second.logic.job("resume"))
    finally:
        second.close()
    assert job.state == SUCCEEDED, job.message
    want = reference(config)[0]
    assert_exact(job.param_history, want[5:])
    assert [r.round for r in job.history] == list(range(8))
    assert job.history[:5] == stopped.history[:5]


def test_a_job_id_names_one_job(harness: Harness) -> None:
    """The same config under a finished job's id is that job (nothing runs again); another
    config is refused with ALREADY_EXISTS and the finished job is untouched."""
    first = job_config("hgc", rounds=3, job_id="again")
    done = harness.run(first)
    assert done.state == SUCCEEDED
    placed = len(harness.transport.placed)
    assert harness.logic.submit(first) == "again"
    assert harness.logic.job("again") is done and len(harness.transport.placed) == placed
    with pytest.raises(AlreadyExists, match="exists with a different configuration"):
        harness.logic.submit(job_config("hgc", rounds=5, job_id="again", seed=4))
    assert harness.logic.job("again").state == SUCCEEDED
    assert_exact(done.param_history, reference(first)[0])


def test_a_checkpoint_of_another_config_is_not_resumed() -> None:
    """A stored checkpoint whose config hash differs (a record tampered with, or reused by
    hand) is not this job's progress: the job starts afresh."""
    store = MemoryCheckpoints()
    old = job_config("hgc", rounds=3, job_id="again")
    h = Harness(store=store)
    try:
        assert h.run(old).state == SUCCEEDED
    finally:
        h.close()
    second = job_config("hgc", rounds=5, job_id="again", seed=4)
    store.save_job(SavedJob(second, RUNNING))
    h = Harness(store=store)
    try:
        assert h.logic.resume_all() == ["again"]
        job = h.wait(h.logic.job("again"))
        assert job.state == SUCCEEDED, job.message
        assert_exact(job.param_history, reference(second)[0])
    finally:
        h.close()


def test_a_damaged_checkpoint_fails_its_job_and_is_quarantined() -> None:
    class Damaged(MemoryCheckpoints):
        def load(self, job_id: str) -> Checkpoint | None:
            raise DamagedCheckpoint(f"checkpoint of job {job_id!r} is unreadable: torn")

    store = Damaged()
    config = job_config("hgc", job_id="torn")
    store.save_job(SavedJob(config, RUNNING))
    store.records["bad"] = DamagedCheckpoint("job record 'bad' is unreadable")  # type: ignore[assignment]
    h = Harness(store=store)
    try:
        assert h.logic.resume_all() == []
        job = h.logic.job("torn")
        assert job.state == FAILED and "torn" in job.message
        assert store.quarantined and store.quarantined[0][0] == "torn"
        assert h.transport.placed == []
    finally:
        h.close()


def test_a_checkpoint_of_the_wrong_size_fails_the_job(harness: Harness) -> None:
    config = job_config("hgc", job_id="sized")
    store = harness.store
    assert isinstance(store, MemoryCheckpoints)
    store.checkpoints["sized"] = Checkpoint(2, np.zeros(3), {}, (), config_hash(config))
    job = harness.run(config)
    assert job.state == FAILED
    assert "the checkpoint holds 3 parameters, the model has 5" in job.message


# ---- re-planning -------------------------------------------------------------------------------


def grid_plan(predicted: float, s_worker_last: int = 1) -> Plan:
    """K = 9, s_e = 1 on the 3 x 3 grid: every edge covers 6 partitions; with s_w = 1 every
    worker holds 4, with s_w = 2 (last edge) 6."""
    edges = []
    for e in range(3):
        s_w = s_worker_last if e == 2 else 1
        load = 6 * (s_w + 1) // 3
        workers = tuple(WorkerPlan(f"w{3 * e + i}", True, load) for i in range(3))
        edges.append(EdgePlan(f"e{e}", s_w, 0.0, 6, workers))
    return Plan("hgc", 9, 1, tuple(edges), expected_round_seconds=predicted)


def planner(change_at: int | None = None) -> Callable[[int], tuple[Plan, float]]:
    """The n-th call's plan predicts 0.1 n seconds (a plan that differs only in its prediction);
    from call ``change_at`` on, the last edge tolerates 2 stragglers (a new structure) and the
    plan predicts 0 s a round (a saving worth any placement)."""

    def plan(call: int) -> tuple[Plan, float]:
        changed = change_at is not None and call >= change_at
        predicted = 0.0 if changed else 0.1 * call
        return grid_plan(predicted, 2 if changed else 1), predicted

    return plan


def test_a_replan_with_the_same_structure_does_not_place_the_data_again() -> None:
    h = Harness(plans=planner())
    config = job_config("hgc", s_edge=-1, rounds=7, profile_rounds=2, replan_every=2)
    try:
        job = h.run(config)
        assert job.state == SUCCEEDED, job.message
        assert h.cluster.plan_calls == 4  # the first plan, then rounds 2, 4 and 6
        assert job.placements == 1
        assert len(h.transport.placed) == 9
        assert {p.header.epoch for p in h.transport.placed} == {1}
        # Re-plans run beside the rounds and are adopted at a round boundary once ready: every
        # round reports the prediction of the plan in use, never going back.
        predicted = [d[5] for d in h.metrics.of("round_done")]
        assert predicted[:2] == pytest.approx([0.1, 0.1])
        assert predicted == sorted(predicted)
        assert {round(p, 6) for p in predicted} <= {0.1, 0.2, 0.3, 0.4}
        assert_exact(job.param_history, reference(config)[0])
    finally:
        h.close()


def test_without_replan_every_the_plan_is_revisited_twice() -> None:
    """A plan fitted on the profiling rounds alone is asked for again at 2x and 4x those
    rounds (a busy machine must not fix a bad plan for the whole job)."""
    h = Harness(plans=planner())
    config = job_config("hgc", s_edge=-1, rounds=17, profile_rounds=2, replan_every=0)
    try:
        job = h.run(config)
        assert job.state == SUCCEEDED, job.message
        assert h.cluster.plan_calls == 4  # the first plan, then rounds 2, 4 and 8
        assert job.placements == 1
        assert_exact(job.param_history, reference(config)[0])
    finally:
        h.close()


@pytest.mark.parametrize(
    ("profile", "every", "expected"),
    [
        (3, 0, [3, 6, 12]),
        (2, 0, [2, 4, 8]),
        (3, 10, [3, 13, 23, 33, 43, 53, 63, 73, 83, 93]),
        (1, 0, [1, 2, 4]),
        (0, 0, []),
    ],
)
def test_replan_rounds(profile: int, every: int, expected: list[int]) -> None:
    from types import SimpleNamespace

    from edgecode.master.epochs import Epochs

    config = job_config("hgc", s_edge=-1, rounds=100, profile_rounds=profile, replan_every=every)
    epochs = SimpleNamespace(job=SimpleNamespace(config=config))
    assert [r for r in range(100) if Epochs.replan_due(epochs, r)] == expected  # type: ignore[arg-type]
    fixed = SimpleNamespace(job=SimpleNamespace(config=replace(config, s_edge=1)))
    assert not any(Epochs.replan_due(fixed, r) for r in range(100))  # type: ignore[arg-type]


def test_a_replan_with_a_new_structure_places_the_data_again() -> None:
    h = Harness(plans=planner(change_at=3))
    # Rounds of 40 ms: the new plan's predicted saving over the remaining rounds (about 0.16 s)
    # is worth far more than an in-process placement (milliseconds).
    h.transport.on_round = lambda r: time.sleep(0.04)
    config = job_config("hgc", s_edge=-1, rounds=9, profile_rounds=2, replan_every=2)
    try:
        job = h.run(config)
        assert job.state == SUCCEEDED, job.message
        assert job.placements == 2
        epochs = sorted((p.header.epoch, p.worker) for p in h.transport.placed)
        assert epochs == [(1, f"w{i}") for i in range(9)] + [(2, f"w{i}") for i in range(9)]
        held = {
            p.worker: len(p.header.partitions) for p in h.transport.placed if p.header.epoch == 2
        }
        assert held == {**{f"w{i}": 4 for i in range(6)}, **{f"w{i}": 6 for i in range(6, 9)}}
        assert_exact(job.param_history, reference(config)[0])
    finally:
        h.close()


# ---- the job API -------------------------------------------------------------------------------


def test_submit_validates_and_a_running_duplicate_is_the_same_job(harness: Harness) -> None:
    with pytest.raises(InvalidInput, match="scheme must be one of"):
        harness.logic.submit(job_config("magic"))
    with pytest.raises(UnknownJob):
        harness.logic.job("nope")
    with pytest.raises(UnknownJob):
        harness.logic.cancel("nope")
    release: list[bool] = []
    config = job_config("hgc", job_id="dup")

    def on_round(r: int) -> None:
        if r == 0:  # the same job again: the running job's id, nothing new starts
            assert harness.logic.submit(config) == "dup"
            with pytest.raises(AlreadyExists):
                harness.logic.submit(job_config("hgc", job_id="dup", seed=9))
            release.append(True)

    harness.transport.on_round = on_round
    job = harness.run(config)
    assert release == [True] and job.state == SUCCEEDED


def test_watch_yields_progress_until_the_job_ends(harness: Harness) -> None:
    job_id = harness.logic.submit(job_config("uncoded", rounds=4))
    seen = [(job.round, job.state) for job in harness.logic.watch(job_id, lambda: True)]
    rounds = [r for r, _ in seen]
    assert rounds == sorted(rounds) and seen[-1] == (4, SUCCEEDED)


def test_a_new_structure_predicted_no_faster_than_the_current_plan_is_not_placed() -> None:
    """The planner re-times the plan in use on the same fits (``current_seconds``): a new
    structure whose prediction does not beat it by more than a placement costs is not placed,
    however slow the measured rounds are (prediction is compared with prediction)."""

    def plan(call: int) -> tuple[Plan, float]:
        if call == 1:
            return grid_plan(0.05), 0.05
        new = grid_plan(0.10, 2)
        new.extra["current_seconds"] = 0.09  # the plan in use is predicted faster: keep it
        return new, 0.10

    h = Harness(plans=plan)
    # Measured rounds of 0.3 s would make the new plan look like a 0.2 s/round saving.
    h.transport.on_round = lambda r: time.sleep(0.3)
    config = job_config("hgc", s_edge=-1, rounds=5, profile_rounds=2)
    try:
        job = h.run(config)
        assert job.state == SUCCEEDED, job.message
        assert h.cluster.plan_calls >= 2
        assert job.placements == 1
        assert {p.header.epoch for p in h.transport.placed} == {1}
        assert_exact(job.param_history, reference(config)[0])
        # the plan kept is shown with its new prediction, not the one made before any round
        assert job.layout is not None and job.layout.predicted_round_seconds == 0.09
    finally:
        h.close()
