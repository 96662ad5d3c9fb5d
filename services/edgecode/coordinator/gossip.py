r"""The coordinator's gossip jobs (pure: peers are reached through a :class:`PeerClient`).

:meth:`GossipJobs.launch` plans a job (:func:`~edgecode.coordinator.gossip_plan.plan_gossip_job`),
places every peer's assignment and partitions, starts every peer, and returns; from then on a
collector thread polls the peers' reports (``GetReports``) every ``poll_seconds`` and turns them
into one :class:`~edgecode.gossip_records.GossipRoundRecord` per round: the mean loss and the
optimality gap at the average model ``x_bar = (1/N) sum_i x_i``, the consensus distance
``(1/N) sum_i ||x_i - x_bar||^2``, skipped gradients, missing neighbour values, and per peer its
round, compute and gossip seconds. The coordinator is not on the round path: the peers run their
rounds by themselves and keep their reports (bounded) until they are collected, so a paused or
restarted coordinator only delays the records.

Faults. A peer that cannot be reached (connection refused, unknown job after a restart, or its
job failed) for ``dead_after_seconds`` is declared dead: the records of later rounds are over the
remaining peers, whose neighbours already left it out at their gossip deadline. If the remaining
peers are no longer connected the job is stopped on every peer and fails with a message naming
the dead peers and the groups left. A peer that answers too slowly (paused, overloaded) is
listed as unresponsive, not dead; the records wait for it.

Example
-------
See ``tests/unit/test_coordinator_gossip.py`` (in-memory peers) and
``tests/integration/test_gossip.py`` (real processes).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from edgecode.coordinator.gossip_plan import GossipPlan, plan_gossip_job, remaining_components
from edgecode.errors import AlreadyExists, EdgecodeError, RoundFailed, UnknownJob
from edgecode.gossip_records import (
    FAILED,
    FINISHED,
    GOSSIP_FINAL,
    JOB_FAILED,
    JOB_RUNNING,
    STARTING,
    STOPPED,
    SUCCEEDED,
    GossipJobSpec,
    GossipJobStatus,
    GossipRoundRecord,
    PeerAssignment,
    PeerReports,
    PeerRoundTiming,
    TimedReport,
    check_job_id,
)
from edgecode.learning.gossip import consensus_distance

log = logging.getLogger(__name__)

#: Gossip jobs kept (finished ones are forgotten oldest first beyond this).
MAX_GOSSIP_JOBS = 64
#: Per-peer timings kept over a job's records (the newest records keep theirs; older ones keep
#: only the aggregates): at most this many PeerRoundTiming objects per job.
MAX_TIMINGS = 200_000
#: Records in one status answer (a client pages with from_round).
MAX_RECORDS_PER_ANSWER = 10_000


class PeerUnreachable(EdgecodeError):
    """The peer refused the connection, or no longer holds the job (it restarted)."""


class PeerLate(EdgecodeError):
    """The peer did not answer before the call's deadline (paused or overloaded)."""


class PeerClient(Protocol):
    """The coordinator's calls to one peer (coordinator.transport.GrpcPeerClient)."""

    def place(self, assignment: PeerAssignment, data: Any, timeout: float) -> None: ...

    def start(self, job_id: str, timeout: float) -> None: ...

    def reports(self, job_id: str, peer: int, from_round: int, timeout: float) -> PeerReports:
        """Raises PeerUnreachable or PeerLate."""
        ...

    def stop(self, job_id: str, timeout: float) -> None:
        """Best effort: never raises."""
        ...

    def close(self) -> None: ...


class GossipMetricsPort(Protocol):
    def recorded(
        self, job_id: str, scheme: str, loss: float, gap: float, consensus: float, skipped: int
    ) -> None: ...

    def dead_peers(self, job_id: str, count: int) -> None: ...

    def forget(self, job_id: str) -> None: ...


class NoGossipMetrics:
    def recorded(
        self, job_id: str, scheme: str, loss: float, gap: float, consensus: float, skipped: int
    ) -> None:
        pass

    def dead_peers(self, job_id: str, count: int) -> None:
        pass

    def forget(self, job_id: str) -> None:
        pass


