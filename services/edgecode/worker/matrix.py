"""The worker's side of a matrix job: hold one coded CSR block ``C_i``, compute ``C_i^T x``.

Kept apart from :mod:`edgecode.worker.logic` so the training paths are untouched. A block is
streamed in row chunks and installed atomically once every row and non-zero arrived. Products are
real CSR products; a worker started with ``--compute-seconds`` / ``--straggle`` adds the same
emulated compute time as for a gradient, with the block's ``work_fraction`` (nnz(C_i) / nnz(A))
as its share of the data. A newer product (higher sequence number), a re-placement or a
cancellation abandons the emulated part at once.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from edgecode.emulation import StraggleConfig, emulate
from edgecode.errors import InvalidInput, Overloaded, StaleRound, UnknownJob
from edgecode.records import BlockHeader

#: Job ids: what the master accepts too (no path separators or control characters in logs).
JOB_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
#: Largest coded block a worker accepts (rows, cols and non-zeros), far above any edge device.
MAX_DIMENSION = 1 << 31
MAX_NNZ = 1 << 31


class MatrixMetricsPort(Protocol):
    """What the matrix worker records (runtime.metrics.WorkerMetrics; default: nothing)."""

    def multiplied(self, seconds: float, nbytes: int) -> None: ...

    def abandoned_round(self) -> None: ...

    def block_held(self, job_id: str, nnz: int) -> None: ...

    def block_dropped(self, job_id: str) -> None: ...


class NoMatrixMetrics:
    """Records nothing."""

    def multiplied(self, seconds: float, nbytes: int) -> None:
        pass

    def abandoned_round(self) -> None:
        pass

    def block_held(self, job_id: str, nnz: int) -> None:
        pass

    def block_dropped(self, job_id: str) -> None:
        pass


@dataclass
class Block:
    header: BlockHeader
    #: C_i^T as CSR (cols x rows): the product C_i^T x is then a row-wise CSR matvec whose cost
    #: follows the non-zeros (C.T @ x on the CSR block paid a fixed ~0.3 ms per product)
    matrix: Any
    runtime: Any
    latest_sequence: int = -1
    newer: threading.Event = field(default_factory=threading.Event)


class BlockBuilder:
    """Collects a streamed block: chunks must arrive in row order and tile the block exactly."""

    def __init__(self, store: MatrixWorker, header: BlockHeader) -> None:
        h = header
        if not JOB_ID.match(h.job_id):
            raise InvalidInput(
                f"block: job_id must be 1-128 letters, digits, '.', '-' or '_', got {h.job_id!r}"
            )
        if h.worker_index < 0:
            raise InvalidInput(f"block: worker_index must be >= 0, got {h.worker_index}")
        if not (0 < h.rows <= MAX_DIMENSION and 0 < h.cols <= MAX_DIMENSION):
            raise InvalidInput(f"block: shape must be positive, got ({h.rows}, {h.cols})")
        if not 0 <= h.nnz <= min(MAX_NNZ, h.rows * h.cols):
            raise InvalidInput(f"block: nnz {h.nnz} impossible for shape ({h.rows}, {h.cols})")
        if not (np.isfinite(h.work_fraction) and h.work_fraction >= 0):
            raise InvalidInput(f"block: work_fraction must be >= 0, got {h.work_fraction}")
        self.store = store
        self.header = h
        self.chunks: list[Any] = []
        self.next_row = 0
        self.nnz = 0

    def add(self, first_row: int, rows: Any) -> None:
        h = self.header
        if first_row != self.next_row:
            raise InvalidInput(f"block: chunk starts at row {first_row}, expected {self.next_row}")
        if rows.shape[1] != h.cols:
            raise InvalidInput(f"block: chunk has {rows.shape[1]} columns, the block {h.cols}")
        if self.next_row + rows.shape[0] > h.rows:
            raise InvalidInput(f"block: chunks run past the block's {h.rows} rows")
        self.nnz += int(rows.nnz)
        if self.nnz > h.nnz:
            raise InvalidInput(f"block: more than the header's {h.nnz} non-zeros arrived")
        self.chunks.append(rows)
        self.next_row += int(rows.shape[0])

    def finish(self) -> Block:
        h = self.header
        if self.next_row != h.rows or self.nnz != h.nnz:
            raise InvalidInput(
                f"block: {self.next_row} of {h.rows} rows and {self.nnz} of {h.nnz} non-zeros "
                "arrived"
            )
        matrix = sp.vstack(self.chunks, format="csr") if len(self.chunks) > 1 else self.chunks[0]
        block = Block(h, sp.csr_matrix(matrix).T.tocsr(), self.store.straggle.runtime(1))
        self.store._install(block)
        return block


class MatrixWorker:
    """Coded blocks per job, and the products on them."""

    def __init__(
        self,
        name: str,
        straggle: StraggleConfig | None = None,
        rng: np.random.Generator | None = None,
        metrics: MatrixMetricsPort | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_jobs: int = 64,
    ) -> None:
        self.name = name
        self.straggle = straggle or StraggleConfig()
        self._rng = rng if rng is not None else np.random.default_rng()
        self._metrics: MatrixMetricsPort = metrics if metrics is not None else NoMatrixMetrics()
        self._clock = clock
        self._max_jobs = max_jobs
        self._blocks: dict[str, Block] = {}
        #: job id -> when its block was last placed or multiplied (for the idle TTL)
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def begin(self, header: BlockHeader) -> BlockBuilder:
        return BlockBuilder(self, header)

    def _install(self, block: Block) -> None:
        with self._lock:
            old = self._blocks.get(block.header.job_id)
            if old is None and len(self._blocks) >= self._max_jobs:
                raise Overloaded(f"worker {self.name} already holds {self._max_jobs} matrix jobs")
            if old is not None:
                old.newer.set()
            self._blocks[block.header.job_id] = block
            self._used[block.header.job_id] = self._clock()
        self._metrics.block_held(block.header.job_id, int(block.matrix.nnz))

    def expire(self, ttl_seconds: float) -> list[str]:
        """Drop the blocks not placed or used for ``ttl_seconds``; returns their job ids."""
        now = self._clock()
        with self._lock:
            idle = [j for j, used in self._used.items() if now - used > ttl_seconds]
        for job_id in idle:
            self.drop(job_id)
        return idle

    def drop(self, job_id: str) -> bool:
        with self._lock:
            self._used.pop(job_id, None)
            block = self._blocks.pop(job_id, None)
        if block is not None:
            block.newer.set()
            self._metrics.block_dropped(job_id)
        return block is not None

    def blocks(self) -> dict[str, Block]:
        with self._lock:
            return dict(self._blocks)

    def multiply(
        self,
        job_id: str,
        sequence: int,
        epoch: int,
        operand: np.ndarray,
        cancelled: threading.Event,
    ) -> tuple[int, np.ndarray, float]:
        """``(worker_index, C_i^T operand, seconds)``; raises StaleRound when a newer product, a
        re-placement or a cancellation makes it useless."""
        start = self._clock()
        with self._lock:
            block = self._blocks.get(job_id)
            if block is None:
                raise UnknownJob(f"worker {self.name} holds no block for matrix job {job_id!r}")
            self._used[job_id] = self._clock()
            if epoch != block.header.epoch:
                raise StaleRound(f"placement epoch {epoch} is not the current {block.header.epoch}")
            if sequence < block.latest_sequence:
                raise StaleRound(f"product {sequence} is older than {block.latest_sequence}")
            rows = block.header.rows
            if operand.ndim not in (1, 2) or operand.shape[0] != rows:
                raise InvalidInput(
                    f"operand must have {rows} rows (shape [{rows}] or [{rows}, p]), "
                    f"got shape {list(operand.shape)}"
                )
            if sequence > block.latest_sequence:
                block.newer.set()
                block.newer = threading.Event()
                block.latest_sequence = sequence
            newer = block.newer
        product = np.asarray(block.matrix @ operand, dtype=np.float64)
        real = self._clock() - start
        if self.straggle.emulates:
            extra = block.runtime.sample(block.header.work_fraction, self._rng)
            block.runtime.advance(self._rng)
            if extra - real > 0:
                self._wait(extra - real, cancelled, newer)
        if cancelled.is_set() or newer.is_set():
            self._metrics.abandoned_round()
            raise StaleRound(f"product {sequence} was cancelled or superseded")
        seconds = self._clock() - start
        self._metrics.multiplied(seconds, product.nbytes)
        return block.header.worker_index, product, seconds

    def _wait(self, seconds: float, cancelled: threading.Event, newer: threading.Event) -> None:
        emulate(seconds, cancelled, newer, self._clock)
