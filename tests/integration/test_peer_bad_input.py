"""Bad input to every Peer RPC and to the coordinator's gossip RPCs, over real gRPC channels:
each malformed request gets its precise status, the service stays up and the job is untouched
(the same rounds then give exactly the reference result).

The peer and the coordinator run in this process (the real servicers on real servers from the
one server factory, port 0); the last test runs a whole gossip job over gRPC in one process.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
import numpy as np
import pytest

from edgecode import wire
from edgecode.coordinator.gossip import GossipJobs
from edgecode.coordinator.logic import CoordinatorLogic
from edgecode.coordinator.service import CoordinatorServicer
from edgecode.coordinator.transport import GrpcPeerClient
from edgecode.gossip_records import NeighbourLink, PeerAssignment
from edgecode.learning.models import LeastSquares
from edgecode.peer.node import PeerNode
from edgecode.peer.service import PeerServicer
from edgecode.peer.transport import ChannelPool, GrpcNeighbours
from edgecode.runtime.peer_metrics import PeerMetrics
from edgecode.v1 import (
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
    peer_pb2,
    peer_pb2_grpc,
    worker_pb2,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
CALL_TIMEOUT = 10.0
ROUNDS = 100  # more than a peer keeps ahead (64), so "too far ahead" can be tried
N_FEATURES = 2
N_PARAMS = N_FEATURES + 1
X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]])
Y = np.array([1.0, 2.0, 3.0, 0.5])
GOOD = np.array([1.0, -1.0, 0.5])
STEP = 0.05


def expect_status(code: grpc.StatusCode, call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    return info.value


def assignment(**changes: Any) -> PeerAssignment:
    base = PeerAssignment(
        job_id="job-a",
        scheme="gossip",
        peer=0,
        n_peers=3,
        neighbours=(
            NeighbourLink(1, "peer-1", "127.0.0.1:1", 0.25),
            NeighbourLink(2, "peer-2", "127.0.0.1:1", 0.25),
        ),
        self_weight=0.5,
        model="least_squares",
        n_features=N_FEATURES,
        n_classes=1,
        l2=0.0,
        partitions=(0,),
        rows=(len(Y),),
        n_partitions=3,
        coefficient=1.0,
        step_initial=STEP,
        step_decay_rounds=math.inf,
        rounds=ROUNDS,
        compute_deadline_seconds=5.0,
        gossip_deadline_seconds=30.0,
        wait_for_gradient=False,
        report_params_every=1,
        straggle="",
        compute_seconds=0.0,
        emulation_seed=0,
        initial_params=np.zeros(N_PARAMS),
    )
    return replace(base, **changes)


def place_messages(a: PeerAssignment | None = None) -> list[peer_pb2.PlaceJobRequest]:
    a = a or assignment()
    return [
        peer_pb2.PlaceJobRequest(header=wire.peer_header_to_proto(a)),
        *(peer_pb2.PlaceJobRequest(chunk=c) for c in wire.partition_chunks(0, X[:2], Y[:2])),
        *(peer_pb2.PlaceJobRequest(chunk=c) for c in wire.partition_chunks(0, X[2:], Y[2:])),
    ]


def reference_after_round_0(value: np.ndarray) -> np.ndarray:
    """x after round 0 when both neighbours sent ``value``."""
    stepped = -STEP * LeastSquares().gradient(np.zeros(N_PARAMS), X, Y, reg_share=1 / 3)
    return np.asarray(0.5 * stepped + 0.5 * value)


class Tracked(peer_pb2_grpc.PeerServicer):
    """The real servicer, counting PlaceJob handlers that have finished: a client can see a
    status before the server's handler is done, so state checks first wait for the handler."""

    def __init__(self, inner: PeerServicer) -> None:
        self.inner = inner
        self.finished = 0
        self._changed = threading.Condition()

    def PlaceJob(self, request_iterator: Any, context: Any) -> Any:
        try:
            return self.inner.PlaceJob(request_iterator, context)
        finally:
            with self._changed:
                self.finished += 1
                self._changed.notify_all()

    def StartJob(self, request: Any, context: Any) -> Any:
        return self.inner.StartJob(request, context)

    def Gossip(self, request: Any, context: Any) -> Any:
        return self.inner.Gossip(request, context)

    def GetReports(self, request: Any, context: Any) -> Any:
        return self.inner.GetReports(request, context)

    def StopJob(self, request: Any, context: Any) -> Any:
        return self.inner.StopJob(request, context)

    def wait_finished(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.finished >= count, CALL_TIMEOUT)


