"""Bad input over real gRPC channels: every malformed request gets its precise status, the service
stays up (the next valid call succeeds) and the model/state is untouched.

Workers, edges and the coordinator run in this process (the real servicers on a real server from
the one server factory, port 0); the master, health and reflection are checked on one
:class:`~edgecode.cluster.local.LocalCluster` of separate processes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
import scipy.sparse as sp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from edgecode import wire
from edgecode.aggregator.logic import AggregatorLogic
from edgecode.aggregator.service import AggregatorServicer
from edgecode.aggregator.transport import GrpcWorkerClient
from edgecode.cluster.local import LocalCluster, default_setup
from edgecode.codes.flat import cyclic_repetition
from edgecode.coordinator.logic import CoordinatorLogic
from edgecode.coordinator.service import CoordinatorServicer
from edgecode.learning.models import get_model
from edgecode.master.client import FINAL_STATES, MasterClient, params_of
from edgecode.master.ports import Node
from edgecode.master.transport import GrpcTransport
from edgecode.records import JobConfig
from edgecode.runtime.conversations import serve_conversation
from edgecode.runtime.metrics import AggregatorMetrics, WorkerMetrics
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
from edgecode.wire import job_config_to_proto as config_to_proto
from edgecode.worker.logic import WorkerLogic
from edgecode.worker.service import WorkerServicer, add_worker_servicer

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
#: Deadline of every test call: a hung service fails the test instead of blocking it.
CALL_TIMEOUT = 10.0

N_FEATURES = 3
ROWS = 5
MODEL = get_model("logistic")
N_PARAMS = MODEL.n_params(N_FEATURES, 2)
PARAMS = np.array([0.3, -0.2, 0.5, 0.1])


def expect_status(code: grpc.StatusCode, call: Callable[[], Any]) -> grpc.RpcError:
    """Run ``call`` (draining a response stream) and check it fails with ``code``."""
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    assert info.value.code() == code, info.value.details()
    return info.value


def partition(j: int) -> tuple[np.ndarray, np.ndarray]:
    """Partition j of a small binary data set (deterministic)."""
    rng = np.random.default_rng(100 + j)
    return rng.normal(size=(ROWS, N_FEATURES)), (rng.random(ROWS) < 0.5).astype(np.float64)


def coded_gradient(
    partitions: tuple[int, ...], coefficients: tuple[float, ...], k: int, params: np.ndarray
) -> np.ndarray:
    """``sum_j B[w, j] grad_j(params)``, what a worker holding these partitions must send."""
    total = np.zeros(N_PARAMS)
    for j, c in zip(partitions, coefficients, strict=True):
        X, y = partition(j)
        total += c * MODEL.gradient(params, X, y, reg_share=1.0 / k)
    return total


def placement_messages(
    job_id: str,
    partitions: tuple[int, ...],
    coefficients: tuple[float, ...],
    k: int,
    epoch: int = 1,
    model: str = "logistic",
    sparse: bool = False,
) -> list[worker_pb2.PlaceDataRequest]:
    header = worker_pb2.PlacementHeader(
        job_id=job_id,
        model=model,
        n_features=N_FEATURES,
        n_classes=2,
        partitions=partitions,
        coefficients=coefficients,
        n_partitions=k,
        placement_epoch=epoch,
        rows=[int(partition(j)[0].shape[0]) for j in partitions],
    )
    messages = [worker_pb2.PlaceDataRequest(header=header)]
    for j in partitions:
        X, y = partition(j)
        chunk = worker_pb2.PartitionChunk(partition=j, labels=wire.tensor_to_proto(y))
        if sparse:
            chunk.sparse.CopyFrom(wire.csr_to_proto(sp.csr_matrix(X)))
        else:
            chunk.dense.CopyFrom(wire.tensor_to_proto(X))
        messages.append(worker_pb2.PlaceDataRequest(chunk=chunk))
    return messages


def params_request(
    params: common_pb2.Tensor | np.ndarray, round_: int, job_id: str = "job-a", epoch: int = 1
) -> worker_pb2.ComputeGradientRequest:
    tensor = params if isinstance(params, common_pb2.Tensor) else wire.tensor_to_proto(params)
    return worker_pb2.ComputeGradientRequest(
        job_id=job_id, round=round_, params=tensor, placement_epoch=epoch
    )


# ---- worker ------------------------------------------------------------------------------------

JOB_PARTITIONS = (0, 2)
JOB_COEFFICIENTS = (1.0, -0.5)
JOB_K = 4


class TrackedWorker(worker_pb2_grpc.WorkerServicer):
    """The real worker servicer, counting PlaceData handlers that have finished (returned or
    aborted): the client can see a status before the server's handler is done, so a check of
    the worker's state must first wait for the handler."""

    def __init__(self, inner: WorkerServicer) -> None:
        self.inner = inner
        self.placements_finished = 0
        self._changed = threading.Condition()

    def PlaceData(self, request_iterator: Any, context: Any) -> Any:
        try:
            return self.inner.PlaceData(request_iterator, context)
        finally:
            with self._changed:
                self.placements_finished += 1
                self._changed.notify_all()

    def ComputeGradient(self, request: Any, context: Any) -> Any:
        return self.inner.ComputeGradient(request, context)

    def ComputeGradients(self, requests: Any, context: Any) -> Any:
        return self.inner.ComputeGradients(requests, context)

    def wait_placements_finished(self, count: int) -> None:
        with self._changed:
            finished = self._changed.wait_for(
                lambda: self.placements_finished >= count, CALL_TIMEOUT
            )
        assert finished, f"only {self.placements_finished} of {count} PlaceData handlers ended"


@dataclass
class WorkerUnderTest:
    logic: WorkerLogic
    stub: worker_pb2_grpc.WorkerStub
    servicer: TrackedWorker
    reference: np.ndarray

    def gradient(self, round_: int, epoch: int = 1) -> np.ndarray:
        response = self.stub.ComputeGradient(
            params_request(PARAMS, round_, epoch=epoch), timeout=CALL_TIMEOUT
        )
        return wire.tensor_from_proto(response.gradient, "gradient", dtype="float64")

    def assert_untouched(self, round_: int, placement: Any) -> None:
        """The service answers and the placement is the same object computing the same gradient,
        with no other epoch beside it."""
        assert self.logic.jobs()["job-a"] is placement
        assert self.logic.epochs("job-a") == (1,)
        assert placement.header.epoch == 1
        np.testing.assert_array_equal(self.gradient(round_), self.reference)


