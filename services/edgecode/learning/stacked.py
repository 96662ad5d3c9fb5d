"""A worker's coded gradient over all the partitions it holds, as one product per round.

``model.coded_gradient(params, [(c_j, X_j, y_j), ...], r)`` validates every part and computes
each part's gradient, then sums them: for a worker holding four small partitions that is ~20
numpy calls and their checks per partition per round. For the linear models the sum is one
product over the stacked rows::

    sum_j c_j (X_j^T res_j(w) + r lam w)  =  X^T (c o res(w)) + (sum_j c_j) r lam w

with ``X`` the parts' rows stacked in order, ``res(w)`` every row's residual (``sigma(z) - y``
logistic, ``softmax(Z) - Y`` softmax with one-hot ``Y``, ``z - y`` least squares; a matrix
for softmax, whose rows are scaled alike), and ``c`` each row's part coefficient. The value is
the same up to rounding (the order of the sums differs). :func:`prepare_coded` validates the
parts once (a worker does it at placement) and returns a :class:`StackedParts` whose
:meth:`~StackedParts.gradient` is the per-round call; models without the stacked form (torch)
get their own ``coded_gradient`` behind the same call.

Example
-------
>>> import numpy as np
>>> from edgecode.learning.models import get_model
>>> model = get_model("logistic", l2=0.1)
>>> rng = np.random.default_rng(0)
>>> parts = [(c, rng.normal(size=(3, 2)), rng.integers(0, 2, 3)) for c in (2.0, -1.0)]
>>> coded = prepare_coded(model, parts, model.n_params(2, 2))
>>> params = rng.normal(size=3)
>>> bool(np.allclose(coded.gradient(params, 0.5), model.coded_gradient(params, parts, 0.5)))
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.special import expit, logsumexp

from edgecode.errors import InvalidInput
from edgecode.learning.models import (
    FloatArray,
    LeastSquares,
    LogisticRegression,
    Matrix,
    Model,
    SoftmaxRegression,
    _check_labels,
    _check_params,
    _check_share,
    _check_targets,
    check_matrix,
    check_parts,
)

#: The models with the stacked form (exact types: a subclass may change the loss).
STACKED_MODELS = (LogisticRegression, SoftmaxRegression, LeastSquares)


@dataclass(frozen=True)
class StackedParts:
    """Validated parts, stacked (see the module doc). ``offsets[j]:offsets[j + 1]`` are part
    j's rows of ``matrix``; ``model`` None means ``fallback`` computes (a model without the
    stacked form)."""

    model: LogisticRegression | SoftmaxRegression | LeastSquares | None
    matrix: Matrix
    targets: NDArray[Any]
    row_weights: FloatArray
    weight_sum: float
    n_params: int
    offsets: tuple[int, ...]
    fallback: tuple[Model, list[tuple[float, Any, Any]]] | None = None

    def gradient(self, params: Any, reg_share: float = 1.0) -> FloatArray:
        """``sum_j c_j gradient(params, X_j, y_j, reg_share)``, 1-D of length ``n_params``."""
        if self.fallback is not None:
            model, parts = self.fallback
            return model.coded_gradient(params, parts, reg_share)
        m = self.model
        assert m is not None
        w = _check_params(params, self.n_params)
        share = _check_share(reg_share)
        if isinstance(m, SoftmaxRegression):
            Z = m._scores(w, self.matrix)
            R = np.exp(Z - logsumexp(Z, axis=1, keepdims=True))
            R[np.arange(Z.shape[0]), self.targets] -= 1.0
            R *= self.row_weights[:, None]
            g_w = np.asarray(self.matrix.T @ R, dtype=np.float64)
            if m.fit_intercept:
                g_w = np.vstack([g_w, R.sum(axis=0)])
            grad = np.ascontiguousarray(g_w).reshape(-1)
        else:
            z = m._scores_1d(w, self.matrix)
            if isinstance(m, LogisticRegression):
                residual = expit(z) - self.targets
            else:
                residual = z - self.targets
            grad = m._gradient_1d(residual * self.row_weights, self.matrix)
        return m._add_penalty_gradient(grad, w, self.matrix.shape[1], share * self.weight_sum)


def prepare_coded(
    model: Model, parts: Sequence[tuple[float, Any, Any]], n_params: int
) -> StackedParts:
    """The parts ``[(c_j, X_j, y_j), ...]`` validated for ``model`` with ``n_params``
    parameters and stacked; raises :class:`InvalidInput` naming what is wrong (features of
    unequal width, labels the model cannot take, a parameter count that does not fit)."""
    items = check_parts(parts)
    matrices = [check_matrix(X, f"parts[{j}] X") for j, (_, X, _) in enumerate(items)]
    widths = {int(M.shape[1]) for M in matrices}
    if len(widths) != 1:
        raise InvalidInput(f"parts: every X must have the same columns, got {sorted(widths)}")
    rows = [int(M.shape[0]) for M in matrices]
    labels = [np.asarray(y_j) for _, _, y_j in items]
    for j, (y_j, n_j) in enumerate(zip(labels, rows, strict=True)):
        if y_j.shape != (n_j,):
            raise InvalidInput(
                f"parts[{j}]: y must have shape ({n_j},) to match X, got {y_j.shape}"
            )
    offsets = tuple(int(v) for v in np.concatenate([[0], np.cumsum(rows)]))
    if type(model) not in STACKED_MODELS:
        empty = np.empty(0)
        return StackedParts(
            None, empty.reshape(0, 0), empty, empty, 0.0, n_params, offsets, (model, items)
        )
    linear: LogisticRegression | SoftmaxRegression | LeastSquares = model  # type: ignore[assignment]
    width = widths.pop()
    per_output = width + int(linear.fit_intercept)
    if n_params < 1 or n_params % per_output:
        raise InvalidInput(
            f"n_params must be a positive multiple of {per_output} for {width} features, "
            f"got {n_params}"
        )
    linear._check_outputs(n_params // per_output, n_params)
    if any(sp.issparse(M) for M in matrices):
        matrix: Matrix = sp.vstack(matrices, format="csr")
    else:
        matrix = np.vstack(matrices) if len(matrices) > 1 else matrices[0]
    n = offsets[-1]
    y = np.concatenate(labels)
    if isinstance(linear, LeastSquares):
        targets: NDArray[Any] = _check_targets(y, n)
    else:
        classes = 2 if isinstance(linear, LogisticRegression) else n_params // per_output
        targets = _check_labels(y, n, classes)
    coefficients = [c for c, _, _ in items]
    return StackedParts(
        model=linear,
        matrix=matrix,
        targets=targets,
        row_weights=np.repeat(np.asarray(coefficients, dtype=np.float64), rows),
        weight_sum=math.fsum(coefficients),
        n_params=n_params,
        offsets=offsets,
    )
