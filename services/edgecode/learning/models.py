"""Models trained by edgecode: binary logistic regression, multinomial logistic (softmax)
regression and least squares, as summed losses with exact summed gradients.

Why sums. Gradient coding decodes ``sum_j g_j`` over the partitions j = 1..K of the rows. Every
loss and gradient here is therefore a SUM over the rows it is given (never a mean), so that for
any partitioning of the rows into blocks X_1..X_K::

    sum_j model.gradient(params, X_j, y_j, reg_share=1/K) == model.gradient(params, X, y)

up to floating-point rounding. The optimizer divides by the number of rows (see
:mod:`edgecode.learning.optimizers`). A worker's coded message ``sum_j c_j g_j`` over the
partitions it holds is ``model.coded_gradient(params, [(c_j, X_j, y_j), ...], reg_share)``.

Parameters and intercept. ``params`` is always a 1-D float64 vector. The intercept is a separate
parameter (no bias column is appended to X, so sparse data stays sparse and is never copied):

* logistic: ``params = [w (d), b]`` (length d + 1), score ``z = X w + b``;
* softmax: ``params = P.ravel()`` with ``P`` of shape (d + 1, C) in C order, ``W = P[:d]``,
  ``b = P[d]``, scores ``Z = X W + b`` (n, C);
* least squares: ``params = [w (d), b]``, prediction ``X w + b``.

With ``fit_intercept=False`` the intercept row/entry is absent (length d, resp. d * C).

L2 regularisation. With ``l2 = lam > 0`` the full objective adds ``(lam / 2) ||w||^2`` (the
weights only; the intercept is not penalised). A call with ``reg_share = r`` adds
``r (lam / 2) ||w||^2`` to the loss and ``r lam w`` to the gradient. Callers that split the rows
into K partitions pass ``reg_share = 1 / K`` for each partition, so the K partial gradients
still add up to the full gradient; ``reg_share = 1`` (the default) is the full objective.

X is a 2-D float array or any ``scipy.sparse`` matrix (CSR preferred); sparse X is only ever used
through ``X @ v`` and ``X.T @ r``, so it stays sparse.

Example
-------
>>> import numpy as np
>>> model = get_model("logistic")
>>> X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]); y = np.array([0, 1, 1])
>>> params = np.zeros(model.n_params(2, 2))
>>> round(model.loss(params, X, y), 6)  # 3 rows, each log(2)
2.079442
>>> parts = model.gradient(params, X[:1], y[:1]) + model.gradient(params, X[1:], y[1:])
>>> bool(np.allclose(parts, model.gradient(params, X, y)))
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, TypeAlias, runtime_checkable

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.special import expit, logsumexp

from edgecode.errors import InvalidInput

FloatArray: TypeAlias = NDArray[np.float64]
IntArray: TypeAlias = NDArray[np.int64]
#: A data matrix: dense float64 (n, d) array or a scipy.sparse matrix (kept sparse).
Matrix: TypeAlias = "FloatArray | sp.csr_matrix | sp.csr_array"
Task = Literal["binary", "multiclass", "regression"]

#: Standard deviation of the random initial parameters (see ``init_params``).
DEFAULT_INIT_SCALE = 0.01


@runtime_checkable
class Model(Protocol):
    """What the training services need from a model. Losses and gradients are sums over rows."""

    @property
    def name(self) -> str:
        """Registry name ("logistic", "softmax", "least_squares")."""
        ...

    @property
    def task(self) -> Task:
        """The data-set task the model fits ("binary", "multiclass", "regression")."""
        ...

    @property
    def l2(self) -> float:
        """L2 penalty strength lam of the full objective (>= 0)."""
        ...

    @property
    def fit_intercept(self) -> bool:
        """Whether params holds an unpenalised intercept."""
        ...

    def n_params(self, n_features: int, n_classes: int) -> int:
        """Length of the parameter vector."""
        ...

    def init_params(
        self,
        rng: np.random.Generator,
        n_features: int,
        n_classes: int,
        scale: float = DEFAULT_INIT_SCALE,
    ) -> FloatArray:
        """Initial parameters, i.i.d. N(0, scale^2) (zeros when ``scale == 0``)."""
        ...

    def loss(self, params: Any, X: Any, y: Any, reg_share: float = 1.0) -> float:
        """Summed loss over the rows of X (plus ``reg_share`` of the L2 term)."""
        ...

    def gradient(self, params: Any, X: Any, y: Any, reg_share: float = 1.0) -> FloatArray:
        """Summed gradient over the rows of X, 1-D float64 of length ``len(params)``."""
        ...

    def coded_gradient(
        self, params: Any, parts: Sequence[tuple[float, Any, Any]], reg_share: float = 1.0
    ) -> FloatArray:
        """A worker's coded message ``sum_j c_j gradient(params, X_j, y_j, reg_share)`` over
        ``parts = [(c_j, X_j, y_j), ...]`` (at least one part)."""
        ...

    def predict(self, params: Any, X: Any) -> NDArray[Any]:
        """Predicted labels (classification) or values (regression), shape (n,)."""
        ...

    def accuracy(self, params: Any, X: Any, y: Any) -> float:
        """Fraction of correct labels; R^2 for regression."""
        ...


# --------------------------------------------------------------------------- validation


def check_matrix(X: Any, name: str = "X") -> Matrix:
    """Return X as float64 2-D dense array or sparse CSR matrix; raise naming ``name``.

    Dense input that already is C-contiguous float64 is returned as is (no copy); sparse input in
    another format is converted to CSR (float64).
    """
    if sp.issparse(X):
        if X.ndim != 2:
            raise InvalidInput(f"{name} must be 2-D, got shape {X.shape}")
        if X.format != "csr":
            X = X.tocsr()
        if X.dtype != np.float64:
            X = X.astype(np.float64)
        return X
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name} must be a numeric 2-D array, got {type(X).__name__}") from exc
    if arr.ndim != 2:
        raise InvalidInput(f"{name} must be 2-D (n_rows, n_features), got shape {arr.shape}")
    return arr


def check_parts(parts: Any) -> list[tuple[float, Any, Any]]:
    """``parts`` as a list of ``(c_j, X_j, y_j)`` with finite real c_j; at least one part."""
    try:
        items = [(float(c), X, y) for c, X, y in parts]
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"parts must be a sequence of (coefficient, X, y), got: {exc}") from None
    if not items:
        raise InvalidInput("parts must hold at least one (coefficient, X, y), got none")
    if not all(math.isfinite(c) for c, _, _ in items):
        raise InvalidInput(f"parts: coefficients must be finite, got {[c for c, _, _ in items]}")
    return items


def _check_params(params: Any, expected: int | None = None) -> FloatArray:
    arr = np.asarray(params, dtype=np.float64)
    if arr.ndim != 1:
        raise InvalidInput(f"params must be 1-D, got shape {arr.shape}")
    if expected is not None and arr.shape[0] != expected:
        raise InvalidInput(f"params must have length {expected}, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise InvalidInput("params must be finite, got NaN or inf")
    return arr


def _check_targets(y: Any, n_rows: int) -> FloatArray:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise InvalidInput(f"y must have shape ({n_rows},) to match X, got {arr.shape}")
    try:
        values = arr.astype(np.float64, copy=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"y must be numeric, got dtype {arr.dtype}") from exc
    if not np.all(np.isfinite(values)):
        raise InvalidInput("y must be finite, got NaN or inf")
    return values


def _check_labels(y: Any, n_rows: int, n_classes: int) -> IntArray:
    values = _check_targets(y, n_rows)
    valid = (values >= 0) & (values < n_classes) & (values == np.floor(values))
    if not np.all(valid):
        bad = np.unique(values[~valid])
        raise InvalidInput(
            f"y must hold integer labels in [0, {n_classes}), got values {bad[:5].tolist()}"
        )
    return values.astype(np.int64)


def _check_share(reg_share: float) -> float:
    share = float(reg_share)
    if not (math.isfinite(share) and share >= 0.0):
        raise ValueError(f"reg_share must be a finite number >= 0, got {reg_share!r}")
    return share


def _check_dims(n_features: int, n_classes: int) -> None:
    if int(n_features) != n_features or n_features < 1:
        raise ValueError(f"n_features must be a positive integer, got {n_features!r}")
    if int(n_classes) != n_classes or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")


# --------------------------------------------------------------------------- shared base


@dataclass(frozen=True)
class _LinearModel:
    """Shared plumbing: hyper-parameters, validation, init and the L2 term."""

    l2: float = 0.0
    fit_intercept: bool = True

    name: ClassVar[str] = ""
    task: ClassVar[Task] = "regression"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.l2) and self.l2 >= 0.0):
            raise ValueError(f"l2 must be a finite number >= 0, got {self.l2!r}")

    def n_params(self, n_features: int, n_classes: int) -> int:
        _check_dims(n_features, n_classes)
        self._check_classes(n_classes)
        return (int(n_features) + int(self.fit_intercept)) * self._n_outputs(n_classes)

    def init_params(
        self,
        rng: np.random.Generator,
        n_features: int,
        n_classes: int,
        scale: float = DEFAULT_INIT_SCALE,
    ) -> FloatArray:
        if not (math.isfinite(scale) and scale >= 0.0):
            raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
        size = self.n_params(n_features, n_classes)
        return np.asarray(rng.normal(0.0, 1.0, size) * scale, dtype=np.float64)

    def coded_gradient(
        self, params: Any, parts: Sequence[tuple[float, Any, Any]], reg_share: float = 1.0
    ) -> FloatArray:
        """``sum_j c_j gradient(params, X_j, y_j, reg_share)``, one part at a time."""
        total: FloatArray | None = None
        for c, X, y in check_parts(parts):
            g = self.gradient(params, X, y, reg_share)
            total = c * g if total is None else total + c * g
        assert total is not None  # check_parts refuses an empty list
        return total

    # -- hooks
    def gradient(self, params: Any, X: Any, y: Any, reg_share: float = 1.0) -> FloatArray:
        raise NotImplementedError

    def _check_classes(self, n_classes: int) -> None:
        raise NotImplementedError

    def _n_outputs(self, n_classes: int) -> int:
        return 1

    # -- helpers
    def _rows_in(self, X: Matrix) -> int:
        return int(X.shape[1]) + int(self.fit_intercept)

    def _check_inputs(self, params: Any, X: Any) -> tuple[FloatArray, Matrix]:
        matrix = check_matrix(X)
        vector = _check_params(params)
        rows = self._rows_in(matrix)
        if vector.shape[0] % rows != 0 or vector.shape[0] == 0:
            raise InvalidInput(
                f"params must have length {rows} * n_outputs for X with "
                f"{matrix.shape[1]} features, got {vector.shape[0]}"
            )
        self._check_outputs(vector.shape[0] // rows, vector.shape[0])
        return vector, matrix

    def _check_outputs(self, n_outputs: int, length: int) -> None:
        if n_outputs != 1:
            raise InvalidInput(f"params has length {length}: expected n_features + intercept")

    def _weights(self, params: FloatArray, n_features: int) -> FloatArray:
        """The penalised part of params (everything but the intercept)."""
        return params[: n_features * (len(params) // (n_features + int(self.fit_intercept)))]

    def _penalty(self, params: FloatArray, n_features: int, share: float) -> float:
        if self.l2 == 0.0 or share == 0.0:
            return 0.0
        w = self._weights(params, n_features)
        return 0.5 * share * self.l2 * float(w @ w)

    def _add_penalty_gradient(
        self, grad: FloatArray, params: FloatArray, n_features: int, share: float
    ) -> FloatArray:
        if self.l2 != 0.0 and share != 0.0:
            k = len(self._weights(params, n_features))
            grad[:k] += (share * self.l2) * params[:k]
        return grad

    def _scores_1d(self, params: FloatArray, X: Matrix) -> FloatArray:
        d = int(X.shape[1])
        z = np.asarray(X @ params[:d], dtype=np.float64).reshape(-1)
        if self.fit_intercept:
            z = z + params[d]
        return z

    def _gradient_1d(self, residual: FloatArray, X: Matrix) -> FloatArray:
        """``[X^T r, sum(r)]``: the summed gradient of a score-linear loss."""
        g_w = np.asarray(X.T @ residual, dtype=np.float64).reshape(-1)
        if self.fit_intercept:
            return np.concatenate([g_w, [float(residual.sum())]])
        return g_w


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class LogisticRegression(_LinearModel):
    """Binary logistic regression, labels y in {0, 1}.

    Loss (summed over rows, z_i = x_i . w + b, s_i = 1 - 2 y_i)::

        L = sum_i log(1 + exp(s_i z_i)) + r (lam / 2) ||w||^2

    i.e. ``log(1 + exp(z))`` for y = 0 and ``log(1 + exp(-z))`` for y = 1, computed as
    ``max(u, 0) + log1p(exp(-|u|))`` so it never overflows. Gradient::

        dL/dw = X^T (sigma(z) - y) + r lam w,    dL/db = sum_i (sigma(z_i) - y_i)

    with sigma the logistic function (``scipy.special.expit``). Shapes: X (n, d), y (n,),
    params (d + 1,). ``predict`` returns 1 where z > 0, else 0.

    >>> import numpy as np
    >>> m = LogisticRegression()
    >>> m.gradient(np.zeros(2), np.array([[1.0], [2.0]]), np.array([1, 0])).tolist()
    [0.5, 0.0]
    """

    name: ClassVar[str] = "logistic"
    task: ClassVar[Task] = "binary"

    def _check_classes(self, n_classes: int) -> None:
        if n_classes != 2:
            raise ValueError(f"n_classes must be 2 for binary logistic, got {n_classes}")

    def loss(self, params: Any, X: Any, y: Any, reg_share: float = 1.0) -> float:
        w, matrix = self._check_inputs(params, X)
        labels = _check_labels(y, matrix.shape[0], 2)
        share = _check_share(reg_share)
        u = self._scores_1d(w, matrix) * (1.0 - 2.0 * labels)
        data = np.maximum(u, 0.0) + np.log1p(np.exp(-np.abs(u)))
        return float(data.sum()) + self._penalty(w, matrix.shape[1], share)

    def gradient(self, params: Any, X: Any, y: Any, reg_share: float = 1.0) -> FloatArray:
        w, matrix = self._check_inputs(params, X)
        labels = _check_labels(y, matrix.shape[0], 2)
        share = _check_share(reg_share)
        residual = expit(self._scores_1d(w, matrix)) - labels
        grad = self._gradient_1d(residual, matrix)
        return self._add_penalty_gradient(grad, w, matrix.shape[1], share)

    def predict(self, params: Any, X: Any) -> IntArray:
        w, matrix = self._check_inputs(params, X)
        return (self._scores_1d(w, matrix) > 0.0).astype(np.int64)

    def predict_proba(self, params: Any, X: Any) -> FloatArray:
        """P(y = 1 | x) = sigma(x . w + b), shape (n,)."""
        w, matrix = self._check_inputs(params, X)
        return np.asarray(expit(self._scores_1d(w, matrix)), dtype=np.float64)

    def accuracy(self, params: Any, X: Any, y: Any) -> float:
        predicted = self.predict(params, X)
        labels = _check_labels(y, predicted.shape[0], 2)
        return float(np.mean(predicted == labels)) if labels.size else math.nan


@dataclass(frozen=True)
class SoftmaxRegression(_LinearModel):
    """Multinomial logistic (softmax) regression over C >= 2 classes, labels y in {0..C-1}.

    Parameters: ``P = params.reshape(d + 1, C)``, ``W = P[:d]`` (d, C), ``b = P[d]`` (C,).
    Scores ``Z = X W + b`` (n, C). Loss (summed over rows)::

        L = sum_i [ logsumexp(Z_i) - Z_{i, y_i} ] + r (lam / 2) ||W||_F^2

    with a max-shifted log-sum-exp. With S = softmax(Z) row-wise and Y the one-hot labels::

        dL/dW = X^T (S - Y) + r lam W  (d, C),    dL/db = sum_i (S_i - Y_i)  (C,)

    flattened back in the same (d + 1, C) C order. The number of classes is read from the
    length of params (``len(params) / (d + 1)``). ``predict`` is the row-wise argmax of Z.

    >>> import numpy as np
    >>> m = SoftmaxRegression()
    >>> g = m.gradient(np.zeros(6), np.array([[1.0], [1.0]]), np.array([0, 2]))
    >>> g.reshape(2, 3).round(3).tolist()
    [[-0.333, 0.667, -0.333], [-0.333, 0.667, -0.333]]
    """

    name: ClassVar[str] = "softmax"
    task: ClassVar[Task] = "multiclass"

    def _check_classes(self, n_classes: int) -> None:
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2 for softmax, got {n_classes}")

    def _n_outputs(self, n_classes: int) -> int:
        return n_classes

    def _check_outputs(self, n_outputs: int, length: int) -> None:
        if n_outputs < 2:
            raise InvalidInput(
                f"params has length {length}: softmax needs (n_features + intercept) * C, C >= 2"
            )

    def _scores(self, params: FloatArray, X: Matrix) -> FloatArray:
        d = int(X.shape[1])
        P = params.reshape(self._rows_in(X), -1)
        Z = np.asarray(X @ P[:d], dtype=np.float64)
        if self.fit_intercept:
            Z = Z + P[d]
        return Z

    def loss(self, params: Any, X: Any, y: Any, reg_share: float = 1.0) -> float:
        w, matrix = self._check_inputs(params, X)
        Z = self._scores(w, matrix)
        labels = _check_labels(y, matrix.shape[0], Z.shape[1])
        share = _check_share(reg_share)
        data = logsumexp(Z, axis=1) - Z[np.arange(Z.shape[0]), labels]
        return float(data.sum()) + self._penalty(w, matrix.shape[1], share)

    def gradient(self, params: Any, X: Any, y: Any, reg_share: float = 1.0) -> FloatArray:
        w, matrix = self._check_inputs(params, X)
        Z = self._scores(w, matrix)
        labels = _check_labels(y, matrix.shape[0], Z.shape[1])
        share = _check_share(reg_share)
        residual = np.exp(Z - logsumexp(Z, axis=1, keepdims=True))
        residual[np.arange(Z.shape[0]), labels] -= 1.0
        g_w = np.asarray(matrix.T @ residual, dtype=np.float64)
        if self.fit_intercept:
            g_w = np.vstack([g_w, residual.sum(axis=0)])
        grad = np.ascontiguousarray(g_w).reshape(-1)
        return self._add_penalty_gradient(grad, w, matrix.shape[1], share)

    def predict(self, params: Any, X: Any) -> IntArray:
        w, matrix = self._check_inputs(params, X)
        labels: IntArray = np.argmax(self._scores(w, matrix), axis=1).astype(np.int64)
        return labels

    def predict_proba(self, params: Any, X: Any) -> FloatArray:
        """Row-wise softmax of the scores, shape (n, C)."""
        w, matrix = self._check_inputs(params, X)
        Z = self._scores(w, matrix)
        return np.asarray(np.exp(Z - logsumexp(Z, axis=1, keepdims=True)), dtype=np.float64)

    def accuracy(self, params: Any, X: Any, y: Any) -> float:
        w, matrix = self._check_inputs(params, X)
        predicted = self.predict(w, matrix)
        labels = _check_labels(y, predicted.shape[0], len(w) // self._rows_in(matrix))
        return float(np.mean(predicted == labels)) if labels.size else math.nan


@dataclass(frozen=True)
class LeastSquares(_LinearModel):
    """Linear least squares, real targets y.

    Loss (summed over rows, residual r = X w + b - y)::

        L = (1 / 2) sum_i r_i^2 + r_share (lam / 2) ||w||^2

    Gradient: ``dL/dw = X^T r + r_share lam w``, ``dL/db = sum_i r_i``. Shapes: X (n, d),
    y (n,), params (d + 1,). ``predict`` returns X w + b; ``accuracy`` is the coefficient of
    determination R^2 = 1 - sum r^2 / sum (y - mean y)^2 (1 is a perfect fit; when y is
    constant it is 1 for a perfect fit and 0 otherwise), so one "accuracy" column serves all
    tasks.

    >>> import numpy as np
    >>> m = LeastSquares()
    >>> m.loss(np.array([2.0, 1.0]), np.array([[1.0], [2.0]]), np.array([3.0, 5.0]))
    0.0
    """

    name: ClassVar[str] = "least_squares"
    task: ClassVar[Task] = "regression"

    def _check_classes(self, n_classes: int) -> None:
        if n_classes != 1:
            raise ValueError(f"n_classes must be 1 for least squares (one output), got {n_classes}")

    def loss(self, params: Any, X: Any, y: Any, reg_share: float = 1.0) -> float:
        w, matrix = self._check_inputs(params, X)
        targets = _check_targets(y, matrix.shape[0])
        share = _check_share(reg_share)
        residual = self._scores_1d(w, matrix) - targets
        return 0.5 * float(residual @ residual) + self._penalty(w, matrix.shape[1], share)

    def gradient(self, params: Any, X: Any, y: Any, reg_share: float = 1.0) -> FloatArray:
        w, matrix = self._check_inputs(params, X)
        targets = _check_targets(y, matrix.shape[0])
        share = _check_share(reg_share)
        residual = self._scores_1d(w, matrix) - targets
        grad = self._gradient_1d(residual, matrix)
        return self._add_penalty_gradient(grad, w, matrix.shape[1], share)

    def predict(self, params: Any, X: Any) -> FloatArray:
        w, matrix = self._check_inputs(params, X)
        return self._scores_1d(w, matrix)

    def accuracy(self, params: Any, X: Any, y: Any) -> float:
        predicted = self.predict(params, X)
        targets = _check_targets(y, predicted.shape[0])
        if targets.size == 0:
            return math.nan
        residual = float(np.sum((predicted - targets) ** 2))
        spread = float(np.sum((targets - targets.mean()) ** 2))
        if spread == 0.0:
            return 1.0 if residual == 0.0 else 0.0
        return 1.0 - residual / spread


# --------------------------------------------------------------------------- registry

_MODELS: dict[str, Callable[..., Model]] = {
    LogisticRegression.name: LogisticRegression,
    SoftmaxRegression.name: SoftmaxRegression,
    LeastSquares.name: LeastSquares,
}
#: Model names accepted by :func:`get_model`.
MODEL_NAMES: tuple[str, ...] = tuple(_MODELS)
#: The model that fits each data-set task.
MODEL_FOR_TASK: dict[Task, str] = {
    "binary": LogisticRegression.name,
    "multiclass": SoftmaxRegression.name,
    "regression": LeastSquares.name,
}


def get_model(name: str, *, l2: float = 0.0, fit_intercept: bool = True) -> Model:
    """The model called ``name``: "logistic", "softmax", "least_squares", or a PyTorch model
    reference ``torch:MODULE:FUNCTION`` (see :mod:`edgecode.learning.torch_model`; torch is
    imported only then, and a bad reference raises ``edgecode.errors.BadModel``).

    >>> get_model("softmax", l2=0.1)
    SoftmaxRegression(l2=0.1, fit_intercept=True)
    """
    from edgecode.learning.references import TORCH_PREFIX, torch_adapter

    if name.startswith(TORCH_PREFIX):
        if not fit_intercept:
            raise ValueError("fit_intercept must be True for a torch model: it owns its biases")
        model: Model = torch_adapter().TorchModel(name, l2=l2)
        return model
    try:
        factory = _MODELS[name]
    except KeyError:
        raise ValueError(
            f"name must be one of {list(MODEL_NAMES)} or {TORCH_PREFIX}MODULE:FUNCTION, got {name!r}"
        ) from None
    return factory(l2=float(l2), fit_intercept=bool(fit_intercept))


def smoothness(model: Model, X: Any) -> float:
    """An upper bound L on the Lipschitz constant of the MEAN-loss gradient on X.

    With A = [X, 1] (the intercept column when the model fits one), ``lambda_max(A^T A) / n``
    times the curvature bound of the loss in the score: 1/4 for logistic, 1/2 for softmax
    (Boehning's bound), 1 for least squares; plus ``lam / n`` from the L2 term (the penalty's
    share of the mean objective is ``lam / (2 n) ||w||^2``). Gradient descent on the mean loss
    with ``lr <= 1 / L`` decreases the loss monotonically; Nesterov converges for ``lr <= 1/L``.

    ``lambda_max`` is exact (dense eigvalsh) when d + 1 <= 2000 and otherwise computed by
    ARPACK from a fixed start vector, so the result is deterministic.

    >>> import numpy as np
    >>> smoothness(get_model("least_squares", fit_intercept=False), np.eye(4) * 2.0)
    1.0
    """
    matrix = check_matrix(X)
    n = int(matrix.shape[0])
    if n == 0:
        raise InvalidInput("X must have at least one row, got 0")
    curvature = {"binary": 0.25, "multiclass": 0.5, "regression": 1.0}[model.task]
    top = _gram_top_eigenvalue(matrix, model.fit_intercept)
    return float(curvature * top / n + model.l2 / n)


def _gram_top_eigenvalue(X: Matrix, intercept: bool) -> float:
    n, d = X.shape
    ones = np.ones(n)
    if d + int(intercept) <= 2000:
        product: Any = X.T @ X
        gram = product.toarray() if sp.issparse(product) else np.asarray(product)
        if intercept:
            col = np.asarray(X.T @ ones).reshape(-1)
            gram = np.block([[gram, col[:, None]], [col[None, :], np.array([[float(n)]])]])
        return float(np.linalg.eigvalsh(gram)[-1])
    from scipy.sparse.linalg import LinearOperator, eigsh

    def matvec(v: FloatArray) -> FloatArray:
        v = np.asarray(v).reshape(-1)
        u = np.asarray(X @ v[:d]).reshape(-1)
        if intercept:
            u = u + v[d]
        out = np.asarray(X.T @ u).reshape(-1)
        return np.concatenate([out, [u.sum()]]) if intercept else out

    size = d + int(intercept)
    operator = LinearOperator((size, size), matvec=matvec, dtype=np.float64)
    top = eigsh(operator, k=1, which="LA", v0=np.ones(size), return_eigenvectors=False)
    return float(top[0])
