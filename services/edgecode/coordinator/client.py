"""A client of the coordinator's gossip job API (used by ``edgecode gossip``, the local cluster
and the benchmark)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from edgecode import wire
from edgecode.gossip_records import GOSSIP_FINAL, GossipJobSpec, GossipJobStatus
from edgecode.runtime.server import make_channel
from edgecode.v1 import coordinator_pb2, coordinator_pb2_grpc


class GossipClient:
    """StartGossipJob / GetGossipJob / StopGossipJob over one channel."""

    def __init__(self, address: str) -> None:
        self._channel = make_channel(address)
        self._stub = coordinator_pb2_grpc.CoordinatorStub(self._channel)

    def start(self, spec: GossipJobSpec, timeout: float = 120.0) -> GossipJobStatus:
        request = coordinator_pb2.StartGossipJobRequest(spec=wire.gossip_spec_to_proto(spec))
        return wire.gossip_status_from_proto(self._stub.StartGossipJob(request, timeout=timeout))

    def status(
        self,
        job_id: str,
        from_round: int = 0,
        include_peer_timings: bool = False,
        timeout: float = 30.0,
    ) -> GossipJobStatus:
        request = coordinator_pb2.GetGossipJobRequest(
            job_id=job_id, from_round=from_round, include_peer_timings=include_peer_timings
        )
        return wire.gossip_status_from_proto(self._stub.GetGossipJob(request, timeout=timeout))

    def stop(self, job_id: str, timeout: float = 30.0) -> GossipJobStatus:
        request = coordinator_pb2.StopGossipJobRequest(job_id=job_id)
        return wire.gossip_status_from_proto(self._stub.StopGossipJob(request, timeout=timeout))

    def wait(
        self,
        job_id: str,
        timeout: float = 600.0,
        poll_seconds: float = 0.2,
        progress: Callable[[GossipJobStatus], None] | None = None,
    ) -> GossipJobStatus:
        """Poll until the job ends (or ``timeout``: TimeoutError); ``progress`` sees every
        status (records of the rounds since the last one)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            status = self.status(job_id, from_round=seen)
            if progress is not None:
                progress(status)
            seen = status.records[-1].round + 1 if status.records else seen
            if status.state in GOSSIP_FINAL and seen >= status.rounds_done:
                return self.complete(job_id)
            if time.monotonic() > deadline:
                raise TimeoutError(f"gossip job {job_id} still {status.state} after {timeout} s")
            if seen >= status.rounds_done:
                time.sleep(poll_seconds)

    def complete(self, job_id: str) -> GossipJobStatus:
        """The status with every record (paged) and the per-peer timings the coordinator kept."""
        first = self.status(job_id, include_peer_timings=True)
        records = list(first.records)
        while records and records[-1].round + 1 < first.rounds_done:
            page = self.status(job_id, records[-1].round + 1, include_peer_timings=True)
            if not page.records:
                break
            records.extend(page.records)
        return replace(first, records=tuple(records))

    def close(self) -> None:
        self._channel.close()
