"""Sparsity-preserving coded matrix computation (papers.md, section 5).

Model. A master holds a sparse ``A`` (t x r) and wants ``A^T x`` (matrix-vector) or ``A^T B``
(matrix-matrix). :func:`split_columns` cuts ``A`` into k block-columns ``A_0 .. A_{k-1}`` of
equal width ``w = ceil(r / k)``; when k does not divide r the last block is padded with zero
columns (a linear combination needs equal shapes, and zero columns cost nothing in a sparse
format); :func:`join_columns` drops the padding again. Worker i of n stores one coded block
``C_i = sum_j G[i, j] A_j`` and returns ``C_i^T x = sum_j G[i, j] (A_j^T x)``. For any set S of k
workers, ``G[S]`` (k x k) is invertible, so the master recovers every ``A_j^T x`` by one solve.
The resilience is s = n - k, the most any code with k-block storage can have.

Weight bound (matrix-vector). The weight of a code is the number of blocks combined per worker.
Every block must reach the master through at least s + 1 workers (else the s workers holding
it may all straggle), so ``n * weight >= k (s + 1)``, i.e.
``weight >= ceil(k (n - k + 1) / n)`` (:func:`weight_lower_bound`). A dense MDS code has weight
k, so its coded blocks carry about k / weight times the non-zeros of the sparse code's, and a
worker's product ``C_i^T x`` costs that much more.

Scheme meeting it (:func:`sparse_mv_code`). Worker i combines the cyclic window
``(floor(i k / n) + u) mod k, u < weight``. Hall-type decodability: with generic (random real)
coefficients, ``G[S]`` is invertible exactly when the bipartite graph "worker -> blocks in its
window" restricted to S has a perfect matching, and every k-subset has one iff
``|N(T)| >= |T| + s`` for every non-empty set T of blocks (N(T): the workers touching T).
For the cyclic windows this always holds. Position p starts the windows of the workers i with
``p n / k <= i < (p + 1) n / k``, so any m consecutive positions start at least
``floor(m n / k)`` windows. For an arc T of L blocks, the workers touching T are those whose
window starts in an arc of ``m = L + weight - 1`` positions (all n workers if m >= k), and
``m n / k >= (L - 1) n / k + weight n / k >= (L - 1) + (n - k + 1) = L + s``. A general T is
a union of arcs: arcs whose start arcs overlap together touch exactly the workers of their hull
arc H, and ``|N(H)| >= |H| + s``, with H holding all their blocks; groups with disjoint start
arcs touch disjoint sets of workers, at least (blocks + s) each. So ``|N(T)| >= |T| + s``.
:func:`hall_resilient` checks the condition exactly (k bipartite matchings, no subset
enumeration) and the constructor would raise the weight if it failed; it never has (the unit
tests sweep every (n, k) with n <= 40, the property tests sample n <= 150).

Matrix-matrix (:func:`sparse_mm_code`). B (t x r_B) is split into k_b blocks too; worker i
stores ``Ã_i = sum_j a_{ij} A_j`` over a cyclic window of omega_a A-blocks and
``B̃_i = sum_l b_{il} B_l`` over omega_b B-blocks, and returns
``Ã_i^T B̃_i = sum_{j,l} a_{ij} b_{il} A_j^T B_l``: a combination of the K = k_a k_b unknown
blocks with the rank-one coefficient row ``kron(a_i, b_i)``. Resilience is s = n - K and the
counting argument gives ``omega_a omega_b >= ceil(K (s + 1) / n)``. Because the rows are
rank-one, Hall's condition on the cells is necessary but not sufficient; every scheme returned
is therefore verified numerically on its actual coefficients over every K-subset (or a sample,
see ``condition_scope``). :func:`polynomial_code` (Yu et al. 2017) is the dense baseline.

Example
-------
>>> import numpy as np
>>> import scipy.sparse as sp
>>> A = sp.random(40, 30, density=0.1, format="csr", rng=np.random.default_rng(1))
>>> code = sparse_mv_code(6, 4)
>>> code.weight, weight_lower_bound(6, 4)
(2, 2)
>>> coded = code.encode(split_columns(A, 4))
>>> x = np.arange(40.0)
>>> y = matvec(code, coded, x, alive=[0, 2, 3, 5], n_cols=30)
>>> bool(np.allclose(y, A.T @ x))
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from scipy.sparse.csgraph import maximum_bipartite_matching

from edgecode.codes._linalg import (
    ENUMERATION_LIMIT,
    FloatArray,
    is_enumerable,
    normalize_alive,
    subsets,
)
from edgecode.codes._mds import descend_worst_case
from edgecode.errors import Infeasible, InvalidInput, NotDecodable

__all__ = [
    "DEFAULT_DRAWS",
    "DEFAULT_MAX_CONDITION",
    "MATVEC_DRAWS",
    "MatVecCode",
    "ProductCode",
    "chebyshev_points",
    "cyclic_support",
    "dense_mds_code",
    "hall_resilient",
    "join_columns",
    "matmul",
    "matvec",
    "polynomial_code",
    "product_counting_bound",
    "sparse_mm_code",
    "sparse_mv_code",
    "split_columns",
    "weight_lower_bound",
    "worker_matvec",
    "worker_product",
]

IntArray = NDArray[np.intp]
ConditionScope = Literal["exhaustive", "sampled"]

#: Coefficient draws compared when constructing a matrix-matrix code.
DEFAULT_DRAWS = 8
#: Draws of the matrix-vector codes when every k-subset is enumerated: each draw is then also
#: improved by a descent on its worst subsets, which matters far more than the number of draws
#: (n = 16, k = 8: best of 8 plain draws 7.3e4, one descended draw 7.6e3). On a sample of
#: subsets there is no descent and DEFAULT_DRAWS plain draws are compared.
MATVEC_DRAWS = 1
#: A matrix-matrix scheme is accepted only if its worst decoding matrix is better conditioned
#: than this. Far below 1 / (K eps) ~ 1e14, so the check certifies invertibility with a wide
#: margin over SVD rounding, and decoding loses at most ~8 of float64's ~16 digits.
DEFAULT_MAX_CONDITION = 1e8
#: Placement attempts per weight pair in :func:`sparse_mm_code` (the first is deterministic).
DEFAULT_PLACEMENT_ATTEMPTS = 16
#: Decoding matrices per batched SVD call in the worst-case scans.
_SVD_CHUNK = 4096


# --------------------------------------------------------------------------- validation helpers


def _check_int(value: object, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    number = int(value)
    if number < low or (high is not None and number > high):
        expected = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {expected}, got {number}")
    return number


def _check_code_size(n: object, k: object, k_name: str = "k") -> tuple[int, int]:
    n_workers = _check_int(n, "n", 1)
    blocks = _check_int(k, k_name, 1)
    if blocks > n_workers:
        raise Infeasible(
            f"{k_name} must be at most n (any {k_name} of n workers decode), "
            f"got {k_name}={blocks} > n={n_workers}"
        )
    return n_workers, blocks


def _as_csr(matrix: object, name: str) -> Any:
    """``matrix`` (scipy.sparse or 2-D array-like) as a float64 ``csr_matrix``; finite only."""
    if sp.issparse(matrix):
        if matrix.ndim != 2:  # type: ignore[attr-defined]
            raise InvalidInput(f"{name} must be 2-D, got ndim={matrix.ndim}")  # type: ignore[attr-defined]
        csr = sp.csr_matrix(matrix, dtype=np.float64)
    else:
        array = np.asarray(matrix, dtype=np.float64)
        if array.ndim != 2:
            raise InvalidInput(f"{name} must be a 2-D matrix, got shape {array.shape}")
        csr = sp.csr_matrix(array)
    if not np.all(np.isfinite(csr.data)):
        raise InvalidInput(f"{name} holds non-finite values")
    return csr


def _rngs(seed: object) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent streams from ``seed``: coefficient draws, subset sampling, placements."""
    value = _check_int(seed, "seed", 0)
    coefficients, subsets_, placements = np.random.SeedSequence(value).spawn(3)
    return (
        np.random.default_rng(coefficients),
        np.random.default_rng(subsets_),
        np.random.default_rng(placements),
    )


