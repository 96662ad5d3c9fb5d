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
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future

import numpy as np

from edgecode.errors import EdgecodeError, Infeasible, InvalidInput, RoundFailed
from edgecode.learning.datasets import load_split
from edgecode.learning.models import get_model
from edgecode.learning.optimizers import Optimizer, optimizer_from_state
from edgecode.master.checkpoints import Checkpoint, CheckpointStore, SavedJob, config_hash
from edgecode.master.epochs import FILTER_MODEL, Epochs
from edgecode.master.jobs import Job, JobCancelled, Problem
from edgecode.master.layout import Layout
from edgecode.master.ports import ClusterView, MasterMetricsPort, Transport
from edgecode.master.reports import BatchedReports
from edgecode.records import (
    CANCELLED,
    FAILED,
    RUNNING,
    SUCCEEDED,
    RoundRecord,
    Timing,
)
from edgecode.rounds import Outcome, Round, StreamSource
from edgecode.straggle_classes import ClassFilter

log = logging.getLogger(__name__)

#: Fewest rows a partition should hold to be worth a message of its own.
MIN_ROWS_PER_PARTITION = 4


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
        #: timings go to the coordinator in batches; a plan first sends what is kept
        self._cluster = BatchedReports(cluster, pool, clock)
        self._store = store
        self._metrics = metrics
        self._pool = pool
        self._clock = clock
        self._usage: np.ndarray = np.zeros(0)
        self._usage_rounds = 0
        self._caught: dict[str, int] = {}
        self._quarantine_pending = False
        #: the re-plan or shuffle running off the round path, adopted at a round boundary
        self._pending: Future[tuple[Layout | None, float | None]] | None = None
        self._epochs = Epochs(job, transport, self._cluster, metrics, pool, clock)
        #: where the current round's time went (send, wait, decode, step)
        self._phases: dict[str, float] = {}

    # ---- the job ------------------------------------------------------------------------------
    def run(self) -> None:
        job = self.job
        try:
            state, message = self._train()
            if state == SUCCEEDED:
                # A shuffle or re-plan still moving data finishes (or never starts) before
                # the job is seen to succeed: its counters tell what the workers hold.
                self._settle()
            job.update(state=state, message=message)
        except JobCancelled as exc:
            job.update(state=CANCELLED, message=str(exc))
        except Exception as exc:  # a job failure must never take the master down
            log.warning(
                "job %s failed: %s", job.job_id, exc, exc_info=not isinstance(exc, EdgecodeError)
            )
            job.update(state=FAILED, message=str(exc) or type(exc).__name__)
        finally:
            # A cancelled or failed job is seen to end at once; its data is dropped only once
            # the work off the round path has settled, so nothing arrives after the drop.
            self._settle()
            self._send_reports()
            self._store.save_job(SavedJob(job.config, job.state, job.message))
            self._drop_everywhere()

    def _train(self) -> tuple[str, str]:
        """The rounds; returns the job's final state and message, which :meth:`run` sets."""
        job, cfg = self.job, self.job.config
        problem, params, optimizer, start_round = self._prepare()
        job.update(state=RUNNING, round=start_round, params=params)
        epochs = self._epochs
        epochs.epoch = len(job.history)
        layout = epochs.lay_out(problem)
        if cfg.scheme == "approx-shuffle" and cfg.shuffle == "aware":
            epochs.filter = ClassFilter(len(layout.workers), **FILTER_MODEL)
        job.update(layout=layout, placements=job.placements + 1)
        job.setup_seconds = self._clock() - job.started
        job.started = self._clock()  # wall time of the rounds, without the one-time setup
        for round_ in range(start_round, cfg.rounds):
            if job.cancel.is_set():
                # Checkpoint first: whoever sees the job end must find these rounds saved.
                self._checkpoint(optimizer, round_)
                return CANCELLED, f"cancelled after round {round_}"
            if self._pending is None and epochs.replan_due(round_):
                self._pending = self._pool.submit(epochs.replan, problem, layout, round_)
            elif self._pending is None and epochs.shuffle_due(round_):
                self._pending = self._pool.submit(epochs.shuffle, problem, layout)
            if self._pending is not None and self._pending.done():  # swap in between rounds
                adopted, predicted = self._pending.result()
                self._pending = None
                if adopted is not None:
                    layout = adopted
                    job.update(layout=layout, placements=job.placements + 1)
                elif predicted is not None:
                    layout.predicted_round_seconds = predicted
            if self._quarantine_pending:  # leave the nodes caught lying out of the code
                self._quarantine_pending = False
                layout = epochs.lay_out(problem)
                job.update(layout=layout, placements=job.placements + 1)
            started = self._clock()
            outcome, layout = self._round_or_recover(problem, layout, round_, params)
            self._catch(outcome.suspects)
            gradient = outcome.decoded.value
            if gradient.shape != (problem.n_params,) or not np.all(np.isfinite(gradient)):
                raise RoundFailed(
                    f"round {round_}: the decoded gradient is not finite; the model keeps the "
                    f"parameters of round {round_}"
                )
            stepping = self._clock()
            stepped = optimizer.step(params, gradient, problem.train.n_rows)
            self._phases["step"] = self._clock() - stepping
            if not np.all(np.isfinite(stepped)):
                raise RoundFailed(
                    f"round {round_}: the optimizer step gave non-finite parameters (learning "
                    f"rate too large?); the model keeps the parameters of round {round_}"
                )
            params = stepped
            self._finish_round(problem, layout, round_, params, outcome, self._clock() - started)
            if cfg.checkpoint_every and (round_ + 1) % cfg.checkpoint_every == 0:
                self._checkpoint(optimizer, round_ + 1)
        test = problem.test
        accuracy = float(problem.model.accuracy(params, test.X, test.y)) if test.n_rows else np.nan
        job.update(accuracy=accuracy)
        self._checkpoint(optimizer, cfg.rounds)
        return SUCCEEDED, f"{cfg.rounds} rounds"

    def _settle(self) -> None:
        """Wait for the re-plan or shuffle in flight (each of its calls has its own timeout),
        or cancel it if it has not started; a placement it finished still counts."""
        pending, self._pending = self._pending, None
        if pending is None or pending.cancel():
            return
        try:
            adopted, _ = pending.result()
        except Exception as exc:  # the job's own outcome stands
            log.warning("job %s: the work off the round path failed: %s", self.job.job_id, exc)
            return
        if adopted is not None:
            self.job.update(placements=self.job.placements + 1)

    def _prepare(self) -> tuple[Problem, np.ndarray, Optimizer, int]:
        job, cfg = self.job, self.job.config
        rng = np.random.default_rng(cfg.seed)
        train, test = load_split(cfg.dataset, rng)
        model_name = cfg.model or train.default_model
        model = get_model(model_name, l2=cfg.l2)
        n_params = model.n_params(train.n_features, train.n_classes)
        params = model.init_params(rng, train.n_features, train.n_classes)
        optimizer: Optimizer = cfg.optimizer_object()
        if cfg.partitions > train.n_rows:
            raise InvalidInput(
                f"partitions ({cfg.partitions}) must be at most the {train.n_rows} training rows "
                f"of {cfg.dataset!r}"
            )
        max_partitions = max(1, train.n_rows // MIN_ROWS_PER_PARTITION)
        problem = Problem(train, test, model_name, model, n_params, max_partitions)
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

    # ---- one round ----------------------------------------------------------------------------
    def _round_or_recover(
        self, problem: Problem, layout: Layout, round_: int, params: np.ndarray
    ) -> tuple[Outcome, Layout]:
        try:
            return self._round(layout, round_, params), layout
        except RoundFailed as exc:
            dead = set(self._transport.unreachable(layout.topology.nodes))
            log.warning(
                "job %s round %d: %s; unreachable: %s", self.job.job_id, round_, exc, sorted(dead)
            )
            try:
                layout = self._epochs.lay_out(problem, dead=dead)
                self.job.update(layout=layout, placements=self.job.placements + 1)
                return self._round(layout, round_, params), layout
            except (RoundFailed, Infeasible) as again:
                out_of_reach = (
                    f"the unreachable nodes {', '.join(sorted(dead))}"
                    if dead
                    else ("the nodes (all answered a health check)")
                )
                raise RoundFailed(
                    f"round {round_} failed: {exc}. After re-planning around {out_of_reach}: "
                    f"{again}. The model keeps the parameters of round {round_}."
                ) from again

    def _round(self, layout: Layout, round_: int, params: np.ndarray) -> Outcome:
        deadline = self.job.config.round_deadline_seconds
        started = self._clock()
        observer = _Phases(self._metrics, self._phases)
        collector = Round(
            layout.senders(), layout.message_shape(params.size), deadline, self._clock, observer
        )
        expected = layout.edge_messages()
        for edge in layout.participating_edges():
            stream = self._transport.run_round(
                edge, self.job.job_id, round_, params, layout.epoch, deadline
            )
            self._metrics.sent(params.nbytes)
            collector.add(
                StreamSource(edge.name, stream, stream.cancel, self._pool, expected.get(edge.name))
            )
        sent = self._clock()
        outcome = collector.decide(layout.rule(round_, params.size), slack=layout.verify_slack)
        self._phases.update(send=sent - started, wait=self._clock() - sent)
        return outcome

    def _finish_round(
        self,
        problem: Problem,
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
        used = layout.partitions_used(outcome.decoded)
        self._count_usage(used)
        self._epochs.observe(layout, timings)
        record = RoundRecord(
            round_,
            seconds,
            loss,
            stragglers,
            self._clock() - job.started,
            recovered_fraction=float(np.mean(used)),
            residual=float(outcome.decoded.residual),
            send_seconds=self._phases.get("send", 0.0),
            wait_seconds=self._phases.get("wait", 0.0),
            decode_seconds=self._phases.get("decode", 0.0),
            step_seconds=self._phases.get("step", 0.0),
        )
        with job.changed:
            job.params = params
            job.partition_usage = tuple(float(u) for u in self._usage / self._usage_rounds)
            job.history.append(record)
            if job.config.record_params:
                job.param_history.append(params.copy())
            job.round = round_ + 1
            job.last_timings = timings
            job.changed.notify_all()
        predicted = layout.predicted_round_seconds
        vectors = layout.vectors(outcome.decoded.used)
        self._metrics.recovery(job.job_id, record.recovered_fraction, record.residual, vectors)
        self._metrics.round_done(
            job.config.scheme, job.job_id, seconds, stragglers, loss, predicted, timings
        )
        self._report(timings, seconds, predicted)

    def _catch(self, suspects: tuple[str, ...]) -> None:
        """Count the nodes caught lying (verify); quarantine a node caught quarantine_after
        times: it is left out of the next epoch (and reported in the job status)."""
        if not suspects:
            return
        job = self.job
        for node in suspects:
            self._metrics.inconsistent(node)
            self._caught[node] = self._caught.get(node, 0) + 1
            quarantined = self._epochs.quarantined
            if self._caught[node] >= job.config.quarantine_after and node not in quarantined:
                quarantined.add(node)
                self._quarantine_pending = True
                log.warning(
                    "job %s: %s quarantined after %d inconsistent results",
                    job.job_id,
                    node,
                    self._caught[node],
                )
        with job.changed:
            job.inconsistent_rounds += 1
            job.quarantined = tuple(sorted(self._epochs.quarantined))

    def _count_usage(self, used: np.ndarray) -> None:
        """Per partition, in how many rounds it had weight (restarts when K changes)."""
        if self._usage.shape != used.shape:
            self._usage, self._usage_rounds = np.zeros(used.shape), 0
        self._usage += used
        self._usage_rounds += 1

    def _report(self, timings: tuple[Timing, ...], seconds: float, predicted: float) -> None:
        """Tell the coordinator, off the round path (batched; never waited for)."""
        self._cluster.report(timings, seconds, predicted)

    def _send_reports(self) -> None:
        """The job's last timings to the coordinator, beside whatever comes next."""
        try:
            self._pool.submit(self._cluster.flush)
        except RuntimeError:  # the pool is shutting down
            pass

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
        for node, is_edge in list(self._epochs.used.values()):
            try:
                self._pool.submit(self._transport.drop_job, node, self.job.job_id, is_edge)
            except RuntimeError:  # shutting down
                return


class _Phases:
    """The round's observer: passes everything to the metrics and keeps the decode time."""

    def __init__(self, metrics: MasterMetricsPort, phases: dict[str, float]) -> None:
        self._metrics = metrics
        self._phases = phases

    def response(self, node: str, seconds: float) -> None:
        self._metrics.response(node, seconds)

    def received(self, nbytes: int) -> None:
        self._metrics.received(nbytes)

    def decoded(self, seconds: float) -> None:
        self._phases["decode"] = seconds
        self._metrics.decoded(seconds)
