"""Records of gossip learning jobs shared by the peer, the coordinator, the wire and the clients.

One shape each, below :mod:`edgecode.wire` (no role imports another role):

- :class:`RoundReport`: what a peer reports after mixing one round (built by
  :mod:`edgecode.peer.logic`), and :class:`TimedReport` (with the seconds since the peer's start);
- :class:`PeerAssignment`: everything the coordinator tells one peer about a job (the header of
  ``Peer.PlaceJob``), validated with every field bounded;
- :class:`GossipJobSpec`: a job as a user submits it to the coordinator;
- :class:`GossipRoundRecord` and :class:`GossipJobStatus`: what the coordinator collects.

Example
-------
>>> spec = GossipJobSpec(graph="ring", scheme="goco", replication=2, rounds=10)
>>> spec.validated().replication
2
>>> GossipJobSpec(scheme="fancy").validated()
Traceback (most recent call last):
...
edgecode.errors.InvalidInput: scheme must be one of ['goco', 'gossip', 'gossip-wait'], got 'fancy'
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgecode.errors import InvalidInput
from edgecode.records import JOB_ID

FloatArray = NDArray[np.float64]

#: Gossip schemes (the same tuple as edgecode.learning.gossip.SCHEMES, without importing it).
GOSSIP_SCHEMES = ("goco", "gossip", "gossip-wait")
#: Models a peer builds from a job header: numpy models only (never a code reference to import).
PEER_MODELS = ("least_squares", "logistic", "softmax")
#: Bounds of every request field (a request beyond them is refused with INVALID_ARGUMENT).
MAX_PEERS = 1024
MAX_ROUNDS = 1_000_000
#: Rounds a gossip job may ask for (the coordinator keeps one record per round).
MAX_JOB_ROUNDS = 100_000
MAX_PARTITIONS = 10_000
MAX_NAME_LENGTH = 256
MAX_SPEC_LENGTH = 512
MAX_CLASSES = 10_000
MAX_FEATURES = 10_000_000
MAX_DEADLINE_SECONDS = 3600.0
MAX_EDGES = 100_000
#: Largest d (replication) a job may ask for.
MAX_REPLICATION = 64

#: States of a job on one peer.
PLACED, RUNNING, FINISHED, FAILED = "placed", "running", "finished", "failed"
PEER_STATES = (PLACED, RUNNING, FINISHED, FAILED)
#: States of a gossip job at the coordinator.
STARTING, JOB_RUNNING, SUCCEEDED, JOB_FAILED, STOPPED = (
    "starting",
    "running",
    "succeeded",
    "failed",
    "stopped",
)
GOSSIP_JOB_STATES = (STARTING, JOB_RUNNING, SUCCEEDED, JOB_FAILED, STOPPED)
#: States a gossip job never leaves.
GOSSIP_FINAL = (SUCCEEDED, JOB_FAILED, STOPPED)


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: error messages never echo unbounded input
    (a status whose details exceed gRPC's metadata limit would not even reach the caller)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def check_job_id(job_id: object) -> str:
    if not isinstance(job_id, str) or not JOB_ID.match(job_id):
        raise InvalidInput(f"job_id must be 1-64 letters, digits, - or _, got {shown(job_id)}")
    return job_id


def _finite(value: float, name: str, low: float = 0.0, high: float = math.inf) -> float:
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise InvalidInput(
            f"{name} must be a finite number in [{low:g}, {high:g}], got {shown(value)}"
        )
    return number


def _count(value: int, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidInput(f"{name} must be an integer, got {shown(value)}")
    if not low <= int(value) <= high:
        raise InvalidInput(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


def _text(value: str, name: str, limit: int = MAX_NAME_LENGTH) -> str:
    if not isinstance(value, str) or len(value) > limit or any(ord(c) < 32 for c in value):
        raise InvalidInput(f"{name} must be printable text of at most {limit} characters")
    return value


# --------------------------------------------------------------------------- peer reports


@dataclass(frozen=True, eq=False)
class RoundReport:
    """What a peer reports after mixing round ``round`` (seconds from its clock)."""

    job_id: str
    peer: int
    round: int
    #: from the start of the round to the end of mixing
    round_seconds: float
    #: from the start of the round to the gradient decision (real + emulated compute)
    compute_seconds: float
    #: whether g_i = 0 this round (the gradient missed the compute deadline)
    skipped_gradient: bool
    step_size: float
    #: per neighbour: seconds waited for its value after sending ours (0: it was already here),
    #: None when it had not arrived by the gossip deadline
    gossip_seconds: Mapping[int, float | None]
    #: neighbours whose value was missing (their weight went onto this peer's own value)
    missing: tuple[int, ...]
    #: ||x_i|| after mixing
    params_norm: float
    #: x_i after mixing, every ``report_params_every`` rounds and after the last round, else None
    params: FloatArray | None
    #: mean squared distance of the mixed values (own x_i' and the arrived x_l') from their mean
    local_consensus: float = math.nan


@dataclass(frozen=True, eq=False)
class TimedReport:
    """A report with the seconds from the peer's start of the job to the end of the round."""

    report: RoundReport
    job_seconds: float


