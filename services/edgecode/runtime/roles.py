"""Each role's config (a frozen dataclass) and ``run(config)``: build the logic, the servicer,
the server and the metrics endpoint, then serve until SIGTERM (health NOT_SERVING first)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecode.runtime.membership import Membership, write_ready_file
from edgecode.runtime.memory import tune_allocator
from edgecode.runtime.metrics import (
    AggregatorMetrics,
    CoordinatorMetrics,
    MasterMetrics,
    WorkerMetrics,
)
from edgecode.runtime.server import Service, create_server, serve_until_signal
from edgecode.v1 import (
    aggregator_pb2_grpc,
    coordinator_pb2,
    coordinator_pb2_grpc,
    master_pb2_grpc,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommonConfig:
    host: str = "127.0.0.1"
    port: int = 0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    #: host other nodes use to reach this one (defaults to ``host``; set it in containers)
    advertise_host: str = ""
    ready_file: str = ""
    grace_seconds: float = 2.0


@dataclass(frozen=True)
class WorkerConfig(CommonConfig):
    name: str = "worker-0"
    edge: str = "edge-0"
    coordinator: str = ""
    link_seconds: float = 0.0
    straggle: str = "none"
    compute_seconds: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class AggregatorConfig(CommonConfig):
    name: str = "edge-0"
    coordinator: str = ""
    link_seconds: float = 0.0


@dataclass(frozen=True)
class MasterConfig(CommonConfig):
    coordinator: str = ""
    checkpoint_dir: str = ""


@dataclass(frozen=True)
class CoordinatorConfig(CommonConfig):
    spec: str = ""
    heartbeat_seconds: float = 1.0
    dead_after_seconds: float = 5.0


def _advertised(config: CommonConfig, port: int) -> str:
    return f"{config.advertise_host or config.host}:{port}"


def _membership(
    config: WorkerConfig | AggregatorConfig, service: Service, role: str, edge: str = ""
) -> Membership | None:
    """Registration and heartbeats with the coordinator, when one is configured."""
    if not config.coordinator:
        return None
    node = coordinator_pb2.Node(
        name=config.name,
        role=role,
        address=_advertised(config, service.port),
        edge=edge,
        link_seconds=config.link_seconds,
    )
    return Membership(config.coordinator, node)


def _prepare() -> None:
    tune_allocator()


def _serve(
    config: CommonConfig,
    service: Service,
    metrics: Any,
    role: str,
    membership: Membership | None = None,
    on_stop: Any = None,
) -> int:
    metrics_port = metrics.serve(config.metrics_host, config.metrics_port)
    service.server.start()
    service.set_serving(True)
    if membership is not None:
        membership.start()
    write_ready_file(
        config.ready_file,
        role=role,
        address=_advertised(config, service.port),
        port=service.port,
        metrics_port=metrics_port,
    )
    log.info("%s serving on %s (metrics on %s)", role, service.port, metrics_port)

    def stop() -> None:
        if membership is not None:
            membership.stop()
        if on_stop is not None:
            on_stop()

    try:
        return serve_until_signal(service, config.grace_seconds, stop)
    finally:
        metrics.close()


def run_worker(config: WorkerConfig) -> int:
    _prepare()
    from edgecode.worker.logic import WorkerLogic
    from edgecode.worker.matrix import MatrixWorker
    from edgecode.worker.service import WorkerServicer, add_worker_servicer
    from edgecode.worker.straggle import parse_straggle

    metrics = WorkerMetrics()
    logic = WorkerLogic(
        config.name,
        parse_straggle(config.straggle, config.compute_seconds),
        rng=np.random.default_rng(config.seed),
        metrics=metrics,
        link_seconds=config.link_seconds,
    )
    service = create_server(
        [
            (
                add_worker_servicer,
                WorkerServicer(
                    logic,
                    metrics,
                    MatrixWorker(
                        config.name,
                        logic.straggle,
                        np.random.default_rng([config.seed, 1]),
                        metrics,
                    ),
                ),
                "edgecode.v1.Worker",
            )
        ],
        config.host,
        config.port,
    )
    membership = _membership(config, service, role="worker", edge=config.edge)
    return _serve(config, service, metrics, "worker", membership)


def run_aggregator(config: AggregatorConfig) -> int:
    _prepare()
    from edgecode.aggregator.logic import AggregatorLogic
    from edgecode.aggregator.service import AggregatorServicer, GrpcWorkerClient

    metrics = AggregatorMetrics()
    logic = AggregatorLogic(config.name, GrpcWorkerClient, metrics, config.link_seconds)
    service = create_server(
        [
            (
                aggregator_pb2_grpc.add_AggregatorServicer_to_server,
                AggregatorServicer(logic),
                "edgecode.v1.Aggregator",
            )
        ],
        config.host,
        config.port,
    )
    membership = _membership(config, service, role="edge")
    return _serve(config, service, metrics, "aggregator", membership, logic.close)


def run_master(config: MasterConfig) -> int:
    _prepare()
    from edgecode.master.logic import MasterLogic
    from edgecode.master.matrix import MatrixMaster
    from edgecode.master.service import (
        CoordinatorView,
        GrpcMatrixTransport,
        GrpcTransport,
        MasterServicer,
    )

    if not config.coordinator:
        raise ValueError("master: coordinator (address) is required")
    metrics = MasterMetrics()
    transport = GrpcTransport()
    view = CoordinatorView(config.coordinator)
    checkpoints = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    logic = MasterLogic(transport, view, checkpoints, metrics)
    matrix = MatrixMaster(GrpcMatrixTransport(transport), view.worker_addresses, metrics)
    service = create_server(
        [
            (
                master_pb2_grpc.add_MasterServicer_to_server,
                MasterServicer(logic, matrix),
                "edgecode.v1.Master",
            )
        ],
        config.host,
        config.port,
    )
    resumed = logic.resume_all()
    if resumed:
        log.info("resuming jobs %s from their checkpoints", resumed)

    def stop() -> None:
        logic.close()
        transport.close()
        view.close()

    return _serve(config, service, metrics, "master", None, stop)


def run_coordinator(config: CoordinatorConfig) -> int:
    _prepare()
    from edgecode.coordinator.logic import CoordinatorLogic
    from edgecode.coordinator.service import CoordinatorServicer
    from edgecode.planning.spec import load_spec

    metrics = CoordinatorMetrics()
    spec = load_spec(config.spec) if config.spec else None
    logic = CoordinatorLogic(
        config.heartbeat_seconds, config.dead_after_seconds, spec, metrics=metrics
    )
    service = create_server(
        [
            (
                coordinator_pb2_grpc.add_CoordinatorServicer_to_server,
                CoordinatorServicer(logic),
                "edgecode.v1.Coordinator",
            )
        ],
        config.host,
        config.port,
    )
    return _serve(config, service, metrics, "coordinator")
