"""The worker's gRPC servicer (thin: decode, call the logic, encode)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from edgecode import wire
from edgecode.errors import InvalidInput
from edgecode.runtime.errors import translate_errors
from edgecode.v1 import worker_pb2, worker_pb2_grpc
from edgecode.worker.logic import PlacementHeader, WorkerLogic
from edgecode.worker.matrix import BlockHeader, MatrixWorker


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


def block_header_from_proto(message: worker_pb2.BlockHeader) -> BlockHeader:
    return BlockHeader(
        job_id=message.job_id,
        worker_index=int(message.worker_index),
        rows=int(message.rows),
        cols=int(message.cols),
        nnz=int(message.nnz),
        epoch=int(message.placement_epoch),
        work_fraction=float(message.work_fraction),
    )


@dataclass
class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    logic: WorkerLogic
    metrics: Any = None
    #: matrix jobs (coded sparse blocks); a default one shares the worker's straggle config
    matrix: MatrixWorker | None = None

    def __post_init__(self) -> None:
        if self.matrix is None:
            self.matrix = MatrixWorker(
                self.logic.name, self.logic.straggle, np.random.default_rng(0), self.metrics
            )

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
        assert self.matrix is not None
        dropped_block = self.matrix.drop(request.job_id)
        return worker_pb2.DropJobResponse(dropped=self.logic.drop(request.job_id) or dropped_block)

    @translate_errors
    def PlaceBlock(
        self,
        request_iterator: Iterator[worker_pb2.PlaceBlockRequest],
        context: grpc.ServicerContext,
    ) -> Any:
        assert self.matrix is not None
        builder = None
        received = 0
        for message in request_iterator:
            received += message.ByteSize()
            if message.HasField("header"):
                if builder is not None:
                    raise InvalidInput("block: a second header arrived")
                builder = self.matrix.begin(block_header_from_proto(message.header))
                continue
            if builder is None:
                raise InvalidInput("block: the first message must be the header")
            rows = wire.csr_from_proto(message.chunk.rows, f"block rows {message.chunk.first_row}")
            builder.add(int(message.chunk.first_row), rows)
        if builder is None:
            raise InvalidInput("block: empty stream")
        if not context.is_active():
            raise InvalidInput("block: the call ended before it completed")
        block = builder.finish()
        if self.metrics is not None:
            self.metrics.received_bytes.inc(received)
            self.metrics.block_bytes.inc(received)
        return worker_pb2.PlaceBlockResponse(
            rows=block.header.rows, nnz=int(block.matrix.nnz), bytes=received
        )

    @translate_errors
    def Multiply(self, request: worker_pb2.MultiplyRequest, context: grpc.ServicerContext) -> Any:
        assert self.matrix is not None
        operand = wire.tensor_from_proto(request.operand, "operand", dtype="float64")
        if self.metrics is not None:
            self.metrics.received_bytes.inc(len(request.operand.data))
        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        index, product, seconds = self.matrix.multiply(
            request.job_id, request.sequence, request.placement_epoch, operand, cancelled
        )
        response = worker_pb2.MultiplyResponse(
            job_id=request.job_id,
            sequence=request.sequence,
            worker=self.matrix.name,
            worker_index=index,
            compute_seconds=seconds,
        )
        wire.tensor_to_proto(product, out=response.product)
        return response


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
    if hasattr(servicer, "PlaceBlock"):  # matrix jobs (test doubles may serve gradients only)
        handlers["PlaceBlock"] = grpc.stream_unary_rpc_method_handler(
            servicer.PlaceBlock,
            request_deserializer=worker_pb2.PlaceBlockRequest.FromString,
            response_serializer=_serialize,
        )
        handlers["Multiply"] = grpc.unary_unary_rpc_method_handler(
            servicer.Multiply,
            request_deserializer=worker_pb2.MultiplyRequest.FromString,
            response_serializer=_serialize,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("edgecode.v1.Worker", handlers),)
    )