@dataclass(eq=False)
class _Job:
    """One job's collector state (guarded by the job's lock)."""

    plan: GossipPlan
    clients: list[PeerClient]
    state: str = STARTING
    message: str = ""
    setup_seconds: float = 0.0
    records: list[GossipRoundRecord] = field(default_factory=list)
    #: round -> peer -> report
    pending: dict[int, dict[int, TimedReport]] = field(default_factory=dict)
    next_from: list[int] = field(default_factory=list)
    peer_state: list[str] = field(default_factory=list)
    last_ok: list[float] = field(default_factory=list)
    dead: set[int] = field(default_factory=set)
    unresponsive: set[int] = field(default_factory=set)
    #: (peer, first round, end round) of reports the peer no longer kept when asked
    lost: list[tuple[int, int, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None

    @property
    def n(self) -> int:
        return self.plan.topology.n_peers

    @property
    def job_id(self) -> str:
        return self.plan.spec.job_id


class GossipJobs:
    """Launches, watches and stops gossip jobs (thread-safe)."""

    def __init__(
        self,
        peers: Callable[[], Sequence[tuple[str, str]]],
        connect: Callable[[str], PeerClient],
        *,
        metrics: GossipMetricsPort | None = None,
        poll_seconds: float = 0.2,
        dead_after_seconds: float = 3.0,
        call_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        max_jobs: int = MAX_GOSSIP_JOBS,
    ) -> None:
        self._peers = peers
        self._connect = connect
        self._metrics: GossipMetricsPort = metrics if metrics is not None else NoGossipMetrics()
        self._poll = poll_seconds
        self._dead_after = dead_after_seconds
        self._timeout = call_timeout
        self._clock = clock
        self._max_jobs = max_jobs
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    # ---- launching ----------------------------------------------------------------------------
    def launch(self, spec: GossipJobSpec) -> GossipJobStatus:
        """Plan, place and start ``spec``; returns once every peer has started (or raises:
        InvalidInput / Infeasible for a bad spec or graph, RoundFailed when a peer could not be
        placed or started, after stopping the job on the others)."""
        started = self._clock()
        spec = spec.validated()
        if not spec.job_id:
            spec = replace(spec, job_id=f"gossip-{uuid.uuid4().hex[:12]}")
        plan = plan_gossip_job(spec, self._peers())
        with self._lock:
            old = self._jobs.get(spec.job_id)
            if old is not None and old.state not in GOSSIP_FINAL:
                raise AlreadyExists(f"gossip job {spec.job_id!r} is still running")
            self._forget_old()
            job = _Job(plan, [self._connect(address) for address in plan.addresses])
            job.next_from = [0] * job.n
            job.peer_state = ["placed"] * job.n
            job.last_ok = [started] * job.n
            self._jobs[spec.job_id] = job
        try:
            self._on_every_peer(
                job, "place", lambda i, c: c.place(plan.assignments[i], plan.data[i], self._timeout)
            )
            self._on_every_peer(job, "start", lambda i, c: c.start(spec.job_id, self._timeout))
        except RoundFailed as exc:
            self._end(job, JOB_FAILED, str(exc))
            raise
        with job.lock:
            job.state, job.setup_seconds = JOB_RUNNING, self._clock() - started
        self._metrics.dead_peers(spec.job_id, 0)
        job.thread = threading.Thread(
            target=self._collect, args=(job,), name=f"gossip-{spec.job_id}", daemon=True
        )
        job.thread.start()
        log.info(
            "gossip job %s started on %d peers (%s)", spec.job_id, job.n, plan.topology.graph.name
        )
        return self.status(spec.job_id)

    def _on_every_peer(self, job: _Job, what: str, call: Callable[[int, PeerClient], None]) -> None:
        """Run ``call`` on every peer in parallel; RoundFailed naming the first that failed."""
        with ThreadPoolExecutor(max_workers=min(16, job.n), thread_name_prefix="gossip") as pool:
            futures = [pool.submit(call, i, client) for i, client in enumerate(job.clients)]
            errors = [(i, f.exception()) for i, f in enumerate(futures)]
        failed = [(i, e) for i, e in errors if e is not None]
        if failed:
            i, error = failed[0]
            raise RoundFailed(
                f"{what} failed on {len(failed)} peer(s), first {job.plan.names[i]} (peer {i}): "
                f"{error}"
            )

    # ---- collecting ---------------------------------------------------------------------------
    def _collect(self, job: _Job) -> None:
        with ThreadPoolExecutor(max_workers=min(16, job.n), thread_name_prefix="poll") as pool:
            while not job.stop.is_set():
                self._poll_once(job, pool)
                if job.state in GOSSIP_FINAL:
                    break
                job.stop.wait(self._poll)
        log.info("gossip job %s: %s %s", job.job_id, job.state, job.message)

    def _poll_once(self, job: _Job, pool: ThreadPoolExecutor) -> None:
        alive = [i for i in range(job.n) if i not in job.dead]
        timeout = min(self._timeout, max(1.0, 5 * self._poll))
        futures = {
            i: pool.submit(job.clients[i].reports, job.job_id, i, job.next_from[i], timeout)
            for i in alive
        }
        now = self._clock()
        newly_dead = []
        with job.lock:
            for i, future in futures.items():
                error = future.exception()
                if error is None:
                    self._take(job, i, future.result(), now)
                    if job.peer_state[i] == FAILED:
                        newly_dead.append(i)
                elif isinstance(error, PeerLate):
                    job.unresponsive.add(i)
                elif isinstance(error, PeerUnreachable):
                    if now - job.last_ok[i] >= self._dead_after:
                        newly_dead.append(i)
                else:
                    log.warning("gossip job %s: polling peer %d: %s", job.job_id, i, error)
            if newly_dead:
                self._declare_dead(job, newly_dead)
            self._emit(job)
            self._maybe_done(job)

    def _take(self, job: _Job, peer: int, answer: PeerReports, now: float) -> None:
        job.last_ok[peer] = now
        job.unresponsive.discard(peer)
        job.peer_state[peer] = answer.state
        if answer.dropped:  # the peer no longer keeps these rounds: do not wait for them
            start = job.next_from[peer]
            job.lost.append((peer, start, start + answer.dropped))
            job.next_from[peer] = start + answer.dropped
        for timed in answer.reports:
            r = timed.report.round
            if r >= job.next_from[peer] and r < job.plan.spec.rounds:
                job.pending.setdefault(r, {})[peer] = timed
                job.next_from[peer] = r + 1

    def _declare_dead(self, job: _Job, peers: Sequence[int]) -> None:
        job.dead.update(peers)
        job.unresponsive.difference_update(peers)
        names = ", ".join(f"{job.plan.names[i]} (peer {i})" for i in sorted(job.dead))
        log.warning("gossip job %s: unreachable: %s", job.job_id, names)
        self._metrics.dead_peers(job.job_id, len(job.dead))
        groups = remaining_components(job.plan.topology.graph, sorted(job.dead))
        if len(groups) > 1:
            shown = "; ".join("{" + ", ".join(map(str, g)) + "}" for g in groups)
            self._stop_peers(job)
            job.state = JOB_FAILED
            job.message = (
                f"unreachable: {names}; the remaining {job.n - len(job.dead)} peers form "
                f"{len(groups)} disconnected groups ({shown}), so gossip cannot reach consensus: "
                "job stopped"
            )
        elif not groups:
            self._stop_peers(job)
            job.state, job.message = JOB_FAILED, f"every peer is unreachable: {names}"
        else:
            job.message = f"continuing on the remaining connected graph without {names}"

    def _emit(self, job: _Job) -> None:
        """Turn every complete round (every peer not dead reported it) into a record, in order."""
        rounds = job.plan.spec.rounds
        while len(job.records) < rounds and job.state == JOB_RUNNING:
            r = len(job.records)
            got = job.pending.get(r, {})
            if any(
                i not in got and not _lost(job, i, r) for i in range(job.n) if i not in job.dead
            ):
                return
            record = self._record(job, r, got)
            job.pending.pop(r, None)
            job.records.append(record)
            timed = max(10, MAX_TIMINGS // job.n)
            if len(job.records) > timed:
                old = job.records[-timed - 1]
                job.records[-timed - 1] = replace(old, peer_timings=())
            self._metrics.recorded(
                job.job_id,
                job.plan.spec.scheme,
                record.loss,
                record.gap,
                record.consensus_distance,
                record.skipped_gradients,
            )

    def _record(self, job: _Job, r: int, got: dict[int, TimedReport]) -> GossipRoundRecord:
        reports = [got[i].report for i in sorted(got)]
        loss = gap = consensus = math.nan
        if reports and all(rep.params is not None for rep in reports):
            stacked = np.array([rep.params for rep in reports], dtype=np.float64)
            if stacked.ndim == 2 and stacked.shape[1] == job.plan.evaluator.initial.size:
                mean = stacked.mean(axis=0)
                loss = job.plan.evaluator.loss(mean)
                gap = job.plan.evaluator.gap(mean)
                consensus = consensus_distance(stacked)
        timings = tuple(
            PeerRoundTiming(
                peer=rep.peer,
                round_seconds=rep.round_seconds,
                compute_seconds=rep.compute_seconds,
                gossip_seconds=max(0.0, rep.round_seconds - rep.compute_seconds),
                skipped_gradient=rep.skipped_gradient,
                missing=len(rep.missing),
            )
            for rep in reports
        )
        return GossipRoundRecord(
            round=r,
            peers=len(reports),
            loss=loss,
            gap=gap,
            consensus_distance=consensus,
            skipped_gradients=sum(rep.skipped_gradient for rep in reports),
            missing_values=sum(len(rep.missing) for rep in reports),
            wall_seconds=max((got[i].job_seconds for i in got), default=math.nan),
            max_round_seconds=max((rep.round_seconds for rep in reports), default=math.nan),
            peer_timings=timings,
        )

    def _maybe_done(self, job: _Job) -> None:
        if job.state != JOB_RUNNING or len(job.records) < job.plan.spec.rounds:
            return
        alive = [i for i in range(job.n) if i not in job.dead]
        if all(job.peer_state[i] == FINISHED for i in alive):
            job.state = SUCCEEDED
            if job.dead:
                job.message = f"finished without {len(job.dead)} unreachable peer(s)"
            self._stop_peers(job)

    def _stop_peers(self, job: _Job) -> None:
        """Tell every peer not known dead to drop the job (best effort, in the background)."""
        alive = [job.clients[i] for i in range(job.n) if i not in job.dead]

        def stop_all() -> None:
            for client in alive:
                client.stop(job.job_id, 5.0)

        threading.Thread(target=stop_all, name=f"stop-{job.job_id}", daemon=True).start()

    # ---- status and stop ----------------------------------------------------------------------
    def status(self, job_id: str, from_round: int = 0) -> GossipJobStatus:
        """The job's state and its records of rounds ``from_round`` onwards (at most
        ``MAX_RECORDS_PER_ANSWER`` of them)."""
        check_job_id(job_id)
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"the coordinator knows no gossip job {job_id!r}")
        plan = job.plan
        with job.lock:
            return GossipJobStatus(
                job_id=job_id,
                state=job.state,
                spec=plan.spec,
                message=job.message,
                graph=plan.topology.graph.name,
                n_peers=job.n,
                slem=plan.topology.slem,
                spectral_gap=plan.topology.spectral_gap,
                peer_names=plan.names,
                dead=tuple(sorted(job.dead)),
                unresponsive=tuple(sorted(job.unresponsive)),
                rounds_done=len(job.records),
                records=tuple(
                    job.records[max(0, from_round) : max(0, from_round) + MAX_RECORDS_PER_ANSWER]
                ),
                initial_loss=plan.evaluator.loss(plan.evaluator.initial),
                setup_seconds=job.setup_seconds,
            )

    def stop(self, job_id: str) -> GossipJobStatus:
        """Stop a running job on every peer (a finished job is left as it is)."""
        check_job_id(job_id)
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"the coordinator knows no gossip job {job_id!r}")
        with job.lock:
            if job.state not in GOSSIP_FINAL:
                self._end(job, STOPPED, "stopped on request", locked=True)
        return self.status(job_id)

    def _end(self, job: _Job, state: str, message: str, locked: bool = False) -> None:
        if not locked:
            with job.lock:
                return self._end(job, state, message, locked=True)
        job.state, job.message = state, message
        job.stop.set()
        self._stop_peers(job)
        return None

    def _forget_old(self) -> None:
        """Keep at most ``max_jobs`` jobs: forget the oldest finished ones (lock held)."""
        finished = [k for k, j in self._jobs.items() if j.state in GOSSIP_FINAL]
        while len(self._jobs) >= self._max_jobs and finished:
            job_id = finished.pop(0)
            old = self._jobs.pop(job_id)
            for client in old.clients:
                client.close()
            self._metrics.forget(job_id)

    def close(self) -> None:
        """Stop collecting (the peers keep their jobs: the coordinator is not on the round path)."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.stop.set()
            if job.thread is not None:
                job.thread.join(5.0)
            for client in job.clients:
                client.close()


def _lost(job: _Job, peer: int, round_: int) -> bool:
    return any(p == peer and lo <= round_ < hi for p, lo, hi in job.lost)


__all__ = [
    "MAX_GOSSIP_JOBS",
    "GossipJobs",
    "GossipMetricsPort",
    "NoGossipMetrics",
    "PeerClient",
    "PeerLate",
    "PeerUnreachable",
]
