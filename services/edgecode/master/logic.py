"""The master's logic: jobs, data placement, rounds, decoding, optimizer steps, checkpoints.

No gRPC here: edges, workers and the coordinator are reached through the injected
:class:`Transport` and :class:`ClusterView`.

Schemes, all on the same code path (placement, edge fan-out, first-decodable-set, decode):

- ``hgc``: hierarchical code; edges decode (DECODE mode), the master waits for any decodable set
  of edges. s from the job, or the planner's plan when the job's s_edge is negative.
- ``flat``: cyclic repetition over all workers; edges forward (FORWARD mode), the master waits
  for any N - s workers.
- ``uncoded``: every partition on one worker, plain sums; the master waits for every worker.
- ``ignore``: uncoded placement; the master takes the first N - s workers and rescales by
  N / (N - s): fast and biased (the baseline that is NOT exact).

A round that cannot be decoded before its deadline never produces a gradient: the master
re-plans around the nodes that did not answer (new placement epoch) and retries once, then fails
the job with a message that says what was missing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgecode.codes.combine import MessageBuffer
from edgecode.codes.flat import GradientCode, cyclic_repetition, placement_code
from edgecode.codes.hierarchical import HierarchicalCode, hierarchical, hierarchical_from_counts
from edgecode.errors import Infeasible, InvalidInput, NotDecodable, RoundFailed, UnknownJob
from edgecode.learning.datasets import check_dataset_spec, load_split
from edgecode.learning.models import MODEL_NAMES, get_model
from edgecode.learning.optimizers import get_optimizer, optimizer_from_state
from edgecode.planning.plans import SCHEMES
from edgecode.planning.spec import Plan

log = logging.getLogger(__name__)

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "pending",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
FINAL = (SUCCEEDED, FAILED, CANCELLED)
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class JobConfig:
    scheme: str = "hgc"
    dataset: str = "breast_cancer"
    model: str = ""
    rounds: int = 50
    optimizer: str = "nesterov"
    learning_rate: float = 0.0
    s_edge: int = 1
    s_worker: int = 1
    s_flat: int = 1
    seed: int = 0
    partitions: int = 0
    checkpoint_every: int = 10
    round_deadline_seconds: float = 30.0
    l2: float = 0.0
    job_id: str = ""
    record_params: bool = False
    profile_rounds: int = 3
    replan_every: int = 0

    def validate(self) -> None:
        """Refuse at submission what could only fail later (INVALID_ARGUMENT, nothing started)."""
        if self.scheme not in SCHEMES:
            raise InvalidInput(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if self.model and self.model not in MODEL_NAMES:
            raise InvalidInput(
                f"model must be one of {MODEL_NAMES} (or empty: from the data), got {self.model!r}"
            )
        if self.optimizer not in ("gd", "nesterov"):
            raise InvalidInput(f"optimizer must be gd or nesterov, got {self.optimizer!r}")
        if not (self.learning_rate >= 0 and math.isfinite(self.learning_rate)):
            raise InvalidInput(
                f"learning_rate must be a finite number >= 0 (0 = default), got {self.learning_rate}"
            )
        if not (
            math.isfinite(self.round_deadline_seconds) and self.round_deadline_seconds <= 86_400
        ):
            raise InvalidInput(
                f"round_deadline_seconds must be finite and at most a day, got {self.round_deadline_seconds}"
            )
        if not math.isfinite(self.l2):
            raise InvalidInput(f"l2 must be finite, got {self.l2}")
        try:
            check_dataset_spec(self.dataset)
        except (ValueError, FileNotFoundError) as exc:
            raise InvalidInput(f"dataset: {exc}") from None
        if not 1 <= self.rounds <= 1_000_000:
            raise InvalidInput(f"rounds must be in [1, 1000000], got {self.rounds}")
        if self.round_deadline_seconds <= 0:
            raise InvalidInput(
                f"round_deadline_seconds must be > 0, got {self.round_deadline_seconds}"
            )
        if (
            min(
                self.partitions,
                self.checkpoint_every,
                self.s_flat,
                self.profile_rounds,
                self.replan_every,
            )
            < 0
        ):
            raise InvalidInput(
                "partitions, checkpoint_every, s_flat, profile_rounds and replan_every must be >= 0"
            )
        if not self.l2 >= 0:
            raise InvalidInput(f"l2 must be >= 0, got {self.l2}")
        if self.job_id and not JOB_ID.match(self.job_id):
            raise InvalidInput(f"job_id must be 1-64 letters, digits, - or _, got {self.job_id!r}")


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    link_seconds: float = 0.0


@dataclass(frozen=True)
class Topology:
    """The alive edges, each with its alive workers (sorted by name)."""

    edges: tuple[Node, ...]
    workers: tuple[tuple[Node, ...], ...]

    def without(self, dead: set[str]) -> Topology:
        edges, workers = [], []
        for edge, members in zip(self.edges, self.workers, strict=True):
            alive = tuple(w for w in members if w.name not in dead)
            if edge.name not in dead and alive:
                edges.append(edge)
                workers.append(alive)
        return Topology(tuple(edges), tuple(workers))


class ClusterView(Protocol):
    def topology(self) -> Topology: ...

    def plan(self, partitions: int) -> tuple[Plan, float]:
        """The planner's plan and its expected round seconds."""
        ...

    def report(self, timings: Sequence[Any], round_seconds: float, predicted: float) -> None: ...


