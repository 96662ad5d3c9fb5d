"""The worker's logic: hold placed partitions, compute coded gradients, drop stale work.

A worker holds, per job, partitions j with coefficients B[w, j] and computes
``sum_j B[w, j] * grad_j(params)`` (each partition's share of the L2 term is 1/K). A newer round
or a cancellation aborts the emulated part of an older computation at once.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from edgecode.emulation import StraggleConfig, emulate
from edgecode.errors import InvalidInput, StaleRound, UnknownJob
from edgecode.learning.models import Model, get_model
from edgecode.learning.stacked import StackedParts, prepare_coded
from edgecode.records import PlacementHeader

log = logging.getLogger(__name__)

#: Largest number of partitions one placement may carry.
MAX_PARTITIONS = 100_000
#: Placement epochs kept per job: the one rounds use and the next one (being placed).
MAX_EPOCHS_HELD = 2
#: Rounds whose CPU time the worker's estimate is the median of.
CPU_WINDOW = 20
#: The estimate is announced again (``on_cpu_change``) when it moved by more than this fraction.
CPU_ANNOUNCE_CHANGE = 0.2
#: Consecutive rounds further apart than this (wall seconds) give no sample of the per-round
#: CPU besides the compute: the process's idle CPU (heartbeats) would count in it.
ROUND_GAP_SECONDS = 1.0


class WorkerMetricsPort(Protocol):
    """What the worker's logic records (runtime.metrics.WorkerMetrics; default: nothing)."""

    def computed(self, seconds: float, nbytes: int) -> None: ...

    def abandoned_round(self) -> None: ...

    def holding(self, partitions: int) -> None: ...

    def shuffled(self, nbytes: int, seconds: float) -> None:
        """A shuffle brought ``nbytes`` from other workers in ``seconds``."""
        ...


class PartitionReader(Protocol):
    """How a worker reads partitions from another worker (gRPC in worker/transport.py)."""

    def read(
        self, address: str, job_id: str, epoch: int, partitions: Sequence[int]
    ) -> Iterator[tuple[int, Any, np.ndarray, int]]:
        """``(partition, features, labels, bytes)`` row ranges of the named partitions."""
        ...


class NoWorkerMetrics:
    """Records nothing."""

    def shuffled(self, nbytes: int, seconds: float) -> None:
        pass

    def computed(self, seconds: float, nbytes: int) -> None:
        pass

    def abandoned_round(self) -> None:
        pass

    def holding(self, partitions: int) -> None:
        pass


@dataclass
class Placement:
    """One job's installed data on this worker (one placement epoch)."""

    header: PlacementHeader
    model: Model
    features: list[Any]
    labels: list[np.ndarray]
    runtime: Any
    n_params: int
    latest_round: int = -1
    newer: threading.Event = field(default_factory=threading.Event)
    #: install order (a newer placement of the same job has a larger number)
    installed: int = 0

    #: the partitions stacked for the round's gradient, one per message (learning.stacked)
    coded: tuple[StackedParts, ...] = ()

    @property
    def rows(self) -> int:
        return sum(int(x.shape[0]) for x in self.features)


def _stacked(
    model: Model,
    header: PlacementHeader,
    features: list[Any],
    labels: list[np.ndarray],
    n_params: int,
) -> tuple[StackedParts, ...]:
    """Each message's partitions (all of them without groups) stacked once, so a round is one
    product per message; dense partitions become views of their stacked rows (no second
    copy of the data)."""
    groups = header.groups or [0] * len(header.partitions)
    coded = []
    for m in range(max(groups) + 1):
        members = [i for i, g in enumerate(groups) if g == m]
        parts = [(header.coefficients[i], features[i], labels[i]) for i in members]
        stacked = prepare_coded(model, parts, n_params)
        if stacked.model is not None and not sp.issparse(stacked.matrix):
            for i, a, b in zip(members, stacked.offsets, stacked.offsets[1:], strict=False):
                features[i] = stacked.matrix[a:b]
        coded.append(stacked)
    return tuple(coded)


