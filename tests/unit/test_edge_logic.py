"""AggregatorLogic with in-process workers (real WorkerLogic objects, no sockets).

DECODE mode: for EVERY alive set the edge tolerates, the decoded vector is the edge's coded
gradient ``C[e] @ g`` (to 1e-9 relative, finite), exactly the slow workers are cancelled, and the
metrics record the round. FORWARD mode: every arrival is passed on until the caller goes away.
Too many stragglers fail the round with a message naming them; bad worker vectors are refused.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
from inprocess import RecordingMetrics, Workers, place

from edgecode.aggregator.logic import DECODE, FORWARD, AggregatorLogic
from edgecode.codes.hierarchical import hierarchical
from edgecode.errors import InvalidInput, RoundFailed, StaleRound, UnknownJob
from edgecode.learning.datasets import synthetic_least_squares
from edgecode.learning.models import get_model
from edgecode.records import PlacementHeader

TOL = 1e-9
JOB = "job-1"
L2 = 0.1


class Edge:
    """Edge 0 of a hierarchical code over [4, 4] workers (s_e = 1, s_w = 2), with its workers
    placed with real data."""

    def __init__(self, metrics: RecordingMetrics | None = None) -> None:
        self.code = hierarchical([4, 4], 1, 2)
        assert self.code.edge_code is not None
        self.m = self.code.workers_per_edge[0]
        self.rows = self.code.B[: self.m]
        self.targets = np.array(self.code.edge_code.B[0])
        self.K = self.code.n_partitions
        self.names = [f"w{i}" for i in range(self.m)]
        self.workers = Workers(self.names)
        self.data = synthetic_least_squares(80, 4, np.random.default_rng(11))
        self.blocks = self.data.partition(self.K)
        self.model = get_model("least_squares", l2=L2)
        for name, row in zip(self.names, self.rows, strict=True):
            held = tuple(int(j) for j in np.flatnonzero(row))
            header = PlacementHeader(
                job_id=JOB,
                model="least_squares",
                n_features=4,
                n_classes=1,
                partitions=held,
                coefficients=tuple(float(row[j]) for j in held),
                l2=L2,
                n_partitions=self.K,
                epoch=1,
                rows=tuple(int(self.blocks[j][0].shape[0]) for j in held),
            )
            place(self.workers.logic[name], header, [(j, *self.blocks[j]) for j in held])
        self.metrics = metrics if metrics is not None else RecordingMetrics()
        self.logic = AggregatorLogic("e0", self.workers.client, metrics=self.metrics)

    def partials(self, params: np.ndarray) -> np.ndarray:
        return np.stack(
            [self.model.gradient(params, X, y, reg_share=1.0 / self.K) for X, y in self.blocks]
        )

    def configure(self, mode: str = DECODE, deadline: float = 30.0, epoch: int = 1) -> int:
        return self.logic.configure(
            JOB,
            self.names,
            self.names,
            mode,
            deadline,
            self.rows if mode == DECODE else None,
            self.targets if mode == DECODE else None,
            self.code.s_workers[0],
            epoch,
        )


@pytest.fixture
def edge() -> Iterator[Edge]:
    made = Edge()
    yield made
    made.workers.release()
    made.logic.close()


def relative(got: np.ndarray, want: np.ndarray) -> float:
    if not np.all(np.isfinite(got)):
        return float("nan")
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_decode_mode_is_exact_for_every_alive_set_and_cancels_exactly_the_slow(edge: Edge) -> None:
    assert edge.configure() == edge.m
    assert edge.metrics.of("known_workers") == [(tuple(edge.names),)]
    s = edge.code.s_workers[0]
    params = np.random.default_rng(1).standard_normal(5)
    truth = edge.targets @ edge.partials(params)
    errors = []
    cases = [
        set(alive)
        for size in range(edge.m - s, edge.m + 1)
        for alive in itertools.combinations(edge.names, size)
    ]
    for round_, alive in enumerate(cases):
        edge.workers.slow = lambda worker, r, alive=alive: worker not in alive
        before = len(edge.workers.calls)
        edge.metrics.calls.clear()
        (result,) = list(edge.logic.run_round(JOB, round_, params, 1, lambda: True))
        calls = edge.workers.calls[before:]
        errors.append(relative(result.vector, truth))
        assert set(result.combined) <= alive
        cancelled = {c.worker for c in calls if c.future.cancelled()}
        assert cancelled == set(edge.names) - alive  # the slow ones, and only them
        # the round ends at the first decodable set: the first m - s alive, in arrival order
        first = [name for name in edge.names if name in alive][: edge.m - s]
        by_node = {t.node: t for t in result.timings}
        assert set(by_node) == set(edge.names)
        for i, name in enumerate(edge.names):
            timing = by_node[name]
            assert timing.edge == "e0" and timing.arrived == (name in first)
            assert timing.load_fraction == np.count_nonzero(edge.rows[i]) / edge.K
        ((seconds, stragglers),) = edge.metrics.of("round_done")
        assert stragglers == edge.m - len(first) and seconds >= 0
        assert edge.metrics.of("sent") == [(result.vector.nbytes,)]
        assert len(edge.metrics.of("decoded")) == 1
        assert {args[0] for args in edge.metrics.of("response")} == set(edge.names)
        assert all(args == (params.nbytes,) for args in edge.metrics.of("received"))
    errs = np.asarray(errors)
    assert len(errs) == len(cases) and np.all(np.isfinite(errs)) and np.all(errs <= TOL)


def test_forward_mode_passes_every_arrival_on(edge: Edge) -> None:
    edge.configure(FORWARD)
    params = np.random.default_rng(2).standard_normal(5)
    partials = edge.partials(params)
    results = list(edge.logic.run_round(JOB, 0, params, 1, lambda: True))
    assert [r.worker for r in results] == edge.names
    errors = [relative(r.vector, edge.rows[i] @ partials) for i, r in enumerate(results)]
    errs = np.asarray(errors)
    assert np.all(np.isfinite(errs)) and np.all(errs <= TOL)
    for r in results:
        (timing,) = r.timings
        assert timing.node == r.worker and timing.arrived and timing.edge == "e0"
    ((_, stragglers),) = edge.metrics.of("round_done")
    assert stragglers == 0
    assert len(edge.metrics.of("sent")) == edge.m


def test_forward_mode_stops_when_the_caller_goes_away_and_cancels_the_rest(edge: Edge) -> None:
    edge.configure(FORWARD, deadline=2.0)
    edge.workers.slow = lambda worker, r: worker == "w3"
    params = np.zeros(5)
    active = [True]
    gotten = []
    for result in edge.logic.run_round(JOB, 0, params, 1, lambda: active[0]):
        gotten.append(result.worker)
        active[0] = len(gotten) < 2  # the master has what it needs after two
    # w2 had answered too, but the caller was gone: nothing more is sent, nothing waited for
    assert gotten == ["w0", "w1"]
    assert edge.workers.cancelled() == [("w3", 0)]
    ((_, stragglers),) = edge.metrics.of("round_done")
    assert stragglers == 2


def test_too_many_stragglers_fail_the_round_naming_them(edge: Edge) -> None:
    edge.configure(deadline=0.05)
    edge.workers.dead = {"w1"}
    edge.workers.slow = lambda worker, r: worker in ("w2", "w3")
    with pytest.raises(RoundFailed) as failed:
        list(edge.logic.run_round(JOB, 0, np.zeros(5), 1, lambda: True))
    text = str(failed.value)
    assert "w1 (unreachable)" in text
    assert "no answer from: w2, w3" in text
    assert sorted(edge.workers.cancelled()) == [("w2", 0), ("w3", 0)]
    ((_, stragglers),) = edge.metrics.of("round_done")
    assert stragglers == 3


def test_a_stale_epoch_is_refused_by_the_edge_itself(edge: Edge) -> None:
    """An epoch the edge was never configured for is refused before any worker is called."""
    edge.configure()
    with pytest.raises(StaleRound, match="no configuration of placement epoch 2"):
        list(edge.logic.run_round(JOB, 0, np.zeros(5), 2, lambda: True))
    assert edge.workers.clients[0].timeouts == []


def test_a_new_epoch_is_kept_beside_the_current_one_until_its_first_round(edge: Edge) -> None:
    """Rounds of epoch 1 go on while epoch 2 is configured; epoch 2's first round retires 1."""
    edge.configure(epoch=1)
    edge.configure(FORWARD, epoch=2)
    first, second = edge.workers.clients
    (_decoded,) = list(edge.logic.run_round(JOB, 0, np.zeros(5), 1, lambda: True))
    assert not first.closed and not second.closed
    # The workers hold no epoch-2 data in this test: the round itself fails at the workers,
    # but reaching the edge with epoch 2 retires epoch 1's configuration.
    list(edge.logic.run_round(JOB, 1, np.zeros(5), 2, lambda: True))
    assert first.closed and not second.closed
    with pytest.raises(StaleRound):
        list(edge.logic.run_round(JOB, 2, np.zeros(5), 1, lambda: True))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: np.append(v, 1.0),  # wrong length
        lambda v: np.full_like(v, np.nan),
        lambda v: np.full_like(v, np.inf),
    ],
)
def test_a_bad_worker_vector_counts_as_a_failed_worker(edge: Edge, tamper) -> None:  # type: ignore[no-untyped-def]
    edge.configure()
    edge.workers.tamper = lambda worker, vector: tamper(vector) if worker == "w0" else vector
    params = np.random.default_rng(3).standard_normal(5)
    (result,) = list(edge.logic.run_round(JOB, 0, params, 1, lambda: True))
    assert "w0" not in result.combined
    err = relative(result.vector, edge.targets @ edge.partials(params))
    assert np.isfinite(err) and err <= TOL
    timing = next(t for t in result.timings if t.node == "w0")
    assert not timing.arrived and timing.error


