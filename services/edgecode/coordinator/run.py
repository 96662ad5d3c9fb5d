"""The coordinator's configuration and start-up: ``edgecode coordinator``."""

from __future__ import annotations

from dataclasses import dataclass

from edgecode.coordinator.gossip import GossipJobs
from edgecode.coordinator.logic import CoordinatorLogic
from edgecode.coordinator.service import CoordinatorServicer
from edgecode.coordinator.transport import GrpcPeerClient
from edgecode.planning.spec import load_spec
from edgecode.runtime.metrics import CoordinatorMetrics
from edgecode.runtime.peer_metrics import GossipJobMetrics
from edgecode.runtime.server import create_server
from edgecode.runtime.start import CommonConfig, prepare, serve
from edgecode.v1 import coordinator_pb2_grpc


@dataclass(frozen=True)
class CoordinatorConfig(CommonConfig):
    """``edgecode coordinator`` settings (flags > EDGECODE_* environment > TOML)."""

    spec: str = ""
    heartbeat_seconds: float = 1.0
    dead_after_seconds: float = 5.0


def run(config: CoordinatorConfig) -> int:
    """Serve the coordinator until SIGTERM; returns the exit code."""
    prepare()
    metrics = CoordinatorMetrics()
    spec = load_spec(config.spec) if config.spec else None
    logic = CoordinatorLogic(
        config.heartbeat_seconds, config.dead_after_seconds, spec, metrics=metrics
    )
    gossip = GossipJobs(
        lambda: [(m.name, m.address) for m in logic.members()[0] if m.role == "peer"],
        GrpcPeerClient,
        metrics=GossipJobMetrics(metrics.registry),
        dead_after_seconds=config.dead_after_seconds,
    )
    service = create_server(
        [
            (
                coordinator_pb2_grpc.add_CoordinatorServicer_to_server,
                CoordinatorServicer(logic, gossip),
                "edgecode.v1.Coordinator",
            )
        ],
        config.host,
        config.port,
    )
    return serve(config, service, metrics, "coordinator", on_stop=gossip.close)
