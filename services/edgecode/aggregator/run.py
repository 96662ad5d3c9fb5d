"""The edge aggregator's configuration and start-up: ``edgecode aggregator``."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from edgecode.aggregator.logic import AggregatorLogic
from edgecode.aggregator.service import AggregatorServicer
from edgecode.aggregator.transport import GrpcWorkerClient
from edgecode.runtime.metrics import AggregatorMetrics
from edgecode.runtime.server import create_server
from edgecode.runtime.start import (
    CommonConfig,
    advertised,
    membership,
    node_tls,
    prepare,
    reap_idle_jobs,
    serve,
)
from edgecode.v1 import aggregator_pb2_grpc


@dataclass(frozen=True)
class AggregatorConfig(CommonConfig):
    """``edgecode aggregator`` settings (flags > EDGECODE_* environment > TOML)."""

    name: str = "edge-0"
    coordinator: str = ""
    link_seconds: float = 0.0
    streams: bool = True


def run(config: AggregatorConfig) -> int:
    """Serve one edge aggregator until SIGTERM; returns the exit code."""
    prepare()
    tls = node_tls(config, "edge", config.name)
    metrics = AggregatorMetrics()
    clients = functools.partial(GrpcWorkerClient, tls=tls, streams=config.streams)
    logic = AggregatorLogic(config.name, clients, metrics, config.link_seconds)
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
        tls=tls,
    )
    member = membership(
        config.coordinator,
        config.name,
        "edge",
        advertised(config, service.port),
        link_seconds=config.link_seconds,
        tls=tls,
    )
    reaper = reap_idle_jobs(config.job_ttl_seconds, logic.expire)

    def stop() -> None:
        reaper.set()
        logic.close()

    return serve(config, service, metrics, "aggregator", member, stop)
