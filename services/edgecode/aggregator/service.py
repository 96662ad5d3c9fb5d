"""The edge aggregator's gRPC servicer (thin: decode the request, call the logic, encode)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from edgecode import wire
from edgecode.aggregator.logic import DECODE, FORWARD, AggregatorLogic
from edgecode.errors import InvalidInput
from edgecode.runtime.errors import translate_errors, translate_stream_errors
from edgecode.v1 import aggregator_pb2, aggregator_pb2_grpc

MODES = {aggregator_pb2.EDGE_MODE_DECODE: DECODE, aggregator_pb2.EDGE_MODE_FORWARD: FORWARD}


@dataclass
class AggregatorServicer(aggregator_pb2_grpc.AggregatorServicer):
    """Aggregator RPCs: ConfigureJob, RunRound, DropJob."""

    logic: AggregatorLogic

    @translate_errors
    def ConfigureJob(
        self, request: aggregator_pb2.ConfigureJobRequest, context: grpc.ServicerContext
    ) -> aggregator_pb2.ConfigureJobResponse:
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
            int(request.placement_epoch),
            int(request.message_rows),
            bool(request.verify),
            float(request.verify_slack_seconds),
        )
        return aggregator_pb2.ConfigureJobResponse(workers=count)

    @translate_stream_errors
    def RunRound(
        self, request: aggregator_pb2.RunRoundRequest, context: grpc.ServicerContext
    ) -> Iterator[aggregator_pb2.EdgeMessage]:
        params = wire.tensor_from_proto(request.params, "params", dtype="float64", shape=[None])
        active = threading.Event()
        active.set()
        context.add_callback(active.clear)
        for result in self.logic.run_round(
            request.job_id,
            request.round,
            params,
            request.placement_epoch,
            active.is_set,
            context.add_callback,
        ):
            message = aggregator_pb2.EdgeMessage(
                job_id=request.job_id,
                round=request.round,
                edge=self.logic.name,
                worker=result.worker,
                combined=result.combined,
                timings=[wire.timing_to_proto(t) for t in result.timings],
                suspects=result.suspects,
            )
            wire.tensor_to_proto(result.vector, out=message.vector)
            yield message

    @translate_errors
    def DropJob(
        self, request: aggregator_pb2.DropEdgeJobRequest, context: grpc.ServicerContext
    ) -> aggregator_pb2.DropEdgeJobResponse:
        return aggregator_pb2.DropEdgeJobResponse(dropped=self.logic.drop(request.job_id))
