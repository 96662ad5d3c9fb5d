"""The master's gRPC servicer (thin) and its gRPC adapters: the transport to workers and edges,
and the cluster view backed by the coordinator."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from typing import Any

import grpc
import numpy as np
import scipy.sparse as sp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgecode import wire
from edgecode.errors import InvalidInput, UnknownJob
from edgecode.master.logic import (
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    EdgeArrival,
    Job,
    JobConfig,
    MasterLogic,
    Node,
    Topology,
)
from edgecode.master.matrix import MatmulSpec, MatrixAssembler, MatrixJob, MatrixMaster, load_matrix
from edgecode.planning.spec import Plan
from edgecode.runtime.errors import translate_errors, translate_stream_errors
from edgecode.runtime.server import make_channel
from edgecode.v1 import (
    aggregator_pb2,
    aggregator_pb2_grpc,
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
    master_pb2,
    master_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)
from edgecode.worker.matrix import BlockHeader

log = logging.getLogger(__name__)

STATES = {
    PENDING: master_pb2.JOB_STATE_PENDING,
    RUNNING: master_pb2.JOB_STATE_RUNNING,
    SUCCEEDED: master_pb2.JOB_STATE_SUCCEEDED,
    FAILED: master_pb2.JOB_STATE_FAILED,
    CANCELLED: master_pb2.JOB_STATE_CANCELLED,
}
#: Placement chunks stay well under the message limit.
CHUNK_BYTES = 1 << 20
#: Deadline of control calls (placement, configuration, coordinator).
CONTROL_TIMEOUT = 60.0
#: A node that does not answer a health check this fast is treated as gone.
HEALTH_TIMEOUT = 1.0


def config_from_proto(spec: master_pb2.JobSpec) -> JobConfig:
    """Unset fields take the defaults: strings when empty, numbers when not present (they are
    proto3 ``optional``, so an explicit 0 stays 0 and is validated as such)."""
    defaults = JobConfig()
    values: dict[str, Any] = {}
    for f in fields(JobConfig):
        default = getattr(defaults, f.name)
        if isinstance(default, str):
            values[f.name] = getattr(spec, f.name) or default
        else:
            present = spec.HasField(f.name)  # type: ignore[arg-type]
            values[f.name] = getattr(spec, f.name) if present else default
    return JobConfig(**values)


def config_to_proto(config: JobConfig) -> master_pb2.JobSpec:
    return master_pb2.JobSpec(**asdict(config))


def status_to_proto(job: Job, include_params: bool = False) -> master_pb2.JobStatus:
    layout = job.layout
    status = master_pb2.JobStatus(
        job_id=job.job_id,
        state=STATES[job.state],
        round=job.round,
        rounds=job.config.rounds,
        message=job.message,
        accuracy=job.accuracy,
        predicted_round_seconds=layout.predicted_round_seconds if layout else 0.0,
        spec=config_to_proto(job.config),
        plan_json=layout.plan_json if layout else "",
        history=[master_pb2.RoundRecord(**asdict(r)) for r in job.history],
        last_timings=[
            common_pb2.NodeTiming(
                node=t.node,
                seconds=t.seconds,
                arrived=t.arrived,
                compute_seconds=t.compute_seconds,
                load_fraction=t.load_fraction,
            )
            for t in job.last_timings
        ],
    )
    status.placements = job.placements
    status.setup_seconds = job.setup_seconds
    if include_params and job.params is not None:
        status.params.CopyFrom(wire.tensor_to_proto(job.params))
        status.param_history.extend(wire.tensor_to_proto(p) for p in job.param_history)
    return status


def matmul_job_to_proto(job: MatrixJob) -> master_pb2.MatmulJob:
    return master_pb2.MatmulJob(
        job_id=job.job_id,
        scheme=job.spec.scheme,
        n=job.spec.n,
        k=job.spec.k,
        rows=job.shape[0],
        cols=job.shape[1],
        worst_condition=job.code.condition_number(),
        block_nnz=job.block_nnz,
        block_bytes=job.block_bytes,
        encode_seconds=job.encode_seconds,
        place_seconds=job.place_seconds,
        products=job.products,
    )


def matmul_spec_from_proto(message: master_pb2.MatmulSpec) -> MatmulSpec:
    return MatmulSpec(
        scheme=message.scheme or "sparse",
        n=int(message.n),
        k=int(message.k),
        seed=int(message.seed),
        deadline_seconds=float(message.deadline_seconds),
        job_id=message.job_id,
        workers=tuple(message.workers),
    )


@dataclass
class MasterServicer(master_pb2_grpc.MasterServicer):
    logic: MasterLogic
    #: matrix jobs; None = this master serves training only
    matrix: MatrixMaster | None = None

    def _matrix(self) -> MatrixMaster:
        if self.matrix is None:
            raise UnknownJob("this master does not serve matrix jobs")
        return self.matrix

    @translate_errors
    def SubmitMatmul(
        self,
        request_iterator: Iterator[master_pb2.SubmitMatmulRequest],
        context: grpc.ServicerContext,
    ) -> Any:
        matrix = self._matrix()
        spec_message: master_pb2.MatmulSpec | None = None
        assembler: MatrixAssembler | None = None
        for message in request_iterator:
            if message.HasField("spec"):
                if spec_message is not None:
                    raise InvalidInput("matmul: a second spec arrived")
                spec_message = message.spec
                if not spec_message.matrix_path:
                    assembler = MatrixAssembler(
                        int(spec_message.rows), int(spec_message.cols), int(spec_message.nnz)
                    )
                continue
            if spec_message is None:
                raise InvalidInput("matmul: the first message must be the spec")
            if assembler is None:
                raise InvalidInput("matmul: matrix chunks sent with a matrix_path")
            chunk = message.chunk
            assembler.add(
                int(chunk.first_row), wire.csr_from_proto(chunk.rows, f"A rows {chunk.first_row}")
            )
        if spec_message is None:
            raise InvalidInput("matmul: empty stream")
        if not context.is_active():
            raise InvalidInput("matmul: the call ended before it completed")
        spec = matmul_spec_from_proto(spec_message).validated()
        a = load_matrix(spec_message.matrix_path) if assembler is None else assembler.finish()
        return matmul_job_to_proto(matrix.submit(spec, a))

    @translate_errors
    def Matmul(self, request: master_pb2.MatmulRequest, context: grpc.ServicerContext) -> Any:
        operand = wire.tensor_from_proto(request.operand, "operand", dtype="float64")
        product = self._matrix().multiply(request.job_id, operand)
        response = master_pb2.MatmulResponse(
            job_id=product.job_id,
            sequence=product.sequence,
            seconds=product.seconds,
            decoded_from=product.decoded_from,
            timings=[
                common_pb2.NodeTiming(
                    node=str(t.index),
                    seconds=t.seconds,
                    arrived=t.arrived,
                    compute_seconds=t.compute_seconds,
                )
                for t in product.timings
            ],
        )
        wire.tensor_to_proto(product.value, out=response.product)
        return response

    @translate_errors
    def DropMatmul(
        self, request: master_pb2.DropMatmulRequest, context: grpc.ServicerContext
    ) -> Any:
        return matmul_job_to_proto(self._matrix().drop(request.job_id))

    @translate_errors
    def SubmitJob(self, request: master_pb2.SubmitJobRequest, context: grpc.ServicerContext) -> Any:
        return master_pb2.SubmitJobResponse(
            job_id=self.logic.submit(config_from_proto(request.spec))
        )

    @translate_errors
    def GetJob(self, request: master_pb2.GetJobRequest, context: grpc.ServicerContext) -> Any:
        return status_to_proto(self.logic.job(request.job_id), request.include_params)

    @translate_stream_errors
    def WatchJob(
        self, request: master_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        for job in self.logic.watch(request.job_id, context.is_active):
            yield status_to_proto(job, request.include_params)

    @translate_errors
    def CancelJob(self, request: master_pb2.CancelJobRequest, context: grpc.ServicerContext) -> Any:
        return status_to_proto(self.logic.cancel(request.job_id))


# ---- adapters the logic uses ------------------------------------------------------------------


class _Stream:
    """An edge's RunRound stream as EdgeArrivals."""

    def __init__(self, call: Any, edge: str) -> None:
        self._call = call
        self._edge = edge

    def __iter__(self) -> Iterator[EdgeArrival]:
        for message in self._call:
            vector = wire.tensor_from_proto(
                message.vector, f"vector from edge {self._edge}", dtype="float64", shape=[None]
            )
            yield EdgeArrival(
                edge=self._edge,
                vector=vector,
                worker=message.worker,
                combined=tuple(message.combined),
                timings=tuple(_Timing(t, self._edge) for t in message.timings),
            )

    def cancel(self) -> bool:
        return bool(self._call.cancel())


