"""One server factory for every service: limits, keepalive, health and reflection, mutual TLS
with the authorization interceptor (:mod:`edgecode.runtime.security`); and the one channel
factory every client uses."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edgecode.runtime.security import Authorizer, Tls

log = logging.getLogger(__name__)

#: Large enough for a placed partition chunk or a ~16M-float64 gradient; explicit so a bigger
#: message is refused with RESOURCE_EXHAUSTED instead of exhausting memory.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Edge devices sit behind NATs that drop idle connections: ping every 30 s.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Allow the client pings above without the server treating them as abuse.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


@dataclass
class Service:
    """A built, not yet started, server."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    names: tuple[str, ...]

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.names):
            self.health.set(name, status)


class HealthServicer(health.HealthServicer):  # type: ignore[misc]  # grpc is untyped
    """grpc's health servicer, with a watch's end handled off grpc's polling thread.

    The stock servicer sends a watcher's messages while holding its lock (a new ``Watch``,
    ``set``), and such a send waits for the server's polling thread; the end of another watch
    runs a callback ON that thread which takes the same lock: both wait forever, and the server
    stops serving (seen when an edge's warm channels were replaced while a server stopped). Here
    the callback only starts a thread that takes the lock."""

    def _on_close_callback(self, send_response_callback: Any, service: str) -> Any:
        forget = super()._on_close_callback(send_response_callback, service)

        def callback() -> None:
            threading.Thread(target=forget, name="health-watch-end", daemon=True).start()

        return callback


def create_server(
    register: Sequence[tuple[Callable[[Any, grpc.Server], None], Any, str]],
    host: str = "127.0.0.1",
    port: int = 0,
    threads: int = 32,
    tls: Tls | None = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> Service:
    """Build a server with the given servicers, health and reflection, bound to ``host:port``
    (port 0 picks a free port; the bound one is returned). ``register`` holds
    ``(add_XServicer_to_server, servicer, full_service_name)`` triples.

    With ``tls`` the port is mutual TLS (a client certificate of the same CA is required) and
    every call passes the :class:`~edgecode.runtime.security.Authorizer`; without it the port is
    plaintext and open (the roles' ``run`` refuse that unless ``--insecure`` was given)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rpc"),
        interceptors=[Authorizer()] if tls is not None else None,
        options=channel_options(max_message_bytes),
    )
    names = []
    for add, servicer, name in register:
        add(servicer, server)
        names.append(name)
    health_servicer = HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = f"{host}:{port}"
    bound = (
        server.add_secure_port(address, tls.server_credentials())
        if tls
        else server.add_insecure_port(address)
    )
    if bound == 0:
        raise OSError(f"could not bind {address}")
    service = Service(server=server, port=bound, health=health_servicer, names=tuple(names))
    service.set_serving(False)
    return service


def serve_until_signal(
    service: Service, grace_seconds: float = 2.0, on_stop: Callable[[], None] | None = None
) -> int:
    """With the server started and SERVING, block until SIGTERM/SIGINT; then NOT_SERVING, run
    ``on_stop``, ``server.stop(grace)`` and return the exit code 0."""
    stop = threading.Event()

    def handle(signum: int, _frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    stop.wait()
    service.set_serving(False)
    if on_stop is not None:
        on_stop()
    service.server.stop(grace_seconds).wait()
    return 0


#: Longest wait between a warm channel's reconnection attempts to a peer that is gone.
WARM_MAX_BACKOFF_MS = 5_000

#: A warm channel's watch that ended sooner than this after it was opened is not re-opened
#: (a peer that refuses it is not asked in a loop; the channel then works as a cold one).
WARM_MIN_SECONDS = 5.0


def make_channel(address: str, tls: Tls | None = None, warm: bool = False) -> grpc.Channel:
    """A channel with the same limits and keepalive as the servers: mutual TLS with ``tls``
    (the server is verified against the CA, our certificate is presented), plaintext without.
    Channels are meant to be made once per peer and reused (the handshake happens once).
    ``warm``: the channel carries calls every round (see :func:`keep_warm`)."""
    options = channel_options()
    if warm:
        # The held watch waits for a peer that is gone, so the channel keeps reconnecting on
        # its backoff; capped so a node that comes back is seen within seconds (default 120 s).
        options.append(("grpc.max_reconnect_backoff_ms", WARM_MAX_BACKOFF_MS))
    if tls is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        channel = grpc.secure_channel(address, tls.channel_credentials, options=options)
    if warm:
        keep_warm(channel)
    return channel


def keep_warm(channel: grpc.Channel, min_seconds: float = WARM_MIN_SECONDS) -> None:
    """Hold one ``Health.Watch`` call open on ``channel`` for as long as the channel lives.

    Python gRPC runs a channel's asynchronous calls on a thread that it starts when the first
    of them begins and that exits when the last one ends. A round's calls all end by the round's
    end, so every channel started a new thread every round (thread creation was ~15 % of an
    edge's Python time per round). The watch keeps one call in flight, so the thread is started
    once. Its messages are never read. When it ends (the peer restarted, the connection broke)
    it is re-opened at once, waiting for the peer; when it ended within ``min_seconds`` of
    opening, or the channel is closed, it is not."""
    watch = health_pb2_grpc.HealthStub(channel).Watch

    def open_watch() -> None:
        opened = time.monotonic()
        try:
            call = watch(health_pb2.HealthCheckRequest(), wait_for_ready=True)
        except ValueError:  # the channel was closed
            return

        def ended(_call: Any) -> None:
            if time.monotonic() - opened >= min_seconds:
                open_watch()

        # grpc cancels a call whose object is garbage collected; the done callback holds it
        # (grpc keeps the callback, with the call, for as long as the call is in flight).
        call.add_done_callback(ended)

    open_watch()


def create_health_server(
    health_servicer: health.HealthServicer, host: str = "127.0.0.1", port: int = 0
) -> tuple[grpc.Server, int]:
    """A plaintext server with the health service only, sharing ``health_servicer`` with the
    main server (so NOT_SERVING on shutdown shows on both): for probes that cannot do TLS, such
    as Kubernetes gRPC probes. It answers ``Check``/``Watch`` and nothing else."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"),
        options=[("grpc.max_receive_message_length", 4096)],
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind the health port {host}:{port}")
    return server, bound
