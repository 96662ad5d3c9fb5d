"""Transport throughput, side by side in one run on loopback: an 8 MB float64 gradient over one
edgecode RPC (a worker's ComputeGradient, served and parsed exactly as the worker and the edge do,
through ``wire``'s gradient fast path, validation included),
the same raw bytes over a bare gRPC call (identity serializers, no protobuf), and over a raw TCP
socket; and the first two again over mutual TLS (the edgecode server with its authorization
interceptor, as every service runs by default; the bare gRPC server with the same credentials and
no interceptor), so ``edgecode_tls_over_bare_tls_grpc`` is the cost of edgecode over TLS gRPC and
``tls_over_plaintext`` that of TLS itself."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import numpy as np

from edgecode import wire
from edgecode.runtime.certs import CertificateAuthority, Identity
from edgecode.runtime.memory import tune_allocator
from edgecode.runtime.security import Tls
from edgecode.runtime.server import channel_options, create_server, make_channel
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


def _raw_server(payload: bytes, tls: Tls | None = None) -> tuple[grpc.Server, int]:
    handler = grpc.method_handlers_generic_handler(
        "bench.Raw", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: payload)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=channel_options())
    server.add_generic_rpc_handlers((handler,))
    address = "127.0.0.1:0"
    port = (
        server.add_secure_port(address, tls.server_credentials())
        if tls is not None
        else server.add_insecure_port(address)
    )
    server.start()
    return server, port


def _bench_tls() -> tuple[Tls, Tls]:
    """(a worker's, an edge's) material from a fresh in-memory CA."""
    ca = CertificateAuthority.create("bench CA", days=1)
    made = [
        ca.issue(Identity(role, f"bench-{role}"), ips=["127.0.0.1"], days=1)
        for role in ("worker", "edge")
    ]
    worker, edge = (Tls.from_pem(ca.cert_pem, m.cert_pem, m.key_pem) for m in made)
    return worker, edge


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


def _grpc_calls(
    gradient: np.ndarray, payload: bytes
) -> tuple[dict[str, Callable[[], None]], Callable[[], None]]:
    """The four gRPC paths (edgecode and bare, plaintext and mTLS) as calls, and a close."""
    servicer = _GradientServicer(gradient)
    worker_tls, edge_tls = _bench_tls()
    registration = [(add_worker_servicer, servicer, "edgecode.v1.Worker")]
    services = [create_server(registration), create_server(registration, tls=worker_tls)]
    for service in services:
        service.server.start()
    raw_servers = [_raw_server(payload), _raw_server(payload, worker_tls)]
    channels = [
        make_channel(f"127.0.0.1:{services[0].port}"),
        make_channel(f"127.0.0.1:{services[1].port}", edge_tls),
        make_channel(f"127.0.0.1:{raw_servers[0][1]}"),
        make_channel(f"127.0.0.1:{raw_servers[1][1]}", edge_tls),
    ]

    def gradient_call(channel: grpc.Channel) -> Callable[[], None]:
        compute = channel.unary_unary(  # exactly what an edge aggregator does
            "/edgecode.v1.Worker/ComputeGradient",
            request_serializer=worker_pb2.ComputeGradientRequest.SerializeToString,
            response_deserializer=wire.decode_gradient_response,
        )

        def call() -> None:
            request = worker_pb2.ComputeGradientRequest(job_id="bench", round=1)
            assert compute(request, timeout=30).gradient.shape == gradient.shape

        return call

    def raw_call(channel: grpc.Channel) -> Callable[[], None]:
        echo = channel.unary_unary(RAW_METHOD, request_serializer=None, response_deserializer=None)

        def call() -> None:
            echo(b"x", timeout=30)

        return call

    def close() -> None:
        for channel in channels:
            channel.close()
        for server in [s.server for s in services] + [r[0] for r in raw_servers]:
            server.stop(0)

    calls = {
        "edgecode_rpc": gradient_call(channels[0]),
        "bare_grpc": raw_call(channels[2]),
        "edgecode_rpc_mtls": gradient_call(channels[1]),
        "bare_grpc_mtls": raw_call(channels[3]),
    }
    return calls, close


def bench_transport(n_floats: int = 1_000_000, repeats: int = 15, seed: int = 0) -> dict[str, Any]:
    tune_allocator()  # as every edgecode service does at start
    gradient = np.random.default_rng(seed).standard_normal(n_floats)
    payload = gradient.tobytes()
    size = len(payload)
    calls, close = _grpc_calls(gradient, payload)
    listener, tcp_port, _ = _tcp_server(payload)
    tcp = socket.create_connection(("127.0.0.1", tcp_port))
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = bytearray(size)

    def tcp_call() -> None:
        tcp.sendall(b"x")
        view = memoryview(buffer)
        received = 0
        while received < size:
            received += tcp.recv_into(view[received:], size - received)

    calls["raw_tcp"] = tcp_call
    times: dict[str, list[float]] = {name: [] for name in calls}
    try:
        for call in calls.values():
            call()  # warm up connections
        for _ in range(repeats):  # interleaved so machine noise hits all of them alike
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    finally:
        tcp.close()
        listener.close()
        close()
    throughput = {name: size / statistics.median(samples) / 1e9 for name, samples in times.items()}
    return {
        "bytes": size,
        "throughput_gb_per_s": throughput,
        "edgecode_over_bare_grpc": throughput["edgecode_rpc"] / throughput["bare_grpc"],
        "edgecode_over_raw_tcp": throughput["edgecode_rpc"] / throughput["raw_tcp"],
        "edgecode_tls_over_bare_tls_grpc": (
            throughput["edgecode_rpc_mtls"] / throughput["bare_grpc_mtls"]
        ),
        "tls_over_plaintext": throughput["edgecode_rpc_mtls"] / throughput["edgecode_rpc"],
        "median_ms": {name: 1e3 * statistics.median(samples) for name, samples in times.items()},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(bench_transport(), indent=2))
