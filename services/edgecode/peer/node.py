"""A peer process's jobs: install, run in the background, keep reports, stop (pure, no gRPC).

:class:`PeerNode` is what the servicer calls. Each job gets its own
:class:`~edgecode.peer.logic.PeerLogic` (so each job has its own straggler emulation), its own
neighbour transport (built by a :class:`TransportFactory` from the addresses in the
coordinator's assignment, and from nowhere else), and one thread that runs its rounds from
:meth:`PeerNode.start` until the last round, a failure, or :meth:`PeerNode.stop`.

Reports are kept in a bounded buffer per job (at most ``max_reports`` of them and
``max_report_bytes`` of attached parameters; the oldest go first) until the coordinator
collects them with :meth:`PeerNode.reports`; the coordinator is never waited for.

Example (one peer of a two-peer ring, the other side played by hand)
-------
>>> import numpy as np
>>> from edgecode.gossip_records import NeighbourLink, PeerAssignment
>>> class Loopback:
...     def __init__(self): self.sent = []
...     def send(self, message, neighbours): self.sent.append(message)
...     def close(self): pass
>>> wire = Loopback()
>>> node = PeerNode("peer-0", lambda links, timeout: wire)
>>> assignment = PeerAssignment(
...     "j", "gossip", 0, 2, (NeighbourLink(1, "peer-1", "127.0.0.1:1", 0.5),), 0.5,
...     "least_squares", 1, 1, 0.0, (0,), (1,), 2, 1.0, 0.0, 0.0, 1, 1.0, 5.0, False, 1, "",
...     0.0, 0, np.zeros(2))
>>> builder = node.begin(assignment)
>>> builder.add(0, np.array([[1.0]]), np.array([1.0]))
>>> node.install(builder)
(1, 1)
>>> node.receive("j", 0, 1, np.array([2.0, 4.0]))
>>> node.start("j")
0
>>> node.wait("j", timeout=10.0)
'finished'
>>> node.reports("j").reports[0].report.params.tolist()
[1.0, 2.0]
>>> node.close()
"""

from __future__ import annotations

import logging
import math
import threading
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from edgecode.emulation import StraggleConfig, parse_straggle
from edgecode.errors import InvalidInput, Overloaded, UnknownJob
from edgecode.gossip_records import (
    FAILED,
    FINISHED,
    PLACED,
    RUNNING,
    NeighbourLink,
    PeerAssignment,
    PeerReports,
    RoundReport,
    TimedReport,
    check_job_id,
)
from edgecode.learning.gossip import StepSchedule
from edgecode.learning.models import get_model
from edgecode.peer.logic import (
    Clock,
    GossipMessage,
    MonotonicClock,
    NeighbourTransport,
    PeerJob,
    PeerLogic,
    RuntimeStraggle,
)

log = logging.getLogger(__name__)

#: Jobs a peer holds at once (placing one more is refused with RESOURCE_EXHAUSTED, unless a
#: finished or failed job can make room).
MAX_JOBS = 16
#: Reports kept per job, and bytes of attached parameters kept per job.
MAX_REPORTS = 20_000
MAX_REPORT_BYTES = 64 * 1024 * 1024
#: Most reports (and bytes of attached parameters) in one answer to :meth:`PeerNode.reports`.
MAX_REPORTS_PER_ANSWER = 5_000
MAX_ANSWER_BYTES = 8 * 1024 * 1024


class ClosableTransport(NeighbourTransport, Protocol):
    def close(self) -> None: ...


class TransportFactory(Protocol):
    """Builds the transport of one job to its neighbours (``timeout``: per message, seconds)."""

    def __call__(self, links: Sequence[NeighbourLink], timeout: float) -> ClosableTransport: ...


class PeerMetricsPort(Protocol):
    """What a peer records (runtime.metrics.PeerMetrics)."""

    def round_done(self, scheme: str, report: RoundReport, names: Mapping[int, str]) -> None: ...

    def known_neighbours(self, names: Sequence[str]) -> None: ...

    def jobs_held(self, counts: Mapping[str, int]) -> None: ...