def start_worker(
    servers: Any, name: str = "w-test", max_message_bytes: int | None = None
) -> tuple[WorkerLogic, worker_pb2_grpc.WorkerStub, str, TrackedWorker]:
    metrics = WorkerMetrics()
    logic = WorkerLogic(name, metrics=metrics)
    servicer = TrackedWorker(WorkerServicer(logic, metrics))
    register = [(add_worker_servicer, servicer, "edgecode.v1.Worker")]
    kwargs = {} if max_message_bytes is None else {"max_message_bytes": max_message_bytes}
    address = servers.serve(register, **kwargs)
    return logic, worker_pb2_grpc.WorkerStub(servers.channel(address)), address, servicer


def placed_worker(servers: Any, max_message_bytes: int | None = None) -> WorkerUnderTest:
    logic, stub, _, servicer = start_worker(servers, max_message_bytes=max_message_bytes)
    reply = stub.PlaceData(
        iter(placement_messages("job-a", JOB_PARTITIONS, JOB_COEFFICIENTS, JOB_K)),
        timeout=CALL_TIMEOUT,
    )
    assert (reply.partitions, reply.rows) == (2, 2 * ROWS)
    expected = coded_gradient(JOB_PARTITIONS, JOB_COEFFICIENTS, JOB_K, PARAMS)
    worker = WorkerUnderTest(logic, stub, servicer, expected)
    np.testing.assert_allclose(worker.gradient(1), expected, rtol=1e-12)
    worker.reference = worker.gradient(1)
    return worker


@pytest.fixture
def worker(inproc_servers: Any) -> WorkerUnderTest:
    return placed_worker(inproc_servers)


def _tensor(dtype: str, shape: list[int], data: bytes) -> common_pb2.Tensor:
    return common_pb2.Tensor(dtype=dtype, shape=shape, data=data)


BAD_PARAMS = {
    "dtype int32": _tensor("int32", [N_PARAMS], np.arange(N_PARAMS, dtype="<i4").tobytes()),
    "dtype float16": _tensor("float16", [N_PARAMS], np.zeros(N_PARAMS, "<f2").tobytes()),
    "missing tensor": common_pb2.Tensor(),
    "bytes shorter than shape": _tensor("float64", [N_PARAMS], PARAMS[:3].tobytes()),
    "bytes longer than shape": _tensor("float64", [2], PARAMS.tobytes()),
    "negative dimension": _tensor("float64", [-4], PARAMS.tobytes()),
    "2-D params": _tensor("float64", [2, 2], PARAMS.tobytes()),
    "wrong number of params": wire.tensor_to_proto(np.zeros(N_PARAMS + 1)),
    "no params": wire.tensor_to_proto(np.zeros(0)),
    "NaN": wire.tensor_to_proto(np.array([0.1, np.nan, 0.0, 0.0])),
    "+inf": wire.tensor_to_proto(np.array([0.1, np.inf, 0.0, 0.0])),
    "-inf": wire.tensor_to_proto(np.array([-np.inf, 0.0, 0.0, 0.0])),
}


@pytest.mark.parametrize("params", BAD_PARAMS.values(), ids=BAD_PARAMS.keys())
def test_worker_rejects_malformed_params(worker: WorkerUnderTest, params: Any) -> None:
    placement = worker.logic.jobs()["job-a"]
    expect_status(
        INVALID,
        lambda: worker.stub.ComputeGradient(params_request(params, 1), timeout=CALL_TIMEOUT),
    )
    worker.assert_untouched(1, placement)
    worker.assert_untouched(2, placement)


def test_worker_rejected_params_do_not_advance_the_round(worker: WorkerUnderTest) -> None:
    placement = worker.logic.jobs()["job-a"]
    wrong_length = wire.tensor_to_proto(np.zeros(N_PARAMS + 1))
    expect_status(
        INVALID,
        lambda: worker.stub.ComputeGradient(
            params_request(wrong_length, 1_000_000), timeout=CALL_TIMEOUT
        ),
    )
    worker.assert_untouched(2, placement)


def test_worker_unknown_job_is_failed_precondition(worker: WorkerUnderTest) -> None:
    placement = worker.logic.jobs()["job-a"]
    expect_status(
        PRECONDITION,
        lambda: worker.stub.ComputeGradient(
            params_request(PARAMS, 1, job_id="no-such-job"), timeout=CALL_TIMEOUT
        ),
    )
    worker.assert_untouched(1, placement)


def test_worker_stale_round_is_failed_precondition(worker: WorkerUnderTest) -> None:
    placement = worker.logic.jobs()["job-a"]
    worker.assert_untouched(5, placement)
    error = expect_status(PRECONDITION, lambda: worker.gradient(4))
    assert "4" in (error.details() or "")
    worker.assert_untouched(5, placement)
    worker.assert_untouched(6, placement)


def test_worker_wrong_placement_epoch_is_failed_precondition(worker: WorkerUnderTest) -> None:
    placement = worker.logic.jobs()["job-a"]
    for epoch in (0, 2, -1):
        expect_status(PRECONDITION, lambda epoch=epoch: worker.gradient(1, epoch=epoch))
    worker.assert_untouched(1, placement)


def test_worker_valid_replacement_moves_the_epoch(worker: WorkerUnderTest) -> None:
    """Control for the placement tests below: a VALID epoch-2 placement is installed beside
    epoch 1 (rounds go on with epoch 1 while the new data arrives); the first round of epoch 2
    retires epoch 1, which is refused from then on. So a rejected placement leaving epoch 1 in
    place, and no epoch 2, means something."""
    worker.stub.PlaceData(
        iter(placement_messages("job-a", (1,), (2.0,), JOB_K, epoch=2, sparse=True)),
        timeout=CALL_TIMEOUT,
    )
    assert worker.logic.epochs("job-a") == (1, 2)
    np.testing.assert_allclose(worker.gradient(2, epoch=1), worker.reference, rtol=1e-12)
    np.testing.assert_allclose(
        worker.gradient(3, epoch=2), coded_gradient((1,), (2.0,), JOB_K, PARAMS), rtol=1e-12
    )
    assert worker.logic.epochs("job-a") == (2,)
    expect_status(PRECONDITION, lambda: worker.gradient(4, epoch=1))


Messages = list[worker_pb2.PlaceDataRequest]


