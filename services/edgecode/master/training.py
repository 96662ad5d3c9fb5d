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
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecode.errors import EdgecodeError, Infeasible, InvalidInput, RoundFailed
from edgecode.learning.datasets import Dataset, load_split
from edgecode.learning.models import Model, get_model
from edgecode.learning.optimizers import Optimizer, optimizer_from_state
from edgecode.master.checkpoints import Checkpoint, CheckpointStore, SavedJob, config_hash
from edgecode.master.layout import Layout, build_layout
from edgecode.master.ports import ClusterView, MasterMetricsPort, Node, Transport
from edgecode.planning.replan import same_structure, worth_replacing
from edgecode.planning.shuffle import shuffle
from edgecode.planning.spec import Plan
from edgecode.records import (
    CANCELLED,
    FAILED,
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
from edgecode.rounds import Outcome, Round, StreamSource, describe
from edgecode.straggle_classes import ClassFilter, lateness

log = logging.getLogger(__name__)

#: A plan and its expected round seconds.
PlanChoice = tuple[Plan, float]
#: Placement attempts around failing nodes before the job fails.
PLACEMENT_ATTEMPTS = 3
#: Placement deadline: this base plus the bytes at this (slow edge link) rate.
PLACE_BASE_SECONDS = 5.0
PLACE_MIN_BYTES_PER_SECOND = 1e6
#: Fewest rows a partition should hold to be worth a message of its own.
MIN_ROWS_PER_PARTITION = 4
#: The two-class straggler model the aware shuffle's filter assumes (papers.md, section 2).
FILTER_MODEL = {"p_slow": 0.8, "p_active": 0.05, "q_as": 0.02, "q_sa": 0.05}
#: Recent rounds whose median time a new plan must beat.
REPLAN_WINDOW = 5


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
    placement_seconds: float = 0.0
    partition_usage: tuple[float, ...] = ()
    shuffle_bytes: int = 0
    shuffles: int = 0
    inconsistent_rounds: int = 0
    quarantined: tuple[str, ...] = ()
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
                placement_seconds=self.placement_seconds,
                partition_usage=self.partition_usage,
                shuffle_bytes=self.shuffle_bytes,
                shuffles=self.shuffles,
                inconsistent_rounds=self.inconsistent_rounds,
                quarantined=self.quarantined,
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
    #: most partitions the data allows (enough rows in each to be worth a message)
    max_partitions: int


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
        self._epoch = 0
        self._placement_seconds = 0.0
        self._usage: np.ndarray = np.zeros(0)
        self._usage_rounds = 0
        self._rng = np.random.default_rng([job.config.seed, 0x5F1E])
        self._caught: dict[str, int] = {}
        self._quarantined: set[str] = set()
        self._quarantine_pending = False
        self._filter: ClassFilter | None = None
        #: every node any placement epoch of this job used, by name, and whether it is an edge
        self._used: dict[str, tuple[Node, bool]] = {}

    # ---- the job ------------------------------------------------------------------------------
    def run(self) -> None:
        job = self.job
        try:
            self._train()
        except JobCancelled as exc:
            job.update(state=CANCELLED, message=str(exc))
        except Exception as exc:  # a job failure must never take the master down
            log.warning(
                "job %s failed: %s", job.job_id, exc, exc_info=not isinstance(exc, EdgecodeError)
            )
            job.update(state=FAILED, message=str(exc) or type(exc).__name__)
        finally:
            self._store.save_job(SavedJob(job.config, job.state, job.message))
            self._drop_everywhere()

    def _train(self) -> None:
        job, cfg = self.job, self.job.config
        problem, params, optimizer, start_round = self._prepare()
        job.update(state=RUNNING, round=start_round, params=params)
        self._epoch = len(job.history)
        layout = self._lay_out(problem)
        if cfg.scheme == "approx-shuffle" and cfg.shuffle == "aware":
            self._filter = ClassFilter(len(layout.workers), **FILTER_MODEL)
        job.update(layout=layout, placements=job.placements + 1)
        job.setup_seconds = self._clock() - job.started
        job.started = self._clock()  # wall time of the rounds, without the one-time setup
        pending: Future[tuple[Layout | None, float | None]] | None = None
        for round_ in range(start_round, cfg.rounds):
            if job.cancel.is_set():
                # Checkpoint first: whoever sees the job end must find these rounds saved.
                self._checkpoint(optimizer, round_)
                job.update(state=CANCELLED, message=f"cancelled after round {round_}")
                return
            if pending is None and self._replan_due(round_):
                pending = self._pool.submit(self._replan, problem, layout, round_)
            elif pending is None and self._shuffle_due(round_):
                pending = self._pool.submit(self._shuffle, problem, layout)
            if pending is not None and pending.done():  # swap in at a round boundary
                adopted, predicted = pending.result()
                pending = None
                if adopted is not None:
                    layout = adopted
                    job.update(layout=layout, placements=job.placements + 1)
                elif predicted is not None:
                    layout.predicted_round_seconds = predicted
            if self._quarantine_pending:  # leave the nodes caught lying out of the code
                self._quarantine_pending = False
                layout = self._lay_out(problem)
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
            stepped = optimizer.step(params, gradient, problem.train.n_rows)
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
        job.update(state=SUCCEEDED, message=f"{cfg.rounds} rounds")

    def _prepare(self) -> tuple[_Problem, np.ndarray, Optimizer, int]:
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
        problem = _Problem(train, test, model_name, model, n_params, max_partitions)
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
    def _next_epoch(self) -> int:
        self._epoch += 1
        return self._epoch

    def _lay_out(
        self, problem: _Problem, dead: set[str] | None = None, plan: PlanChoice | None = None
    ) -> Layout:
        """Build the code on the alive nodes and place it (a new placement epoch). A node that
        fails during placement is health-checked and planned around, up to
        ``PLACEMENT_ATTEMPTS`` times; the message of the final failure names every node and
        what went wrong with it."""
        cfg = self.job.config
        dead = set(dead or ()) | self._quarantined
        failures: dict[str, str] = {}
        for _attempt in range(PLACEMENT_ATTEMPTS):
            if self.job.cancel.is_set():
                raise JobCancelled("cancelled during placement")
            topology = self._cluster.topology().without(dead)
            self._used.update({n.name: (n, n in topology.edges) for n in topology.nodes})
            if not topology.edges:
                raise RoundFailed(
                    "no alive edge with alive workers is left"
                    + (f" (out of reach: {_in_words(failures, dead)})" if dead else "")
                )
            chosen = plan if plan is not None else self._plan(problem, dead)
            plan = None  # a plan is used once: after a failure, ask again without the dead
            layout = build_layout(cfg, topology, self._next_epoch(), chosen)
            started = self._clock()
            failed = self._install(problem, layout)
            if not failed:
                self._placement_seconds = self._clock() - started
                with self.job.changed:
                    self.job.placement_seconds += self._placement_seconds
                return layout
            failures.update(failed)
            dead |= set(failed) | set(self._transport.unreachable(topology.nodes))
            log.warning(
                "job %s: placement of epoch %d failed on %s; re-planning without %s",
                self.job.job_id,
                layout.epoch,
                sorted(failed),
                sorted(dead),
            )
        raise RoundFailed(f"the data could not be placed: {_in_words(failures, dead)}")

    def _plan(self, problem: _Problem, dead: set[str]) -> PlanChoice | None:
        """The planner's plan for hgc jobs with s_edge < 0 (None: not needed, or the
        coordinator is out of reach and the layout falls back to fixed s)."""
        cfg = self.job.config
        if cfg.scheme != "hgc" or cfg.s_edge >= 0:
            return None
        try:
            return self._cluster.plan(cfg.partitions, sorted(dead), problem.max_partitions)
        except Exception as exc:  # the coordinator being away must not stop the job
            log.warning(
                "job %s: no plan from the coordinator (%s); using fixed s",
                self.job.job_id,
                describe(exc),
            )
            return None

    def _install(self, problem: _Problem, layout: Layout) -> dict[str, str]:
        """Place every worker's partitions, then configure the edges; returns the nodes that
        failed, with what went wrong (empty: the epoch is ready)."""
        train, cfg = problem.train, self.job.config
        blocks = train.partition(layout.n_partitions)
        uploads = {}
        for worker, held, coefficients, groups in layout.uploads():
            header = self._header(problem, layout, blocks, held, coefficients, groups)
            chunks = [(j, blocks[j][0], blocks[j][1]) for j in held]
            timeout = placement_timeout(sum(_nbytes(blocks[j][0]) for j in held))
            uploads[worker.name] = self._pool.submit(
                self._transport.place, worker, header, chunks, timeout
            )
        failed = _failures(uploads)
        self._metrics.placed(sum(f.result() for n, f in uploads.items() if n not in failed))
        if failed:
            return failed
        configured = {
            a.edge.name: self._pool.submit(
                self._transport.configure_edge,
                self.job.job_id,
                layout.epoch,
                a,
                cfg.round_deadline_seconds,
            )
            for a in layout.assignments()
        }
        return _failures(configured)

    def _header(
        self,
        problem: _Problem,
        layout: Layout,
        blocks: list[tuple[Any, np.ndarray]],
        held: tuple[int, ...],
        coefficients: tuple[float, ...],
        groups: tuple[int, ...] = (),
    ) -> PlacementHeader:
        train = problem.train
        return PlacementHeader(
            job_id=self.job.job_id,
            model=problem.model_name,
            n_features=train.n_features,
            n_classes=train.n_classes,
            partitions=held,
            coefficients=coefficients,
            l2=self.job.config.l2,
            n_partitions=layout.n_partitions,
            epoch=layout.epoch,
            rows=tuple(int(blocks[j][0].shape[0]) for j in held),
            groups=groups,
        )

    def _shuffle_due(self, round_: int) -> bool:
        cfg = self.job.config
        return cfg.scheme == "approx-shuffle" and round_ > 0 and round_ % cfg.shuffle_every == 0

    def _shuffle(self, problem: _Problem, layout: Layout) -> tuple[Layout | None, float | None]:
        """Paper 2's shuffle, off the round path: a new assignment of the base code's rows to
        workers (random, or aware of the slow nodes the class filter sees), realised by the
        workers fetching partitions straight from each other (the master never relays data).
        The new epoch is adopted at a round boundary once every worker has it; any failure
        abandons the shuffle and the current epoch goes on."""
        cfg = self.job.config
        assert layout.base_B is not None and layout.assignment is not None
        blocks = problem.train.partition(layout.n_partitions)
        sizes = np.array([_nbytes(X) + y.nbytes for X, y in blocks], dtype=np.float64)
        probability = self._filter.straggle_probability() if self._filter is not None else None
        try:
            plan = shuffle(
                cfg.shuffle,
                layout.base_B,
                layout.assignment,
                rng=self._rng,
                straggle_probability=probability,
                partition_bytes=sizes,
                budget_bytes=cfg.shuffle_budget or None,
            )
        except ValueError as exc:
            log.warning("job %s: no shuffle: %s", self.job.job_id, exc)
            return None, None
        if plan.after == layout.assignment:
            return None, None
        new = layout.shuffled(plan.after, self._next_epoch())
        workers = layout.workers
        source_of = {
            (t.destination, t.partition): workers[t.source].address for t in plan.transfers
        }
        index_of = {w.name: i for i, w in enumerate(workers)}
        calls = {}
        for worker, held, coefficients, _ in new.uploads():
            index = index_of[worker.name]
            header = self._header(problem, new, blocks, held, coefficients)
            sources = {j: source_of.get((index, j), "") for j in held}
            timeout = placement_timeout(int(sum(sizes[j] for j in held)))
            calls[worker.name] = self._pool.submit(
                self._transport.fetch_placement, worker, header, layout.epoch, sources, timeout
            )
        failed = _failures(calls)
        if not failed:
            failed = _failures(
                {
                    a.edge.name: self._pool.submit(
                        self._transport.configure_edge,
                        self.job.job_id,
                        new.epoch,
                        a,
                        cfg.round_deadline_seconds,
                    )
                    for a in new.assignments()
                }
            )
        if failed:
            log.warning(
                "job %s: shuffle abandoned (%s); the current epoch goes on",
                self.job.job_id,
                _in_words(failed, set()),
            )
            return None, None
        moved = sum(f.result()[0] for f in calls.values())
        with self.job.changed:
            self.job.shuffle_bytes += moved
            self.job.shuffles += 1
        log.info(
            "job %s: shuffle to epoch %d moved %d bytes between workers",
            self.job.job_id,
            new.epoch,
            moved,
        )
        return new, None

    def _observe_classes(self, layout: Layout, timings: tuple[Timing, ...]) -> None:
        """Feed the class filter one round of response times (aware shuffling)."""
        if self._filter is None:
            return
        if self._filter.slow_probability.size != len(layout.workers):  # re-laid out
            self._filter = ClassFilter(len(layout.workers), **FILTER_MODEL)
        seen = {t.node: t for t in timings}
        times = np.array(
            [
                seen[w.name].seconds if w.name in seen and seen[w.name].arrived else np.nan
                for w in layout.workers
            ]
        )
        self._filter.update(lateness(times))

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

    def _replan(
        self, problem: _Problem, layout: Layout, round_: int
    ) -> tuple[Layout | None, float | None]:
        """Ask the planner again (with the runtimes fitted from the rounds so far); lay out and
        place a new epoch only when the plan's structure changed AND the predicted saving over
        the remaining rounds exceeds what the last placement cost. Runs off the round path:
        rounds go on with the old epoch until the new one is ready. Returns the new layout (or
        None to keep the current one) and the current plan's new prediction."""
        cfg = self.job.config
        try:
            plan, predicted = self._cluster.plan(cfg.partitions, [], problem.max_partitions)
        except Exception as exc:
            log.warning("job %s: re-planning skipped: %s", self.job.job_id, describe(exc))
            return None, None
        if layout.plan is not None and same_structure(plan, layout.plan):
            return None, predicted
        recent = [r.seconds for r in self.job.history[-REPLAN_WINDOW:]]
        current = float(np.median(recent)) if recent else layout.predicted_round_seconds
        remaining = cfg.rounds - round_
        if not worth_replacing(current, predicted, remaining, self._placement_seconds):
            log.info(
                "job %s: a new plan would save %.4f s/round over %d rounds, less than the "
                "%.3f s a placement costs; keeping the current one",
                self.job.job_id,
                current - predicted,
                remaining,
                self._placement_seconds,
            )
            return None, None
        log.info(
            "job %s: re-placing for the new plan (%.4f -> %.4f s/round)",
            self.job.job_id,
            current,
            predicted,
        )
        try:
            return self._lay_out(problem, plan=(plan, predicted)), None
        except Exception as exc:  # the old epoch keeps serving
            log.warning(
                "job %s: re-placement failed, keeping the current plan: %s", self.job.job_id, exc
            )
            return None, None

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
                layout = self._lay_out(problem, dead=dead)
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
        collector = Round(
            layout.senders(),
            layout.message_shape(params.size),
            deadline,
            self._clock,
            self._metrics,
        )
        for edge in layout.participating_edges():
            stream = self._transport.run_round(
                edge, self.job.job_id, round_, params, layout.epoch, deadline
            )
            self._metrics.sent(params.nbytes)
            collector.add(StreamSource(edge.name, stream, stream.cancel, self._pool))
        return collector.decide(layout.rule(round_, params.size), slack=layout.verify_slack)

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
        used = layout.partitions_used(outcome.decoded)
        self._count_usage(used)
        self._observe_classes(layout, timings)
        record = RoundRecord(
            round_,
            seconds,
            loss,
            stragglers,
            self._clock() - job.started,
            recovered_fraction=float(np.mean(used)),
            residual=float(outcome.decoded.residual),
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
            if self._caught[node] >= job.config.quarantine_after and node not in self._quarantined:
                self._quarantined.add(node)
                self._quarantine_pending = True
                log.warning(
                    "job %s: %s quarantined after %d inconsistent results",
                    job.job_id,
                    node,
                    self._caught[node],
                )
        with job.changed:
            job.inconsistent_rounds += 1
            job.quarantined = tuple(sorted(self._quarantined))

    def _count_usage(self, used: np.ndarray) -> None:
        """Per partition, in how many rounds it had weight (restarts when K changes)."""
        if self._usage.shape != used.shape:
            self._usage, self._usage_rounds = np.zeros(used.shape), 0
        self._usage += used
        self._usage_rounds += 1

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


def placement_timeout(nbytes: int) -> float:
    """Deadline of one worker's placement: a base plus what its bytes cost at a slow link, so
    a paused worker costs seconds, not minutes, and a big placement is not cut short."""
    return PLACE_BASE_SECONDS + nbytes / PLACE_MIN_BYTES_PER_SECOND


def _nbytes(features: Any) -> int:
    if hasattr(features, "nnz"):
        return int(features.nnz) * 16
    return int(features.size) * 8


def _failures(calls: dict[str, Future[Any]]) -> dict[str, str]:
    """The calls that failed, by node name, with what went wrong in words."""
    failed: dict[str, str] = {}
    for name, future in calls.items():
        error = future.exception()
        if error is not None:
            failed[name] = describe(error)
    return failed


def _in_words(failures: dict[str, str], dead: set[str]) -> str:
    parts = [f"{name}: {why}" for name, why in sorted(failures.items())]
    parts += [f"{name}: does not answer a health check" for name in sorted(dead - set(failures))]
    return "; ".join(parts) or "no node answered"


class JobCancelled(RoundFailed):
    """The job was cancelled while it was being set up."""
