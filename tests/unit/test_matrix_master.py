"""MatrixMaster with in-process matrix workers (real MatrixWorker objects, no sockets): every
scheme decodes ``A^T x`` exactly for EVERY straggler set it tolerates, cancels exactly the
stragglers, fails naming them when too many are missing, and drops the job everywhere."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
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
        self.dead: set[str] = set()
        self.slow: Callable[[str, int], bool] = lambda address, sequence: False
        #: answer(address, index, product) -> (index, product) the master receives
        self.answer: Callable[[str, int, np.ndarray], tuple[int, np.ndarray]] = (
            lambda address, index, product: (index, product)
        )
        self.calls: list[tuple[str, int, Future[Message]]] = []
        self.dropped: list[str] = []

    def place_block(self, address: str, header: BlockHeader, block: Any) -> int:
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
        operand: np.ndarray,
        timeout: float,
    ) -> Future[Message]:
        future: Future[Message] = Future()
        self.calls.append((address, sequence, future))
        if address in self.dead:
            future.set_exception(FakeRpcError("UNAVAILABLE", f"{address}: connection refused"))
        elif not self.slow(address, sequence):
            try:
                got, product, seconds = self.logic[address].multiply(
                    job_id, sequence, epoch, operand.copy(), threading.Event()
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