@dataclass(frozen=True)
class _Timing:
    proto: common_pb2.NodeTiming
    edge: str

    def __getattr__(self, name: str) -> Any:
        return getattr(self.proto, name)


class GrpcTransport:
    """Channels to workers and edges, cached per address."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def _channel(self, address: str) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = make_channel(address)
            return channel

    def place(
        self,
        worker: Node,
        header: dict[str, Any],
        partitions: Sequence[tuple[int, Any, np.ndarray]],
    ) -> int:
        def messages() -> Iterator[worker_pb2.PlaceDataRequest]:
            yield worker_pb2.PlaceDataRequest(
                header=worker_pb2.PlacementHeader(
                    job_id=header["job_id"],
                    model=header["model"],
                    n_features=header["n_features"],
                    n_classes=header["n_classes"],
                    partitions=header["partitions"],
                    coefficients=header["coefficients"],
                    l2=header["l2"],
                    n_partitions=header["n_partitions"],
                    placement_epoch=header["epoch"],
                    rows=[int(features.shape[0]) for _, features, _ in partitions],
                )
            )
            for partition, features, labels in partitions:
                yield from _chunks(partition, features, labels)

        stub = worker_pb2_grpc.WorkerStub(self._channel(worker.address))
        response = stub.PlaceData(messages(), timeout=CONTROL_TIMEOUT)
        return int(response.bytes)

    def configure_edge(
        self,
        edge: Node,
        job_id: str,
        workers: Sequence[Node],
        mode: str,
        code_rows: np.ndarray | None,
        targets: np.ndarray | None,
        s_worker: int,
        deadline_seconds: float,
    ) -> None:
        request = aggregator_pb2.ConfigureJobRequest(
            job_id=job_id,
            workers=[aggregator_pb2.EdgeWorker(name=w.name, address=w.address) for w in workers],
            mode=aggregator_pb2.EDGE_MODE_DECODE
            if mode == "decode"
            else aggregator_pb2.EDGE_MODE_FORWARD,
            s_worker=s_worker,
            worker_deadline_seconds=deadline_seconds,
        )
        if code_rows is not None and targets is not None:
            request.code.CopyFrom(wire.tensor_to_proto(np.ascontiguousarray(code_rows)))
            request.targets.CopyFrom(wire.tensor_to_proto(targets))
        aggregator_pb2_grpc.AggregatorStub(self._channel(edge.address)).ConfigureJob(
            request, timeout=CONTROL_TIMEOUT
        )

    def run_round(
        self, edge: Node, job_id: str, round_: int, params: np.ndarray, epoch: int, timeout: float
    ) -> _Stream:
        request = aggregator_pb2.RunRoundRequest(job_id=job_id, round=round_, placement_epoch=epoch)
        wire.tensor_to_proto(params, out=request.params)
        call = aggregator_pb2_grpc.AggregatorStub(self._channel(edge.address)).RunRound(
            request, timeout=timeout
        )
        return _Stream(call, edge.name)

    def unreachable(self, nodes: Sequence[Node]) -> list[str]:
        def check(node: Node) -> str | None:
            stub = health_pb2_grpc.HealthStub(self._channel(node.address))
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
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


def _chunks(
    partition: int, features: Any, labels: np.ndarray
) -> Iterator[worker_pb2.PlaceDataRequest]:
    """Row ranges of one partition, each under CHUNK_BYTES."""
    rows = int(features.shape[0])
    if sp.issparse(features):
        per_row = max(1, (features.nnz * 16) // max(rows, 1) + 16)
    else:
        per_row = max(1, int(features.shape[1]) * 8 + 8)
    step = max(1, CHUNK_BYTES // per_row)
    for start in range(0, max(rows, 1), step):
        block = features[start : start + step]
        chunk = worker_pb2.PartitionChunk(
            partition=partition,
            labels=wire.tensor_to_proto(np.asarray(labels[start : start + step])),
        )
        if sp.issparse(block):
            chunk.sparse.CopyFrom(wire.csr_to_proto(block))
        else:
            chunk.dense.CopyFrom(wire.tensor_to_proto(np.asarray(block, dtype=np.float64)))
        yield worker_pb2.PlaceDataRequest(chunk=chunk)


class _MultiplyCall:
    """A worker's Multiply future whose result is ``(worker_index, product, seconds)``."""

    def __init__(self, future: Any, address: str) -> None:
        self._future = future
        self._address = address

    def add_done_callback(self, fn: Any) -> None:
        self._future.add_done_callback(lambda _f: fn(self))

    def cancel(self) -> bool:
        return bool(self._future.cancel())

    def result(self, timeout: float | None = None) -> tuple[int, np.ndarray, float]:
        response = self._future.result(timeout=timeout)
        product = wire.tensor_from_proto(
            response.product, f"product from worker {self._address}", dtype="float64"
        )
        return int(response.worker_index), product, float(response.compute_seconds)


