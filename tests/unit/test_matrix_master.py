"""MatrixMaster with in-process matrix workers (real MatrixWorker objects, no sockets): every
scheme decodes ``A^T x`` and ``A^T B`` exactly for EVERY straggler set it tolerates, cancels
exactly the stragglers, fails naming them when too many are missing, drops the job everywhere,
and heals: the blocks of a gone worker are re-encoded onto a spare or the least loaded live
worker, and the job fails naming the workers once fewer than k remain."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from inprocess import FakeRpcError, RecordingMetrics

from edgecode.errors import Infeasible, InvalidInput, RoundFailed, UnknownJob
from edgecode.master.matrix import MatrixMaster
from edgecode.records import BlockHeader, MatmulSpec
from edgecode.rounds import Message
from edgecode.worker.matrix import MatrixWorker

TOL = 1e-9


class MatrixWorkers:
    """The MatrixTransport over real MatrixWorker objects (address = name)."""

    def __init__(self, n: int) -> None:
        self.logic = {f"m{i}": MatrixWorker(f"m{i}") for i in range(n)}
        #: calls to these fail (UNAVAILABLE); ``gone`` also fail their health check
        self.dead: set[str] = set()
        self.gone: set[str] = set()
        self.checked: list[tuple[str, ...]] = []
        self.slow: Callable[[str, int], bool] = lambda address, sequence: False
        #: answer(address, index, product) -> (index, product) the master receives
        self.answer: Callable[[str, int, np.ndarray], tuple[int, np.ndarray]] = (
            lambda address, index, product: (index, product)
        )
        self.calls: list[tuple[str, int, Future[Message]]] = []
        self.dropped: list[str] = []

    def kill(self, *addresses: str) -> None:
        self.dead.update(addresses)
        self.gone.update(addresses)

    def unreachable(self, addresses: Sequence[str]) -> list[str]:
        self.checked.append(tuple(addresses))
        return [a for a in addresses if a in self.gone]

    def place_block(self, address: str, header: BlockHeader, block: Any) -> int:
        if address in self.dead:
            raise FakeRpcError("UNAVAILABLE", f"{address}: connection refused")
        builder = self.logic[address].begin(header)
        half = max(1, block.shape[0] // 2)
        for start in range(0, block.shape[0], half):
            builder.add(start, block[start : start + half])
        builder.finish()
        return int(block.data.nbytes + block.indices.nbytes + block.indptr.nbytes)

    def multiply(
        self,
        index: int,
        address: str,
        job_id: str,
        sequence: int,
        epoch: int,
        operand: np.ndarray | None,
        timeout: float,
    ) -> Future[Message]:
        future: Future[Message] = Future()
        self.calls.append((address, sequence, future))
        if address in self.dead:
            future.set_exception(FakeRpcError("UNAVAILABLE", f"{address}: connection refused"))
        elif not self.slow(address, sequence):
            try:
                got, product, seconds = self.logic[address].multiply(
                    job_id,
                    sequence,
                    epoch,
                    None if operand is None else operand.copy(),
                    threading.Event(),
                    index,
                )
                got, product = self.answer(address, got, product)
                if got != index:
                    raise InvalidInput(
                        f"worker {address} answered as code index {got}, not {index}"
                    )
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(Message(address, product, seconds))
        return future

    def drop(self, address: str, job_id: str) -> None:
        self.dropped.append(address)
        if address in self.dead:
            raise FakeRpcError("UNAVAILABLE", f"{address}: connection refused")
        self.logic[address].drop(job_id)

    def cancelled(self, sequence: int) -> set[str]:
        return {a for a, s, f in self.calls if s == sequence and f.cancelled()}

    def release(self) -> None:
        for _, _, future in self.calls:
            if not future.done():
                future.cancel()


@pytest.fixture
def cluster() -> Iterator[tuple[MatrixMaster, MatrixWorkers, RecordingMetrics]]:
    workers = MatrixWorkers(6)
    metrics = RecordingMetrics()
    master = MatrixMaster(workers, cluster_workers=lambda: list(workers.logic), metrics=metrics)
    yield master, workers, metrics
    workers.release()


def matrix(seed: int, rows: int = 40, cols: int = 23) -> sp.csr_matrix:
    return sp.random(rows, cols, density=0.3, format="csr", random_state=seed)


def relative(got: np.ndarray, want: np.ndarray) -> float:
    if not np.all(np.isfinite(got)):
        return float("nan")
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize(
    ("scheme", "n", "k"), [("sparse", 5, 3), ("dense", 5, 3), ("poly", 5, 2), ("uncoded", 4, 4)]
)
def test_every_tolerated_straggler_set_decodes_exactly(
    cluster, scheme: str, n: int, k: int
) -> None:  # type: ignore[no-untyped-def]
    master, workers, metrics = cluster
    A = matrix(n * k)
    job = master.submit(MatmulSpec(scheme=scheme, n=n, k=k, seed=1, job_id=f"mm-{scheme}"), A)
    assert job.workers == tuple(f"m{i}" for i in range(n))  # the first n of the cluster
    (placed,) = metrics.of("matrix_placed")
    assert placed[0] == scheme and len(placed[2]) == n
    rng = np.random.default_rng(2)
    errors = []
    cases = [set(s) for size in range(n - k + 1) for s in itertools.combinations(job.workers, size)]
    for slow in cases:
        workers.slow = lambda address, sequence, slow=slow: address in slow
        operand = rng.standard_normal(40) if len(errors) % 2 else rng.standard_normal((40, 3))
        product = master.multiply(job.job_id, operand)
        errors.append(relative(product.value, A.T @ operand))
        assert product.value.shape == (23, *operand.shape[1:])
        used = {f"m{i}" for i in product.decoded_from}
        assert len(used) == k and not used & slow
        assert workers.cancelled(product.sequence) == slow  # exactly the stragglers
        timings = {t.node: t for t in product.timings}
        assert list(timings) == [str(i) for i in range(n)]
        assert all(not timings[str(i)].arrived for i in range(n) if f"m{i}" in slow)
    errs = np.asarray(errors)
    assert len(errs) == len(cases) and np.all(np.isfinite(errs)) and np.all(errs <= TOL)
    assert len(metrics.of("matrix_product")) == len(cases)
    assert job.products == len(cases)


def test_too_many_stragglers_fail_naming_them(cluster) -> None:  # type: ignore[no-untyped-def]
    master, workers, _ = cluster
    job = master.submit(
        MatmulSpec("dense", n=5, k=3, deadline_seconds=0.1, job_id="few"), matrix(3)
    )
    workers.dead = {"m0"}
    workers.slow = lambda address, sequence: address in ("m1", "m2")
    with pytest.raises(RoundFailed) as failed:
        master.multiply(job.job_id, np.ones(40))
    text = str(failed.value)
    assert "2 of the 3 results needed arrived" in text
    assert "m0 (unreachable)" in text and "no answer from: m1, m2" in text
    assert workers.cancelled(1) == {"m1", "m2"}


def test_a_worker_answering_as_another_index_is_a_straggler(cluster) -> None:  # type: ignore[no-untyped-def]
    master, workers, _ = cluster
    A = matrix(4)
    job = master.submit(MatmulSpec("sparse", n=5, k=3, job_id="liar"), A)
    workers.answer = lambda address, index, product: (
        ((index + 1) % 5, product) if address == "m0" else (index, product)
    )
    product = master.multiply(job.job_id, np.ones(40))
    assert 0 not in product.decoded_from
    err = relative(product.value, A.T @ np.ones(40))
    assert np.isfinite(err) and err <= TOL
    (timing,) = [t for t in product.timings if t.node == "0"]
    assert not timing.arrived and "answered as code index 1" in timing.error


def test_a_misshapen_product_is_a_straggler(cluster) -> None:  # type: ignore[no-untyped-def]
    master, workers, _ = cluster
    A = matrix(5)
    job = master.submit(MatmulSpec("dense", n=5, k=3, job_id="shape"), A)
    workers.answer = lambda address, index, product: (
        (index, product[:-1]) if address == "m1" else (index, product)
    )
    product = master.multiply(job.job_id, np.ones(40))
    assert 1 not in product.decoded_from
    err = relative(product.value, A.T @ np.ones(40))
    assert np.isfinite(err) and err <= TOL


def test_drop_reaches_every_worker_even_with_one_dead(cluster) -> None:  # type: ignore[no-untyped-def]
    master, workers, _ = cluster
    job = master.submit(MatmulSpec("sparse", n=5, k=3, job_id="gone"), matrix(6))
    workers.dead = {"m2"}
    master.drop(job.job_id)
    assert sorted(workers.dropped) == sorted(job.workers)
    assert all("gone" not in w.blocks() for name, w in workers.logic.items() if name != "m2")
    with pytest.raises(UnknownJob):
        master.multiply("gone", np.ones(40))
    with pytest.raises(UnknownJob):
        master.drop("gone")


def test_submit_and_multiply_refuse_bad_input(cluster) -> None:  # type: ignore[no-untyped-def]
    master, _, _ = cluster
    A = matrix(7)
    master.submit(MatmulSpec("dense", n=4, k=2, job_id="dup"), A)
    with pytest.raises(InvalidInput, match="exists; drop it first"):
        master.submit(MatmulSpec("dense", n=4, k=2, job_id="dup"), A)
    with pytest.raises(Infeasible, match="n=7 workers wanted, the cluster has 6"):
        master.submit(MatmulSpec("dense", n=7, k=2, job_id="big"), A)
    with pytest.raises(InvalidInput, match=r"operand must have shape \[40\]"):
        master.multiply("dup", np.ones(39))
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        master.multiply("dup", np.full(40, np.nan))
    with pytest.raises(InvalidInput, match="holds NaN or infinite values"):
        master.submit(
            MatmulSpec("dense", n=4, k=2, job_id="nan"), sp.csr_matrix(np.full((3, 3), np.inf))
        )


# ---- A^T B with both operands coded ------------------------------------------------------------


def rhs_matrix(seed: int, rows: int = 40, cols: int = 17) -> sp.csr_matrix:
    return sp.random(rows, cols, density=0.2, format="csr", random_state=seed + 100)


def held(workers: MatrixWorkers) -> dict[str, dict[str, dict[int, Any]]]:
    return {name: w.blocks() for name, w in workers.logic.items() if w.blocks()}


@pytest.mark.parametrize(
    ("scheme", "k_a", "k_b"), [("sparse", 2, 2), ("poly", 2, 2), ("uncoded", 3, 2)]
)
def test_a_t_b_decodes_exactly_for_every_tolerated_straggler_set(
    cluster, scheme: str, k_a: int, k_b: int
) -> None:  # type: ignore[no-untyped-def]
    master, workers, _ = cluster
    A, B = matrix(11), rhs_matrix(11)
    spec = MatmulSpec(scheme=scheme, n=6, k=k_a, k_b=k_b, seed=2, job_id=f"ab-{scheme}")
    job = master.submit(spec, A, B)
    K = k_a * k_b
    status = job.status()
    assert (status.k_b, status.rhs_cols, status.tolerance) == (k_b, 17, 6 - K)
    assert status.weight[0] * status.weight[1] >= status.weight_bound >= 1
    want = (A.T @ B).toarray()
    cases = [set(s) for size in range(6 - K + 1) for s in itertools.combinations(job.workers, size)]
    errors = []
    for slow in cases:
        workers.slow = lambda address, sequence, slow=slow: address in slow
        product = master.multiply(job.job_id)
        assert product.value.shape == (23, 17)
        errors.append(relative(product.value, want))
        used = {f"m{i}" for i in product.decoded_from}
        assert len(used) == K and not used & slow
        assert workers.cancelled(product.sequence) == slow
    errs = np.asarray(errors)
    assert len(errs) == len(cases) and np.all(np.isfinite(errs)) and np.all(errs <= TOL)
    # B's coded blocks are held as CSR with exactly the non-zeros the master encoded
    for i, address in enumerate(job.workers):
        block = workers.logic[address].blocks()[job.job_id][i]
        assert sp.isspmatrix_csr(block.rhs) and block.rhs.nnz == status.rhs_block_nnz[i]


def test_a_t_b_weight_beats_the_polynomial_code(cluster) -> None:  # type: ignore[no-untyped-def]
    master, _, _ = cluster
    A, B = matrix(12, cols=60), rhs_matrix(12, cols=40)
    sparse = master.submit(MatmulSpec("sparse", n=6, k=3, k_b=1, job_id="s"), A, B).status()
    poly = master.submit(MatmulSpec("poly", n=6, k=3, k_b=1, job_id="p"), A, B).status()
    # n = 6, K = 3: the counting bound is ceil(3 * 4 / 6) = 2, met by weight (2, 1)
    assert (sparse.weight, sparse.weight_bound) == ((2, 1), 2)
    assert poly.weight == (3, 1)
    assert sum(sparse.block_nnz) < 0.8 * sum(poly.block_nnz)


def test_bad_a_t_b_input_is_refused_and_nothing_is_placed(cluster) -> None:  # type: ignore[no-untyped-def]
    master, workers, _ = cluster
    A, B = matrix(13), rhs_matrix(13)
    nan = B.copy()
    nan.data[0] = np.nan
    cases = [
        (MatmulSpec("sparse", n=6, k=3, k_b=3), B, r"k \* k_b must be at most n"),
        (MatmulSpec("sparse", n=6, k=2, k_b=2), rhs_matrix(13, rows=39), "must have A's 40 rows"),
        (MatmulSpec("sparse", n=6, k=2, k_b=2), B.toarray(), "must be a scipy.sparse CSR"),
        (MatmulSpec("sparse", n=6, k=2, k_b=2), B.tocsc(), "must be CSR, got CSC"),
        (MatmulSpec("sparse", n=6, k=2, k_b=2), nan, "holds NaN or infinite"),
        (MatmulSpec("sparse", n=6, k=2, k_b=2), None, "k_b = 2 needs a B"),
        (MatmulSpec("dense", n=6, k=2, k_b=2), B, "dense codes A only"),
        (MatmulSpec("dense", n=6, k=2, k_b=1), B, "dense codes A only"),
    ]
    for spec, rhs, message in cases:
        with pytest.raises(InvalidInput, match=message):
            master.submit(spec, A, rhs)
        assert held(workers) == {}
    job = master.submit(MatmulSpec("sparse", n=6, k=2, k_b=2, job_id="ok"), A, B)
    with pytest.raises(InvalidInput, match="send no operand"):
        master.multiply(job.job_id, np.ones(40))
    plain = master.submit(MatmulSpec("sparse", n=6, k=2, job_id="x"), A)
    with pytest.raises(InvalidInput, match="has no B"):
        master.multiply(plain.job_id)


# ---- healing -----------------------------------------------------------------------------------


def errors_of(master: MatrixMaster, job_id: str, A: Any, rng: np.random.Generator) -> float:
    x = rng.standard_normal(A.shape[0])
    return relative(master.multiply(job_id, x).value, A.T @ x)


def test_a_gone_worker_is_replaced_on_a_spare(cluster) -> None:  # type: ignore[no-untyped-def]
    master, workers, _ = cluster  # six workers, the job uses five: m5 is a spare
    A = matrix(21)
    job = master.submit(MatmulSpec("sparse", n=5, k=3, job_id="heal"), A)
    first_epoch = job.epoch
    workers.kill("m1")
    x = np.linspace(-1, 1, 40)
    product = master.multiply(job.job_id, x)
    err = relative(product.value, A.T @ x)
    assert np.isfinite(err) and err <= TOL
    assert product.replaced == (1,)
    status = job.status()
    assert status.workers == ("m0", "m5", "m2", "m3", "m4")
    assert (status.tolerance, status.node_tolerance, status.replacements) == (2, 2, 1)
    assert status.epoch > first_epoch and job.epochs[1] == status.epoch
    assert job.epochs[0] == first_epoch  # the others keep their blocks and epochs
    assert set(workers.logic["m5"].blocks()["heal"]) == {1}
    # every straggler set of the new placement decodes exactly
    rng = np.random.default_rng(4)
    errs = []
    for slow in [set(s) for size in range(3) for s in itertools.combinations(status.workers, size)]:
        workers.slow = lambda address, sequence, slow=slow: address in slow
        errs.append(errors_of(master, job.job_id, A, rng))
    errs_array = np.asarray(errs)
    assert np.all(np.isfinite(errs_array)) and np.all(errs_array <= TOL)


def test_without_a_spare_the_least_loaded_worker_holds_two_indices(cluster) -> None:  # type: ignore[no-untyped-def]
    _, workers, _ = cluster
    master = MatrixMaster(workers, cluster_workers=lambda: [f"m{i}" for i in range(5)])
    A = matrix(22)
    job = master.submit(MatmulSpec("sparse", n=5, k=3, job_id="two"), A)
    workers.kill("m2")
    rng = np.random.default_rng(5)
    err = errors_of(master, job.job_id, A, rng)
    assert np.isfinite(err) and err <= TOL
    status = job.status()
    assert status.workers == ("m0", "m1", "m0", "m3", "m4")
    # still any 3 of the 5 code indices decode; whole workers: one, since m0 holds two
    assert (status.tolerance, status.node_tolerance) == (2, 1)
    assert set(workers.logic["m0"].blocks()["two"]) == {0, 2}
    errs = []
    for slow in [set(), {"m0"}, {"m1"}, {"m3"}, {"m4"}]:
        workers.slow = lambda address, sequence, slow=slow: address in slow
        product = master.multiply(job.job_id, np.ones(40))
        errs.append(relative(product.value, A.T @ np.ones(40)))
        assert workers.cancelled(product.sequence) == slow
    errs_array = np.asarray(errs)
    assert np.all(np.isfinite(errs_array)) and np.all(errs_array <= TOL)


def test_a_t_b_job_heals_both_blocks(cluster) -> None:  # type: ignore[no-untyped-def]
    master, workers, _ = cluster
    A, B = matrix(23), rhs_matrix(23)
    job = master.submit(MatmulSpec("sparse", n=5, k=2, k_b=2, job_id="ab"), A, B)
    workers.kill("m3")
    want = (A.T @ B).toarray()
    for _ in range(2):
        err = relative(master.multiply(job.job_id).value, want)
        assert np.isfinite(err) and err <= TOL
    status = job.status()
    assert status.workers[3] == "m5" and status.tolerance == 1 and status.replacements == 1
    (block,) = workers.logic["m5"].blocks()["ab"].values()
    assert block.rhs is not None and block.rhs.nnz == status.rhs_block_nnz[3]


def test_a_spare_that_dies_while_placing_is_skipped(cluster) -> None:  # type: ignore[no-untyped-def]
    master, workers, _ = cluster
    A = matrix(24)
    job = master.submit(MatmulSpec("dense", n=5, k=3, job_id="skip"), A)
    workers.kill("m4")
    workers.dead.add("m5")  # passes nothing to the health check, fails the placement
    err = errors_of(master, job.job_id, A, np.random.default_rng(6))
    assert np.isfinite(err) and err <= TOL
    assert job.status().workers == ("m0", "m1", "m2", "m3", "m0")


def test_fewer_than_k_workers_fail_the_job_naming_them(cluster) -> None:  # type: ignore[no-untyped-def]
    _, workers, _ = cluster
    master = MatrixMaster(workers, cluster_workers=lambda: [f"m{i}" for i in range(4)])
    A = matrix(25)
    job = master.submit(MatmulSpec("sparse", n=4, k=3, job_id="doomed", deadline_seconds=5), A)
    workers.kill("m1", "m2")  # two of four at once: m0 and m3 remain, k = 3 are needed
    with pytest.raises(Infeasible) as failed:
        master.multiply(job.job_id, np.ones(40))
    text = str(failed.value)
    assert "fewer than k=3 workers remain: 2 live (m0, m3); gone: m1, m2" in text
    status = job.status()
    assert status.state == "failed" and "gone: m1, m2" in status.message
    with pytest.raises(Infeasible, match="gone: m1, m2"):
        master.multiply(job.job_id, np.ones(40))


def test_the_last_death_that_leaves_k_indices_answers_then_fails(cluster) -> None:  # type: ignore[no-untyped-def]
    _, workers, _ = cluster
    master = MatrixMaster(workers, cluster_workers=lambda: [f"m{i}" for i in range(4)])
    A = matrix(26)
    job = master.submit(MatmulSpec("sparse", n=4, k=3, job_id="last"), A)
    rng = np.random.default_rng(7)
    workers.kill("m1")
    err = errors_of(master, job.job_id, A, rng)  # index 1 goes to m0
    assert np.isfinite(err) and err <= TOL and job.status().tolerance == 1
    workers.kill("m2")  # m0 (two indices) and m3 still answer k = 3: exact, then failed
    err = errors_of(master, job.job_id, A, rng)
    assert np.isfinite(err) and err <= TOL
    assert job.status().state == "failed" and "2 live (m0, m3)" in job.status().message


def test_a_worker_holding_two_indices_needs_the_index_named() -> None:
    worker = MatrixWorker("w")
    block = sp.random(6, 3, density=0.5, format="csr", random_state=1)
    for index in (0, 2):
        header = BlockHeader("j", index, 6, 3, int(block.nnz), epoch=1, work_fraction=0.1)
        builder = worker.begin(header)
        builder.add(0, block)
        builder.finish()
    with pytest.raises(InvalidInput, match="holds 2 blocks of matrix job 'j': name the code"):
        worker.multiply("j", 1, 1, np.ones(6), threading.Event())
    index, product, _ = worker.multiply("j", 1, 1, np.ones(6), threading.Event(), index=2)
    assert index == 2 and np.allclose(product, block.T @ np.ones(6))
    with pytest.raises(UnknownJob, match="holds no block 1"):
        worker.multiply("j", 1, 1, np.ones(6), threading.Event(), index=1)
    with pytest.raises(InvalidInput, match="has no B block"):
        worker.multiply("j", 2, 1, None, threading.Event(), index=2)
    rhs = BlockHeader("j", 1, 6, 2, 0, epoch=1, work_fraction=0.0, side="b")
    with pytest.raises(InvalidInput, match="arrived before its A block"):
        b = worker.begin(rhs)
        b.add(0, sp.csr_matrix((6, 2)))
        b.finish()
    wrong = BlockHeader("j", 2, 5, 2, 0, epoch=1, work_fraction=0.0, side="b")
    with pytest.raises(InvalidInput, match="B's block has 5 rows, the A block 6"):
        b = worker.begin(wrong)
        b.add(0, sp.csr_matrix((5, 2)))
        b.finish()
    assert worker.drop("j") and worker.blocks() == {}


def test_matrix_master_docstring_examples_run() -> None:
    import doctest

    from edgecode.master import matrix as master_module
    from edgecode.master import matrix_jobs

    for module in (master_module, matrix_jobs):
        failures, attempted = doctest.testmod(module, raise_on_error=False)
        assert attempted >= 1 and failures == 0
