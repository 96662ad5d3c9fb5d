"""The master's configuration and start-up: ``edgecode master``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from edgecode.datapaths import DataDirs
from edgecode.master.checkpoints import FileCheckpoints, NoCheckpoints
from edgecode.master.logic import MasterLogic
from edgecode.master.matrix import MatrixMaster
from edgecode.master.service import MasterServicer
from edgecode.master.transport import CoordinatorView, GrpcMatrixTransport, GrpcTransport
from edgecode.runtime.metrics import MasterMetrics
from edgecode.runtime.server import create_server
from edgecode.runtime.start import CommonConfig, node_tls, prepare, serve
from edgecode.v1 import master_pb2_grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MasterConfig(CommonConfig):
    """``edgecode master`` settings (flags > EDGECODE_* environment > TOML)."""

    coordinator: str = ""
    checkpoint_dir: str = ""
    #: folders (os.pathsep-separated) whose files jobs may name; empty = no files at all
    data_dirs: str = ""
    #: every job's rounds on one long-lived stream per edge (false: a RunRound call per round)
    streams: bool = True


def run(config: MasterConfig) -> int:
    """Serve the master until SIGTERM (resuming unfinished jobs first); returns the exit code."""
    prepare()
    if not config.coordinator:
        raise ValueError("master: coordinator (address) is required")
    tls = node_tls(config, "master")
    data_dirs = DataDirs.parse(config.data_dirs)
    metrics = MasterMetrics()
    view = CoordinatorView(config.coordinator, tls)
    # Dial targets come only from the authenticated membership (never from a request).
    transport = GrpcTransport(tls, view.is_member, config.streams)
    store = (
        FileCheckpoints(Path(config.checkpoint_dir)) if config.checkpoint_dir else NoCheckpoints()
    )
    logic = MasterLogic(transport, view, store, metrics, data_dirs=data_dirs)
    matrix = MatrixMaster(GrpcMatrixTransport(transport), view.worker_addresses, metrics)
    service = create_server(
        [
            (
                master_pb2_grpc.add_MasterServicer_to_server,
                MasterServicer(logic, matrix, data_dirs),
                "edgecode.v1.Master",
            )
        ],
        config.host,
        config.port,
        tls=tls,
    )
    resumed = logic.resume_all()
    if resumed:
        log.info("resuming jobs %s from their checkpoints", resumed)

    def stop() -> None:
        logic.close()
        transport.close()
        view.close()

    return serve(config, service, metrics, "master", None, stop)
