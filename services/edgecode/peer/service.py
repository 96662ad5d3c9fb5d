"""The peer's gRPC servicer (thin: decode the request, call the node, encode the reply).

Who calls what (for the authorization table): PlaceJob, StartJob, GetReports and StopJob come
from the coordinator; Gossip from the peer's graph neighbours (the ``sender`` index must be one
of the job's neighbours; with mutual TLS the caller's certificate must also name that
neighbour, see :attr:`edgecode.gossip_records.NeighbourLink.name`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from edgecode import errors, wire
from edgecode.peer.node import JobBuilder, PeerNode
from edgecode.runtime.errors import translate_errors
from edgecode.v1 import peer_pb2, peer_pb2_grpc, worker_pb2

#: The refusal reason of each core error (the label of edgecode_peer_refused_messages_total).
REFUSALS: tuple[tuple[type[Exception], str], ...] = (
    (errors.StaleRound, "stale"),
    (errors.UnknownJob, "unknown_job"),
    (errors.NotAllowed, "not_neighbour"),
    (errors.Overloaded, "too_far_ahead"),
    (ValueError, "invalid"),
)


class ServicerMetrics(Protocol):
    def received(self, nbytes: int) -> None: ...

    def refused_message(self, reason: str) -> None: ...


class _NoMetrics:
    def received(self, nbytes: int) -> None:
        pass

    def refused_message(self, reason: str) -> None:
        pass


def _add_partition(builder: JobBuilder, chunk: worker_pb2.PartitionChunk) -> None:
    builder.add(*wire.partition_chunk_from_proto(chunk))


@dataclass
class PeerServicer(peer_pb2_grpc.PeerServicer):
    """Peer RPCs: PlaceJob, StartJob, Gossip, GetReports, StopJob."""

    node: PeerNode
    metrics: ServicerMetrics = field(default_factory=_NoMetrics)

    @translate_errors
    def PlaceJob(
        self, request_iterator: Iterator[peer_pb2.PlaceJobRequest], context: grpc.ServicerContext
    ) -> peer_pb2.PlaceJobResponse:
        builder, received = wire.read_stream(
            request_iterator,
            "PlaceJob",
            lambda header: self.node.begin(wire.peer_header_from_proto(header)),
            _add_partition,
            context.is_active,
        )
        partitions, rows = self.node.install(builder)
        self.metrics.received(received)
        return peer_pb2.PlaceJobResponse(partitions=partitions, rows=rows)

    @translate_errors
    def StartJob(
        self, request: peer_pb2.StartJobRequest, context: grpc.ServicerContext
    ) -> peer_pb2.StartJobResponse:
        return peer_pb2.StartJobResponse(round=self.node.start(request.job_id))

    @translate_errors
    def Gossip(
        self, request: peer_pb2.GossipRequest, context: grpc.ServicerContext
    ) -> peer_pb2.GossipResponse:
        try:
            params = wire.gossip_params_from_proto(request)
            self.metrics.received(params.nbytes)
            self.node.receive(request.job_id, request.round, request.sender, params)
        except Exception as exc:
            reason = next((name for kind, name in REFUSALS if isinstance(exc, kind)), None)
            if reason is not None:
                self.metrics.refused_message(reason)
            raise
        return peer_pb2.GossipResponse()

    @translate_errors
    def GetReports(
        self, request: peer_pb2.GetReportsRequest, context: grpc.ServicerContext
    ) -> peer_pb2.GetReportsResponse:
        reports = self.node.reports(
            request.job_id, int(request.from_round), int(request.max_reports)
        )
        return wire.peer_reports_to_proto(reports)

    @translate_errors
    def StopJob(
        self, request: peer_pb2.StopJobRequest, context: grpc.ServicerContext
    ) -> peer_pb2.StopJobResponse:
        return peer_pb2.StopJobResponse(stopped=self.node.stop(request.job_id))
