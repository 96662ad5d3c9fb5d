r"""The peer's logic: run GOCO rounds alone, gossiping with the graph neighbours.

No gRPC and no protobuf here. A peer's dependencies come in through the constructor as small
protocols: a :class:`Clock` (time and deadline waits), a :class:`NeighbourTransport` (sends this
peer's vector to its neighbours), a :class:`ReportSink` (per-round reports) and a
:class:`StraggleEmulation` (emulated extra compute seconds). The service layer delivers the
neighbours' messages to :meth:`PeerLogic.receive`.

Round r of job J at peer i (:meth:`PeerLogic.run_round` = :meth:`~PeerLogic.start_round` then
:meth:`~PeerLogic.finish_round`):

1. compute ``g_i = c * sum_{j in D_i} grad f_j(x_i)`` (c = 1 / (d (1 - p)) for GOCO), plus the
   emulated extra seconds. If real compute + emulated seconds exceed the compute deadline
   (measured from the round's start) the peer stops waiting AT the deadline and g_i = 0, unless
   the job waits for its gradient (``gossip-wait``). An emulated delay longer than the whole
   deadline skips the real computation too; a real computation that overruns is not
   interrupted, its result is just dropped;
2. local step ``x_i' = x_i - eta_r g_i`` (a straggler sends ``x_i' = x_i``: it still gossips);
3. send ``x_i'`` to every neighbour, then wait until every neighbour's round-r value arrived or
   the gossip deadline (measured from the send) passed, whichever is first;
4. mix ``x_i <- (W_ii + sum_{l missing} W_il) x_i' + sum_{l arrived} W_il x_l'``: a neighbour
   whose value has not arrived (dead, paused, slow) is left out and its weight moves onto the
   peer's own value, so the row still sums to 1 (no stale value is ever reused). When a link is
   lost in both directions the effective matrix stays symmetric and doubly stochastic, and the
   peers' mean is preserved;
5. report (:class:`RoundReport`): round seconds, compute seconds, whether the gradient was
   skipped, per-neighbour gossip seconds (waited after sending; None: missing), the missing
   neighbours, ``||x_i||``, the local consensus distance (mean squared distance of the mixed
   values from their mean) and, every ``report_params_every`` rounds and after the last one,
   the vector ``x_i`` itself (:class:`RoundReport` lives in :mod:`edgecode.gossip_records`, as
   the coordinator reads it too). The loss is not computed here: whoever holds evaluation data computes
   it at the average of the reported vectors, together with the consensus distance
   ``(1/N) sum_i ||x_i - x_bar||^2``.

Messages (:meth:`PeerLogic.receive`) are validated before anything is stored; a rejected
message changes nothing: unknown job -> ``UnknownJob``; a sender that is not a neighbour ->
``NotAllowed``; a round this peer has already mixed -> ``StaleRound``; a round more than
``max_rounds_ahead`` ahead -> ``Overloaded``; a bad round number, a wrong shape or dtype,
NaN/inf, or a second, different value for the same (round, sender) -> ``InvalidInput``.
Messages for rounds ahead are kept, so a peer that was paused catches up on them.

Example (two peers on one edge, in one thread, with an in-memory transport)
-------
>>> import numpy as np
>>> from edgecode.learning.gossip import StepSchedule
>>> from edgecode.learning.models import LeastSquares
>>> class Direct:
...     peers = {}
...     def send(self, message, neighbours):
...         for n in neighbours:
...             self.peers[n].receive(message)
>>> class Keep:
...     def __init__(self): self.reports = []
...     def report(self, report): self.reports.append(report)
>>> transport, sink = Direct(), Keep()
>>> X, y = np.array([[1.0], [2.0]]), np.array([1.0, 2.0])
>>> def job(i):
...     return PeerJob("j", i, (1 - i,), (0.5,), 0.5, LeastSquares(), ((X[i:i+1], y[i:i+1]),),
...                    2, 1.0, StepSchedule(0.1), np.zeros(2), rounds=1,
...                    compute_deadline=1.0, gossip_deadline=1.0)
>>> for i in (0, 1):
...     transport.peers[i] = PeerLogic(transport, sink)
...     transport.peers[i].install(job(i))
>>> for i in (0, 1): transport.peers[i].start_round("j")
>>> reports = [transport.peers[i].finish_round("j") for i in (0, 1)]
>>> transport.peers[0].params("j").round(3).tolist(), reports[0].missing
([0.25, 0.15], ())
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from edgecode.errors import InvalidInput, NotAllowed, Overloaded, StaleRound, UnknownJob
from edgecode.gossip_records import RoundReport
from edgecode.learning.gossip import GossipScheme, StepSchedule, Topology, mix_row
from edgecode.learning.models import Model
from edgecode.stragglers import WorkerRuntime

FloatArray = NDArray[np.float64]

#: How many rounds ahead of its own a peer keeps neighbours' messages (beyond: Overloaded).
MAX_ROUNDS_AHEAD = 64
#: Tolerance of the check that a peer's mixing row sums to 1.
ROW_TOLERANCE = 1e-9


# --------------------------------------------------------------------------- protocols


class Clock(Protocol):
    """Time for deadlines. ``wait`` blocks until ``event`` is set or ``seconds`` of this clock
    have passed and returns whether the event is set (a fake clock just advances)."""

    def now(self) -> float: ...

    def wait(self, event: threading.Event, seconds: float) -> bool: ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` and ``Event.wait``."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))


@dataclass(frozen=True, eq=False)
class GossipMessage:
    """Peer ``sender``'s vector x' after its local step of ``round`` in job ``job_id``."""

    job_id: str
    round: int
    sender: int
    params: FloatArray


class NeighbourTransport(Protocol):
    """Delivers a message to the neighbours (their :meth:`PeerLogic.receive`).

    Contract: ``send`` returns promptly (it may deliver in the background), never raises for a
    dead, slow or refusing neighbour (those simply miss the value), and treats ``message.params``
    as read-only.
    """

    def send(self, message: GossipMessage, neighbours: Sequence[int]) -> None: ...


class ReportSink(Protocol):
    def report(self, report: RoundReport) -> None: ...


class StraggleEmulation(Protocol):
    """Emulated compute seconds of a round, on top of the real compute, for a peer holding
    ``load_fraction`` of the data (called once per round, in round order)."""

    def extra_seconds(self, round_: int, load_fraction: float) -> float: ...


class NoStraggle:
    """No emulation: only the real compute counts."""

    def extra_seconds(self, round_: int, load_fraction: float) -> float:
        return 0.0


@dataclass
class RuntimeStraggle:
    """Emulation from a straggler model of :mod:`edgecode.stragglers` (one sample per call;
    safe to share between the threads of several jobs)."""

    runtime: WorkerRuntime
    rng: np.random.Generator
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def extra_seconds(self, round_: int, load_fraction: float) -> float:
        with self._lock:
            seconds = self.runtime.sample(load_fraction, self.rng)
            self.runtime.advance(self.rng)
        return seconds


# --------------------------------------------------------------------------- the job


def _positive_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _seconds(value: float, name: str) -> float:
    number = float(value)
    if not (math.isfinite(number) and number > 0.0):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return number


@dataclass(frozen=True, eq=False)
class PeerJob:
    """Everything a peer needs for one GOCO job (validated on construction).

    ``neighbours`` (distinct, without ``peer``) with ``neighbour_weights`` W_il in the same
    order and ``self_weight`` W_ii (the row sums to 1); ``data`` the (X_j, y_j) of the
    partitions D_i this peer holds, of ``n_partitions`` K in all (each partition's L2 share is
    1/K); ``coefficient`` c; ``step`` the peer step schedule; ``initial_params`` x_i at round 0;
    ``rounds`` to run; deadlines in seconds; ``wait_for_gradient`` for ``gossip-wait``;
    ``report_params_every`` k >= 1 attaches x_i to every k-th report (0: only the last).
    """

    job_id: str
    peer: int
    neighbours: tuple[int, ...]
    neighbour_weights: tuple[float, ...]
    self_weight: float
    model: Model
    data: tuple[tuple[Any, NDArray[Any]], ...]
    n_partitions: int
    coefficient: float
    step: StepSchedule
    initial_params: FloatArray
    rounds: int
    compute_deadline: float
    gossip_deadline: float
    wait_for_gradient: bool = False
    report_params_every: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.job_id, str) or not self.job_id:
            raise ValueError(f"job_id must be a non-empty string, got {self.job_id!r}")
        _positive_int(self.peer, "peer", 0)
        neighbours = tuple(_positive_int(n, "neighbours", 0) for n in self.neighbours)
        if len(set(neighbours)) != len(neighbours) or self.peer in neighbours:
            raise ValueError(f"neighbours must be distinct and exclude peer {self.peer}")
        weights = np.asarray(self.neighbour_weights, dtype=np.float64)
        if weights.shape != (len(neighbours),) or not np.all(np.isfinite(weights)):
            raise ValueError(f"neighbour_weights must be {len(neighbours)} finite numbers")
        total = float(weights.sum()) + float(self.self_weight)
        if np.any(weights <= 0) or not self.self_weight >= 0 or abs(total - 1.0) > ROW_TOLERANCE:
            raise ValueError(
                "neighbour_weights must be > 0 and self_weight >= 0 with a row sum of 1, "
                f"got sum {total!r}"
            )
        if not self.data:
            raise ValueError("data must hold at least one partition")
        _positive_int(self.n_partitions, "n_partitions", len(self.data))
        if not (math.isfinite(self.coefficient) and self.coefficient > 0.0):
            raise ValueError(f"coefficient must be a finite number > 0, got {self.coefficient!r}")
        _positive_int(self.rounds, "rounds", 0)
        _seconds(self.compute_deadline, "compute_deadline")
        _seconds(self.gossip_deadline, "gossip_deadline")
        _positive_int(self.report_params_every, "report_params_every", 0)
        initial = np.array(self.initial_params, dtype=np.float64)
        if initial.ndim != 1 or not np.all(np.isfinite(initial)):
            raise InvalidInput(f"initial_params must be a finite 1-D vector, got {initial.shape}")
        for X, y in self.data:  # raises InvalidInput when the data do not fit the model/params
            self.model.gradient(initial, X, y)
        initial.flags.writeable = False
        object.__setattr__(self, "neighbours", neighbours)
        object.__setattr__(self, "neighbour_weights", tuple(float(w) for w in weights))
        object.__setattr__(self, "initial_params", initial)

    @property
    def n_params(self) -> int:
        return int(self.initial_params.shape[0])

    @property
    def load_fraction(self) -> float:
        """The fraction of the data this peer holds, |D_i| / K."""
        return len(self.data) / self.n_partitions

    @classmethod
    def from_topology(
        cls,
        job_id: str,
        topology: Topology,
        peer: int,
        scheme: GossipScheme,
        model: Model,
        data: tuple[tuple[Any, NDArray[Any]], ...],
        step: StepSchedule,
        initial_params: FloatArray,
        *,
        rounds: int,
        compute_deadline: float,
        gossip_deadline: float,
        report_params_every: int = 1,
    ) -> PeerJob:
        """Peer ``peer``'s job on ``topology`` (its Metropolis row) under ``scheme``."""
        neighbours, weights, self_weight = topology.row(peer)
        return cls(
            job_id=job_id,
            peer=peer,
            neighbours=neighbours,
            neighbour_weights=weights,
            self_weight=self_weight,
            model=model,
            data=data,
            n_partitions=scheme.code.n_partitions,
            coefficient=scheme.coefficient,
            step=step,
            initial_params=initial_params,
            rounds=rounds,
            compute_deadline=compute_deadline,
            gossip_deadline=gossip_deadline,
            wait_for_gradient=scheme.waits,
            report_params_every=report_params_every,
        )


