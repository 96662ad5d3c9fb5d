"""The master's side of a matrix job: coded ``A^T x`` (or ``A^T B``) on straggling workers.

Submit. ``A`` (t x r, sparse) is cut into k block-columns of width ``w = ceil(r / k)``
(:func:`~edgecode.codes.matrix.split_columns`) and encoded with the chosen k-of-n code into n
coded CSR blocks ``C_i = sum_j G[i, j] A_j``:

- ``sparse``: :func:`~edgecode.codes.matrix.sparse_mv_code`, weight ``ceil(k (n - k + 1) / n)``,
  so ``C_i`` has about weight / k of the non-zeros a dense code's block has;
- ``dense``: :func:`~edgecode.codes.matrix.dense_mds_code` (weight k);
- ``poly``: :func:`~edgecode.codes.matrix.polynomial_code` with k_b = 1 (Chebyshev-Vandermonde);
- ``uncoded``: k = n plain blocks (identity generator): every worker must answer.

Each worker gets its block once (streamed in row chunks by the transport).

Product. Every worker gets ``Multiply(x)`` and returns ``C_i^T x`` (length w, or w x p for a
block B: the columns of B are simply several vectors, so the same code serves ``A^T B``). The
master collects results with the round engine (:mod:`edgecode.rounds`, rule
:class:`~edgecode.rounds.FirstKRule`); a failed call or a result of the wrong shape counts as a
straggler. As soon as k results give a non-singular decoding matrix it cancels the rest, solves
``X = G[S]^{-1} R_S``
(:meth:`~edgecode.codes.matrix.MatVecCode.decode`) and stacks the block results
(:func:`~edgecode.codes.matrix.join_columns`), dropping the padding. Too few results before the
deadline raise :class:`~edgecode.errors.RoundFailed`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.io
import scipy.sparse as sp

from edgecode.codes.matrix import (
    MatVecCode,
    ProductCode,
    dense_mds_code,
    join_columns,
    polynomial_code,
    sparse_mv_code,
    split_columns,
)
from edgecode.errors import Infeasible, InvalidInput, Overloaded, UnknownJob
from edgecode.master.ports import MasterMetricsPort, NoMasterMetrics
from edgecode.records import (
    MATRIX_SCHEMES,
    BlockHeader,
    MatmulJobStatus,
    MatmulProduct,
    MatmulSpec,
    Timing,
)
from edgecode.rounds import FutureSource, Pending, Round, describe
from edgecode.rules import FirstKRule

log = logging.getLogger(__name__)

#: Deadline of one product when the spec gives none.
DEFAULT_DEADLINE_SECONDS = 60.0
#: Matrix jobs a master holds at once (each keeps only its code, but workers hold the blocks).
MAX_JOBS = 32
SCHEMES = MATRIX_SCHEMES


Code = MatVecCode | ProductCode


def uncoded_code(n: int) -> MatVecCode:
    """k = n plain blocks: worker i holds ``A_i`` (identity generator), every worker needed."""
    return MatVecCode(
        name="uncoded",
        n_workers=n,
        k=n,
        generator=np.eye(n),
        worst_condition=1.0,
        condition_scope="exhaustive",
        condition_subsets=1,
        weight=1,
        lower_bound=1,
        support=tuple((i,) for i in range(n)),
        support_resilient=True,
    )


def build_code(scheme: str, n: int, k: int, seed: int = 0) -> Code:
    """The code of a scheme (see the module docstring)."""
    if scheme == "sparse":
        return sparse_mv_code(n, k, seed=seed)
    if scheme == "dense":
        return dense_mds_code(n, k, seed=seed)
    if scheme == "poly":
        return polynomial_code(n, k, 1, seed=seed)
    if scheme == "uncoded":
        return uncoded_code(n)
    raise InvalidInput(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")


def load_matrix(path: str | Path) -> Any:
    """A sparse matrix from ``.npz`` (scipy.sparse.save_npz) or ``.mtx`` (Matrix Market), as CSR."""
    file = Path(path)
    if not file.is_file():
        raise InvalidInput(f"matrix file {str(file)!r} does not exist")
    try:
        if file.suffix == ".npz":
            matrix = sp.load_npz(file)
        elif file.suffix in (".mtx", ".gz") and file.name.endswith((".mtx", ".mtx.gz")):
            matrix = scipy.io.mmread(file)
        else:
            raise InvalidInput(f"matrix file must be .npz or .mtx, got {file.name!r}")
    except InvalidInput:
        raise
    except Exception as exc:  # a corrupt file is bad input, not a crash
        raise InvalidInput(f"cannot read matrix file {file.name!r}: {exc}") from None
    return checked_matrix(matrix, "matrix")


def checked_matrix(matrix: Any, name: str) -> Any:
    """``matrix`` as float64 CSR, 2-D, non-empty and finite (else InvalidInput)."""
    csr = sp.csr_matrix(matrix, dtype=np.float64) if sp.issparse(matrix) else None
    if csr is None:
        array = np.asarray(matrix, dtype=np.float64)
        if array.ndim != 2:
            raise InvalidInput(f"{name} must be 2-D, got shape {array.shape}")
        csr = sp.csr_matrix(array)
    if csr.shape[0] < 1 or csr.shape[1] < 1:
        raise InvalidInput(f"{name} must have at least one row and column, got {csr.shape}")
    if not np.all(np.isfinite(csr.data)):
        raise InvalidInput(f"{name} holds NaN or infinite values")
    return csr


class MatrixAssembler:
    """A streamed A: row chunks in order, checked against the announced shape and nnz."""

    def __init__(self, rows: int, cols: int, nnz: int) -> None:
        if rows < 1 or cols < 1 or nnz < 0 or nnz > rows * cols:
            raise InvalidInput(f"matrix: shape ({rows}, {cols}) with {nnz} non-zeros is invalid")
        self.rows, self.cols, self.nnz = rows, cols, nnz
        self.next_row = 0
        self.arrived = 0
        self.chunks: list[Any] = []

    def add(self, first_row: int, chunk: Any) -> None:
        if first_row != self.next_row:
            raise InvalidInput(f"matrix: chunk starts at row {first_row}, expected {self.next_row}")
        if chunk.shape[1] != self.cols or self.next_row + chunk.shape[0] > self.rows:
            raise InvalidInput(
                f"matrix: chunk of shape {chunk.shape} does not fit A ({self.rows}, {self.cols}) "
                f"at row {first_row}"
            )
        self.arrived += int(chunk.nnz)
        if self.arrived > self.nnz:
            raise InvalidInput(f"matrix: more than the announced {self.nnz} non-zeros arrived")
        self.chunks.append(chunk)
        self.next_row += int(chunk.shape[0])

    def finish(self) -> Any:
        if self.next_row != self.rows or self.arrived != self.nnz:
            raise InvalidInput(
                f"matrix: {self.next_row} of {self.rows} rows and {self.arrived} of {self.nnz} "
                "non-zeros arrived"
            )
        return checked_matrix(sp.vstack(self.chunks, format="csr"), "matrix")


def balanced_split(matrix: Any, k: int, seed: int = 0) -> tuple[np.ndarray, list[Any]]:
    """A's columns in a seeded random order, split into k equal-width blocks.

    Real sparse matrices (a vocabulary, a graph) have columns of very different density, so
    equal-width blocks in A's own order give some workers almost no work and others most of it;
    a random order evens the non-zeros out for every scheme. Entry i of the joined result belongs
    to column ``order[i]`` of A.
    """
    order = np.random.default_rng([seed, 0x5EED]).permutation(matrix.shape[1])
    return order, split_columns(sp.csr_matrix(matrix)[:, order].tocsr(), k)


class MatrixTransport(Protocol):
    """How the master reaches workers (gRPC in service.py, fakes in tests)."""

    def place_block(self, address: str, header: BlockHeader, block: Any) -> int:
        """Stream ``block`` to the worker; returns the bytes sent."""
        ...

    def multiply(
        self,
        index: int,
        address: str,
        job_id: str,
        sequence: int,
        epoch: int,
        operand: np.ndarray,
        timeout: float,
    ) -> Pending:
        """Start ``C_i^T operand`` on the worker holding code index ``index``; the result is a
        :class:`~edgecode.rounds.Message` from ``address`` (InvalidInput when the worker
        answers as another index)."""
        ...

    def drop(self, address: str, job_id: str) -> None: ...


@dataclass
class MatrixJob:
    job_id: str
    spec: MatmulSpec
    code: Code
    shape: tuple[int, int]
    width: int
    workers: tuple[str, ...]
    epoch: int
    block_nnz: tuple[int, ...]
    block_bytes: tuple[int, ...]
    encode_seconds: float
    place_seconds: float
    #: A's columns are split in this (seeded random) order; results are put back in A's order
    column_order: np.ndarray | None = None
    products: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def status(self) -> MatmulJobStatus:
        """The job as the API reports it."""
        return MatmulJobStatus(
            job_id=self.job_id,
            scheme=self.spec.scheme,
            n=self.spec.n,
            k=self.spec.k,
            rows=self.shape[0],
            cols=self.shape[1],
            worst_condition=self.code.condition_number(),
            block_nnz=self.block_nnz,
            block_bytes=self.block_bytes,
            encode_seconds=self.encode_seconds,
            place_seconds=self.place_seconds,
            products=self.products,
        )

    @property
    def scale(self) -> np.ndarray:
        """Worker i's result is ``scale[i] * generator[i] @ X`` (B-side coefficient, k_b = 1)."""
        if isinstance(self.code, ProductCode):
            return np.asarray(self.code.coefficients[1][:, 0], dtype=np.float64)
        return np.ones(self.code.n_workers)


