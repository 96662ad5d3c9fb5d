"""The edge aggregator's gRPC servicer (thin) and its gRPC worker client."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from edgecode import wire
from edgecode.aggregator.logic import DECODE, FORWARD, AggregatorLogic, EdgeResult
from edgecode.errors import InvalidInput
from edgecode.runtime.errors import translate_errors, translate_stream_errors
from edgecode.runtime.server import make_channel
from edgecode.v1 import aggregator_pb2, aggregator_pb2_grpc, common_pb2, worker_pb2

log = logging.getLogger(__name__)

MODES = {aggregator_pb2.EDGE_MODE_DECODE: DECODE, aggregator_pb2.EDGE_MODE_FORWARD: FORWARD}


class _Call:
    """A grpc future whose result is decoded to ``(vector, compute_seconds)``."""

    def __init__(self, future: grpc.Future, worker: str) -> None:
        self._future = future
        self._worker = worker

    def add_done_callback(self, fn: Any) -> None:
        self._future.add_done_callback(lambda _f: fn(self))

    def cancel(self) -> bool:
        return bool(self._future.cancel())

    def result(self, timeout: float | None = None) -> tuple[np.ndarray, float]:
        response = self._future.result(timeout=timeout)  # decoded by wire.decode_gradient_response
        return response.gradient, float(response.compute_seconds)


class GrpcWorkerClient:
    def __init__(self, addresses: Sequence[str]) -> None:
        self._channels = [make_channel(a) for a in addresses]
        # The gradient fast path: responses are parsed by wire without copying the tensor.
        self._calls = [
            channel.unary_unary(
                "/edgecode.v1.Worker/ComputeGradient",
                request_serializer=worker_pb2.ComputeGradientRequest.SerializeToString,
                response_deserializer=wire.decode_gradient_response,
            )
            for channel in self._channels
        ]
        self._addresses = list(addresses)

    def compute(
        self, worker: int, job_id: str, round_: int, params: Any, epoch: int, timeout: float
    ) -> _Call:
        request = worker_pb2.ComputeGradientRequest(
            job_id=job_id, round=round_, params=params, placement_epoch=epoch
        )
        return _Call(
            self._calls[worker].future(request, timeout=timeout),
            self._addresses[worker],
        )

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


def _timings_to_proto(result: EdgeResult) -> list[common_pb2.NodeTiming]:
    return [
        common_pb2.NodeTiming(
            node=t.node,
            seconds=t.seconds,
            arrived=t.arrived,
            compute_seconds=t.compute_seconds,
            load_fraction=t.load_fraction,
        )
        for t in result.timings
    ]


@dataclass
class AggregatorServicer(aggregator_pb2_grpc.AggregatorServicer):
    logic: AggregatorLogic

    @translate_errors
    def ConfigureJob(
        self, request: aggregator_pb2.ConfigureJobRequest, context: grpc.ServicerContext
    ) -> Any:
        mode = MODES.get(request.mode)
        if mode is None:
            raise InvalidInput("mode must be EDGE_MODE_DECODE or EDGE_MODE_FORWARD")
        code = targets = None
        if mode == DECODE:
            code = wire.tensor_from_proto(
                request.code, "code", dtype="float64", shape=[len(request.workers), None]
            )
            targets = wire.tensor_from_proto(
                request.targets, "targets", dtype="float64", shape=[code.shape[1]]
            )
        count = self.logic.configure(
            request.job_id,
            [w.name for w in request.workers],
            [w.address for w in request.workers],
            mode,
            request.worker_deadline_seconds,
            code,
            targets,
            int(request.s_worker),
        )
        return aggregator_pb2.ConfigureJobResponse(workers=count)

    @translate_stream_errors
    def RunRound(
        self, request: aggregator_pb2.RunRoundRequest, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        params = wire.tensor_from_proto(request.params, "params", dtype="float64", shape=[None])
        active = threading.Event()
        active.set()
        context.add_callback(active.clear)
        for result in self.logic.run_round(
            request.job_id,
            request.round,
            request.params,
            request.placement_epoch,
            params.size,
            active.is_set,
        ):
            message = aggregator_pb2.EdgeMessage(
                job_id=request.job_id,
                round=request.round,
                edge=self.logic.name,
                worker=result.worker,
                combined=result.combined,
                timings=_timings_to_proto(result),
            )
            wire.tensor_to_proto(result.vector, out=message.vector)
            yield message