class RoundStream(Protocol):
    def __iter__(self) -> Iterator[Any]: ...

    def cancel(self) -> bool: ...


class Transport(Protocol):
    def place(
        self,
        worker: Node,
        header: dict[str, Any],
        partitions: Sequence[tuple[int, Any, np.ndarray]],
    ) -> int:
        """Stream a worker its partitions; returns the bytes sent."""
        ...

    def configure_edge(
        self,
        edge: Node,
        job_id: str,
        workers: Sequence[Node],
        mode: str,
        code_rows: np.ndarray | None,
        targets: np.ndarray | None,
        s_worker: int,
        deadline_seconds: float,
    ) -> None: ...

    def run_round(
        self, edge: Node, job_id: str, round_: int, params: np.ndarray, epoch: int, timeout: float
    ) -> RoundStream:
        """Messages as ``EdgeArrival``s."""
        ...

    def unreachable(self, nodes: Sequence[Node]) -> list[str]:
        """Names of the nodes that do not answer a health check now (dead or paused)."""
        ...


@dataclass(frozen=True)
class EdgeArrival:
    edge: str
    vector: np.ndarray
    worker: str
    combined: tuple[str, ...]
    timings: tuple[Any, ...]


@dataclass
class RoundRecord:
    round: int
    seconds: float
    loss: float
    stragglers: int
    wall_seconds: float


@dataclass
class Layout:
    """What a placement epoch set up: the code, and who holds what."""

    scheme: str
    topology: Topology
    n_partitions: int
    epoch: int
    code: HierarchicalCode | GradientCode
    # global worker order (edge-major) and their names
    worker_names: tuple[str, ...]
    s_tolerated: int
    predicted_round_seconds: float = 0.0
    plan_json: str = ""


@dataclass
class Job:
    job_id: str
    config: JobConfig
    state: str = PENDING
    message: str = ""
    round: int = 0
    history: list[RoundRecord] = field(default_factory=list)
    params: np.ndarray | None = None
    accuracy: float = float("nan")
    last_timings: list[Any] = field(default_factory=list)
    layout: Layout | None = None
    param_history: list[np.ndarray] = field(default_factory=list)
    placements: int = 0
    setup_seconds: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)
    started: float = field(default_factory=time.monotonic)