@dataclass(frozen=True, eq=False)
class PeerReports:
    """A peer's answer to GetReports: the job's state there and the reports asked for."""

    state: str
    round: int
    rounds: int
    message: str
    reports: tuple[TimedReport, ...]
    dropped: int = 0


# --------------------------------------------------------------------------- one peer's job


@dataclass(frozen=True)
class NeighbourLink:
    """A neighbour of the receiving peer: graph index, registered name, address, weight W_il."""

    index: int
    name: str
    address: str
    weight: float


@dataclass(frozen=True, eq=False)
class PeerAssignment:
    """What the coordinator tells one peer about a job (see ``PeerJobHeader`` in peer.proto).

    :meth:`validated` checks every field against its bound; the peer's logic checks the rest
    (row sums, data shapes) when it builds its job.
    """

    job_id: str
    scheme: str
    peer: int
    n_peers: int
    neighbours: tuple[NeighbourLink, ...]
    self_weight: float
    model: str
    n_features: int
    n_classes: int
    l2: float
    partitions: tuple[int, ...]
    rows: tuple[int, ...]
    n_partitions: int
    coefficient: float
    step_initial: float
    #: 0 or inf: a constant step
    step_decay_rounds: float
    rounds: int
    compute_deadline_seconds: float
    gossip_deadline_seconds: float
    wait_for_gradient: bool
    report_params_every: int
    straggle: str
    compute_seconds: float
    emulation_seed: int
    initial_params: FloatArray

    def validated(self) -> PeerAssignment:
        check_job_id(self.job_id)
        if self.scheme not in GOSSIP_SCHEMES:
            raise InvalidInput(
                f"scheme must be one of {list(GOSSIP_SCHEMES)}, got {shown(self.scheme)}"
            )
        n = _count(self.n_peers, "n_peers", 2, MAX_PEERS)
        _count(self.peer, "peer", 0, n - 1)
        if not 1 <= len(self.neighbours) <= n - 1:
            raise InvalidInput(
                f"neighbours must list 1 to {n - 1} peers, got {len(self.neighbours)}"
            )
        for link in self.neighbours:
            _count(link.index, "neighbour index", 0, n - 1)
            _text(link.name, "neighbour name")
            if not _text(link.address, "neighbour address"):
                raise InvalidInput(f"neighbour {link.index} has no address")
            _finite(link.weight, "neighbour weight", 0.0, 1.0)
        if self.model not in PEER_MODELS:
            raise InvalidInput(f"model must be one of {list(PEER_MODELS)}, got {shown(self.model)}")
        _count(self.n_features, "n_features", 1, MAX_FEATURES)
        _count(self.n_classes, "n_classes", 1, MAX_CLASSES)
        _finite(self.l2, "l2")
        k = _count(self.n_partitions, "n_partitions", 1, MAX_PARTITIONS)
        if not 1 <= len(self.partitions) <= k or len(self.rows) != len(self.partitions):
            raise InvalidInput(
                f"partitions must list 1 to {k} partitions with one row count each, got "
                f"{len(self.partitions)} partitions and {len(self.rows)} row counts"
            )
        if len(set(self.partitions)) != len(self.partitions):
            raise InvalidInput("partitions must be distinct")
        for j in self.partitions:
            _count(j, "partition", 0, k - 1)
        for r in self.rows:
            _count(r, "rows", 1, 2**40)
        _finite(self.coefficient, "coefficient", 0.0, 1e6)
        _finite(self.step_initial, "step_initial")
        if not (self.step_decay_rounds == math.inf or self.step_decay_rounds >= 0):
            raise InvalidInput(
                f"step_decay_rounds must be >= 0, got {shown(self.step_decay_rounds)}"
            )
        _count(self.rounds, "rounds", 1, MAX_ROUNDS)
        for name in ("compute_deadline_seconds", "gossip_deadline_seconds"):
            if not 0 < _finite(getattr(self, name), name, 0.0, MAX_DEADLINE_SECONDS):
                raise InvalidInput(f"{name} must be > 0")
        _count(self.report_params_every, "report_params_every", 0, MAX_ROUNDS)
        _text(self.straggle, "straggle")
        _finite(self.compute_seconds, "compute_seconds", 0.0, MAX_DEADLINE_SECONDS)
        _count(self.emulation_seed, "emulation_seed", 0, 2**63 - 1)
        return self


