"""Records on the wire: plans, timings, placement and block headers, job specs and statuses,
matrix jobs, partition chunks, and the one reader of "header first, then chunks" streams."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, fields
from typing import Any, Protocol, TypeVar

import numpy as np
import scipy.sparse as sp

from edgecode.errors import InvalidInput
from edgecode.planning.spec import EdgePlan, Plan, WorkerPlan
from edgecode.records import (
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    BlockHeader,
    JobConfig,
    JobStatus,
    MatmulJobStatus,
    MatmulProduct,
    MatmulSpec,
    PlacementHeader,
    Timing,
)
from edgecode.v1 import common_pb2, coordinator_pb2, master_pb2, worker_pb2
from edgecode.wire.tensors import (
    csr_from_proto,
    csr_to_proto,
    tensor_from_proto,
    tensor_to_proto,
)

#: Chunks of a streamed placement or block stay well under the message limit.
CHUNK_BYTES = 1 << 20

STATES = {
    PENDING: master_pb2.JOB_STATE_PENDING,
    RUNNING: master_pb2.JOB_STATE_RUNNING,
    SUCCEEDED: master_pb2.JOB_STATE_SUCCEEDED,
    FAILED: master_pb2.JOB_STATE_FAILED,
    CANCELLED: master_pb2.JOB_STATE_CANCELLED,
}


# ---- the reader of "header first, then chunks" streams -----------------------------------------


class _Streamed(Protocol):
    def ByteSize(self) -> int: ...

    def HasField(self, name: Any) -> bool: ...


M = TypeVar("M", bound=_Streamed)
B = TypeVar("B")


def read_stream(
    messages: Iterable[M],
    what: str,
    begin: Callable[[Any], B],
    add: Callable[[B, Any], None],
    is_active: Callable[[], bool],
    header: str = "header",
    chunk: str | None = "chunk",
) -> tuple[B, int]:
    """Read a client stream whose first message carries ``header`` and every later one a
    ``chunk``: ``begin(header)`` makes a builder, ``add(builder, chunk)`` feeds it (``chunk``
    None: ``add`` gets the whole message, for streams with several kinds of chunk). Returns the
    builder and the payload bytes received. A missing or second header, an empty stream, or a
    call that ended before the stream completed (deadline, oversized message, client gone: grpc
    then ends the request stream quietly) raise :class:`InvalidInput`, so nothing half-sent is
    ever installed."""
    builder: B | None = None
    received = 0
    for message in messages:
        received += message.ByteSize()
        if message.HasField(header):
            if builder is not None:
                raise InvalidInput(f"{what}: a second {header} arrived")
            builder = begin(getattr(message, header))
            continue
        if builder is None:
            raise InvalidInput(f"{what}: the first message must be the {header}")
        add(builder, message if chunk is None else getattr(message, chunk))
    if builder is None:
        raise InvalidInput(f"{what}: empty stream")
    if not is_active():
        raise InvalidInput(f"{what}: the call ended before it completed")
    return builder, received


# ---- plans and timings ---------------------------------------------------------------------------


def plan_to_proto(
    plan: Plan, fitted: bool = True, current_seconds: float = 0.0
) -> coordinator_pb2.PlanResponse:
    return coordinator_pb2.PlanResponse(
        s_edge=plan.s_edge,
        partitions=plan.partitions,
        expected_round_seconds=plan.expected_round_seconds or 0.0,
        fitted=fitted,
        current_expected_round_seconds=current_seconds,
        edges=[
            coordinator_pb2.EdgeAssignment(
                name=e.name,
                s_worker=e.s_worker,
                link_seconds=e.link_seconds,
                partitions=e.partitions,
                workers=[
                    coordinator_pb2.WorkerAssignment(
                        name=w.name, selected=w.selected, partitions=w.partitions
                    )
                    for w in e.workers
                ],
            )
            for e in plan.edges
        ],
    )


def plan_from_proto(message: coordinator_pb2.PlanResponse) -> Plan:
    if message.partitions < 1 or message.s_edge < 0:
        raise InvalidInput(
            f"plan: partitions {message.partitions} / s_edge {message.s_edge} invalid"
        )
    return Plan(
        scheme="hgc",
        partitions=int(message.partitions),
        s_edge=int(message.s_edge),
        expected_round_seconds=float(message.expected_round_seconds) or None,
        edges=tuple(
            EdgePlan(
                name=e.name,
                s_worker=int(e.s_worker),
                link_seconds=float(e.link_seconds),
                partitions=int(e.partitions),
                workers=tuple(
                    WorkerPlan(name=w.name, selected=bool(w.selected), partitions=int(w.partitions))
                    for w in e.workers
                ),
            )
            for e in message.edges
        ),
        extra={"current_seconds": float(message.current_expected_round_seconds)}
        if message.current_expected_round_seconds > 0
        else {},
    )


def timing_to_proto(timing: Timing) -> common_pb2.NodeTiming:
    return common_pb2.NodeTiming(
        node=timing.node,
        seconds=timing.seconds,
        arrived=timing.arrived,
        compute_seconds=timing.compute_seconds,
        load_fraction=timing.load_fraction,
        edge=timing.edge,
        error=timing.error,
    )


def timing_from_proto(message: common_pb2.NodeTiming, edge: str = "") -> Timing:
    """A reported timing; ``edge`` (the caller that saw it) fills in an empty edge field."""
    return Timing(
        node=message.node,
        seconds=_finite(message.seconds, "timing.seconds"),
        arrived=bool(message.arrived),
        compute_seconds=_finite(message.compute_seconds, "timing.compute_seconds"),
        load_fraction=_finite(message.load_fraction, "timing.load_fraction"),
        edge=message.edge or edge,
        error=message.error,
    )


def _finite(value: float, field: str) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise InvalidInput(f"{field} must be a finite number >= 0, got {value}")
    return value


# ---- placement (training data) -------------------------------------------------------------------


def placement_header_to_proto(header: PlacementHeader) -> worker_pb2.PlacementHeader:
    return worker_pb2.PlacementHeader(
        job_id=header.job_id,
        model=header.model,
        n_features=header.n_features,
        n_classes=header.n_classes,
        partitions=header.partitions,
        coefficients=header.coefficients,
        l2=header.l2,
        n_partitions=header.n_partitions,
        placement_epoch=header.epoch,
        rows=header.rows,
        groups=header.groups,
    )


def placement_header_from_proto(message: worker_pb2.PlacementHeader) -> PlacementHeader:
    return PlacementHeader(
        job_id=message.job_id,
        model=message.model,
        n_features=int(message.n_features),
        n_classes=int(message.n_classes),
        partitions=tuple(int(j) for j in message.partitions),
        coefficients=tuple(float(c) for c in message.coefficients),
        l2=float(message.l2),
        n_partitions=int(message.n_partitions),
        epoch=int(message.placement_epoch),
        rows=tuple(int(r) for r in message.rows),
        groups=tuple(int(g) for g in message.groups),
    )


def partition_chunks(
    partition: int, features: Any, labels: np.ndarray, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[worker_pb2.PartitionChunk]:
    """Row ranges of one partition, each under ``chunk_bytes`` (sparse features stay CSR)."""
    rows = int(features.shape[0])
    if sp.issparse(features):
        per_row = (features.nnz * 16) // max(rows, 1) + 16
    else:
        per_row = int(features.shape[1]) * 8 + 8
    step = max(1, chunk_bytes // per_row)
    for start in range(0, max(rows, 1), step):
        block = features[start : start + step]
        chunk = worker_pb2.PartitionChunk(
            partition=partition,
            labels=tensor_to_proto(np.asarray(labels[start : start + step])),
        )
        if sp.issparse(block):
            chunk.sparse.CopyFrom(csr_to_proto(block))
        else:
            chunk.dense.CopyFrom(tensor_to_proto(np.asarray(block, dtype=np.float64)))
        yield chunk


def partition_chunk_from_proto(chunk: worker_pb2.PartitionChunk) -> tuple[int, Any, np.ndarray]:
    """``(partition, features, labels)`` of one chunk, validated."""
    name = f"partition {chunk.partition}"
    if chunk.HasField("sparse"):
        features: Any = csr_from_proto(chunk.sparse, f"{name} features")
    elif chunk.HasField("dense"):
        features = tensor_from_proto(chunk.dense, f"{name} features", dtype="float64")
    else:
        raise InvalidInput(f"placement: chunk of {name} has no features")
    labels = tensor_from_proto(chunk.labels, f"{name} labels", shape=[None])
    return int(chunk.partition), features, labels


# ---- matrix blocks -------------------------------------------------------------------------------


def block_header_to_proto(header: BlockHeader) -> worker_pb2.BlockHeader:
    return worker_pb2.BlockHeader(
        job_id=header.job_id,
        worker_index=header.worker_index,
        rows=header.rows,
        cols=header.cols,
        nnz=header.nnz,
        placement_epoch=header.epoch,
        work_fraction=header.work_fraction,
        side=header.side,
    )


def block_header_from_proto(message: worker_pb2.BlockHeader) -> BlockHeader:
    return BlockHeader(
        job_id=message.job_id,
        worker_index=int(message.worker_index),
        rows=int(message.rows),
        cols=int(message.cols),
        nnz=int(message.nnz),
        epoch=int(message.placement_epoch),
        work_fraction=float(message.work_fraction),
        side=message.side or "a",
    )


# ---- training jobs -------------------------------------------------------------------------------


def job_config_from_proto(spec: master_pb2.JobSpec) -> JobConfig:
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


def job_config_to_proto(config: JobConfig) -> master_pb2.JobSpec:
    return master_pb2.JobSpec(**asdict(config))


def job_status_to_proto(
    job: JobStatus, include_params: bool = False, history_from: int = 0
) -> master_pb2.JobStatus:
    """The status as a message; ``history_from`` > 0 leaves out the history records before
    that index (a watch that sent them already; ``history_offset`` says where it starts)."""
    history_from = min(max(history_from, 0), len(job.history))
    status = master_pb2.JobStatus(
        job_id=job.job_id,
        state=STATES[job.state],
        round=job.round,
        rounds=job.config.rounds,
        message=job.message,
        accuracy=job.accuracy,
        predicted_round_seconds=job.predicted_round_seconds,
        spec=job_config_to_proto(job.config),
        plan_json=job.plan_json,
        history=[master_pb2.RoundRecord(**vars(r)) for r in job.history[history_from:]],
        history_offset=history_from,
        last_timings=[timing_to_proto(t) for t in job.last_timings],
        placements=job.placements,
        setup_seconds=job.setup_seconds,
        placement_seconds=job.placement_seconds,
        partition_usage=job.partition_usage,
        shuffle_bytes=job.shuffle_bytes,
        shuffles=job.shuffles,
        inconsistent_rounds=job.inconsistent_rounds,
        quarantined=job.quarantined,
    )
    if include_params and job.params is not None:
        tensor_to_proto(job.params, out=status.params)
        status.param_history.extend(tensor_to_proto(p) for p in job.param_history)
    return status


# ---- matrix jobs ---------------------------------------------------------------------------------


def matmul_spec_from_proto(message: master_pb2.MatmulSpec) -> MatmulSpec:
    return MatmulSpec(
        scheme=message.scheme or "sparse",
        n=int(message.n),
        k=int(message.k),
        seed=int(message.seed),
        deadline_seconds=float(message.deadline_seconds),
        job_id=message.job_id,
        workers=tuple(message.workers),
        k_b=int(message.k_b) or 1,
    )


def matmul_job_to_proto(job: MatmulJobStatus) -> master_pb2.MatmulJob:
    return master_pb2.MatmulJob(
        job_id=job.job_id,
        scheme=job.scheme,
        n=job.n,
        k=job.k,
        rows=job.rows,
        cols=job.cols,
        worst_condition=job.worst_condition,
        block_nnz=job.block_nnz,
        block_bytes=job.block_bytes,
        encode_seconds=job.encode_seconds,
        place_seconds=job.place_seconds,
        products=job.products,
        k_b=job.k_b,
        rhs_cols=job.rhs_cols,
        weight_a=job.weight[0],
        weight_b=job.weight[1],
        weight_bound=job.weight_bound,
        rhs_block_nnz=job.rhs_block_nnz,
        rhs_block_bytes=job.rhs_block_bytes,
        state=STATES[job.state],
        message=job.message,
        tolerance=job.tolerance,
        node_tolerance=job.node_tolerance,
        workers=job.workers,
        placement_epoch=job.epoch,
        replacements=job.replacements,
        replaced_bytes=job.replaced_bytes,
    )


def matmul_job_from_proto(message: master_pb2.MatmulJob) -> MatmulJobStatus:
    """The inverse of :func:`matmul_job_to_proto` (clients and tests read a job status)."""
    states = {value: key for key, value in STATES.items()}
    return MatmulJobStatus(
        job_id=message.job_id,
        scheme=message.scheme,
        n=int(message.n),
        k=int(message.k),
        rows=int(message.rows),
        cols=int(message.cols),
        worst_condition=float(message.worst_condition),
        block_nnz=tuple(int(v) for v in message.block_nnz),
        block_bytes=tuple(int(v) for v in message.block_bytes),
        encode_seconds=float(message.encode_seconds),
        place_seconds=float(message.place_seconds),
        products=int(message.products),
        k_b=int(message.k_b),
        rhs_cols=int(message.rhs_cols),
        weight=(int(message.weight_a), int(message.weight_b)),
        weight_bound=int(message.weight_bound),
        rhs_block_nnz=tuple(int(v) for v in message.rhs_block_nnz),
        rhs_block_bytes=tuple(int(v) for v in message.rhs_block_bytes),
        state=states.get(message.state, PENDING),
        message=message.message,
        tolerance=int(message.tolerance),
        node_tolerance=int(message.node_tolerance),
        workers=tuple(message.workers),
        epoch=int(message.placement_epoch),
        replacements=int(message.replacements),
        replaced_bytes=int(message.replaced_bytes),
    )


def matmul_product_to_proto(product: MatmulProduct) -> master_pb2.MatmulResponse:
    response = master_pb2.MatmulResponse(
        job_id=product.job_id,
        sequence=product.sequence,
        seconds=product.seconds,
        decoded_from=product.decoded_from,
        timings=[timing_to_proto(t) for t in product.timings],
        replaced=product.replaced,
    )
    tensor_to_proto(product.value, out=response.product)
    return response