@dataclass
class PeerUnderTest:
    node: PeerNode
    stub: peer_pb2_grpc.PeerStub
    servicer: Tracked
    metrics: PeerMetrics
    address: str

    def gossip(self, round_: int, sender: int, params: Any, job_id: str = "job-a") -> Any:
        tensor = params if isinstance(params, common_pb2.Tensor) else wire.tensor_to_proto(params)
        request = peer_pb2.GossipRequest(job_id=job_id, round=round_, sender=sender, params=tensor)
        return self.stub.Gossip(request, timeout=CALL_TIMEOUT)

    def reports(self, from_round: int = 0, job_id: str = "job-a") -> peer_pb2.GetReportsResponse:
        request = peer_pb2.GetReportsRequest(job_id=job_id, from_round=from_round)
        return self.stub.GetReports(request, timeout=CALL_TIMEOUT)

    def assert_untouched(self, value: np.ndarray = GOOD) -> None:
        """Still placed at round 0 with no report; with both neighbours' ``value`` for round 0
        its first round gives exactly the reference."""
        answer = self.reports()
        assert answer.state == peer_pb2.PEER_JOB_STATE_PLACED and answer.round == 0
        assert len(answer.reports) == 0
        self.gossip(0, 1, value)
        self.gossip(0, 2, value)
        self.stub.StartJob(peer_pb2.StartJobRequest(job_id="job-a"), timeout=CALL_TIMEOUT)
        deadline = time.monotonic() + CALL_TIMEOUT
        while not self.reports().reports:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first = wire.round_report_from_proto(self.reports().reports[0], "job-a", 0).report
        assert first.params is not None and first.missing == ()
        err = np.abs(first.params - reference_after_round_0(value))
        assert np.all(np.isfinite(err)) and np.all(err <= 1e-12)


def start_peer(servers: Any, max_message_bytes: int | None = None) -> PeerUnderTest:
    metrics = PeerMetrics()
    pool = ChannelPool()
    node = PeerNode(
        "peer-0",
        lambda links, timeout: GrpcNeighbours(pool, links, timeout, metrics),
        metrics=metrics,
    )
    servicer = Tracked(PeerServicer(node, metrics))
    register = [(peer_pb2_grpc.add_PeerServicer_to_server, servicer, "edgecode.v1.Peer")]
    kwargs = {} if max_message_bytes is None else {"max_message_bytes": max_message_bytes}
    address = servers.serve(register, **kwargs)
    return PeerUnderTest(
        node, peer_pb2_grpc.PeerStub(servers.channel(address)), servicer, metrics, address
    )


@pytest.fixture
def peer(inproc_servers: Any) -> Iterator[PeerUnderTest]:
    under_test = start_peer(inproc_servers)
    reply = under_test.stub.PlaceJob(iter(place_messages()), timeout=CALL_TIMEOUT)
    assert (reply.partitions, reply.rows) == (1, len(Y))
    under_test.servicer.wait_finished(1)
    yield under_test
    under_test.node.close()


# ---- Gossip ------------------------------------------------------------------------------------


def _tensor(dtype: str, shape: list[int], data: bytes) -> common_pb2.Tensor:
    return common_pb2.Tensor(dtype=dtype, shape=shape, data=data)


BAD_VALUES = {
    "dtype int64": _tensor("int64", [N_PARAMS], np.arange(N_PARAMS, dtype="<i8").tobytes()),
    "dtype float16": _tensor("float16", [N_PARAMS], np.zeros(N_PARAMS, "<f2").tobytes()),
    "missing tensor": common_pb2.Tensor(),
    "bytes shorter than shape": _tensor("float64", [N_PARAMS], GOOD[:2].tobytes()),
    "bytes longer than shape": _tensor("float64", [2], GOOD.tobytes()),
    "negative dimension": _tensor("float64", [-3], GOOD.tobytes()),
    "2-D params": _tensor("float64", [1, 3], GOOD.tobytes()),
    "wrong number of params": wire.tensor_to_proto(np.zeros(N_PARAMS + 1)),
    "no params": wire.tensor_to_proto(np.zeros(0)),
    "NaN": wire.tensor_to_proto(np.array([0.1, np.nan, 0.0])),
    "+inf": wire.tensor_to_proto(np.array([0.1, np.inf, 0.0])),
    "-inf": wire.tensor_to_proto(np.array([-np.inf, 0.0, 0.0])),
}