class NoPeerMetrics:
    def round_done(self, scheme: str, report: RoundReport, names: Mapping[int, str]) -> None:
        pass

    def known_neighbours(self, names: Sequence[str]) -> None:
        pass

    def jobs_held(self, counts: Mapping[str, int]) -> None:
        pass


class JobBuilder:
    """Collects a streamed job's partitions; :meth:`PeerNode.install` validates and installs it
    atomically (a stream that breaks off installs nothing)."""

    def __init__(self, assignment: PeerAssignment) -> None:
        self.assignment = assignment.validated()
        self.chunks: dict[int, list[tuple[Any, NDArray[Any]]]] = {
            j: [] for j in assignment.partitions
        }

    def add(self, partition: int, features: Any, labels: NDArray[Any]) -> None:
        a = self.assignment
        if partition not in self.chunks:
            raise InvalidInput(f"chunk of partition {partition}, which the header does not list")
        if features.ndim != 2 or features.shape[1] != a.n_features:
            raise InvalidInput(
                f"partition {partition}: features must have {a.n_features} columns, got shape "
                f"{features.shape}"
            )
        if labels.shape != (features.shape[0],):
            raise InvalidInput(
                f"partition {partition}: {features.shape[0]} rows but labels of shape {labels.shape}"
            )
        expected = a.rows[a.partitions.index(partition)]
        held = sum(int(x.shape[0]) for x, _ in self.chunks[partition])
        if held + features.shape[0] > expected:
            raise InvalidInput(f"partition {partition}: more than its {expected} rows")
        self.chunks[partition].append((features, labels))

    def data(self) -> tuple[tuple[Any, NDArray[Any]], ...]:
        a = self.assignment
        out = []
        for j, expected in zip(a.partitions, a.rows, strict=True):
            parts = self.chunks[j]
            arrived = sum(int(x.shape[0]) for x, _ in parts)
            if arrived != expected:
                raise InvalidInput(f"partition {j} has {arrived} of its {expected} rows")
            blocks = [x for x, _ in parts]
            X = sp.vstack(blocks, format="csr") if sp.issparse(blocks[0]) else np.vstack(blocks)
            out.append((X, np.concatenate([y for _, y in parts])))
        return tuple(out)


@dataclass(eq=False)
class _Job:
    assignment: PeerAssignment
    logic: PeerLogic
    transport: ClosableTransport
    names: dict[int, str]
    state: str = PLACED
    message: str = ""
    started: float = 0.0
    thread: threading.Thread | None = None
    reports: deque[TimedReport] = field(default_factory=deque)
    report_bytes: int = 0
    #: the lowest round a report was evicted for (-1: none evicted)
    evicted_up_to: int = -1
    done: threading.Event = field(default_factory=threading.Event)


class _Sink:
    """A job's report sink: stamps the seconds since its start, keeps it, records metrics."""

    def __init__(self, node: PeerNode, job: Callable[[], _Job]) -> None:
        self._node = node
        self._job = job

    def report(self, report: RoundReport) -> None:
        self._node._keep(self._job(), report)


