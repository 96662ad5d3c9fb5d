"""The edge aggregator's logic: fan a round out to the job's workers, stop at the first decodable
set, decode the edge layer (DECODE) or pass every arrival on (FORWARD).

No gRPC here: workers are reached through an injected :class:`WorkerClient`, and the round is
collected by the one round engine (:mod:`edgecode.rounds`) with an :class:`~edgecode.rounds.ExactRule`
over the edge's code rows, the same rule the master uses for its own layer.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from edgecode.codes.combine import Rule
from edgecode.codes.flat import GradientCode
from edgecode.errors import InvalidInput, StaleRound, UnknownJob
from edgecode.records import Timing
from edgecode.rounds import FutureSource, NoObserver, Pending, Round
from edgecode.rules import ExactRule
from edgecode.verification import VerifyingRule

log = logging.getLogger(__name__)

DECODE, FORWARD = "decode", "forward"
#: Configurations kept per job: the one rounds use and the next one (being placed).
MAX_EPOCHS_HELD = 2


class WorkerClient(Protocol):
    """The edge's calls to one job's workers (gRPC in transport.py, fakes in tests)."""

    def compute(
        self, job_id: str, round_: int, params: np.ndarray, epoch: int, timeout: float
    ) -> Sequence[Pending]:
        """Start every worker's computation (in the order the client was made with); each
        call's result is a :class:`~edgecode.rounds.Message` named after its worker."""
        ...

    def close(self) -> None: ...


#: ``client_factory(names, addresses)`` builds the client of one job's workers.
ClientFactory = Callable[[Sequence[str], Sequence[str]], WorkerClient]


class EdgeMetrics(Protocol):
    """What the edge's logic records (runtime.metrics.AggregatorMetrics; default: nothing)."""

    def response(self, node: str, seconds: float) -> None: ...

    def received(self, nbytes: int) -> None: ...

    def decoded(self, seconds: float) -> None: ...

    def round_done(self, seconds: float, stragglers: int) -> None: ...

    def sent(self, nbytes: int) -> None: ...

    def known_workers(self, names: Sequence[str]) -> None:
        """Export these workers' series from the first scrape."""
        ...

    def inconsistent(self, node: str) -> None:
        """``node``'s answer contradicted the others (verify)."""
        ...


class NoEdgeMetrics(NoObserver):
    """Records nothing."""

    def round_done(self, seconds: float, stragglers: int) -> None:
        pass

    def sent(self, nbytes: int) -> None:
        pass

    def known_workers(self, names: Sequence[str]) -> None:
        pass

    def inconsistent(self, node: str) -> None:
        pass


@dataclass
class EdgeResult:
    """One message of a round's reply: the decoded vector (DECODE) or one worker's (FORWARD)."""

    vector: np.ndarray
    worker: str = ""
    combined: tuple[str, ...] = ()
    timings: tuple[Timing, ...] = ()
    suspects: tuple[str, ...] = ()


@dataclass
class EdgeJob:
    """One job as this edge knows it: its workers, their client, the mode and the code."""

    job_id: str
    workers: tuple[str, ...]
    client: WorkerClient
    mode: str
    deadline_seconds: float
    code: GradientCode | None
    load_fractions: dict[str, float]
    epoch: int = 0
    #: shape of each worker's answer: 0 = one vector [d], -1 = [V, d] with any V
    message_rows: int = 0
    #: check each decoding against a spare answer, waiting at most this long for it (0: off)
    verify_slack: float = 0.0
    verify: bool = False
    #: configuration order (a newer configuration of the same job has a larger number)
    installed: int = 0

    def rule(self) -> Rule:
        assert self.code is not None
        needed = len(self.workers) - self.code.stragglers
        if self.verify:
            return VerifyingRule(len(self.workers), self.code.decode_vector, needed)
        return ExactRule(len(self.workers), self.code.decode_vector, needed)


def edge_code(
    name: str, n_workers: int, code_rows: np.ndarray | None, targets: np.ndarray | None, s: int
) -> GradientCode:
    """The edge layer's code from its rows (n_workers x K) and targets (K,), validated."""
    if code_rows is None or targets is None or code_rows.ndim != 2:
        raise InvalidInput(
            f"DECODE mode needs code rows of shape ({n_workers}, K) and targets (K,)"
        )
    if code_rows.shape[0] != n_workers:
        raise InvalidInput(
            f"DECODE mode needs code rows of shape ({n_workers}, K), got {code_rows.shape}"
        )
    if targets.shape != (code_rows.shape[1],):
        raise InvalidInput(f"targets must have shape ({code_rows.shape[1]},), got {targets.shape}")
    if not 0 <= s < n_workers:
        raise InvalidInput(f"s_worker must be in [0, {n_workers - 1}], got {s}")
    holders = tuple(
        tuple(int(w) for w in np.flatnonzero(code_rows[:, j])) for j in range(code_rows.shape[1])
    )
    return GradientCode(
        B=np.array(code_rows),
        stragglers=s,
        holders=holders,
        name=f"edge {name}",
        targets=np.array(targets),
    )


