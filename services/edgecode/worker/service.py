"""The worker's gRPC servicer (thin: decode the request, call the logic, encode)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import numpy as np

from edgecode import wire
from edgecode.errors import InvalidInput
from edgecode.runtime.conversations import serve_conversation
from edgecode.runtime.errors import status_of, translate_errors, translate_stream_errors
from edgecode.v1 import worker_pb2, worker_pb2_grpc
from edgecode.worker.logic import PartitionReader, PlacementBuilder, WorkerLogic
from edgecode.worker.matrix import BlockBuilder, MatrixWorker

#: Most partitions one ReadPartitions call may ask for.
MAX_READ_PARTITIONS = 100_000


class ServicerMetrics(Protocol):
    """What the servicer itself records: payload bytes received."""

    def received(self, nbytes: int) -> None: ...

    def block_received(self, nbytes: int) -> None: ...


class _NoMetrics:
    def received(self, nbytes: int) -> None:
        pass

    def block_received(self, nbytes: int) -> None:
        pass


def _add_partition(builder: PlacementBuilder, chunk: worker_pb2.PartitionChunk) -> None:
    builder.add(*wire.partition_chunk_from_proto(chunk))


def _add_block_rows(builder: BlockBuilder, chunk: worker_pb2.BlockChunk) -> None:
    builder.add(
        int(chunk.first_row), wire.csr_from_proto(chunk.rows, f"block rows {chunk.first_row}")
    )


@dataclass
class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    """Worker RPCs: PlaceData, ComputeGradient, DropJob, PlaceBlock, Multiply."""

    logic: WorkerLogic
    metrics: ServicerMetrics = field(default_factory=_NoMetrics)
    #: matrix jobs (coded sparse blocks); a default one shares the worker's straggle config
    matrix: MatrixWorker | None = None
    #: reads partitions from other workers (shuffles); None = this worker cannot fetch
    reader: PartitionReader | None = None

    def __post_init__(self) -> None:
        if self.matrix is None:
            self.matrix = MatrixWorker(
                self.logic.name, self.logic.straggle, np.random.default_rng(0)
            )

    def _matrix(self) -> MatrixWorker:
        assert self.matrix is not None
        return self.matrix

    @translate_errors
    def PlaceData(
        self, request_iterator: Iterator[worker_pb2.PlaceDataRequest], context: grpc.ServicerContext
    ) -> worker_pb2.PlaceDataResponse:
        builder, received = wire.read_stream(
            request_iterator,
            "placement",
            lambda header: self.logic.begin_placement(wire.placement_header_from_proto(header)),
            _add_partition,
            context.is_active,
        )
        placement = builder.finish()
        self.metrics.received(received)
        return worker_pb2.PlaceDataResponse(
            partitions=len(placement.header.partitions), rows=placement.rows, bytes=received
        )

    @translate_errors
    def ComputeGradient(  # type: ignore[override]  # bytes: the fast path, see add_worker_servicer
        self, request: worker_pb2.ComputeGradientRequest, context: grpc.ServicerContext
    ) -> bytes:
        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        return self._gradient(request, cancelled)

    def ComputeGradients(  # type: ignore[override]  # bytes, as ComputeGradient
        self, requests: Iterator[worker_pb2.ComputeGradientRequest], context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        """ComputeGradient on one long-lived stream (:mod:`edgecode.runtime.conversations`):
        each answer echoes its request's sequence; a failed round is answered with its status
        code and message, and the stream goes on."""
        return serve_conversation(
            requests,
            lambda request, stop: [self._gradient(request, stop)],
            lambda request: int(request.sequence),
            lambda request: bool(request.cancel),
            self._gradient_error,
        )

    def _gradient(self, request: worker_pb2.ComputeGradientRequest, stop: threading.Event) -> bytes:
        params = wire.tensor_from_proto(request.params, "params", dtype="float64", shape=[None])
        self.metrics.received(params.nbytes)
        gradient, seconds = self.logic.compute(
            request.job_id, request.round, params, request.placement_epoch, stop
        )
        # The gradient fast path: serialized by wire with one copy (see add_worker_servicer);
        # the sequence (0 on a unary call) is written only on a stream.
        return wire.encode_gradient_response(
            request.job_id, request.round, self.logic.name, seconds, gradient, request.sequence
        )

    def _gradient_error(
        self, request: worker_pb2.ComputeGradientRequest, exc: BaseException
    ) -> bytes:
        code = status_of(exc)
        text = str(exc) if code is not None else "internal error in ComputeGradients"
        answer = worker_pb2.ComputeGradientResponse(
            job_id=request.job_id[:200],
            round=request.round,
            worker=self.logic.name,
            error_code=(code or grpc.StatusCode.INTERNAL).value[0],
            error=text[:1000],
            sequence=request.sequence,
        )
        return bytes(answer.SerializeToString())

    @translate_errors
    def DropJob(
        self, request: worker_pb2.DropJobRequest, context: grpc.ServicerContext
    ) -> worker_pb2.DropJobResponse:
        dropped_block = self._matrix().drop(request.job_id)
        return worker_pb2.DropJobResponse(dropped=self.logic.drop(request.job_id) or dropped_block)

    @translate_errors
    def FetchPlacement(
        self, request: worker_pb2.FetchPlacementRequest, context: grpc.ServicerContext
    ) -> worker_pb2.FetchPlacementResponse:
        if self.reader is None:
            raise InvalidInput("this worker cannot fetch partitions from other workers")
        header = wire.placement_header_from_proto(request.header)
        sources = {int(s.partition): s.address for s in request.sources}
        if len(sources) != len(request.sources):
            raise InvalidInput("fetch: a partition is named twice")
        placement, fetched, seconds = self.logic.fetch_placement(
            header, int(request.from_epoch), sources, self.reader
        )
        return worker_pb2.FetchPlacementResponse(
            partitions=len(placement.header.partitions), fetched_bytes=fetched, seconds=seconds
        )

    @translate_stream_errors
    def ReadPartitions(
        self, request: worker_pb2.ReadPartitionsRequest, context: grpc.ServicerContext
    ) -> Iterator[worker_pb2.PartitionChunk]:
        if len(request.partitions) > MAX_READ_PARTITIONS:
            raise InvalidInput(f"read: at most {MAX_READ_PARTITIONS} partitions per call")
        for j, features, labels in self.logic.partition_data(
            request.job_id, int(request.placement_epoch), [int(j) for j in request.partitions]
        ):
            yield from wire.partition_chunks(j, features, labels)

    @translate_errors
    def PlaceBlock(
        self,
        request_iterator: Iterator[worker_pb2.PlaceBlockRequest],
        context: grpc.ServicerContext,
    ) -> worker_pb2.PlaceBlockResponse:
        builder, received = wire.read_stream(
            request_iterator,
            "block",
            lambda header: self._matrix().begin(wire.block_header_from_proto(header)),
            _add_block_rows,
            context.is_active,
        )
        builder.finish()
        self.metrics.block_received(received)
        # finish() checked that exactly the header's rows and non-zeros arrived
        return worker_pb2.PlaceBlockResponse(
            rows=builder.header.rows, nnz=builder.header.nnz, bytes=received
        )

    @translate_errors
    def Multiply(
        self, request: worker_pb2.MultiplyRequest, context: grpc.ServicerContext
    ) -> worker_pb2.MultiplyResponse:
        operand = None
        if request.coded_rhs:  # A^T B: the placed coded B block is the operand
            if request.HasField("operand"):
                raise InvalidInput("multiply: send no operand with coded_rhs")
        else:
            operand = wire.tensor_from_proto(request.operand, "operand", dtype="float64")
            self.metrics.received(operand.nbytes)
        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        index, product, seconds = self._matrix().multiply(
            request.job_id,
            request.sequence,
            request.placement_epoch,
            operand,
            cancelled,
            int(request.code_index) if request.HasField("code_index") else None,
        )
        response = worker_pb2.MultiplyResponse(
            job_id=request.job_id,
            sequence=request.sequence,
            worker=self._matrix().name,
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
    if hasattr(servicer, "ComputeGradients"):  # the stream (test doubles may serve unary only)
        handlers["ComputeGradients"] = grpc.stream_stream_rpc_method_handler(
            servicer.ComputeGradients,
            request_deserializer=worker_pb2.ComputeGradientRequest.FromString,
            response_serializer=_serialize,
        )
    if hasattr(servicer, "FetchPlacement"):  # shuffles (test doubles may serve gradients only)
        handlers["FetchPlacement"] = grpc.unary_unary_rpc_method_handler(
            servicer.FetchPlacement,
            request_deserializer=worker_pb2.FetchPlacementRequest.FromString,
            response_serializer=_serialize,
        )
        handlers["ReadPartitions"] = grpc.unary_stream_rpc_method_handler(
            servicer.ReadPartitions,
            request_deserializer=worker_pb2.ReadPartitionsRequest.FromString,
            response_serializer=_serialize,
        )
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