def _replacement(**overrides: Any) -> Messages:
    """A valid epoch-2 replacement of job-a (sparse features), to be broken by each case."""
    arguments: dict[str, Any] = {
        "job_id": "job-a",
        "partitions": (1, 3),
        "coefficients": (1.0, 1.0),
        "k": JOB_K,
        "epoch": 2,
        "sparse": True,
    }
    arguments.update(overrides)
    return placement_messages(**arguments)


def _dense_replacement() -> Messages:
    return _replacement(sparse=False)


def _edit_chunk(messages: Messages, index: int, edit: Callable[[Any], None]) -> Messages:
    edit(messages[index].chunk)
    return messages


def _set_tensor(target: common_pb2.Tensor, array: np.ndarray) -> None:
    target.CopyFrom(wire.tensor_to_proto(array))


def _header_only(edit: Callable[[worker_pb2.PlacementHeader], None]) -> Messages:
    messages = _replacement()
    edit(messages[0].header)
    return messages


def _second_header() -> Messages:
    messages = _replacement()
    return [messages[0], messages[1], messages[0], *messages[2:]]


def _unknown_partition() -> Messages:
    messages = _replacement()
    extra = worker_pb2.PlaceDataRequest()
    extra.CopyFrom(messages[1])
    extra.chunk.partition = 2
    return [*messages, extra]


def _wrong_columns(chunk: Any) -> None:
    chunk.sparse.CopyFrom(wire.csr_to_proto(sp.csr_matrix(np.ones((ROWS, N_FEATURES + 1)))))


def _short_labels(chunk: Any) -> None:
    _set_tensor(chunk.labels, np.zeros(ROWS - 1))


def _csr_indptr_not_monotone(chunk: Any) -> None:
    indptr = wire.tensor_from_proto(chunk.sparse.indptr, "indptr").copy()
    indptr[1], indptr[2] = indptr[2], indptr[1]
    _set_tensor(chunk.sparse.indptr, indptr)


def _csr_index_out_of_range(chunk: Any) -> None:
    indices = wire.tensor_from_proto(chunk.sparse.indices, "indices").copy()
    indices[0] = N_FEATURES
    _set_tensor(chunk.sparse.indices, indices)


def _csr_negative_index(chunk: Any) -> None:
    indices = wire.tensor_from_proto(chunk.sparse.indices, "indices").copy()
    indices[-1] = -1
    _set_tensor(chunk.sparse.indices, indices)


def _csr_nnz_mismatch(chunk: Any) -> None:
    data = wire.tensor_from_proto(chunk.sparse.data, "data")
    _set_tensor(chunk.sparse.data, data[:-1])


def _sparse_nan(chunk: Any) -> None:
    data = wire.tensor_from_proto(chunk.sparse.data, "data").copy()
    data[0] = np.nan
    _set_tensor(chunk.sparse.data, data)


def _dense_nan(chunk: Any) -> None:
    X = wire.tensor_from_proto(chunk.dense, "X").copy()
    X[2, 1] = np.nan
    _set_tensor(chunk.dense, X)


def _dense_inf(chunk: Any) -> None:
    X = wire.tensor_from_proto(chunk.dense, "X").copy()
    X[0, 0] = np.inf
    _set_tensor(chunk.dense, X)


def _dense_int_features(chunk: Any) -> None:
    _set_tensor(chunk.dense, np.ones((ROWS, N_FEATURES), dtype=np.int64))


def _labels_not_binary(chunk: Any) -> None:
    _set_tensor(chunk.labels, np.full(ROWS, 2.0))


def _labels_nan(chunk: Any) -> None:
    _set_tensor(chunk.labels, np.full(ROWS, np.nan))


def _no_features(chunk: Any) -> None:
    chunk.ClearField("sparse")


def _missing_partition() -> Messages:
    messages = _replacement()
    return messages[:2]  # the header lists partitions 1 and 3; rows arrive for 1 only


BAD_PLACEMENTS: dict[str, Callable[[], Messages]] = {
    "empty stream": lambda: [],
    "header missing": lambda: _replacement()[1:],
    "second header": _second_header,
    "chunk for a partition not in the header": _unknown_partition,
    "features with wrong column count": lambda: _edit_chunk(_replacement(), 1, _wrong_columns),
    "labels of the wrong length": lambda: _edit_chunk(_replacement(), 2, _short_labels),
    "CSR indptr not monotone": lambda: _edit_chunk(_replacement(), 1, _csr_indptr_not_monotone),
    "CSR column index out of range": lambda: _edit_chunk(
        _replacement(), 1, _csr_index_out_of_range
    ),
    "CSR negative column index": lambda: _edit_chunk(_replacement(), 2, _csr_negative_index),
    "CSR nnz mismatch": lambda: _edit_chunk(_replacement(), 1, _csr_nnz_mismatch),
    "NaN in sparse features": lambda: _edit_chunk(_replacement(), 1, _sparse_nan),
    "NaN in dense features": lambda: _edit_chunk(_dense_replacement(), 2, _dense_nan),
    "inf in dense features": lambda: _edit_chunk(_dense_replacement(), 1, _dense_inf),
    "int64 dense features": lambda: _edit_chunk(_dense_replacement(), 1, _dense_int_features),
    "labels the model cannot take": lambda: _edit_chunk(_replacement(), 2, _labels_not_binary),
    "NaN labels": lambda: _edit_chunk(_replacement(), 1, _labels_nan),
    "chunk without features": lambda: _edit_chunk(_replacement(), 1, _no_features),
    "no rows for a listed partition": _missing_partition,
    "unknown model name": lambda: _replacement(model="random_forest"),
    "partition index >= K": lambda: _header_only(lambda h: h.partitions.__setitem__(0, JOB_K)),
    "duplicate partitions": lambda: _header_only(lambda h: h.partitions.__setitem__(1, 1)),
    "coefficient count mismatch": lambda: _header_only(lambda h: h.coefficients.append(1.0)),
    "NaN coefficient": lambda: _header_only(lambda h: h.coefficients.__setitem__(0, math.nan)),
    "negative l2": lambda: _header_only(lambda h: setattr(h, "l2", -1.0)),
    "zero features": lambda: _header_only(lambda h: setattr(h, "n_features", 0)),
    "empty job id": lambda: _header_only(lambda h: setattr(h, "job_id", "")),
}


