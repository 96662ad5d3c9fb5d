"""Coded sparse matrix products as a service, over real gRPC.

- Every tolerated straggler set: n = 6 in-process workers (the real servicers on real servers,
  port 0); for each k-subset S the workers outside S are held (they answer only when cancelled),
  so the master must decode from exactly S. Sparse, dense-MDS and polynomial codes.
- Real processes: a :class:`~edgecode.cluster.local.LocalCluster`; workers are killed and paused.
- Bad input: clear status codes, and the services keep working afterwards.
"""

from __future__ import annotations

import itertools
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import scipy.sparse as sp

from edgecode import wire
from edgecode.cluster.local import LocalCluster, default_setup
from edgecode.errors import RoundFailed, UnknownJob
from edgecode.master.client import product_of
from edgecode.master.matrix import MatrixMaster
from edgecode.master.service import MasterServicer
from edgecode.master.transport import GrpcMatrixTransport, GrpcTransport
from edgecode.records import MatmulSpec
from edgecode.runtime.metrics import MasterMetrics, WorkerMetrics
from edgecode.v1 import common_pb2, master_pb2, master_pb2_grpc, worker_pb2, worker_pb2_grpc
from edgecode.worker.logic import WorkerLogic
from edgecode.worker.matrix import MatrixWorker
from edgecode.worker.service import WorkerServicer, add_worker_servicer

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
CALL_TIMEOUT = 20.0
N, K = 6, 4
TOLERANCE = 1e-8


