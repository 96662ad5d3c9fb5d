"""The master's side of a matrix job: coded ``A^T x`` (or ``A^T B``) on straggling workers.

Kept apart from :mod:`edgecode.master.logic` so the training paths are untouched.

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
master takes results in completion order (:class:`~edgecode.gather.Gather`); a failed call or a
result of the wrong shape counts as a straggler. As soon as k results give a non-singular
decoding matrix it cancels the rest, solves ``X = G[S]^{-1} R_S``
(:meth:`~edgecode.codes.matrix.MatVecCode.decode`) and stacks the block results
(:func:`~edgecode.codes.matrix.join_columns`), dropping the padding. Too few results before the
deadline raise :class:`~edgecode.errors.RoundFailed`.
"""

from __future__ import annotations

import logging
import re
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
from edgecode.errors import (
    Infeasible,
    InvalidInput,
    NotDecodable,
    Overloaded,
    RoundFailed,
    UnknownJob,
)
from edgecode.gather import Gather, Pending
from edgecode.worker.matrix import BlockHeader

log = logging.getLogger(__name__)

SCHEMES = ("sparse", "dense", "poly", "uncoded")
JOB_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
#: Deadline of one product when the spec gives none.
DEFAULT_DEADLINE_SECONDS = 60.0
#: Matrix jobs a master holds at once (each keeps only its code, but workers hold the blocks).
MAX_JOBS = 32
#: Largest n a matrix job may use (the condition scan enumerates k-subsets up to a limit).
MAX_WORKERS = 256


@dataclass(frozen=True)
class MatmulSpec:
    """How a matrix job is coded and where it runs (see ``MatmulSpec`` in master.proto)."""

    scheme: str = "sparse"
    n: int = 6
    k: int = 4
    seed: int = 0
    deadline_seconds: float = 0.0
    job_id: str = ""
    #: worker addresses by code index; empty = the first n workers of the cluster
    workers: tuple[str, ...] = ()

    def validated(self) -> MatmulSpec:
        if self.scheme not in SCHEMES:
            raise InvalidInput(f"scheme must be one of {list(SCHEMES)}, got {self.scheme!r}")
        if not 1 <= self.n <= MAX_WORKERS:
            raise InvalidInput(f"n must be in [1, {MAX_WORKERS}], got {self.n}")
        if not 1 <= self.k <= self.n:
            raise InvalidInput(f"k must be in [1, n={self.n}], got {self.k}")
        if self.scheme == "uncoded" and self.k != self.n:
            raise InvalidInput(f"uncoded needs k = n (every worker answers), got k={self.k}")
        if self.seed < 0:
            raise InvalidInput(f"seed must be >= 0, got {self.seed}")
        if not (np.isfinite(self.deadline_seconds) and self.deadline_seconds >= 0):
            raise InvalidInput(f"deadline_seconds must be >= 0, got {self.deadline_seconds}")
        if self.job_id and not JOB_ID.match(self.job_id):
            raise InvalidInput(
                f"job_id must be 1-128 letters, digits, '.', '-' or '_', got {self.job_id!r}"
            )
        if self.workers and len(self.workers) != self.n:
            raise InvalidInput(f"workers must list n={self.n} addresses, got {len(self.workers)}")
        return self


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
        address: str,
        job_id: str,
        sequence: int,
        epoch: int,
        operand: np.ndarray,
        timeout: float,
    ) -> Pending:
        """Start ``C_i^T operand``; the future's result is ``(worker_index, product, seconds)``."""
        ...

    def drop(self, address: str, job_id: str) -> None: ...


