"""In-process fakes of the roles' ports: real WorkerLogic and AggregatorLogic objects wired
together without gRPC, so unit tests run whole rounds (and whole jobs) with no sockets.

- :class:`Workers`: the cluster's workers (real :class:`WorkerLogic`) and the edge's
  ``WorkerClient`` factory over them; a worker can be *dead* (its call fails at once, like a
  refused connection) or *slow* in a round (its call stays pending until it is cancelled or a
  newer round supersedes it, like a real straggler abandoning stale work).
- :class:`Transport` and :class:`Cluster`: the master's Transport and ClusterView over real
  AggregatorLogic objects; an edge can be dead (its stream fails at once) or hang in a round
  (its stream blocks until the master cancels it).
- Recording fakes of the metrics Protocols and an in-memory checkpoint store.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgecode.aggregator.logic import AggregatorLogic
from edgecode.errors import StaleRound
from edgecode.master.checkpoints import Checkpoint, DamagedCheckpoint, SavedJob
from edgecode.master.ports import EdgeAssignment, Node, Topology
from edgecode.planning.spec import Plan
from edgecode.records import PlacementHeader, Timing
from edgecode.rounds import Message
from edgecode.worker.logic import WorkerLogic


class FakeRpcError(Exception):
    """Looks like a grpc.RpcError to :func:`edgecode.rounds.describe`."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self._code = type("Code", (), {"name": code})()
        self._details = details

    def code(self) -> Any:
        return self._code

    def details(self) -> str:
        return self._details


# ---- workers -----------------------------------------------------------------------------------


@dataclass
class Call:
    """One ComputeGradient call as the fake saw it."""

    worker: str
    round: int
    future: Future[Message]


class Workers:
    """Real WorkerLogic objects by address (= name), and the edge's client factory over them."""

    def __init__(self, names: Sequence[str]) -> None:
        self.logic = {name: WorkerLogic(name, rng=np.random.default_rng(0)) for name in names}
        self.dead: set[str] = set()
        #: slow(worker, round) -> True: the call stays pending (a straggler)
        self.slow: Callable[[str, int], bool] = lambda worker, round_: False
        #: tamper(worker, vector) -> what the edge receives instead (a misbehaving worker)
        self.tamper: Callable[[str, np.ndarray], np.ndarray] = lambda worker, vector: vector
        self.calls: list[Call] = []
        self.clients: list[WorkerClient] = []
        self._lock = threading.Lock()

    def client(self, names: Sequence[str], addresses: Sequence[str]) -> WorkerClient:
        made = WorkerClient(self, tuple(names), tuple(addresses))
        self.clients.append(made)
        return made

    def call(
        self, name: str, address: str, job_id: str, round_: int, params: np.ndarray, epoch: int
    ) -> Future[Message]:
        future: Future[Message] = Future()
        with self._lock:
            # a newer round makes a worker abandon its older computation (StaleRound)
            for old in self.calls:
                if old.worker == name and old.round < round_ and not old.future.done():
                    old.future.set_exception(StaleRound(f"round {old.round} superseded"))
            self.calls.append(Call(name, round_, future))
        if address in self.dead:
            future.set_exception(FakeRpcError("UNAVAILABLE", f"{address}: connection refused"))
        elif not self.slow(name, round_):
            try:
                gradient, seconds = self.logic[address].compute(
                    job_id, round_, params.copy(), epoch, threading.Event()
                )
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(Message(name, self.tamper(name, gradient), seconds))
        return future

    def cancelled(self) -> list[tuple[str, int]]:
        return [(c.worker, c.round) for c in self.calls if c.future.cancelled()]

    def release(self) -> None:
        """End every call still pending (test teardown)."""
        for c in self.calls:
            if not c.future.done():
                c.future.set_exception(StaleRound("test over"))


