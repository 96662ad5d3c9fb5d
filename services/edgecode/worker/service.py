"""The worker's gRPC servicer (thin: decode, call the logic, encode)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from edgecode import wire
from edgecode.errors import InvalidInput
from edgecode.runtime.errors import translate_errors
from edgecode.v1 import worker_pb2, worker_pb2_grpc
from edgecode.worker.logic import PlacementHeader, WorkerLogic


def header_from_proto(message: worker_pb2.PlacementHeader) -> PlacementHeader:
    return PlacementHeader(
        job_id=message.job_id,
        model=message.model,
        n_features=int(message.n_features),
        n_classes=int(message.n_classes),
        partitions=tuple(int(j) for j in message.partitions),
        coefficients=tuple(float(c) for c in message.coefficients),
        l2=float(message.l2),
        n_partitions=int(message.n_partitions),
        epoch=int(message.placement_epoch),
        rows=tuple(int(r) for r in message.rows),
    )


@dataclass
class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    logic: WorkerLogic
    metrics: Any = None

    @translate_errors
    def PlaceData(
        self, request_iterator: Iterator[worker_pb2.PlaceDataRequest], context: grpc.ServicerContext
    ) -> Any:
        builder = None
        received = 0
        for message in request_iterator:
            received += message.ByteSize()
            if message.HasField("header"):
                if builder is not None:
                    raise InvalidInput("placement: a second header arrived")
                builder = self.logic.begin_placement(header_from_proto(message.header))
                continue
            if builder is None:
                raise InvalidInput("placement: the first message must be the header")
            chunk = message.chunk
            if chunk.HasField("sparse"):
                features = wire.csr_from_proto(
                    chunk.sparse, f"partition {chunk.partition} features"
                )
            elif chunk.HasField("dense"):
                features = wire.tensor_from_proto(
                    chunk.dense, f"partition {chunk.partition} features", dtype="float64"
                )
            else:
                raise InvalidInput(
                    f"placement: chunk of partition {chunk.partition} has no features"
                )
            labels = wire.tensor_from_proto(
                chunk.labels, f"partition {chunk.partition} labels", shape=[None]
            )
            builder.add(int(chunk.partition), features, labels)
        if builder is None:
            raise InvalidInput("placement: empty stream")
        if not context.is_active():
            # The call died (deadline, oversized message, client gone) and grpc ended the
            # request stream quietly: the caller was told it failed, so install nothing.
            raise InvalidInput("placement: the call ended before it completed")
        placement = builder.finish()
        if self.metrics is not None:
            self.metrics.received_bytes.inc(received)
        return worker_pb2.PlaceDataResponse(
            partitions=len(placement.header.partitions), rows=placement.rows, bytes=received
        )

    @translate_errors
    def ComputeGradient(
        self, request: worker_pb2.ComputeGradientRequest, context: grpc.ServicerContext
    ) -> Any:
        params = wire.tensor_from_proto(request.params, "params", dtype="float64", shape=[None])
        if self.metrics is not None:
            self.metrics.received_bytes.inc(len(request.params.data))
        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        gradient, seconds = self.logic.compute(
            request.job_id, request.round, params, request.placement_epoch, cancelled
        )
        # The gradient fast path: serialized by wire with one copy (see add_worker_servicer).
        return wire.encode_gradient_response(
            request.job_id, request.round, self.logic.name, seconds, gradient
        )

    @translate_errors
    def DropJob(self, request: worker_pb2.DropJobRequest, context: grpc.ServicerContext) -> Any:
        return worker_pb2.DropJobResponse(dropped=self.logic.drop(request.job_id))


def _serialize(message: Any) -> bytes:
    """Responses that wire already serialized pass through; messages are serialized as usual."""
    return message if isinstance(message, bytes) else bytes(message.SerializeToString())


def add_worker_servicer(servicer: Any, server: grpc.Server) -> None:
    """Register the Worker service like the generated ``add_WorkerServicer_to_server`` does, but
    with a serializer that lets ComputeGradient return bytes made by
    :func:`edgecode.wire.encode_gradient_response` (same wire format, fewer copies)."""
    handlers = {
        "PlaceData": grpc.stream_unary_rpc_method_handler(
            servicer.PlaceData,
            request_deserializer=worker_pb2.PlaceDataRequest.FromString,
            response_serializer=_serialize,
        ),
        "ComputeGradient": grpc.unary_unary_rpc_method_handler(
            servicer.ComputeGradient,
            request_deserializer=worker_pb2.ComputeGradientRequest.FromString,
            response_serializer=_serialize,
        ),
        "DropJob": grpc.unary_unary_rpc_method_handler(
            servicer.DropJob,
            request_deserializer=worker_pb2.DropJobRequest.FromString,
            response_serializer=_serialize,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("edgecode.v1.Worker", handlers),)
    )