@pytest.mark.parametrize("params", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_malformed_gossip_values_are_invalid_argument(peer: PeerUnderTest, params: Any) -> None:
    expect_status(INVALID, lambda: peer.gossip(0, 1, params))
    peer.assert_untouched()


BAD_GOSSIP: dict[str, tuple[Callable[[PeerUnderTest], Any], grpc.StatusCode, str]] = {
    "unknown job": (lambda p: p.gossip(0, 1, GOOD, "job-b"), PRECONDITION, "unknown_job"),
    "malformed job id": (lambda p: p.gossip(0, 1, GOOD, "job a/../b"), INVALID, "invalid"),
    "huge job id": (lambda p: p.gossip(0, 1, GOOD, "j" * 100_000), INVALID, "invalid"),
    "sender not a neighbour": (
        lambda p: p.gossip(0, 7, GOOD),
        grpc.StatusCode.PERMISSION_DENIED,
        "not_neighbour",
    ),
    "sender is the peer itself": (
        lambda p: p.gossip(0, 0, GOOD),
        grpc.StatusCode.PERMISSION_DENIED,
        "not_neighbour",
    ),
    "negative round": (lambda p: p.gossip(-1, 1, GOOD), INVALID, "invalid"),
    "round past the job": (lambda p: p.gossip(ROUNDS, 1, GOOD), INVALID, "invalid"),
    "round too far ahead": (
        lambda p: p.gossip(80, 1, GOOD),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "too_far_ahead",
    ),
}


@pytest.mark.parametrize(("call", "code", "reason"), BAD_GOSSIP.values(), ids=BAD_GOSSIP.keys())
def test_bad_gossip_gets_its_status(
    peer: PeerUnderTest, call: Callable[[PeerUnderTest], Any], code: grpc.StatusCode, reason: str
) -> None:
    expect_status(code, lambda: call(peer))
    assert peer.metrics.refused.labels(reason)._value.get() == 1
    peer.assert_untouched()


def test_a_conflicting_second_value_is_refused(peer: PeerUnderTest) -> None:
    peer.gossip(0, 1, GOOD)
    peer.gossip(0, 1, GOOD)  # a retry of the same value is fine
    expect_status(INVALID, lambda: peer.gossip(0, 1, 2 * GOOD))
    peer.assert_untouched()


def test_stale_rounds_are_failed_precondition(peer: PeerUnderTest) -> None:
    peer.assert_untouched()  # runs round 0
    deadline = time.monotonic() + CALL_TIMEOUT
    while peer.reports().round < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    expect_status(PRECONDITION, lambda: peer.gossip(0, 2, GOOD))
    assert peer.metrics.refused.labels("stale")._value.get() == 1


def test_oversized_gossip_is_resource_exhausted(inproc_servers: Any) -> None:
    small = start_peer(inproc_servers, max_message_bytes=64 * 1024)
    small.stub.PlaceJob(iter(place_messages()), timeout=CALL_TIMEOUT)
    expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: small.gossip(0, 1, np.zeros(20_000)))
    small.assert_untouched()
    small.node.close()


# ---- PlaceJob ------------------------------------------------------------------------------------

Messages = list[peer_pb2.PlaceJobRequest]


def _header(**changes: Any) -> Messages:
    return place_messages(assignment(**changes))


def _edit_header(edit: Callable[[peer_pb2.PeerJobHeader], None]) -> Messages:
    messages = place_messages()
    edit(messages[0].header)
    return messages


def _edit_chunk(index: int, edit: Callable[[worker_pb2.PartitionChunk], None]) -> Messages:
    messages = place_messages()
    edit(messages[index].chunk)
    return messages