@pytest.mark.parametrize("build", BAD_PLACEMENTS.values(), ids=BAD_PLACEMENTS.keys())
def test_worker_rejects_malformed_placement(
    worker: WorkerUnderTest, build: Callable[[], Messages]
) -> None:
    placement = worker.logic.jobs()["job-a"]
    messages = build()
    expect_status(INVALID, lambda: worker.stub.PlaceData(iter(messages), timeout=CALL_TIMEOUT))
    worker.servicer.wait_placements_finished(2)
    worker.assert_untouched(1, placement)
    expect_status(PRECONDITION, lambda: worker.gradient(1, epoch=2))
    assert set(worker.logic.jobs()) == {"job-a"}


# ---- message size --------------------------------------------------------------------------------

SMALL_LIMIT = 64 * 1024


def test_oversized_gradient_request_is_resource_exhausted(inproc_servers: Any) -> None:
    worker = placed_worker(inproc_servers, max_message_bytes=SMALL_LIMIT)
    placement = worker.logic.jobs()["job-a"]
    huge = np.zeros(2 * SMALL_LIMIT // 8)
    expect_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        lambda: worker.stub.ComputeGradient(params_request(huge, 1), timeout=CALL_TIMEOUT),
    )
    worker.assert_untouched(1, placement)


def _oversized_chunk(partition: int) -> worker_pb2.PlaceDataRequest:
    rows = 2 * SMALL_LIMIT // (8 * N_FEATURES)
    return worker_pb2.PlaceDataRequest(
        chunk=worker_pb2.PartitionChunk(
            partition=partition,
            dense=wire.tensor_to_proto(np.zeros((rows, N_FEATURES))),
            labels=wire.tensor_to_proto(np.zeros(rows)),
        )
    )


def test_oversized_placement_chunk_is_resource_exhausted(inproc_servers: Any) -> None:
    worker = placed_worker(inproc_servers, max_message_bytes=SMALL_LIMIT)
    placement = worker.logic.jobs()["job-a"]
    header, *_ = _replacement(sparse=False)
    expect_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        lambda: worker.stub.PlaceData(iter([header, _oversized_chunk(1)]), timeout=CALL_TIMEOUT),
    )
    worker.servicer.wait_placements_finished(2)
    worker.assert_untouched(1, placement)
    expect_status(PRECONDITION, lambda: worker.gradient(1, epoch=2))


#: A truncated-stream race shows in about half the attempts; this many make a miss negligible.
ATTEMPTS = 20


def _fail_by_oversized_message(worker: WorkerUnderTest, messages: Messages) -> None:
    expect_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        lambda: worker.stub.PlaceData(iter([*messages, _oversized_chunk(1)]), timeout=CALL_TIMEOUT),
    )


def _fail_by_deadline(worker: WorkerUnderTest, messages: Messages) -> None:
    release = threading.Event()

    def stream() -> Iterator[worker_pb2.PlaceDataRequest]:
        yield from messages
        release.wait(CALL_TIMEOUT)  # never half-close: the call ends by its deadline

    try:
        expect_status(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            lambda: worker.stub.PlaceData(stream(), timeout=0.1),
        )
    finally:
        release.set()


@pytest.mark.parametrize(
    "fail", [_fail_by_oversized_message, _fail_by_deadline], ids=["oversized", "deadline"]
)
def test_cut_short_placement_is_never_installed(
    inproc_servers: Any, fail: Callable[[WorkerUnderTest, Messages], None]
) -> None:
    """The header and all but the last chunk arrive, then the call fails: the half-received
    placement must not replace the installed one (the header's row counts make it incomplete,
    however grpc ends the request stream)."""
    worker = placed_worker(inproc_servers, max_message_bytes=SMALL_LIMIT)
    placement = worker.logic.jobs()["job-a"]
    for attempt in range(ATTEMPTS):
        fail(worker, _replacement(sparse=False)[:-1])
        worker.servicer.wait_placements_finished(2 + attempt)
        assert worker.logic.jobs()["job-a"] is placement, f"installed at attempt {attempt}"
    worker.assert_untouched(1, placement)


@pytest.mark.parametrize(
    "fail", [_fail_by_oversized_message, _fail_by_deadline], ids=["oversized", "deadline"]
)
def test_failed_complete_placement_is_all_or_nothing(
    inproc_servers: Any, fail: Callable[[WorkerUnderTest, Messages], None]
) -> None:
    """Every row arrived and only the end of the call failed. The worker cannot know whether the
    caller saw the failure (grpc sometimes ends the request stream quietly), so it may install
    the placement: then it is exactly the one sent, never a mix. The master, which saw the
    failure, never names that placement's epoch, so it is never used."""
    worker = placed_worker(inproc_servers, max_message_bytes=SMALL_LIMIT)
    placement = worker.logic.jobs()["job-a"]
    replacement = _replacement(sparse=False)
    header = replacement[0].header
    for attempt in range(ATTEMPTS):
        fail(worker, replacement)
        worker.servicer.wait_placements_finished(2 + attempt)
        current = worker.logic.jobs()["job-a"]
        if current is placement:
            continue
        assert current.header.partitions == tuple(header.partitions), f"attempt {attempt}"
        assert current.header.epoch == header.placement_epoch
        assert current.rows == sum(header.rows)


# ---- edge aggregator ---------------------------------------------------------------------------

#: The edge's code: cyclic repetition over 3 workers tolerating 1 straggler, K = 3 partitions.
EDGE_CODE = cyclic_repetition(3, 1)
EDGE_TARGETS = np.ones(EDGE_CODE.n_partitions)


def _edge_worker_placement(row: np.ndarray) -> tuple[tuple[int, ...], tuple[float, ...]]:
    held = tuple(int(j) for j in np.flatnonzero(row))
    return held, tuple(float(row[j]) for j in held)


def _exact_edge_result(params: np.ndarray) -> np.ndarray:
    """``targets @ [g_1..g_K]``: the sum of every partition's gradient."""
    k = EDGE_CODE.n_partitions
    return coded_gradient(tuple(range(k)), tuple(EDGE_TARGETS), k, params)


def place_edge_worker(stub: worker_pb2_grpc.WorkerStub, index: int) -> None:
    held, coefficients = _edge_worker_placement(EDGE_CODE.B[index])
    stub.PlaceData(
        iter(placement_messages("edge-job", held, coefficients, EDGE_CODE.n_partitions)),
        timeout=CALL_TIMEOUT,
    )


