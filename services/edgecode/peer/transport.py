"""The peer's gRPC clients: Gossip to its neighbours, in the background.

Addresses come only from the coordinator's assignment (:class:`NeighbourLink`), never from a
Gossip request. A send encodes the value once and starts one asynchronous call per neighbour with
a deadline; a dead, paused or refusing neighbour simply misses the value (counted, logged at
debug level), and :meth:`GrpcNeighbours.send` never blocks or raises.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

import grpc

from edgecode import wire
from edgecode.gossip_records import NeighbourLink
from edgecode.peer.logic import GossipMessage
from edgecode.runtime.server import make_channel
from edgecode.v1 import peer_pb2_grpc

log = logging.getLogger(__name__)


class TransportMetrics(Protocol):
    def sent(self, nbytes: int) -> None: ...

    def send_failed(self) -> None: ...


class _NoMetrics:
    def sent(self, nbytes: int) -> None:
        pass

    def send_failed(self) -> None:
        pass


class ChannelPool:
    """One channel per neighbour address, shared by the jobs of a peer process."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def stub(self, address: str) -> peer_pb2_grpc.PeerStub:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = make_channel(address)
        return peer_pb2_grpc.PeerStub(channel)

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()


class GrpcNeighbours:
    """One job's transport to its neighbours (a :class:`edgecode.peer.logic.NeighbourTransport`)."""

    def __init__(
        self,
        pool: ChannelPool,
        links: Sequence[NeighbourLink],
        timeout: float,
        metrics: TransportMetrics | None = None,
    ) -> None:
        self._stubs = {link.index: pool.stub(link.address) for link in links}
        self._timeout = timeout
        self._metrics: TransportMetrics = metrics if metrics is not None else _NoMetrics()
        self._pending: set[grpc.Future] = set()
        self._lock = threading.Lock()
        self._closed = False

    def send(self, message: GossipMessage, neighbours: Sequence[int]) -> None:
        request = wire.gossip_request(message.job_id, message.round, message.sender, message.params)
        nbytes = int(message.params.nbytes)
        for neighbour in neighbours:
            stub = self._stubs.get(neighbour)
            if stub is None or self._closed:
                continue
            try:
                future = stub.Gossip.future(request, timeout=self._timeout)
            except ValueError:  # the channel was closed: the peer is shutting down
                self._metrics.send_failed()
                continue
            with self._lock:
                self._pending.add(future)
            future.add_done_callback(
                lambda f, n=neighbour, r=message.round: self._done(f, n, r, nbytes)
            )

    def _done(self, future: grpc.Future, neighbour: int, round_: int, nbytes: int) -> None:
        with self._lock:
            self._pending.discard(future)
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            self._metrics.sent(nbytes)
            return
        self._metrics.send_failed()
        code = error.code() if isinstance(error, grpc.RpcError) else None
        log.debug("gossip of round %d to peer %d: %s", round_, neighbour, code or error)

    def close(self) -> None:
        """Cancel the calls still in flight (the job ended)."""
        self._closed = True
        with self._lock:
            pending, self._pending = list(self._pending), set()
        for future in pending:
            future.cancel()
