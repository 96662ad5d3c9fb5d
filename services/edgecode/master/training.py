"""One training job's life: load the data, lay the code out, place the data, run rounds.

A round: the master opens RunRound on every taking-part edge and hands the streams to the round
engine (:mod:`edgecode.rounds`) with the layout's rule; the first decodable set ends the round,
the rest are cancelled, and the decoded gradient takes one optimizer step. A round that cannot
be decoded before its deadline never produces a gradient: the master health-checks every node,
lays the code out again around the unreachable ones (a new placement epoch) and retries the
round once; if that fails too, the job fails with a message naming what was missing and keeps
the parameters of its last completed round.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecode.errors import Infeasible, RoundFailed
from edgecode.learning.datasets import Dataset, load_split
from edgecode.learning.models import Model, get_model
from edgecode.learning.optimizers import Optimizer, get_optimizer, optimizer_from_state
from edgecode.master.checkpoints import Checkpoint, CheckpointStore, SavedJob, config_hash
from edgecode.master.layout import Layout, build_layout
from edgecode.master.ports import ClusterView, MasterMetricsPort, Node, Transport
from edgecode.planning.spec import Plan
from edgecode.records import (
    CANCELLED,
    FINAL,
    PENDING,
    RUNNING,
    SUCCEEDED,
    JobConfig,
    JobStatus,
    PlacementHeader,
    RoundRecord,
    Timing,
)
from edgecode.rounds import Outcome, Round, StreamSource

log = logging.getLogger(__name__)


@dataclass
class Job:
    """A training job's live state; :meth:`status` is the snapshot the API returns."""

    job_id: str
    config: JobConfig
    state: str = PENDING
    message: str = ""
    round: int = 0
    history: list[RoundRecord] = field(default_factory=list)
    params: np.ndarray | None = None
    accuracy: float = float("nan")
    last_timings: tuple[Timing, ...] = ()
    layout: Layout | None = None
    param_history: list[np.ndarray] = field(default_factory=list)
    placements: int = 0
    setup_seconds: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)
    started: float = field(default_factory=time.monotonic)

    def status(self, include_params: bool = False) -> JobStatus:
        with self.changed:
            layout = self.layout
            return JobStatus(
                job_id=self.job_id,
                state=self.state,
                config=self.config,
                round=self.round,
                message=self.message,
                history=tuple(self.history),
                accuracy=self.accuracy,
                predicted_round_seconds=layout.predicted_round_seconds if layout else 0.0,
                plan_json=layout.plan_json if layout else "",
                last_timings=self.last_timings,
                placements=self.placements,
                setup_seconds=self.setup_seconds,
                params=self.params if include_params else None,
                param_history=tuple(self.param_history) if include_params else (),
            )

    def update(self, **changes: Any) -> None:
        """Change fields and wake the watchers."""
        with self.changed:
            for key, value in changes.items():
                setattr(self, key, value)
            self.changed.notify_all()

    @property
    def finished(self) -> bool:
        return self.state in FINAL


@dataclass
class _Problem:
    """The data, model and optimizer of a job."""

    train: Dataset
    test: Dataset
    model_name: str
    model: Model
    n_params: int


