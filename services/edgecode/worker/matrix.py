"""The worker's side of a matrix job: hold coded CSR blocks ``C_i`` (and, for A^T B, ``B_i``),
compute ``C_i^T x`` or ``C_i^T B_i``.

Kept apart from :mod:`edgecode.worker.logic` so the training paths are untouched. Blocks are
keyed by job and code index: after the master re-places the block of a gone worker, a worker may
hold several code indices of one job, and ``Multiply`` names the index it wants. A block is
streamed in row chunks and installed atomically once every row and non-zero arrived; a B block
(side "b") joins the A block of the same index and placement epoch and stays CSR, so the
product of two sparse coded blocks is a sparse product. Products are real CSR products; a worker
started with ``--compute-seconds`` / ``--straggle`` adds the same emulated compute time as for a
gradient, with the block's ``work_fraction`` (its share of the whole product's work) as its
share of the data. A newer product (higher sequence number), a re-placement or a cancellation
abandons the emulated part at once.
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
from edgecode.records import BLOCK_SIDES, BlockHeader

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
    #: follows the non-zeros (C.T @ x on the CSR block paid a fixed ~0.3 ms per product).
    #: Once a B block joins, C_i itself as CSR (rows x cols), see :meth:`Block.product`.
    matrix: Any
    runtime: Any
    latest_sequence: int = -1
    newer: threading.Event = field(default_factory=threading.Event)
    #: the coded B block B_i (t x w_b, CSR) of an A^T B job, once placed
    rhs: Any = None

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz) + (0 if self.rhs is None else int(self.rhs.nnz))

    def join(self, rhs: Any) -> None:
        """B's coded block arrives: keep it as CSR and flip A's block back to C_i (t x w)."""
        self.matrix = self.matrix.T.tocsr()
        self.rhs = rhs

    def product(self) -> np.ndarray:
        """``C_i^T B_i`` (w x w_b, dense), computed as ``(B_i^T C_i)^T``: the sparse product
        then runs over B's few columns, and measured 1.3-1.6x faster than ``C_i^T @ B_i`` on
        1%-dense blocks (the multiply-adds are the same; the output is walked in w_b rows)."""
        return np.asarray((self.rhs.T @ self.matrix).toarray().T, dtype=np.float64)


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
        if h.side not in BLOCK_SIDES:
            raise InvalidInput(f"block: side must be one of {list(BLOCK_SIDES)}, got {h.side!r}")
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
        if h.side == "b":
            return self.store._install_rhs(h, sp.csr_matrix(matrix))
        block = Block(h, sp.csr_matrix(matrix).T.tocsr(), self.store.straggle.runtime(1))
        self.store._install(block)
        return block


class MatrixWorker:
    """Coded blocks per (job, code index), and the products on them."""

    def __init__(
        self,
        name: str,
        straggle: StraggleConfig | None = None,
        rng: np.random.Generator | None = None,
        metrics: MatrixMetricsPort | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_blocks: int = 64,
    ) -> None:
        self.name = name
        self.straggle = straggle or StraggleConfig()
        self._rng = rng if rng is not None else np.random.default_rng()
        self._metrics: MatrixMetricsPort = metrics if metrics is not None else NoMatrixMetrics()
        self._clock = clock
        self._max_blocks = max_blocks
        self._blocks: dict[tuple[str, int], Block] = {}
        #: job id -> when one of its blocks was last placed or multiplied (for the idle TTL)
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def begin(self, header: BlockHeader) -> BlockBuilder:
        return BlockBuilder(self, header)

    def _install(self, block: Block) -> None:
        key = (block.header.job_id, block.header.worker_index)
        with self._lock:
            old = self._blocks.get(key)
            if old is None and len(self._blocks) >= self._max_blocks:
                raise Overloaded(f"worker {self.name} already holds {self._max_blocks} blocks")
            if old is not None:
                old.newer.set()
            self._blocks[key] = block
            self._used[block.header.job_id] = self._clock()
            held = self._held(block.header.job_id)
        self._metrics.block_held(block.header.job_id, held)

    def _install_rhs(self, header: BlockHeader, rhs: Any) -> Block:
        """B's coded block joins the A block of the same index and epoch."""
        key = (header.job_id, header.worker_index)
        with self._lock:
            block = self._blocks.get(key)
            if block is None or block.header.epoch != header.epoch:
                raise InvalidInput(
                    f"block: B's block of job {header.job_id!r} index {header.worker_index} "
                    f"epoch {header.epoch} arrived before its A block"
                )
            if block.header.rows != header.rows:
                raise InvalidInput(
                    f"block: B's block has {header.rows} rows, the A block {block.header.rows}"
                )
            if block.rhs is not None:
                raise InvalidInput(
                    f"block: B's block of job {header.job_id!r} index {header.worker_index} "
                    f"epoch {header.epoch} was placed already"
                )
            block.join(rhs)
            self._used[header.job_id] = self._clock()
            held = self._held(header.job_id)
        self._metrics.block_held(header.job_id, held)
        return block

    def _held(self, job_id: str) -> int:
        return sum(b.nnz for (job, _), b in self._blocks.items() if job == job_id)

    def expire(self, ttl_seconds: float) -> list[str]:
        """Drop the jobs not placed or used for ``ttl_seconds``; returns their ids."""
        now = self._clock()
        with self._lock:
            idle = [j for j, used in self._used.items() if now - used > ttl_seconds]
        for job_id in idle:
            self.drop(job_id)
        return idle

    def drop(self, job_id: str) -> bool:
        """Drop every block of a job; whether there was one."""
        with self._lock:
            self._used.pop(job_id, None)
            keys = [key for key in self._blocks if key[0] == job_id]
            blocks = [self._blocks.pop(key) for key in keys]
        for block in blocks:
            block.newer.set()
        if blocks:
            self._metrics.block_dropped(job_id)
        return bool(blocks)

    def blocks(self) -> dict[str, dict[int, Block]]:
        """The blocks held: job id -> code index -> block."""
        with self._lock:
            held: dict[str, dict[int, Block]] = {}
            for (job_id, index), block in self._blocks.items():
                held.setdefault(job_id, {})[index] = block
            return held

    def _find(self, job_id: str, index: int | None) -> Block:
        """The block of ``job_id`` with code index ``index`` (None: the job's only block)."""
        if index is not None:
            block = self._blocks.get((job_id, index))
            if block is None:
                raise UnknownJob(
                    f"worker {self.name} holds no block {index} of matrix job {job_id!r}"
                )
            return block
        mine = [b for (job, _), b in self._blocks.items() if job == job_id]
        if not mine:
            raise UnknownJob(f"worker {self.name} holds no block for matrix job {job_id!r}")
        if len(mine) > 1:
            raise InvalidInput(
                f"worker {self.name} holds {len(mine)} blocks of matrix job {job_id!r}: name the "
                "code index"
            )
        return mine[0]

    def multiply(
        self,
        job_id: str,
        sequence: int,
        epoch: int,
        operand: np.ndarray | None,
        cancelled: threading.Event,
        index: int | None = None,
    ) -> tuple[int, np.ndarray, float]:
        """``(worker_index, C_i^T operand, seconds)``, or ``C_i^T B_i`` (dense) when
        ``operand`` is None; raises StaleRound when a newer product, a re-placement or a
        cancellation makes it useless."""
        start = self._clock()
        with self._lock:
            block = self._find(job_id, index)
            self._used[job_id] = self._clock()
            if epoch != block.header.epoch:
                raise StaleRound(f"placement epoch {epoch} is not the current {block.header.epoch}")
            if sequence < block.latest_sequence:
                raise StaleRound(f"product {sequence} is older than {block.latest_sequence}")
            self._check_operand(block, operand)
            if sequence > block.latest_sequence:
                block.newer.set()
                block.newer = threading.Event()
                block.latest_sequence = sequence
            newer = block.newer
        if operand is None:
            product = block.product()
        else:
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

    @staticmethod
    def _check_operand(block: Block, operand: np.ndarray | None) -> None:
        rows = block.header.rows
        if operand is None:
            if block.rhs is None:
                raise InvalidInput(
                    f"block {block.header.worker_index} of {block.header.job_id!r} has no B "
                    "block: send an operand"
                )
            return
        if block.rhs is not None:
            raise InvalidInput(
                f"block {block.header.worker_index} of {block.header.job_id!r} multiplies its "
                "placed B block: send no operand (coded_rhs)"
            )
        if operand.ndim not in (1, 2) or operand.shape[0] != rows:
            raise InvalidInput(
                f"operand must have {rows} rows (shape [{rows}] or [{rows}, p]), "
                f"got shape {list(operand.shape)}"
            )

    def _wait(self, seconds: float, cancelled: threading.Event, newer: threading.Event) -> None:
        emulate(seconds, cancelled, newer, self._clock)