class PeerNode:
    """The jobs of one peer process (thread-safe)."""

    def __init__(
        self,
        name: str,
        transports: TransportFactory,
        *,
        straggle: StraggleConfig | None = None,
        seed: int = 0,
        metrics: PeerMetricsPort | None = None,
        clock: Clock | None = None,
        max_jobs: int = MAX_JOBS,
        max_reports: int = MAX_REPORTS,
        max_report_bytes: int = MAX_REPORT_BYTES,
    ) -> None:
        self.name = name
        self._transports = transports
        self._straggle = straggle or StraggleConfig()
        self._seed = int(seed)
        self._metrics: PeerMetricsPort = metrics if metrics is not None else NoPeerMetrics()
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._max_jobs = max_jobs
        self._max_reports = max_reports
        self._max_report_bytes = max_report_bytes
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    # -- placing and starting
    def begin(self, assignment: PeerAssignment) -> JobBuilder:
        """Start receiving a job's partitions (the header is validated here)."""
        return JobBuilder(assignment)

    def install(self, builder: JobBuilder) -> tuple[int, int]:
        """Build the job from a complete stream and hold it (replacing one with the same id);
        returns (partitions, rows)."""
        a = builder.assignment
        data = builder.data()
        try:
            model = get_model(a.model, l2=a.l2)
        except ValueError as exc:
            raise InvalidInput(f"model: {exc}") from None
        expected = model.n_params(a.n_features, a.n_classes)
        if a.initial_params.shape != (expected,):
            raise InvalidInput(
                f"initial_params must have shape ({expected},) for {a.model} on {a.n_features} "
                f"features, got {a.initial_params.shape}"
            )
        job = PeerJob(
            job_id=a.job_id,
            peer=a.peer,
            neighbours=tuple(n.index for n in a.neighbours),
            neighbour_weights=tuple(n.weight for n in a.neighbours),
            self_weight=a.self_weight,
            model=model,
            data=data,
            n_partitions=a.n_partitions,
            coefficient=a.coefficient,
            step=StepSchedule(a.step_initial, a.step_decay_rounds or math.inf),
            initial_params=a.initial_params,
            rounds=a.rounds,
            compute_deadline=a.compute_deadline_seconds,
            gossip_deadline=a.gossip_deadline_seconds,
            wait_for_gradient=a.wait_for_gradient,
            report_params_every=a.report_params_every,
        )  # raises ValueError / InvalidInput on a bad row, weights or data
        emulation = self._emulation(a)
        with self._lock:
            old = self._jobs.get(a.job_id)
            if old is None and len(self._jobs) >= self._max_jobs:
                self._make_room()
        transport = self._transports(
            a.neighbours, a.gossip_deadline_seconds + a.compute_deadline_seconds
        )
        holder: list[_Job] = []
        logic = PeerLogic(
            transport, _Sink(self, lambda: holder[0]), clock=self._clock, straggle=emulation
        )
        logic.install(job)
        entry = _Job(a, logic, transport, {n.index: n.name for n in a.neighbours})
        holder.append(entry)
        with self._lock:
            old = self._jobs.get(a.job_id)
            self._jobs[a.job_id] = entry
        if old is not None:
            self._end(old)
        self._metrics.known_neighbours([n.name for n in a.neighbours])
        self._publish()
        return len(data), sum(int(X.shape[0]) for X, _ in data)

    def _emulation(self, a: PeerAssignment) -> RuntimeStraggle:
        config = self._straggle
        if a.straggle or a.compute_seconds > 0:  # the job's emulation replaces the peer's own
            try:
                config = parse_straggle(a.straggle or "none", a.compute_seconds)
            except ValueError as exc:
                raise InvalidInput(f"straggle: {exc}") from None
        # One stream per (peer seed, job seed): the same seed gives every scheme of a comparison
        # the same straggle pattern.
        rng = np.random.default_rng([self._seed, a.emulation_seed, zlib.crc32(b"peer")])
        return RuntimeStraggle(config.runtime(a.n_partitions), rng)

    def _make_room(self) -> None:
        """Forget the oldest job that is no longer running (lock held), or refuse."""
        for job_id, job in self._jobs.items():
            if job.state in (FINISHED, FAILED):
                del self._jobs[job_id]
                job.transport.close()
                return
        raise Overloaded(f"peer {self.name} already runs {len(self._jobs)} jobs")

    def start(self, job_id: str) -> int:
        """Run the job's rounds in the background; returns the next round (idempotent)."""
        check_job_id(job_id)
        with self._lock:
            job = self._job(job_id)
            if job.thread is None:
                job.state, job.started = RUNNING, self._clock.now()
                job.thread = threading.Thread(
                    target=self._run, args=(job,), name=f"peer-{job_id}", daemon=True
                )
                job.thread.start()
        self._publish()
        return job.logic.current_round(job_id)

    def _run(self, job: _Job) -> None:
        job_id = job.assignment.job_id
        try:
            job.logic.run(job_id)
            state, message = FINISHED, ""
        except UnknownJob:  # stopped or replaced: nothing to report
            state, message = FAILED, "stopped"
        except Exception as exc:  # a bug or bad data: the job fails, the peer stays up
            log.exception("job %s failed", job_id)
            state, message = FAILED, f"{type(exc).__name__}: {exc}"
        with self._lock:
            job.state, job.message = state, message
        job.done.set()
        self._publish()

    # -- messages and reports
    def receive(self, job_id: str, round_: int, sender: int, params: Any) -> None:
        """A neighbour's value (validated by the job's logic; refused values change nothing)."""
        check_job_id(job_id)
        with self._lock:
            job = self._job(job_id)
        job.logic.receive(GossipMessage(job_id, round_, sender, params))

    def _keep(self, job: _Job, report: RoundReport) -> None:
        timed = TimedReport(report, max(0.0, self._clock.now() - job.started))
        size = 0 if report.params is None else int(report.params.nbytes)
        with self._lock:
            job.reports.append(timed)
            job.report_bytes += size
            while job.reports and (
                len(job.reports) > self._max_reports or job.report_bytes > self._max_report_bytes
            ):
                old = job.reports.popleft()
                job.evicted_up_to = old.report.round
                job.report_bytes -= 0 if old.report.params is None else old.report.params.nbytes
        self._metrics.round_done(job.assignment.scheme, report, job.names)

    def reports(self, job_id: str, from_round: int = 0, max_reports: int = 0) -> PeerReports:
        """The job's state and its kept reports of rounds >= ``from_round`` (at most
        ``max_reports``, or the answer limit); ``dropped`` counts those no longer kept."""
        check_job_id(job_id)
        if isinstance(from_round, bool) or from_round < 0 or max_reports < 0:
            raise InvalidInput("from_round and max_reports must be >= 0")
        limit = min(max_reports or MAX_REPORTS_PER_ANSWER, MAX_REPORTS_PER_ANSWER)
        with self._lock:
            job = self._job(job_id)
            chosen: list[TimedReport] = []
            size = 0
            for timed in job.reports:
                if timed.report.round < from_round:
                    continue
                params = timed.report.params
                size += 0 if params is None else int(params.nbytes)
                if len(chosen) >= limit or (chosen and size > MAX_ANSWER_BYTES):
                    break
                chosen.append(timed)
            dropped = max(0, job.evicted_up_to + 1 - from_round)
            state, message = job.state, job.message
        try:
            next_round = job.logic.current_round(job_id)
        except UnknownJob:  # stopped while we looked
            next_round = 0
        return PeerReports(
            state=state,
            round=next_round,
            rounds=job.assignment.rounds,
            message=message,
            reports=tuple(chosen),
            dropped=dropped,
        )

    def wait(self, job_id: str, timeout: float | None = None) -> str:
        """Block until the job has stopped running (or ``timeout``); returns its state."""
        with self._lock:
            job = self._job(job_id)
        job.done.wait(timeout)
        return job.state

    # -- stopping
    def stop(self, job_id: str) -> bool:
        """Stop the job (a round in flight is abandoned) and forget it."""
        check_job_id(job_id)
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is None:
            return False
        self._end(job)
        self._publish()
        return True

    def _end(self, job: _Job) -> None:
        job.logic.drop(job.assignment.job_id)
        job.transport.close()
        if job.thread is not None:
            job.thread.join(5.0)
        job.done.set()

    def close(self) -> None:
        """Stop every job (on SIGTERM)."""
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
        for job in jobs:
            self._end(job)

    def jobs(self) -> dict[str, str]:
        """Job id -> state."""
        with self._lock:
            return {job_id: job.state for job_id, job in self._jobs.items()}

    def _job(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"peer {self.name} holds no job {job_id!r}")
        return job

    def _publish(self) -> None:
        counts = dict.fromkeys((PLACED, RUNNING, FINISHED, FAILED), 0)
        for state in self.jobs().values():
            counts[state] += 1
        self._metrics.jobs_held(counts)


__all__ = [
    "MAX_JOBS",
    "MAX_REPORTS",
    "ClosableTransport",
    "JobBuilder",
    "NoPeerMetrics",
    "PeerMetricsPort",
    "PeerNode",
    "TransportFactory",
]