@dataclass
class _State:
    """A job's mutable state; guarded by the PeerLogic lock."""

    job: PeerJob
    params: FloatArray
    round: int = 0
    #: x_i' of the started round (None: no round in flight)
    sent: FloatArray | None = None
    started: float = 0.0
    gossip_started: float = 0.0
    compute_seconds: float = 0.0
    skipped: bool = False
    #: round -> sender -> (x_l', arrival time)
    inbox: dict[int, dict[int, tuple[FloatArray, float]]] = field(default_factory=dict)
    arrived: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)


# --------------------------------------------------------------------------- the logic


class PeerLogic:
    """One peer: holds its jobs, runs their rounds, validates and stores neighbours' messages.

    Thread-safe: :meth:`receive` runs on the transport's threads while one thread per job runs
    the rounds (:meth:`run` or :meth:`run_round`).
    """

    def __init__(
        self,
        transport: NeighbourTransport,
        sink: ReportSink,
        *,
        clock: Clock | None = None,
        straggle: StraggleEmulation | None = None,
        max_rounds_ahead: int = MAX_ROUNDS_AHEAD,
    ) -> None:
        self._transport = transport
        self._sink = sink
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._straggle: StraggleEmulation = straggle if straggle is not None else NoStraggle()
        self._ahead = _positive_int(max_rounds_ahead, "max_rounds_ahead", 1)
        self._jobs: dict[str, _State] = {}
        self._lock = threading.Lock()

    # -- jobs
    def install(self, job: PeerJob) -> None:
        """Start holding ``job`` at round 0 from its initial parameters; a job with the same id
        is replaced and its round in flight abandoned."""
        state = _State(job=job, params=job.initial_params.copy())
        with self._lock:
            old = self._jobs.get(job.job_id)
            self._jobs[job.job_id] = state
        if old is not None:
            self._cancel(old)

    def drop(self, job_id: str) -> bool:
        """Forget the job; a round in flight ends with UnknownJob. False if it was unknown."""
        with self._lock:
            state = self._jobs.pop(job_id, None)
        if state is not None:
            self._cancel(state)
        return state is not None

    @staticmethod
    def _cancel(state: _State) -> None:
        state.cancelled.set()
        state.arrived.set()

    def _state(self, job_id: str) -> _State:
        state = self._jobs.get(job_id)
        if state is None:
            raise UnknownJob(f"peer holds no job {job_id!r}")
        return state

    def _current(self, state: _State) -> None:
        if state.cancelled.is_set() or self._jobs.get(state.job.job_id) is not state:
            raise UnknownJob(f"job {state.job.job_id!r} was dropped or replaced")

    def params(self, job_id: str) -> FloatArray:
        """A copy of x_i (after the last mixed round)."""
        with self._lock:
            return self._state(job_id).params.copy()

    def current_round(self, job_id: str) -> int:
        """The next round to run (== the job's rounds once it has finished)."""
        with self._lock:
            return self._state(job_id).round

    # -- messages
    def receive(self, message: GossipMessage) -> None:
        """Validate and keep a neighbour's value (see the module doc for the errors)."""
        arrival = self._clock.now()
        with self._lock:
            state = self._state(message.job_id)
            job = state.job
            if message.sender not in job.neighbours:
                raise NotAllowed(f"peer {message.sender!r} is not a neighbour of peer {job.peer}")
            round_ = message.round
            if isinstance(round_, bool) or not isinstance(round_, numbers.Integral):
                raise InvalidInput(f"round must be an integer, got {round_!r}")
            if not 0 <= round_ < job.rounds:
                raise InvalidInput(f"round must be in [0, {job.rounds}), got {round_}")
            if round_ < state.round:
                raise StaleRound(f"round {round_} is older than peer {job.peer}'s {state.round}")
            if round_ > state.round + self._ahead:
                raise Overloaded(
                    f"round {round_} is more than {self._ahead} rounds ahead of {state.round}"
                )
            params = _check_vector(message.params, job.n_params)
            senders = state.inbox.setdefault(int(round_), {})
            previous = senders.get(message.sender)
            if previous is not None:
                if not np.array_equal(previous[0], params):
                    raise InvalidInput(
                        f"a different value for round {round_} from peer {message.sender}"
                    )
                return
            senders[message.sender] = (params, arrival)
            state.arrived.set()

    # -- rounds
    def start_round(self, job_id: str) -> None:
        """Steps 1-3 up to the send: gradient (or skip), local step, send x_i'."""
        with self._lock:
            state = self._state(job_id)
            if state.sent is not None:
                raise RuntimeError(f"round {state.round} of job {job_id!r} is already started")
            if state.round >= state.job.rounds:
                raise StaleRound(f"job {job_id!r} has run all its {state.job.rounds} rounds")
            round_, params, job = state.round, state.params, state.job
        start = self._clock.now()
        gradient, skipped = self._gradient(job, round_, params, start, state.cancelled)
        with self._lock:
            self._current(state)
            stepped = params if skipped else params - job.step.at(round_) * gradient
            stepped = np.array(stepped, dtype=np.float64)
            stepped.flags.writeable = False
            state.sent, state.skipped, state.started = stepped, skipped, start
            state.gossip_started = self._clock.now()
            state.compute_seconds = state.gossip_started - start
        self._transport.send(GossipMessage(job_id, round_, job.peer, stepped), job.neighbours)

    def _gradient(
        self,
        job: PeerJob,
        round_: int,
        params: FloatArray,
        start: float,
        cancelled: threading.Event,
    ) -> tuple[FloatArray, bool]:
        """``(c * sum_j grad f_j(x_i), skipped)``, waiting out the emulated seconds."""
        extra = float(self._straggle.extra_seconds(round_, job.load_fraction))
        if not (math.isfinite(extra) and extra >= 0.0):
            raise ValueError(f"straggle emulation returned {extra!r} seconds")
        zero = np.zeros(job.n_params)
        if not job.wait_for_gradient and extra > job.compute_deadline:
            self._clock.wait(cancelled, job.compute_deadline)  # straggles past the deadline
            return zero, True
        share = 1.0 / job.n_partitions
        total = zero.copy()
        for X, y in job.data:
            total += job.model.gradient(params, X, y, reg_share=share)
        if job.wait_for_gradient:
            self._clock.wait(cancelled, extra)
            return job.coefficient * total, False
        remaining = start + job.compute_deadline - self._clock.now()
        if extra <= remaining:
            self._clock.wait(cancelled, extra)
            return job.coefficient * total, False
        self._clock.wait(cancelled, remaining)
        return zero, True

    def finish_round(self, job_id: str) -> RoundReport:
        """Steps 3-5: wait for the neighbours until the gossip deadline, mix, report."""
        with self._lock:
            state = self._state(job_id)
            if state.sent is None:
                raise RuntimeError(f"round {state.round} of job {job_id!r} was not started")
            job, round_ = state.job, state.round
            deadline = state.gossip_started + job.gossip_deadline
        while True:
            with self._lock:
                self._current(state)
                if len(state.inbox.get(round_, {})) == len(job.neighbours):
                    break
                state.arrived.clear()
            remaining = deadline - self._clock.now()
            if remaining <= 0.0:
                break
            self._clock.wait(state.arrived, remaining)
        with self._lock:
            self._current(state)
            sent = state.sent
            assert sent is not None
            received = state.inbox.pop(round_, {})
            weights = dict(zip(job.neighbours, job.neighbour_weights, strict=True))
            values = {sender: value for sender, (value, _) in received.items()}
            mixed = mix_row(sent, job.self_weight, weights, values)
            state.params, state.round, state.sent = mixed, round_ + 1, None
            report = self._report(state, round_, received, mixed, _spread([sent, *values.values()]))
        self._sink.report(report)
        return report

    def _report(
        self,
        state: _State,
        round_: int,
        received: Mapping[int, tuple[FloatArray, float]],
        mixed: FloatArray,
        local_consensus: float,
    ) -> RoundReport:
        job, now = state.job, self._clock.now()
        waited: dict[int, float | None] = {
            n: (max(0.0, received[n][1] - state.gossip_started) if n in received else None)
            for n in job.neighbours
        }
        every = job.report_params_every
        attach = round_ == job.rounds - 1 or (every > 0 and (round_ + 1) % every == 0)
        return RoundReport(
            job_id=job.job_id,
            peer=job.peer,
            round=round_,
            round_seconds=now - state.started,
            compute_seconds=state.compute_seconds,
            skipped_gradient=state.skipped,
            step_size=job.step.at(round_),
            gossip_seconds=waited,
            missing=tuple(n for n in job.neighbours if n not in received),
            params_norm=float(np.linalg.norm(mixed)),
            params=mixed.copy() if attach else None,
            local_consensus=local_consensus,
        )

    def run_round(self, job_id: str) -> RoundReport:
        """One whole round (start, gossip, mix, report)."""
        self.start_round(job_id)
        return self.finish_round(job_id)

    def run(self, job_id: str, stop: threading.Event | None = None) -> int:
        """Run the job's remaining rounds (until ``stop`` is set between two rounds); returns
        the number of rounds run."""
        count = 0
        while stop is None or not stop.is_set():
            with self._lock:
                state = self._state(job_id)
                if state.round >= state.job.rounds:
                    break
            self.run_round(job_id)
            count += 1
        return count


def _spread(values: Sequence[FloatArray]) -> float:
    """Mean squared distance of ``values`` from their mean (the local consensus distance)."""
    stacked = np.asarray(values, dtype=np.float64)
    centred = stacked - stacked.mean(axis=0)
    return float(np.sum(centred * centred) / stacked.shape[0])


def _check_vector(params: Any, size: int) -> FloatArray:
    """A neighbour's vector as a read-only float64 copy of shape (size,), or InvalidInput."""
    array = np.asarray(params)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InvalidInput(f"params must be a real array, got dtype {array.dtype}")
    if array.shape != (size,):
        raise InvalidInput(f"params must have shape ({size},), got {array.shape}")
    vector = np.array(array, dtype=np.float64)
    if not np.all(np.isfinite(vector)):
        raise InvalidInput("params must be finite, got NaN or inf")
    vector.flags.writeable = False
    return vector


__all__ = [
    "MAX_ROUNDS_AHEAD",
    "Clock",
    "GossipMessage",
    "MonotonicClock",
    "NeighbourTransport",
    "NoStraggle",
    "PeerJob",
    "PeerLogic",
    "ReportSink",
    "RoundReport",
    "RuntimeStraggle",
    "StraggleEmulation",
]
