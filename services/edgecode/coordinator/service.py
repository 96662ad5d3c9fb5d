"""The coordinator's gRPC servicer (thin)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from edgecode import wire
from edgecode.coordinator.logic import Caller, CoordinatorLogic
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
        )
        return coordinator_pb2.RegisterResponse(heartbeat_seconds=self.logic.heartbeat_seconds)

    @translate_errors
    def Heartbeat(
        self, request: coordinator_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> Any:
        known = self.logic.heartbeat(request.name, caller=_caller(context))
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