def relative_error(value: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


def random_matrix(rows: int = 60, cols: int = 45, seed: int = 3) -> Any:
    return sp.random(rows, cols, density=0.1, format="csr", rng=np.random.default_rng(seed))


class HeldWorker:
    """The real worker servicer; Multiply of a held worker answers only once it is cancelled
    (a straggler the master must not wait for). ``corrupt`` makes it answer a result one entry
    too long (a buggy or malicious worker)."""

    def __init__(self, inner: WorkerServicer) -> None:
        self.inner = inner
        self.held = threading.Event()
        self.corrupt = False
        self.multiplies = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def Multiply(self, request: Any, context: Any) -> Any:
        self.multiplies += 1
        if self.held.is_set():
            done = threading.Event()
            context.add_callback(done.set)
            done.wait(CALL_TIMEOUT)
        response = self.inner.Multiply(request, context)
        if self.corrupt and response is not None:
            product = wire.tensor_from_proto(response.product, "product")
            wire.tensor_to_proto(np.append(product, 1.0), out=response.product)
        return response


class Fleet:
    def __init__(self, servers: Any, n: int = N) -> None:
        self.servers = servers
        self.workers: list[HeldWorker] = []
        self.addresses: list[str] = []
        self.services: list[Any] = []
        for i in range(n):
            metrics = WorkerMetrics()
            logic = WorkerLogic(f"w{i}", metrics=metrics)
            matrix = MatrixWorker(f"w{i}", rng=np.random.default_rng(i), metrics=metrics)
            held = HeldWorker(WorkerServicer(logic, metrics, matrix))
            self.workers.append(held)
            self.addresses.append(
                servers.serve([(add_worker_servicer, held, "edgecode.v1.Worker")])
            )
            self.services.append(servers.services[-1])
        self.transport = GrpcTransport()
        self.metrics = MasterMetrics()
        self.master = MatrixMaster(
            GrpcMatrixTransport(self.transport), lambda: self.addresses, self.metrics
        )

    def kill(self, worker: int) -> None:
        """Stop worker ``worker``'s server: its calls and health checks fail (UNAVAILABLE)."""
        self.services[worker].server.stop(grace=None).wait(10)

    def hold_all_but(self, answering: set[int]) -> None:
        for i, worker in enumerate(self.workers):
            if i in answering:
                worker.held.clear()
            else:
                worker.held.set()


def held_blocks(fleet: Fleet, worker: int) -> dict[str, dict[int, Any]]:
    matrix = fleet.workers[worker].inner.matrix
    assert matrix is not None
    return matrix.blocks()


@pytest.fixture
def fleet(inproc_servers: Any) -> Iterator[Fleet]:
    fleet = Fleet(inproc_servers)
    try:
        yield fleet
    finally:
        for worker in fleet.workers:
            worker.held.clear()
        fleet.transport.close()


@pytest.mark.parametrize("scheme", ["sparse", "dense", "poly"])
def test_every_k_subset_decodes_exactly(fleet: Fleet, scheme: str) -> None:
    a = random_matrix()
    job = fleet.master.submit(MatmulSpec(scheme=scheme, n=N, k=K, deadline_seconds=10), a)
    rng = np.random.default_rng(7)
    for subset in itertools.combinations(range(N), K):
        fleet.hold_all_but(set(subset))
        x = rng.standard_normal(a.shape[0])
        product = fleet.master.multiply(job.job_id, x)
        assert product.decoded_from == subset
        assert relative_error(product.value, a.T @ x) <= TOLERANCE
        stragglers = {int(t.node) for t in product.timings if not t.arrived}
        assert stragglers == set(range(N)) - set(subset)
    # A^T B: the columns of B are several vectors through the same code.
    fleet.hold_all_but({0, 2, 3, 5})
    b = rng.standard_normal((a.shape[0], 3))
    product = fleet.master.multiply(job.job_id, b)
    assert product.value.shape == (a.shape[1], 3)
    assert relative_error(product.value, a.T @ b) <= TOLERANCE


def test_sparse_blocks_are_sparser_than_dense(fleet: Fleet) -> None:
    a = random_matrix(200, 160)
    sparse = fleet.master.submit(MatmulSpec(scheme="sparse", n=N, k=K, job_id="s"), a)
    dense = fleet.master.submit(MatmulSpec(scheme="dense", n=N, k=K, job_id="d"), a)
    assert sparse.code.weight == 2 and dense.code.weight == K
    assert sum(sparse.block_nnz) < 0.6 * sum(dense.block_nnz)
    assert sum(sparse.block_bytes) < 0.6 * sum(dense.block_bytes)
    # and both are held by the workers, reported in the worker metrics
    held = held_blocks(fleet, 0)
    assert set(held) == {"s", "d"}
    fleet.master.drop("s")
    assert set(held_blocks(fleet, 0)) == {"d"}


def test_uncoded_waits_for_every_worker(fleet: Fleet) -> None:
    a = random_matrix()
    job = fleet.master.submit(MatmulSpec(scheme="uncoded", n=N, k=N, deadline_seconds=1.0), a)
    x = np.linspace(-1, 1, a.shape[0])
    assert relative_error(fleet.master.multiply(job.job_id, x).value, a.T @ x) <= TOLERANCE
    fleet.hold_all_but(set(range(N - 1)))
    with pytest.raises(RoundFailed, match="5 of the 6 results"):
        fleet.master.multiply(job.job_id, x)
    fleet.hold_all_but(set(range(N)))
    assert relative_error(fleet.master.multiply(job.job_id, x).value, a.T @ x) <= TOLERANCE


def test_a_result_of_the_wrong_length_is_a_straggler(fleet: Fleet) -> None:
    a = random_matrix()
    coded = fleet.master.submit(MatmulSpec(scheme="sparse", n=N, k=K, job_id="c"), a)
    plain = fleet.master.submit(
        MatmulSpec(scheme="uncoded", n=N, k=N, job_id="u", deadline_seconds=5), a
    )
    fleet.workers[1].corrupt = True
    x = np.ones(a.shape[0])
    product = fleet.master.multiply(coded.job_id, x)
    assert 1 not in product.decoded_from
    assert relative_error(product.value, a.T @ x) <= TOLERANCE
    with pytest.raises(RoundFailed, match=r"sent shape \[\d+\], expected"):
        fleet.master.multiply(plain.job_id, x)
    fleet.workers[1].corrupt = False
    assert relative_error(fleet.master.multiply(plain.job_id, x).value, a.T @ x) <= TOLERANCE


# ---- bad input over the master's and the worker's gRPC APIs -----------------------------------


@pytest.fixture
def master_stub(fleet: Fleet, inproc_servers: Any) -> master_pb2_grpc.MasterStub:
    servicer = MasterServicer(logic=None, matrix=fleet.master)  # type: ignore[arg-type]
    address = inproc_servers.serve(
        [(master_pb2_grpc.add_MasterServicer_to_server, servicer, "edgecode.v1.Master")]
    )
    return master_pb2_grpc.MasterStub(inproc_servers.channel(address))


def submit_messages(spec: master_pb2.MatmulSpec, a: Any) -> list[master_pb2.SubmitMatmulRequest]:
    spec.rows, spec.cols, spec.nnz = a.shape[0], a.shape[1], a.nnz
    return [
        master_pb2.SubmitMatmulRequest(spec=spec),
        master_pb2.SubmitMatmulRequest(
            chunk=master_pb2.MatrixChunk(first_row=0, rows=wire.csr_to_proto(a))
        ),
    ]


def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def matmul_request(job_id: str, x: np.ndarray) -> master_pb2.MatmulRequest:
    return master_pb2.MatmulRequest(job_id=job_id, operand=wire.tensor_to_proto(x))


def test_master_bad_input(master_stub: master_pb2_grpc.MasterStub, tmp_path: Any) -> None:
    a = random_matrix()
    spec = master_pb2.MatmulSpec(job_id="good", scheme="sparse", n=N, k=K)
    job = master_stub.SubmitMatmul(iter(submit_messages(spec, a)), timeout=CALL_TIMEOUT)
    assert (job.rows, job.cols, len(job.block_nnz)) == (a.shape[0], a.shape[1], N)
    t = a.shape[0]

    def matmul(job_id: str, x: np.ndarray) -> Any:
        return master_stub.Matmul(matmul_request(job_id, x), timeout=CALL_TIMEOUT)

    # x of the wrong length, non-finite x, a 3-D x, a vector for an unknown job
    assert code_of(lambda: matmul("good", np.ones(t + 1))) == INVALID
    assert code_of(lambda: matmul("good", np.full(t, np.nan))) == INVALID
    assert code_of(lambda: matmul("good", np.ones((t, 2, 2)))) == INVALID
    assert code_of(lambda: matmul("nope", np.ones(t))) == PRECONDITION
    bad_dtype = master_pb2.MatmulRequest(
        job_id="good", operand=wire.tensor_to_proto(np.ones(t, dtype=np.int64))
    )
    assert code_of(lambda: master_stub.Matmul(bad_dtype, timeout=CALL_TIMEOUT)) == INVALID

    def submit(messages: list[master_pb2.SubmitMatmulRequest]) -> Any:
        return master_stub.SubmitMatmul(iter(messages), timeout=CALL_TIMEOUT)

    bad = a.copy()
    bad.data[0] = np.inf
    assert code_of(lambda: submit(submit_messages(master_pb2.MatmulSpec(n=N, k=K), bad))) == (
        INVALID
    )
    # announced shape / nnz that do not match what arrives; a chunk before the spec
    wrong = submit_messages(master_pb2.MatmulSpec(n=N, k=K), a)
    wrong[0].spec.nnz += 1
    assert code_of(lambda: submit(wrong)) == INVALID
    assert code_of(lambda: submit(submit_messages(master_pb2.MatmulSpec(n=N, k=K), a)[::-1])) == (
        INVALID
    )
    # bad code parameters; more workers than the cluster has; the job id in use
    for spec_args in ({"n": N, "k": N + 1}, {"n": N, "k": K, "scheme": "magic"}, {"n": N, "k": 0}):
        messages = submit_messages(master_pb2.MatmulSpec(**spec_args), a)
        assert code_of(lambda messages=messages: submit(messages)) == INVALID
    assert code_of(lambda: submit(submit_messages(master_pb2.MatmulSpec(n=9, k=K), a))) == (
        PRECONDITION
    )
    assert code_of(lambda: submit(submit_messages(spec, a))) == INVALID
    # a matrix path that does not exist, or is not a matrix
    (tmp_path / "junk.npz").write_bytes(b"not a matrix")
    for path in ("/nonexistent/A.npz", str(tmp_path / "junk.npz")):
        by_path = [
            master_pb2.SubmitMatmulRequest(spec=master_pb2.MatmulSpec(n=N, k=K, matrix_path=path))
        ]
        assert code_of(lambda by_path=by_path: submit(by_path)) == INVALID
    # ... and a good path works
    sp.save_npz(tmp_path / "A.npz", a)
    by_path = [
        master_pb2.SubmitMatmulRequest(
            spec=master_pb2.MatmulSpec(
                job_id="file", scheme="dense", n=N, k=K, matrix_path=str(tmp_path / "A.npz")
            )
        )
    ]
    assert submit(by_path).cols == a.shape[1]
    # the service still works
    x = np.arange(t, dtype=np.float64)
    response = matmul("good", x)
    assert relative_error(product_of(response), a.T @ x) <= TOLERANCE
    assert response.sequence == 1
    assert master_stub.DropMatmul(master_pb2.DropMatmulRequest(job_id="good")).job_id == "good"
    assert code_of(lambda: matmul("good", x)) == PRECONDITION


def block_messages(
    rows: common_pb2.CsrMatrix, header: worker_pb2.BlockHeader
) -> list[worker_pb2.PlaceBlockRequest]:
    return [
        worker_pb2.PlaceBlockRequest(header=header),
        worker_pb2.PlaceBlockRequest(chunk=worker_pb2.BlockChunk(first_row=0, rows=rows)),
    ]


def test_worker_bad_input(fleet: Fleet, inproc_servers: Any) -> None:
    stub = worker_pb2_grpc.WorkerStub(inproc_servers.channel(fleet.addresses[0]))
    block = random_matrix(8, 5)
    header = worker_pb2.BlockHeader(job_id="b", worker_index=0, rows=8, cols=5, nnz=block.nnz)

    def place(messages: list[worker_pb2.PlaceBlockRequest]) -> Any:
        return stub.PlaceBlock(iter(messages), timeout=CALL_TIMEOUT)

    malformed = []
    rows = wire.csr_to_proto(block)
    rows.indptr.CopyFrom(wire.tensor_to_proto(np.arange(9, dtype=np.int64)[::-1].copy()))
    malformed.append(block_messages(rows, header))  # indptr falls
    rows = wire.csr_to_proto(block)
    rows.indices.CopyFrom(wire.tensor_to_proto(np.full(block.nnz, 7, dtype=np.int64)))
    malformed.append(block_messages(rows, header))  # column out of range
    rows = wire.csr_to_proto(block)
    rows.data.CopyFrom(wire.tensor_to_proto(np.full(block.nnz, np.nan)))
    malformed.append(block_messages(rows, header))  # NaN values
    short = worker_pb2.BlockHeader()
    short.CopyFrom(header)
    short.nnz += 1
    malformed.append(block_messages(wire.csr_to_proto(block), short))  # non-zeros missing
    short = worker_pb2.BlockHeader()
    short.CopyFrom(header)
    short.rows = 9
    malformed.append(block_messages(wire.csr_to_proto(block), short))  # rows missing
    malformed.append(block_messages(wire.csr_to_proto(block), header)[::-1])  # no header first
    malformed.append(block_messages(wire.csr_to_proto(block[:, :4]), header))  # wrong width
    bad_id = worker_pb2.BlockHeader()
    bad_id.CopyFrom(header)
    bad_id.job_id = "../etc"
    malformed.append(block_messages(wire.csr_to_proto(block), bad_id))
    for messages in malformed:
        assert code_of(lambda messages=messages: place(messages)) == INVALID
    assert held_blocks(fleet, 0) == {}
    assert place(block_messages(wire.csr_to_proto(block), header)).nnz == block.nnz

    def multiply(job_id: str, x: np.ndarray, sequence: int = 1) -> Any:
        request = worker_pb2.MultiplyRequest(
            job_id=job_id, sequence=sequence, operand=wire.tensor_to_proto(x)
        )
        return stub.Multiply(request, timeout=CALL_TIMEOUT)

    assert code_of(lambda: multiply("b", np.ones(9))) == INVALID
    assert code_of(lambda: multiply("b", np.full(8, np.inf))) == INVALID
    assert code_of(lambda: multiply("other", np.ones(8))) == PRECONDITION
    response = multiply("b", np.ones(8), sequence=5)
    np.testing.assert_allclose(wire.tensor_from_proto(response.product, "p"), block.T @ np.ones(8))
    assert code_of(lambda: multiply("b", np.ones(8), sequence=4)) == PRECONDITION  # stale


def test_unknown_job_in_logic(fleet: Fleet) -> None:
    with pytest.raises(UnknownJob):
        fleet.master.multiply("missing", np.ones(3))
    with pytest.raises(UnknownJob):
        fleet.master.drop("missing")


# ---- A^T B with both operands coded; jobs that heal ----------------------------------------------


def random_rhs(rows: int = 60, cols: int = 30, seed: int = 4) -> Any:
    return sp.random(rows, cols, density=0.1, format="csr", rng=np.random.default_rng(seed))


def nothing_placed(fleet: Fleet) -> bool:
    return all(held_blocks(fleet, i) == {} for i in range(len(fleet.workers)))


@pytest.fixture
def fleet8(inproc_servers: Any) -> Iterator[Fleet]:
    fleet = Fleet(inproc_servers, 8)
    try:
        yield fleet
    finally:
        for worker in fleet.workers:
            worker.held.clear()
        fleet.transport.close()


@pytest.mark.parametrize(
    ("scheme", "k_a", "k_b", "weight"),
    [
        ("sparse", 2, 2, (2, 2)),
        ("poly", 2, 2, (2, 2)),
        ("sparse", 3, 2, (2, 2)),
        ("poly", 3, 2, (3, 2)),
    ],
)
def test_a_t_b_every_k_a_k_b_subset_decodes_and_b_stays_csr(
    fleet8: Fleet, scheme: str, k_a: int, k_b: int, weight: tuple[int, int]
) -> None:
    a, b = random_matrix(), random_rhs()
    spec = MatmulSpec(scheme=scheme, n=8, k=k_a, k_b=k_b, deadline_seconds=10, job_id=scheme)
    job = fleet8.master.submit(spec, a, b)
    want = (a.T @ b).toarray()
    errors = []
    subsets = list(itertools.combinations(range(8), k_a * k_b))
    for subset in subsets:
        fleet8.hold_all_but(set(subset))
        product = fleet8.master.multiply(job.job_id)
        assert product.decoded_from == subset
        errors.append(relative_error(product.value, want))
    errs = np.asarray(errors)
    assert len(errs) == len(subsets) and np.all(np.isfinite(errs)) and np.all(errs <= TOLERANCE)
    status = job.status()
    # the counting bound: ceil(K (n - K + 1) / n) = 3 for K = 4 and for K = 6 (n = 8)
    assert status.weight == weight and status.weight_bound == 3
    widest = max(int(block.nnz) for block in job.rhs.blocks)  # type: ignore[union-attr]
    for i in range(8):
        # B's coded block: CSR on the worker with the non-zeros the master encoded ...
        block = held_blocks(fleet8, i)[job.job_id][i]
        nnz = status.rhs_block_nnz[i]
        assert sp.isspmatrix_csr(block.rhs) and block.rhs.nnz == nnz <= weight[1] * widest
        # ... and CSR on the wire: 8 + 8 bytes per non-zero, 8 per row pointer, a small header
        csr_bytes = 16 * nnz + 8 * (a.shape[0] + 1)
        assert csr_bytes <= status.rhs_block_bytes[i] <= csr_bytes + 256


def test_power_iteration_heals_after_each_death(fleet: Fleet, master_stub: Any) -> None:
    a = random_matrix(80, 50, seed=9)
    for job_id, matrix in (("P", a), ("PT", a.T.tocsr())):
        spec = master_pb2.MatmulSpec(job_id=job_id, scheme="sparse", n=N, k=K, deadline_seconds=5)
        master_stub.SubmitMatmul(iter(submit_messages(spec, matrix)), timeout=CALL_TIMEOUT)
    errors: list[float] = []

    def product(job_id: str, x: np.ndarray) -> np.ndarray:
        response = master_stub.Matmul(matmul_request(job_id, x), timeout=CALL_TIMEOUT)
        return product_of(response)

    def iterate(v: np.ndarray, times: int) -> np.ndarray:
        for _ in range(times):
            y = product("PT", v)  # A v
            errors.append(relative_error(y, a @ v))
            w = product("P", y)  # A^T A v
            errors.append(relative_error(w, a.T @ y))
            v = w / np.linalg.norm(w)
        return v

    def status(job_id: str) -> master_pb2.MatmulJob:
        return master_stub.GetMatmul(master_pb2.GetMatmulRequest(job_id=job_id), timeout=5)

    v = iterate(np.random.default_rng(3).standard_normal(a.shape[1]), 2)
    for deaths, victim in enumerate((1, 4), start=1):
        fleet.kill(victim)
        v = iterate(v, 2)
        for job_id in ("P", "PT"):
            job = status(job_id)
            assert job.state == master_pb2.JOB_STATE_RUNNING
            assert job.replacements == deaths and fleet.addresses[victim] not in job.workers
            assert job.tolerance == N - K  # back to full tolerance after re-placement
    errs = np.asarray(errors)
    assert len(errs) == 12 and np.all(np.isfinite(errs)) and np.all(errs <= TOLERANCE)
    # a third death leaves three workers for k = 4: the job fails, naming them
    fleet.kill(0)
    for _ in range(2):
        try:
            product("P", np.ones(a.shape[0]))
        except grpc.RpcError as failed:
            assert failed.code() == PRECONDITION
            assert "fewer than k=4 workers remain: 3 live" in (failed.details() or "")
            break
    job = status("P")
    assert job.state == master_pb2.JOB_STATE_FAILED
    for victim in (0, 1, 4):
        assert fleet.addresses[victim] in job.message


def test_a_t_b_bad_input_is_refused_before_anything_is_placed(
    fleet: Fleet, master_stub: Any, tmp_path: Any
) -> None:
    a, b = random_matrix(), random_rhs()

    def submit(spec: master_pb2.MatmulSpec, rhs: Any) -> Any:
        messages = submit_messages(spec, a)
        messages[0].spec.rhs_rows, messages[0].spec.rhs_cols = rhs.shape
        messages[0].spec.rhs_nnz = rhs.nnz
        rows = wire.csr_to_proto(rhs)
        messages.append(
            master_pb2.SubmitMatmulRequest(rhs_chunk=master_pb2.MatrixChunk(first_row=0, rows=rows))
        )
        return master_stub.SubmitMatmul(iter(messages), timeout=CALL_TIMEOUT)

    def refused(call: Any, words: str) -> None:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == INVALID, caught.value.details()
        assert words in (caught.value.details() or ""), caught.value.details()
        assert nothing_placed(fleet)

    spec = master_pb2.MatmulSpec(scheme="sparse", n=N, k=2, k_b=2)
    refused(lambda: submit(master_pb2.MatmulSpec(n=N, k=3, k_b=3), b), "k * k_b must be at most n")
    refused(lambda: submit(spec, random_rhs(rows=59)), "must have A's 60 rows")
    nan = b.copy()
    nan.data[0] = np.nan
    refused(lambda: submit(spec, nan), "NaN or infinite")
    sp.save_npz(tmp_path / "B.npz", b.tocsc())
    by_path = master_pb2.MatmulSpec(scheme="sparse", n=N, k=2, k_b=2)
    by_path.rhs_path = str(tmp_path / "B.npz")
    refused(
        lambda: master_stub.SubmitMatmul(iter(submit_messages(by_path, a)), timeout=CALL_TIMEOUT),
        "must be CSR, got CSC",
    )
    no_announce = submit_messages(master_pb2.MatmulSpec(n=N, k=2), a)
    no_announce.append(
        master_pb2.SubmitMatmulRequest(
            rhs_chunk=master_pb2.MatrixChunk(first_row=0, rows=wire.csr_to_proto(b))
        )
    )
    refused(
        lambda: master_stub.SubmitMatmul(iter(no_announce), timeout=CALL_TIMEOUT),
        "B chunks sent without rhs_cols",
    )
    refused(lambda: submit(master_pb2.MatmulSpec(scheme="dense", n=N, k=2, k_b=2), b), "dense")
    # the good job works, and refuses an operand
    good = master_pb2.MatmulSpec(job_id="ab", scheme="sparse", n=N, k=2, k_b=2)
    job = submit(good, b)
    # n = 6, K = 4: the counting bound is 2; the lightest verified pair is (2, 2)
    assert (job.weight_a, job.weight_b, job.weight_bound, job.tolerance) == (2, 2, 2, 2)
    response = master_stub.Matmul(master_pb2.MatmulRequest(job_id="ab"), timeout=CALL_TIMEOUT)
    assert relative_error(product_of(response), (a.T @ b).toarray()) <= TOLERANCE
    with pytest.raises(grpc.RpcError) as caught:
        master_stub.Matmul(matmul_request("ab", np.ones(a.shape[0])), timeout=CALL_TIMEOUT)
    assert caught.value.code() == INVALID


# ---- real processes ----------------------------------------------------------------------------


def test_local_cluster_with_killed_and_paused_workers(tmp_path: Any) -> None:
    setup = default_setup(edges=1, workers_per_edge=N, straggler="none", compute_seconds=0.0)
    a = random_matrix(300, 200, seed=11)
    with LocalCluster(setup, tmp_path / "cluster") as cluster:
        client = cluster.client()
        try:
            job = client.submit_matmul(
                master_pb2.MatmulSpec(job_id="A", scheme="sparse", n=N, k=K, deadline_seconds=5.0),
                a,
            )
            assert sum(job.block_nnz) <= 2 * a.nnz * N / K  # weight 2 of k = 4 blocks each
            rng = np.random.default_rng(5)
            x = rng.standard_normal(a.shape[0])
            response = client.matmul("A", x)
            assert relative_error(product_of(response), a.T @ x) <= TOLERANCE
            # a killed worker is found (its call fails, its health check too) and its block
            # re-encoded onto the least loaded live worker (no spare here: w0)
            cluster.kill("edge-0-w1")
            replaced: list[int] = []
            for _ in range(3):  # found by the first product whose call to w1 fails in time
                x = rng.standard_normal(a.shape[0])
                response = client.matmul("A", x)
                assert relative_error(product_of(response), a.T @ x) <= TOLERANCE
                replaced += list(response.replaced)
                if replaced:
                    break
            assert replaced == [1]
            status = client.get_matmul("A")
            assert status.tolerance == N - K and status.replacements == 1
            assert status.workers[1] == status.workers[0]
            paused = ("edge-0-w4", "edge-0-w3")
            for name in paused:
                cluster.pause(name)
            try:
                # paused workers are stragglers (cut off, not failed): the rest decode exactly
                for _ in range(2):
                    x = rng.standard_normal(a.shape[0])
                    response = client.matmul("A", x)
                    assert relative_error(product_of(response), a.T @ x) <= TOLERANCE
                    assert set(response.decoded_from) == {0, 1, 2, 5}
                b = rng.standard_normal((a.shape[0], 2))
                assert relative_error(product_of(client.matmul("A", b)), a.T @ b) <= TOLERANCE
                # one more: the round fails, the health checks find three gone, two workers
                # remain for k = 4: the job fails naming them
                cluster.pause("edge-0-w2")
                paused += ("edge-0-w2",)
                with pytest.raises(grpc.RpcError) as caught:
                    client.matmul("A", x)
                assert caught.value.code() == PRECONDITION
                assert "fewer than k=4 workers remain: 2 live" in (caught.value.details() or "")
            finally:
                for name in paused:
                    cluster.resume(name)
            assert client.get_matmul("A").state == master_pb2.JOB_STATE_FAILED
            url = cluster.processes["edge-0-w0"].metrics_url
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            assert "edgecode_worker_multiply_seconds_count" in text
            assert 'edgecode_worker_block_nonzeros{job_id="A"}' in text
            text = urllib.request.urlopen(cluster.processes["master"].metrics_url, timeout=5)
            body = text.read().decode()
            assert 'edgecode_master_matrix_placed_bytes_total{scheme="sparse"}' in body
        finally:
            client.close()