class WorkerClient:
    """The edge's client of one job's workers (the WorkerClient Protocol)."""

    def __init__(
        self, workers: Workers, names: tuple[str, ...], addresses: tuple[str, ...]
    ) -> None:
        self._workers = workers
        self.names = names
        self.addresses = addresses
        self.closed = False
        self.timeouts: list[float] = []

    def compute(
        self, job_id: str, round_: int, params: np.ndarray, epoch: int, timeout: float
    ) -> list[Future[Message]]:
        self.timeouts.append(timeout)
        return [
            self._workers.call(name, address, job_id, round_, params, epoch)
            for name, address in zip(self.names, self.addresses, strict=True)
        ]

    def close(self) -> None:
        self.closed = True


def place(
    worker: WorkerLogic, header: PlacementHeader, partitions: Sequence[tuple[int, Any, np.ndarray]]
) -> int:
    """Stream partitions into a worker in two row chunks each, as the transport would."""
    builder = worker.begin_placement(header)
    sent = 0
    for index, features, labels in partitions:
        half = max(1, int(features.shape[0]) // 2)
        for start, stop in ((0, half), (half, int(features.shape[0]))):
            if stop > start:
                builder.add(index, features[start:stop], np.asarray(labels[start:stop]))
                sent += int(np.asarray(features[start:stop]).nbytes) + int(
                    labels[start:stop].nbytes
                )
    builder.finish()
    return sent


# ---- edges and the master's transport ----------------------------------------------------------


class Stream:
    """An edge's RunRound stream (the master's RoundStream Protocol), served in-process."""

    def __init__(
        self, make: Callable[[Callable[[], bool]], Iterator[Any]], edge: str, hang: bool, dead: bool
    ) -> None:
        self._make = make
        self._edge = edge
        self._hang = hang
        self._dead = dead
        self.cancelled = threading.Event()

    def __iter__(self) -> Iterator[Message]:
        if self._dead:
            raise FakeRpcError("UNAVAILABLE", f"{self._edge}: connection refused")
        if self._hang:  # a paused edge: nothing until the master gives up on it
            self.cancelled.wait(timeout=60)
            raise FakeRpcError("CANCELLED", "cancelled by the master")
        for result in self._make(lambda: not self.cancelled.is_set()):
            yield Message(
                sender=result.worker or self._edge,
                vector=result.vector.copy(),
                timings=result.timings,
                suspects=result.suspects,
            )
            if self.cancelled.is_set():
                raise FakeRpcError("CANCELLED", "cancelled by the master")

    def cancel(self) -> bool:
        self.cancelled.set()
        return True


@dataclass
class Placed:
    worker: str
    header: PlacementHeader


@dataclass
class Dropped:
    node: str
    job_id: str
    is_edge: bool


class Transport:
    """The master's Transport over in-process edges and workers."""

    def __init__(self, topology: Topology, workers: Workers | None = None) -> None:
        self.topology = topology
        self.workers = workers or Workers([w.name for members in topology.workers for w in members])
        self.edges = {e.name: AggregatorLogic(e.name, self.workers.client) for e in topology.edges}
        self.dead: set[str] = set()
        #: hang(edge, round) -> True: the edge's stream blocks until cancelled
        self.hang: Callable[[str, int], bool] = lambda edge, round_: False
        #: called as on_round(round) once per round, before the first edge is asked
        self.on_round: Callable[[int], None] = lambda round_: None
        self.placed: list[Placed] = []
        self.configured: list[tuple[str, EdgeAssignment]] = []
        self.streams: list[tuple[str, int, Stream]] = []
        self.dropped: list[Dropped] = []
        self.fetched: list[tuple[str, int, int]] = []
        self.unreachable_calls: list[tuple[str, ...]] = []
        self._rounds_seen: set[int] = set()
        self._changed = threading.Condition()

    def kill(self, *names: str) -> None:
        self.dead.update(names)
        self.workers.dead.update(names)

    def place(
        self,
        worker: Node,
        header: PlacementHeader,
        partitions: Sequence[tuple[int, Any, np.ndarray]],
        timeout: float,
    ) -> int:
        assert timeout > 0
        if worker.name in self.dead:
            raise FakeRpcError("UNAVAILABLE", f"{worker.name}: connection refused")
        sent = place(self.workers.logic[worker.address], header, partitions)
        with self._changed:
            self.placed.append(Placed(worker.name, header))
        return sent

    def configure_edge(
        self, job_id: str, epoch: int, assignment: EdgeAssignment, deadline_seconds: float
    ) -> None:
        a = assignment
        if a.edge.name in self.dead:
            raise FakeRpcError("UNAVAILABLE", f"{a.edge.name}: connection refused")
        self.edges[a.edge.name].configure(
            job_id,
            [w.name for w in a.workers],
            [w.address for w in a.workers],
            a.mode,
            deadline_seconds,
            None if a.code_rows is None else np.array(a.code_rows),
            None if a.targets is None else np.array(a.targets),
            a.s_worker,
            epoch,
            a.message_rows,
            a.verify,
            a.verify_slack,
        )
        self.configured.append((job_id, a))

    def run_round(
        self, edge: Node, job_id: str, round_: int, params: np.ndarray, epoch: int, timeout: float
    ) -> Stream:
        if round_ not in self._rounds_seen:
            self._rounds_seen.add(round_)
            self.on_round(round_)
        logic = self.edges[edge.name]
        sent = params.copy()  # the wire copies

        def make(is_active: Callable[[], bool]) -> Iterator[Any]:
            return logic.run_round(job_id, round_, sent, epoch, is_active)

        stream = Stream(make, edge.name, self.hang(edge.name, round_), edge.name in self.dead)
        self.streams.append((edge.name, round_, stream))
        return stream

    def fetch_placement(
        self,
        worker: Node,
        header: PlacementHeader,
        from_epoch: int,
        sources: dict[int, str],
        timeout: float,
    ) -> tuple[int, float]:
        if worker.name in self.dead:
            raise FakeRpcError("UNAVAILABLE", f"{worker.name}: connection refused")
        workers = self.workers

        class Reader:
            def read(self, address: str, job_id: str, epoch: int, partitions: Any) -> Any:
                if address in workers.dead:
                    raise FakeRpcError("UNAVAILABLE", f"{address}: connection refused")
                for j, X, y in workers.logic[address].partition_data(job_id, epoch, partitions):
                    yield j, X, y, int(X.nbytes + y.nbytes)

        _, fetched, seconds = self.workers.logic[worker.address].fetch_placement(
            header, from_epoch, sources, Reader()
        )
        with self._changed:
            self.fetched.append((worker.name, header.epoch, fetched))
        return fetched, seconds

    def drop_job(self, node: Node, job_id: str, is_edge: bool) -> None:
        with self._changed:
            self.dropped.append(Dropped(node.name, job_id, is_edge))
            self._changed.notify_all()
        if node.name in self.dead:
            return
        if is_edge:
            self.edges[node.name].drop(job_id)
        else:
            self.workers.logic[node.address].drop(job_id)

    def unreachable(self, nodes: Sequence[Node]) -> list[str]:
        self.unreachable_calls.append(tuple(n.name for n in nodes))
        return [n.name for n in nodes if n.name in self.dead]

    def wait_for_drops(self, job_id: str, nodes: set[str], timeout: float = 10.0) -> list[Dropped]:
        """The drops of ``job_id`` once every one of ``nodes`` got one (or the timeout)."""

        def reached() -> bool:
            return nodes <= {d.node for d in self.dropped if d.job_id == job_id}

        with self._changed:
            self._changed.wait_for(reached, timeout=timeout)
            return [d for d in self.dropped if d.job_id == job_id]

    def release(self) -> None:
        for _, _, stream in self.streams:
            stream.cancel()
        self.workers.release()
        for logic in self.edges.values():
            logic.close()


def grid(n_edges: int, per_edge: int) -> Topology:
    """Edges e0.. with workers w0.. (edge-major), every address equal to the name."""
    edges = tuple(Node(f"e{e}", f"e{e}") for e in range(n_edges))
    workers = tuple(
        tuple(Node(f"w{e * per_edge + i}", f"w{e * per_edge + i}") for i in range(per_edge))
        for e in range(n_edges)
    )
    return Topology(edges, workers)


class Cluster:
    """The master's ClusterView: a fixed topology and a planner answering from ``plans``."""

    def __init__(
        self, topology: Topology, plans: Callable[[int], tuple[Plan, float]] | None = None
    ) -> None:
        self._topology = topology
        self._plans = plans
        self.plan_calls = 0
        self.reports: list[tuple[tuple[Timing, ...], float, float]] = []

    def topology(self) -> Topology:
        return self._topology

    def plan(
        self,
        partitions: int,
        exclude: Sequence[str] = (),
        max_partitions: int = 0,
        current: Plan | None = None,
    ) -> tuple[Plan, float]:
        self.plan_calls += 1
        assert self._plans is not None, "this test's cluster has no planner"
        return self._plans(self.plan_calls)

    def report(self, timings: Sequence[Timing], round_seconds: float, predicted: float) -> None:
        self.reports.append((tuple(timings), round_seconds, predicted))


# ---- metrics and checkpoints -------------------------------------------------------------------


@dataclass
class RecordingMetrics:
    """Every metrics call, by name (implements the edge's, the master's and the worker's ports)."""

    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, name: str, *args: Any) -> None:
        with self.lock:
            self.calls.append((name, args))

    def of(self, name: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return [args for called, args in self.calls if called == name]

    def counts(self) -> Counter[str]:
        with self.lock:
            return Counter(name for name, _ in self.calls)

    def response(self, node: str, seconds: float) -> None:
        self._record("response", node, seconds)

    def received(self, nbytes: int) -> None:
        self._record("received", nbytes)

    def decoded(self, seconds: float) -> None:
        self._record("decoded", seconds)

    def sent(self, nbytes: int) -> None:
        self._record("sent", nbytes)

    def inconsistent(self, *args: Any) -> None:
        self._record("inconsistent", *args)

    def recovery(self, *args: Any) -> None:
        self._record("recovery", *args)

    def round_done(self, *args: Any) -> None:
        self._record("round_done", *args)

    def known_workers(self, names: Sequence[str]) -> None:
        self._record("known_workers", tuple(names))

    def placed(self, nbytes: int) -> None:
        self._record("placed", nbytes)

    def matrix_placed(self, scheme: str, nbytes: int, block_nnz: Sequence[int]) -> None:
        self._record("matrix_placed", scheme, nbytes, tuple(block_nnz))

    def matrix_worker(self, worker: str, seconds: float) -> None:
        self._record("matrix_worker", worker, seconds)

    def matrix_product(self, scheme: str, seconds: float) -> None:
        self._record("matrix_product", scheme, seconds)

    def computed(self, seconds: float, nbytes: int) -> None:
        self._record("computed", seconds, nbytes)

    def abandoned_round(self) -> None:
        self._record("abandoned_round")

    def holding(self, partitions: int) -> None:
        self._record("holding", partitions)


class MemoryCheckpoints:
    """A CheckpointStore in a dict."""

    def __init__(self) -> None:
        self.records: dict[str, SavedJob] = {}
        self.checkpoints: dict[str, Checkpoint] = {}
        self.quarantined: list[tuple[str, str]] = []
        self.saves: list[tuple[str, int]] = []

    def save_job(self, job: SavedJob) -> None:
        self.records[job.config.job_id] = job

    def save(self, job_id: str, checkpoint: Checkpoint) -> None:
        self.checkpoints[job_id] = replace(checkpoint, params=np.array(checkpoint.params))
        self.saves.append((job_id, checkpoint.round))

    def load(self, job_id: str) -> Checkpoint | None:
        return self.checkpoints.get(job_id)

    def jobs(self) -> list[SavedJob | DamagedCheckpoint]:
        return list(self.records.values())

    def quarantine(self, job_id: str, reason: str) -> None:
        self.quarantined.append((job_id, reason))

    def forget(self, job_id: str) -> None:
        self.records.pop(job_id, None)
        self.checkpoints.pop(job_id, None)