BAD_PLACEMENTS: dict[str, Callable[[], Messages]] = {
    "empty stream": lambda: [],
    "header missing": lambda: place_messages()[1:],
    "second header": lambda: [*place_messages(), place_messages()[0]],
    "no rows": lambda: place_messages()[:1],
    "some rows missing": lambda: place_messages()[:2],
    "chunk of a partition not in the header": lambda: _edit_chunk(
        1, lambda c: setattr(c, "partition", 2)
    ),
    "features with a wrong column count": lambda: _edit_chunk(
        1, lambda c: c.dense.CopyFrom(wire.tensor_to_proto(np.ones((2, 3))))
    ),
    "NaN features": lambda: _edit_chunk(
        1, lambda c: c.dense.CopyFrom(wire.tensor_to_proto(np.array([[np.nan, 0], [0, 0]])))
    ),
    "labels of the wrong length": lambda: _edit_chunk(
        2, lambda c: c.labels.CopyFrom(wire.tensor_to_proto(np.ones(5)))
    ),
    "a chunk without features": lambda: _edit_chunk(1, lambda c: c.ClearField("dense")),
    "a code reference as the model": lambda: _edit_header(
        lambda h: setattr(h, "model", "torch:os:system")
    ),
    "malformed job id": lambda: _header(job_id="../job"),
    "peer index outside the graph": lambda: _header(peer=3),
    "a neighbour outside the graph": lambda: _edit_header(
        lambda h: h.neighbours[0].__setattr__("index", 9)
    ),
    "a neighbour without an address": lambda: _edit_header(
        lambda h: h.neighbours[0].__setattr__("address", "")
    ),
    "itself as a neighbour": lambda: _edit_header(
        lambda h: h.neighbours[0].__setattr__("index", 0)
    ),
    "weights not summing to 1": lambda: _header(self_weight=0.7),
    "negative weight": lambda: _edit_header(lambda h: h.neighbours[0].__setattr__("weight", -1)),
    "NaN initial params": lambda: _edit_header(
        lambda h: h.initial_params.CopyFrom(wire.tensor_to_proto(np.array([np.nan, 0, 0])))
    ),
    "initial params of the wrong length": lambda: _header(initial_params=np.zeros(5)),
    "zero rounds": lambda: _header(rounds=0),
    "a deadline of 0": lambda: _header(gossip_deadline_seconds=0.0),
    "an unknown straggle model": lambda: _header(straggle="wobbly"),
    "an unknown scheme": lambda: _edit_header(lambda h: setattr(h, "scheme", "push-sum")),
    "too many partitions listed": lambda: _edit_header(
        lambda h: h.partitions.extend(range(20_000))
    ),
}


@pytest.mark.parametrize("build", BAD_PLACEMENTS.values(), ids=BAD_PLACEMENTS.keys())
def test_malformed_placements_are_refused_and_install_nothing(
    peer: PeerUnderTest, build: Callable[[], Messages]
) -> None:
    expect_status(INVALID, lambda: peer.stub.PlaceJob(iter(build()), timeout=CALL_TIMEOUT))
    peer.servicer.wait_finished(2)
    assert set(peer.node.jobs()) == {"job-a"}
    peer.assert_untouched()


def test_too_many_jobs_is_resource_exhausted(inproc_servers: Any) -> None:
    p = start_peer(inproc_servers)
    for i in range(16):
        p.stub.PlaceJob(iter(place_messages(assignment(job_id=f"j{i}"))), timeout=CALL_TIMEOUT)
    expect_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        lambda: p.stub.PlaceJob(iter(place_messages()), timeout=CALL_TIMEOUT),
    )
    assert len(p.node.jobs()) == 16
    p.node.close()


# ---- StartJob, GetReports, StopJob ---------------------------------------------------------------


