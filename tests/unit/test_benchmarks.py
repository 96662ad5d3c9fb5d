"""The benchmarks' own arithmetic, checked without timing anything real: what each reported
number is made of (a fake clock or a cost model stands in for the machine), so a benchmark
that reports the wrong ratio fails here. Speed targets themselves are the benchmarks' job."""

from __future__ import annotations

import numpy as np
import pytest

import edgecode.bench.matrix_codes as matrix_bench
from edgecode.codes.matrix import weight_lower_bound

TOLERANCE = 1e-9


def test_median_worker_seconds_is_the_median_over_workers_of_per_worker_medians(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three workers; each product advances a fake clock by that worker's next duration."""
    durations = {
        0: iter([0.5, 0.25, 0.75]),  # median 0.5
        1: iter([0.125, 0.125, 0.875]),  # median 0.125
        2: iter([1.0, 2.0, 3.0]),  # median 2.0
    }
    clock = [0.0]

    class Block:
        def __init__(self, index: int) -> None:
            self.index = index
            self.warm = False

        def __matmul__(self, x: np.ndarray) -> np.ndarray:
            if not self.warm:  # the warm-up product is not timed
                self.warm = True
                return x
            clock[0] += next(durations[self.index])
            return x

    monkeypatch.setattr(
        matrix_bench, "time", type("FakeTime", (), {"perf_counter": lambda: clock[0]})
    )
    seconds = matrix_bench._median_worker_seconds([Block(i) for i in range(3)], np.ones(2), 3)
    assert seconds == 0.5


def test_sparse_vs_dense_report_is_made_of_its_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a worker's time modelled as its block's non-zeros, the reported speed-up must be
    exactly dense nnz / sparse nnz, and the nnz and weight ratios the measured ones."""
    seen: dict[str, list[int]] = {}

    def cost_model(stored: list, x: np.ndarray, repeats: int) -> float:
        nnz = [int(block.nnz) for block in stored]
        seen["sparse" if "sparse" not in seen else "dense"] = nnz
        return float(np.mean(nnz)) * 1e-9

    monkeypatch.setattr(matrix_bench, "_median_worker_seconds", cost_model)
    n, k = 6, 4
    report = matrix_bench.bench_sparse_vs_dense(size=600, density=0.02, n=n, k=k, repeats=1)
    assert report["sparse_weight"] == weight_lower_bound(n, k) == 2
    assert report["dense_weight"] == k
    sparse_nnz, dense_nnz = np.mean(seen["sparse"]), np.mean(seen["dense"])
    assert report["sparse_mean_nnz"] == sparse_nnz and report["dense_mean_nnz"] == dense_nnz
    assert report["nnz_ratio"] == pytest.approx(sparse_nnz / dense_nnz, rel=1e-12)
    assert report["speedup"] == pytest.approx(dense_nnz / sparse_nnz, rel=1e-12)
    assert report["weight_ratio"] == 2 / 4
    # A sparse block holds about omega/k of a dense one (a little more: fewer collisions).
    assert report["weight_ratio"] <= report["nnz_ratio"] <= 1.1 * report["weight_ratio"]
    errors = np.array([report["sparse_decode_rel_error"], report["dense_decode_rel_error"]])
    assert np.all(np.isfinite(errors)) and np.all(errors <= TOLERANCE), errors
    conditions = np.array([report["sparse_condition"], report["dense_condition"]])
    assert np.all(np.isfinite(conditions)) and np.all(conditions >= 1)


def test_sparse_vs_dense_decode_error_is_the_real_one() -> None:
    """The decode error is measured, not assumed: a corrupted stored block shows up in it."""
    rng = np.random.default_rng(3)
    import scipy.sparse as sp

    from edgecode.codes.matrix import sparse_mv_code, split_columns

    matrix = sp.random(80, 60, density=0.1, format="csr", rng=rng)
    x = rng.standard_normal(80)
    exact = np.asarray(matrix.T @ x)
    code = sparse_mv_code(5, 3)
    stored = matrix_bench._worker_storage(code.encode(split_columns(matrix, 3)))
    error = matrix_bench._decode_error(code, stored, x, exact, np.random.default_rng(0))
    assert np.isfinite(error) and error <= TOLERANCE
    broken = [block * 1.5 for block in stored]
    broken_error = matrix_bench._decode_error(code, broken, x, exact, np.random.default_rng(0))
    assert np.isfinite(broken_error) and broken_error > 0.1
