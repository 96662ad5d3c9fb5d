"""Data sets: an immutable :class:`Dataset`, its partitioning for gradient coding, and loaders.

Sources
-------
* bundled real data shipped inside scikit-learn (no downloads): "breast_cancer" (binary, 569 x 30),
  "digits" (10 classes, 1797 x 64), "iris" (3 classes), "wine" (3 classes), "diabetes"
  (regression); scikit-learn is imported only when one of these is loaded;
* files: LIBSVM/svmlight (``.svm``, ``.libsvm``, ``.svmlight``; loaded as sparse CSR), CSV (last
  column is the label) and NPZ (arrays ``X``, ``y`` or sparse ``data``, ``indices``, ``indptr``,
  ``shape`` plus ``y``);
* synthetic generators with a KNOWN optimum (:attr:`Dataset.optimum`).

Spec strings (:func:`get_dataset`)::

    breast_cancer | digits | iris | wine | diabetes
    synthetic-lsq:n=1000,d=20[,noise=0.0][,seed=S]
    synthetic-logistic:n=2000,d=10[,signal=3.0][,seed=S]
    synthetic-sparse:n=2000,d=100,density=0.05[,task=regression|binary][,seed=S]
    PATH[:task=binary|multiclass|regression]

Any spec may end with ``order=label`` (``digits:order=label``,
``synthetic-lsq:n=1000,d=20,order=label``): :func:`load_split` then sorts the training rows by
label after the split, so contiguous partitions are NOT identically distributed (see
:mod:`edgecode.learning.data_order`); :func:`get_dataset` returns the whole set in label order.

Standardisation. Real features are rescaled to zero mean and unit variance with statistics fitted
on the TRAINING rows only (:func:`standardize`, used by :func:`load_split`), so nothing about the
test rows leaks into training. Sparse data is only scaled (not centred) to stay sparse. Synthetic
data is left as drawn, so that its known optimum stays valid.

Example
-------
>>> import numpy as np
>>> train, test = load_split("breast_cancer", np.random.default_rng(0))
>>> train.n_rows, test.n_rows, train.n_classes, train.task
(455, 114, 2, 'binary')
>>> [len(y) for _, y in train.partition(4)]
[114, 114, 114, 113]
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.special import expit

from edgecode.errors import InvalidInput
from edgecode.learning.data_order import label_order, split_order_option
from edgecode.learning.models import (
    MODEL_FOR_TASK,
    FloatArray,
    IntArray,
    Matrix,
    Task,
    check_matrix,
    get_model,
)

#: Real data sets bundled with scikit-learn: name -> task.
BUNDLED: dict[str, Task] = {
    "breast_cancer": "binary",
    "digits": "multiclass",
    "iris": "multiclass",
    "wine": "multiclass",
    "diabetes": "regression",
}
#: File suffixes understood by :func:`load_file`.
LIBSVM_SUFFIXES = (".svm", ".libsvm", ".svmlight")
FILE_SUFFIXES = (*LIBSVM_SUFFIXES, ".csv", ".npz")
#: With ``task=None``, integer labels with at most this many distinct values mean classification.
MAX_AUTO_CLASSES = 20
#: Largest synthetic data set (rows x features) a spec may ask for.
MAX_SYNTHETIC_CELLS = 50_000_000
#: Fraction of rows held out by :func:`load_split` unless told otherwise.
DEFAULT_TEST_FRACTION = 0.2
TASKS: tuple[Task, ...] = ("binary", "multiclass", "regression")


@dataclass(frozen=True, eq=False)
class Dataset:
    """An immutable labelled data set.

    Attributes
    ----------
    X : float64 array (n, d) or scipy.sparse CSR (n, d)
    y : (n,) int64 labels in [0, n_classes) for "binary"/"multiclass", float64 for "regression"
    name : where it came from (a spec string or file name)
    n_classes : 2 for "binary", >= 2 for "multiclass", 1 for "regression"
    task : "binary", "multiclass" or "regression"
    optimum : when known, the minimiser of ``get_model(MODEL_FOR_TASK[task])`` (intercept, no
        L2) on exactly these rows, in that model's parameter layout; else None.

    Inputs are validated (shapes, finiteness, labels) and converted once, here.
    """

    X: Matrix
    y: NDArray[Any]
    name: str
    n_classes: int
    task: Task
    optimum: FloatArray | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        X = check_matrix(self.X)
        n, d = X.shape
        if n < 1 or d < 1:
            raise InvalidInput(f"X must have at least one row and one feature, got shape {X.shape}")
        values = X.data if sp.issparse(X) else X
        if not np.all(np.isfinite(values)):
            raise InvalidInput("X must be finite, got NaN or inf")
        y = np.asarray(self.y)
        if y.shape != (n,):
            raise InvalidInput(f"y must have shape ({n},) to match X, got {y.shape}")
        expected_classes = {"binary": 2, "regression": 1}.get(self.task)
        if expected_classes is not None and self.n_classes != expected_classes:
            raise ValueError(
                f"n_classes must be {expected_classes} for task {self.task!r}, got {self.n_classes}"
            )
        if self.task == "multiclass" and self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2 for multiclass, got {self.n_classes}")
        if self.task == "regression":
            y = y.astype(np.float64)
            if not np.all(np.isfinite(y)):
                raise InvalidInput("y must be finite, got NaN or inf")
        else:
            y = _integer_labels(y, self.n_classes)
        if self.optimum is not None:
            optimum = np.asarray(self.optimum, dtype=np.float64)
            size = get_model(self.default_model).n_params(d, self.n_classes)
            if optimum.shape != (size,):
                raise InvalidInput(f"optimum must have shape ({size},), got {optimum.shape}")
            object.__setattr__(self, "optimum", optimum)
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def is_sparse(self) -> bool:
        return bool(sp.issparse(self.X))

    @property
    def default_model(self) -> str:
        """The model name that fits the task ("logistic", "softmax" or "least_squares")."""
        return MODEL_FOR_TASK[self.task]

    def rows(self, index: Any, name: str | None = None) -> Dataset:
        """The data set restricted to the rows ``index`` (a slice or integer array), in that
        order. The known optimum is dropped (it belongs to the full set of rows)."""
        return Dataset(
            X=self.X[index],
            y=self.y[index],
            name=name or self.name,
            n_classes=self.n_classes,
            task=self.task,
        )

    def partition(self, n_partitions: int) -> list[tuple[Matrix, NDArray[Any]]]:
        """Cut the rows into ``n_partitions`` contiguous blocks ``(X_j, y_j)``.

        Block j holds rows ``partition_bounds(n, K)[j]``: the first ``n mod K`` blocks have
        ``ceil(n / K)`` rows, the rest ``floor(n / K)``. Deterministic; dense blocks are views,
        sparse blocks are CSR slices.
        """
        return [
            (self.X[start:stop], self.y[start:stop])
            for start, stop in partition_bounds(self.n_rows, n_partitions)
        ]

    def train_test_split(
        self, test_fraction: float, rng: np.random.Generator
    ) -> tuple[Dataset, Dataset]:
        """Randomly split into (train, test), with ``round(test_fraction * n)`` test rows
        (at least 1, and at least 1 training row). Both parts come in a random order drawn from
        ``rng``, so contiguous partitions of the training part are exchangeable even when the
        source is sorted by label."""
        fraction = float(test_fraction)
        if not (0.0 < fraction < 1.0):
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        if self.n_rows < 2:
            raise ValueError(f"a split needs at least 2 rows, got {self.n_rows}")
        n_test = min(max(round(fraction * self.n_rows), 1), self.n_rows - 1)
        order = rng.permutation(self.n_rows)
        return self.rows(order[n_test:]), self.rows(order[:n_test])


def partition_bounds(n_rows: int, n_partitions: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of ``n_partitions`` contiguous, near-equal blocks.

    >>> partition_bounds(10, 4)
    [(0, 3), (3, 6), (6, 8), (8, 10)]
    """
    if int(n_partitions) != n_partitions or not (1 <= n_partitions <= n_rows):
        raise ValueError(f"n_partitions must be an integer in [1, {n_rows}], got {n_partitions!r}")
    base, extra = divmod(int(n_rows), int(n_partitions))
    bounds, start = [], 0
    for j in range(int(n_partitions)):
        stop = start + base + (1 if j < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def standardize(train: Dataset, *others: Dataset) -> tuple[Dataset, ...]:
    """Standardise features with statistics of ``train`` only; apply the same map to ``others``.

    Dense: ``x -> (x - mean) / std``; sparse: ``x -> x / std`` (no centring, to stay sparse).
    Constant training columns (std = 0) are centred but not scaled. Returns
    ``(train, *others)`` transformed; known optima are dropped (the map changes them).
    """
    for i, ds in enumerate(others):
        if ds.n_features != train.n_features or ds.is_sparse != train.is_sparse:
            raise ValueError(
                f"others[{i}] must have {train.n_features} features and the same storage as "
                f"train, got {ds.n_features} features (sparse={ds.is_sparse})"
            )
    X: Any = train.X
    if sp.issparse(X):
        mean = np.asarray(X.mean(axis=0)).reshape(-1)
        mean_sq = np.asarray(X.multiply(X).mean(axis=0)).reshape(-1)
        std = np.sqrt(np.maximum(mean_sq - mean**2, 0.0))
    else:
        mean = X.mean(axis=0)
        std = X.std(axis=0)
    scale = np.where(std > 0.0, std, 1.0)

    def transform(ds: Dataset) -> Dataset:
        if ds.is_sparse:
            X_new = sp.csr_array(ds.X @ sp.diags_array(1.0 / scale))
        else:
            X_new = (ds.X - mean) / scale
        return Dataset(X_new, ds.y, ds.name, ds.n_classes, ds.task)

    return tuple(transform(ds) for ds in (train, *others))


# --------------------------------------------------------------------------- bundled data


def load_bundled(name: str) -> Dataset:
    """A real data set bundled with scikit-learn (raw features; no download ever happens).

    Use :func:`load_split` for the standardised train/test pair the services train on.
    """
    if name not in BUNDLED:
        raise ValueError(f"name must be one of {sorted(BUNDLED)}, got {name!r}")
    try:
        from sklearn import datasets as sk_datasets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("bundled data sets need scikit-learn: pip install scikit-learn") from exc
    loader = getattr(sk_datasets, f"load_{name}")
    X_raw, y_raw = loader(return_X_y=True)
    X = np.ascontiguousarray(X_raw, dtype=np.float64)
    task = BUNDLED[name]
    if task == "regression":
        return Dataset(X, np.asarray(y_raw, dtype=np.float64), name, 1, task)
    y = np.asarray(y_raw, dtype=np.int64)
    return Dataset(X, y, name, int(y.max()) + 1, task)


# --------------------------------------------------------------------------- synthetic data


def synthetic_least_squares(
    n: int, d: int, rng: np.random.Generator, *, noise: float = 0.0
) -> Dataset:
    """Least squares with a known optimum: X ~ N(0, 1)^{n x d}, w* ~ N(0, I), b* ~ N(0, 1),
    ``y = X w* + b* (+ noise * N(0, I))``.

    Without noise the optimum is exactly ``[w*, b*]`` (minimum loss 0; unique since a Gaussian
    [X, 1] has full column rank almost surely when n >= d + 1). With noise it is the
    least-squares solution of [X, 1] p = y, computed by ``numpy.linalg.lstsq``.
    """
    n, d = _check_size(n, d, min_rows=d + 1)
    if not (math.isfinite(noise) and noise >= 0.0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    X = rng.standard_normal((n, d))
    optimum = rng.standard_normal(d + 1)
    y = X @ optimum[:d] + optimum[d]
    if noise > 0.0:
        y = y + noise * rng.standard_normal(n)
        design = np.hstack([X, np.ones((n, 1))])
        optimum = np.linalg.lstsq(design, y, rcond=None)[0]
    return Dataset(X, y, f"synthetic-lsq:n={n},d={d},noise={noise:g}", 1, "regression", optimum)


def synthetic_logistic(n: int, d: int, rng: np.random.Generator, *, signal: float = 3.0) -> Dataset:
    """Binary logistic data that is NOT linearly separable, so a finite optimum exists.

    X ~ N(0, 1)^{n x d}; w* uniform on the sphere of radius ``signal``, b* ~ N(0, 1/4);
    ``y_i ~ Bernoulli(sigma(x_i . w* + b*))``. The optimum of the unregularised logistic loss
    on the drawn data is solved to high precision with ``scipy.optimize`` (trust-region Newton,
    mean gradient norm < 1e-10). A draw that is linearly separable (too few rows for d or too
    strong a signal; checked with a linear programme) raises ValueError.
    """
    n, d = _check_size(n, d, min_rows=2 * (d + 1))
    if not (math.isfinite(signal) and signal > 0.0):
        raise ValueError(f"signal must be a finite number > 0, got {signal!r}")
    X = rng.standard_normal((n, d))
    direction = rng.standard_normal(d)
    w_star = signal * direction / np.linalg.norm(direction)
    b_star = 0.5 * rng.standard_normal()
    y = (rng.random(n) < expit(X @ w_star + b_star)).astype(np.int64)
    optimum = logistic_optimum(X, y)
    return Dataset(X, y, f"synthetic-logistic:n={n},d={d},signal={signal:g}", 2, "binary", optimum)


def synthetic_sparse(
    n: int,
    d: int,
    density: float,
    rng: np.random.Generator,
    *,
    task: Task = "regression",
) -> Dataset:
    """A sparse CSR data set with ``round(density * n * d)`` standard-normal non-zeros at uniform
    random positions (``scipy.sparse.random_array``).

    task "regression": ``y = X w* + b*`` with w*, b* ~ N(0, 1); ``[w*, b*]`` is a minimiser
    (loss 0), the unique one when [X, 1] has full column rank. task "binary":
    ``y ~ Bernoulli(sigma(X w* + b*))`` with w* of norm 3 and the optimum solved as in
    :func:`synthetic_logistic`; features that never occur keep weight 0 there.
    """
    n, d = _check_size(n, d, min_rows=d + 1)
    if not (0.0 < float(density) <= 1.0):
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    if task not in ("regression", "binary"):
        raise ValueError(f"task must be 'regression' or 'binary', got {task!r}")
    X = sp.csr_array(
        sp.random_array(
            (n, d), density=float(density), format="csr", rng=rng, data_sampler=rng.standard_normal
        )
    )
    name = f"synthetic-sparse:n={n},d={d},density={density:g},task={task}"
    if task == "regression":
        optimum = rng.standard_normal(d + 1)
        y = np.asarray(X @ optimum[:d]) + optimum[d]
        return Dataset(X, y, name, 1, "regression", optimum)
    direction = rng.standard_normal(d)
    w_star = 3.0 * direction / np.linalg.norm(direction)
    b_star = 0.5 * rng.standard_normal()
    labels = (rng.random(n) < expit(np.asarray(X @ w_star) + b_star)).astype(np.int64)
    return Dataset(X, labels, name, 2, "binary", logistic_optimum(X, labels))


def logistic_optimum(X: Any, y: Any, *, gtol: float = 1e-10) -> FloatArray:
    """Minimiser ``[w, b]`` of the unregularised binary logistic loss on (X, y).

    Minimises the MEAN loss with ``scipy.optimize.minimize(method="trust-ncg")`` using the exact
    Hessian-vector product ``A^T diag(p (1 - p)) A v / n`` (A = [X, 1]), until the mean gradient
    norm is below ``gtol``. Raises ValueError when the rows are linearly separable (checked first
    with a feasibility linear programme: no finite optimum exists then) or the solve fails.
    """
    from scipy.optimize import minimize  # lazy: only data generation needs the solver

    model = get_model("logistic")
    matrix = check_matrix(X)
    n, d = matrix.shape
    labels = np.asarray(y)
    if labels.shape != (n,):
        raise InvalidInput(f"y must have shape ({n},) to match X, got {labels.shape}")
    labels = _integer_labels(labels, 2)
    if _linearly_separable(matrix, labels):
        raise ValueError(
            "no finite logistic optimum: the data is linearly separable; use more rows"
        )

    def fun(params: FloatArray) -> tuple[float, FloatArray]:
        return model.loss(params, matrix, labels) / n, model.gradient(params, matrix, labels) / n

    def hessp(params: FloatArray, vector: FloatArray) -> FloatArray:
        z = np.asarray(matrix @ params[:d]).reshape(-1) + params[d]
        p = expit(z)
        weights = p * (1.0 - p)
        u = weights * (np.asarray(matrix @ vector[:d]).reshape(-1) + vector[d])
        out = np.concatenate([np.asarray(matrix.T @ u).reshape(-1), [u.sum()]])
        return cast(FloatArray, out / n)

    result = minimize(
        fun,
        np.zeros(d + 1),
        jac=True,
        hessp=hessp,
        method="trust-ncg",
        options={"gtol": gtol, "maxiter": 500},
    )
    optimum = np.asarray(result.x, dtype=np.float64)
    grad_norm = float(np.linalg.norm(fun(optimum)[1]))
    if not (grad_norm < gtol * 10 and np.all(np.isfinite(optimum))):
        raise ValueError(
            f"no finite logistic optimum found (mean gradient norm {grad_norm:.3g}, "
            f"|params| {np.linalg.norm(optimum):.3g}): the data looks nearly separable"
        )
    return optimum


def _linearly_separable(X: Matrix, y: NDArray[Any]) -> bool:
    """Whether some (w, b) has s_i (x_i . w + b) >= 1 for every row (s_i = 2 y_i - 1): a
    feasibility linear programme (HiGHS). Then the logistic loss has no minimiser."""
    from scipy.optimize import linprog

    n, d = X.shape
    signs = 2.0 * np.asarray(y, dtype=np.float64) - 1.0
    if sp.issparse(X):
        constraint: Any = sp.hstack([sp.csr_array(X), sp.csr_array(np.ones((n, 1)))])
        constraint = -(sp.diags_array(signs) @ constraint)
    else:
        constraint = -signs[:, None] * np.hstack([X, np.ones((n, 1))])
    result = linprog(
        np.zeros(d + 1), A_ub=constraint, b_ub=-np.ones(n), bounds=(None, None), method="highs"
    )
    return bool(result.status == 0)


def _check_size(n: int, d: int, *, min_rows: int) -> tuple[int, int]:
    if int(d) != d or d < 1:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    if int(n) != n or n < min_rows:
        raise ValueError(f"n must be an integer >= {min_rows} for d={d}, got {n!r}")
    return int(n), int(d)


# --------------------------------------------------------------------------- files


def load_file(
    path: str | os.PathLike[str],
    *,
    task: Task | None = None,
    n_features: int | None = None,
) -> Dataset:
    """Load a LIBSVM/svmlight, CSV or NPZ file, chosen by suffix.

    * LIBSVM (``.svm``, ``.libsvm``, ``.svmlight``): lines ``label idx:value ...``; ``#``
      starts a comment; indices are 1-based unless an index 0 occurs (then 0-based); the result
      is sparse CSR with ``n_features`` columns (default: the largest index seen).
    * CSV: comma-separated numbers, the LAST column is the label; an optional header line is
      skipped when it does not parse as numbers.
    * NPZ: ``X`` (2-D) and ``y``, or a CSR matrix as ``data``, ``indices``, ``indptr``, ``shape``
      and ``y``; an optional string ``task``.

    Labels. With ``task=None``: integer labels with at most MAX_AUTO_CLASSES distinct values
    mean classification ("binary" for 2 values, else "multiclass"), anything else regression.
    For classification the sorted distinct label values are mapped to 0..C-1 (so -1/+1 become
    0/1).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"data file not found: {file}")
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    suffix = file.suffix.lower()
    if suffix in LIBSVM_SUFFIXES:
        X, raw, file_task = *_read_libsvm(file, n_features), None
    elif suffix == ".csv":
        X, raw, file_task = *_read_csv(file), None
    elif suffix == ".npz":
        X, raw, file_task = _read_npz(file)
    else:
        raise ValueError(f"path must end with one of {list(FILE_SUFFIXES)}, got {file.name!r}")
    if n_features is not None and suffix not in LIBSVM_SUFFIXES and X.shape[1] != n_features:
        raise InvalidInput(f"{file.name}: expected {n_features} features, got {X.shape[1]}")
    y, n_classes, resolved = _encode_labels(raw, task or file_task, file.name)
    return Dataset(X, y, file.name, n_classes, resolved)


def _read_libsvm(file: Path, n_features: int | None) -> tuple[Matrix, FloatArray]:
    labels: list[float] = []
    indices: list[int] = []
    values: list[float] = []
    indptr = [0]
    with file.open("r", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            tokens = line.split("#", 1)[0].split()
            if not tokens:
                continue
            try:
                labels.append(float(tokens[0]))
                for token in tokens[1:]:
                    key, _, value = token.partition(":")
                    if key == "qid":
                        continue
                    indices.append(int(key))
                    values.append(float(value))
            except ValueError:
                raise InvalidInput(
                    f"{file.name}:{line_no}: expected 'label index:value ...', got {line.strip()!r}"
                ) from None
            indptr.append(len(indices))
    if not labels:
        raise InvalidInput(f"{file.name}: no data rows")
    index_array = np.asarray(indices, dtype=np.int64)
    if index_array.size and index_array.min() < 0:
        raise InvalidInput(f"{file.name}: feature indices must be >= 0")
    if index_array.size and index_array.min() > 0:
        index_array -= 1  # the usual 1-based LIBSVM numbering
    width = int(index_array.max()) + 1 if index_array.size else 1
    if n_features is not None:
        if width > n_features:
            raise InvalidInput(
                f"{file.name}: feature index {width} exceeds n_features={n_features}"
            )
        width = int(n_features)
    X = sp.csr_array(
        (np.asarray(values, dtype=np.float64), index_array, np.asarray(indptr, dtype=np.int64)),
        shape=(len(labels), width),
    )
    nnz = X.nnz
    X.sum_duplicates()
    if X.nnz != nnz:
        raise InvalidInput(f"{file.name}: a feature index repeats within a row")
    X.eliminate_zeros()
    return X, np.asarray(labels, dtype=np.float64)


def _read_csv(file: Path) -> tuple[Matrix, FloatArray]:
    with file.open("r", encoding="utf-8") as handle:
        first = next((line for line in handle if line.strip()), "")
    if not first:
        raise InvalidInput(f"{file.name}: no data rows")
    try:
        [float(field) for field in first.split(",")]
        header = 0
    except ValueError:
        header = 1
    try:
        table = np.loadtxt(file, delimiter=",", skiprows=header, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise InvalidInput(f"{file.name}: not a numeric CSV table ({exc})") from None
    if table.shape[0] == 0 or table.shape[1] < 2:
        raise InvalidInput(
            f"{file.name}: need >= 1 row and >= 2 columns (features, label), got {table.shape}"
        )
    return np.ascontiguousarray(table[:, :-1]), table[:, -1].copy()


def _read_npz(file: Path) -> tuple[Matrix, FloatArray, Task | None]:
    with np.load(file, allow_pickle=False) as archive:
        keys = set(archive.files)
        if "y" not in keys:
            raise InvalidInput(f"{file.name}: missing array 'y' (found {sorted(keys)})")
        y = np.asarray(archive["y"])
        if "X" in keys:
            X: Matrix = np.asarray(archive["X"], dtype=np.float64)
            if X.ndim != 2:
                raise InvalidInput(f"{file.name}: X must be 2-D, got shape {X.shape}")
        elif {"data", "indices", "indptr", "shape"} <= keys:
            shape = tuple(int(s) for s in archive["shape"])
            try:
                X = sp.csr_array(
                    (archive["data"].astype(np.float64), archive["indices"], archive["indptr"]),
                    shape=shape,
                )
                X.check_format(full_check=True)
            except (ValueError, TypeError) as exc:
                raise InvalidInput(f"{file.name}: bad CSR arrays ({exc})") from None
        else:
            raise InvalidInput(
                f"{file.name}: expected arrays X, y or data, indices, indptr, shape, y; "
                f"found {sorted(keys)}"
            )
        task = str(archive["task"]) if "task" in keys else None
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise InvalidInput(f"{file.name}: y must have shape ({X.shape[0]},), got {y.shape}")
    if task is not None and task not in TASKS:
        raise InvalidInput(f"{file.name}: task must be one of {list(TASKS)}, got {task!r}")
    try:
        return X, y.astype(np.float64), task
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{file.name}: y must be numeric, got dtype {y.dtype}") from exc


def _encode_labels(raw: FloatArray, task: Task | None, source: str) -> tuple[Any, int, Task]:
    if not np.all(np.isfinite(raw)):
        raise InvalidInput(f"{source}: labels must be finite, got NaN or inf")
    classes = np.unique(raw)
    integral = bool(np.all(classes == np.round(classes)))
    if task is None:
        if integral and 2 <= classes.size <= MAX_AUTO_CLASSES:
            task = "binary" if classes.size == 2 else "multiclass"
        else:
            task = "regression"
    if task == "regression":
        return raw, 1, task
    if not integral:
        raise InvalidInput(f"{source}: task {task!r} needs integer labels, got {classes[:5]}")
    if task == "binary" and classes.size != 2:
        raise InvalidInput(f"{source}: task 'binary' needs 2 label values, got {classes.size}")
    if classes.size < 2:
        raise InvalidInput(f"{source}: classification needs >= 2 label values, got {classes}")
    return np.searchsorted(classes, raw).astype(np.int64), int(classes.size), task


def _integer_labels(y: NDArray[Any], n_classes: int) -> IntArray:
    try:
        values = y.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"y must be numeric labels, got dtype {y.dtype}") from exc
    valid = (values >= 0) & (values < n_classes) & (values == np.floor(values))
    if not np.all(valid):
        bad = np.unique(values[~valid])[:5].tolist()
        raise InvalidInput(f"y must hold integer labels in [0, {n_classes}), got values {bad}")
    return values.astype(np.int64)


# --------------------------------------------------------------------------- specs

_SYNTHETIC_KEYS: dict[str, dict[str, type]] = {
    "synthetic-lsq": {"n": int, "d": int, "noise": float, "seed": int},
    "synthetic-logistic": {"n": int, "d": int, "signal": float, "seed": int},
    "synthetic-sparse": {"n": int, "d": int, "density": float, "task": str, "seed": int},
}
_SYNTHETIC_DEFAULTS: dict[str, dict[str, Any]] = {
    "synthetic-lsq": {"n": 1000, "d": 20},
    "synthetic-logistic": {"n": 2000, "d": 10},
    "synthetic-sparse": {"n": 2000, "d": 100, "density": 0.05},
}
#: Names accepted by :func:`get_dataset` besides file paths.
DATASET_NAMES: tuple[str, ...] = (*BUNDLED, *_SYNTHETIC_KEYS)


def dataset_file(spec: str) -> str | None:
    """The file a data set spec would read (None for a bundled or synthetic data set), so that
    a service can confine it before anything opens it.

    >>> dataset_file("breast_cancer") is None, dataset_file("data/train.csv:task=binary")
    (True, 'data/train.csv')
    """
    spec = split_order_option(spec.strip())[0]
    if spec in BUNDLED or spec.partition(":")[0] in _SYNTHETIC_KEYS:
        return None
    return _split_file_spec(spec)[0]


def check_dataset_spec(spec: str) -> None:
    """Raise ValueError (or FileNotFoundError) if ``spec`` cannot name a data set, without
    loading it: a bundled name, a ``synthetic-...`` spec with known keys, or an existing file."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"spec must be a non-empty string, got {spec!r}")
    spec = split_order_option(spec.strip())[0]
    if spec in BUNDLED:
        return
    head, _, tail = spec.partition(":")
    if head in _SYNTHETIC_KEYS:
        params = _synthetic_params(head, tail, spec)
        n, d = params["n"], params["d"]
        if not (isinstance(n, int) and isinstance(d, int) and n >= 2 and d >= 1):
            raise ValueError(f"spec {spec!r}: n must be >= 2 and d >= 1, got n={n}, d={d}")
        if n * d > MAX_SYNTHETIC_CELLS:
            raise ValueError(
                f"spec {spec!r}: n * d = {n * d} exceeds the limit of {MAX_SYNTHETIC_CELLS} values"
            )
        return
    path, _ = _split_file_spec(spec)
    if Path(path).is_file():
        return
    if Path(path).suffix.lower() in FILE_SUFFIXES or os.sep in path or "/" in path:
        raise FileNotFoundError(f"data file not found: {path}")
    raise ValueError(f"spec must be one of {list(DATASET_NAMES)} or an existing file, got {spec!r}")


def get_dataset(spec: str, rng: np.random.Generator | None = None) -> Dataset:
    """The whole data set named by ``spec`` (see the module docstring for the grammar).

    Synthetic specs draw from ``rng``, or from ``np.random.default_rng(seed)`` when the spec has
    a ``seed=`` key; one of the two is required. Bundled and file data ignore ``rng``.

    Errors: unknown names and keys raise ValueError listing what is accepted; a spec that looks
    like a path (has a known suffix or a path separator) but does not exist raises
    FileNotFoundError.

    >>> import numpy as np
    >>> ds = get_dataset("synthetic-lsq:n=50,d=3", np.random.default_rng(1))
    >>> ds.X.shape, ds.optimum.shape
    ((50, 3), (4,))
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"spec must be a non-empty string, got {spec!r}")
    spec, order = split_order_option(spec.strip())
    if order == "label":
        return _in_label_order(get_dataset(spec, rng))
    if spec in BUNDLED:
        return load_bundled(spec)
    head, _, tail = spec.partition(":")
    if head in _SYNTHETIC_KEYS:
        return _synthetic_from_spec(head, tail, rng, spec)
    path, options = _split_file_spec(spec)
    if Path(path).is_file():
        task = options.pop("task", None)
        if options:
            raise ValueError(f"spec: unknown file option(s) {sorted(options)}; allowed: ['task']")
        return load_file(path, task=cast("Task | None", task))
    if Path(path).suffix.lower() in FILE_SUFFIXES or os.sep in path or "/" in path:
        raise FileNotFoundError(f"data file not found: {path}")
    raise ValueError(
        f"spec must be one of {list(DATASET_NAMES)} or an existing "
        f"{'/'.join(FILE_SUFFIXES)} file, got {spec!r}"
    )


def load_split(
    spec: str,
    rng: np.random.Generator,
    *,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    standardize_features: bool | None = None,
) -> tuple[Dataset, Dataset]:
    """(train, test) for ``spec``: load, split with ``rng``, then standardise with training
    statistics only. ``standardize_features=None`` means: yes for real (bundled or file) data,
    no for synthetic data (whose optimum must stay valid).

    The synthetic draw and the split both use ``rng``, in that order. With ``order=label`` the
    same rows are drawn and split, then each part is sorted by label (stable).
    """
    if not isinstance(spec, str):
        raise ValueError(f"spec must be a non-empty string, got {spec!r}")
    spec, order = split_order_option(spec.strip())
    dataset = get_dataset(spec, rng)
    train, test = dataset.train_test_split(test_fraction, rng)
    if order == "label":
        train, test = _in_label_order(train), _in_label_order(test)
    if standardize_features is None:
        standardize_features = not dataset.name.startswith("synthetic-")
    if standardize_features:
        train, test = standardize(train, test)
    return train, test


def _in_label_order(dataset: Dataset) -> Dataset:
    """The same rows sorted by label (stable); a known optimum stays valid (same rows)."""
    order = label_order(dataset.y)
    X, y = dataset.X[order], dataset.y[order]
    return Dataset(X, y, dataset.name, dataset.n_classes, dataset.task, dataset.optimum)


def _synthetic_params(head: str, tail: str, spec: str) -> dict[str, Any]:
    """The parsed ``key=value`` options of a synthetic spec, with the defaults filled in."""
    allowed = _SYNTHETIC_KEYS[head]
    params = dict(_SYNTHETIC_DEFAULTS[head])
    for item in filter(None, (part.strip() for part in tail.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in allowed:
            raise ValueError(
                f"spec {spec!r}: unknown or malformed key {item!r}; allowed keys: {list(allowed)}"
            )
        try:
            params[key] = allowed[key](value.strip())
        except ValueError:
            raise ValueError(
                f"spec {spec!r}: {key} must be a {allowed[key].__name__}, got {value!r}"
            ) from None
    return params


def _synthetic_from_spec(
    head: str, tail: str, rng: np.random.Generator | None, spec: str
) -> Dataset:
    params = _synthetic_params(head, tail, spec)
    seed = params.pop("seed", None)
    if seed is not None:
        rng = np.random.default_rng(seed)
    if rng is None:
        raise ValueError(f"rng: synthetic data {spec!r} needs a np.random.Generator or a seed= key")
    if head == "synthetic-lsq":
        return synthetic_least_squares(
            params["n"], params["d"], rng, noise=params.get("noise", 0.0)
        )
    if head == "synthetic-logistic":
        return synthetic_logistic(params["n"], params["d"], rng, signal=params.get("signal", 3.0))
    return synthetic_sparse(
        params["n"], params["d"], params["density"], rng, task=params.get("task", "regression")
    )


def _split_file_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``PATH[:key=value,...]`` -> (PATH, options); a colon that is part of the path stays."""
    path, sep, tail = spec.rpartition(":")
    if not sep or "=" not in tail or Path(spec).is_file():
        return spec, {}
    options: dict[str, str] = {}
    for item in tail.split(","):
        key, _, value = item.partition("=")
        options[key.strip()] = value.strip()
    return path, options