# --------------------------------------------------------------------------- jobs at the coordinator


@dataclass(frozen=True)
class GossipJobSpec:
    """A gossip learning job as submitted (see ``GossipJobSpec`` in coordinator.proto).

    ``graph`` a graph kind (``ring``, ``torus``, ``er:p=P``, ...), or ``edges`` an explicit edge
    list (the coordinator never reads a file a request names); ``peers`` 0 = every registered
    alive peer; the step on the mean loss is ``learning_rate / L``, decaying as
    ``1 / (1 + t / decay_rounds)`` (0: constant); a peer holding d partitions gives up its
    gradient ``d * partition_deadline_seconds`` into a round.
    """

    job_id: str = ""
    graph: str = "ring"
    edges: tuple[tuple[int, int], ...] = ()
    peers: int = 0
    scheme: str = "goco"
    replication: int = 3
    straggle_probability: float = 0.1
    dataset: str = "synthetic-lsq:n=1200,d=10,noise=1"
    model: str = ""
    l2: float = 0.0
    non_iid: bool = False
    rounds: int = 100
    learning_rate: float = 0.2
    decay_rounds: float = 50.0
    partition_deadline_seconds: float = 1.0
    gossip_deadline_seconds: float = 1.0
    report_params_every: int = 1
    seed: int = 0
    straggle: str = ""
    compute_seconds: float = 0.0

    def validated(self) -> GossipJobSpec:
        """This spec, or InvalidInput naming the first bad field (nothing is started)."""
        if self.job_id:
            check_job_id(self.job_id)
        if self.scheme not in GOSSIP_SCHEMES:
            raise InvalidInput(
                f"scheme must be one of {list(GOSSIP_SCHEMES)}, got {shown(self.scheme)}"
            )
        for name in ("graph", "dataset", "model", "straggle"):
            _text(getattr(self, name), name, MAX_SPEC_LENGTH)
        if bool(self.graph) == bool(self.edges):
            raise InvalidInput("give either a graph kind or an explicit edge list, not both")
        if self.graph and not re.fullmatch(r"[a-z]+(:[\w.=,]*)?", self.graph):
            raise InvalidInput(
                f"graph must be a graph kind (ring, torus, torus:rows=R, er:p=P, geometric:r=R, "
                f"complete), got {shown(self.graph)}; send a file's edges as an edge list"
            )
        if len(self.edges) > MAX_EDGES:
            raise InvalidInput(f"edges must hold at most {MAX_EDGES} pairs, got {len(self.edges)}")
        for i, j in self.edges:
            _count(i, "edge node", 0, MAX_PEERS - 1)
            _count(j, "edge node", 0, MAX_PEERS - 1)
        _count(self.peers, "peers", 0, MAX_PEERS)
        if self.peers == 1:
            raise InvalidInput("peers must be 0 (all registered) or at least 2, got 1")
        _count(self.replication, "replication", 1, MAX_REPLICATION)
        _finite(self.straggle_probability, "straggle_probability", 0.0, 0.99)
        if self.model and self.model not in PEER_MODELS:
            raise InvalidInput(f"model must be one of {list(PEER_MODELS)}, got {shown(self.model)}")
        _finite(self.l2, "l2")
        _count(self.rounds, "rounds", 1, MAX_JOB_ROUNDS)
        _finite(self.learning_rate, "learning_rate", 0.0, 1e3)
        _finite(self.decay_rounds, "decay_rounds", 0.0, 1e12)
        for name in ("partition_deadline_seconds", "gossip_deadline_seconds"):
            if not 0 < _finite(getattr(self, name), name, 0.0, MAX_DEADLINE_SECONDS):
                raise InvalidInput(f"{name} must be > 0")
        _count(self.report_params_every, "report_params_every", 0, MAX_ROUNDS)
        _count(self.seed, "seed", 0, 2**63 - 1)
        _finite(self.compute_seconds, "compute_seconds", 0.0, MAX_DEADLINE_SECONDS)
        return self