def test_start_reports_and_stop_refuse_bad_ids(peer: PeerUnderTest) -> None:
    start = peer.stub.StartJob
    expect_status(PRECONDITION, lambda: start(peer_pb2.StartJobRequest(job_id="job-b")))
    expect_status(INVALID, lambda: start(peer_pb2.StartJobRequest(job_id="")))
    expect_status(PRECONDITION, lambda: peer.reports(job_id="job-b"))
    expect_status(INVALID, lambda: peer.reports(from_round=-1))
    expect_status(
        INVALID,
        lambda: peer.stub.GetReports(
            peer_pb2.GetReportsRequest(job_id="job-a", max_reports=-5), timeout=CALL_TIMEOUT
        ),
    )
    stop = peer.stub.StopJob
    assert not stop(peer_pb2.StopJobRequest(job_id="job-b"), timeout=CALL_TIMEOUT).stopped
    expect_status(INVALID, lambda: stop(peer_pb2.StopJobRequest(job_id="a b")))
    peer.assert_untouched()
    assert stop(peer_pb2.StopJobRequest(job_id="job-a"), timeout=CALL_TIMEOUT).stopped
    expect_status(PRECONDITION, lambda: peer.reports())


# ---- the coordinator's gossip RPCs ---------------------------------------------------------------


@dataclass
class CoordinatorUnderTest:
    stub: coordinator_pb2_grpc.CoordinatorStub
    logic: CoordinatorLogic
    jobs: GossipJobs


def start_coordinator(servers: Any) -> CoordinatorUnderTest:
    logic = CoordinatorLogic(dead_after_seconds=5.0)
    jobs = GossipJobs(
        lambda: [(m.name, m.address) for m in logic.members()[0] if m.role == "peer"],
        GrpcPeerClient,
        poll_seconds=0.02,
        dead_after_seconds=1.0,
    )
    register = [
        (
            coordinator_pb2_grpc.add_CoordinatorServicer_to_server,
            CoordinatorServicer(logic, jobs),
            "edgecode.v1.Coordinator",
        )
    ]
    address = servers.serve(register)
    return CoordinatorUnderTest(
        coordinator_pb2_grpc.CoordinatorStub(servers.channel(address)), logic, jobs
    )


def coordinator_addresses(servers: Any) -> list[str]:
    """Addresses of the coordinators the fixture started."""
    return [
        f"127.0.0.1:{service.port}"
        for service in servers.services
        if "edgecode.v1.Coordinator" in service.names
    ]


def start_gossip(stub: Any, **values: Any) -> Any:
    request = coordinator_pb2.StartGossipJobRequest(spec=coordinator_pb2.GossipJobSpec(**values))
    return stub.StartGossipJob(request, timeout=60.0)


