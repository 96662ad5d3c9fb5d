"""The start-up every role shares: common settings (mutual TLS among them), allocator tuning,
the metrics endpoint, the optional plaintext health port, registration with the coordinator,
and serving until SIGTERM (health NOT_SERVING first).

Each role's ``run.py`` builds its logic and servicer and calls :func:`serve`; nothing here
imports a role.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edgecode.runtime.membership import Membership, machine_cpus, machine_id, write_ready_file
from edgecode.runtime.memory import tune_allocator
from edgecode.runtime.security import Tls, resolve_tls
from edgecode.runtime.server import Service, create_health_server, serve_until_signal
from edgecode.v1 import coordinator_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommonConfig:
    """Settings every service has."""

    host: str = "127.0.0.1"
    port: int = 0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    #: host other nodes use to reach this one (defaults to ``host``; set it in containers)
    advertise_host: str = ""
    ready_file: str = ""
    grace_seconds: float = 2.0
    #: mutual TLS (required unless ``insecure``): the CA every peer's certificate must chain to,
    #: this node's certificate (its SAN URI edgecode://ROLE/NAME is its identity) and key
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    #: a folder with ca.crt, tls.crt and tls.key (a Kubernetes TLS Secret); tls_* override it
    tls_dir: str = ""
    #: plaintext gRPC, no authentication (logs a warning); never the default
    insecure: bool = False
    #: a plaintext port serving only grpc.health.v1, for probes that cannot do TLS (-1 = none)
    health_host: str = "127.0.0.1"
    health_port: int = -1
    #: a job's data is dropped after this many seconds without use (its master vanished)
    job_ttl_seconds: float = 3600.0


class MetricsEndpoint(Protocol):
    """A service's metrics: served on their own port, closed at the end."""

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> int: ...

    def close(self) -> None: ...


def prepare() -> None:
    """Process-wide settings made before any big buffer is allocated."""
    tune_allocator()
    import sys

    sys.setswitchinterval(0.0005)


def node_tls(config: CommonConfig, role: str, name: str = "") -> Tls | None:
    """The service's TLS material (None with ``insecure``); its certificate must name ``role``
    (and ``name``, for nodes that register under a name): a mismatch is refused at start, not
    discovered as PERMISSION_DENIED later."""
    tls = resolve_tls(
        config.tls_ca,
        config.tls_cert,
        config.tls_key,
        config.tls_dir,
        config.insecure,
        role,
        frozenset({role}),
    )
    if tls is not None and name and tls.identity.name != name:
        raise ValueError(
            f"{role}: tls_cert names {tls.identity}, but this node is named {name!r} (the "
            "coordinator accepts a node only under its certificate's name)"
        )
    return tls


def advertised(config: CommonConfig, port: int) -> str:
    """The address other nodes dial to reach this service."""
    return f"{config.advertise_host or config.host}:{port}"


def membership(
    coordinator: str,
    name: str,
    role: str,
    address: str,
    edge: str = "",
    link_seconds: float = 0.0,
    tls: Tls | None = None,
    machine: str = "",
    cpus: float = 0.0,
    cpu_seconds: Callable[[], float] | None = None,
    stretch: Callable[[], float] | None = None,
    round_cpu: Callable[[], float] | None = None,
) -> Membership | None:
    """Registration and heartbeats with the coordinator, when one is configured; the node
    names its machine and that machine's cores (see ``membership.machine_id``)."""
    if not coordinator:
        return None
    node = coordinator_pb2.Node(
        name=name,
        role=role,
        address=address,
        edge=edge,
        link_seconds=link_seconds,
        host=machine_id(machine),
        host_cpus=machine_cpus(cpus),
    )
    return Membership(coordinator, node, tls, cpu_seconds, stretch, round_cpu)


def reap_idle_jobs(ttl_seconds: float, *expirers: Callable[[float], list[str]]) -> threading.Event:
    """Every so often, let each ``expire(ttl)`` drop the jobs idle for ``ttl_seconds`` (a
    master that vanished never sent DropJob). Returns the event that stops the thread."""
    stop = threading.Event()
    period = max(0.05, min(ttl_seconds / 4, 60.0))

    def loop() -> None:
        while not stop.wait(period):
            for expire in expirers:
                dropped = expire(ttl_seconds)
                if dropped:
                    log.info("dropped jobs idle for %.0f s: %s", ttl_seconds, dropped)

    threading.Thread(target=loop, name="idle-jobs", daemon=True).start()
    return stop


def serve(
    config: CommonConfig,
    service: Service,
    metrics: MetricsEndpoint,
    role: str,
    member: Membership | None = None,
    on_stop: Callable[[], None] | None = None,
) -> int:
    """Start the metrics endpoint and the server, report SERVING, register, write the ready
    file; then serve until SIGTERM/SIGINT and return the exit code."""
    metrics_port = metrics.serve(config.metrics_host, config.metrics_port)
    health_server, health_port = None, -1
    if config.health_port >= 0:
        health_server, health_port = create_health_server(
            service.health, config.health_host, config.health_port
        )
        health_server.start()
    service.server.start()
    service.set_serving(True)
    if member is not None:
        member.start()
    write_ready_file(
        config.ready_file,
        role=role,
        address=advertised(config, service.port),
        port=service.port,
        metrics_port=metrics_port,
        health_port=health_port,
    )
    log.info("%s serving on %s (metrics on %s)", role, service.port, metrics_port)

    def stop() -> None:
        if member is not None:
            member.stop()
        if on_stop is not None:
            on_stop()

    try:
        return serve_until_signal(service, config.grace_seconds, stop)
    finally:
        if health_server is not None:
            health_server.stop(None)
        metrics.close()
