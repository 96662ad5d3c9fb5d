"""The coordinator's gRPC client of one peer (gossip jobs): place, start, collect, stop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from edgecode import wire
from edgecode.coordinator.gossip import PeerLate, PeerUnreachable
from edgecode.gossip_records import PeerAssignment, PeerReports
from edgecode.runtime.server import make_channel
from edgecode.v1 import peer_pb2, peer_pb2_grpc

#: Status codes that mean the peer is gone (refused connection) or lost the job (restarted).
GONE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION)


class GrpcPeerClient:
    """One channel to one peer (a :class:`edgecode.coordinator.gossip.PeerClient`)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = make_channel(address)
        self._stub = peer_pb2_grpc.PeerStub(self._channel)

    def place(self, assignment: PeerAssignment, data: Any, timeout: float) -> None:
        def messages() -> Iterator[peer_pb2.PlaceJobRequest]:
            yield peer_pb2.PlaceJobRequest(header=wire.peer_header_to_proto(assignment))
            for partition, (X, y) in zip(assignment.partitions, data, strict=True):
                for chunk in wire.partition_chunks(partition, X, y):
                    yield peer_pb2.PlaceJobRequest(chunk=chunk)

        self._stub.PlaceJob(messages(), timeout=timeout)

    def start(self, job_id: str, timeout: float) -> None:
        self._stub.StartJob(peer_pb2.StartJobRequest(job_id=job_id), timeout=timeout)

    def reports(self, job_id: str, peer: int, from_round: int, timeout: float) -> PeerReports:
        try:
            answer = self._stub.GetReports(
                peer_pb2.GetReportsRequest(job_id=job_id, from_round=from_round), timeout=timeout
            )
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise PeerLate(f"{self.address}: no answer within {timeout:g} s") from None
            if code in GONE:
                raise PeerUnreachable(f"{self.address}: {code.name}: {exc.details()}") from None
            raise
        return wire.peer_reports_from_proto(answer, job_id, peer)

    def stop(self, job_id: str, timeout: float) -> None:
        try:
            self._stub.StopJob(peer_pb2.StopJobRequest(job_id=job_id), timeout=timeout)
        except (grpc.RpcError, ValueError):
            pass  # best effort: a dead peer has nothing to stop (ValueError: channel closed)

    def close(self) -> None:
        self._channel.close()