class AggregatorLogic:
    """The jobs this edge serves and their rounds."""

    def __init__(
        self,
        name: str,
        client_factory: ClientFactory,
        metrics: EdgeMetrics | None = None,
        link_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._client_factory = client_factory
        self._metrics: EdgeMetrics = metrics if metrics is not None else NoEdgeMetrics()
        self._link_seconds = link_seconds
        self._clock = clock
        #: job id -> placement epoch -> configuration
        self._jobs: dict[str, dict[int, EdgeJob]] = {}
        self._installs = 0
        #: job id -> when it was last configured or run (for the idle TTL)
        self._used: dict[str, float] = {}
        #: job id -> the epoch rounds use now (the last one a round named)
        self._in_use: dict[str, int] = {}
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
        epoch: int = 0,
        message_rows: int = 0,
        verify: bool = False,
        verify_slack: float = 0.0,
    ) -> int:
        """Set a job's workers and, in DECODE mode, their code rows and targets, for one
        placement epoch. The configuration rounds use now stays until the first round of a
        newer epoch arrives; configuring an epoch again replaces it."""
        if not job_id:
            raise InvalidInput("job_id must not be empty")
        if not names or len(names) != len(addresses) or not all(names) or not all(addresses):
            raise InvalidInput("every worker needs a name and an address")
        if len(set(names)) != len(names):
            raise InvalidInput(f"worker names must be distinct, got {list(names)}")
        if not (deadline_seconds > 0 and math.isfinite(deadline_seconds)):
            raise InvalidInput(f"worker_deadline_seconds must be > 0, got {deadline_seconds}")
        code = None
        fractions = dict.fromkeys(names, 0.0)
        if mode == DECODE:
            code = edge_code(self.name, len(names), code_rows, targets, s_worker)
            K = code.B.shape[1]
            fractions = {
                name: float(np.count_nonzero(row)) / K
                for name, row in zip(names, code.B, strict=True)
            }
        elif mode != FORWARD:
            raise InvalidInput(f"mode must be decode or forward, got {mode!r}")
        if verify and mode != DECODE:
            raise InvalidInput("verify needs DECODE mode (the master verifies forwarded answers)")
        if not (0 <= verify_slack <= deadline_seconds):
            raise InvalidInput(
                f"verify_slack_seconds must be in [0, the worker deadline], got {verify_slack}"
            )
        if message_rows not in (0, -1) or (message_rows and mode == DECODE):
            raise InvalidInput(
                f"message_rows must be 0 (one vector) or -1 (several, FORWARD mode only), got "
                f"{message_rows}"
            )
        job = EdgeJob(
            job_id=job_id,
            workers=tuple(names),
            client=self._client_factory(names, addresses),
            mode=mode,
            deadline_seconds=deadline_seconds,
            code=code,
            load_fractions=fractions,
            epoch=epoch,
            message_rows=message_rows,
            verify=verify,
            verify_slack=verify_slack,
        )
        self._metrics.known_workers(names)
        retired = []
        with self._lock:
            held = self._jobs.setdefault(job_id, {})
            if epoch in held:
                retired.append(held.pop(epoch))
            in_use = self._in_use.get(job_id)
            while len(held) >= MAX_EPOCHS_HELD:  # never the configuration rounds use now
                spare = [e for e in held if e != in_use] or list(held)
                retired.append(held.pop(min(spare, key=lambda e: held[e].installed)))
            self._installs += 1
            job.installed = self._installs
            held[epoch] = job
            self._used[job_id] = self._clock()
        for old in retired:
            old.client.close()
        return len(names)

    def drop(self, job_id: str) -> bool:
        """Forget a job (its workers' clients are closed); True when it was known."""
        with self._lock:
            held = self._jobs.pop(job_id, {})
            self._used.pop(job_id, None)
            self._in_use.pop(job_id, None)
        for job in held.values():
            job.client.close()
        return bool(held)

    def expire(self, ttl_seconds: float) -> list[str]:
        """Drop the jobs not configured or run for ``ttl_seconds`` (their master is gone
        without a DropJob); returns their ids."""
        now = self._clock()
        with self._lock:
            idle = [j for j, used in self._used.items() if now - used > ttl_seconds]
        for job_id in idle:
            self.drop(job_id)
        return idle

    def _current(self, job_id: str, epoch: int) -> EdgeJob:
        """The configuration of ``epoch``; those configured before it are retired."""
        retired = []
        with self._lock:
            held = self._jobs.get(job_id)
            if not held:
                raise UnknownJob(f"edge {self.name} has no job {job_id!r}")
            job = held.get(epoch)
            self._used[job_id] = self._clock()
            if job is None:
                raise StaleRound(
                    f"edge {self.name} has no configuration of placement epoch {epoch} "
                    f"for job {job_id!r} (has {sorted(held)})"
                )
            for other in [e for e, j in held.items() if j.installed < job.installed]:
                retired.append(held.pop(other))
            self._in_use[job_id] = epoch
        for old in retired:
            old.client.close()
        return job

    def run_round(
        self,
        job_id: str,
        round_: int,
        params: np.ndarray,
        epoch: int,
        is_active: Callable[[], bool],
        on_cancel: Callable[[Callable[[], None]], object] | None = None,
    ) -> Iterator[EdgeResult]:
        """Fan out; yield the decoded vector (DECODE) or every arrival (FORWARD).

        Every worker's vector must have the parameters' length; a wrong one counts as a
        failed worker. ``on_cancel(callback)`` registers a callback for when the caller goes
        away (gRPC's ``context.add_callback``): the round stops waiting for its workers at once
        and cancels them.
        """
        job = self._current(job_id, epoch)
        collector = Round(
            {name: i for i, name in enumerate(job.workers)},
            (params.size,) if job.message_rows == 0 else (None, params.size),
            job.deadline_seconds,
            self._clock,
            self._metrics,
        )
        if on_cancel is not None:
            on_cancel(collector.interrupt)
        calls = job.client.compute(job_id, round_, params, epoch, job.deadline_seconds)
        for name, call in zip(job.workers, calls, strict=True):
            collector.add(FutureSource(name, call))
        if job.mode == FORWARD:
            yield from self._forward(job, collector, is_active)
        else:
            yield self._decode(job, collector)

    def _timings(self, job: EdgeJob, timings: Sequence[Timing]) -> tuple[Timing, ...]:
        return tuple(
            replace(t, load_fraction=job.load_fractions.get(t.node, 0.0), edge=self.name)
            for t in timings
        )

    def _decode(self, job: EdgeJob, collector: Round) -> EdgeResult:
        try:
            outcome = collector.decide(job.rule(), slack=job.verify_slack)
        finally:
            self._metrics.round_done(self._clock() - collector.started, len(collector.close()))
        self._emulate_link()
        self._metrics.sent(outcome.decoded.value.nbytes)
        for liar in outcome.suspects:
            self._metrics.inconsistent(liar)
        return EdgeResult(
            vector=outcome.decoded.value,
            combined=tuple(job.workers[i] for i in outcome.decoded.used),
            timings=self._timings(job, outcome.sources),
            suspects=outcome.suspects,
        )

    def _forward(
        self, job: EdgeJob, collector: Round, is_active: Callable[[], bool]
    ) -> Iterator[EdgeResult]:
        try:
            for _index, message, arrived in collector.arrivals():
                # The link is a latency: this message reaches the master `link` after it reached
                # the edge, independently of the messages before it.
                self._emulate_link(until=collector.started + arrived + self._link_seconds)
                self._metrics.sent(message.vector.nbytes)
                timing = Timing(
                    message.sender,
                    arrived,
                    True,
                    compute_seconds=message.compute_seconds,
                    load_fraction=job.load_fractions.get(message.sender, 0.0),
                    edge=self.name,
                )
                yield EdgeResult(vector=message.vector, worker=message.sender, timings=(timing,))
                if not is_active():
                    return
        finally:
            stragglers = collector.close()
            self._metrics.round_done(self._clock() - collector.started, len(stragglers))

    def _emulate_link(self, until: float | None = None) -> None:
        """Emulated edge -> master link latency (netem is not available on these machines)."""
        if self._link_seconds <= 0:
            return
        delay = self._link_seconds if until is None else until - self._clock()
        if delay > 0:
            threading.Event().wait(delay)

    def close(self) -> None:
        """Forget every job and close their clients."""
        with self._lock:
            jobs = [job for held in self._jobs.values() for job in held.values()]
            self._jobs.clear()
        for job in jobs:
            job.client.close()