class GrpcMatrixTransport:
    """The master's matrix-job calls to workers, on the training transport's channels."""

    def __init__(self, transport: GrpcTransport) -> None:
        self._transport = transport

    def _stub(self, address: str) -> worker_pb2_grpc.WorkerStub:
        return worker_pb2_grpc.WorkerStub(self._transport._channel(address))

    def place_block(self, address: str, header: BlockHeader, block: Any) -> int:
        def messages() -> Iterator[worker_pb2.PlaceBlockRequest]:
            yield worker_pb2.PlaceBlockRequest(
                header=worker_pb2.BlockHeader(
                    job_id=header.job_id,
                    worker_index=header.worker_index,
                    rows=header.rows,
                    cols=header.cols,
                    nnz=header.nnz,
                    placement_epoch=header.epoch,
                    work_fraction=header.work_fraction,
                )
            )
            for first_row, rows in csr_row_chunks(block):
                yield worker_pb2.PlaceBlockRequest(
                    chunk=worker_pb2.BlockChunk(first_row=first_row, rows=wire.csr_to_proto(rows))
                )

        response = self._stub(address).PlaceBlock(messages(), timeout=CONTROL_TIMEOUT)
        return int(response.bytes)

    def multiply(
        self,
        address: str,
        job_id: str,
        sequence: int,
        epoch: int,
        operand: np.ndarray,
        timeout: float,
    ) -> _MultiplyCall:
        request = worker_pb2.MultiplyRequest(
            job_id=job_id, sequence=sequence, placement_epoch=epoch
        )
        wire.tensor_to_proto(operand, out=request.operand)
        return _MultiplyCall(self._stub(address).Multiply.future(request, timeout=timeout), address)

    def drop(self, address: str, job_id: str) -> None:
        self._stub(address).DropJob(
            worker_pb2.DropJobRequest(job_id=job_id), timeout=HEALTH_TIMEOUT
        )


