"""The worker's gRPC client of other workers: reading partitions during a shuffle."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import numpy as np

from edgecode import wire
from edgecode.runtime.server import make_channel
from edgecode.v1 import worker_pb2, worker_pb2_grpc

#: A shuffle's read from one worker: a base plus what the bytes cost at a slow edge link.
READ_TIMEOUT_SECONDS = 120.0


class GrpcPartitionReader:
    """ReadPartitions on other workers, channels cached per address (the addresses come from
    the master's FetchPlacement, i.e. from its authenticated membership)."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def _stub(self, address: str) -> worker_pb2_grpc.WorkerStub:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = make_channel(address)
        return worker_pb2_grpc.WorkerStub(channel)

    def read(
        self, address: str, job_id: str, epoch: int, partitions: Sequence[int]
    ) -> Iterator[tuple[int, Any, np.ndarray, int]]:
        request = worker_pb2.ReadPartitionsRequest(
            job_id=job_id, placement_epoch=epoch, partitions=list(partitions)
        )
        for chunk in self._stub(address).ReadPartitions(request, timeout=READ_TIMEOUT_SECONDS):
            partition, features, labels = wire.partition_chunk_from_proto(chunk)
            yield partition, features, labels, chunk.ByteSize()

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
