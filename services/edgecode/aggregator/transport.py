"""The edge's gRPC client of one job's workers: ComputeGradient on the zero-copy gradient path."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
import numpy as np

from edgecode import wire
from edgecode.rounds import Message
from edgecode.runtime.security import Tls
from edgecode.runtime.server import make_channel
from edgecode.v1 import worker_pb2


class _GradientCall:
    """A grpc future whose result is the worker's :class:`~edgecode.rounds.Message`."""

    def __init__(self, future: grpc.Future, worker: str) -> None:
        self._future = future
        self._worker = worker

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._future.add_done_callback(lambda _f: fn(self))

    def cancel(self) -> bool:
        return bool(self._future.cancel())

    def result(self, timeout: float | None = None) -> Message:
        response = self._future.result(timeout=timeout)  # parsed by wire.decode_gradient_response
        # The sender is the name this edge was configured with, never what the worker claims.
        return Message(self._worker, response.gradient, float(response.compute_seconds))


class GrpcWorkerClient:
    """Channels to one job's workers (name order as configured). The names and addresses come
    from ConfigureJob, which only the master may call (its authenticated membership)."""

    def __init__(
        self, names: Sequence[str], addresses: Sequence[str], tls: Tls | None = None
    ) -> None:
        self._names = list(names)
        self._channels = [make_channel(a, tls, warm=True) for a in addresses]
        # The gradient fast path: responses are parsed by wire without copying the tensor.
        self._calls = [
            channel.unary_unary(
                "/edgecode.v1.Worker/ComputeGradient",
                request_serializer=worker_pb2.ComputeGradientRequest.SerializeToString,
                response_deserializer=wire.decode_gradient_response,
            )
            for channel in self._channels
        ]

    def compute(
        self, job_id: str, round_: int, params: np.ndarray, epoch: int, timeout: float
    ) -> list[_GradientCall]:
        request = worker_pb2.ComputeGradientRequest(
            job_id=job_id, round=round_, placement_epoch=epoch
        )
        wire.tensor_to_proto(params, out=request.params)  # encoded once for every worker
        return [
            _GradientCall(call.future(request, timeout=timeout), name)
            for name, call in zip(self._names, self._calls, strict=True)
        ]

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
