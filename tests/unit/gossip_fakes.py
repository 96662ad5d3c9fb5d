"""In-process gossip peers without gRPC: real :class:`~edgecode.peer.node.PeerNode` objects wired
by an in-memory network, and the coordinator's :class:`~edgecode.coordinator.gossip.PeerClient`
over them, so unit tests run whole gossip jobs (real threads, real deadlines) with no sockets.

A peer can be *dead* (every call to it, and every value sent to it, fails at once, like a refused
connection) or *late* (the coordinator's polls time out, like a paused process, while its rounds
go on).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from edgecode.coordinator.gossip import PeerLate, PeerUnreachable
from edgecode.errors import EdgecodeError
from edgecode.gossip_records import NeighbourLink, PeerAssignment, PeerReports, RoundReport
from edgecode.peer.logic import GossipMessage
from edgecode.peer.node import PeerNode


class Network:
    """Peers by address; ``dead`` addresses refuse everything, ``late`` ones miss polls."""

    def __init__(self, n: int) -> None:
        self.addresses = [f"mem:{i}" for i in range(n)]
        self.dead: set[str] = set()
        self.late: set[str] = set()
        self.refused: list[tuple[str, type[Exception]]] = []
        self.recorded: list[tuple[str, RoundReport]] = []
        self._lock = threading.Lock()
        self.nodes = {
            address: PeerNode(
                f"peer-{i}", self._transport_factory(address), metrics=_Recorder(self, address)
            )
            for i, address in enumerate(self.addresses)
        }

    def peers(self) -> list[tuple[str, str]]:
        """The membership view: (name, address) of every peer (shuffled order on purpose)."""
        return [(node.name, address) for address, node in reversed(self.nodes.items())]

    def _transport_factory(self, own: str) -> Any:
        def build(links: Sequence[NeighbourLink], timeout: float) -> MemoryTransport:
            return MemoryTransport(self, own, {link.index: link.address for link in links})

        return build

    def deliver(self, address: str, message: GossipMessage) -> None:
        if address in self.dead:
            return
        try:
            self.nodes[address].receive(
                message.job_id, message.round, message.sender, message.params
            )
        except EdgecodeError as exc:
            with self._lock:
                self.refused.append((address, type(exc)))

    def client(self, address: str) -> MemoryClient:
        return MemoryClient(self, address)

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()


class MemoryTransport:
    def __init__(self, network: Network, own: str, addresses: Mapping[int, str]) -> None:
        self.network = network
        self.own = own
        self.addresses = dict(addresses)

    def send(self, message: GossipMessage, neighbours: Sequence[int]) -> None:
        if self.own in self.network.dead:  # a dead peer sends nothing
            return
        for n in neighbours:
            self.network.deliver(self.addresses[n], message)

    def close(self) -> None:
        pass


class _Recorder:
    def __init__(self, network: Network, address: str) -> None:
        self.network = network
        self.address = address

    def round_done(self, scheme: str, report: RoundReport, names: Mapping[int, str]) -> None:
        with self.network._lock:
            self.network.recorded.append((self.address, report))

    def known_neighbours(self, names: Sequence[str]) -> None:
        pass

    def jobs_held(self, counts: Mapping[str, int]) -> None:
        pass


class MemoryClient:
    """The coordinator's view of one in-memory peer."""

    def __init__(self, network: Network, address: str) -> None:
        self.network = network
        self.address = address
        self.stopped: list[str] = []

    @property
    def node(self) -> PeerNode:
        return self.network.nodes[self.address]

    def _check(self) -> None:
        if self.address in self.network.dead:
            raise PeerUnreachable(f"{self.address}: connection refused")

    def place(self, assignment: PeerAssignment, data: Any, timeout: float) -> None:
        self._check()
        builder = self.node.begin(assignment)
        for partition, (X, y) in zip(assignment.partitions, data, strict=True):
            builder.add(partition, X, y)
        self.node.install(builder)

    def start(self, job_id: str, timeout: float) -> None:
        self._check()
        self.node.start(job_id)

    def reports(self, job_id: str, peer: int, from_round: int, timeout: float) -> PeerReports:
        self._check()
        if self.address in self.network.late:
            raise PeerLate(f"{self.address}: no answer")
        return self.node.reports(job_id, from_round)

    def stop(self, job_id: str, timeout: float) -> None:
        self.stopped.append(job_id)
        if self.address not in self.network.dead:
            self.node.stop(job_id)

    def close(self) -> None:
        pass