@dataclass
class EdgeUnderTest:
    stub: aggregator_pb2_grpc.AggregatorStub
    metrics: AggregatorMetrics
    workers: list[aggregator_pb2.EdgeWorker]
    address: str = ""
    logic: AggregatorLogic | None = None

    def configure(self, job_id: str = "edge-job", **overrides: Any) -> Any:
        fields: dict[str, Any] = {
            "job_id": job_id,
            "workers": self.workers,
            "code": wire.tensor_to_proto(EDGE_CODE.B),
            "targets": wire.tensor_to_proto(EDGE_TARGETS),
            "s_worker": 1,
            "mode": aggregator_pb2.EDGE_MODE_DECODE,
            "worker_deadline_seconds": CALL_TIMEOUT,
            "placement_epoch": 1,
        }
        fields.update(overrides)
        return self.stub.ConfigureJob(
            aggregator_pb2.ConfigureJobRequest(**fields), timeout=CALL_TIMEOUT
        )

    def run_round(
        self, round_: int, job_id: str = "edge-job", params: Any = None
    ) -> aggregator_pb2.EdgeMessage:
        tensor = wire.tensor_to_proto(PARAMS) if params is None else params
        request = aggregator_pb2.RunRoundRequest(
            job_id=job_id, round=round_, params=tensor, placement_epoch=1
        )
        messages = list(self.stub.RunRound(request, timeout=CALL_TIMEOUT))
        assert len(messages) == 1
        return messages[0]

    def assert_exact(self, round_: int) -> aggregator_pb2.EdgeMessage:
        message = self.run_round(round_)
        vector = wire.tensor_from_proto(message.vector, "vector", dtype="float64")
        np.testing.assert_allclose(vector, _exact_edge_result(PARAMS), rtol=1e-9, atol=1e-12)
        return message


def start_edge(servers: Any, workers: list[aggregator_pb2.EdgeWorker]) -> EdgeUnderTest:
    metrics = AggregatorMetrics()
    logic = AggregatorLogic("edge-test", GrpcWorkerClient, metrics)
    address = servers.serve(
        [
            (
                aggregator_pb2_grpc.add_AggregatorServicer_to_server,
                AggregatorServicer(logic),
                "edgecode.v1.Aggregator",
            )
        ]
    )
    return EdgeUnderTest(
        aggregator_pb2_grpc.AggregatorStub(servers.channel(address)),
        metrics,
        workers,
        address,
        logic,
    )


def real_edge_workers(servers: Any, indices: range) -> list[aggregator_pb2.EdgeWorker]:
    workers = []
    for index in indices:
        _, stub, address, _ = start_worker(servers, name=f"edge-w{index}")
        place_edge_worker(stub, index)
        workers.append(aggregator_pb2.EdgeWorker(name=f"edge-w{index}", address=address))
    return workers


def test_the_masters_rounds_share_one_stream_per_edge_and_job(
    edge: EdgeUnderTest,
) -> None:
    """The master's transport on RunRounds: every round of a job on one stream, each the exact
    decoded vector as one message; a round the edge refuses (a job it does not know) fails
    alone with its status, and the next round on the stream is answered."""
    edge.configure()
    transport = GrpcTransport(streams=True)
    node = Node("edge-test", edge.address)
    try:
        for round_ in (1, 2, 3):
            (message,) = list(
                transport.run_round(node, "edge-job", round_, PARAMS, 1, CALL_TIMEOUT)
            )
            np.testing.assert_allclose(
                message.vector, _exact_edge_result(PARAMS), rtol=1e-9, atol=1e-12
            )
            assert message.sender == "edge-test"
        with pytest.raises(grpc.RpcError) as info:
            list(transport.run_round(node, "no-such-job", 4, PARAMS, 1, CALL_TIMEOUT))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no-such-job" in info.value.details()
        (message,) = list(transport.run_round(node, "edge-job", 5, PARAMS, 1, CALL_TIMEOUT))
        np.testing.assert_allclose(
            message.vector, _exact_edge_result(PARAMS), rtol=1e-9, atol=1e-12
        )
        assert len(transport._conversations) == 2  # (edge, job) pairs: edge-job and no-such-job
        transport.drop_job(node, "no-such-job", is_edge=True)
        assert list(transport._conversations) == [(edge.address, "edge-job")]
    finally:
        transport.close()
        assert edge.logic is not None
        edge.logic.close()  # its streams to the workers end before the servers stop


def test_a_forward_round_on_the_stream_ends_after_its_workers_vectors(
    edge: EdgeUnderTest,
) -> None:
    """FORWARD mode on RunRounds: each worker's vector as a message, then the round's end."""
    edge.configure(mode=aggregator_pb2.EDGE_MODE_FORWARD, code=None, targets=None)
    transport = GrpcTransport(streams=True)
    try:
        for round_ in (1, 2):
            messages = list(
                transport.run_round(
                    Node("edge-test", edge.address), "edge-job", round_, PARAMS, 1, CALL_TIMEOUT
                )
            )
            assert sorted(m.sender for m in messages) == ["edge-w0", "edge-w1", "edge-w2"]
    finally:
        transport.close()
        assert edge.logic is not None
        edge.logic.close()


@pytest.fixture
def edge(inproc_servers: Any) -> EdgeUnderTest:
    edge = start_edge(inproc_servers, real_edge_workers(inproc_servers, range(3)))
    assert edge.configure().workers == 3
    edge.assert_exact(1)
    return edge


BAD_CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "more code rows than workers": {"code": wire.tensor_to_proto(np.vstack([EDGE_CODE.B] * 2))},
    "fewer code rows than workers": {"code": wire.tensor_to_proto(EDGE_CODE.B[:2])},
    "targets of the wrong length": {"targets": wire.tensor_to_proto(np.ones(2))},
    "targets missing": {"targets": common_pb2.Tensor()},
    "code missing": {"code": common_pb2.Tensor()},
    "NaN in the code": {"code": wire.tensor_to_proto(np.where(EDGE_CODE.B != 0, np.nan, 0.0))},
    "int32 code": {"code": wire.tensor_to_proto(np.ones((3, 3), dtype=np.int32))},
    "mode unspecified": {"mode": aggregator_pb2.EDGE_MODE_UNSPECIFIED},
    "mode out of the enum": {"mode": 7},
    "s_worker >= workers": {"s_worker": 3},
    "negative s_worker": {"s_worker": -1},
    "zero deadline": {"worker_deadline_seconds": 0.0},
    "negative deadline": {"worker_deadline_seconds": -1.0},
    "no workers": {"workers": []},
}