# ------------------------------------------------------------------------------------- bounds


def weight_lower_bound(n: int, k: int) -> int:
    """Least weight of any k-of-n matrix-vector code: ``ceil(k (n - k + 1) / n)``.

    Each of the k blocks must be held by at least s + 1 = n - k + 1 workers, and the n workers
    hold ``n * weight`` block slots in all.

    >>> weight_lower_bound(20, 16), weight_lower_bound(12, 6), weight_lower_bound(5, 5)
    (4, 4, 1)
    """
    n, k = _check_code_size(n, k)
    return -(-k * (n - k + 1) // n)


def product_counting_bound(n: int, k_a: int, k_b: int) -> int:
    """Counting bound on ``omega_a * omega_b`` for A^T B: ``ceil(K (n - K + 1) / n)``, K = k_a k_b.

    Each of the K product blocks ``A_j^T B_l`` must be covered by s + 1 = n - K + 1 workers,
    and worker i covers ``omega_a * omega_b`` of them.

    >>> product_counting_bound(8, 2, 2)
    3
    """
    _check_int(k_a, "k_a", 1)
    _check_int(k_b, "k_b", 1)
    n, total = _check_code_size(n, int(k_a) * int(k_b), "k_a * k_b")
    return -(-total * (n - total + 1) // n)


# ------------------------------------------------------------------------------------ supports


def cyclic_support(n: int, k: int, weight: int) -> tuple[tuple[int, ...], ...]:
    """Worker i's blocks: ``(floor(i k / n) + u) mod k`` for ``u < weight`` (sorted).

    >>> cyclic_support(5, 4, 2)
    ((0, 1), (0, 1), (1, 2), (2, 3), (0, 3))
    """
    n, k = _check_code_size(n, k)
    weight = _check_int(weight, "weight", 1, k)
    return tuple(tuple(sorted(((i * k) // n + u) % k for u in range(weight))) for i in range(n))


def hall_resilient(support: Sequence[Iterable[int]], n_items: int) -> bool:
    """Whether EVERY ``n_items``-subset of holders has a matching that covers all items.

    ``support[i]`` lists the items holder i combines. With generic coefficients this is exactly
    "every n_items-subset of workers decodes". With s = len(support) - n_items the condition is
    ``|N(T)| >= |T| + s`` for every non-empty item set T, and that holds iff, for each item j,
    the graph in which j is copied s + 1 times has a perfect matching (put all copies of any
    j in T into a Hall set); so the check is n_items matchings, with no subset enumeration.

    >>> hall_resilient(cyclic_support(5, 4, 2), 4)
    True
    >>> hall_resilient([(0,), (0,), (1,)], 2)  # dropping worker 2 loses item 1
    False
    """
    m = _check_int(n_items, "n_items", 1)
    holders = [sorted({int(item) for item in items}) for items in support]
    n = len(holders)
    if n < m:
        raise ValueError(f"support must list at least n_items={m} holders, got {n}")
    for items in holders:
        if items and (items[0] < 0 or items[-1] >= m):
            raise ValueError(f"support items must lie in [0, {m}), got {items}")
    s = n - m
    rows = np.array([item for items in holders for item in items], dtype=np.intp)
    cols = np.array([h for h, items in enumerate(holders) for _ in items], dtype=np.intp)
    for doubled in range(m) if s > 0 else range(1):
        # Rows m .. m + s - 1 are the extra copies of item ``doubled``.
        extra = np.flatnonzero(rows == doubled)
        copy_rows = np.concatenate([rows] + [np.full(extra.size, m + c) for c in range(s)])
        copy_cols = np.concatenate([cols] + [cols[extra]] * s)
        graph = sp.csr_matrix((np.ones(copy_rows.size), (copy_rows, copy_cols)), shape=(n, n))
        if np.any(maximum_bipartite_matching(graph, perm_type="column") < 0):
            return False
    return True


# ------------------------------------------------------------------------- splitting and joining


def split_columns(matrix: object, k: int) -> list[Any]:
    """Cut ``matrix`` (t x r) into k block-columns of width ``ceil(r / k)`` (csr_matrix each).

    The last blocks are padded with zero columns when k does not divide r, so all blocks have
    the same shape and can be combined; :func:`join_columns` with ``n_cols=r`` drops the padding.

    >>> import numpy as np
    >>> [b.shape for b in split_columns(np.ones((2, 5)), 2)]
    [(2, 3), (2, 3)]
    """
    csr = _as_csr(matrix, "matrix")
    k = _check_int(k, "k", 1)
    t, r = csr.shape
    if r == 0 or t == 0:
        raise InvalidInput(f"matrix must have at least one row and column, got shape {(t, r)}")
    width = -(-r // k)
    csc = csr.tocsc()
    if width * k > r:
        csc = sp.hstack([csc, sp.csc_matrix((t, width * k - r))], format="csc")
    return [sp.csr_matrix(csc[:, j * width : (j + 1) * width]) for j in range(k)]


def join_columns(block_results: Sequence[ArrayLike], n_cols: int | None = None) -> FloatArray:
    """Stack ``A_j^T x`` (or ``A_j^T X``) in block order; keep the first ``n_cols`` rows.

    >>> join_columns([np.array([1.0, 2.0]), np.array([3.0, 0.0])], n_cols=3).tolist()
    [1.0, 2.0, 3.0]
    """
    if len(block_results) == 0:
        raise ValueError("block_results must hold at least one block, got 0")
    stacked = np.concatenate([np.asarray(b, dtype=np.float64) for b in block_results], axis=0)
    if n_cols is None:
        return stacked
    n_cols = _check_int(n_cols, "n_cols", 1, stacked.shape[0])
    return np.asarray(stacked[:n_cols], dtype=np.float64)


# --------------------------------------------------------------------------- worst-case scans


def _subset_index(n: int, size: int, rng: np.random.Generator) -> tuple[IntArray, ConditionScope]:
    scope: ConditionScope = "exhaustive" if is_enumerable(n, size, ENUMERATION_LIMIT) else "sampled"
    index = np.array(
        list(subsets(n, size, rng=rng, limit=ENUMERATION_LIMIT)), dtype=np.intp
    ).reshape(-1, size)
    return index, scope


def _worst_condition(generator: FloatArray, index: IntArray) -> float:
    """Largest ``cond_2(generator[S])`` over the rows of ``index``; inf if any is singular.

    Same quantity as :func:`edgecode.codes._linalg.condition` on each subset, with two
    differences: the SVDs are batched (no Python loop over up to 20 000 subsets), and a
    vanishing singular value makes the result inf instead of being skipped, because a square
    decoding matrix must have full rank.
    """
    size = index.shape[1]
    cut = size * np.finfo(np.float64).eps * 16
    worst = 1.0
    for start in range(0, index.shape[0], _SVD_CHUNK):
        values = np.linalg.svd(generator[index[start : start + _SVD_CHUNK]], compute_uv=False)
        top, bottom = values[:, 0], values[:, -1]
        if np.any(top == 0.0) or np.any(bottom <= top * cut):
            return math.inf
        worst = max(worst, float(np.max(top / bottom)))
    return worst


def _unit_rows(values: FloatArray) -> FloatArray:
    """Rows scaled to unit 2-norm: a worker's scale is arbitrary and only hurts conditioning."""
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return np.asarray(values / np.where(norms == 0.0, 1.0, norms), dtype=np.float64)


def _mask(support: Sequence[Sequence[int]], width: int) -> FloatArray:
    mask = np.zeros((len(support), width))
    for i, items in enumerate(support):
        mask[i, list(items)] = 1.0
    return mask


# ---------------------------------------------------------------------------------- the codes


@dataclass(frozen=True, eq=False)
class _LinearScheme:
    """What decoding needs: worker i's result is ``generator[i] @ [X_0 .. X_{k-1}]``."""

    name: str
    n_workers: int
    k: int
    generator: FloatArray
    worst_condition: float
    condition_scope: ConditionScope
    condition_subsets: int

    @property
    def resilience(self) -> int:
        """s = n - k: results from any k workers suffice, so s may straggle."""
        return self.n_workers - self.k

    def condition_number(self) -> float:
        """Worst ``cond_2`` of a k x k decoding matrix, over every k-subset of workers when
        ``condition_scope == "exhaustive"``, else over ``condition_subsets`` sampled ones."""
        return self.worst_condition

    def select_workers(self, available: Iterable[int]) -> tuple[int, ...]:
        """The k workers whose results :meth:`decode` uses, out of ``available``.

        With exactly k available, those. With more, the first k pivots of a QR factorisation
        with column pivoting of ``generator[available]^T`` (Businger-Golub): a cheap greedy
        pick of a well-conditioned k-subset, deterministic for a given set.
        """
        workers = normalize_alive(available, self.n_workers, "available")
        if len(workers) < self.k:
            raise NotDecodable(
                f"{self.name}: need results from k={self.k} workers, got {len(workers)}"
            )
        if len(workers) == self.k:
            return workers
        _, pivots = scipy.linalg.qr(self.generator[list(workers)].T, pivoting=True, mode="r")
        return tuple(sorted(workers[int(p)] for p in pivots[: self.k]))

    def decode(self, results: Mapping[int, ArrayLike]) -> list[FloatArray]:
        """Every block result ``X_j`` (in block order) from any >= k worker results.

        ``results[i]`` is worker i's output (1-D or 2-D, the same shape for all; every one
        given must be finite, used or not). Exactly k results are used, those picked by
        :meth:`select_workers`: ``X = G[S]^{-1} R_S`` (LU with partial pivoting, then one
        step of iterative refinement). Raises :class:`NotDecodable` with fewer
        than k and :class:`InvalidInput` on a misshapen or non-finite result.
        """
        if not isinstance(results, Mapping):
            raise ValueError(f"results must map worker index -> array, got {type(results)!r}")
        workers = normalize_alive(results.keys(), self.n_workers, "results")
        arrays: dict[int, FloatArray] = {}
        for worker in workers:
            value = results[worker]
            dense = value.toarray() if sp.issparse(value) else value  # type: ignore[union-attr]
            arrays[worker] = np.asarray(dense, dtype=np.float64)
        shape = arrays[workers[0]].shape if workers else ()
        for worker, array in arrays.items():
            if array.ndim not in (1, 2) or array.shape != shape:
                raise InvalidInput(
                    f"results[{worker}] must be a 1-D or 2-D array shaped like results"
                    f"[{workers[0]}] {shape}, got shape {array.shape}"
                )
            if not np.all(np.isfinite(array)):
                raise InvalidInput(f"results[{worker}] holds non-finite values")
        chosen = self.select_workers(workers)
        matrix = self.generator[list(chosen)]
        values = np.linalg.svd(matrix, compute_uv=False)
        if values[0] == 0.0 or values[-1] <= values[0] * self.k * np.finfo(np.float64).eps * 16:
            raise NotDecodable(f"{self.name}: workers {chosen} give a singular decoding matrix")
        stacked = np.stack([arrays[worker] for worker in chosen]).reshape(self.k, -1)
        solved = np.linalg.solve(matrix, stacked)
        # One step of iterative refinement: a safety margin against a LAPACK that solves less
        # accurately than backward-stably, for about one more GEMM (refactoring the k x k matrix
        # costs less than scipy's LU-reuse wrappers at these sizes).
        solved += np.linalg.solve(matrix, stacked - matrix @ solved)
        return [np.asarray(solved[j].reshape(shape), dtype=np.float64) for j in range(self.k)]


def _encode(
    blocks: Sequence[object],
    coefficients: FloatArray,
    support: Sequence[Sequence[int]],
    name: str,
    workers: Iterable[int] | None = None,
) -> list[Any]:
    """``C_i = sum_{j in support[i]} coefficients[i, j] blocks[j]`` as csr_matrix, for every
    worker i (or those in ``workers``, in that order: a lost block is re-encoded alone)."""
    expected = coefficients.shape[1]
    if workers is None:
        chosen = list(range(len(support)))
    else:
        chosen = [_check_int(i, "workers[]", 0, len(support) - 1) for i in workers]
    if isinstance(blocks, str | bytes) or not isinstance(blocks, Sequence):
        raise InvalidInput(f"{name} must be a sequence of {expected} matrices, got {type(blocks)}")
    if len(blocks) != expected:
        raise InvalidInput(f"{name} must hold {expected} blocks, got {len(blocks)}")
    matrices = [_as_csr(block, f"{name}[{j}]") for j, block in enumerate(blocks)]
    shape = matrices[0].shape
    for j, matrix in enumerate(matrices):
        if matrix.shape != shape:
            raise InvalidInput(
                f"{name}[{j}] must have the shape of {name}[0] {shape}, got {matrix.shape}"
            )
    coded = []
    for i in chosen:
        total = sp.csr_matrix(shape, dtype=np.float64)
        for j in support[i]:
            total = total + matrices[j] * float(coefficients[i, j])
        total.sum_duplicates()
        total.eliminate_zeros()
        coded.append(sp.csr_matrix(total))
    return coded


@dataclass(frozen=True, eq=False)
class MatVecCode(_LinearScheme):
    """A k-of-n code for ``A^T x``: worker i stores ``sum_j coefficients[i, j] A_j``.

    Attributes beyond the shared ones: ``weight`` (blocks per worker, the largest support),
    ``lower_bound`` (:func:`weight_lower_bound`), ``support`` (worker i's block indices),
    ``support_resilient`` (Hall's condition, checked exactly by :func:`hall_resilient`).
    """

    weight: int
    lower_bound: int
    support: tuple[tuple[int, ...], ...]
    support_resilient: bool

    @property
    def coefficients(self) -> FloatArray:
        """The n x k encoding matrix (zero outside ``support``)."""
        return self.generator

    def encode(self, blocks: Sequence[object], workers: Iterable[int] | None = None) -> list[Any]:
        """Coded blocks ``C_i`` (csr_matrix, one per worker, or per index in ``workers``)
        from the k blocks ``A_j``."""
        return _encode(blocks, self.generator, self.support, "blocks", workers)


@dataclass(frozen=True, eq=False)
class ProductCode(_LinearScheme):
    """A K-of-n code for ``A^T B`` with K = k_a k_b: worker i computes ``Ã_i^T B̃_i``.

    ``coefficients = (coef_a, coef_b)`` with ``Ã_i = sum_j coef_a[i, j] A_j`` and
    ``B̃_i = sum_l coef_b[i, l] B_l``; the unknowns ``X_{j k_b + l} = A_j^T B_l`` meet worker i
    through ``generator[i] = kron(coef_a[i], coef_b[i])``. ``weight = (omega_a, omega_b)``;
    ``verification`` tells whether every K-subset was checked or a sample; ``search_log``
    records the weight pairs tried by :func:`sparse_mm_code` and why each was rejected.
    """

    k_a: int
    k_b: int
    weight: tuple[int, int]
    coefficients: tuple[FloatArray, FloatArray]
    support_a: tuple[tuple[int, ...], ...]
    support_b: tuple[tuple[int, ...], ...]
    counting_bound: int
    search_log: tuple[str, ...]

    @property
    def weight_product(self) -> int:
        """``omega_a * omega_b``: product blocks covered by one worker."""
        return self.weight[0] * self.weight[1]

    @property
    def verification(self) -> ConditionScope:
        """ "exhaustive" when every K-subset was verified decodable, "sampled" otherwise."""
        return self.condition_scope

    def encode(self, blocks: Sequence[object], workers: Iterable[int] | None = None) -> list[Any]:
        """Coded A blocks ``Ã_i`` (csr_matrix) from the k_a blocks ``A_j`` (every worker, or
        those in ``workers``)."""
        return _encode(blocks, self.coefficients[0], self.support_a, "blocks", workers)

    def encode_b(self, blocks: Sequence[object], workers: Iterable[int] | None = None) -> list[Any]:
        """Coded B blocks ``B̃_i`` (csr_matrix) from the k_b blocks ``B_l`` (every worker, or
        those in ``workers``)."""
        return _encode(blocks, self.coefficients[1], self.support_b, "blocks", workers)


def _freeze(array: FloatArray) -> FloatArray:
    array.setflags(write=False)
    return array


# ----------------------------------------------------------------------- matrix-vector codes


def _draw_matvec(
    name: str,
    n: int,
    k: int,
    support: tuple[tuple[int, ...], ...],
    lower_bound: int,
    resilient: bool,
    seed: object,
    draws: object,
) -> MatVecCode:
    coefficient_rng, subset_rng, _ = _rngs(seed)
    mask = _mask(support, k)
    index, scope = _subset_index(n, k, subset_rng)
    if draws is None:
        draws = MATVEC_DRAWS if scope == "exhaustive" else DEFAULT_DRAWS
    n_draws = _check_int(draws, "draws", 1)
    best: tuple[float, FloatArray] | None = None
    for _ in range(n_draws):
        generator = _unit_rows(coefficient_rng.standard_normal((n, k)) * mask)
        if scope == "exhaustive":  # on a sample the descent only fits the sample
            generator = descend_worst_case(
                generator, index, retract=lambda values: _unit_rows(values * mask)
            )
        worst = _worst_condition(generator, index)
        if best is None or worst < best[0]:
            best = (worst, generator)
    assert best is not None
    return MatVecCode(
        name=name,
        n_workers=n,
        k=k,
        generator=_freeze(best[1]),
        worst_condition=best[0],
        condition_scope=scope,
        condition_subsets=int(index.shape[0]),
        weight=max(len(items) for items in support),
        lower_bound=lower_bound,
        support=support,
        support_resilient=resilient,
    )


def sparse_mv_code(n: int, k: int, seed: int = 0, draws: int | None = None) -> MatVecCode:
    """The weight-optimal sparse k-of-n code for ``A^T x`` (cyclic windows, random weights).

    Worker i stores ``sum_{u < omega} r_{i,u} A_{(floor(i k / n) + u) mod k}`` with
    ``omega = weight_lower_bound(n, k)``. The support is checked with :func:`hall_resilient`
    (the module docstring proves it always passes; were it to fail the weight would be raised
    until it passes, and ``weight > lower_bound`` would show it). The coefficients are the best
    of ``draws`` seeded Gaussian draws (rows scaled to unit norm) on the worst-case condition
    number over every k-subset (a seeded sample of 2000 when there are more than
    ``ENUMERATION_LIMIT``; see ``condition_scope``). ``draws=None`` means ``MATVEC_DRAWS`` (1)
    when every k-subset is enumerated and ``DEFAULT_DRAWS`` (8) otherwise. When every k-subset
    is enumerated, each draw is first improved by :func:`edgecode.codes._mds.descend_worst_case` on them (gradient
    steps on the worst ``||G[S]^{-1}||_F``, keeping the support and unit rows); on a sample it
    is not, since that would only fit the sample.

    >>> code = sparse_mv_code(20, 16)
    >>> code.weight, code.resilience, code.support[0], code.condition_scope
    (4, 4, (0, 1, 2, 3), 'exhaustive')
    """
    n, k = _check_code_size(n, k)
    bound = weight_lower_bound(n, k)
    omega = bound
    support = cyclic_support(n, k, omega)
    while not hall_resilient(support, k):  # pragma: no cover - proven never to happen
        omega += 1
        support = cyclic_support(n, k, omega)
    return _draw_matvec("sparse_mv_code", n, k, support, bound, True, seed, draws)


def dense_mds_code(n: int, k: int, seed: int = 0, draws: int | None = None) -> MatVecCode:
    """Baseline: a dense Gaussian n x k generator (weight k), best of ``draws`` draws.

    >>> dense_mds_code(6, 4).weight
    4
    """
    n, k = _check_code_size(n, k)
    support = tuple(tuple(range(k)) for _ in range(n))
    return _draw_matvec(
        "dense_mds_code", n, k, support, weight_lower_bound(n, k), True, seed, draws
    )


# ------------------------------------------------------------------------ matrix-matrix codes


def chebyshev_points(n: int) -> FloatArray:
    """Chebyshev nodes ``cos((2 i + 1) pi / (2 n))``, i < n: distinct, in (-1, 1).

    >>> chebyshev_points(2).round(4).tolist()
    [0.7071, -0.7071]
    """
    n = _check_int(n, "n", 1)
    return np.asarray(np.cos((2.0 * np.arange(n) + 1.0) * np.pi / (2.0 * n)), dtype=np.float64)


def _product_generator(coef_a: FloatArray, coef_b: FloatArray) -> FloatArray:
    rows = np.einsum("ij,il->ijl", coef_a, coef_b).reshape(coef_a.shape[0], -1)
    return np.asarray(rows, dtype=np.float64)


def polynomial_code(
    n: int, k_a: int, k_b: int = 1, points: ArrayLike | None = None, seed: int = 0
) -> ProductCode:
    """Polynomial code (Yu, Maddah-Ali, Avestimehr 2017) for ``A^T B``, threshold K = k_a k_b.

    Worker i gets ``Ã_i = sum_j A_j x_i^j`` and ``B̃_i = sum_l B_l x_i^{l k_a}`` and returns
    ``Ã_i^T B̃_i = sum_{j,l} (A_j^T B_l) x_i^{j + l k_a}``, a matrix polynomial of degree K - 1
    in x_i whose coefficients are the wanted blocks; any K evaluations determine it
    (Vandermonde interpolation, done by :meth:`ProductCode.decode`). Real monomial Vandermonde
    matrices are badly conditioned, so the default points are :func:`chebyshev_points`;
    ``seed`` only drives the subset sample of the condition scan when it cannot enumerate.
    With k_b = 1 this is a dense (weight k_a) code for ``A^T x``.

    >>> code = polynomial_code(6, 2, 2)
    >>> code.k, code.weight, code.resilience
    (4, (2, 2), 2)
    """
    _check_int(k_a, "k_a", 1)
    _check_int(k_b, "k_b", 1)
    n, total = _check_code_size(n, int(k_a) * int(k_b), "k_a * k_b")
    k_a, k_b = int(k_a), int(k_b)
    if points is None:
        nodes = chebyshev_points(n)
    else:
        nodes = np.asarray(points, dtype=np.float64)
        if nodes.shape != (n,):
            raise ValueError(f"points must have shape ({n},), got {nodes.shape}")
        if not np.all(np.isfinite(nodes)) or np.unique(nodes).size != n:
            raise ValueError("points must be finite and pairwise distinct")
    coef_a = nodes[:, None] ** np.arange(k_a)[None, :]
    coef_b = nodes[:, None] ** (k_a * np.arange(k_b))[None, :]
    generator = _product_generator(coef_a, coef_b)
    _, subset_rng, _ = _rngs(seed)
    index, scope = _subset_index(n, total, subset_rng)
    everything_a = tuple(tuple(range(k_a)) for _ in range(n))
    everything_b = tuple(tuple(range(k_b)) for _ in range(n))
    return ProductCode(
        name="polynomial_code",
        n_workers=n,
        k=total,
        generator=_freeze(generator),
        worst_condition=_worst_condition(generator, index),
        condition_scope=scope,
        condition_subsets=int(index.shape[0]),
        k_a=k_a,
        k_b=k_b,
        weight=(k_a, k_b),
        coefficients=(_freeze(coef_a), _freeze(coef_b)),
        support_a=everything_a,
        support_b=everything_b,
        counting_bound=product_counting_bound(n, k_a, k_b),
        search_log=("polynomial code: every worker combines every block",),
    )


def _window(start: int, width: int, size: int) -> tuple[int, ...]:
    return tuple(sorted((start + u) % size for u in range(width)))


def _greedy_starts(
    n: int,
    shape: tuple[int, int],
    window: tuple[int, int],
    target: int,
    rng: np.random.Generator | None,
) -> tuple[tuple[int, int], ...]:
    """Window starts (alpha_i, beta_i) placed one worker at a time on the k_a x k_b torus.

    Each worker takes the omega_a x omega_b rectangle that removes the most coverage deficit
    (cells below ``target`` = s + 1 holders), then the one on the least covered cells; ties
    go to the first candidate in row-major order, or in a random order when ``rng`` is given.
    """
    k_a, k_b = shape
    omega_a, omega_b = window
    coverage = np.zeros(shape, dtype=np.int64)
    candidates = [(a, b) for a in range(k_a) for b in range(k_b)]
    starts: list[tuple[int, int]] = []
    for _ in range(n):
        order = rng.permutation(len(candidates)) if rng is not None else range(len(candidates))
        best: tuple[tuple[int, int], tuple[int, int]] | None = None
        for position in order:
            a, b = candidates[int(position)]
            cells = coverage[np.ix_(_window(a, omega_a, k_a), _window(b, omega_b, k_b))]
            key = (-int(np.clip(target - cells, 0, None).sum()), int(cells.sum()))
            if best is None or key < best[0]:
                best = (key, (a, b))
        assert best is not None
        a, b = best[1]
        coverage[np.ix_(_window(a, omega_a, k_a), _window(b, omega_b, k_b))] += 1
        starts.append((a, b))
    return tuple(starts)


def sparse_mm_code(
    n: int,
    k_a: int,
    k_b: int,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    max_condition: float = DEFAULT_MAX_CONDITION,
    attempts: int = DEFAULT_PLACEMENT_ATTEMPTS,
) -> ProductCode:
    """Lowest-weight sparse code for ``A^T B`` that verifies for every K-subset (K = k_a k_b).

    Weight pairs (omega_a, omega_b) are tried in increasing ``omega_a * omega_b`` (ties: the
    more balanced pair first) from the counting bound :func:`product_counting_bound` up to the
    dense (k_a, k_b). For each pair, up to ``attempts`` placements of cyclic windows (worker i:
    A-blocks ``alpha_i + u mod k_a``, u < omega_a, and B-blocks ``beta_i + v mod k_b``) are made
    greedily so that every product cell has >= s + 1 holders; a placement must pass
    :func:`hall_resilient` on the cells, then coefficients are drawn (best of ``draws``, rows
    unit-norm) and the rank-one decoding matrices ``kron(a_i, b_i)`` are checked over every
    K-subset (or a seeded sample of 2000 when there are more than ``ENUMERATION_LIMIT``;
    ``verification`` says which). The first pair whose worst condition number is at most
    ``max_condition`` wins. Raises :class:`Infeasible` if none does.

    >>> code = sparse_mm_code(8, 2, 2)
    >>> code.weight, code.weight_product, code.counting_bound, code.verification
    ((2, 2), 4, 3, 'exhaustive')
    """
    _check_int(k_a, "k_a", 1)
    _check_int(k_b, "k_b", 1)
    n, total = _check_code_size(n, int(k_a) * int(k_b), "k_a * k_b")
    k_a, k_b = int(k_a), int(k_b)
    n_draws = _check_int(draws, "draws", 1)
    n_attempts = _check_int(attempts, "attempts", 1)
    if not (isinstance(max_condition, int | float) and max_condition >= 1.0):
        raise ValueError(f"max_condition must be a number >= 1, got {max_condition!r}")
    bound = product_counting_bound(n, k_a, k_b)
    target = n - total + 1
    pairs = sorted(
        ((oa, ob) for oa in range(1, k_a + 1) for ob in range(1, k_b + 1) if oa * ob >= bound),
        key=lambda pair: (pair[0] * pair[1], abs(pair[0] - pair[1]), pair[0]),
    )
    coefficient_rng, subset_rng, placement_rng = _rngs(seed)
    index, scope = _subset_index(n, total, subset_rng)
    log: list[str] = []
    for omega_a, omega_b in pairs:
        tried: set[tuple[tuple[int, int], ...]] = set()
        outcome = "no placement met Hall's condition"
        for attempt in range(n_attempts):
            starts = _greedy_starts(
                n, (k_a, k_b), (omega_a, omega_b), target, None if attempt == 0 else placement_rng
            )
            if starts in tried:
                continue
            tried.add(starts)
            support_a = tuple(_window(a, omega_a, k_a) for a, _ in starts)
            support_b = tuple(_window(b, omega_b, k_b) for _, b in starts)
            cells = [
                [j * k_b + l for j in sa for l in sb]
                for sa, sb in zip(support_a, support_b, strict=True)
            ]
            if not hall_resilient(cells, total):
                continue
            mask_a, mask_b = _mask(support_a, k_a), _mask(support_b, k_b)
            best: tuple[float, FloatArray, FloatArray] | None = None
            for _ in range(n_draws):
                coef_a = _unit_rows(coefficient_rng.standard_normal((n, k_a)) * mask_a)
                coef_b = _unit_rows(coefficient_rng.standard_normal((n, k_b)) * mask_b)
                worst = _worst_condition(_product_generator(coef_a, coef_b), index)
                if best is None or worst < best[0]:
                    best = (worst, coef_a, coef_b)
            assert best is not None
            if best[0] > max_condition:
                outcome = f"Hall holds but worst condition {best[0]:.3g} > {max_condition:.3g}"
                continue
            log.append(
                f"{(omega_a, omega_b)}: accepted, worst condition {best[0]:.4g} "
                f"({scope} over {index.shape[0]} subsets)"
            )
            return ProductCode(
                name="sparse_mm_code",
                n_workers=n,
                k=total,
                generator=_freeze(_product_generator(best[1], best[2])),
                worst_condition=best[0],
                condition_scope=scope,
                condition_subsets=int(index.shape[0]),
                k_a=k_a,
                k_b=k_b,
                weight=(omega_a, omega_b),
                coefficients=(_freeze(best[1]), _freeze(best[2])),
                support_a=support_a,
                support_b=support_b,
                counting_bound=bound,
                search_log=tuple(log),
            )
        log.append(f"{(omega_a, omega_b)}: rejected, {outcome} ({len(tried)} placements)")
    raise Infeasible(f"no weight pair verified for n={n}, k_a={k_a}, k_b={k_b}: {log}")


# ------------------------------------------------------------------------ end-to-end helpers


def worker_matvec(coded_block: Any, x: ArrayLike) -> FloatArray:
    """What worker i computes: ``C_i^T x`` (x: length t, or t x p)."""
    return np.asarray(coded_block.T @ np.asarray(x, dtype=np.float64), dtype=np.float64)


def worker_product(coded_a: Any, coded_b: Any) -> FloatArray:
    """What worker i computes for ``A^T B``: ``Ã_i^T B̃_i`` as a dense array."""
    product = coded_a.T @ coded_b
    dense = product.toarray() if sp.issparse(product) else product
    return np.asarray(dense, dtype=np.float64)


def _check_coded(coded: Sequence[Any], n: int, name: str) -> None:
    if len(coded) != n:
        raise InvalidInput(f"{name} must hold one block per worker ({n}), got {len(coded)}")


def matvec(
    code: MatVecCode | ProductCode,
    coded_blocks: Sequence[Any],
    x: ArrayLike,
    alive: Iterable[int],
    n_cols: int | None = None,
) -> FloatArray:
    """End to end ``A^T x`` from the workers in ``alive`` (each computes ``C_i^T x``).

    A :class:`ProductCode` with ``k_b == 1`` also works (B = x, one block).
    ``n_cols`` (r) drops the padding of :func:`split_columns`.
    """
    workers = normalize_alive(alive, code.n_workers)
    _check_coded(coded_blocks, code.n_workers, "coded_blocks")
    vector = np.asarray(x, dtype=np.float64)
    rows = coded_blocks[0].shape[0]
    if vector.ndim not in (1, 2) or vector.shape[0] != rows:
        raise InvalidInput(f"x must have {rows} rows (1-D or 2-D), got shape {vector.shape}")
    if not np.all(np.isfinite(vector)):
        raise InvalidInput("x holds non-finite values")
    scale = np.ones(code.n_workers)
    if isinstance(code, ProductCode):
        if code.k_b != 1:
            raise ValueError(f"code must have k_b == 1 for matvec, got k_b={code.k_b}")
        scale = code.coefficients[1][:, 0]
    results = {i: scale[i] * worker_matvec(coded_blocks[i], vector) for i in workers}
    return join_columns(code.decode(results), n_cols)


def matmul(
    code: ProductCode,
    coded_a: Sequence[Any],
    coded_b: Sequence[Any],
    alive: Iterable[int],
    shape: tuple[int, int] | None = None,
) -> FloatArray:
    """End to end ``A^T B`` from the workers in ``alive``; ``shape`` (r_A, r_B) drops padding."""
    workers = normalize_alive(alive, code.n_workers)
    _check_coded(coded_a, code.n_workers, "coded_a")
    _check_coded(coded_b, code.n_workers, "coded_b")
    blocks = code.decode({i: worker_product(coded_a[i], coded_b[i]) for i in workers})
    grid = np.block([[blocks[j * code.k_b + l] for l in range(code.k_b)] for j in range(code.k_a)])
    if shape is None:
        return np.asarray(grid, dtype=np.float64)
    rows = _check_int(shape[0], "shape[0]", 1, grid.shape[0])
    cols = _check_int(shape[1], "shape[1]", 1, grid.shape[1])
    return np.asarray(grid[:rows, :cols], dtype=np.float64)
