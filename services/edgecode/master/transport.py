"""The master's gRPC adapters: the transport to edges and workers (training and matrix jobs)
and the cluster view backed by the coordinator."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgecode import wire
from edgecode.errors import InvalidInput, NotAllowed, RoundFailed
from edgecode.master.ports import EdgeAssignment, Node, Topology
from edgecode.planning.spec import Plan
from edgecode.records import BlockHeader, PlacementHeader, Timing
from edgecode.rounds import Message, describe
from edgecode.runtime.conversations import Conversation, StreamFailed
from edgecode.runtime.security import Tls
from edgecode.runtime.server import make_channel
from edgecode.v1 import (
    aggregator_pb2,
    aggregator_pb2_grpc,
    coordinator_pb2,
    coordinator_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)

log = logging.getLogger(__name__)

#: Deadline of the calls that build a matrix job (placement of coded blocks).
CONTROL_TIMEOUT = 60.0
#: Deadline of an edge's configuration (small: a paused edge is found out quickly).
CONFIGURE_TIMEOUT = 5.0
#: Deadline of the coordinator's answers; past it the master works from what it saw last.
COORDINATOR_TIMEOUT = 3.0
#: A node that does not answer a health check this fast is treated as gone.
HEALTH_TIMEOUT = 1.0
#: Deadline of a plan (the planner takes milliseconds on small clusters, ~1 s at 200 workers).
PLAN_TIMEOUT = 10.0
#: Timing reports are dropped rather than waited for (rounds never wait on the coordinator).
REPORT_TIMEOUT = 5.0


class _EdgeStream:
    """An edge's RunRound stream (or a round's feed on its RunRounds stream) as round-engine
    messages."""

    def __init__(self, call: Any, edge: str) -> None:
        self._call = call
        self._edge = edge

    def __iter__(self) -> Iterator[Message]:
        for message in self._call:
            if message.last and not message.HasField("vector"):
                continue  # the end of a FORWARD round on a RunRounds stream
            vector = wire.tensor_from_proto(
                message.vector, f"vector from edge {self._edge}", dtype="float64"
            )
            yield Message(
                # DECODE mode: the edge's own vector; FORWARD mode: the worker's.
                sender=message.worker or self._edge,
                vector=vector,
                timings=tuple(wire.timing_from_proto(t, self._edge) for t in message.timings),
                suspects=tuple(message.suspects),
            )

    def cancel(self) -> bool:
        return bool(self._call.cancel())


def _edge_answer(message: Any) -> tuple[int, Any, BaseException | None, bool]:
    """A RunRounds message: (sequence, the message, the round's error, last)."""
    if message.error_code:
        failure = StreamFailed.from_number(message.error_code, message.error)
        return message.sequence, None, failure, True
    return message.sequence, message, None, message.last


def _round_sequence(sequence: int) -> bytes:
    """Field 6 (sequence) of RunRoundRequest, serialized (appended: the last one wins)."""
    return bytes(aggregator_pb2.RunRoundRequest(sequence=sequence).SerializeToString())


def _round_cancel(sequence: int) -> bytes:
    return bytes(aggregator_pb2.RunRoundRequest(cancel=True, sequence=sequence).SerializeToString())


class GrpcTransport:
    """Channels to workers and edges, cached per address (one TLS handshake per peer).

    ``is_member(address)``, when given, is asked before a channel to a new address is opened:
    the master dials only addresses of its authenticated membership (nodes registered with the
    coordinator under their certificates' names), never one a request made up (NotAllowed,
    i.e. PERMISSION_DENIED, otherwise)."""

    def __init__(
        self,
        tls: Tls | None = None,
        is_member: Callable[[str], bool] | None = None,
        streams: bool = True,
    ) -> None:
        self._tls = tls
        self._is_member = is_member
        self._streams = streams
        #: (edge address, job): the job's rounds on one long-lived RunRounds stream
        self._conversations: dict[tuple[str, str], Conversation] = {}
        self._channels: dict[str, grpc.Channel] = {}
        self._edge_stubs: dict[str, aggregator_pb2_grpc.AggregatorStub] = {}
        self._warm: set[str] = set()
        self._retired: list[grpc.Channel] = []
        self._lock = threading.Lock()

    def edge_stub(self, address: str) -> aggregator_pb2_grpc.AggregatorStub:
        """The cached stub of an edge (made once: a round opens one call per edge)."""
        stub = self._edge_stubs.get(address)
        if stub is None:
            stub = self._edge_stubs[address] = aggregator_pb2_grpc.AggregatorStub(
                self.channel(address, warm=True)
            )
        return stub

    def channel(self, address: str, warm: bool = False) -> grpc.Channel:
        """The cached channel to ``address``; ``warm``: kept warm (see
        :func:`~edgecode.runtime.server.keep_warm`). A health check can reach an edge before its
        first round and make its channel cold; asked for warm, that channel is replaced by a
        warm one (made warm from the start, with the warm channels' reconnect backoff) and kept
        open until :meth:`close`, so a call still in flight on it ends normally."""
        with self._lock:
            channel = self._channels.get(address)
            if channel is not None and (not warm or address in self._warm):
                return channel
        if channel is None and self._is_member is not None and not self._is_member(address):
            raise NotAllowed(
                f"{address!r} is not the address of a node registered with the "
                "coordinator; the master dials only its membership"
            )
        with self._lock:
            channel = self._channels.get(address)
            if channel is None or (warm and address not in self._warm):
                if channel is not None:
                    self._retired.append(channel)
                channel = self._channels[address] = make_channel(address, self._tls, warm)
                if warm:
                    self._warm.add(address)
            return channel

    def place(
        self,
        worker: Node,
        header: PlacementHeader,
        partitions: Sequence[tuple[int, Any, np.ndarray]],
        timeout: float,
    ) -> int:
        def messages() -> Iterator[worker_pb2.PlaceDataRequest]:
            yield worker_pb2.PlaceDataRequest(header=wire.placement_header_to_proto(header))
            for partition, features, labels in partitions:
                for chunk in wire.partition_chunks(partition, features, labels):
                    yield worker_pb2.PlaceDataRequest(chunk=chunk)

        stub = worker_pb2_grpc.WorkerStub(self.channel(worker.address))
        response = stub.PlaceData(messages(), timeout=timeout)
        return int(response.bytes)

    def configure_edge(
        self, job_id: str, epoch: int, assignment: EdgeAssignment, deadline_seconds: float
    ) -> None:
        a = assignment
        request = aggregator_pb2.ConfigureJobRequest(
            job_id=job_id,
            placement_epoch=epoch,
            workers=[aggregator_pb2.EdgeWorker(name=w.name, address=w.address) for w in a.workers],
            mode=aggregator_pb2.EDGE_MODE_DECODE
            if a.mode == "decode"
            else aggregator_pb2.EDGE_MODE_FORWARD,
            s_worker=a.s_worker,
            worker_deadline_seconds=deadline_seconds,
            message_rows=a.message_rows,
            verify=a.verify,
            verify_slack_seconds=a.verify_slack,
        )
        if a.code_rows is not None and a.targets is not None:
            wire.tensor_to_proto(np.ascontiguousarray(a.code_rows), out=request.code)
            wire.tensor_to_proto(a.targets, out=request.targets)
        self.edge_stub(a.edge.address).ConfigureJob(request, timeout=CONFIGURE_TIMEOUT)

    def run_round(
        self, edge: Node, job_id: str, round_: int, params: np.ndarray, epoch: int, timeout: float
    ) -> _EdgeStream:
        request = aggregator_pb2.RunRoundRequest(job_id=job_id, round=round_, placement_epoch=epoch)
        wire.tensor_to_proto(params, out=request.params)
        if self._streams:
            encoded = request.SerializeToString()
            feed = self._conversation(edge.address, job_id).send(
                lambda sequence: encoded + _round_sequence(sequence), feed=True
            )
            return _EdgeStream(feed, edge.name)
        call = self.edge_stub(edge.address).RunRound(request, timeout=timeout)
        return _EdgeStream(call, edge.name)

    def _conversation(self, address: str, job_id: str) -> Conversation:
        """The job's RunRounds stream to the edge at ``address`` (made on first use)."""
        channel = self.channel(address, warm=True)  # checks the membership first
        with self._lock:
            conversation = self._conversations.get((address, job_id))
            if conversation is None:
                conversation = self._conversations[(address, job_id)] = Conversation(
                    channel.stream_stream(
                        "/edgecode.v1.Aggregator/RunRounds",
                        request_serializer=bytes,
                        response_deserializer=aggregator_pb2.EdgeMessage.FromString,
                    ),
                    _edge_answer,
                    _round_cancel,
                )
            return conversation

    def fetch_placement(
        self,
        worker: Node,
        header: PlacementHeader,
        from_epoch: int,
        sources: dict[int, str],
        timeout: float,
    ) -> tuple[int, float]:
        request = worker_pb2.FetchPlacementRequest(
            header=wire.placement_header_to_proto(header),
            from_epoch=from_epoch,
            sources=[
                worker_pb2.PartitionSource(partition=j, address=address)
                for j, address in sorted(sources.items())
            ],
        )
        stub = worker_pb2_grpc.WorkerStub(self.channel(worker.address))
        response = stub.FetchPlacement(request, timeout=timeout)
        return int(response.fetched_bytes), float(response.seconds)

    def drop_job(self, node: Node, job_id: str, is_edge: bool) -> None:
        if is_edge:
            with self._lock:
                conversation = self._conversations.pop((node.address, job_id), None)
            if conversation is not None:
                conversation.close()
        try:
            if is_edge:
                self.edge_stub(node.address).DropJob(
                    aggregator_pb2.DropEdgeJobRequest(job_id=job_id), timeout=HEALTH_TIMEOUT
                )
            else:
                worker_pb2_grpc.WorkerStub(self.channel(node.address)).DropJob(
                    worker_pb2.DropJobRequest(job_id=job_id), timeout=HEALTH_TIMEOUT
                )
        except grpc.RpcError:
            pass  # a dead node holds nothing; a live one drops the job by its TTL

    def unreachable(self, nodes: Sequence[Node]) -> list[str]:
        def check(node: Node) -> str | None:
            stub = health_pb2_grpc.HealthStub(self.channel(node.address))
            try:
                response = stub.Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=HEALTH_TIMEOUT
                )
            except grpc.RpcError:
                return node.name
            return None if response.status == health_pb2.HealthCheckResponse.SERVING else node.name

        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            return [name for name in pool.map(check, nodes) if name is not None]

    def close(self) -> None:
        with self._lock:
            conversations = list(self._conversations.values())
            self._conversations.clear()
        for conversation in conversations:
            conversation.close()
        with self._lock:
            for channel in [*self._channels.values(), *self._retired]:
                channel.close()
            self._channels.clear()
            self._retired.clear()
            self._edge_stubs.clear()