class MasterLogic:
    def __init__(
        self,
        transport: Transport,
        cluster: ClusterView,
        checkpoint_dir: Path | None = None,
        metrics: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._cluster = cluster
        self._checkpoints = checkpoint_dir
        self._metrics = metrics
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="master-io")
        self._counter = 0

    # ---- job API -------------------------------------------------------------------------
    def submit(self, config: JobConfig) -> str:
        config.validate()
        with self._lock:
            self._counter += 1
            job_id = config.job_id or f"job-{int(time.time())}-{self._counter}"
            if job_id in self._jobs and self._jobs[job_id].state not in FINAL:
                raise InvalidInput(f"job {job_id!r} is already running")
            job = Job(job_id=job_id, config=replace(config, job_id=job_id))
            self._jobs[job_id] = job
        self._save_spec(job)
        threading.Thread(target=self._run, args=(job,), name=f"job-{job_id}", daemon=True).start()
        return job_id

    def job(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"no job {job_id!r}")
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.job(job_id)
        job.cancel.set()
        return job

    def watch(self, job_id: str, is_active: Callable[[], bool]) -> Iterator[Job]:
        """Yield the job after each change until it ends (or the watcher goes away)."""
        job = self.job(job_id)
        seen = -1
        while is_active():
            with job.changed:
                if job.round == seen and job.state not in FINAL:
                    job.changed.wait(timeout=1.0)
                current = job.round
            if current != seen or job.state in FINAL:
                seen = current
                yield job
                if job.state in FINAL:
                    return

    def resume_all(self) -> list[str]:
        """Resume every job whose checkpoint says it did not finish (after a master restart)."""
        if self._checkpoints is None or not self._checkpoints.is_dir():
            return []
        resumed = []
        for spec_file in sorted(self._checkpoints.glob("*/job.json")):
            try:
                saved = json.loads(spec_file.read_text())
                if saved.get("state") in FINAL:
                    continue
                config = JobConfig(**saved["config"])
                job = Job(job_id=config.job_id, config=config)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("ignoring unreadable checkpoint %s: %s", spec_file, exc)
                continue
            restored = self._load_checkpoint(job)
            if restored is not None:  # show the checkpointed progress at once
                job.params, _, job.round, job.history = restored
            with self._lock:
                self._jobs[job.job_id] = job
            threading.Thread(
                target=self._run, args=(job,), name=f"job-{job.job_id}", daemon=True
            ).start()
            resumed.append(job.job_id)
        return resumed

    # ---- running a job ---------------------------------------------------------------------
    def _run(self, job: Job) -> None:
        try:
            self._train(job)
        except Exception as exc:  # a job failure must never take the master down
            log.exception("job %s failed", job.job_id)
            self._set(job, state=FAILED, message=str(exc) or type(exc).__name__)
        finally:
            self._save_spec(job)

    def _train(self, job: Job) -> None:
        cfg = job.config
        rng = np.random.default_rng(cfg.seed)
        train, test = load_split(cfg.dataset, rng)
        model_name = cfg.model or train.default_model
        model = get_model(model_name, l2=cfg.l2)
        n_params = model.n_params(train.n_features, train.n_classes)
        params = model.init_params(rng, train.n_features, train.n_classes)
        lr = cfg.learning_rate or None
        optimizer = get_optimizer(cfg.optimizer, **({"lr": lr} if lr else {}))
        start_round = 0
        restored = self._load_checkpoint(job)
        if restored is not None:
            params, optimizer_state, start_round, history = restored
            optimizer = optimizer_from_state(optimizer_state)
            job.history = history
            log.info("job %s resumes at round %d from its checkpoint", job.job_id, start_round)
        self._set(job, state=RUNNING, round=start_round)
        job.params = params
        layout = self._lay_out(job, train, model_name, epoch=len(job.history) + 1)
        job.setup_seconds = self._clock() - job.started
        job.started = self._clock()  # wall time of the rounds, without the one-time setup
        for round_ in range(start_round, cfg.rounds):
            if job.cancel.is_set():
                self._set(job, state=CANCELLED, message=f"cancelled after round {round_}")
                self._checkpoint(job, optimizer, round_)
                return
            if self._replan_due(cfg, round_):
                layout = self._replan(job, train, model_name, layout)
            started = self._clock()
            try:
                gradient, stragglers, timings = self._round(job, layout, round_, params)
            except RoundFailed as exc:
                dead = self._unreachable(layout)
                log.warning(
                    "job %s round %d: %s; unreachable: %s", job.job_id, round_, exc, sorted(dead)
                )
                try:
                    layout = self._lay_out(
                        job, train, model_name, epoch=layout.epoch + 1, dead=dead
                    )
                    gradient, stragglers, timings = self._round(job, layout, round_, params)
                except (RoundFailed, Infeasible) as again:
                    raise RoundFailed(
                        f"round {round_} failed: {exc}; after re-planning around the unreachable nodes "
                        f"{sorted(dead) or 'none'}: {again}. The model keeps the parameters of round {round_}."
                    ) from again
            if gradient.shape != (n_params,) or not np.all(np.isfinite(gradient)):
                raise RoundFailed(
                    f"round {round_}: decoded gradient is not finite; model left untouched"
                )
            params = optimizer.step(params, gradient, train.n_rows)
            seconds = self._clock() - started
            loss = model.loss(params, train.X, train.y) / train.n_rows
            record = RoundRecord(round_, seconds, loss, stragglers, self._clock() - job.started)
            with job.changed:
                job.params = params
                job.history.append(record)
                if cfg.record_params:
                    job.param_history.append(params.copy())
                job.round = round_ + 1
                job.last_timings = list(timings)
                job.changed.notify_all()
            self._observe(job, layout, record, timings)
            if cfg.checkpoint_every and (round_ + 1) % cfg.checkpoint_every == 0:
                self._checkpoint(job, optimizer, round_ + 1)
        job.accuracy = (
            float(model.accuracy(params, test.X, test.y)) if test.n_rows else float("nan")
        )
        self._checkpoint(job, optimizer, cfg.rounds)
        self._set(job, state=SUCCEEDED, message=f"{cfg.rounds} rounds")

    def _replan_due(self, cfg: JobConfig, round_: int) -> bool:
        if cfg.scheme != "hgc" or cfg.s_edge >= 0 or round_ == 0:
            return False
        if round_ == cfg.profile_rounds:
            return True
        return (
            bool(cfg.replan_every)
            and round_ > cfg.profile_rounds
            and ((round_ - cfg.profile_rounds) % cfg.replan_every == 0)
        )

    def _replan(self, job: Job, train: Any, model_name: str, layout: Layout) -> Layout:
        """Ask the planner again (with the runtimes fitted from the rounds so far) and re-place
        the data only when the plan changed."""
        plan, predicted = self._cluster.plan(job.config.partitions)
        if json.dumps(_plan_dict(plan)) == layout.plan_json:
            layout.predicted_round_seconds = predicted
            return layout
        log.info(
            "job %s: re-planning at round %d (expected %.4f s/round)",
            job.job_id,
            job.round,
            predicted,
        )
        return self._lay_out(job, train, model_name, epoch=layout.epoch + 1, plan=(plan, predicted))

    def _unreachable(self, layout: Layout) -> set[str]:
        nodes = list(layout.topology.edges) + [
            w for members in layout.topology.workers for w in members
        ]
        return set(self._transport.unreachable(nodes))

    def _set(self, job: Job, **changes: Any) -> None:
        with job.changed:
            for key, value in changes.items():
                setattr(job, key, value)
            job.changed.notify_all()

    def _observe(
        self, job: Job, layout: Layout, record: RoundRecord, timings: Sequence[Any]
    ) -> None:
        m = self._metrics
        if m is not None:
            m.round_seconds.labels(job.config.scheme).observe(record.seconds)
            m.rounds.labels(job.config.scheme).inc()
            m.round_stragglers.set(record.stragglers)
            m.stragglers.labels("worker").inc(record.stragglers)
            m.loss.labels(job.job_id).set(record.loss)
            m.predicted_round_seconds.set(layout.predicted_round_seconds)
            for t in timings:
                m.worker_latency.labels(t.node, getattr(t, "edge", "")).observe(t.seconds)
        try:
            self._cluster.report(timings, record.seconds, layout.predicted_round_seconds)
        except Exception as exc:  # the coordinator being away must not stop training
            log.debug("could not report timings: %s", exc)

    # ---- placement ------------------------------------------------------------------------
    def _lay_out(
        self,
        job: Job,
        train: Any,
        model_name: str,
        epoch: int,
        dead: set[str] | None = None,
        plan: tuple[Plan, float] | None = None,
    ) -> Layout:
        cfg = job.config
        topology = self._cluster.topology().without(dead or set())
        if not topology.edges:
            raise RoundFailed("no alive edges with alive workers")
        layout = self._build_code(cfg, topology, epoch, plan)
        job.layout = layout
        job.placements += 1
        features_labels = train.partition(layout.n_partitions)
        B = layout.code.B
        workers = [w for members in topology.workers for w in members]
        header_base = {
            "job_id": job.job_id,
            "model": model_name,
            "n_features": train.n_features,
            "n_classes": train.n_classes,
            "l2": cfg.l2,
            "n_partitions": layout.n_partitions,
            "epoch": epoch,
        }
        uploads = []
        for index, worker in enumerate(workers):
            held = [int(j) for j in np.flatnonzero(B[index])]
            if not held:
                continue
            header = dict(
                header_base, partitions=held, coefficients=[float(B[index, j]) for j in held]
            )
            chunks = [(j, features_labels[j][0], features_labels[j][1]) for j in held]
            uploads.append(self._pool.submit(self._transport.place, worker, header, chunks))
        placed = sum(f.result() for f in uploads)
        if self._metrics is not None:
            self._metrics.placed_bytes.inc(placed)
        self._configure_edges(job, layout)
        return layout

    def _build_code(
        self,
        cfg: JobConfig,
        topology: Topology,
        epoch: int,
        given_plan: tuple[Plan, float] | None = None,
    ) -> Layout:
        m = [len(w) for w in topology.workers]
        names = tuple(w.name for members in topology.workers for w in members)
        n_workers = len(names)
        predicted, plan_json = 0.0, ""
        code: HierarchicalCode | GradientCode
        if cfg.scheme == "hgc":
            if cfg.s_edge < 0:
                plan, predicted = given_plan or self._cluster.plan(cfg.partitions)
                code = _code_from_plan(plan, topology)
                plan_json = json.dumps(_plan_dict(plan))
            else:
                s_edge = min(cfg.s_edge, len(m) - 1)
                s_worker = [min(cfg.s_worker, mi - 1) for mi in m]
                code = hierarchical(m, s_edge, s_worker, cfg.partitions or None)
            tolerated = code.s_edge
        elif cfg.scheme == "flat":
            s = min(cfg.s_flat, n_workers - 1)
            code = (
                cyclic_repetition(n_workers, s)
                if not cfg.partitions
                else _flat_code(n_workers, s, cfg.partitions)
            )
            tolerated = s
        else:  # uncoded and ignore: every partition on one worker, plain sums
            K = cfg.partitions or n_workers
            holders = [[j % n_workers] for j in range(K)]
            code = placement_code(holders, n_workers, 0)
            tolerated = min(cfg.s_flat, n_workers - 1) if cfg.scheme == "ignore" else 0
        return Layout(
            scheme=cfg.scheme,
            topology=topology,
            n_partitions=code.n_partitions,
            epoch=epoch,
            code=code,
            worker_names=names,
            s_tolerated=tolerated,
            predicted_round_seconds=predicted,
            plan_json=plan_json,
        )

    def _configure_edges(self, job: Job, layout: Layout) -> None:
        """Tell every taking-part edge its taking-part workers (those that hold data) and, in
        DECODE mode, their code rows and the edge's targets."""
        code = layout.code
        futures = []
        offset = 0
        for e, (edge, members) in enumerate(
            zip(layout.topology.edges, layout.topology.workers, strict=True)
        ):
            rows = code.B[offset : offset + len(members)]
            offset += len(members)
            holding = [w for w in range(len(members)) if np.any(rows[w])]
            if not holding:
                continue
            workers = [members[w] for w in holding]
            code_rows, targets, s_worker, mode = None, None, 0, "forward"
            if isinstance(code, HierarchicalCode):
                assert code.edge_code is not None
                mode, code_rows, s_worker = "decode", rows[holding], code.s_workers[e]
                targets = np.array(code.edge_code.B[code.active_edges.index(e)])
            elif layout.scheme == "uncoded":
                mode, code_rows = "decode", rows[holding]
                targets = code_rows.sum(axis=0)
            futures.append(
                self._pool.submit(
                    self._transport.configure_edge,
                    edge,
                    job.job_id,
                    workers,
                    mode,
                    code_rows,
                    targets,
                    s_worker,
                    job.config.round_deadline_seconds,
                )
            )
        for future in futures:
            future.result()

    # ---- one round --------------------------------------------------------------------------
    def _round(
        self, job: Job, layout: Layout, round_: int, params: np.ndarray
    ) -> tuple[np.ndarray, int, list[Any]]:
        deadline_seconds = job.config.round_deadline_seconds
        arrivals: queue.Queue[tuple[str, EdgeArrival | None, BaseException | None]] = queue.Queue()
        streams: dict[str, RoundStream] = {}
        edges = self._participating_edges(layout)
        for edge in edges:
            stream = self._transport.run_round(
                edge, job.job_id, round_, params, layout.epoch, deadline_seconds
            )
            streams[edge.name] = stream
            if self._metrics is not None:
                self._metrics.sent_bytes.inc(params.nbytes)
            self._pool.submit(_drain, edge.name, stream, arrivals)
        try:
            return self._collect(job, layout, arrivals, edges, params.size, deadline_seconds)
        finally:
            for stream in streams.values():
                stream.cancel()

    def _participating_edges(self, layout: Layout) -> list[Node]:
        if isinstance(layout.code, HierarchicalCode):
            return [layout.topology.edges[e] for e in layout.code.active_edges]
        return list(layout.topology.edges)

    def _collect(
        self,
        job: Job,
        layout: Layout,
        arrivals: queue.Queue[Any],
        edges: list[Node],
        length: int,
        deadline_seconds: float,
    ) -> tuple[np.ndarray, int, list[Any]]:
        start = self._clock()
        deadline = start + deadline_seconds
        hierarchical_code = isinstance(layout.code, HierarchicalCode)
        edge_index = {edge.name: i for i, edge in enumerate(layout.topology.edges)}
        worker_index = {name: i for i, name in enumerate(layout.worker_names)}
        senders = (
            len(layout.topology.edges)
            if hierarchical_code or layout.scheme == "uncoded"
            else len(layout.worker_names)
        )
        buffer = MessageBuffer(senders, length)
        timings: dict[str, Any] = {}
        open_streams = len(edges)
        failed_edges: list[str] = []
        while open_streams:
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            try:
                edge_name, arrival, error = arrivals.get(timeout=remaining)
            except queue.Empty:
                break
            if arrival is None:
                open_streams -= 1
                if error is not None:
                    failed_edges.append(edge_name)
                continue
            for t in arrival.timings:
                timings[t.node] = t
            if self._metrics is not None:
                self._metrics.peer_latency.labels(edge_name).observe(self._clock() - start)
                self._metrics.received_bytes.inc(arrival.vector.nbytes)
            if arrival.vector.shape != (length,):
                continue
            sender = (
                edge_index[edge_name]
                if senders == len(layout.topology.edges)
                else worker_index.get(arrival.worker)
            )
            if sender is None:
                continue
            buffer.add(sender, arrival.vector)
            result = self._try_decode(layout, buffer)
            if result is not None:
                stragglers = len(layout.worker_names) - _contributors(
                    layout, buffer, arrival, timings
                )
                return result, stragglers, list(timings.values())
        raise RoundFailed(
            f"round could not be decoded within {deadline_seconds:g} s: {len(buffer.senders)} usable "
            f"results arrived; edges that failed: {failed_edges or 'none'}"
        )

    def _try_decode(self, layout: Layout, buffer: MessageBuffer) -> np.ndarray | None:
        code = layout.code
        start = self._clock()
        try:
            if isinstance(code, HierarchicalCode):
                vector = code.master_decode_vector(buffer.senders)
            elif layout.scheme == "uncoded":
                if len(buffer.senders) < len(layout.topology.edges):
                    return None
                vector = np.ones(len(layout.topology.edges))
            elif layout.scheme == "ignore":
                needed = len(layout.worker_names) - layout.s_tolerated
                if len(buffer.senders) < needed:
                    return None
                vector = np.full(len(layout.worker_names), len(layout.worker_names) / needed)
            else:
                vector = code.decode_vector(buffer.senders)
        except NotDecodable:
            return None
        result = buffer.combine(vector)
        if self._metrics is not None:
            self._metrics.decode_seconds.observe(self._clock() - start)
        return result

    # ---- checkpoints ----------------------------------------------------------------------
    def _job_dir(self, job: Job) -> Path | None:
        if self._checkpoints is None:
            return None
        path = self._checkpoints / job.job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _save_spec(self, job: Job) -> None:
        folder = self._job_dir(job)
        if folder is None:
            return
        _atomic_write(
            folder / "job.json",
            json.dumps({"config": asdict(job.config), "state": job.state}).encode(),
        )

    def _checkpoint(self, job: Job, optimizer: Any, rounds_done: int) -> None:
        folder = self._job_dir(job)
        if folder is None or job.params is None:
            return
        state = {
            "round": rounds_done,
            "optimizer": _jsonable(optimizer.state_dict()),
            "history": [asdict(r) for r in job.history[:rounds_done]],
            "params": job.params.tolist(),
        }
        _atomic_write(folder / "checkpoint.json", json.dumps(state).encode())

    def _load_checkpoint(
        self, job: Job
    ) -> tuple[np.ndarray, dict[str, Any], int, list[RoundRecord]] | None:
        folder = self._job_dir(job)
        if folder is None or not (folder / "checkpoint.json").exists():
            return None
        state = json.loads((folder / "checkpoint.json").read_text())
        optimizer_state = state["optimizer"]
        if optimizer_state.get("iterate") is not None:
            optimizer_state["iterate"] = np.asarray(optimizer_state["iterate"], dtype=np.float64)
        history = [RoundRecord(**r) for r in state["history"]]
        return (
            np.asarray(state["params"], dtype=np.float64),
            optimizer_state,
            int(state["round"]),
            history,
        )

    def close(self) -> None:
        for job in list(self._jobs.values()):
            job.cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _drain(edge: str, stream: RoundStream, arrivals: queue.Queue[Any]) -> None:
    """Push every message of one edge's stream, then an end marker (with the error, if any)."""
    error: BaseException | None = None
    try:
        for arrival in stream:
            arrivals.put((edge, arrival, None))
    except BaseException as exc:  # a failed or cancelled stream ends that edge's contribution
        error = exc
    arrivals.put((edge, None, error))