@pytest.mark.parametrize("overrides", BAD_CONFIGURATIONS.values(), ids=BAD_CONFIGURATIONS.keys())
def test_edge_rejects_bad_configuration(edge: EdgeUnderTest, overrides: dict[str, Any]) -> None:
    # Same job id as the configured job: a refused configuration must not replace it.
    expect_status(INVALID, lambda: edge.configure(**overrides))
    edge.assert_exact(2)
    expect_status(PRECONDITION, lambda: edge.run_round(2, job_id="other-job"))


def test_edge_rejects_workers_without_address(edge: EdgeUnderTest) -> None:
    nameless = [aggregator_pb2.EdgeWorker(name=f"x{i}") for i in range(3)]
    expect_status(INVALID, lambda: edge.configure(workers=nameless))
    edge.assert_exact(2)


def test_edge_rejects_nan_deadline(edge: EdgeUnderTest) -> None:
    # Same job id as the configured job: the refused configuration must not replace it.
    expect_status(INVALID, lambda: edge.configure(worker_deadline_seconds=math.nan))
    edge.assert_exact(2)
    expect_status(PRECONDITION, lambda: edge.run_round(3, job_id="other-job"))


def test_edge_unknown_job_is_failed_precondition(edge: EdgeUnderTest) -> None:
    expect_status(PRECONDITION, lambda: edge.run_round(2, job_id="no-such-job"))
    edge.assert_exact(2)


def test_edge_rejects_malformed_round_params(edge: EdgeUnderTest) -> None:
    for params in (BAD_PARAMS["NaN"], BAD_PARAMS["dtype int32"], BAD_PARAMS["2-D params"]):
        expect_status(INVALID, lambda params=params: edge.run_round(2, params=params))
    edge.assert_exact(2)


def _fake_gradients() -> dict[str, common_pb2.Tensor]:
    return {
        "wrong length": wire.tensor_to_proto(np.zeros(N_PARAMS + 3)),
        "empty": wire.tensor_to_proto(np.zeros(0)),
        "NaN": wire.tensor_to_proto(np.full(N_PARAMS, np.nan)),
        "int32": wire.tensor_to_proto(np.zeros(N_PARAMS, dtype=np.int32)),
        "bytes not matching shape": _tensor("float64", [N_PARAMS], b"\0" * 8),
    }


class MaliciousWorker(worker_pb2_grpc.WorkerServicer):
    """A peer that answers every round at once with a malformed gradient."""

    def __init__(self, gradient: common_pb2.Tensor) -> None:
        self.gradient = gradient
        self.calls = 0

    def ComputeGradient(self, request: Any, context: Any) -> Any:
        self.calls += 1
        return worker_pb2.ComputeGradientResponse(
            job_id=request.job_id, round=request.round, worker="evil", gradient=self.gradient
        )

    def ComputeGradients(self, requests: Any, context: Any) -> Any:
        """The edge's stream: the same malformed answer to every round, its sequence echoed."""

        def answer(request: Any, stop: threading.Event) -> bytes:
            response = self.ComputeGradient(request, None)
            response.sequence = request.sequence
            return bytes(response.SerializeToString())

        return serve_conversation(
            requests,
            lambda r, stop: [answer(r, stop)],
            lambda r: int(r.sequence),
            lambda r: bool(r.cancel),
            _no_answer,
        )


class GatedWorker(worker_pb2_grpc.WorkerServicer):
    """A real worker servicer that answers a round only after ``ready(round)``: the honest
    workers wait until the edge has taken that round's malicious answer, so the test checks that
    it was REJECTED, not merely cancelled as a late straggler."""

    def __init__(self, inner: WorkerServicer, ready: Callable[[int], bool]) -> None:
        self.inner = inner
        self.ready = ready

    def PlaceData(self, request_iterator: Any, context: Any) -> Any:
        return self.inner.PlaceData(request_iterator, context)

    def ComputeGradient(self, request: Any, context: Any) -> Any:
        deadline = time.monotonic() + CALL_TIMEOUT
        while not self.ready(request.round) and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.inner.ComputeGradient(request, context)

    def ComputeGradients(self, requests: Any, context: Any) -> Any:
        """The edge's stream, each round answered only after ``ready(round)``."""

        def answer(request: Any, stop: threading.Event) -> bytes:
            deadline = time.monotonic() + CALL_TIMEOUT
            while not self.ready(request.round) and time.monotonic() < deadline:
                time.sleep(0.005)
            return self.inner._gradient(request, stop)

        return serve_conversation(
            requests,
            lambda r, stop: [answer(r, stop)],
            lambda r: int(r.sequence),
            lambda r: bool(r.cancel),
            self.inner._gradient_error,
        )


def _no_answer(request: Any, exc: BaseException) -> None:
    return None


@pytest.mark.parametrize("kind", list(_fake_gradients()))
def test_edge_treats_malformed_worker_gradient_as_straggler(inproc_servers: Any, kind: str) -> None:
    evil = MaliciousWorker(_fake_gradients()[kind])
    evil_address = inproc_servers.serve([(add_worker_servicer, evil, "edgecode.v1.Worker")])
    edge_metrics: list[AggregatorMetrics] = []

    def evil_answer_taken(round_: int) -> bool:
        """The edge has observed the malicious worker's answer of rounds 1..round_."""
        value = edge_metrics[0].registry.get_sample_value(
            "edgecode_edge_worker_response_seconds_count", {"worker": "edge-w0"}
        )
        return (value or 0.0) >= round_

    workers = [aggregator_pb2.EdgeWorker(name="edge-w0", address=evil_address)]
    for index in (1, 2):
        metrics = WorkerMetrics()
        logic = WorkerLogic(f"edge-w{index}", metrics=metrics)
        gated = GatedWorker(WorkerServicer(logic, metrics), evil_answer_taken)
        address = inproc_servers.serve([(add_worker_servicer, gated, "edgecode.v1.Worker")])
        place_edge_worker(worker_pb2_grpc.WorkerStub(inproc_servers.channel(address)), index)
        workers.append(aggregator_pb2.EdgeWorker(name=f"edge-w{index}", address=address))
    edge = start_edge(inproc_servers, workers)
    edge_metrics.append(edge.metrics)
    edge.configure()

    for round_ in (1, 2):
        message = edge.assert_exact(round_)
        assert sorted(message.combined) == ["edge-w1", "edge-w2"]
        timing = {t.node: t for t in message.timings}
        assert not timing["edge-w0"].arrived
        assert timing["edge-w1"].arrived and timing["edge-w2"].arrived
    assert evil.calls == 2
    registry = edge.metrics.registry
    assert registry.get_sample_value("edgecode_edge_stragglers_total") == 2
    # Observed (the answer was taken and refused), not cancelled: one latency sample per round.
    assert (
        registry.get_sample_value(
            "edgecode_edge_worker_response_seconds_count", {"worker": "edge-w0"}
        )
        == 2
    )