class _MultiplyCall:
    """A worker's Multiply future whose result is a round-engine message."""

    def __init__(self, future: Any, index: int, address: str) -> None:
        self._future = future
        self._index = index
        self._address = address

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._future.add_done_callback(lambda _f: fn(self))

    def cancel(self) -> bool:
        return bool(self._future.cancel())

    def result(self, timeout: float | None = None) -> Message:
        response = self._future.result(timeout=timeout)
        if int(response.worker_index) != self._index:
            raise InvalidInput(
                f"worker {self._address} answered as code index {response.worker_index}, "
                f"not {self._index}"
            )
        product = wire.tensor_from_proto(
            response.product, f"product from worker {self._address}", dtype="float64"
        )
        return Message(self._address, product, float(response.compute_seconds))


class GrpcMatrixTransport:
    """The master's matrix-job calls to workers, on the training transport's channels."""

    def __init__(self, transport: GrpcTransport) -> None:
        self._transport = transport

    def _stub(self, address: str) -> worker_pb2_grpc.WorkerStub:
        return worker_pb2_grpc.WorkerStub(self._transport.channel(address))

    def place_block(self, address: str, header: BlockHeader, block: Any) -> int:
        def messages() -> Iterator[worker_pb2.PlaceBlockRequest]:
            yield worker_pb2.PlaceBlockRequest(header=wire.block_header_to_proto(header))
            for first_row, rows in wire.csr_row_chunks(block, wire.CHUNK_BYTES):
                yield worker_pb2.PlaceBlockRequest(
                    chunk=worker_pb2.BlockChunk(first_row=first_row, rows=wire.csr_to_proto(rows))
                )

        response = self._stub(address).PlaceBlock(messages(), timeout=CONTROL_TIMEOUT)
        return int(response.bytes)

    def multiply(
        self,
        index: int,
        address: str,
        job_id: str,
        sequence: int,
        epoch: int,
        operand: np.ndarray | None,
        timeout: float,
    ) -> _MultiplyCall:
        """Code index ``index``'s product: ``C_i^T operand``, or ``C_i^T B_i`` (the placed
        coded B block) when ``operand`` is None."""
        request = worker_pb2.MultiplyRequest(
            job_id=job_id,
            sequence=sequence,
            placement_epoch=epoch,
            code_index=index,
            coded_rhs=operand is None,
        )
        if operand is not None:
            wire.tensor_to_proto(operand, out=request.operand)
        future = self._stub(address).Multiply.future(request, timeout=timeout)
        return _MultiplyCall(future, index, address)

    def drop(self, address: str, job_id: str) -> None:
        self._stub(address).DropJob(
            worker_pb2.DropJobRequest(job_id=job_id), timeout=HEALTH_TIMEOUT
        )

    def unreachable(self, addresses: Sequence[str]) -> list[str]:
        """The addresses whose health check fails or is not SERVING (the training transport's
        check, within HEALTH_TIMEOUT)."""
        if not addresses:
            return []
        return self._transport.unreachable([Node(a, a) for a in addresses])


