"""Benchmark: sparse (weight-optimal) versus dense MDS codes for ``A^T x`` (papers.md, section 5).

Not a test: run it by hand, e.g. ::

    python -m edgecode.bench.matrix_codes            # the full-size run (about 10 s)
    python -m edgecode.bench.matrix_codes 4000       # a quick one

A worker's cost is one sparse product ``C_i^T x``, proportional to ``nnz(C_i)``. A dense code
combines all k blocks, so ``nnz(C_i)`` is about k times a block's; the sparse code combines
``omega = weight_lower_bound(n, k)``, so the expected ratio is about omega / k (a little above,
because the union of k block supports loses more to collisions than the union of omega).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from edgecode.codes.matrix import (
    MatVecCode,
    dense_mds_code,
    join_columns,
    sparse_mv_code,
    split_columns,
)


def _worker_storage(coded: list[Any]) -> list[Any]:
    # A worker only ever computes C_i^T x, so it stores C_i^T in CSR: each output entry is one
    # contiguous row gathered against x. Both codes use this same format.
    return [sp.csr_matrix(block.T) for block in coded]


def _median_worker_seconds(stored: list[Any], x: np.ndarray, repeats: int) -> float:
    """Median over workers of the median over ``repeats`` of one worker's ``C_i^T x``."""
    per_worker = []
    for block in stored:
        block @ x  # warm-up: first touch of the arrays
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            block @ x
            times.append(time.perf_counter() - start)
        per_worker.append(statistics.median(times))
    return statistics.median(per_worker)


def _decode_error(
    code: MatVecCode, stored: list[Any], x: np.ndarray, exact: np.ndarray, rng: np.random.Generator
) -> float:
    alive = sorted(rng.choice(code.n_workers, size=code.k, replace=False).tolist())
    blocks = code.decode({i: stored[i] @ x for i in alive})
    got = join_columns(blocks, exact.shape[0])
    return float(np.linalg.norm(got - exact) / np.linalg.norm(exact))


def bench_sparse_vs_dense(
    size: int = 20000,
    density: float = 0.01,
    n: int = 20,
    k: int = 16,
    repeats: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Encode one random ``size x size`` sparse matrix with both codes and time the workers.

    Returns a flat dict: for each of ``sparse`` and ``dense`` the weight, the mean nnz of a
    coded block, the median per-worker ``C_i^T x`` time in seconds, the encoding time, the
    worst-case condition number (and whether every k-subset was scanned) and the relative
    error of one decode from a random k-subset; plus ``nnz_ratio`` (sparse / dense),
    ``weight_ratio`` (omega / k) and ``speedup`` (dense worker time / sparse worker time).
    """
    rng = np.random.default_rng(seed)
    matrix = sp.random(size, size, density=density, format="csr", rng=rng)
    x = rng.standard_normal(size)
    exact = np.asarray(matrix.T @ x)
    blocks = split_columns(matrix, k)
    report: dict[str, Any] = {
        "size": size,
        "density": density,
        "nnz": int(matrix.nnz),
        "n": n,
        "k": k,
        "repeats": repeats,
    }
    times = {}
    for label, build in (("sparse", sparse_mv_code), ("dense", dense_mds_code)):
        code = build(n, k, seed=seed)
        start = time.perf_counter()
        coded = code.encode(blocks)
        report[f"{label}_encode_s"] = time.perf_counter() - start
        stored = _worker_storage(coded)
        del coded
        times[label] = _median_worker_seconds(stored, x, repeats)
        report[f"{label}_weight"] = code.weight
        report[f"{label}_mean_nnz"] = float(np.mean([block.nnz for block in stored]))
        report[f"{label}_worker_s"] = times[label]
        report[f"{label}_condition"] = code.condition_number()
        report[f"{label}_condition_scope"] = code.condition_scope
        report[f"{label}_decode_rel_error"] = _decode_error(code, stored, x, exact, rng)
        del stored
    report["nnz_ratio"] = report["sparse_mean_nnz"] / report["dense_mean_nnz"]
    report["weight_ratio"] = report["sparse_weight"] / k
    report["speedup"] = times["dense"] / times["sparse"]
    return report


if __name__ == "__main__":  # pragma: no cover - manual run
    arguments = [int(value) for value in sys.argv[1:2]]
    for key, value in bench_sparse_vs_dense(*arguments).items():
        print(f"{key:28s} {value}")
