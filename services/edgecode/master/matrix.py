"""The master's side of a matrix job: coded ``A^T x`` and ``A^T B`` on straggling workers, and
jobs that heal when a worker is gone.

Submit. ``A`` (t x r, sparse) is cut into k block-columns of width ``w = ceil(r / k)`` (in a
seeded random column order, :func:`balanced_split`) and encoded with the scheme's k-of-n code
(:mod:`edgecode.master.matrix_jobs`) into n coded CSR blocks ``C_i = sum_j G[i, j] A_j``, one
per worker, streamed in row chunks. With a B (t x p, sparse CSR) the job is ``A^T B`` with both
operands coded (paper 5): B is cut into k_b block-columns too, worker i also gets
``B_i = sum_l b_{il} B_l`` (CSR, streamed like A's block), and any K = k k_b results decode.
Bad input (K > n, B's rows not A's, a non-CSR B, NaN) is refused before anything is placed.

Product. Every code index i gets ``Multiply``: ``C_i^T x`` (length w, or w x p for a dense
operand: the A-only way to do A^T B, column by column), or ``C_i^T B_i`` (w x w_b) for an
A^T B job. The round engine (:mod:`edgecode.rounds`, rule :class:`~edgecode.rules.FirstKRule`)
takes the first K results that give a non-singular decoding matrix, cancels the rest and the
master solves ``X = G[S]^{-1} R_S``; a failed call, a result of the wrong shape or a worker
answering as another code index counts as a straggler.

Healing. After a product, the workers whose calls failed (not the ones merely cut off) are
health-checked (:class:`HealthPort`); the code indices of every gone worker are re-encoded from
A's (and B's) kept blocks and placed, with a new placement epoch, on the live worker holding the
fewest indices of the job (a spare of the cluster first), so the job regains its full
tolerance n - K. A worker may therefore hold several code indices of one job (the workers key
blocks by job and index): with no spare, re-placing on a live node is the only way back to
n - K tolerated straggling *indices*; the status also reports the whole *nodes* tolerated,
which is lower while a node holds two. A round that fails checks every worker, heals, and runs
once more. When fewer than K live workers remain the job fails, naming the gone and the
remaining workers.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from edgecode.codes.matrix import ProductCode, join_columns
from edgecode.errors import Infeasible, InvalidInput, Overloaded, RoundFailed, UnknownJob
from edgecode.master.matrix_input import (
    MatrixAssembler,
    balanced_split,
    checked_matrix,
    checked_rhs,
    load_matrix,
    unpermute,
)
from edgecode.master.matrix_jobs import (
    SCHEMES,
    Code,
    MatrixJob,
    RhsPart,
    build_code,
    pick_target,
    row_products,
    uncoded_code,
)
from edgecode.master.ports import MasterMetricsPort, NoMasterMetrics
from edgecode.records import FAILED, BlockHeader, MatmulProduct, MatmulSpec, Timing
from edgecode.rounds import FutureSource, Message, Pending, Round, describe
from edgecode.rules import FirstKRule

__all__ = [
    "DEFAULT_DEADLINE_SECONDS",
    "MAX_JOBS",
    "SCHEMES",
    "Code",
    "HealthPort",
    "MatrixAssembler",
    "MatrixJob",
    "MatrixMaster",
    "MatrixTransport",
    "balanced_split",
    "build_code",
    "checked_matrix",
    "checked_rhs",
    "load_matrix",
    "uncoded_code",
]

log = logging.getLogger(__name__)

#: Deadline of one product when the spec gives none.
DEFAULT_DEADLINE_SECONDS = 60.0
#: Matrix jobs a master holds at once (each keeps its split blocks; workers hold the coded ones).
MAX_JOBS = 32


class HealthPort(Protocol):
    """Which of these worker addresses are gone (a failed or not-SERVING health check)."""

    def unreachable(self, addresses: Sequence[str]) -> list[str]: ...


class MatrixTransport(HealthPort, Protocol):
    """How the master reaches workers (gRPC in transport.py, fakes in tests)."""

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
        operand: np.ndarray | None,
        timeout: float,
    ) -> Pending:
        """Start code index ``index``'s product on the worker at ``address``: ``C_i^T operand``,
        or ``C_i^T B_i`` when ``operand`` is None. The result is a
        :class:`~edgecode.rounds.Message` (InvalidInput when the worker answers as another
        index)."""
        ...

    def drop(self, address: str, job_id: str) -> None: ...


class _Named:
    """A started call whose message is renamed to its source's name (a node holding two code
    indices of a job is two sources, ``address#i``). A call that fails before the master
    cancels it adds its name to ``failed``, even when the round was decided without it (a dead
    worker cut off as a straggler is still found and healed)."""

    def __init__(self, call: Pending, name: str, failed: set[str]) -> None:
        self._call = call
        self._name = name
        self._failed = failed
        self._cancelled = False

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._call.add_done_callback(lambda _call: fn(self))

    def cancel(self) -> bool:
        self._cancelled = True
        return self._call.cancel()

    def result(self, timeout: float | None = None) -> Message:
        try:
            message = self._call.result(timeout=timeout)
        except BaseException:
            if not self._cancelled:
                self._failed.add(self._name)
            raise
        return dataclasses.replace(message, sender=self._name)


def source_names(workers: Sequence[str]) -> list[str]:
    """Each code index's source name: its worker's address, or ``address#i`` when the worker
    holds several indices of the job.

    >>> source_names(["a", "b", "b"])
    ['a', 'b#1', 'b#2']
    """
    count = Counter(workers)
    return [a if count[a] == 1 else f"{a}#{i}" for i, a in enumerate(workers)]


class MatrixMaster:
    """Matrix jobs: submit (encode + place), products (gather, cancel, decode), heal, drop."""

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
        #: job ids being built (encoded and placed), not yet in _jobs
        self._reserved: set[str] = set()
        self._lock = threading.Lock()
        self._epoch = 0

    def job(self, job_id: str) -> MatrixJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"no matrix job {job_id!r}")
        return job

    def _next_epoch(self) -> int:
        with self._lock:
            self._epoch += 1
            return self._epoch

    def _workers(self, spec: MatmulSpec) -> tuple[str, ...]:
        if spec.workers:
            return spec.workers
        if self._cluster_workers is None:
            raise Infeasible("the spec lists no workers and the master has no cluster view")
        known = tuple(self._cluster_workers())
        if len(known) < spec.n:
            raise Infeasible(f"n={spec.n} workers wanted, the cluster has {len(known)}")
        return known[: spec.n]

    # ---- submit ---------------------------------------------------------------------------
    def submit(self, spec: MatmulSpec, matrix: Any, rhs: Any = None) -> MatrixJob:
        """Encode ``matrix`` (and B = ``rhs``, for an A^T B job) per ``spec`` and place one
        coded block (pair) on each of n workers. Everything is checked before anything is
        placed; a placement that fails midway is dropped from every worker."""
        spec = spec.validated()
        csr = checked_matrix(matrix, "matrix")
        b = None if rhs is None else checked_rhs(rhs, "rhs")
        if b is not None and b.shape[0] != csr.shape[0]:
            raise InvalidInput(
                f"rhs (B) must have A's {csr.shape[0]} rows for A^T B, got shape {list(b.shape)}"
            )
        if b is None and spec.k_b != 1:
            raise InvalidInput(f"k_b = {spec.k_b} needs a B (rhs) to code")
        job_id = spec.job_id or f"mm-{uuid.uuid4().hex[:10]}"
        with self._lock:
            if job_id in self._jobs or job_id in self._reserved:
                raise InvalidInput(f"matrix job {job_id!r} exists; drop it first")
            if len(self._jobs) + len(self._reserved) >= MAX_JOBS:
                raise Overloaded(f"the master already holds {MAX_JOBS} matrix jobs")
            self._reserved.add(job_id)
        try:
            job = self._build(job_id, spec, csr, b)
        finally:
            with self._lock:
                self._reserved.discard(job_id)
        with self._lock:
            self._jobs[job_id] = job
        log.info(
            "matrix job %s: %s n=%d k=%d k_b=%d, A %s, %d coded non-zeros placed in %.2f s",
            job_id,
            spec.scheme,
            spec.n,
            spec.k,
            spec.k_b,
            job.shape,
            sum(job.block_nnz) + (0 if job.rhs is None else sum(job.rhs.block_nnz)),
            job.place_seconds,
        )
        return job

    def _build(self, job_id: str, spec: MatmulSpec, csr: Any, b: Any) -> MatrixJob:
        """Build the code, encode and place (dropped from every worker if placement fails)."""
        workers = self._workers(spec)
        started = self._clock()
        code = build_code(spec.scheme, spec.n, spec.k, spec.seed, spec.k_b, rhs=b is not None)
        job = self._encode(job_id, spec, code, workers, csr, b)
        encoded = self._clock()
        job.encode_seconds = encoded - started
        try:
            self._place_all(job)
        except BaseException:
            self._drop_everywhere(job)
            raise
        job.place_seconds = self._clock() - encoded
        return job

    def _encode(
        self,
        job_id: str,
        spec: MatmulSpec,
        code: Code,
        workers: tuple[str, ...],
        csr: Any,
        b: Any,
    ) -> MatrixJob:
        """The job record with A's (and B's) split blocks; nothing placed yet."""
        column_order, a_blocks = balanced_split(csr, spec.k, spec.seed)
        rhs = None
        if b is not None:
            b_order, b_blocks = balanced_split(b, spec.k_b, spec.seed, stream=1)
            rhs = RhsPart(
                blocks=b_blocks,
                order=b_order,
                cols=int(b.shape[1]),
                width=int(b_blocks[0].shape[1]),
                block_nnz=[0] * spec.n,
                block_bytes=[0] * spec.n,
                work=row_products(csr, b),
            )
        return MatrixJob(
            job_id=job_id,
            spec=spec,
            code=code,
            shape=(int(csr.shape[0]), int(csr.shape[1])),
            width=int(a_blocks[0].shape[1]),
            workers=workers,
            epoch=0,
            block_nnz=[0] * spec.n,
            block_bytes=[0] * spec.n,
            encode_seconds=0.0,
            place_seconds=0.0,
            column_order=column_order,
            a_blocks=a_blocks,
            rhs=rhs,
            epochs=[0] * spec.n,
        )

    def _place_all(self, job: MatrixJob) -> None:
        epoch = self._next_epoch()
        indices = range(job.code.n_workers)
        with ThreadPoolExecutor(max_workers=min(16, len(job.workers))) as pool:
            sent = list(
                pool.map(lambda i: self._place_index(job, i, job.workers[i], epoch), indices)
            )
        job.epoch = epoch
        self._metrics.matrix_placed(job.spec.scheme, sum(sent), job.block_nnz)

    def _place_index(self, job: MatrixJob, index: int, address: str, epoch: int) -> int:
        """Encode code index ``index`` alone and stream it (A's block, then B's) to
        ``address``; records its non-zeros, bytes and epoch; returns the bytes sent."""
        (a_block,) = job.code.encode(job.a_blocks, [index])
        total = max(sum(int(block.nnz) for block in job.a_blocks), 1)
        fraction = float(a_block.nnz) / total
        b_block = None
        if job.rhs is not None:
            assert isinstance(job.code, ProductCode)
            (b_block,) = job.code.encode_b(job.rhs.blocks, [index])
            fraction = row_products(a_block, b_block) / max(job.rhs.work, 1)
        header = BlockHeader(
            job_id=job.job_id,
            worker_index=index,
            rows=int(a_block.shape[0]),
            cols=int(a_block.shape[1]),
            nnz=int(a_block.nnz),
            epoch=epoch,
            work_fraction=fraction,
        )
        sent = self._transport.place_block(address, header, a_block)
        job.block_nnz[index], job.block_bytes[index] = int(a_block.nnz), int(sent)
        if job.rhs is not None and b_block is not None:
            b_header = dataclasses.replace(
                header, cols=int(b_block.shape[1]), nnz=int(b_block.nnz), side="b"
            )
            b_sent = self._transport.place_block(address, b_header, b_block)
            job.rhs.block_nnz[index], job.rhs.block_bytes[index] = int(b_block.nnz), int(b_sent)
            sent += b_sent
        job.epochs[index] = epoch
        return int(sent)

    # ---- products -------------------------------------------------------------------------
    def multiply(self, job_id: str, operand: Any = None) -> MatmulProduct:
        """``A^T operand`` (operand: t or t x p) from the first decodable set of workers, or
        ``A^T B`` of an A^T B job (no operand). Gone workers found on the way are replaced."""
        job = self.job(job_id)
        x = self._checked_operand(job, operand)
        with job.lock:
            self._check_running(job)
            try:
                product, failed = self._gather(job, x)
            except RoundFailed:
                replaced = self._heal(job, set(job.workers))
                self._check_running(job)  # too few workers left: the job failed, say who
                if not replaced:
                    raise
                product, failed = self._gather(job, x)  # once more, on the healed placement
                return dataclasses.replace(product, replaced=replaced)
            replaced = self._heal(job, failed)
        return dataclasses.replace(product, replaced=replaced)

    def _checked_operand(self, job: MatrixJob, operand: Any) -> np.ndarray | None:
        if job.rhs is not None:
            if operand is not None:
                raise InvalidInput(
                    f"matrix job {job.job_id!r} computes A^T B with its placed B: send no operand"
                )
            return None
        if operand is None:
            raise InvalidInput(f"matrix job {job.job_id!r} has no B: send an operand x (or B)")
        x = np.asarray(operand, dtype=np.float64)
        t = job.shape[0]
        if x.ndim not in (1, 2) or x.shape[0] != t or x.size == 0:
            raise InvalidInput(
                f"operand must have shape [{t}] or [{t}, p] (A is {job.shape[0]} x "
                f"{job.shape[1]}), got {list(x.shape)}"
            )
        if not np.all(np.isfinite(x)):
            raise InvalidInput("operand holds NaN or infinite values")
        return x

    @staticmethod
    def _check_running(job: MatrixJob) -> None:
        if job.state == FAILED:
            raise Infeasible(f"matrix job {job.job_id!r} failed: {job.message}")

    def _gather(self, job: MatrixJob, x: np.ndarray | None) -> tuple[MatmulProduct, set[str]]:
        """One product; returns it and the addresses of the workers whose calls failed."""
        job.products += 1
        sequence = job.products
        deadline_seconds = job.spec.deadline_seconds or DEFAULT_DEADLINE_SECONDS
        names = source_names(job.workers)
        index_of = {name: i for i, name in enumerate(names)}
        if job.rhs is not None:
            shape: tuple[int, ...] = (job.width, job.rhs.width)
        else:
            assert x is not None
            shape = (job.width, *x.shape[1:])
        collector = Round(index_of, shape, deadline_seconds, self._clock, self._metrics)
        errored: set[str] = set()
        for i, address in enumerate(job.workers):
            call = self._transport.multiply(
                i, address, job.job_id, sequence, job.epochs[i], x, deadline_seconds
            )
            collector.add(FutureSource(names[i], _Named(call, names[i], errored)))
        try:
            outcome = collector.decide(FirstKRule(job.code, job.scale))
        finally:
            for name, why in collector.failed.items():
                log.warning("matrix job %s product %d: %s: %s", job.job_id, sequence, name, why)
        failed = {name.split("#")[0] for name in (*collector.failed, *errored.copy())}
        for timing in outcome.sources:
            if timing.arrived:
                self._metrics.matrix_worker(timing.node, timing.compute_seconds)
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
        product = MatmulProduct(
            job_id=job.job_id,
            sequence=sequence,
            value=self._assemble(job, list(outcome.decoded.value)),
            seconds=outcome.seconds,
            decoded_from=outcome.decoded.used,
            timings=tuple(timings),
        )
        return product, failed

    @staticmethod
    def _assemble(job: MatrixJob, blocks: list[np.ndarray]) -> np.ndarray:
        """The decoded block results as ``A^T x`` (or ``A^T B``) in A's (and B's) order."""
        if job.rhs is None:
            value = join_columns(blocks, job.shape[1])
            return unpermute(value, job.column_order, axis=0)
        k_b = job.spec.k_b
        grid = np.block([[blocks[j * k_b + l] for l in range(k_b)] for j in range(job.spec.k)])
        value = np.asarray(grid[: job.shape[1], : job.rhs.cols], dtype=np.float64)
        return unpermute(unpermute(value, job.column_order, axis=0), job.rhs.order, axis=1)

    # ---- healing --------------------------------------------------------------------------
    def check(self, job_id: str) -> MatrixJob:
        """Health-check every worker of the job and re-place the blocks of the gone ones."""
        job = self.job(job_id)
        with job.lock:
            if job.state != FAILED:
                self._heal(job, set(job.workers))
        return job

    def _heal(self, job: MatrixJob, suspects: set[str]) -> tuple[int, ...]:
        """Re-place the code indices of the ``suspects`` that fail their health check;
        returns the indices re-placed. Fails the job when fewer than K live workers remain."""
        if not suspects:
            return ()
        gone = set(self._transport.unreachable(sorted(suspects)))
        pending = deque(i for i, address in enumerate(job.workers) if address in gone)
        if not pending:
            return ()
        job.lost.update(pending)
        job.gone.update(gone)
        candidates = self._candidates(job, gone)
        epoch = self._next_epoch()
        workers = list(job.workers)
        replaced: list[int] = []
        while pending:
            if len(candidates) < job.code.k:
                self._fail(job, candidates)
                break
            index = pending.popleft()
            target = pick_target(workers, job.lost, candidates)
            try:
                sent = self._place_index(job, index, target, epoch)
            except Exception as exc:  # the target died too: it is gone, with its indices
                log.warning(
                    "matrix job %s: re-placing %d on %s: %s",
                    job.job_id,
                    index,
                    target,
                    describe(exc),
                )
                gone.add(target)
                job.gone.add(target)
                candidates.remove(target)
                pending.appendleft(index)
                more = [i for i, a in enumerate(workers) if a == target and i not in job.lost]
                job.lost.update(more)
                pending.extend(more)
                continue
            workers[index] = target
            job.lost.discard(index)
            job.replacements += 1
            job.replaced_bytes += sent
            replaced.append(index)
            self._metrics.matrix_placed(job.spec.scheme, sent, [job.block_nnz[index]])
        job.workers = tuple(workers)
        job.epoch = epoch
        log.warning(
            "matrix job %s: workers gone: %s; re-placed code indices %s (epoch %d)",
            job.job_id,
            ", ".join(sorted(gone)),
            replaced,
            epoch,
        )
        return tuple(replaced)

    def _candidates(self, job: MatrixJob, gone: set[str]) -> list[str]:
        """Live workers a lost index may go to: the job's own (index order), then the spares
        of the cluster view that pass a health check (a paused spare would hold a placement
        up to its deadline; a dead one the view still lists would be tried first)."""
        candidates = list(dict.fromkeys(a for a in job.workers if a not in gone))
        if self._cluster_workers is None:
            return candidates
        try:
            known = list(self._cluster_workers())
        except Exception as exc:  # no cluster view: the job's own workers only
            log.info("matrix job %s: no cluster view for spares: %s", job.job_id, exc)
            return candidates
        spares = [a for a in dict.fromkeys(known) if a not in gone and a not in candidates]
        if spares:
            down = set(self._transport.unreachable(spares))
            candidates += [a for a in spares if a not in down]
        return candidates

    @staticmethod
    def _fail(job: MatrixJob, live: Sequence[str]) -> None:
        job.state = FAILED
        job.message = (
            f"fewer than k={job.code.k} workers remain: {len(live)} live "
            f"({', '.join(live) or 'none'}); gone: {', '.join(sorted(job.gone))}"
        )
        log.error("matrix job %s failed: %s", job.job_id, job.message)

    # ---- drop -----------------------------------------------------------------------------
    def drop(self, job_id: str) -> MatrixJob:
        """Forget a job here and on its workers (an unreachable worker is skipped)."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is None:
            raise UnknownJob(f"no matrix job {job_id!r}")
        self._drop_everywhere(job)
        return job

    def _drop_everywhere(self, job: MatrixJob) -> None:
        for address in dict.fromkeys(job.workers):
            try:
                self._transport.drop(address, job.job_id)
            except Exception as exc:  # a dead worker holds nothing anyway
                log.info("drop %s on %s: %s", job.job_id, address, describe(exc))