def test_a_gossip_job_over_grpc_in_one_process(
    inproc_servers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edgecode.coordinator.gossip as gossip_module
    from edgecode.coordinator.client import GossipClient

    monkeypatch.setattr(gossip_module, "MAX_RECORDS_PER_ANSWER", 7)  # the client pages
    coordinator = start_coordinator(inproc_servers)
    peers = [start_peer(inproc_servers) for _ in range(4)]
    for i, p in enumerate(reversed(peers)):
        coordinator.logic.register(f"peer-{3 - i}", "peer", p.address)
    try:
        status = start_gossip(
            coordinator.stub,
            job_id="g",
            graph="ring",
            scheme="goco",
            replication=2,
            dataset="synthetic-lsq:n=200,d=3,noise=0.5",
            rounds=30,
            learning_rate=0.5,
            decay_rounds=20.0,
            gossip_deadline_seconds=5.0,
            seed=1,
        )
        assert status.state == coordinator_pb2.GOSSIP_JOB_STATE_RUNNING
        assert list(status.peer_names) == [f"peer-{i}" for i in range(4)]
        final = coordinator.jobs.status("g")
        deadline = time.monotonic() + 60
        while final.state == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
            final = coordinator.jobs.status("g")
        assert final.state == "succeeded", final.message
        client = GossipClient(coordinator_addresses(inproc_servers)[0])
        try:
            final = client.complete("g")  # every record, over 5 pages of 7
        finally:
            client.close()
        assert [r.round for r in final.records] == list(range(30))
        gaps = np.array([r.gap for r in final.records])
        assert np.all(np.isfinite(gaps)) and gaps[-1] <= 1e-3 and gaps[-1] < gaps[0]
        assert all(r.peers == 4 and r.missing_values == 0 for r in final.records)
        # the peers learned their neighbours' addresses from the coordinator only
        for i, p in enumerate(peers):
            got = p.metrics.rounds.labels("goco")._value.get()
            assert got == 30, (i, got)
        reply = coordinator.stub.GetGossipJob(
            coordinator_pb2.GetGossipJobRequest(
                job_id="g", from_round=25, include_peer_timings=True
            ),
            timeout=CALL_TIMEOUT,
        )
        assert [r.round for r in reply.records] == [25, 26, 27, 28, 29]
        assert all(len(r.peer_timings) == 4 for r in reply.records)
        reply = coordinator.stub.GetGossipJob(
            coordinator_pb2.GetGossipJobRequest(job_id="g"), timeout=CALL_TIMEOUT
        )
        assert [r.round for r in reply.records] == list(range(7))
    finally:
        coordinator.jobs.close()
        for p in peers:
            p.node.close()


BAD_SPECS: dict[str, tuple[dict[str, Any], grpc.StatusCode, str]] = {
    "unknown scheme": ({"scheme": "allreduce"}, INVALID, "scheme"),
    "a file path as the graph": ({"graph": "/etc/hosts"}, INVALID, "graph kind"),
    "a file path as the data set": ({"dataset": "/etc/passwd"}, INVALID, "reads no file"),
    "odd edge list": ({"graph": "", "edges": [0, 1, 2]}, INVALID, "pairs"),
    "zero rounds": ({"rounds": 0}, INVALID, "rounds"),
    "a NaN step": ({"learning_rate": math.nan}, INVALID, "learning_rate"),
    "p = 1": ({"straggle_probability": 1.0}, INVALID, "straggle_probability"),
    "a code reference as the model": ({"model": "torch:os:system"}, INVALID, "model"),
    "more peers than registered": ({"peers": 5}, PRECONDITION, "needs 5 peers, 4 are"),
    "a disconnected graph": (
        {"graph": "", "edges": [0, 1, 2, 3]},
        PRECONDITION,
        "disconnected (2 components)",
    ),
    "a torus of a prime": ({"peers": 3, "graph": "torus"}, PRECONDITION, "factorisation"),
    "replication above the peers": ({"replication": 5}, INVALID, "replication d must"),
}


@pytest.mark.parametrize(("values", "code", "match"), BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_bad_gossip_specs_get_their_status(
    inproc_servers: Any, values: dict[str, Any], code: grpc.StatusCode, match: str
) -> None:
    coordinator = start_coordinator(inproc_servers)
    for i in range(4):
        coordinator.logic.register(f"peer-{i}", "peer", "127.0.0.1:1")
    error = expect_status(code, lambda: start_gossip(coordinator.stub, job_id="bad", **values))
    assert match in (error.details() or "")
    expect_status(
        PRECONDITION,
        lambda: coordinator.stub.GetGossipJob(
            coordinator_pb2.GetGossipJobRequest(job_id="bad"), timeout=CALL_TIMEOUT
        ),
    )


def test_unknown_gossip_jobs_and_unreachable_peers(inproc_servers: Any) -> None:
    coordinator = start_coordinator(inproc_servers)
    stub = coordinator.stub
    for call in (
        lambda: stub.GetGossipJob(coordinator_pb2.GetGossipJobRequest(job_id="nope")),
        lambda: stub.StopGossipJob(coordinator_pb2.StopGossipJobRequest(job_id="nope")),
    ):
        expect_status(PRECONDITION, call)
    expect_status(
        INVALID, lambda: stub.GetGossipJob(coordinator_pb2.GetGossipJobRequest(job_id="a b"))
    )
    expect_status(PRECONDITION, lambda: start_gossip(stub, job_id="none"))  # no peers at all
    # registered peers that do not answer: the launch fails naming one, and nothing runs
    for i in range(3):
        coordinator.logic.register(f"peer-{i}", "peer", "127.0.0.1:1")
    error = expect_status(grpc.StatusCode.UNAVAILABLE, lambda: start_gossip(stub, job_id="x"))
    assert "place failed on 3 peer(s), first peer-0" in (error.details() or "")
    status = stub.GetGossipJob(coordinator_pb2.GetGossipJobRequest(job_id="x"))
    assert status.state == coordinator_pb2.GOSSIP_JOB_STATE_FAILED
