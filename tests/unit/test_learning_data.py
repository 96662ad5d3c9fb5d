"""Data sets: partitioning, splitting, standardisation, bundled data, files, synthetic data with
known optima, and spec strings."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from edgecode.errors import InvalidInput
from edgecode.learning.datasets import (
    BUNDLED,
    Dataset,
    get_dataset,
    load_bundled,
    load_file,
    load_split,
    partition_bounds,
    standardize,
    synthetic_least_squares,
    synthetic_logistic,
    synthetic_sparse,
)
from edgecode.learning.models import get_model


def small_dataset(sparse: bool = False, n: int = 23) -> Dataset:
    rng = np.random.default_rng(0)
    X = np.column_stack([np.arange(n, dtype=float), rng.standard_normal((n, 3))])
    if sparse:
        X[rng.random(X.shape) < 0.5] = 0.0
    return Dataset(sp.csr_array(X) if sparse else X, np.arange(n) % 3, "small", 3, "multiclass")


# ------------------------------------------------------------------------ partitioning


@given(n=st.integers(1, 500), data=st.data())
def test_partition_bounds_are_contiguous_near_equal_and_cover_all_rows(
    n: int, data: st.DataObject
) -> None:
    k = data.draw(st.integers(1, n))
    bounds = partition_bounds(n, k)
    assert len(bounds) == k and bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1 and sorted(sizes, reverse=True) == sizes
    assert partition_bounds(n, k) == bounds


@pytest.mark.parametrize("sparse", [False, True])
def test_partition_reassembles_the_data(sparse: bool) -> None:
    ds = small_dataset(sparse)
    parts = ds.partition(5)
    assert [len(y) for _, y in parts] == [5, 5, 5, 4, 4]
    stacked = (
        sp.vstack([X for X, _ in parts]).toarray() if sparse else np.vstack([X for X, _ in parts])
    )
    dense = ds.X.toarray() if sparse else ds.X
    assert np.array_equal(stacked, dense)
    assert np.array_equal(np.concatenate([y for _, y in parts]), ds.y)
    assert all(sp.issparse(X) == sparse for X, _ in parts)


@pytest.mark.parametrize("k", [0, 24, 2.5])
def test_partition_rejects_bad_counts(k: float) -> None:
    with pytest.raises(ValueError, match="n_partitions"):
        small_dataset().partition(k)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ splitting, scaling


def test_train_test_split_is_a_random_disjoint_cover_and_reproducible() -> None:
    ds = small_dataset()
    train, test = ds.train_test_split(0.25, np.random.default_rng(4))
    assert (train.n_rows, test.n_rows) == (17, 6)
    ids = np.concatenate([train.X[:, 0], test.X[:, 0]])
    assert sorted(ids.tolist()) == list(range(23))
    assert not np.array_equal(train.X[:, 0], np.sort(train.X[:, 0]))  # shuffled
    assert np.array_equal(train.y, train.X[:, 0].astype(int) % 3)  # rows stay paired
    again, _ = ds.train_test_split(0.25, np.random.default_rng(4))
    assert np.array_equal(again.X, train.X)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="test_fraction"):
            ds.train_test_split(bad, np.random.default_rng(0))


def test_standardize_uses_training_statistics_only() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(5.0, 3.0, (60, 4))
    X[:, 2] = 7.0  # constant column
    ds = Dataset(X, rng.integers(0, 2, 60), "x", 2, "binary")
    train, test = ds.train_test_split(0.3, rng)
    train_s, test_s = standardize(train, test)
    np.testing.assert_allclose(train_s.X.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(train_s.X.std(axis=0), [1, 1, 0, 1], atol=1e-12)
    mu, sd = train.X.mean(axis=0), train.X.std(axis=0)
    sd[2] = 1.0
    np.testing.assert_allclose(test_s.X, (test.X - mu) / sd, rtol=1e-12)
    assert np.array_equal(test_s.y, test.y)


def test_standardize_keeps_sparse_data_sparse_and_only_scales() -> None:
    ds = small_dataset(sparse=True)
    (scaled,) = standardize(ds)
    assert sp.issparse(scaled.X) and scaled.X.nnz == ds.X.nnz
    dense = ds.X.toarray()
    np.testing.assert_allclose(scaled.X.toarray(), dense / dense.std(axis=0), rtol=1e-12)
    with pytest.raises(ValueError, match="others"):
        standardize(ds, small_dataset(sparse=False))


# ------------------------------------------------------------------------ bundled data


@pytest.mark.parametrize(
    ("name", "shape", "n_classes", "task"),
    [
        ("breast_cancer", (569, 30), 2, "binary"),
        ("digits", (1797, 64), 10, "multiclass"),
        ("iris", (150, 4), 3, "multiclass"),
        ("wine", (178, 13), 3, "multiclass"),
        ("diabetes", (442, 10), 1, "regression"),
    ],
)
def test_bundled_datasets(name: str, shape: tuple[int, int], n_classes: int, task: str) -> None:
    ds = get_dataset(name)
    assert ds.X.shape == shape and ds.n_classes == n_classes and ds.task == task
    assert ds.X.dtype == np.float64 and not ds.is_sparse
    if task != "regression":
        assert ds.y.dtype == np.int64 and set(np.unique(ds.y)) == set(range(n_classes))
    assert name in BUNDLED


def test_load_split_standardises_real_data_on_train_rows() -> None:
    train, test = load_split("breast_cancer", np.random.default_rng(0), test_fraction=0.2)
    assert (train.n_rows, test.n_rows) == (455, 114)
    np.testing.assert_allclose(train.X.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(train.X.std(axis=0), 1.0, atol=1e-12)
    assert np.abs(test.X.mean(axis=0)).max() > 1e-6  # test rows did not shape the statistics
    raw_train, _ = load_split("breast_cancer", np.random.default_rng(0), standardize_features=False)
    assert raw_train.X.mean() > 10


def test_unknown_bundled_name() -> None:
    with pytest.raises(ValueError, match="name must be one of"):
        load_bundled("mnist")


# ------------------------------------------------------------------------ synthetic data


def test_synthetic_least_squares_has_its_exact_optimum() -> None:
    ds = synthetic_least_squares(200, 8, np.random.default_rng(2))
    assert ds.optimum is not None
    model = get_model(ds.default_model)
    w, b = ds.optimum[:-1], ds.optimum[-1]
    assert np.array_equal(ds.y, ds.X @ w + b)
    assert model.loss(ds.optimum, ds.X, ds.y) == 0.0
    noisy = synthetic_least_squares(200, 8, np.random.default_rng(2), noise=0.5)
    assert noisy.optimum is not None
    assert np.linalg.norm(model.gradient(noisy.optimum, noisy.X, noisy.y)) < 1e-10


def test_synthetic_logistic_optimum_is_a_stationary_minimum() -> None:
    ds = synthetic_logistic(1000, 6, np.random.default_rng(3))
    assert ds.optimum is not None and ds.task == "binary"
    model = get_model("logistic")
    assert np.linalg.norm(model.gradient(ds.optimum, ds.X, ds.y)) / ds.n_rows < 1e-9
    best = model.loss(ds.optimum, ds.X, ds.y)
    rng = np.random.default_rng(0)
    for _ in range(5):
        nudged = ds.optimum + 1e-3 * rng.standard_normal(ds.optimum.shape)
        assert model.loss(nudged, ds.X, ds.y) > best
    assert 0.6 < model.accuracy(ds.optimum, ds.X, ds.y) < 1.0  # learnable, not separable


def test_separable_logistic_draw_is_refused() -> None:
    with pytest.raises(ValueError, match="separable"):
        synthetic_logistic(20, 8, np.random.default_rng(0), signal=50.0)


def test_synthetic_sparse_regression_and_binary() -> None:
    ds = synthetic_sparse(400, 50, 0.1, np.random.default_rng(4))
    assert ds.is_sparse and ds.X.format == "csr" and ds.X.nnz == 2000
    assert ds.optimum is not None
    assert get_model("least_squares").loss(ds.optimum, ds.X, ds.y) < 1e-20
    binary = synthetic_sparse(2000, 20, 0.2, np.random.default_rng(5), task="binary")
    assert binary.optimum is not None and binary.is_sparse
    gradient = get_model("logistic").gradient(binary.optimum, binary.X, binary.y)
    assert np.linalg.norm(gradient) / binary.n_rows < 1e-9
    with pytest.raises(ValueError, match="density"):
        synthetic_sparse(400, 50, 0.0, np.random.default_rng(4))
    with pytest.raises(ValueError, match="n must be"):
        synthetic_least_squares(5, 8, np.random.default_rng(0))


# ------------------------------------------------------------------------ files


def test_libsvm_file(tmp_path: Path) -> None:
    path = tmp_path / "a.svm"
    path.write_text("# comment\n+1 1:0.5 3:2 # trailing\n-1 qid:3 2:1.5\n\n-1 1:-1 3:0\n")
    ds = load_file(path)
    assert ds.is_sparse and ds.X.shape == (3, 3) and ds.task == "binary"
    assert np.array_equal(ds.X.toarray(), [[0.5, 0, 2], [0, 1.5, 0], [-1, 0, 0]])
    assert ds.y.tolist() == [1, 0, 0]  # -1 -> 0, +1 -> 1
    assert load_file(path, n_features=5).X.shape == (3, 5)
    zero_based = tmp_path / "b.libsvm"
    zero_based.write_text("1 0:1 2:1\n2 1:3\n3 0:2\n")
    ds0 = load_file(zero_based)
    assert np.array_equal(ds0.X.toarray(), [[1, 0, 1], [0, 3, 0], [2, 0, 0]])
    assert ds0.task == "multiclass" and ds0.y.tolist() == [0, 1, 2]
    assert load_file(zero_based, task="regression").y.tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1 1:x\n", r"a.svm:1: expected"),
        ("1 1:1\n0 2:1 2:3\n", "repeats"),
        ("# nothing\n", "no data rows"),
    ],
)
def test_bad_libsvm_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "a.svm"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=match):
        load_file(path)


def test_csv_file_with_and_without_header(tmp_path: Path) -> None:
    plain = tmp_path / "p.csv"
    plain.write_text("1,2,0\n3,4,1\n5,6,1\n")
    ds = load_file(plain)
    assert np.array_equal(ds.X, [[1, 2], [3, 4], [5, 6]]) and ds.y.tolist() == [0, 1, 1]
    header = tmp_path / "h.csv"
    header.write_text("a,b,target\n1,2,0.5\n3,4,1.25\n")
    ds = load_file(header)
    assert ds.task == "regression" and ds.y.tolist() == [0.5, 1.25]
    ragged = tmp_path / "r.csv"
    ragged.write_text("1,2,0\n3,1\n")
    with pytest.raises(InvalidInput, match=r"r\.csv"):
        load_file(ragged)


def test_npz_files_dense_and_sparse(tmp_path: Path) -> None:
    X = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    np.savez(tmp_path / "d.npz", X=X, y=np.array([5, 7, 5]))
    ds = load_file(tmp_path / "d.npz")
    assert np.array_equal(ds.X, X) and ds.y.tolist() == [0, 1, 0]
    csr = sp.csr_array(X)
    np.savez(
        tmp_path / "s.npz",
        data=csr.data,
        indices=csr.indices,
        indptr=csr.indptr,
        shape=np.array(csr.shape),
        y=np.array([0.1, 0.2, 0.3]),
        task=np.array("regression"),
    )
    ds = load_file(tmp_path / "s.npz")
    assert ds.is_sparse and np.array_equal(ds.X.toarray(), X) and ds.task == "regression"
    np.savez(tmp_path / "bad.npz", X=X)
    with pytest.raises(InvalidInput, match="missing array 'y'"):
        load_file(tmp_path / "bad.npz")
    np.savez(tmp_path / "short.npz", X=X, y=np.zeros(2))
    with pytest.raises(InvalidInput, match=r"y must have shape \(3,\)"):
        load_file(tmp_path / "short.npz")
    np.savez(tmp_path / "csr.npz", data=csr.data, indices=csr.indices + 5, indptr=csr.indptr,
             shape=np.array(csr.shape), y=np.zeros(3))  # fmt: skip
    with pytest.raises(InvalidInput, match="bad CSR"):
        load_file(tmp_path / "csr.npz")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        load_file(tmp_path / "missing.csv")
    other = tmp_path / "data.json"
    other.write_text("{}")
    with pytest.raises(ValueError, match="path must end with"):
        load_file(other)


# ------------------------------------------------------------------------ specs


def test_synthetic_specs_and_seeds() -> None:
    a = get_dataset("synthetic-lsq:n=100,d=5,seed=7")
    b = get_dataset("synthetic-lsq: n=100, d=5, seed=7", np.random.default_rng(99))
    assert a.X.shape == (100, 5) and np.array_equal(a.X, b.X)
    c = get_dataset("synthetic-lsq:n=100,d=5", np.random.default_rng(7))
    assert np.array_equal(a.X, c.X)
    logistic = get_dataset("synthetic-logistic:n=500,d=4", np.random.default_rng(0))
    assert logistic.task == "binary" and logistic.optimum is not None
    sparse = get_dataset("synthetic-sparse:n=300,d=40,density=0.1,task=binary,seed=1")
    assert sparse.is_sparse and sparse.task == "binary"
    train, test = load_split("synthetic-lsq:n=100,d=5,seed=7", np.random.default_rng(0))
    assert train.n_rows + test.n_rows == 100
    rows = np.vstack([train.X, test.X])
    assert np.array_equal(rows[np.lexsort(rows.T)], a.X[np.lexsort(a.X.T)])  # same rows, unscaled


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("synthetic-lsq:n=100,k=3,seed=1", "unknown or malformed key 'k=3'"),
        ("synthetic-lsq:n=many,seed=1", "n must be a int"),
        ("synthetic-lsq:n=100", "rng: synthetic data"),
        ("synthetic-sparse:task=multiclass,seed=1", "task must be"),
        ("imagenet", "spec must be one of"),
        ("", "non-empty"),
    ],
)
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_dataset(spec)


def test_file_specs(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("1,0\n2,1\n3,2\n")
    assert get_dataset(str(path)).task == "multiclass"
    assert get_dataset(f"{path}:task=regression").task == "regression"
    with pytest.raises(ValueError, match="unknown file option"):
        get_dataset(f"{path}:color=red")
    with pytest.raises(FileNotFoundError, match=r"nope\.svm"):
        get_dataset(str(tmp_path / "nope.svm"))


# ------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"X": np.array([[np.nan]]), "y": [0]}, "X must be finite"),
        ({"X": np.ones(3), "y": [0, 1, 0]}, "X must be 2-D"),
        ({"X": np.ones((0, 2)), "y": []}, "at least one row"),
        ({"X": np.ones((2, 2)), "y": [0, 1, 1]}, r"y must have shape \(2,\)"),
        ({"X": np.ones((2, 2)), "y": [0, 2]}, r"labels in \[0, 2\)"),
        ({"X": np.ones((2, 2)), "y": [0, 1], "n_classes": 3}, "n_classes must be 2"),
        ({"X": np.ones((2, 2)), "y": [0, 1], "task": "ranking"}, "task must be one of"),
        ({"X": np.ones((2, 2)), "y": [0, 1], "optimum": np.zeros(2)}, r"optimum must have shape"),
    ],
)
def test_dataset_validation(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"name": "t", "n_classes": 2, "task": "binary"} | kwargs
    with pytest.raises(ValueError, match=match):
        Dataset(**args)  # type: ignore[arg-type]
