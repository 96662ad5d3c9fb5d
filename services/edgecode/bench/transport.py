"""Transport throughput, side by side in one run on loopback: an 8 MB float64 gradient over one
edgecode RPC (a worker's ComputeGradient, served and parsed exactly as the worker and the edge do,
through ``wire``'s gradient fast path, validation included),
the same raw bytes over a bare gRPC call (identity serializers, no protobuf), and over a raw TCP
socket."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from concurrent import futures
from typing import Any

import grpc
import numpy as np

from edgecode import wire
from edgecode.runtime.memory import tune_allocator
from edgecode.runtime.server import channel_options, create_server
from edgecode.v1 import worker_pb2
from edgecode.worker.service import add_worker_servicer

RAW_METHOD = "/bench.Raw/Echo"


class _GradientServicer:
    """Answers ComputeGradient with a prepared gradient, serialized per call like a worker does."""

    def __init__(self, gradient: np.ndarray) -> None:
        self._gradient = gradient

    def ComputeGradient(self, request: Any, context: grpc.ServicerContext) -> bytes:
        return wire.encode_gradient_response(
            request.job_id, request.round, "bench", 0.001, self._gradient
        )

    def PlaceData(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise NotImplementedError

    def DropJob(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise NotImplementedError


def _raw_server(payload: bytes) -> tuple[grpc.Server, int]:
    handler = grpc.method_handlers_generic_handler(
        "bench.Raw", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: payload)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=channel_options())
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _tcp_server(payload: bytes) -> tuple[socket.socket, int, threading.Thread]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            while connection.recv(1):
                connection.sendall(payload)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, port, thread


def bench_transport(n_floats: int = 1_000_000, repeats: int = 15, seed: int = 0) -> dict[str, Any]:
    tune_allocator()  # as every edgecode service does at start
    gradient = np.random.default_rng(seed).standard_normal(n_floats)
    payload = gradient.tobytes()
    size = len(payload)

    service = create_server(
        [(add_worker_servicer, _GradientServicer(gradient), "edgecode.v1.Worker")]
    )
    service.server.start()
    raw_server, raw_port = _raw_server(payload)
    listener, tcp_port, _ = _tcp_server(payload)

    edge_channel = grpc.insecure_channel(f"127.0.0.1:{service.port}", options=channel_options())
    compute = edge_channel.unary_unary(  # exactly what an edge aggregator does
        "/edgecode.v1.Worker/ComputeGradient",
        request_serializer=worker_pb2.ComputeGradientRequest.SerializeToString,
        response_deserializer=wire.decode_gradient_response,
    )
    raw_channel = grpc.insecure_channel(f"127.0.0.1:{raw_port}", options=channel_options())
    raw_call = raw_channel.unary_unary(
        RAW_METHOD, request_serializer=None, response_deserializer=None
    )
    tcp = socket.create_connection(("127.0.0.1", tcp_port))
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = bytearray(size)

    def edgecode_call() -> None:
        response = compute(worker_pb2.ComputeGradientRequest(job_id="bench", round=1), timeout=30)
        assert response.gradient.shape == (n_floats,)

    def raw_grpc_call() -> None:
        raw_call(b"x", timeout=30)

    def tcp_call() -> None:
        tcp.sendall(b"x")
        view = memoryview(buffer)
        received = 0
        while received < size:
            received += tcp.recv_into(view[received:], size - received)

    calls = {"edgecode_rpc": edgecode_call, "bare_grpc": raw_grpc_call, "raw_tcp": tcp_call}
    times: dict[str, list[float]] = {name: [] for name in calls}
    try:
        for call in calls.values():
            call()  # warm up connections
        for _ in range(repeats):  # interleaved so machine noise hits all three alike
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    finally:
        tcp.close()
        listener.close()
        edge_channel.close()
        raw_channel.close()
        raw_server.stop(0)
        service.server.stop(0)
    throughput = {name: size / statistics.median(samples) / 1e9 for name, samples in times.items()}
    return {
        "bytes": size,
        "throughput_gb_per_s": throughput,
        "edgecode_over_bare_grpc": throughput["edgecode_rpc"] / throughput["bare_grpc"],
        "edgecode_over_raw_tcp": throughput["edgecode_rpc"] / throughput["raw_tcp"],
        "median_ms": {name: 1e3 * statistics.median(samples) for name, samples in times.items()},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(bench_transport(), indent=2))