# ---- coordinator -------------------------------------------------------------------------------


@dataclass
class CoordinatorUnderTest:
    stub: coordinator_pb2_grpc.CoordinatorStub

    def register(self, **node: Any) -> Any:
        return self.stub.Register(
            coordinator_pb2.RegisterRequest(node=coordinator_pb2.Node(**node)),
            timeout=CALL_TIMEOUT,
        )

    def names(self) -> set[str]:
        cluster = self.stub.GetCluster(
            coordinator_pb2.GetClusterRequest(include_dead=True), timeout=CALL_TIMEOUT
        )
        return {n.name for n in cluster.nodes}

    def plan(self) -> coordinator_pb2.PlanResponse:
        return self.stub.GetPlan(coordinator_pb2.GetPlanRequest(partitions=4), timeout=CALL_TIMEOUT)

    def report(self, *timings: tuple[str, float, float]) -> int:
        request = coordinator_pb2.ReportTimingsRequest(
            timings=[
                coordinator_pb2.WorkerTiming(worker=w, compute_seconds=s, load_fraction=f)
                for w, s, f in timings
            ],
            round_seconds=0.1,
        )
        return int(self.stub.ReportTimings(request, timeout=CALL_TIMEOUT).measurements)


MEMBERS = {"edge-0", "edge-0-w0", "edge-0-w1"}


@pytest.fixture
def coordinator(inproc_servers: Any) -> CoordinatorUnderTest:
    # Nodes are never declared dead during a test (dead_after is long).
    logic = CoordinatorLogic(heartbeat_seconds=1.0, dead_after_seconds=3600.0)
    address = inproc_servers.serve(
        [
            (
                coordinator_pb2_grpc.add_CoordinatorServicer_to_server,
                CoordinatorServicer(logic),
                "edgecode.v1.Coordinator",
            )
        ]
    )
    coordinator = CoordinatorUnderTest(
        coordinator_pb2_grpc.CoordinatorStub(inproc_servers.channel(address))
    )
    coordinator.register(name="edge-0", role="edge", address="127.0.0.1:1")
    for w in (0, 1):
        coordinator.register(
            name=f"edge-0-w{w}", role="worker", address=f"127.0.0.1:{10 + w}", edge="edge-0"
        )
    assert coordinator.names() == MEMBERS
    return coordinator


BAD_NODES: dict[str, dict[str, Any]] = {
    "unknown role": {"name": "n1", "role": "master", "address": "127.0.0.1:5"},
    "empty role": {"name": "n1", "role": "", "address": "127.0.0.1:5"},
    "worker without an edge": {"name": "n1", "role": "worker", "address": "127.0.0.1:5"},
    "negative link": {
        "name": "n1",
        "role": "worker",
        "address": "127.0.0.1:5",
        "edge": "edge-0",
        "link_seconds": -0.5,
    },
    "NaN link": {"name": "n1", "role": "edge", "address": "127.0.0.1:5", "link_seconds": math.nan},
    "no name": {"name": "", "role": "edge", "address": "127.0.0.1:5"},
    "no address": {"name": "n1", "role": "edge", "address": ""},
    # A valid name re-registering with bad fields must not replace the registered node.
    "member re-registering badly": {
        "name": "edge-0-w1",
        "role": "worker",
        "address": "127.0.0.1:11",
        "edge": "edge-0",
        "link_seconds": -1.0,
    },
}


@pytest.mark.parametrize("node", BAD_NODES.values(), ids=BAD_NODES.keys())
def test_coordinator_rejects_bad_registration(
    coordinator: CoordinatorUnderTest, node: dict[str, Any]
) -> None:
    before = coordinator.plan()
    expect_status(INVALID, lambda: coordinator.register(**node))
    assert coordinator.names() == MEMBERS
    assert coordinator.plan() == before
    coordinator.register(name="edge-0-w2", role="worker", address="127.0.0.1:12", edge="edge-0")
    assert coordinator.names() == MEMBERS | {"edge-0-w2"}


def test_coordinator_ignores_timings_of_a_worker_not_in_the_plan(
    coordinator: CoordinatorUnderTest,
) -> None:
    """ "A worker not in the plan", as the coordinator sees it: the master (or anyone) reports
    timings naming a worker that never registered. There is no status to return for part of a
    batch, so the interpretation tested is: such entries are ignored (``measurements == 0``), the
    call succeeds, the unknown worker does not become a member and the plan is unchanged. Entries
    for real members in the same batch still count; a load fraction outside (0, 1] is ignored
    the same way. A number that is not finite or is negative is a malformed request: refused
    whole with INVALID_ARGUMENT (one infinite time would make every later plan fail)."""
    before = coordinator.plan()
    assert coordinator.report(("ghost", 0.01, 0.5), ("edge-9-w0", 0.02, 0.25)) == 0
    for bad in (math.nan, math.inf, -1.0):
        expect_status(
            INVALID,
            lambda bad=bad: coordinator.report(("edge-0-w0", 0.01, 0.5), ("edge-0-w1", bad, 0.5)),
        )
    assert coordinator.report(("edge-0-w0", 0.01, 0.0), ("edge-0-w0", 0.01, 1.5)) == 0
    assert coordinator.names() == MEMBERS
    assert coordinator.plan() == before
    # The counter does move for a member, so the zeros above are meaningful.
    assert coordinator.report(("ghost", 0.01, 0.5), ("edge-0-w0", 0.01, 0.5)) == 1


# ---- master and the whole cluster (separate processes) ---------------------------------------