class PlacementBuilder:
    """Collects a streamed placement; :meth:`finish` validates it and installs it atomically."""

    def __init__(self, worker: WorkerLogic, header: PlacementHeader) -> None:
        h = header
        if not h.job_id:
            raise InvalidInput("placement: job_id must not be empty")
        if len(h.partitions) != len(h.coefficients) or len(set(h.partitions)) != len(h.partitions):
            raise InvalidInput(
                "placement: partitions must be distinct and have one coefficient each"
            )
        if not 0 < len(h.partitions) <= MAX_PARTITIONS or h.n_partitions < 1:
            raise InvalidInput(
                f"placement: holds {len(h.partitions)} partitions of {h.n_partitions}"
            )
        if h.groups and (
            len(h.groups) != len(h.partitions) or set(h.groups) != set(range(max(h.groups) + 1))
        ):
            raise InvalidInput(
                "placement: groups must give each partition its message index, every index in "
                "0..V-1 used"
            )
        if len(h.rows) != len(h.partitions) or any(r < 1 for r in h.rows):
            raise InvalidInput(
                "placement: the header must give the (positive) rows of every partition"
            )
        if any(not 0 <= j < h.n_partitions for j in h.partitions):
            raise InvalidInput(f"placement: partition indices must be in [0, {h.n_partitions})")
        if (
            not np.all(np.isfinite(h.coefficients))
            or h.n_features < 1
            or h.l2 < 0
            or not np.isfinite(h.l2)
        ):
            raise InvalidInput(
                "placement: coefficients must be finite, n_features >= 1 and l2 >= 0"
            )
        try:
            self.model = get_model(h.model, l2=h.l2)
        except ValueError as exc:
            raise InvalidInput(f"placement: {exc}") from None
        self.worker = worker
        self.header = h
        self.chunks: dict[int, list[tuple[Any, np.ndarray]]] = {j: [] for j in h.partitions}

    def add(self, partition: int, features: Any, labels: np.ndarray) -> None:
        if partition not in self.chunks:
            raise InvalidInput(
                f"placement: chunk for partition {partition}, which the header does not list"
            )
        if features.ndim != 2 or features.shape[1] != self.header.n_features:
            raise InvalidInput(
                f"placement: partition {partition} features must have {self.header.n_features} columns, "
                f"got shape {features.shape}"
            )
        if labels.shape != (features.shape[0],):
            raise InvalidInput(
                f"placement: partition {partition} has {features.shape[0]} rows but {labels.shape} labels"
            )
        self.chunks[partition].append((features, labels))

    def finish(self) -> Placement:
        h = self.header
        features, labels = [], []
        for j, expected in zip(h.partitions, h.rows, strict=True):
            parts = self.chunks[j]
            arrived = sum(int(p[0].shape[0]) for p in parts)
            if arrived != expected:
                raise InvalidInput(f"placement: partition {j} has {arrived} of its {expected} rows")
            blocks = [p[0] for p in parts]
            X = sp.vstack(blocks, format="csr") if sp.issparse(blocks[0]) else np.vstack(blocks)
            features.append(X)
            labels.append(np.concatenate([p[1] for p in parts]))
        n_params = self.model.n_params(h.n_features, h.n_classes)
        zero = np.zeros(n_params)
        for X, y in zip(features, labels, strict=True):
            self.model.loss(zero, X, y)  # raises InvalidInput on labels the model cannot take
        placement = Placement(
            header=h,
            model=self.model,
            features=features,
            labels=labels,
            runtime=self.worker.straggle.runtime(h.n_partitions),
            n_params=n_params,
            coded=_stacked(self.model, h, features, labels, n_params),
        )
        self.worker._install(placement)
        return placement


