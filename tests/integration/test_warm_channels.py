"""Warm channels (runtime.server.keep_warm): one health watch held open per channel, so the
channel's call thread is started once and not once per round; re-opened when it ends, never
asked in a loop. Real servers on port 0."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgecode.master.transport import GrpcTransport
from edgecode.runtime.server import create_server, keep_warm, make_channel

TIMEOUT = 10.0
WATCH = "/grpc.health.v1.Health/Watch"


@pytest.fixture
def served() -> Iterator[str]:
    service = create_server([], port=0)
    service.server.start()
    service.set_serving(True)
    try:
        yield f"127.0.0.1:{service.port}"
    finally:
        service.server.stop(None).wait(TIMEOUT)


def _started_by_calls(
    monkeypatch: pytest.MonkeyPatch, channel: grpc.Channel, calls: int
) -> list[str]:
    """The names of the channel threads started while ``calls`` one-after-the-other calls
    ran (grpc's run their target through ``_run``; this test's servers name theirs ``rpc_N``
    and ``_serve``)."""
    started: list[str] = []
    start = threading.Thread.start

    def counted(thread: threading.Thread) -> None:
        if thread.name.endswith("(_run)"):
            started.append(thread.name)
        start(thread)

    check = health_pb2_grpc.HealthStub(channel).Check
    with monkeypatch.context() as patch:
        patch.setattr(threading.Thread, "start", counted)
        for _ in range(calls):
            response = check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
            future = check.future(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
            assert future.result().status == health_pb2.HealthCheckResponse.SERVING
    return started


def test_a_warm_channel_starts_its_call_thread_once(
    served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """grpc runs a channel's asynchronous calls on a thread it starts with the first call in
    flight and that exits with the last: cold, a new thread for (nearly) every call -- a call
    made before the last one's thread has noticed its end reuses it; warm, none after the
    first."""
    with make_channel(served) as cold:
        _started_by_calls(monkeypatch, cold, 3)
        cold_started = _started_by_calls(monkeypatch, cold, 5)
    with make_channel(served, warm=True) as warm:
        _started_by_calls(monkeypatch, warm, 3)
        warm_started = _started_by_calls(monkeypatch, warm, 5)
    assert len(cold_started) >= 1, cold_started
    assert warm_started == []


class _CountingHealth(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Counts Watch calls; each one ends after ``lasts`` seconds, or is UNIMPLEMENTED with
    ``lasts`` None. (It sends no message: a client's status waits for its unread messages,
    so a watch that is never read ends only when its connection does.)"""

    def __init__(self, lasts: float | None) -> None:
        self.watches = 0
        self._lasts = lasts
        self._lock = threading.Lock()

    def service(self, details: Any) -> Any:
        if details.method != WATCH:
            return None
        with self._lock:
            self.watches += 1
        if self._lasts is None:
            return None

        def watch(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            time.sleep(self._lasts)
            yield from ()

        return grpc.unary_stream_rpc_method_handler(
            watch,
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )


@pytest.fixture
def counting() -> Iterator[tuple[str, Any]]:
    def start(lasts: float | None) -> tuple[str, _CountingHealth]:
        handler = _CountingHealth(lasts)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", handler

    servers: list[grpc.Server] = []
    try:
        yield start  # type: ignore[misc]
    finally:
        for server in servers:
            server.stop(None).wait(TIMEOUT)


def _until(condition: Any, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_watch_that_ends_is_reopened_until_the_channel_closes(counting: Any) -> None:
    address, handler = counting(0.15)
    channel = make_channel(address)
    keep_warm(channel, min_seconds=0.1)
    _until(lambda: handler.watches >= 3)
    channel.close()
    time.sleep(0.2)  # a watch in flight when the channel closed ends without a successor
    settled = handler.watches
    time.sleep(0.5)
    assert handler.watches == settled


def test_a_refused_watch_is_not_asked_again(counting: Any) -> None:
    address, handler = counting(None)
    with make_channel(address) as channel:
        keep_warm(channel, min_seconds=5.0)
        _until(lambda: handler.watches >= 1)
        time.sleep(0.5)
        assert handler.watches == 1
    # ... and one that ends too soon after opening is not re-opened either
    address, handler = counting(0.0)
    with make_channel(address) as channel:
        keep_warm(channel, min_seconds=5.0)
        _until(lambda: handler.watches >= 1)
        time.sleep(0.5)
        assert handler.watches == 1


def test_the_masters_edge_channel_is_warm_even_when_a_health_check_made_it(
    served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The master's channel to an edge can first be made by a health check (cold); the round
    calls' stub then gets a channel made warm (it did not: every round started a thread; then
    the cold channel was warmed afterwards, without the warm channels' reconnect backoff).
    From then on every call to that peer shares the warm channel; the cold one stays usable
    until the transport closes."""
    made: list[bool] = []

    def recording(address: str, tls: object = None, warm: bool = False) -> grpc.Channel:
        made.append(warm)
        return make_channel(address, None, warm)

    monkeypatch.setattr("edgecode.master.transport.make_channel", recording)
    transport = GrpcTransport()
    try:
        cold = transport.channel(served)
        _started_by_calls(monkeypatch, cold, 3)
        assert len(_started_by_calls(monkeypatch, cold, 3)) >= 1
        transport.edge_stub(served)
        warm = transport.channel(served, warm=True)
        assert made == [False, True], made  # made warm, with the backoff cap
        assert warm is not cold and transport.channel(served) is warm  # one channel from now
        _started_by_calls(monkeypatch, warm, 1)
        assert _started_by_calls(monkeypatch, warm, 5) == []
        assert _started_by_calls(monkeypatch, cold, 1) is not None  # still open
    finally:
        transport.close()
    with pytest.raises(ValueError):  # closed with the transport
        _started_by_calls(monkeypatch, cold, 1)
