"""The edge's gRPC client of one job's workers: their gradients on the zero-copy gradient path,
on one long-lived ComputeGradients stream per worker (:mod:`edgecode.runtime.conversations`), or
a ComputeGradient call per worker per round (``streams=False``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
import numpy as np

from edgecode import wire
from edgecode.rounds import Message
from edgecode.runtime.conversations import Conversation, StreamFailed, Ticket
from edgecode.runtime.security import Tls
from edgecode.runtime.server import make_channel
from edgecode.v1 import worker_pb2


class _GradientCall:
    """A grpc future (or a conversation's ticket) whose result is the worker's
    :class:`~edgecode.rounds.Message`."""

    def __init__(self, future: grpc.Future | Ticket, worker: str) -> None:
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


def _answer(data: bytes) -> tuple[int, Any, BaseException | None, bool]:
    """A ComputeGradients answer: (sequence, parsed gradient response or None, error, last)."""
    head = wire.stream_answer(data)
    if head.error_code:
        return head.sequence, None, StreamFailed.from_number(head.error_code, head.error), True
    try:
        return head.sequence, wire.decode_gradient_response(data), None, True
    except Exception as exc:  # a malformed gradient fails its round, not the stream
        return head.sequence, None, exc, True


def _cancel_message(sequence: int) -> bytes:
    return bytes(
        worker_pb2.ComputeGradientRequest(cancel=True, sequence=sequence).SerializeToString()
    )


def _sequence(sequence: int) -> bytes:
    """Field 6 (sequence) of ComputeGradientRequest, serialized."""
    return bytes(worker_pb2.ComputeGradientRequest(sequence=sequence).SerializeToString())


class GrpcWorkerClient:
    """Channels to one job's workers (name order as configured). The names and addresses come
    from ConfigureJob, which only the master may call (its authenticated membership).

    ``streams``: each worker's gradients travel on one long-lived ComputeGradients stream
    (opened at the first round, re-opened after it breaks); otherwise one ComputeGradient call
    per worker per round."""

    def __init__(
        self,
        names: Sequence[str],
        addresses: Sequence[str],
        tls: Tls | None = None,
        streams: bool = True,
    ) -> None:
        self._names = list(names)
        self._channels = [make_channel(a, tls, warm=True) for a in addresses]
        self._conversations = [
            Conversation(
                channel.stream_stream(
                    "/edgecode.v1.Worker/ComputeGradients",
                    request_serializer=bytes,
                    response_deserializer=bytes,
                ),
                _answer,
                _cancel_message,
            )
            for channel in (self._channels if streams else [])
        ]
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
        if self._conversations:
            encoded = request.SerializeToString()
            # a message's fields may come in any order and the last sequence wins: appended
            return [
                _GradientCall(conversation.send(lambda seq: encoded + _sequence(seq)), name)
                for name, conversation in zip(self._names, self._conversations, strict=True)
            ]
        return [
            _GradientCall(call.future(request, timeout=timeout), name)
            for name, call in zip(self._names, self._calls, strict=True)
        ]

    def close(self) -> None:
        for conversation in self._conversations:
            conversation.close()
        for channel in self._channels:
            channel.close()