class WorkerLogic:
    """The jobs' data this worker holds and the coded gradients it computes on them."""

    def __init__(
        self,
        name: str,
        straggle: StraggleConfig | None = None,
        rng: np.random.Generator | None = None,
        link_seconds: float = 0.0,
        metrics: WorkerMetricsPort | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.name = name
        self.straggle = straggle or StraggleConfig()
        #: emulated worker -> edge latency (netem is not available on these machines)
        self.link_seconds = link_seconds
        self._rng = rng if rng is not None else np.random.default_rng()
        self._metrics: WorkerMetricsPort = metrics if metrics is not None else NoWorkerMetrics()
        self._clock = clock
        #: job id -> placement epoch -> data
        self._jobs: dict[str, dict[int, Placement]] = {}
        self._installs = 0
        self._retired = False
        #: job id -> when it was last placed or computed on (for the idle TTL)
        self._used: dict[str, float] = {}
        #: job id -> the epoch rounds use now (the last one a round named)
        self._in_use: dict[str, int] = {}
        self._lock = threading.Lock()
        #: CPU seconds of the process while computing, per WHOLE data set, one per recent round
        self._cpu_clock = cpu_clock
        self._cpu: deque[float] = deque(maxlen=CPU_WINDOW)
        self._cpu_announced = 0.0
        #: wall over CPU seconds of the same computations (their contention), one per round
        self._stretch: deque[float] = deque(maxlen=CPU_WINDOW)
        #: the process's CPU seconds per round besides the compute (answering the round call,
        #: serialising, gRPC's own threads), one per pair of consecutive rounds
        self._round_cpu: deque[float] = deque(maxlen=CPU_WINDOW)
        #: (process CPU, wall clock) when the last round's compute began, and its compute CPU
        self._last_round: tuple[float, float, float] | None = None
        #: called (outside the lock) when :meth:`cpu_seconds` moved (the heartbeat's nudge)
        self.on_cpu_change: Callable[[], None] | None = None

    def cpu_seconds(self) -> float:
        """This worker's CPU seconds of real compute for the whole data set: the median over
        its last :data:`CPU_WINDOW` rounds of the process's CPU time while computing (BLAS threads
        included; an older round still computing beside it counts too) divided by the
        fraction held (emulated straggling sleeps and costs none); 0 before any round."""
        with self._lock:
            return float(statistics.median(self._cpu)) if self._cpu else 0.0

    def compute_stretch(self) -> float:
        """Wall over CPU seconds of this worker's real compute, the median over its last
        :data:`CPU_WINDOW` rounds (the contention it saw; see planning.hosts); 0 before any."""
        with self._lock:
            return float(statistics.median(self._stretch)) if self._stretch else 0.0

    def round_cpu_seconds(self) -> float:
        """The process's CPU seconds per round besides the compute, whatever the share held
        (the call's handling, serialisation, gRPC's threads): the median over its last
        :data:`CPU_WINDOW` pairs of consecutive rounds (at most :data:`ROUND_GAP_SECONDS` apart)
        of the process CPU from one compute's start to the next's less the first compute's CPU;
        0 before two such rounds. A share this worker holds costs the machine this much every
        round on top of its compute (see planning.hosts)."""
        with self._lock:
            return float(statistics.median(self._round_cpu)) if self._round_cpu else 0.0

    def _record_cpu(
        self,
        seconds: float,
        fraction: float,
        wall: float = 0.0,
        began: tuple[float, float] | None = None,
    ) -> None:
        # Per round, on the answer's path: plain floats (a numpy median costs 20x more here).
        if not (seconds >= 0 and math.isfinite(seconds) and fraction > 0):
            return
        with self._lock:
            if began is not None:
                last, self._last_round = self._last_round, (*began, seconds)
                if last is not None and 0 < began[1] - last[1] <= ROUND_GAP_SECONDS:
                    besides = began[0] - last[0] - last[2]
                    if besides >= 0:  # < 0: the rounds overlapped, no clean sample
                        self._round_cpu.append(besides)
            self._cpu.append(seconds / fraction)
            if seconds > 0 and wall > 0 and math.isfinite(wall):
                self._stretch.append(wall / seconds)
            now = statistics.median(self._cpu)
            moved = abs(now - self._cpu_announced) > CPU_ANNOUNCE_CHANGE * self._cpu_announced
            if moved:
                self._cpu_announced = now
        if moved and self.on_cpu_change is not None:
            self.on_cpu_change()

    def begin_placement(self, header: PlacementHeader) -> PlacementBuilder:
        """Start collecting a streamed placement (validated; installed by ``finish``)."""
        return PlacementBuilder(self, header)

    def _install(self, placement: Placement) -> None:
        """Hold a new placement beside the one rounds use now: rounds of the old epoch go on
        until the first round of the new one arrives (then the older ones are dropped), so a
        re-placement or a shuffle never stalls training. A repeated epoch replaces its data."""
        job_id, epoch = placement.header.job_id, placement.header.epoch
        with self._lock:
            held = self._jobs.setdefault(job_id, {})
            old = held.pop(epoch, None)
            if old is not None:
                old.newer.set()  # computations on the replaced data are stale
            in_use = self._in_use.get(job_id)
            # Make room by dropping the oldest epoch that rounds do not use now (an abandoned
            # shuffle's, say): the epoch in use is never dropped by a new placement.
            while len(held) >= MAX_EPOCHS_HELD:
                spare = [e for e in held if e != in_use] or list(held)
                oldest = min(spare, key=lambda e: held[e].installed)
                held.pop(oldest).newer.set()
            self._installs += 1
            placement.installed = self._installs
            held[epoch] = placement
            self._used[job_id] = self._clock()
        self._publish()

    def _publish(self) -> None:
        with self._lock:
            count = sum(
                len(p.header.partitions) for epochs in self._jobs.values() for p in epochs.values()
            )
        self._metrics.holding(count)

    def drop(self, job_id: str) -> bool:
        """Forget a job's data (its running computation is abandoned); True when it was held."""
        with self._lock:
            epochs = self._jobs.pop(job_id, None)
            self._used.pop(job_id, None)
            self._in_use.pop(job_id, None)
        if not epochs:
            return False
        for placement in epochs.values():
            placement.newer.set()
        self._publish()
        return True

    def expire(self, ttl_seconds: float) -> list[str]:
        """Drop the jobs not placed or computed on for ``ttl_seconds`` (their master is gone
        without a DropJob); returns their ids."""
        now = self._clock()
        with self._lock:
            idle = [j for j, used in self._used.items() if now - used > ttl_seconds]
        for job_id in idle:
            self.drop(job_id)
        return idle

    def jobs(self) -> dict[str, Placement]:
        """The newest installed placement of every job (a copy)."""
        with self._lock:
            return {
                job_id: max(epochs.values(), key=lambda p: p.installed)
                for job_id, epochs in self._jobs.items()
                if epochs
            }

    def epochs(self, job_id: str) -> tuple[int, ...]:
        """The placement epochs held for a job, oldest install first."""
        with self._lock:
            held = self._jobs.get(job_id, {})
            return tuple(sorted(held, key=lambda e: held[e].installed))

    def partition_data(
        self, job_id: str, epoch: int, partitions: Sequence[int]
    ) -> list[tuple[int, Any, np.ndarray]]:
        """``(partition, features, labels)`` of partitions held in ``epoch`` (for a shuffle)."""
        with self._lock:
            held = self._jobs.get(job_id)
            if not held:
                raise UnknownJob(f"worker {self.name} holds no data for job {job_id!r}")
            placement = held.get(epoch)
        if placement is None:
            raise StaleRound(f"placement epoch {epoch} of job {job_id!r} is not held")
        index = {j: i for i, j in enumerate(placement.header.partitions)}
        missing = [j for j in partitions if j not in index]
        if missing:
            raise InvalidInput(f"worker {self.name} does not hold partitions {missing}")
        return [(j, placement.features[index[j]], placement.labels[index[j]]) for j in partitions]

    def fetch_placement(
        self,
        header: PlacementHeader,
        from_epoch: int,
        sources: dict[int, str],
        reader: PartitionReader,
    ) -> tuple[Placement, int, float]:
        """Assemble a new placement from this worker's own ``from_epoch`` data (partitions whose
        source is empty) and partitions read from other workers; install it only when complete.
        Returns the placement, the bytes fetched and the seconds taken."""
        start = self._clock()
        if set(sources) != set(header.partitions):
            raise InvalidInput("fetch: every partition of the header needs exactly one source")
        builder = self.begin_placement(header)
        kept = [j for j in header.partitions if not sources[j]]
        for j, features, labels in self.partition_data(header.job_id, from_epoch, kept):
            builder.add(j, features, labels)
        fetched = 0
        by_address: dict[str, list[int]] = {}
        for j, address in sources.items():
            if address:
                by_address.setdefault(address, []).append(j)
        for address, wanted in sorted(by_address.items()):
            for j, features, labels, nbytes in reader.read(
                address, header.job_id, from_epoch, sorted(wanted)
            ):
                if j not in wanted:
                    raise InvalidInput(f"fetch: {address} sent partition {j}, not asked for")
                builder.add(j, features, labels)
                fetched += nbytes
        placement = builder.finish()
        seconds = self._clock() - start
        self._metrics.shuffled(fetched, seconds)
        return placement, fetched, seconds

    def _current(self, job_id: str, epoch: int) -> Placement:
        """The placement of ``epoch``; installs made before it are dropped (superseded)."""
        held = self._jobs.get(job_id)
        if not held:
            raise UnknownJob(f"worker {self.name} holds no data for job {job_id!r}")
        placement = held.get(epoch)
        if placement is None:
            raise StaleRound(f"placement epoch {epoch} is not held (held: {sorted(held)})")
        for other in [e for e, p in held.items() if p.installed < placement.installed]:
            held.pop(other).newer.set()
            self._retired = True
        self._in_use[job_id] = epoch
        return placement

    def compute(
        self, job_id: str, round_: int, params: np.ndarray, epoch: int, cancelled: threading.Event
    ) -> tuple[np.ndarray, float]:
        """This worker's coded gradient for ``round_``; raises StaleRound when a newer round,
        a re-placement or a cancellation makes it useless."""
        start = self._clock()
        with self._lock:
            held = self._jobs.get(job_id, {})
            placement = held.get(epoch)
            if placement is not None and params.shape != (placement.n_params,):
                # Validate before anything changes: a rejected request must change nothing.
                raise InvalidInput(
                    f"params must have shape ({placement.n_params},), got {params.shape}"
                )
            placement = self._current(job_id, epoch)
            self._used[job_id] = self._clock()
            if round_ < placement.latest_round:
                raise StaleRound(f"round {round_} is older than round {placement.latest_round}")
            if round_ > placement.latest_round:
                placement.newer.set()  # abandon the older round's work
                placement.newer = threading.Event()
                placement.latest_round = round_
            newer = placement.newer
            retired, self._retired = self._retired, False
        if retired:
            self._publish()
        h = placement.header
        share = 1.0 / h.n_partitions
        cpu_start, wall_start = self._cpu_clock(), self._clock()
        if h.groups:  # several vectors: row m sums the partitions of message m
            gradient = np.stack([coded.gradient(params, share) for coded in placement.coded])
        else:
            gradient = placement.coded[0].gradient(params, share)
        cpu = self._cpu_clock() - cpu_start
        self._record_cpu(
            cpu,
            len(h.partitions) / h.n_partitions,
            self._clock() - wall_start,
            (cpu_start, wall_start),
        )
        if self.straggle.emulates:
            fraction = len(h.partitions) / h.n_partitions
            extra = placement.runtime.sample(fraction, self._rng)
            placement.runtime.advance(self._rng)
            remaining = extra - (self._clock() - start)
            if remaining > 0:
                self._wait(remaining, cancelled, newer)
        if cancelled.is_set() or newer.is_set():
            self._abandoned()
            raise StaleRound(f"round {round_} was cancelled or superseded")
        seconds = self._clock() - start
        if self.link_seconds > 0:
            self._wait(self.link_seconds, cancelled, newer)
            if cancelled.is_set() or newer.is_set():
                self._abandoned()
                raise StaleRound(f"round {round_} was cancelled or superseded")
        self._metrics.computed(seconds, gradient.nbytes)
        return gradient, seconds

    def _wait(self, seconds: float, cancelled: threading.Event, newer: threading.Event) -> None:
        emulate(seconds, cancelled, newer, self._clock)

    def _abandoned(self) -> None:
        self._metrics.abandoned_round()