class Trainer:
    """Runs one job to its end (succeeded, failed or cancelled); never raises."""

    def __init__(
        self,
        job: Job,
        transport: Transport,
        cluster: ClusterView,
        store: CheckpointStore,
        metrics: MasterMetricsPort,
        pool: Executor,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job = job
        self._transport = transport
        self._cluster = cluster
        self._store = store
        self._metrics = metrics
        self._pool = pool
        self._clock = clock
        self._reporting = threading.Lock()
        #: every node any placement epoch of this job used, by name, and whether it is an edge
        self._used: dict[str, tuple[Node, bool]] = {}

    # ---- the job ------------------------------------------------------------------------------
    def run(self) -> None:
        job = self.job
        try:
            self._train()
        except Exception as exc:  # a job failure must never take the master down
            log.exception("job %s failed", job.job_id)
            job.update(state="failed", message=str(exc) or type(exc).__name__)
        finally:
            self._store.save_job(SavedJob(job.config, job.state, job.message))
            self._drop_everywhere()

    def _train(self) -> None:
        job, cfg = self.job, self.job.config
        problem, params, optimizer, start_round = self._prepare()
        job.update(state=RUNNING, round=start_round, params=params)
        layout = self._lay_out(problem, epoch=len(job.history) + 1)
        job.setup_seconds = self._clock() - job.started
        job.started = self._clock()  # wall time of the rounds, without the one-time setup
        for round_ in range(start_round, cfg.rounds):
            if job.cancel.is_set():
                # Checkpoint first: whoever sees the job end must find these rounds saved.
                self._checkpoint(optimizer, round_)
                job.update(state=CANCELLED, message=f"cancelled after round {round_}")
                return
            if self._replan_due(round_):
                layout = self._replan(problem, layout)
            started = self._clock()
            outcome, layout = self._round_or_recover(problem, layout, round_, params)
            gradient = outcome.decoded.value
            if gradient.shape != (problem.n_params,) or not np.all(np.isfinite(gradient)):
                raise RoundFailed(
                    f"round {round_}: decoded gradient is not finite; model left untouched"
                )
            params = optimizer.step(params, gradient, problem.train.n_rows)
            self._finish_round(problem, layout, round_, params, outcome, self._clock() - started)
            if cfg.checkpoint_every and (round_ + 1) % cfg.checkpoint_every == 0:
                self._checkpoint(optimizer, round_ + 1)
        test = problem.test
        accuracy = float(problem.model.accuracy(params, test.X, test.y)) if test.n_rows else np.nan
        job.update(accuracy=accuracy)
        self._checkpoint(optimizer, cfg.rounds)
        job.update(state=SUCCEEDED, message=f"{cfg.rounds} rounds")

    def _prepare(self) -> tuple[_Problem, np.ndarray, Optimizer, int]:
        job, cfg = self.job, self.job.config
        rng = np.random.default_rng(cfg.seed)
        train, test = load_split(cfg.dataset, rng)
        model_name = cfg.model or train.default_model
        model = get_model(model_name, l2=cfg.l2)
        n_params = model.n_params(train.n_features, train.n_classes)
        params = model.init_params(rng, train.n_features, train.n_classes)
        lr = cfg.learning_rate or None
        optimizer = get_optimizer(cfg.optimizer, **({"lr": lr} if lr else {}))
        problem = _Problem(train, test, model_name, model, n_params)
        restored = self._store.load(job.job_id)
        if restored is not None and restored.config_hash not in ("", config_hash(cfg)):
            # A finished job's id submitted again with another config: a new job.
            log.warning("job %s: ignoring the checkpoint of another config", job.job_id)
            restored = None
        if restored is None:
            return problem, params, optimizer, 0
        if restored.params.shape != (n_params,):
            raise RoundFailed(
                f"the checkpoint holds {restored.params.size} parameters, the model has {n_params}"
            )
        if restored.round > cfg.rounds:
            raise RoundFailed(f"the checkpoint is at round {restored.round} of {cfg.rounds}")
        job.history = list(restored.history)
        log.info("job %s resumes at round %d from its checkpoint", job.job_id, restored.round)
        return problem, restored.params, optimizer_from_state(restored.optimizer), restored.round

    # ---- placement ----------------------------------------------------------------------------
    def _lay_out(
        self,
        problem: _Problem,
        epoch: int,
        dead: set[str] | None = None,
        plan: tuple[Plan, float] | None = None,
    ) -> Layout:
        """Build the code on the alive nodes, place every worker's partitions, configure the
        edges; the new epoch is in use once this returns."""
        cfg = self.job.config
        topology = self._cluster.topology().without(dead or set())
        self._used.update({node.name: (node, node in topology.edges) for node in topology.nodes})
        if not topology.edges:
            raise RoundFailed("no alive edges with alive workers")
        if cfg.scheme == "hgc" and cfg.s_edge < 0 and plan is None:
            plan = self._cluster.plan(cfg.partitions)
        layout = build_layout(cfg, topology, epoch, plan)
        self._place(problem, layout)
        futures = [
            self._pool.submit(
                self._transport.configure_edge,
                self.job.job_id,
                assignment,
                cfg.round_deadline_seconds,
            )
            for assignment in layout.assignments()
        ]
        for future in futures:
            future.result()
        self.job.update(layout=layout, placements=self.job.placements + 1)
        return layout

    def _place(self, problem: _Problem, layout: Layout) -> None:
        train, cfg = problem.train, self.job.config
        blocks = train.partition(layout.n_partitions)
        uploads = []
        for worker, held, coefficients in layout.uploads():
            header = PlacementHeader(
                job_id=self.job.job_id,
                model=problem.model_name,
                n_features=train.n_features,
                n_classes=train.n_classes,
                partitions=held,
                coefficients=coefficients,
                l2=cfg.l2,
                n_partitions=layout.n_partitions,
                epoch=layout.epoch,
                rows=tuple(int(blocks[j][0].shape[0]) for j in held),
            )
            chunks = [(j, blocks[j][0], blocks[j][1]) for j in held]
            uploads.append(self._pool.submit(self._transport.place, worker, header, chunks))
        self._metrics.placed(sum(f.result() for f in uploads))

    def _replan_due(self, round_: int) -> bool:
        cfg = self.job.config
        if cfg.scheme != "hgc" or cfg.s_edge >= 0 or round_ == 0:
            return False
        if round_ == cfg.profile_rounds:
            return True
        return (
            bool(cfg.replan_every)
            and round_ > cfg.profile_rounds
            and (round_ - cfg.profile_rounds) % cfg.replan_every == 0
        )

    def _replan(self, problem: _Problem, layout: Layout) -> Layout:
        """Ask the planner again (with the runtimes fitted from the rounds so far) and re-place
        the data only when the plan's structure changed."""
        plan, predicted = self._cluster.plan(self.job.config.partitions)
        if layout.plan is not None and _structure(plan) == _structure(layout.plan):
            layout.predicted_round_seconds = predicted
            return layout
        log.info(
            "job %s: re-planning at round %d (expected %.4f s/round)",
            self.job.job_id,
            self.job.round,
            predicted,
        )
        return self._lay_out(problem, layout.epoch + 1, plan=(plan, predicted))

    # ---- one round ----------------------------------------------------------------------------
    def _round_or_recover(
        self, problem: _Problem, layout: Layout, round_: int, params: np.ndarray
    ) -> tuple[Outcome, Layout]:
        try:
            return self._round(layout, round_, params), layout
        except RoundFailed as exc:
            dead = set(self._transport.unreachable(layout.topology.nodes))
            log.warning(
                "job %s round %d: %s; unreachable: %s", self.job.job_id, round_, exc, sorted(dead)
            )
            try:
                layout = self._lay_out(problem, layout.epoch + 1, dead=dead)
                return self._round(layout, round_, params), layout
            except (RoundFailed, Infeasible) as again:
                raise RoundFailed(
                    f"round {round_} failed: {exc}; after re-planning around the unreachable "
                    f"nodes {sorted(dead) or 'none'}: {again}. The model keeps the parameters of "
                    f"round {round_}."
                ) from again

    def _round(self, layout: Layout, round_: int, params: np.ndarray) -> Outcome:
        deadline = self.job.config.round_deadline_seconds
        collector = Round(layout.senders(), (params.size,), deadline, self._clock, self._metrics)
        for edge in layout.participating_edges():
            stream = self._transport.run_round(
                edge, self.job.job_id, round_, params, layout.epoch, deadline
            )
            self._metrics.sent(params.nbytes)
            collector.add(StreamSource(edge.name, stream, stream.cancel, self._pool))
        return collector.decide(layout.rule())

    def _finish_round(
        self,
        problem: _Problem,
        layout: Layout,
        round_: int,
        params: np.ndarray,
        outcome: Outcome,
        seconds: float,
    ) -> None:
        job = self.job
        train = problem.train
        loss = problem.model.loss(params, train.X, train.y) / train.n_rows
        timings = outcome.timings
        stragglers = layout.stragglers(timings)
        record = RoundRecord(round_, seconds, loss, stragglers, self._clock() - job.started)
        with job.changed:
            job.params = params
            job.history.append(record)
            if job.config.record_params:
                job.param_history.append(params.copy())
            job.round = round_ + 1
            job.last_timings = timings
            job.changed.notify_all()
        predicted = layout.predicted_round_seconds
        self._metrics.round_done(
            job.config.scheme, job.job_id, seconds, stragglers, loss, predicted, timings
        )
        self._report(timings, seconds, predicted)

    def _report(self, timings: tuple[Timing, ...], seconds: float, predicted: float) -> None:
        """Tell the coordinator, off the round path: a report still in flight (a slow or paused
        coordinator) makes this one be dropped, never waited for."""
        if not self._reporting.acquire(blocking=False):
            return

        def send() -> None:
            try:
                self._cluster.report(timings, seconds, predicted)
            except Exception as exc:  # the coordinator being away must not stop training
                log.debug("could not report timings: %s", exc)
            finally:
                self._reporting.release()

        try:
            self._pool.submit(send)
        except RuntimeError:  # the pool is shutting down
            self._reporting.release()

    # ---- the end ------------------------------------------------------------------------------
    def _checkpoint(self, optimizer: Optimizer, rounds_done: int) -> None:
        job = self.job
        if job.params is None:
            return
        self._store.save(
            job.job_id,
            Checkpoint(
                rounds_done,
                job.params,
                optimizer.state_dict(),
                tuple(job.history[:rounds_done]),
                config_hash(job.config),
            ),
        )

    def _drop_everywhere(self) -> None:
        """The job ended: every node any of its placement epochs used forgets it (best effort;
        a node left out of a later epoch may still hold the data of an earlier one)."""
        for node, is_edge in list(self._used.values()):
            try:
                self._pool.submit(self._transport.drop_job, node, self.job.job_id, is_edge)
            except RuntimeError:  # shutting down
                return


def _structure(plan: Plan) -> tuple[Any, ...]:
    """What a plan places: nodes, s_edge, s_worker and loads (not its predicted time)."""
    return (
        plan.partitions,
        plan.s_edge,
        tuple(
            (
                e.name,
                e.s_worker,
                e.partitions,
                tuple((w.name, w.selected, w.partitions) for w in e.workers),
            )
            for e in plan.edges
        ),
    )
