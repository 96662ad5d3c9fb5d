"""A matrix job's code and its record: which code a scheme builds, what the master keeps to
decode and to heal, and what the job status reports.

Codes. ``A^T x`` (no B): ``sparse`` is :func:`~edgecode.codes.matrix.sparse_mv_code` (weight
``ceil(k (n - k + 1) / n)``), ``dense`` :func:`~edgecode.codes.matrix.dense_mds_code`, ``poly``
:func:`~edgecode.codes.matrix.polynomial_code` with k_b = 1, ``uncoded`` the identity (k = n).
``A^T B`` with both operands coded (a B placed with the job): ``sparse`` is
:func:`~edgecode.codes.matrix.sparse_mm_code` (weights (omega_a, omega_b), reported beside the
counting bound ``omega_a omega_b >= ceil(K (n - K + 1) / n)``, K = k_a k_b), ``poly`` the
polynomial code with k_b blocks of B, ``uncoded`` worker ``j k_b + l`` holding ``A_j`` and
``B_l`` (K = n). ``dense`` codes A only.

Healing. The master keeps A's (and B's) k split blocks, so the coded block of any code index
can be re-encoded alone (:meth:`~edgecode.codes.matrix.MatVecCode.encode` with ``workers``)
and placed on another node; a node may then hold several code indices of one job.
:func:`pick_target` chooses where a lost index goes, :func:`node_tolerance` says how many whole
nodes the placement now tolerates.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecode.codes.matrix import (
    MatVecCode,
    ProductCode,
    dense_mds_code,
    polynomial_code,
    product_counting_bound,
    sparse_mm_code,
    sparse_mv_code,
)
from edgecode.errors import InvalidInput
from edgecode.records import MATRIX_SCHEMES, RUNNING, MatmulJobStatus, MatmulSpec

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


def uncoded_product_code(k_a: int, k_b: int) -> ProductCode:
    """n = k_a k_b plain pairs: worker ``j k_b + l`` holds ``A_j`` and ``B_l``, computes
    ``A_j^T B_l`` (identity generator), every worker needed.

    >>> uncoded_product_code(2, 3).support_b[4]
    (1,)
    """
    n = k_a * k_b
    rows = np.arange(n)
    return ProductCode(
        name="uncoded",
        n_workers=n,
        k=n,
        generator=np.eye(n),
        worst_condition=1.0,
        condition_scope="exhaustive",
        condition_subsets=1,
        k_a=k_a,
        k_b=k_b,
        weight=(1, 1),
        coefficients=(np.eye(k_a)[rows // k_b], np.eye(k_b)[rows % k_b]),
        support_a=tuple((int(i) // k_b,) for i in rows),
        support_b=tuple((int(i) % k_b,) for i in rows),
        counting_bound=product_counting_bound(n, k_a, k_b),
        search_log=("uncoded: worker j k_b + l holds A_j and B_l",),
    )


def build_code(
    scheme: str, n: int, k: int, seed: int = 0, k_b: int = 1, *, rhs: bool = False
) -> Code:
    """The code of a scheme (see the module docstring); ``rhs``: an A^T B job (B coded too)."""
    if scheme not in SCHEMES:
        raise InvalidInput(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")
    if rhs:
        if scheme == "sparse":
            return sparse_mm_code(n, k, k_b, seed=seed)
        if scheme == "poly":
            return polynomial_code(n, k, k_b, seed=seed)
        if scheme == "uncoded":
            return uncoded_product_code(k, k_b)
        raise InvalidInput("scheme dense codes A only: use sparse or poly for A^T B with a B")
    if k_b != 1:
        raise InvalidInput(f"k_b = {k_b} needs a B (rhs) to code; A^T x has k_b = 1")
    if scheme == "sparse":
        return sparse_mv_code(n, k, seed=seed)
    if scheme == "dense":
        return dense_mds_code(n, k, seed=seed)
    if scheme == "poly":
        return polynomial_code(n, k, 1, seed=seed)
    return uncoded_code(n)


def weight_of(code: Code) -> tuple[tuple[int, int], int]:
    """((omega_a, omega_b), bound): the weight achieved and the counting bound on
    ``omega_a * omega_b`` (A^T x codes: (omega, 1) and ``weight_lower_bound``)."""
    if isinstance(code, ProductCode):
        return (int(code.weight[0]), int(code.weight[1])), int(code.counting_bound)
    return (int(code.weight), 1), int(code.lower_bound)


def row_products(a: Any, b: Any) -> int:
    """Multiply-adds of ``a^T b`` for CSR ``a`` (t x w_a) and ``b`` (t x w_b): row r of both
    pairs up ``nnz(a[r]) * nnz(b[r])`` entries. The work of a worker's sparse product."""
    return int(np.dot(np.diff(a.indptr).astype(np.int64), np.diff(b.indptr).astype(np.int64)))


