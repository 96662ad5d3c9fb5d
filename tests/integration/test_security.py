"""Mutual TLS and authorization over real TLS on real loopback sockets (issue 15, items 1-4).

Every service (coordinator, master, edge aggregator, worker, peer) is served by the one server factory
with a certificate of the test CA. For every service: no certificate, a plaintext client, a
certificate of another CA, an expired and a not-yet-valid certificate fail the handshake
(UNAVAILABLE); a certificate of the right CA naming no edgecode identity is UNAUTHENTICATED; for
EVERY RPC of the service, every role the table does not allow gets PERMISSION_DENIED from the
interceptor and every role it allows gets through it; and afterwards the service still serves a
legitimate caller. Then: membership keyed by the certificate's identity at the coordinator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgecode.aggregator.logic import AggregatorLogic
from edgecode.aggregator.service import AggregatorServicer
from edgecode.aggregator.transport import GrpcWorkerClient
from edgecode.coordinator.logic import CoordinatorLogic
from edgecode.coordinator.service import CoordinatorServicer
from edgecode.master.logic import MasterLogic
from edgecode.master.service import MasterServicer
from edgecode.peer.node import PeerNode
from edgecode.peer.service import PeerServicer
from edgecode.peer.transport import ChannelPool, GrpcNeighbours
from edgecode.runtime.certs import ROLES
from edgecode.runtime.peer_metrics import PeerMetrics
from edgecode.runtime.security import RPC_ROLES, Tls
from edgecode.runtime.server import Service, create_server, make_channel
from edgecode.v1 import (
    aggregator_pb2,
    aggregator_pb2_grpc,
    coordinator_pb2,
    coordinator_pb2_grpc,
    master_pb2,
    master_pb2_grpc,
    peer_pb2,
    peer_pb2_grpc,
    worker_pb2,
)
from edgecode.worker.logic import WorkerLogic
from edgecode.worker.service import WorkerServicer, add_worker_servicer
from edgecode.worker.transport import GrpcPartitionReader
from pki import Pki

TIMEOUT = 10.0
DENIED, UNAUTHENTICATED = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED
HANDSHAKE_FAILED = grpc.StatusCode.UNAVAILABLE
#: Services and the proto descriptor of each.
DESCRIPTORS = {
    "edgecode.v1.Coordinator": coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"],
    "edgecode.v1.Master": master_pb2.DESCRIPTOR.services_by_name["Master"],
    "edgecode.v1.Aggregator": aggregator_pb2.DESCRIPTOR.services_by_name["Aggregator"],
    "edgecode.v1.Worker": worker_pb2.DESCRIPTOR.services_by_name["Worker"],
    "edgecode.v1.Peer": peer_pb2.DESCRIPTOR.services_by_name["Peer"],
}


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def _servicer(name: str, tls: Tls) -> tuple[Callable[[Any, grpc.Server], None], Any]:
    if name == "edgecode.v1.Coordinator":
        return (
            coordinator_pb2_grpc.add_CoordinatorServicer_to_server,
            CoordinatorServicer(CoordinatorLogic()),
        )
    if name == "edgecode.v1.Master":
        # No transport is ever reached: every call below fails validation or names no job.
        logic = MasterLogic(transport=None, cluster=None)  # type: ignore[arg-type]
        return master_pb2_grpc.add_MasterServicer_to_server, MasterServicer(logic)
    if name == "edgecode.v1.Aggregator":
        logic = AggregatorLogic("edge-0", GrpcWorkerClient)
        return aggregator_pb2_grpc.add_AggregatorServicer_to_server, AggregatorServicer(logic)
    if name == "edgecode.v1.Peer":
        metrics = PeerMetrics()
        pool = ChannelPool(tls)
        node = PeerNode(
            "peer-0",
            lambda links, timeout: GrpcNeighbours(pool, links, timeout, metrics),
            metrics=metrics,
        )
        return peer_pb2_grpc.add_PeerServicer_to_server, PeerServicer(node, metrics)
    servicer = WorkerServicer(WorkerLogic("worker-0"), reader=GrpcPartitionReader(tls))
    return add_worker_servicer, servicer


@dataclass
class Served:
    name: str
    service: Service
    address: str


@pytest.fixture(scope="module")
def served(pki: Pki) -> Iterator[dict[str, Served]]:
    """Every service on its own port, with mutual TLS (its certificate: its own role)."""
    role_of = {
        "edgecode.v1.Coordinator": "coordinator",
        "edgecode.v1.Master": "master",
        "edgecode.v1.Aggregator": "edge",
        "edgecode.v1.Worker": "worker",
        "edgecode.v1.Peer": "peer",
    }
    services = {}
    for name, role in role_of.items():
        tls = pki.issue(role, f"{role}-server")
        add, servicer = _servicer(name, tls)
        service = create_server([(add, servicer, name)], port=0, tls=tls)
        service.server.start()
        service.set_serving(True)
        services[name] = Served(name, service, f"127.0.0.1:{service.port}")
    try:
        yield services
    finally:
        for s in services.values():
            s.service.server.stop(None).wait(10)


def _methods(service: str) -> list[Any]:
    return list(DESCRIPTORS[service].methods)


def _call(channel: grpc.Channel, service: str, method: Any) -> grpc.StatusCode:
    """Call ``method`` with an empty request (an empty message serializes to no bytes); the
    status it ends with (OK included)."""
    path = f"/{service}/{method.name}"
    identity: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
    kinds = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }
    multi = kinds[(method.client_streaming, method.server_streaming)](
        path, request_serializer=identity, response_deserializer=identity
    )
    request: Any = iter([]) if method.client_streaming else b""
    try:
        result = multi(request, timeout=TIMEOUT)
        if method.server_streaming:
            list(result)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _details(channel: grpc.Channel, service: str, method: Any) -> str:
    path = f"/{service}/{method.name}"
    try:
        channel.unary_unary(path)(b"", timeout=TIMEOUT)
    except grpc.RpcError as exc:
        return str(exc.details())
    return ""


def _health(channel: grpc.Channel) -> Any:
    return (
        health_pb2_grpc.HealthStub(channel)
        .Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        .status
    )


# ---- the table ---------------------------------------------------------------------------------


def test_the_table_lists_every_rpc_of_every_service() -> None:
    """A new RPC without an entry would be refused to everyone: the table must list them all,
    and name only known roles."""
    for service, descriptor in DESCRIPTORS.items():
        for method in descriptor.methods:
            assert f"/{service}/{method.name}" in RPC_ROLES, f"{service}/{method.name}"
    for method, roles in RPC_ROLES.items():
        assert roles and roles <= set(ROLES), method
    proto = descriptor_pb2.FileDescriptorProto()
    health_pb2.DESCRIPTOR.CopyToProto(proto)
    for method in proto.service[0].method:
        assert f"/grpc.health.v1.Health/{method.name}" in RPC_ROLES


# ---- who may call what -------------------------------------------------------------------------


@pytest.mark.parametrize("service", list(DESCRIPTORS))
def test_every_rpc_refuses_every_role_it_does_not_allow(
    pki: Pki, served: dict[str, Served], service: str
) -> None:
    address = served[service].address
    checked = 0
    for role in ROLES:
        with make_channel(address, pki.roles[role]) as channel:
            for method in _methods(service):
                allowed = role in RPC_ROLES[f"/{service}/{method.name}"]
                code = _call(channel, service, method)
                if allowed:
                    # Through the interceptor: whatever the servicer makes of an empty request,
                    # not the interceptor's refusal.
                    assert code != UNAUTHENTICATED, (role, method.name)
                    if code == DENIED:
                        assert "may not call" not in _details(channel, service, method)
                else:
                    assert code == DENIED, (role, method.name, code)
                    assert f"{role}/{role}-0 may not call" in _details(channel, service, method)
                checked += 1
    assert checked == len(ROLES) * len(_methods(service))
    # ... and it still serves a legitimate caller
    with make_channel(address, pki.roles["master"]) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service", list(DESCRIPTORS))
def test_health_watch_works_through_the_interceptor(
    pki: Pki, served: dict[str, Served], service: str
) -> None:
    """Watch is a non-blocking handler: the server calls it with a third argument (its
    send-response callback), which the role check must pass on (it did not: every Watch over
    mutual TLS ended UNKNOWN, "takes 2 positional arguments but 3 were given")."""
    with make_channel(served[service].address, pki.roles["worker"]) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT
        )
        first = next(watch)
        watch.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


BAD_CLIENTS = ["plaintext", "no certificate", "other CA", "expired", "not yet valid"]


def _bad_channel(pki: Pki, kind: str, address: str) -> grpc.Channel:
    if kind == "plaintext":
        return grpc.insecure_channel(address)
    if kind == "no certificate":
        return grpc.secure_channel(
            address, grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem)
        )
    bad = pki.bad[kind]
    if kind == "other CA":  # it trusts our server; the server must not trust it
        bad = Tls(pki.ca.cert_pem, bad.cert_pem, bad.key_pem, bad.identity)
    return make_channel(address, bad)


@pytest.mark.parametrize("kind", BAD_CLIENTS)
@pytest.mark.parametrize("service", list(DESCRIPTORS))
def test_a_bad_certificate_fails_the_handshake(
    pki: Pki, served: dict[str, Served], service: str, kind: str
) -> None:
    address = served[service].address
    method = _methods(service)[0]
    with _bad_channel(pki, kind, address) as channel:
        assert _call(channel, service, method) == HANDSHAKE_FAILED
        with pytest.raises(grpc.RpcError) as info:
            _health(channel)
        assert info.value.code() == HANDSHAKE_FAILED
    # the service keeps serving legitimate callers
    with make_channel(address, pki.roles["admin"]) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service", list(DESCRIPTORS))
def test_a_certificate_without_identity_is_unauthenticated(
    pki: Pki, served: dict[str, Served], service: str
) -> None:
    address = served[service].address
    with make_channel(address, pki.anonymous) as channel:
        for method in _methods(service):
            assert _call(channel, service, method) == UNAUTHENTICATED, method.name
        with pytest.raises(grpc.RpcError) as info:
            _health(channel)
        assert info.value.code() == UNAUTHENTICATED
    with make_channel(address, pki.roles["user"]) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING


def test_the_client_refuses_a_server_of_another_ca(pki: Pki) -> None:
    """Mutual: a node does not talk to an impostor service either."""
    impostor = pki.bad["other CA"]
    servicer = CoordinatorServicer(CoordinatorLogic())
    service = create_server(
        [(coordinator_pb2_grpc.add_CoordinatorServicer_to_server, servicer, "c")],
        port=0,
        tls=Tls(pki.other_ca.cert_pem, impostor.cert_pem, impostor.key_pem, impostor.identity),
    )
    service.server.start()
    try:
        with make_channel(f"127.0.0.1:{service.port}", pki.roles["worker"]) as channel:
            with pytest.raises(grpc.RpcError) as info:
                _health(channel)
            assert info.value.code() == HANDSHAKE_FAILED
    finally:
        service.server.stop(None).wait(10)


# ---- membership keyed by identity --------------------------------------------------------------


def _node(name: str, role: str = "worker", address: str = "127.0.0.1:1") -> Any:
    return coordinator_pb2.Node(name=name, role=role, address=address, edge="edge-0")


def _status(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _timing(worker: str) -> Any:
    return coordinator_pb2.WorkerTiming(
        worker=worker, compute_seconds=0.1, load_fraction=0.5, response_seconds=0.2
    )


def test_a_node_registers_heartbeats_and_reports_only_as_itself(pki: Pki) -> None:
    logic = CoordinatorLogic()
    servicer = CoordinatorServicer(logic)
    tls = pki.issue("coordinator", "c")
    service = create_server(
        [(coordinator_pb2_grpc.add_CoordinatorServicer_to_server, servicer, "c")], port=0, tls=tls
    )
    service.server.start()
    address = f"127.0.0.1:{service.port}"
    w1, w2, master = pki.issue("worker", "w1"), pki.issue("worker", "w2"), pki.roles["master"]
    try:
        with make_channel(address, w1) as c1, make_channel(address, w2) as c2:
            as_w1 = coordinator_pb2_grpc.CoordinatorStub(c1)
            as_w2 = coordinator_pb2_grpc.CoordinatorStub(c2)
            register = coordinator_pb2.RegisterRequest
            # w1 under w2's name, or as an edge: refused; as itself: accepted
            assert _status(lambda: as_w1.Register(register(node=_node("w2")))) == DENIED
            assert _status(lambda: as_w1.Register(register(node=_node("w1", "edge")))) == DENIED
            assert _status(lambda: as_w1.Register(register(node=_node("w1")))) == grpc.StatusCode.OK
            assert [m.name for m in logic.members()[0]] == ["w1"]
            # heartbeats: only its own
            beat = coordinator_pb2.HeartbeatRequest
            assert as_w1.Heartbeat(beat(name="w1"), timeout=TIMEOUT).known
            assert _status(lambda: as_w2.Heartbeat(beat(name="w1"))) == DENIED
            assert _status(lambda: as_w1.Heartbeat(beat(name="w2"))) == DENIED
            # timings: a node only its own (nothing recorded from a refused report)
            report = coordinator_pb2.ReportTimingsRequest
            forged = report(timings=[_timing("w1")])
            assert _status(lambda: as_w2.ReportTimings(forged)) == DENIED
            assert len(logic.members()[0][0].measurements) == 0
            own = as_w1.ReportTimings(report(timings=[_timing("w1")]), timeout=TIMEOUT)
            assert own.measurements == 1
            # w2 registers itself; its address is its own business, its name is not
            assert _status(lambda: as_w2.Register(register(node=_node("w2")))) == grpc.StatusCode.OK
        with make_channel(address, master) as channel:
            stub = coordinator_pb2_grpc.CoordinatorStub(channel)
            # the master reports what it measured for any node
            reported = stub.ReportTimings(
                report(timings=[_timing("w1"), _timing("w2")]), timeout=TIMEOUT
            )
            assert reported.measurements == 2
            assert _status(lambda: stub.Register(register(node=_node("w1")))) == DENIED
            names = [n.name for n in stub.GetCluster(coordinator_pb2.GetClusterRequest()).nodes]
            assert names == ["w1", "w2"]
        assert [len(m.measurements) for m in logic.members()[0]] == [2, 1]
    finally:
        service.server.stop(None).wait(10)


def test_a_plaintext_coordinator_checks_no_identity() -> None:
    """--insecure: no certificates, so names are taken as given (documented)."""
    logic = CoordinatorLogic()
    logic.register("w1", "worker", "127.0.0.1:1", "edge-0", caller=None)
    assert logic.heartbeat("w1", caller=None)
    assert np.isfinite(logic.report([("w1", 0.1, 0.5, 0.2)], 0.1, 0.1, caller=None))
