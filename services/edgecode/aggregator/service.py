"""The edge aggregator's gRPC servicer (thin: decode the request, call the logic, encode)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from edgecode import wire
from edgecode.aggregator.logic import DECODE, FORWARD, AggregatorLogic
from edgecode.errors import InvalidInput
from edgecode.runtime.conversations import Stop, serve_conversation
from edgecode.runtime.errors import status_of, translate_errors, translate_stream_errors
from edgecode.v1 import aggregator_pb2, aggregator_pb2_grpc

MODES = {aggregator_pb2.EDGE_MODE_DECODE: DECODE, aggregator_pb2.EDGE_MODE_FORWARD: FORWARD}


@dataclass
class AggregatorServicer(aggregator_pb2_grpc.AggregatorServicer):
    """Aggregator RPCs: ConfigureJob, RunRound, RunRounds, DropJob."""

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
        active = threading.Event()
        active.set()
        context.add_callback(active.clear)
        yield from self._round(request, active.is_set, context.add_callback)

    def RunRounds(
        self,
        requests: Iterator[aggregator_pb2.RunRoundRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[aggregator_pb2.EdgeMessage]:
        """RunRound on one long-lived stream (:mod:`edgecode.runtime.conversations`): every
        message echoes its request's sequence, a round's last one says so (FORWARD mode: an
        empty one after the vectors), a failed round ends with its status code and message."""
        return serve_conversation(
            requests,
            self._streamed_round,
            lambda request: int(request.sequence),
            lambda request: bool(request.cancel),
            self._round_error,
        )

    def _streamed_round(
        self, request: aggregator_pb2.RunRoundRequest, stop: Stop
    ) -> Iterator[aggregator_pb2.EdgeMessage]:
        ended = False
        for message in self._round(request, lambda: not stop.is_set(), stop.add_callback):
            message.sequence = request.sequence
            ended = message.last = not message.worker  # DECODE mode: the round's one message
            yield message
        if not ended:
            yield self._header(request, last=True)

    def _round_error(
        self, request: aggregator_pb2.RunRoundRequest, exc: BaseException
    ) -> aggregator_pb2.EdgeMessage:
        code = status_of(exc)
        message = self._header(request, last=True)
        message.error_code = (code or grpc.StatusCode.INTERNAL).value[0]
        message.error = (str(exc) if code is not None else "internal error in RunRounds")[:1000]
        return message

    def _header(
        self, request: aggregator_pb2.RunRoundRequest, last: bool
    ) -> aggregator_pb2.EdgeMessage:
        return aggregator_pb2.EdgeMessage(
            job_id=request.job_id[:200],
            round=request.round,
            edge=self.logic.name,
            sequence=request.sequence,
            last=last,
        )

    def _round(
        self,
        request: aggregator_pb2.RunRoundRequest,
        is_active: Callable[[], bool],
        on_cancel: Callable[[Callable[[], None]], object],
    ) -> Iterator[aggregator_pb2.EdgeMessage]:
        params = wire.tensor_from_proto(request.params, "params", dtype="float64", shape=[None])
        for result in self.logic.run_round(
            request.job_id, request.round, params, request.placement_epoch, is_active, on_cancel
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