class CoordinatorView:
    """The master's view of the cluster, from the coordinator. When the coordinator is out of
    reach it answers from what it saw last (membership) and says so (plans), so a dead or
    paused coordinator never stops a job."""

    def __init__(self, address: str, tls: Tls | None = None) -> None:
        self._address = address
        self._channel = make_channel(address, tls)
        self._stub = coordinator_pb2_grpc.CoordinatorStub(self._channel)
        self._last: Topology | None = None
        #: the addresses of every node the coordinator listed last (the dialable membership)
        self._addresses: frozenset[str] = frozenset()

    def _cluster(self) -> coordinator_pb2.Cluster:
        cluster: coordinator_pb2.Cluster = self._stub.GetCluster(
            coordinator_pb2.GetClusterRequest(), timeout=COORDINATOR_TIMEOUT
        )
        self._addresses = frozenset(n.address for n in cluster.nodes)
        return cluster

    def is_member(self, address: str) -> bool:
        """Whether ``address`` is a registered node's (asking the coordinator again on a miss;
        False when it is out of reach)."""
        if address in self._addresses:
            return True
        try:
            self._cluster()
        except grpc.RpcError:
            return False
        return address in self._addresses

    def topology(self) -> Topology:
        try:
            cluster = self._cluster()
        except grpc.RpcError as exc:
            if self._last is None:
                raise RoundFailed(
                    f"the coordinator at {self._address} is out of reach ({describe(exc)}) and "
                    "no membership was seen before"
                ) from None
            log.warning(
                "coordinator out of reach (%s): using the membership seen last", describe(exc)
            )
            return self._last
        edges = sorted((n for n in cluster.nodes if n.role == "edge"), key=lambda n: n.name)
        workers = [
            tuple(
                Node(w.name, w.address, w.link_seconds)
                for w in sorted(
                    (n for n in cluster.nodes if n.role == "worker" and n.edge == e.name),
                    key=lambda n: n.name,
                )
            )
            for e in edges
        ]
        kept = [
            (Node(e.name, e.address, e.link_seconds), w)
            for e, w in zip(edges, workers, strict=True)
            if w
        ]
        self._last = Topology(tuple(e for e, _ in kept), tuple(w for _, w in kept))
        return self._last

    def plan(
        self,
        partitions: int,
        exclude: Sequence[str] = (),
        max_partitions: int = 0,
        current: Plan | None = None,
    ) -> tuple[Plan, float]:
        request = coordinator_pb2.GetPlanRequest(
            partitions=partitions, exclude=list(exclude), max_partitions=max_partitions
        )
        if current is not None:
            request.current.CopyFrom(wire.plan_to_proto(current))
        try:
            response = self._stub.GetPlan(request, timeout=PLAN_TIMEOUT)
        except grpc.RpcError as exc:
            raise RoundFailed(
                f"no plan from the coordinator at {self._address}: {describe(exc)}"
            ) from None
        plan = wire.plan_from_proto(response)
        return plan, float(response.expected_round_seconds)

    def report(self, timings: Sequence[Timing], round_seconds: float, predicted: float) -> None:
        request = coordinator_pb2.ReportTimingsRequest(
            timings=[
                coordinator_pb2.WorkerTiming(
                    worker=t.node,
                    compute_seconds=t.compute_seconds,
                    load_fraction=t.load_fraction,
                    response_seconds=t.seconds,
                )
                for t in timings
                if t.arrived and t.load_fraction > 0
            ],
            round_seconds=round_seconds,
            predicted_round_seconds=predicted,
        )
        self._stub.ReportTimings(request, timeout=REPORT_TIMEOUT)

    def worker_addresses(self) -> list[str]:
        """Every registered worker's address, in name order (matrix jobs use the first n)."""
        topology = self.topology()
        workers = sorted((w for members in topology.workers for w in members), key=lambda w: w.name)
        return [w.address for w in workers]

    def close(self) -> None:
        self._channel.close()
