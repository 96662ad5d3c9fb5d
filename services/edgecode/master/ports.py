"""What the master's logic needs from the outside world, as small Protocols (STYLE.md, 4).

gRPC adapters live in :mod:`edgecode.master.transport`; tests pass fakes. Nothing here imports
grpc or protobuf.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgecode.planning.spec import Plan
from edgecode.records import PlacementHeader, Timing
from edgecode.rounds import Message, NoObserver


@dataclass(frozen=True)
class Node:
    """A node the master dials: its name, address and (emulated) link delay."""

    name: str
    address: str
    link_seconds: float = 0.0


@dataclass(frozen=True)
class Topology:
    """The alive edges, each with its alive workers (sorted by name)."""

    edges: tuple[Node, ...]
    workers: tuple[tuple[Node, ...], ...]

    def without(self, dead: set[str]) -> Topology:
        """This topology minus the named nodes (an edge without workers goes too)."""
        edges, workers = [], []
        for edge, members in zip(self.edges, self.workers, strict=True):
            alive = tuple(w for w in members if w.name not in dead)
            if edge.name not in dead and alive:
                edges.append(edge)
                workers.append(alive)
        return Topology(tuple(edges), tuple(workers))

    @property
    def nodes(self) -> tuple[Node, ...]:
        """Every edge and worker."""
        return self.edges + tuple(w for members in self.workers for w in members)


class ClusterView(Protocol):
    """The master's view of the cluster (the coordinator)."""

    def topology(self) -> Topology: ...

    def plan(
        self,
        partitions: int,
        exclude: Sequence[str] = (),
        max_partitions: int = 0,
        current: Plan | None = None,
    ) -> tuple[Plan, float]:
        """The planner's plan and its expected round seconds, without the ``exclude``d nodes
        and with at most ``max_partitions`` partitions (0: no limit). With ``current``, the
        plan's ``extra["current_seconds"]`` is the current plan re-timed on the same fits."""
        ...

    def report(self, timings: Sequence[Timing], round_seconds: float, predicted: float) -> None:
        """Measured timings of one round (the planner refits the runtimes from them)."""
        ...


class RoundStream(Protocol):
    """An edge's reply to RunRound: messages as they come; cancel ends the call."""

    def __iter__(self) -> Iterator[Message]: ...

    def cancel(self) -> bool: ...


@dataclass(frozen=True)
class EdgeAssignment:
    """What one edge is told for a job: its taking-part workers and, in DECODE mode, their
    code rows and the edge's targets."""

    edge: Node
    workers: tuple[Node, ...]
    mode: str
    code_rows: np.ndarray | None
    targets: np.ndarray | None
    s_worker: int
    #: shape of each worker's answer: 0 = one vector, -1 = several rows
    message_rows: int = 0
    #: DECODE mode: check against a spare answer, waiting at most ``verify_slack`` seconds
    verify: bool = False
    verify_slack: float = 0.0


class Transport(Protocol):
    """The master's calls to edges and workers."""

    def place(
        self,
        worker: Node,
        header: PlacementHeader,
        partitions: Sequence[tuple[int, Any, np.ndarray]],
        timeout: float,
    ) -> int:
        """Stream a worker its partitions ``(index, features, labels)`` within ``timeout``
        seconds; returns the bytes sent."""
        ...

    def configure_edge(
        self, job_id: str, epoch: int, assignment: EdgeAssignment, deadline_seconds: float
    ) -> None: ...

    def run_round(
        self, edge: Node, job_id: str, round_: int, params: np.ndarray, epoch: int, timeout: float
    ) -> RoundStream: ...

    def fetch_placement(
        self,
        worker: Node,
        header: PlacementHeader,
        from_epoch: int,
        sources: dict[int, str],
        timeout: float,
    ) -> tuple[int, float]:
        """Have ``worker`` assemble a new placement from its own ``from_epoch`` data (source
        "") and other workers (their addresses); returns (bytes fetched, seconds)."""
        ...

    def drop_job(self, node: Node, job_id: str, is_edge: bool) -> None:
        """Tell a node a job ended (best effort)."""
        ...

    def unreachable(self, nodes: Sequence[Node]) -> list[str]:
        """Names of the nodes that do not answer a health check now (dead or paused)."""
        ...


class MasterMetricsPort(Protocol):
    """What the master's logic records (runtime.metrics.MasterMetrics; default: nothing)."""

    def response(self, node: str, seconds: float) -> None: ...

    def received(self, nbytes: int) -> None: ...

    def decoded(self, seconds: float) -> None: ...

    def sent(self, nbytes: int) -> None: ...

    def placed(self, nbytes: int) -> None: ...

    def round_done(
        self,
        scheme: str,
        job_id: str,
        seconds: float,
        stragglers: int,
        loss: float,
        predicted: float,
        timings: Sequence[Timing],
    ) -> None: ...

    def recovery(self, job_id: str, fraction: float, residual: float, vectors: int) -> None:
        """The partitions a round's result holds, its decoding residual and the vectors used."""
        ...

    def inconsistent(self, node: str) -> None:
        """``node``'s result contradicted the others (verify)."""
        ...

    def matrix_placed(self, scheme: str, nbytes: int, block_nnz: Sequence[int]) -> None: ...

    def matrix_worker(self, worker: str, seconds: float) -> None: ...

    def matrix_product(self, scheme: str, seconds: float) -> None: ...


class NoMasterMetrics(NoObserver):
    """Records nothing."""

    def sent(self, nbytes: int) -> None:
        pass

    def placed(self, nbytes: int) -> None:
        pass

    def round_done(
        self,
        scheme: str,
        job_id: str,
        seconds: float,
        stragglers: int,
        loss: float,
        predicted: float,
        timings: Sequence[Timing],
    ) -> None:
        pass

    def recovery(self, job_id: str, fraction: float, residual: float, vectors: int) -> None:
        pass

    def inconsistent(self, node: str) -> None:
        pass

    def matrix_placed(self, scheme: str, nbytes: int, block_nnz: Sequence[int]) -> None:
        pass

    def matrix_worker(self, worker: str, seconds: float) -> None:
        pass

    def matrix_product(self, scheme: str, seconds: float) -> None:
        pass