def test_unknown_jobs_and_drop(edge: Edge) -> None:
    with pytest.raises(UnknownJob, match="edge e0 has no job 'nope'"):
        list(edge.logic.run_round("nope", 0, np.zeros(5), 1, lambda: True))
    edge.configure()
    (client,) = edge.workers.clients
    assert edge.logic.drop(JOB) is True and client.closed
    assert edge.logic.drop(JOB) is False
    with pytest.raises(UnknownJob):
        list(edge.logic.run_round(JOB, 0, np.zeros(5), 1, lambda: True))


def test_reconfiguring_replaces_the_job_and_closes_the_old_client(edge: Edge) -> None:
    edge.configure()
    edge.configure(FORWARD)
    first, second = edge.workers.clients
    assert first.closed and not second.closed
    results = list(edge.logic.run_round(JOB, 0, np.zeros(5), 1, lambda: True))
    assert len(results) == edge.m  # FORWARD now
    edge.logic.close()
    assert second.closed


def test_the_worker_deadline_reaches_the_client(edge: Edge) -> None:
    edge.configure(deadline=7.5)
    list(edge.logic.run_round(JOB, 0, np.zeros(5), 1, lambda: True))
    (client,) = edge.workers.clients
    assert client.timeouts == [7.5]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"job_id": ""}, "job_id"),
        ({"names": ["w0", "w1"]}, "every worker needs a name and an address"),
        ({"names": ["w0", "w0", "w2", "w3"]}, "distinct"),
        ({"addresses": ["a", "", "c", "d"]}, "every worker needs a name and an address"),
        ({"deadline": 0.0}, "worker_deadline_seconds"),
        ({"deadline": float("nan")}, "worker_deadline_seconds"),
        ({"mode": "relay"}, "mode must be decode or forward"),
        ({"code_rows": None}, "DECODE mode needs code rows"),
        ({"code_rows": np.ones((3, 6))}, "DECODE mode needs code rows of shape"),
        ({"targets": np.ones(2)}, "targets must have shape"),
        ({"s_worker": 4}, "s_worker must be in"),
        ({"s_worker": -1}, "s_worker must be in"),
    ],
)
def test_configure_refuses_bad_input(edge: Edge, changes: dict, match: str) -> None:  # type: ignore[type-arg]
    args = {
        "job_id": JOB,
        "names": edge.names,
        "addresses": edge.names,
        "mode": DECODE,
        "deadline": 30.0,
        "code_rows": edge.rows,
        "targets": edge.targets,
        "s_worker": 2,
    }
    args.update(changes)
    with pytest.raises(InvalidInput, match=match):
        edge.logic.configure(
            args["job_id"],
            args["names"],
            args["addresses"],
            args["mode"],
            args["deadline"],
            args["code_rows"],
            args["targets"],
            args["s_worker"],
        )
    assert edge.workers.clients == []  # nothing was started for a refused job


def test_a_new_configuration_never_drops_the_epoch_rounds_use(edge: Edge) -> None:
    edge.configure(epoch=1)
    list(edge.logic.run_round(JOB, 0, np.zeros(5), 1, lambda: True))
    edge.configure(epoch=2)
    edge.configure(epoch=3)  # epoch 2 (never used) makes room, not epoch 1
    (result,) = list(edge.logic.run_round(JOB, 1, np.zeros(5), 1, lambda: True))
    assert result.vector.shape == (5,)