def csr_row_chunks(matrix: Any, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, Any]]:
    """``(first_row, rows)`` of a CSR matrix, each chunk under about ``chunk_bytes``."""
    csr = sp.csr_matrix(matrix)
    rows = int(csr.shape[0])
    per_row = max(1, (csr.nnz * 16) // max(rows, 1) + 8)
    step = max(1, chunk_bytes // per_row)
    for start in range(0, rows, step):
        yield start, csr[start : start + step]


class CoordinatorView:
    """The master's view of the cluster, from the coordinator."""

    def __init__(self, address: str) -> None:
        self._channel = make_channel(address)
        self._stub = coordinator_pb2_grpc.CoordinatorStub(self._channel)

    def topology(self) -> Topology:
        cluster = self._stub.GetCluster(
            coordinator_pb2.GetClusterRequest(), timeout=CONTROL_TIMEOUT
        )
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
        return Topology(tuple(e for e, _ in kept), tuple(w for _, w in kept))

    def plan(self, partitions: int) -> tuple[Plan, float]:
        response = self._stub.GetPlan(
            coordinator_pb2.GetPlanRequest(partitions=partitions), timeout=CONTROL_TIMEOUT
        )
        plan = wire.plan_from_proto(response)
        return plan, float(response.expected_round_seconds)

    def report(self, timings: Sequence[Any], round_seconds: float, predicted: float) -> None:
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
        self._stub.ReportTimings(request, timeout=5.0)

    def worker_addresses(self) -> list[str]:
        """Every registered worker's address, in name order (matrix jobs use the first n)."""
        cluster = self._stub.GetCluster(
            coordinator_pb2.GetClusterRequest(), timeout=CONTROL_TIMEOUT
        )
        return [
            n.address for n in sorted(cluster.nodes, key=lambda n: n.name) if n.role == "worker"
        ]

    def close(self) -> None:
        self._channel.close()