SERVICES = {
    "coordinator": "edgecode.v1.Coordinator",
    "master": "edgecode.v1.Master",
    "aggregator": "edgecode.v1.Aggregator",
    "worker": "edgecode.v1.Worker",
}
REFERENCE_JOB = "bad-input-reference"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(default_setup(), workdir=tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def master(cluster: LocalCluster) -> Iterator[MasterClient]:
    client = cluster.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def reference_job(master: MasterClient) -> master_pb2.JobStatus:
    """A finished job whose state every bad master call must leave alone."""
    config = JobConfig(scheme="uncoded", rounds=3, job_id=REFERENCE_JOB, checkpoint_every=0)
    assert master.submit(config) == REFERENCE_JOB
    status = master.wait(REFERENCE_JOB, timeout=120)
    assert status.state == master_pb2.JOB_STATE_SUCCEEDED, status.message
    return status


def _assert_reference_untouched(master: MasterClient, reference: master_pb2.JobStatus) -> None:
    status = master.status(REFERENCE_JOB, include_params=True)
    assert status.state == master_pb2.JOB_STATE_SUCCEEDED
    assert status.round == reference.round == 3
    assert status.spec == reference.spec
    np.testing.assert_array_equal(params_of(status), params_of(reference))


def _submit_raw(cluster: LocalCluster, spec: master_pb2.JobSpec) -> str:
    channel = cluster.channel(cluster.master_address)
    try:
        stub = master_pb2_grpc.MasterStub(channel)
        return str(
            stub.SubmitJob(master_pb2.SubmitJobRequest(spec=spec), timeout=CALL_TIMEOUT).job_id
        )
    finally:
        channel.close()


def _spec(**overrides: Any) -> master_pb2.JobSpec:
    spec = config_to_proto(JobConfig(scheme="uncoded", rounds=2, checkpoint_every=0))
    for key, value in overrides.items():
        setattr(spec, key, value)
    return spec


BAD_SPECS: dict[str, dict[str, Any]] = {
    "unknown scheme": {"scheme": "mds"},
    "unknown scheme, same id as a finished job": {"scheme": "mds", "job_id": REFERENCE_JOB},
    "negative rounds": {"rounds": -1},
    "too many rounds": {"rounds": 10**9},
    "job id with a space": {"job_id": "bad id"},
    "job id with a slash": {"job_id": "../etc"},
    "job id too long": {"job_id": "x" * 65},
    "negative deadline": {"round_deadline_seconds": -1.0},
    "NaN l2": {"l2": math.nan},
    "negative partitions": {"partitions": -2},
}


@pytest.mark.parametrize("overrides", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_master_rejects_bad_job_spec(
    cluster: LocalCluster,
    master: MasterClient,
    reference_job: master_pb2.JobStatus,
    overrides: dict[str, Any],
) -> None:
    expect_status(INVALID, lambda: _submit_raw(cluster, _spec(**overrides)))
    _assert_reference_untouched(master, reference_job)


def test_master_rejects_zero_rounds(
    cluster: LocalCluster, master: MasterClient, reference_job: master_pb2.JobStatus
) -> None:
    job_id = "zero-rounds"
    try:
        expect_status(
            INVALID,
            lambda: _submit_raw(cluster, _spec(rounds=0, job_id=job_id)),
        )
    finally:
        _cancel_if_started(master, job_id)
    _assert_reference_untouched(master, reference_job)


LATE_VALIDATED: dict[str, dict[str, Any]] = {
    "NaN round deadline": {"round_deadline_seconds": math.nan},
    "infinite round deadline": {"round_deadline_seconds": math.inf},
    "negative learning rate": {"learning_rate": -1.0},
    "unknown optimizer": {"optimizer": "rmsprop"},
    "unknown model": {"model": "svm"},
    "unknown data set": {"dataset": "no-such-data"},
}


@pytest.mark.parametrize("overrides", LATE_VALIDATED.values(), ids=LATE_VALIDATED.keys())
def test_master_rejects_spec_it_cannot_run(
    cluster: LocalCluster,
    master: MasterClient,
    reference_job: master_pb2.JobStatus,
    overrides: dict[str, Any],
) -> None:
    job_id = "late-validated"
    try:
        expect_status(
            INVALID,
            lambda: _submit_raw(cluster, _spec(job_id=job_id, **overrides)),
        )
    finally:
        _cancel_if_started(master, job_id)
    _assert_reference_untouched(master, reference_job)


def _cancel_if_started(master: MasterClient, job_id: str) -> None:
    """Stop a job that a wrongly accepted request started, so the shared cluster stays idle."""
    try:
        master.cancel(job_id)
    except grpc.RpcError as error:
        assert error.code() == PRECONDITION
        return
    deadline = time.monotonic() + 60
    while master.status(job_id).state not in FINAL_STATES:
        assert time.monotonic() < deadline, f"job {job_id} did not stop after cancel"
        time.sleep(0.05)


@pytest.mark.parametrize("method", ["GetJob", "CancelJob", "WatchJob"])
def test_master_unknown_job_is_failed_precondition(
    cluster: LocalCluster,
    master: MasterClient,
    reference_job: master_pb2.JobStatus,
    method: str,
) -> None:
    channel = cluster.channel(cluster.master_address)
    try:
        stub = master_pb2_grpc.MasterStub(channel)
        request: Any = (
            master_pb2.CancelJobRequest(job_id="no-such-job")
            if method == "CancelJob"
            else master_pb2.GetJobRequest(job_id="no-such-job")
        )
        expect_status(PRECONDITION, lambda: getattr(stub, method)(request, timeout=CALL_TIMEOUT))
    finally:
        channel.close()
    _assert_reference_untouched(master, reference_job)


def test_every_service_reports_serving(cluster: LocalCluster) -> None:
    assert len(cluster.processes) == 1 + 1 + 2 + 8
    for process in cluster.processes.values():
        channel = cluster.channel(process.address)
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", SERVICES[process.role]):
                response = stub.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT
                )
                assert response.status == health_pb2.HealthCheckResponse.SERVING, (
                    process.name,
                    service,
                )
            expect_status(
                grpc.StatusCode.NOT_FOUND,
                lambda stub=stub: stub.Check(
                    health_pb2.HealthCheckRequest(service="edgecode.v1.Nothing"),
                    timeout=CALL_TIMEOUT,
                ),
            )
        finally:
            channel.close()


def test_reflection_lists_the_services(cluster: LocalCluster) -> None:
    for process in cluster.processes.values():
        channel = cluster.channel(process.address)
        try:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            responses = list(
                stub.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                    timeout=CALL_TIMEOUT,
                )
            )
        finally:
            channel.close()
        assert len(responses) == 1
        names = {s.name for s in responses[0].list_services_response.service}
        assert names == {
            SERVICES[process.role],
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }, process.name