@dataclass(frozen=True)
class PeerRoundTiming:
    """One peer in one round: its round, compute and gossip (send to mix) seconds."""

    peer: int
    round_seconds: float
    compute_seconds: float
    gossip_seconds: float
    skipped_gradient: bool
    missing: int


@dataclass(frozen=True)
class GossipRoundRecord:
    """One round of a gossip job over the peers that reported it (NaN: not measured)."""

    round: int
    peers: int
    loss: float
    gap: float
    consensus_distance: float
    skipped_gradients: int
    missing_values: int
    wall_seconds: float
    max_round_seconds: float
    peer_timings: tuple[PeerRoundTiming, ...] = ()


@dataclass(frozen=True)
class GossipJobStatus:
    """A gossip job as the coordinator reports it (a snapshot)."""

    job_id: str
    state: str
    spec: GossipJobSpec
    message: str = ""
    graph: str = ""
    n_peers: int = 0
    slem: float = math.nan
    spectral_gap: float = math.nan
    peer_names: tuple[str, ...] = ()
    dead: tuple[int, ...] = ()
    unresponsive: tuple[int, ...] = ()
    rounds_done: int = 0
    records: tuple[GossipRoundRecord, ...] = ()
    initial_loss: float = math.nan
    setup_seconds: float = 0.0


def records_as_row(status: GossipJobStatus) -> dict[str, Any]:
    """The JSON row of a finished job: per-round lists (``loss``, ``gap``,
    ``consensus_distance``, ``skipped_gradients``, ``wall_seconds``; NaN becomes None)."""

    def clean(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    records = status.records
    return {
        "job_id": status.job_id,
        "scheme": status.spec.scheme,
        "graph": status.graph,
        "n_peers": status.n_peers,
        "replication": status.spec.replication if status.spec.scheme == "goco" else 1,
        "straggle_probability": status.spec.straggle_probability,
        "state": status.state,
        "message": status.message,
        "slem": clean(status.slem),
        "dead": list(status.dead),
        "rounds": [r.round for r in records],
        "loss": [clean(r.loss) for r in records],
        "gap": [clean(r.gap) for r in records],
        "consensus_distance": [clean(r.consensus_distance) for r in records],
        "skipped_gradients": [r.skipped_gradients for r in records],
        "missing_values": [r.missing_values for r in records],
        "wall_seconds": [clean(r.wall_seconds) for r in records],
        "setup_seconds": status.setup_seconds,
    }


__all__ = [
    "GOSSIP_FINAL",
    "GOSSIP_JOB_STATES",
    "GOSSIP_SCHEMES",
    "MAX_JOB_ROUNDS",
    "PEER_MODELS",
    "PEER_STATES",
    "GossipJobSpec",
    "GossipJobStatus",
    "GossipRoundRecord",
    "NeighbourLink",
    "PeerAssignment",
    "PeerReports",
    "PeerRoundTiming",
    "RoundReport",
    "TimedReport",
    "check_job_id",
    "records_as_row",
    "shown",
]
