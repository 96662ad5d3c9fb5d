"""The edge aggregator's logic: fan a round out, stop at the first decodable set, decode.

No gRPC here: workers are reached through an injected :class:`WorkerClient`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgecode.codes.combine import MessageBuffer
from edgecode.codes.flat import GradientCode
from edgecode.errors import InvalidInput, NotDecodable, RoundFailed, UnknownJob
from edgecode.gather import Gather, Pending

log = logging.getLogger(__name__)

DECODE, FORWARD = "decode", "forward"


class WorkerClient(Protocol):
    def compute(
        self, worker: int, job_id: str, round_: int, params: Any, epoch: int, timeout: float
    ) -> Pending:
        """Start worker ``worker``'s computation; the call's result is ``(vector, compute_seconds)``."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Timing:
    node: str
    seconds: float
    arrived: bool
    compute_seconds: float = 0.0
    load_fraction: float = 0.0


@dataclass
class EdgeResult:
    """One message of a round's reply: the decoded vector (DECODE) or one worker's (FORWARD)."""

    vector: np.ndarray
    worker: str = ""
    combined: list[str] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)


@dataclass
class EdgeJob:
    job_id: str
    workers: tuple[str, ...]
    client: WorkerClient
    mode: str
    deadline_seconds: float
    code: GradientCode | None
    load_fractions: tuple[float, ...]


