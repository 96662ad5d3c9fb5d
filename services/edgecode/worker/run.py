"""The worker's configuration and start-up: ``edgecode worker``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecode.emulation import parse_straggle
from edgecode.runtime.metrics import WorkerMetrics
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
from edgecode.worker.logic import WorkerLogic
from edgecode.worker.matrix import MatrixWorker
from edgecode.worker.service import WorkerServicer, add_worker_servicer
from edgecode.worker.transport import GrpcPartitionReader


@dataclass(frozen=True)
class WorkerConfig(CommonConfig):
    """``edgecode worker`` settings (flags > EDGECODE_* environment > TOML)."""

    name: str = "worker-0"
    edge: str = "edge-0"
    coordinator: str = ""
    link_seconds: float = 0.0
    straggle: str = "none"
    compute_seconds: float = 0.0
    seed: int = 0
    #: the machine this worker runs on ("": a digest of the kernel's boot id, shared by every
    #: container of one machine) and its cores (0: what the OS reports); the planner lets the
    #: workers of one machine share its cores
    machine: str = ""
    machine_cpus: float = 0.0


def run(config: WorkerConfig) -> int:
    """Serve one worker until SIGTERM; returns the exit code."""
    prepare()
    tls = node_tls(config, "worker", config.name)
    metrics = WorkerMetrics()
    logic = WorkerLogic(
        config.name,
        parse_straggle(config.straggle, config.compute_seconds),
        rng=np.random.default_rng(config.seed),
        metrics=metrics,
        link_seconds=config.link_seconds,
    )
    matrix = MatrixWorker(
        config.name, logic.straggle, np.random.default_rng([config.seed, 1]), metrics
    )
    reader = GrpcPartitionReader(tls)
    service = create_server(
        [
            (
                add_worker_servicer,
                WorkerServicer(logic, metrics, matrix, reader),
                "edgecode.v1.Worker",
            )
        ],
        config.host,
        config.port,
        tls=tls,
    )
    member = membership(
        config.coordinator,
        config.name,
        "worker",
        advertised(config, service.port),
        edge=config.edge,
        link_seconds=config.link_seconds,
        tls=tls,
        machine=config.machine,
        cpus=config.machine_cpus,
        cpu_seconds=logic.cpu_seconds,
        stretch=logic.compute_stretch,
        round_cpu=logic.round_cpu_seconds,
    )
    if member is not None:
        logic.on_cpu_change = member.nudge
    reaper = reap_idle_jobs(config.job_ttl_seconds, logic.expire, matrix.expire)

    def stop() -> None:
        reaper.set()
        reader.close()

    return serve(config, service, metrics, "worker", member, stop)