@dataclass(frozen=True)
class WorkerTiming:
    index: int
    address: str
    #: seconds from fan-out to the answer (or to when it was given up)
    seconds: float
    arrived: bool
    compute_seconds: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class Product:
    job_id: str
    sequence: int
    value: np.ndarray
    seconds: float
    decoded_from: tuple[int, ...]
    timings: tuple[WorkerTiming, ...]


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
        metrics: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._cluster_workers = cluster_workers
        self._metrics = metrics
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
        if self._metrics is not None:
            self._metrics.matrix_placed_bytes.labels(scheme=spec.scheme).inc(sum(sent))
            for nnz in job.block_nnz:
                self._metrics.matrix_block_nnz.labels(scheme=spec.scheme).observe(nnz)
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

    def multiply(self, job_id: str, operand: Any) -> Product:
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

    def _gather(self, job: MatrixJob, sequence: int, x: np.ndarray) -> Product:
        code = job.code
        expected = (job.width, *x.shape[1:])
        deadline_seconds = job.spec.deadline_seconds or DEFAULT_DEADLINE_SECONDS
        gather: Gather[int] = Gather(self._clock)
        for i, address in enumerate(job.workers):
            call = self._transport.multiply(
                address, job.job_id, sequence, job.epoch, x, deadline_seconds
            )
            gather.submit(i, call)
        deadline = gather.started + deadline_seconds
        results: dict[int, np.ndarray] = {}
        timings: dict[int, WorkerTiming] = {}
        decoded: list[np.ndarray] | None = None
        scale = job.scale
        while decoded is None:
            outcome = gather.next(deadline)
            if outcome is None:
                break
            i, value, error, elapsed = outcome
            address = job.workers[i]
            if error is None:
                index, product, compute = value
                product = np.asarray(product)
                if index != i:
                    error = InvalidInput(
                        f"worker {address} answered as code index {index}, not {i}"
                    )
                elif product.shape != expected:
                    error = InvalidInput(
                        f"worker {address} returned shape {list(product.shape)}, "
                        f"expected {list(expected)}"
                    )
                elif not np.all(np.isfinite(product)):
                    error = InvalidInput(f"worker {address} returned non-finite values")
            if error is not None:
                timings[i] = WorkerTiming(i, address, elapsed, False, 0.0, _describe(error))
                log.warning(
                    "matrix job %s product %d: worker %d: %s",
                    job.job_id,
                    sequence,
                    i,
                    _describe(error),
                )
                continue
            results[i] = product / scale[i]
            timings[i] = WorkerTiming(i, address, elapsed, True, float(compute))
            if self._metrics is not None:
                self._metrics.matrix_worker_seconds.labels(worker=address).observe(float(compute))
            if len(results) >= code.k:
                try:
                    decoded = code.decode(results)
                except NotDecodable:
                    continue  # a singular subset: wait for one more result
        now = self._clock()
        stragglers = gather.cancel_rest()
        for i in stragglers:
            timings[i] = WorkerTiming(i, job.workers[i], now - gather.started, False)
        if decoded is None:
            failures = [f"{t.index}: {t.error}" for t in timings.values() if t.error]
            raise RoundFailed(
                f"matrix job {job.job_id} product {sequence}: {len(results)} of the {code.k} "
                f"results needed arrived within {deadline_seconds:g} s"
                + (f"; failed workers {failures}" if failures else "")
            )
        value = join_columns(decoded, job.shape[1])
        if job.column_order is not None:
            in_order = np.empty_like(value)
            in_order[job.column_order] = value  # entry i belongs to column column_order[i]
            value = in_order
        seconds = self._clock() - gather.started
        if self._metrics is not None:
            self._metrics.matrix_product_seconds.labels(scheme=job.spec.scheme).observe(seconds)
        return Product(
            job_id=job.job_id,
            sequence=sequence,
            value=value,
            seconds=seconds,
            decoded_from=code.select_workers(results.keys()),
            timings=tuple(timings[i] for i in sorted(timings)),
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
                log.info("drop %s on %s: %s", job_id, address, _describe(exc))
        return job


def _describe(error: BaseException) -> str:
    details = getattr(error, "details", None)
    code = getattr(error, "code", None)
    if callable(details) and callable(code):
        try:
            return f"{code().name}: {details()}"
        except Exception:  # a cancelled future's error may not carry a status
            pass
    return f"{type(error).__name__}: {error}"
