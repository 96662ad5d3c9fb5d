"""The peer's configuration and start-up: ``edgecode peer``.

A peer registers with the coordinator as role ``peer`` under its name, whose trailing number is
its index in a job's graph (``peer-3``; a Kubernetes StatefulSet's pod ``peers-3`` has ordinal 3).
The coordinator introduces its neighbours when it places a job.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecode.emulation import parse_straggle
from edgecode.peer.node import PeerNode
from edgecode.peer.service import PeerServicer
from edgecode.peer.transport import ChannelPool, GrpcNeighbours
from edgecode.runtime.peer_metrics import PeerMetrics
from edgecode.runtime.server import create_server
from edgecode.runtime.start import CommonConfig, advertised, membership, prepare, serve
from edgecode.v1 import peer_pb2_grpc


@dataclass(frozen=True)
class PeerConfig(CommonConfig):
    """``edgecode peer`` settings (flags > EDGECODE_* environment > TOML)."""

    name: str = "peer-0"
    coordinator: str = ""
    straggle: str = "none"
    compute_seconds: float = 0.0
    seed: int = 0


def run(config: PeerConfig) -> int:
    """Serve one peer until SIGTERM; returns the exit code."""
    prepare()
    metrics = PeerMetrics()
    pool = ChannelPool()
    node = PeerNode(
        config.name,
        lambda links, timeout: GrpcNeighbours(pool, links, timeout, metrics),
        straggle=parse_straggle(config.straggle, config.compute_seconds),
        seed=config.seed,
        metrics=metrics,
    )
    service = create_server(
        [
            (
                peer_pb2_grpc.add_PeerServicer_to_server,
                PeerServicer(node, metrics),
                "edgecode.v1.Peer",
            )
        ],
        config.host,
        config.port,
    )
    member = membership(config.coordinator, config.name, "peer", advertised(config, service.port))

    def stop() -> None:
        node.close()
        pool.close()

    return serve(config, service, metrics, "peer", member, stop)