def pick_target(workers: Sequence[str], lost: set[int], candidates: Sequence[str]) -> str:
    """Where a lost code index goes: the candidate holding the fewest live code indices of the
    job (a spare, holding none, first), ties in ``candidates`` order.

    >>> pick_target(["a", "b", "b", "c"], {3}, ["a", "b", "d"])
    'd'
    >>> pick_target(["a", "b", "b", "c"], {3}, ["a", "b"])
    'a'
    """
    if not candidates:
        raise InvalidInput("no live worker to place a coded block on")
    loads = Counter(address for i, address in enumerate(workers) if i not in lost)
    position = {address: p for p, address in enumerate(candidates)}
    return min(candidates, key=lambda address: (loads.get(address, 0), position[address]))


def node_tolerance(workers: Sequence[str], lost: set[int], k: int) -> int:
    """Whole nodes the placement tolerates: the most nodes that can vanish together and leave
    at least k live code indices (the worst case drops the most loaded nodes first).

    >>> node_tolerance(["a", "b", "c", "d", "e", "f"], set(), 4)
    2
    >>> node_tolerance(["a", "b", "b", "d", "e", "f"], set(), 4)
    1
    """
    loads = sorted(
        Counter(a for i, a in enumerate(workers) if i not in lost).values(), reverse=True
    )
    spare = sum(loads) - k
    dropped = 0
    for load in loads:
        if load > spare:
            break
        spare -= load
        dropped += 1
    return dropped


@dataclass
class RhsPart:
    """B of an A^T B job: its k_b split blocks (kept for re-encoding) and what was placed."""

    blocks: list[Any]
    order: np.ndarray
    cols: int
    width: int
    block_nnz: list[int]
    block_bytes: list[int]
    #: multiply-adds of the whole uncoded A^T B (the reference of each block's work fraction)
    work: int


@dataclass
class MatrixJob:
    """A placed matrix job: its code, where each code index lives, what it cost."""

    job_id: str
    spec: MatmulSpec
    code: Code
    shape: tuple[int, int]
    width: int
    #: worker address of each code index
    workers: tuple[str, ...]
    epoch: int
    block_nnz: list[int]
    block_bytes: list[int]
    encode_seconds: float
    place_seconds: float
    #: A's columns are split in this (seeded random) order; results are put back in A's order
    column_order: np.ndarray | None = None
    products: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: A's k split blocks, kept to re-encode a lost code index
    a_blocks: list[Any] = field(default_factory=list)
    rhs: RhsPart | None = None
    #: placement epoch of each code index (a re-placed index gets a new one)
    epochs: list[int] = field(default_factory=list)
    #: code indices whose worker is gone and that could not be re-placed
    lost: set[int] = field(default_factory=set)
    #: every worker of the job found gone so far (its indices were re-placed, or lost)
    gone: set[str] = field(default_factory=set)
    state: str = RUNNING
    message: str = ""
    replacements: int = 0
    replaced_bytes: int = 0

    @property
    def scale(self) -> np.ndarray:
        """Worker i's result is ``scale[i] * generator[i] @ X``: the B-side coefficient of a
        polynomial A^T x code (k_b = 1, no B placed); 1 everywhere else."""
        if isinstance(self.code, ProductCode) and self.rhs is None:
            return np.asarray(self.code.coefficients[1][:, 0], dtype=np.float64)
        return np.ones(self.code.n_workers)

    @property
    def tolerance(self) -> int:
        """Straggling code indices tolerated now: those on live workers minus k."""
        return self.code.n_workers - len(self.lost) - self.code.k

    def status(self) -> MatmulJobStatus:
        """The job as the API reports it."""
        weight, bound = weight_of(self.code)
        rhs = self.rhs
        return MatmulJobStatus(
            job_id=self.job_id,
            scheme=self.spec.scheme,
            n=self.spec.n,
            k=self.spec.k,
            rows=self.shape[0],
            cols=self.shape[1],
            worst_condition=self.code.condition_number(),
            block_nnz=tuple(self.block_nnz),
            block_bytes=tuple(self.block_bytes),
            encode_seconds=self.encode_seconds,
            place_seconds=self.place_seconds,
            products=self.products,
            k_b=self.spec.k_b,
            rhs_cols=0 if rhs is None else rhs.cols,
            weight=weight,
            weight_bound=bound,
            rhs_block_nnz=() if rhs is None else tuple(rhs.block_nnz),
            rhs_block_bytes=() if rhs is None else tuple(rhs.block_bytes),
            state=self.state,
            message=self.message,
            tolerance=max(self.tolerance, 0),
            node_tolerance=node_tolerance(self.workers, self.lost, self.code.k),
            workers=self.workers,
            epoch=self.epoch,
            replacements=self.replacements,
            replaced_bytes=self.replaced_bytes,
        )
