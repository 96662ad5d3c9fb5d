"""Placement epochs of one training job: laying the code out and placing the data around
failing nodes, re-planning beside the rounds, and paper 2's shuffles.

Every new epoch is placed while rounds go on with the current one (workers and edges keep both)
and is adopted by the trainer at a round boundary. A node that fails during a placement is
health-checked and planned around (up to ``PLACEMENT_ATTEMPTS`` times); a re-placement or a
shuffle that fails simply keeps the current epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np

from edgecode.errors import RoundFailed
from edgecode.master.jobs import Job, JobCancelled, Problem
from edgecode.master.layout import Layout, build_layout
from edgecode.master.ports import ClusterView, MasterMetricsPort, Node, Transport
from edgecode.planning.replan import same_structure, worth_replacing
from edgecode.planning.shuffle import shuffle
from edgecode.planning.spec import Plan
from edgecode.records import PlacementHeader, Timing
from edgecode.rounds import describe
from edgecode.straggle_classes import ClassFilter, lateness

log = logging.getLogger(__name__)

#: A plan and its expected round seconds.
PlanChoice = tuple[Plan, float]
#: Placement attempts around failing nodes before the job fails.
PLACEMENT_ATTEMPTS = 3
#: Placement deadline: this base plus the bytes at this (slow edge link) rate.
PLACE_BASE_SECONDS = 5.0
PLACE_MIN_BYTES_PER_SECOND = 1e6
#: Extra placement seconds for a ``torch:`` model: a worker's first one imports torch and the
#: user's module (seconds on a Raspberry Pi or a loaded machine, before any byte is counted).
PLACE_TORCH_SECONDS = 60.0
#: The two-class straggler model the aware shuffle's filter assumes (papers.md, section 2).
FILTER_MODEL = {"p_slow": 0.8, "p_active": 0.05, "q_as": 0.02, "q_sa": 0.05}
#: Without ``replan_every``: the re-plans after the first, in multiples of the profiling rounds.
AUTO_REPLANS = (2, 4)
#: Recent rounds whose median time a new plan must beat.
REPLAN_WINDOW = 5


class Epochs:
    """Builds and places the placement epochs of one job."""

    def __init__(
        self,
        job: Job,
        transport: Transport,
        cluster: ClusterView,
        metrics: MasterMetricsPort,
        pool: Executor,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job = job
        self._transport = transport
        self._cluster = cluster
        self._metrics = metrics
        self._pool = pool
        self._clock = clock
        #: the last epoch number handed out (a resumed job starts above its rounds done)
        self.epoch = len(job.history)
        #: seconds the last successful placement took (what a re-placement must pay back)
        self.placement_seconds = 0.0
        #: every node any epoch used, by name, and whether it is an edge (for the final drop)
        self.used: dict[str, tuple[Node, bool]] = {}
        #: nodes caught lying and left out of every later epoch
        self.quarantined: set[str] = set()
        #: aware shuffling: the class filter over the workers' live lateness
        self.filter: ClassFilter | None = None
        self._rng = np.random.default_rng([job.config.seed, 0x5F1E])

    def next_epoch(self) -> int:
        self.epoch += 1
        return self.epoch

    def lay_out(
        self, problem: Problem, dead: set[str] | None = None, plan: PlanChoice | None = None
    ) -> Layout:
        """Build the code on the alive nodes and place it (a new placement epoch). A node that
        fails during placement is health-checked and planned around, up to
        ``PLACEMENT_ATTEMPTS`` times; the message of the final failure names every node and
        what went wrong with it."""
        cfg = self.job.config
        dead = set(dead or ()) | self.quarantined
        failures: dict[str, str] = {}
        for _attempt in range(PLACEMENT_ATTEMPTS):
            if self.job.cancel.is_set():
                raise JobCancelled("cancelled during placement")
            topology = self._cluster.topology().without(dead)
            self.used.update({n.name: (n, n in topology.edges) for n in topology.nodes})
            if not topology.edges:
                raise RoundFailed(
                    "no alive edge with alive workers is left"
                    + (f" (out of reach: {_in_words(failures, dead)})" if dead else "")
                )
            chosen = plan if plan is not None else self._plan(problem, dead)
            plan = None  # a plan is used once: after a failure, ask again without the dead
            layout = build_layout(cfg, topology, self.next_epoch(), chosen, problem.max_partitions)
            started = self._clock()
            failed = self._install(problem, layout)
            if not failed:
                self.placement_seconds = self._clock() - started
                with self.job.changed:
                    self.job.placement_seconds += self.placement_seconds
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

    def _plan(self, problem: Problem, dead: set[str]) -> PlanChoice | None:
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

    def _install(self, problem: Problem, layout: Layout) -> dict[str, str]:
        """Place every worker's partitions, then configure the edges; returns the nodes that
        failed, with what went wrong (empty: the epoch is ready)."""
        train, cfg = problem.train, self.job.config
        blocks = train.partition(layout.n_partitions)
        uploads = {}
        for worker, held, coefficients, groups in layout.uploads():
            header = self.header(problem, layout, blocks, held, coefficients, groups)
            chunks = [(j, blocks[j][0], blocks[j][1]) for j in held]
            timeout = placement_timeout(sum(_nbytes(blocks[j][0]) for j in held), cfg.model)
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

    def header(
        self,
        problem: Problem,
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

    def shuffle_due(self, round_: int) -> bool:
        cfg = self.job.config
        return cfg.scheme == "approx-shuffle" and round_ > 0 and round_ % cfg.shuffle_every == 0

    def shuffle(self, problem: Problem, layout: Layout) -> tuple[Layout | None, float | None]:
        """Paper 2's shuffle, off the round path: a new assignment of the base code's rows to
        workers (random, or aware of the slow nodes the class filter sees), realised by the
        workers fetching partitions straight from each other (the master never relays data).
        The new epoch is adopted at a round boundary once every worker has it; any failure
        abandons the shuffle and the current epoch goes on."""
        cfg = self.job.config
        assert layout.base_B is not None and layout.assignment is not None
        blocks = problem.train.partition(layout.n_partitions)
        sizes = np.array([_nbytes(X) + y.nbytes for X, y in blocks], dtype=np.float64)
        probability = self.filter.straggle_probability() if self.filter is not None else None
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
        new = layout.shuffled(plan.after, self.next_epoch())
        workers = layout.workers
        source_of = {
            (t.destination, t.partition): workers[t.source].address for t in plan.transfers
        }
        index_of = {w.name: i for i, w in enumerate(workers)}
        calls = {}
        for worker, held, coefficients, _ in new.uploads():
            index = index_of[worker.name]
            header = self.header(problem, new, blocks, held, coefficients)
            sources = {j: source_of.get((index, j), "") for j in held}
            timeout = placement_timeout(int(sum(sizes[j] for j in held)), self.job.config.model)
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

    def observe(self, layout: Layout, timings: tuple[Timing, ...]) -> None:
        """Feed the class filter one round of response times (aware shuffling)."""
        if self.filter is None:
            return
        if self.filter.slow_probability.size != len(layout.workers):  # re-laid out
            self.filter = ClassFilter(len(layout.workers), **FILTER_MODEL)
        seen = {t.node: t for t in timings}
        times = np.array(
            [
                seen[w.name].seconds if w.name in seen and seen[w.name].arrived else np.nan
                for w in layout.workers
            ]
        )
        self.filter.update(lateness(times))

    def replan_due(self, round_: int) -> bool:
        """Whether to ask the planner again before ``round_``: after the profiling rounds,
        then every ``replan_every`` rounds, or (``replan_every == 0``) at twice and four times
        the profiling rounds, so a plan fitted on a few noisy rounds (a busy machine) is
        revisited on more samples, at the cost of two more plans a job (the data moves only
        when the saving is worth a placement)."""
        cfg = self.job.config
        first = cfg.profile_rounds
        if cfg.scheme != "hgc" or cfg.s_edge >= 0 or round_ == 0 or round_ < first:
            return False
        if round_ == first:
            return True
        if cfg.replan_every:
            return (round_ - first) % cfg.replan_every == 0
        return first > 0 and any(round_ == m * first for m in AUTO_REPLANS)

    def replan(
        self, problem: Problem, layout: Layout, round_: int
    ) -> tuple[Layout | None, float | None]:
        """Ask the planner again (with the runtimes fitted from the rounds so far); lay out and
        place a new epoch only when the plan's structure changed AND the predicted saving over
        the remaining rounds exceeds what the last placement cost. Runs off the round path:
        rounds go on with the old epoch until the new one is ready. Returns the new layout (or
        None to keep the current one) and the current plan's new prediction."""
        cfg = self.job.config
        try:
            plan, predicted = self._cluster.plan(
                cfg.partitions, [], problem.max_partitions, layout.plan
            )
        except Exception as exc:
            log.warning("job %s: re-planning skipped: %s", self.job.job_id, describe(exc))
            return None, None
        if layout.plan is not None and same_structure(plan, layout.plan):
            return None, predicted
        # Prediction against prediction: the plan in use re-timed on the same fits. Without it
        # (a fallback layout, or one that no longer fits), the measured recent rounds.
        retimed = float(plan.extra.get("current_seconds", 0.0))
        current = retimed
        if current <= 0:
            recent = [r.seconds for r in self.job.history[-REPLAN_WINDOW:]]
            current = float(np.median(recent)) if recent else layout.predicted_round_seconds
        remaining = cfg.rounds - round_
        if not worth_replacing(current, predicted, remaining, self.placement_seconds):
            log.info(
                "job %s: a new plan would save %.4f s/round over %d rounds, less than the "
                "%.3f s a placement costs; keeping the current one",
                self.job.job_id,
                current - predicted,
                remaining,
                self.placement_seconds,
            )
            # the plan in use re-timed on the new fits is its prediction now (the first, made
            # before any round was measured, would be shown for the rest of the job)
            return None, retimed if retimed > 0 else None
        log.info(
            "job %s: re-placing for the new plan (%.4f -> %.4f s/round)",
            self.job.job_id,
            current,
            predicted,
        )
        try:
            return self.lay_out(problem, plan=(plan, predicted)), None
        except Exception as exc:  # the old epoch keeps serving
            log.warning(
                "job %s: re-placement failed, keeping the current plan: %s", self.job.job_id, exc
            )
            return None, None


def placement_timeout(nbytes: int, model: str = "") -> float:
    """Deadline of one worker's placement: a base plus what its bytes cost at a slow link, so
    a paused worker costs seconds, not minutes, and a big placement is not cut short; a
    ``torch:`` model adds the time a worker may need to import torch and build the module.

    >>> placement_timeout(2_000_000), placement_timeout(0, "torch:m.py:net")
    (7.0, 65.0)
    """
    extra = PLACE_TORCH_SECONDS if model.startswith("torch:") else 0.0
    return PLACE_BASE_SECONDS + extra + nbytes / PLACE_MIN_BYTES_PER_SECOND


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
