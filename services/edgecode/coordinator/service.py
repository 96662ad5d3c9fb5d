"""The coordinator's gRPC servicer (thin)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from edgecode import wire
from edgecode.coordinator.gossip import GossipJobs
from edgecode.coordinator.logic import Caller, CoordinatorLogic
from edgecode.errors import Infeasible
from edgecode.runtime.errors import translate_errors
from edgecode.runtime.security import caller
from edgecode.v1 import coordinator_pb2, coordinator_pb2_grpc


def _caller(context: grpc.ServicerContext) -> Caller:
    """The certificate identity of the caller as (role, name); None on a plaintext server."""
    identity = caller(context)
    return (identity.role, identity.name) if identity is not None else None


@dataclass
class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServicer):
    logic: CoordinatorLogic
    #: gossip jobs (GOCO and its baselines); None: this coordinator runs none
    gossip: GossipJobs | None = None

    def _gossip(self) -> GossipJobs:
        if self.gossip is None:
            raise Infeasible("this coordinator runs no gossip jobs")
        return self.gossip

    @translate_errors
    def Register(
        self, request: coordinator_pb2.RegisterRequest, context: grpc.ServicerContext
    ) -> Any:
        n = request.node
        self.logic.register(
            n.name,
            n.role,
            n.address,
            n.edge,
            n.link_seconds,
            n.metrics_address,
            caller=_caller(context),
            host=n.host,
            host_cpus=n.host_cpus,
        )
        return coordinator_pb2.RegisterResponse(heartbeat_seconds=self.logic.heartbeat_seconds)

    @translate_errors
    def Heartbeat(
        self, request: coordinator_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> Any:
        known = self.logic.heartbeat(
            request.name,
            caller=_caller(context),
            cpu_seconds=request.cpu_seconds,
            compute_stretch=request.compute_stretch,
            round_cpu_seconds=request.round_cpu_seconds,
        )
        return coordinator_pb2.HeartbeatResponse(known=known)

    @translate_errors
    def ReportTimings(
        self, request: coordinator_pb2.ReportTimingsRequest, context: grpc.ServicerContext
    ) -> Any:
        count = self.logic.report(
            [
                (t.worker, t.compute_seconds, t.load_fraction, t.response_seconds)
                for t in request.timings
            ],
            request.round_seconds,
            request.predicted_round_seconds,
            caller=_caller(context),
        )
        return coordinator_pb2.ReportTimingsResponse(measurements=count)

    @translate_errors
    def GetCluster(
        self, request: coordinator_pb2.GetClusterRequest, context: grpc.ServicerContext
    ) -> Any:
        members, dead = self.logic.members(request.include_dead)
        return coordinator_pb2.Cluster(
            nodes=[
                coordinator_pb2.Node(
                    name=m.name,
                    role=m.role,
                    address=m.address,
                    edge=m.edge,
                    link_seconds=m.link_seconds,
                    metrics_address=m.metrics_address,
                    host=m.host,
                    host_cpus=m.host_cpus,
                    cpu_seconds=m.cpu_seconds,
                    round_cpu_seconds=m.round_cpu_seconds,
                )
                for m in members
            ],
            dead=dead,
        )

    @translate_errors
    def GetPlan(
        self, request: coordinator_pb2.GetPlanRequest, context: grpc.ServicerContext
    ) -> Any:
        current = wire.plan_from_proto(request.current) if request.HasField("current") else None
        plan, fitted, current_seconds = self.logic.plan(
            int(request.partitions), list(request.exclude), int(request.max_partitions), current
        )
        return wire.plan_to_proto(plan, fitted, current_seconds)

    @translate_errors
    def StartGossipJob(
        self, request: coordinator_pb2.StartGossipJobRequest, context: grpc.ServicerContext
    ) -> Any:
        status = self._gossip().launch(wire.gossip_spec_from_proto(request.spec))
        return wire.gossip_status_to_proto(status)

    @translate_errors
    def GetGossipJob(
        self, request: coordinator_pb2.GetGossipJobRequest, context: grpc.ServicerContext
    ) -> Any:
        from_round = max(0, int(request.from_round))
        status = self._gossip().status(request.job_id, from_round)
        return wire.gossip_status_to_proto(status, from_round, request.include_peer_timings)

    @translate_errors
    def StopGossipJob(
        self, request: coordinator_pb2.StopGossipJobRequest, context: grpc.ServicerContext
    ) -> Any:
        return wire.gossip_status_to_proto(self._gossip().stop(request.job_id))