def _contributors(
    layout: Layout, buffer: MessageBuffer, arrival: EdgeArrival, timings: dict[str, Any]
) -> int:
    return sum(1 for t in timings.values() if t.arrived) if timings else len(buffer.senders)


def _flat_code(n: int, s: int, K: int) -> GradientCode:
    holders = [[(j + u) % n for u in range(s + 1)] for j in range(K)]
    return placement_code([sorted(set(h)) for h in holders], n, s)


def _code_from_plan(plan: Plan, topology: Topology) -> HierarchicalCode:
    by_name = {e.name: e for e in plan.edges}
    edge_partitions, s_workers, loads = [], [], []
    for edge, members in zip(topology.edges, topology.workers, strict=True):
        planned = by_name.get(edge.name)
        worker_loads = {w.name: w.partitions for w in planned.workers} if planned else {}
        edge_partitions.append(planned.partitions if planned else 0)
        s_workers.append(planned.s_worker if planned else 0)
        loads.append([int(worker_loads.get(w.name, 0)) for w in members])
    try:
        return hierarchical_from_counts(
            plan.partitions, plan.s_edge, edge_partitions, s_workers, loads
        )
    except Infeasible as exc:
        raise RoundFailed(f"the planner's plan does not fit the alive nodes: {exc}") from exc


def _plan_dict(plan: Plan) -> dict[str, Any]:
    return {
        "s_edge": plan.s_edge,
        "partitions": plan.partitions,
        "expected_round_seconds": plan.expected_round_seconds,
        "edges": [
            {
                "name": e.name,
                "s_worker": e.s_worker,
                "partitions": e.partitions,
                "workers": [
                    {"name": w.name, "selected": w.selected, "partitions": w.partitions}
                    for w in e.workers
                ],
            }
            for e in plan.edges
        ],
    }


def _jsonable(state: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in state.items()}


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync, then rename over the target: a crash leaves the old or
    the new file, never a torn one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