class AggregatorLogic:
    def __init__(
        self,
        name: str,
        client_factory: Callable[[Sequence[str]], WorkerClient],
        metrics: Any = None,
        link_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._client_factory = client_factory
        self._metrics = metrics
        self._link_seconds = link_seconds
        self._clock = clock
        self._jobs: dict[str, EdgeJob] = {}
        self._lock = threading.Lock()

    def configure(
        self,
        job_id: str,
        names: Sequence[str],
        addresses: Sequence[str],
        mode: str,
        deadline_seconds: float,
        code_rows: np.ndarray | None = None,
        targets: np.ndarray | None = None,
        s_worker: int = 0,
    ) -> int:
        """Set (or replace) a job's workers and, in DECODE mode, its code rows and targets."""
        if not job_id:
            raise InvalidInput("job_id must not be empty")
        if not names or len(names) != len(addresses) or not all(names) or not all(addresses):
            raise InvalidInput("every worker needs a name and an address")
        if len(set(names)) != len(names):
            raise InvalidInput(f"worker names must be distinct, got {list(names)}")
        if not (deadline_seconds > 0 and math.isfinite(deadline_seconds)):
            raise InvalidInput(f"worker_deadline_seconds must be > 0, got {deadline_seconds}")
        code = None
        fractions = tuple(0.0 for _ in names)
        if mode == DECODE:
            if (
                code_rows is None
                or targets is None
                or code_rows.ndim != 2
                or code_rows.shape[0] != len(names)
            ):
                raise InvalidInput(
                    f"DECODE mode needs code rows of shape ({len(names)}, K) and targets (K,)"
                )
            if targets.shape != (code_rows.shape[1],):
                raise InvalidInput(
                    f"targets must have shape ({code_rows.shape[1]},), got {targets.shape}"
                )
            if not 0 <= s_worker < len(names):
                raise InvalidInput(f"s_worker must be in [0, {len(names) - 1}], got {s_worker}")
            holders = tuple(
                tuple(int(w) for w in np.flatnonzero(code_rows[:, j]))
                for j in range(code_rows.shape[1])
            )
            code = GradientCode(
                B=np.array(code_rows),
                stragglers=s_worker,
                holders=holders,
                name=f"edge {self.name}",
                targets=np.array(targets),
            )
            K = code_rows.shape[1]
            fractions = tuple(float(np.count_nonzero(row)) / K for row in code_rows)
        elif mode != FORWARD:
            raise InvalidInput(f"mode must be decode or forward, got {mode!r}")
        job = EdgeJob(
            job_id=job_id,
            workers=tuple(names),
            client=self._client_factory(addresses),
            mode=mode,
            deadline_seconds=deadline_seconds,
            code=code,
            load_fractions=fractions,
        )
        if self._metrics is not None:  # export every worker's series from the first scrape
            for name in names:
                self._metrics.peer_latency.labels(name)
        with self._lock:
            old = self._jobs.pop(job_id, None)
            self._jobs[job_id] = job
        if old is not None:
            old.client.close()
        return len(names)

    def run_round(
        self,
        job_id: str,
        round_: int,
        params: Any,
        epoch: int,
        length: int,
        is_active: Callable[[], bool],
    ) -> Iterator[EdgeResult]:
        """Fan out; yield the decoded vector (DECODE) or every arrival (FORWARD).

        ``params`` is passed through to the workers untouched; ``length`` is the gradient length
        every worker's vector must have (a wrong one counts as a failed worker).
        """
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"edge {self.name} has no job {job_id!r}")
        gather: Gather[int] = Gather(self._clock)
        deadline = gather.started + job.deadline_seconds
        for index in range(len(job.workers)):
            gather.submit(
                index,
                job.client.compute(index, job_id, round_, params, epoch, job.deadline_seconds),
            )
        if job.mode == FORWARD:
            yield from self._forward(job, gather, deadline, length, is_active)
        else:
            yield self._decode(job, gather, deadline, length)

    def _arrivals(
        self, job: EdgeJob, gather: Gather[int], deadline: float, length: int, timings: list[Timing]
    ) -> Iterator[tuple[int, np.ndarray]]:
        while True:
            outcome = gather.next(deadline)
            if outcome is None:
                return
            index, result, error, seconds = outcome
            name = job.workers[index]
            if self._metrics is not None:
                self._metrics.peer_latency.labels(name).observe(seconds)
            if error is None:
                vector, compute_seconds = result
                if vector.shape != (length,):
                    error = InvalidInput(
                        f"worker {name} sent shape {vector.shape}, expected ({length},)"
                    )
            if error is not None:
                log.debug("edge %s: worker %s failed round: %s", self.name, name, error)
                timings.append(Timing(name, seconds, False, 0.0, job.load_fractions[index]))
                continue
            timings.append(
                Timing(name, seconds, True, float(compute_seconds), job.load_fractions[index])
            )
            if self._metrics is not None:
                self._metrics.received_bytes.inc(vector.nbytes)
            yield index, vector

    def _finish(self, job: EdgeJob, gather: Gather[int], timings: list[Timing]) -> None:
        stragglers = gather.cancel_rest()
        elapsed = self._clock() - gather.started
        for index in stragglers:
            timings.append(
                Timing(job.workers[index], elapsed, False, 0.0, job.load_fractions[index])
            )
            if self._metrics is not None:  # a cut-off straggler took at least this long
                self._metrics.peer_latency.labels(job.workers[index]).observe(elapsed)
        if self._metrics is not None:
            self._metrics.stragglers.inc(sum(1 for t in timings if not t.arrived))
            self._metrics.round_seconds.observe(elapsed)

    def _decode(
        self, job: EdgeJob, gather: Gather[int], deadline: float, length: int
    ) -> EdgeResult:
        assert job.code is not None
        buffer = MessageBuffer(len(job.workers), length)
        timings: list[Timing] = []
        decoding = None
        for index, vector in self._arrivals(job, gather, deadline, length, timings):
            buffer.add(index, vector)
            try:
                decoding = job.code.decode_vector(buffer.senders)
                break
            except NotDecodable:
                continue
        self._finish(job, gather, timings)
        if decoding is None:
            raise RoundFailed(
                f"edge {self.name}: {len(buffer.senders)} of {len(job.workers)} workers answered usably "
                f"({sum(1 for t in timings if not t.arrived)} failed or were late); "
                f"{len(job.workers) - job.code.stragglers} are needed"
            )
        start = self._clock()
        vector = buffer.combine(decoding)
        if self._metrics is not None:
            self._metrics.decode_seconds.observe(self._clock() - start)
        self._emulate_link()
        if self._metrics is not None:
            self._metrics.sent_bytes.inc(vector.nbytes)
        return EdgeResult(
            vector=vector, combined=[job.workers[i] for i in buffer.senders], timings=timings
        )

    def _forward(
        self,
        job: EdgeJob,
        gather: Gather[int],
        deadline: float,
        length: int,
        is_active: Callable[[], bool],
    ) -> Iterator[EdgeResult]:
        timings: list[Timing] = []
        try:
            for index, vector in self._arrivals(job, gather, deadline, length, timings):
                # The link is a latency: this message reaches the master `link` after it reached
                # the edge, independently of the messages before it.
                self._emulate_link(until=gather.started + timings[-1].seconds + self._link_seconds)
                if self._metrics is not None:
                    self._metrics.sent_bytes.inc(vector.nbytes)
                yield EdgeResult(vector=vector, worker=job.workers[index], timings=[timings[-1]])
                if not is_active():
                    return
        finally:
            self._finish(job, gather, timings)

    def _emulate_link(self, until: float | None = None) -> None:
        """Emulated edge -> master link latency (netem is not available on these machines)."""
        if self._link_seconds <= 0:
            return
        delay = self._link_seconds if until is None else until - self._clock()
        if delay > 0:
            threading.Event().wait(delay)

    def close(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
        for job in jobs:
            job.client.close()