class MatrixMaster:
    """Matrix jobs: submit (encode + place), products (gather, cancel, decode), drop."""

    def __init__(
        self,
        transport: MatrixTransport,
        cluster_workers: Callable[[], Sequence[str]] | None = None,
        metrics: MasterMetricsPort | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._cluster_workers = cluster_workers
        self._metrics: MasterMetricsPort = metrics if metrics is not None else NoMasterMetrics()
        self._clock = clock
        self._jobs: dict[str, MatrixJob] = {}
        self._lock = threading.Lock()
        self._epoch = 0

    def job(self, job_id: str) -> MatrixJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"no matrix job {job_id!r}")
        return job

    def _workers(self, spec: MatmulSpec) -> tuple[str, ...]:
        if spec.workers:
            return spec.workers
        if self._cluster_workers is None:
            raise Infeasible("the spec lists no workers and the master has no cluster view")
        known = tuple(self._cluster_workers())
        if len(known) < spec.n:
            raise Infeasible(f"n={spec.n} workers wanted, the cluster has {len(known)}")
        return known[: spec.n]

    def submit(self, spec: MatmulSpec, matrix: Any) -> MatrixJob:
        """Encode ``matrix`` per ``spec`` and place one coded block on each of n workers."""
        spec = spec.validated()
        csr = checked_matrix(matrix, "matrix")
        job_id = spec.job_id or f"mm-{uuid.uuid4().hex[:10]}"
        with self._lock:
            if job_id in self._jobs:
                raise InvalidInput(f"matrix job {job_id!r} exists; drop it first")
            if len(self._jobs) >= MAX_JOBS:
                raise Overloaded(f"the master already holds {MAX_JOBS} matrix jobs")
            self._epoch += 1
            epoch = self._epoch
        workers = self._workers(spec)
        started = self._clock()
        code = build_code(spec.scheme, spec.n, spec.k, spec.seed)
        column_order, blocks = balanced_split(csr, spec.k, spec.seed)
        coded = code.encode(blocks)
        encoded = self._clock()
        total_nnz = max(int(csr.nnz), 1)
        headers = [
            BlockHeader(
                job_id=job_id,
                worker_index=i,
                rows=int(block.shape[0]),
                cols=int(block.shape[1]),
                nnz=int(block.nnz),
                epoch=epoch,
                work_fraction=float(block.nnz) / total_nnz,
            )
            for i, block in enumerate(coded)
        ]
        with ThreadPoolExecutor(max_workers=min(16, len(workers))) as pool:
            sent = list(
                pool.map(
                    lambda i: self._transport.place_block(workers[i], headers[i], coded[i]),
                    range(len(workers)),
                )
            )
        placed = self._clock()
        job = MatrixJob(
            job_id=job_id,
            spec=spec,
            code=code,
            shape=(int(csr.shape[0]), int(csr.shape[1])),
            width=int(blocks[0].shape[1]),
            workers=workers,
            epoch=epoch,
            block_nnz=tuple(int(b.nnz) for b in coded),
            block_bytes=tuple(int(b) for b in sent),
            encode_seconds=encoded - started,
            place_seconds=placed - encoded,
            column_order=column_order,
        )
        self._metrics.matrix_placed(spec.scheme, sum(sent), job.block_nnz)
        with self._lock:
            self._jobs[job_id] = job
        log.info(
            "matrix job %s: %s n=%d k=%d, A %s, %d coded non-zeros placed in %.2f s",
            job_id,
            spec.scheme,
            spec.n,
            spec.k,
            job.shape,
            sum(job.block_nnz),
            job.place_seconds,
        )
        return job

    def multiply(self, job_id: str, operand: Any) -> MatmulProduct:
        """``A^T operand`` from the first decodable set of workers (operand: t or t x p)."""
        job = self.job(job_id)
        x = np.asarray(operand, dtype=np.float64)
        t = job.shape[0]
        if x.ndim not in (1, 2) or x.shape[0] != t or x.size == 0:
            raise InvalidInput(
                f"operand must have shape [{t}] or [{t}, p] (A is {job.shape[0]} x "
                f"{job.shape[1]}), got {list(x.shape)}"
            )
        if not np.all(np.isfinite(x)):
            raise InvalidInput("operand holds NaN or infinite values")
        with job.lock:
            job.products += 1
            sequence = job.products
            return self._gather(job, sequence, x)

    def _gather(self, job: MatrixJob, sequence: int, x: np.ndarray) -> MatmulProduct:
        deadline_seconds = job.spec.deadline_seconds or DEFAULT_DEADLINE_SECONDS
        index_of = {address: i for i, address in enumerate(job.workers)}
        collector = Round(
            index_of, (job.width, *x.shape[1:]), deadline_seconds, self._clock, self._metrics
        )
        for i, address in enumerate(job.workers):
            call = self._transport.multiply(
                i, address, job.job_id, sequence, job.epoch, x, deadline_seconds
            )
            collector.add(FutureSource(address, call))
        try:
            outcome = collector.decide(FirstKRule(job.code, job.scale))
        finally:
            for name, why in collector.failed.items():
                log.warning(
                    "matrix job %s product %d: worker %s: %s", job.job_id, sequence, name, why
                )
        for timing in outcome.sources:
            if timing.arrived:
                self._metrics.matrix_worker(timing.node, timing.compute_seconds)
        value = join_columns(list(outcome.decoded.value), job.shape[1])
        if job.column_order is not None:
            in_order = np.empty_like(value)
            in_order[job.column_order] = value  # entry i belongs to column column_order[i]
            value = in_order
        self._metrics.matrix_product(job.spec.scheme, outcome.seconds)
        timings = sorted(
            (
                Timing(
                    str(index_of[t.node]), t.seconds, t.arrived, t.compute_seconds, error=t.error
                )
                for t in outcome.sources
            ),
            key=lambda t: int(t.node),
        )
        return MatmulProduct(
            job_id=job.job_id,
            sequence=sequence,
            value=value,
            seconds=outcome.seconds,
            decoded_from=outcome.decoded.used,
            timings=tuple(timings),
        )

    def drop(self, job_id: str) -> MatrixJob:
        """Forget a job here and on its workers (an unreachable worker is skipped)."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is None:
            raise UnknownJob(f"no matrix job {job_id!r}")
        for address in job.workers:
            try:
                self._transport.drop(address, job_id)
            except Exception as exc:  # a dead worker holds nothing anyway
                log.info("drop %s on %s: %s", job_id, address, describe(exc))
        return job
