"""One long-lived stream per peer (edgecode.runtime.conversations) over a real gRPC server:
answers matched by sequence, cancels and newer requests stop the peer's work, a failed request
fails alone, a broken or unreadable stream fails what was open and the next request re-opens."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest

from edgecode.aggregator.transport import GrpcWorkerClient
from edgecode.errors import InvalidInput
from edgecode.records import PlacementHeader
from edgecode.runtime.conversations import (
    MAX_QUEUED,
    Conversation,
    StreamFailed,
    serve_conversation,
)
from edgecode.runtime.metrics import WorkerMetrics
from edgecode.worker.logic import WorkerLogic
from edgecode.worker.service import WorkerServicer, add_worker_servicer

pytestmark = pytest.mark.timeout(60)

METHOD = "/test.Chat/Talk"
WAIT = 10.0


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


class Peer:
    """A chat peer: ``{"seq", "op", "value"}`` requests; op "add" answers value + 1, "hold"
    waits until stopped (then answers "stopped"), "fail" raises InvalidInput, "abort" ends the
    whole call, "garbage" answers bytes without a sequence."""

    def __init__(self) -> None:
        self.stopped: list[int] = []
        self.started: list[int] = []
        self.calls = 0
        self.holding = threading.Event()

    def talk(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self.calls += 1
        aborted: list[int] = []

        def handle(raw: bytes, stop: threading.Event) -> bytes:
            request = json.loads(raw)
            self.started.append(request["seq"])
            if request["op"] == "hold":
                self.holding.set()
                stop.wait(WAIT)
                self.stopped.append(request["seq"])
                return _encode({"seq": request["seq"], "value": "stopped"})
            if request["op"] == "fail":
                raise InvalidInput("this request is bad")
            if request["op"] == "abort":
                aborted.append(request["seq"])
                raise _Abort
            if request["op"] == "garbage":
                return b"not json"
            if request["op"] == "many":  # a feed: three values, then the last (empty) answer
                return [
                    *(
                        _encode({"seq": request["seq"], "value": v, "last": False})
                        for v in range(3)
                    ),
                    _encode({"seq": request["seq"], "last": True}),
                ]
            return _encode({"seq": request["seq"], "value": request["value"] + 1})

        def on_error(raw: bytes, exc: BaseException) -> bytes:
            if isinstance(exc, _Abort):
                context.abort(grpc.StatusCode.ABORTED, "the peer ended the call")
            return _encode({"seq": json.loads(raw)["seq"], "error": str(exc)})

        def answers(raw: bytes, stop: threading.Event) -> Any:
            answer = handle(raw, stop)
            return answer if isinstance(answer, list) else [answer]

        return serve_conversation(
            requests,
            answers,
            lambda raw: int(json.loads(raw)["seq"]),
            lambda raw: json.loads(raw)["op"] == "cancel",
            on_error,
        )


class _Abort(Exception):
    pass


def _parse(raw: bytes) -> tuple[int, Any, BaseException | None, bool]:
    answer = json.loads(raw)  # raises on garbage: the call cannot be read further
    if "error" in answer:
        failure = StreamFailed(grpc.StatusCode.INVALID_ARGUMENT, answer["error"])
        return answer["seq"], None, failure, True
    return answer["seq"], answer.get("value"), None, answer.get("last", True)


@pytest.fixture
def chat() -> Iterator[tuple[Peer, Conversation]]:
    peer = Peer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.stream_stream_rpc_method_handler(peer.talk)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Chat", {"Talk": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    conversation = Conversation(
        channel.stream_stream(METHOD, request_serializer=bytes, response_deserializer=bytes),
        _parse,
        lambda seq: _encode({"seq": seq, "op": "cancel"}),
    )
    try:
        yield peer, conversation
    finally:
        conversation.close()
        channel.close()
        server.stop(None)


def _send(conversation: Conversation, op: str, value: int = 0) -> Any:
    return conversation.send(lambda seq: _encode({"seq": seq, "op": op, "value": value}))


def test_answers_come_back_to_their_requests_on_one_call(chat: Any) -> None:
    peer, conversation = chat
    answers = [_send(conversation, "add", value).result(timeout=WAIT) for value in range(20)]
    assert answers == list(range(1, 21))
    assert peer.calls == 1  # one call carried all twenty


def test_a_burst_leaves_no_request_unanswered(chat: Any) -> None:
    """Each request supersedes the ones before it: the last is answered, every earlier one
    with its value or as superseded -- none is left waiting (within MAX_QUEUED)."""
    _peer, conversation = chat
    tickets = [_send(conversation, "add", value) for value in range(MAX_QUEUED)]
    assert tickets[-1].result(timeout=WAIT) == MAX_QUEUED
    for value, ticket in enumerate(tickets[:-1]):
        try:
            assert ticket.result(timeout=WAIT) == value + 1
        except StreamFailed as exc:
            assert "superseded" in exc.details()


def test_a_newer_request_stops_the_one_being_answered(chat: Any) -> None:
    peer, conversation = chat
    held = _send(conversation, "hold")
    assert peer.holding.wait(WAIT)
    newer = _send(conversation, "add", 1)
    assert newer.result(timeout=WAIT) == 2
    assert peer.stopped == [held.sequence]
    assert held.result(timeout=WAIT) == "stopped"  # answered, after it was stopped


def test_a_cancel_stops_the_peer_and_fails_the_ticket_at_once(chat: Any) -> None:
    peer, conversation = chat
    held = _send(conversation, "hold")
    assert peer.holding.wait(WAIT)
    assert held.cancel()
    with pytest.raises(StreamFailed) as info:
        held.result(timeout=0)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    assert _send(conversation, "add", 5).result(timeout=WAIT) == 6
    assert peer.stopped == [held.sequence]
    assert not held.cancel()  # once


def test_a_request_cancelled_while_queued_is_never_answered(chat: Any) -> None:
    peer, conversation = chat
    held = _send(conversation, "hold")
    assert peer.holding.wait(WAIT)
    queued = _send(conversation, "add", 1)  # supersedes the held one
    queued.cancel()
    assert _send(conversation, "add", 2).result(timeout=WAIT) == 3
    assert held.sequence in peer.stopped
    assert queued.sequence not in peer.started  # dropped unstarted, by one side or the other


def test_a_feed_yields_every_answer_then_ends(chat: Any) -> None:
    _peer, conversation = chat
    for _ in range(3):
        feed = conversation.send(lambda seq: _encode({"seq": seq, "op": "many"}), feed=True)
        assert list(feed) == [0, 1, 2]
    assert _send(conversation, "add", 1).result(timeout=WAIT) == 2


def test_a_cancelled_feed_ends_with_cancelled(chat: Any) -> None:
    peer, conversation = chat
    feed = conversation.send(lambda seq: _encode({"seq": seq, "op": "hold"}), feed=True)
    assert peer.holding.wait(WAIT)
    feed.cancel()
    with pytest.raises(StreamFailed) as info:
        list(feed)
    assert info.value.code() == grpc.StatusCode.CANCELLED


def test_a_failed_request_fails_alone_and_the_stream_goes_on(chat: Any) -> None:
    peer, conversation = chat
    bad = _send(conversation, "fail")
    with pytest.raises(StreamFailed, match="this request is bad"):
        bad.result(timeout=WAIT)
    assert _send(conversation, "add", 1).result(timeout=WAIT) == 2
    assert peer.calls == 1


def test_a_broken_call_fails_what_was_open_and_the_next_request_reopens(chat: Any) -> None:
    peer, conversation = chat
    aborted = _send(conversation, "abort")
    with pytest.raises(grpc.RpcError) as info:
        aborted.result(timeout=WAIT)
    assert info.value.code() == grpc.StatusCode.ABORTED
    assert _send(conversation, "add", 1).result(timeout=WAIT) == 2
    assert peer.calls == 2


def test_an_unreadable_answer_ends_the_call(chat: Any) -> None:
    peer, conversation = chat
    garbled = _send(conversation, "garbage")
    with pytest.raises(json.JSONDecodeError):
        garbled.result(timeout=WAIT)
    assert _send(conversation, "add", 1).result(timeout=WAIT) == 2
    assert peer.calls == 2


def test_close_fails_open_tickets_and_refuses_new_ones(chat: Any) -> None:
    peer, conversation = chat
    held = _send(conversation, "hold")
    assert peer.holding.wait(WAIT)
    conversation.close()
    with pytest.raises(grpc.RpcError) as info:
        held.result(timeout=WAIT)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    with pytest.raises(StreamFailed):
        _send(conversation, "add").result(timeout=WAIT)


def test_the_edge_gets_real_workers_gradients_and_errors_on_the_stream(
    inproc_servers: Any,
) -> None:
    """The real worker servicer and the edge's client: a gradient equal to the worker's own,
    a stale epoch refused by name for that round only, a superseded round stopped."""
    logic = WorkerLogic("w0", metrics=WorkerMetrics())
    header = PlacementHeader(
        job_id="job",
        model="least_squares",
        n_features=2,
        n_classes=1,
        partitions=(0,),
        coefficients=(1.0,),
        l2=0.0,
        n_partitions=1,
        epoch=1,
        rows=(4,),
    )
    builder = logic.begin_placement(header)
    rng = np.random.default_rng(0)
    builder.add(0, rng.standard_normal((4, 2)), rng.standard_normal(4))
    builder.finish()
    servicer = WorkerServicer(logic)
    address = inproc_servers.serve([(add_worker_servicer, servicer, "edgecode.v1.Worker")])
    client = GrpcWorkerClient(["w0"], [address])
    try:
        params = np.array([0.5, -1.0, 0.25])
        (call,) = client.compute("job", 1, params, 1, timeout=WAIT)
        message = call.result(timeout=WAIT)
        expected, _ = WorkerLogic.compute(
            logic, "job", 2, params, 1, threading.Event()
        )  # round 2: the same data and params
        assert message.sender == "w0"
        np.testing.assert_array_equal(message.vector, expected)
        (stale,) = client.compute("job", 3, params, 7, timeout=WAIT)
        with pytest.raises(grpc.RpcError) as info:
            stale.result(timeout=WAIT)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        (again,) = client.compute("job", 4, params, 1, timeout=WAIT)
        np.testing.assert_array_equal(again.result(timeout=WAIT).vector, expected)
    finally:
        client.close()


def test_a_flood_of_requests_keeps_at_most_max_queued_waiting() -> None:
    """A caller that sends 100 requests while one is answered: the peer keeps only the newest
    MAX_QUEUED (each answered as superseded), the older ones are dropped unanswered -- its
    memory does not grow with the flood."""
    started, release = threading.Event(), threading.Event()

    def requests() -> Iterator[int]:
        yield 0
        assert started.wait(WAIT)
        yield from range(1, 101)
        release.set()  # every request has been read by now

    def handle(request: int, stop: threading.Event) -> list[tuple[str, int]]:
        started.set()
        assert release.wait(WAIT)
        return [("done", request)]

    answers = list(
        serve_conversation(
            requests(), handle, lambda r: r, lambda r: False, lambda r, exc: ("superseded", r)
        )
    )
    assert answers[0] == ("done", 0)
    assert answers[1:] == [("superseded", r) for r in range(101 - MAX_QUEUED, 101)]
