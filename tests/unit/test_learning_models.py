"""Models: gradients against finite differences, exact additivity over row partitions, sparse ==
dense, numerical stability, and validation at the public edge."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecode.errors import InvalidInput
from edgecode.learning.models import (
    LeastSquares,
    LogisticRegression,
    Model,
    SoftmaxRegression,
    get_model,
    smoothness,
)

N_ROWS, N_FEATURES = 40, 5
N_CLASSES = {"logistic": 2, "softmax": 4, "least_squares": 1}


def make_problem(
    name: str, seed: int = 0, n: int = N_ROWS, d: int = N_FEATURES, density: float | None = None
) -> tuple[Any, np.ndarray]:
    """X (dense, or sparse CSR when density is given) and labels fitting model ``name``."""
    rng = np.random.default_rng(seed)
    if density is None:
        X: Any = rng.standard_normal((n, d))
    else:
        X = sp.random_array(
            (n, d), density=density, format="csr", rng=rng, data_sampler=rng.standard_normal
        )
    if name == "least_squares":
        y = rng.standard_normal(n)
    else:
        y = rng.integers(0, N_CLASSES[name], n)
    return X, y


def make_params(model: Model, d: int, n_classes: int, seed: int = 1) -> np.ndarray:
    return model.init_params(np.random.default_rng(seed), d, n_classes, scale=0.5)


MODEL_CASES = [
    pytest.param(name, l2, intercept, id=f"{name}-l2={l2}-intercept={intercept}")
    for name in ("logistic", "softmax", "least_squares")
    for l2 in (0.0, 0.7)
    for intercept in (True, False)
]


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.mark.parametrize(("name", "l2", "intercept"), MODEL_CASES)
def test_gradient_matches_central_finite_differences(name: str, l2: float, intercept: bool) -> None:
    model = get_model(name, l2=l2, fit_intercept=intercept)
    X, y = make_problem(name)
    params = make_params(model, N_FEATURES, N_CLASSES[name])
    h = 1e-6
    numeric = np.empty_like(params)
    for i in range(params.size):
        step = np.zeros_like(params)
        step[i] = h
        numeric[i] = (model.loss(params + step, X, y) - model.loss(params - step, X, y)) / (2 * h)
    assert relative_error(model.gradient(params, X, y), numeric) < 1e-7


@pytest.mark.parametrize(("name", "l2", "intercept"), MODEL_CASES)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_partial_gradients_of_any_partition_add_up_to_the_full_gradient(
    name: str, l2: float, intercept: bool, sparse: bool, data: st.DataObject
) -> None:
    model = get_model(name, l2=l2, fit_intercept=intercept)
    X, y = make_problem(name, density=0.4 if sparse else None)
    params = make_params(model, N_FEATURES, N_CLASSES[name])
    cuts = data.draw(
        st.lists(st.integers(1, N_ROWS - 1), unique=True, max_size=N_ROWS - 1).map(sorted)
    )
    bounds = list(zip([0, *cuts], [*cuts, N_ROWS], strict=True))
    share = 1.0 / len(bounds)
    partial_grads = [model.gradient(params, X[a:b], y[a:b], reg_share=share) for a, b in bounds]
    partial_losses = [model.loss(params, X[a:b], y[a:b], reg_share=share) for a, b in bounds]
    full = model.gradient(params, X, y)
    assert relative_error(np.sum(partial_grads, axis=0), full) < 1e-12
    assert math.isclose(sum(partial_losses), model.loss(params, X, y), rel_tol=1e-12)


@pytest.mark.parametrize(("name", "l2", "intercept"), MODEL_CASES)
def test_sparse_and_dense_inputs_give_the_same_results(
    name: str, l2: float, intercept: bool
) -> None:
    model = get_model(name, l2=l2, fit_intercept=intercept)
    X_sparse, y = make_problem(name, density=0.3)
    X_dense = X_sparse.toarray()
    params = make_params(model, N_FEATURES, N_CLASSES[name])
    grad_sparse = model.gradient(params, X_sparse, y)
    assert isinstance(grad_sparse, np.ndarray)
    assert grad_sparse.dtype == np.float64 and grad_sparse.shape == params.shape
    assert relative_error(grad_sparse, model.gradient(params, X_dense, y)) < 1e-13
    assert math.isclose(
        model.loss(params, X_sparse, y), model.loss(params, X_dense, y), rel_tol=1e-13
    )
    np.testing.assert_allclose(
        model.predict(params, X_sparse), model.predict(params, X_dense), rtol=1e-13
    )
    # csr_matrix (the older scipy type) and csc input behave the same as csr_array
    for other in (sp.csr_matrix(X_sparse), sp.csc_array(X_sparse)):
        assert relative_error(model.gradient(params, other, y), grad_sparse) < 1e-13


def test_losses_at_zero_parameters_have_closed_forms() -> None:
    X, y = make_problem("softmax")
    assert math.isclose(
        get_model("logistic").loss(np.zeros(N_FEATURES + 1), X, y % 2), N_ROWS * math.log(2)
    )
    assert math.isclose(
        get_model("softmax").loss(np.zeros((N_FEATURES + 1) * 4), X, y), N_ROWS * math.log(4)
    )
    y_real = np.arange(N_ROWS, dtype=float)
    assert get_model("least_squares").loss(np.zeros(N_FEATURES + 1), X, y_real) == 0.5 * float(
        y_real @ y_real
    )


def test_logistic_matches_direct_formula_where_it_is_representable() -> None:
    X, y = make_problem("logistic")
    model = LogisticRegression(l2=0.3)
    params = make_params(model, N_FEATURES, 2)
    z = X @ params[:-1] + params[-1]
    p = 1.0 / (1.0 + np.exp(-z))
    direct = -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)) + 0.15 * params[:-1] @ params[:-1]
    assert math.isclose(model.loss(params, X, y), direct, rel_tol=1e-12)
    np.testing.assert_allclose(model.predict_proba(params, X), p, rtol=1e-14)


def test_softmax_matches_direct_formula_and_layout() -> None:
    X, y = make_problem("softmax")
    model = SoftmaxRegression()
    params = make_params(model, N_FEATURES, 4)
    P = params.reshape(N_FEATURES + 1, 4)
    Z = X @ P[:-1] + P[-1]
    S = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
    direct = -np.sum(np.log(S[np.arange(N_ROWS), y]))
    assert math.isclose(model.loss(params, X, y), direct, rel_tol=1e-12)
    Y = np.eye(4)[y]
    expected = np.vstack([X.T @ (S - Y), (S - Y).sum(axis=0)]).ravel()
    assert relative_error(model.gradient(params, X, y), expected) < 1e-13
    np.testing.assert_allclose(model.predict_proba(params, X), S, rtol=1e-12)
    assert np.array_equal(model.predict(params, X), Z.argmax(axis=1))


@pytest.mark.parametrize("name", ["logistic", "softmax"])
def test_huge_scores_stay_finite_and_exact(name: str) -> None:
    """log1p(exp(-|z|)) and log-sum-exp: no overflow warnings (they are errors here)."""
    model = get_model(name)
    X, y = make_problem(name)
    params = make_params(model, N_FEATURES, N_CLASSES[name]) * 1e4
    loss = model.loss(params, X, y)
    grad = model.gradient(params, X, y)
    assert math.isfinite(loss) and np.all(np.isfinite(grad))
    # Far from the boundary the loss is the (positive) margin of the wrong rows.
    if name == "logistic":
        z = X @ params[:-1] + params[-1]
        assert math.isclose(loss, float(np.sum(np.where(y == 1, -z, z).clip(min=0))), rel_tol=1e-9)


def test_predict_and_accuracy() -> None:
    X = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    logistic = get_model("logistic")
    params = np.array([1.0, 0.0])
    assert logistic.predict(params, X).tolist() == [0, 0, 1, 1]
    assert logistic.accuracy(params, X, np.array([0, 0, 1, 0])) == 0.75

    softmax = get_model("softmax")
    params3 = np.array([[-1.0, 0.0, 1.0], [0.0, 0.5, 0.0]]).ravel()  # W row, then b row
    assert softmax.predict(params3, X).tolist() == [0, 0, 2, 2]
    assert softmax.accuracy(params3, X, np.array([0, 1, 2, 2])) == 0.75

    lsq = get_model("least_squares")
    y = np.array([-3.0, -1.0, 3.0, 5.0])
    assert lsq.accuracy(np.array([2.0, 1.0]), X, y) == 1.0  # R^2 of an exact fit
    assert math.isclose(lsq.accuracy(np.array([0.0, y.mean()]), X, y), 0.0, abs_tol=1e-15)
    assert lsq.accuracy(np.array([0.0, 2.0]), X, np.full(4, 2.0)) == 1.0


def test_regularisation_shares_split_the_penalty() -> None:
    model = get_model("least_squares", l2=2.0)
    X, y = make_problem("least_squares")
    params = make_params(model, N_FEATURES, 1)
    plain = get_model("least_squares")
    w = params[:-1]
    assert math.isclose(model.loss(params, X, y), plain.loss(params, X, y) + w @ w, rel_tol=1e-14)
    assert model.loss(params, X, y, reg_share=0.0) == plain.loss(params, X, y)
    expected = plain.gradient(params, X, y)
    expected[:-1] += 0.5 * 2.0 * w  # share 1/2: half of lam * w, intercept unpenalised
    assert relative_error(model.gradient(params, X, y, reg_share=0.5), expected) < 1e-15


@pytest.mark.parametrize("name", ["logistic", "softmax", "least_squares"])
def test_registry_init_and_protocol(name: str) -> None:
    model = get_model(name)
    assert isinstance(model, Model) and model.name == name
    classes = N_CLASSES[name]
    size = model.n_params(7, classes)
    assert size == 8 * (classes if name == "softmax" else 1)
    a = model.init_params(np.random.default_rng(5), 7, classes)
    b = model.init_params(np.random.default_rng(5), 7, classes)
    assert a.shape == (size,) and a.dtype == np.float64 and np.array_equal(a, b)
    assert not np.any(model.init_params(np.random.default_rng(5), 7, classes, scale=0.0))
    assert get_model(name, fit_intercept=False).n_params(7, classes) == size - size // 8


def test_smoothness_is_the_top_curvature() -> None:
    X, _ = make_problem("least_squares")
    A = np.hstack([X, np.ones((N_ROWS, 1))])
    top = np.linalg.eigvalsh(A.T @ A)[-1] / N_ROWS
    assert math.isclose(smoothness(LeastSquares(), X), top, rel_tol=1e-12)
    assert math.isclose(smoothness(LogisticRegression(), X), top / 4, rel_tol=1e-12)
    assert math.isclose(smoothness(SoftmaxRegression(l2=4.0), X), top / 2 + 4.0 / N_ROWS)


def test_smoothness_of_wide_sparse_data_uses_arpack_and_agrees() -> None:
    rng = np.random.default_rng(3)
    X = sp.random_array((200, 2100), density=0.01, format="csr", rng=rng)
    gram = (X.T @ X).toarray()
    col = np.asarray(X.sum(axis=0)).ravel()
    full = np.block([[gram, col[:, None]], [col[None, :], np.array([[200.0]])]])
    top = np.linalg.eigvalsh(full)[-1] / 200
    assert math.isclose(smoothness(LeastSquares(), X), top, rel_tol=1e-8)


# ------------------------------------------------------------------------ validation


def test_unknown_model_and_bad_hyper_parameters() -> None:
    with pytest.raises(ValueError, match="name must be one of"):
        get_model("svm")
    with pytest.raises(ValueError, match="l2"):
        get_model("logistic", l2=-1.0)
    with pytest.raises(ValueError, match="n_classes must be 2"):
        get_model("logistic").n_params(3, 3)
    with pytest.raises(ValueError, match="n_classes must be >= 2"):
        get_model("softmax").n_params(3, 1)
    with pytest.raises(ValueError, match="n_features"):
        get_model("least_squares").n_params(0, 1)
    with pytest.raises(ValueError, match="scale"):
        get_model("least_squares").init_params(np.random.default_rng(0), 3, 1, scale=-1.0)


@pytest.mark.parametrize(
    ("name", "params", "X", "y", "match"),
    [
        ("logistic", np.zeros(4), np.ones((3, 2)), np.zeros(3), "params must have length"),
        ("logistic", np.zeros((3, 1)), np.ones((3, 2)), np.zeros(3), "params must be 1-D"),
        ("logistic", [0.0, np.nan, 0.0], np.ones((3, 2)), np.zeros(3), "finite"),
        ("logistic", np.zeros(3), np.ones(3), np.zeros(3), "X must be 2-D"),
        ("logistic", np.zeros(3), np.ones((3, 2)), np.zeros(4), r"y must have shape \(3,\)"),
        ("logistic", np.zeros(3), np.ones((3, 2)), np.array([0, 1, 2]), r"labels in \[0, 2\)"),
        ("logistic", np.zeros(3), np.ones((3, 2)), np.array([0, 0.5, 1]), "integer labels"),
        ("softmax", np.zeros(3), np.ones((3, 2)), np.zeros(3), "C >= 2"),
        ("softmax", np.zeros(9), np.ones((3, 2)), np.array([0, 3, 1]), r"labels in \[0, 3\)"),
        ("least_squares", np.zeros(3), np.ones((3, 2)), [1.0, np.inf, 0.0], "y must be finite"),
        ("least_squares", np.zeros(3), [["a", "b"]] * 3, np.zeros(3), "X must be a numeric"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_the_argument(
    name: str, params: Any, X: Any, y: Any, match: str
) -> None:
    model = get_model(name)
    with pytest.raises(InvalidInput, match=match):
        model.gradient(params, X, y)
    with pytest.raises(ValueError, match=match):
        model.loss(params, X, y)


def test_bad_reg_share() -> None:
    with pytest.raises(ValueError, match="reg_share"):
        get_model("logistic", l2=1.0).gradient(np.zeros(2), np.ones((2, 1)), [0, 1], reg_share=-1)


# ------------------------------------------------------------------------ coded messages


def stacked_coded_gradient(
    model: Any, params: np.ndarray, parts: list[tuple[float, Any, Any]], share: float
) -> np.ndarray:
    """``sum_j c_j g_j`` as ONE weighted pass over the stacked rows: every model here has
    gradient ``[X^T R, 1^T R]`` with R the residual of its scores (from predict/predict_proba),
    so the coded message is ``[X^T (w * R), w^T R] + (share * sum_j c_j) lam W``."""
    X = np.vstack([np.asarray(sp.csr_array(Xj).toarray()) for _, Xj, _ in parts])
    y = np.concatenate([yj for _, _, yj in parts])
    w = np.concatenate([np.full(np.shape(Xj)[0], c) for c, Xj, _ in parts])
    if model.name == "softmax":
        R = model.predict_proba(params, X)
        R[np.arange(len(y)), y] -= 1.0
    elif model.name == "logistic":
        R = (model.predict_proba(params, X) - y)[:, None]
    else:
        R = (model.predict(params, X) - y)[:, None]
    weighted = w[:, None] * R
    rows = [X.T @ weighted] + ([weighted.sum(axis=0)[None, :]] if model.fit_intercept else [])
    grad = np.vstack(rows).reshape(-1)
    d_weights = X.shape[1] * R.shape[1]
    grad[:d_weights] += share * sum(c for c, _, _ in parts) * model.l2 * params[:d_weights]
    return grad


@pytest.mark.parametrize(("name", "l2", "intercept"), MODEL_CASES)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_coded_gradient_is_the_weighted_sum_of_part_gradients(
    name: str, l2: float, intercept: bool, sparse: bool
) -> None:
    model = get_model(name, l2=l2, fit_intercept=intercept)
    X, y = make_problem(name, density=0.4 if sparse else None)
    params = make_params(model, N_FEATURES, N_CLASSES[name])
    bounds, coefficients = [(0, 9), (9, 9), (9, 31), (31, 40)], [1.5, 4.0, -0.5, 0.0]
    parts = [(c, X[a:b], y[a:b]) for c, (a, b) in zip(coefficients, bounds, strict=True)]
    coded = model.coded_gradient(params, parts, reg_share=0.25)
    assert coded.dtype == np.float64 and coded.shape == params.shape
    expected = stacked_coded_gradient(model, params, parts, 0.25)
    assert relative_error(coded, expected) < 1e-12
    # the loop the worker used to run gives the same message
    loop = sum(c * model.gradient(params, Xj, yj, reg_share=0.25) for c, Xj, yj in parts)
    assert relative_error(coded, loop) < 1e-13


def test_coded_gradient_validates_its_parts() -> None:
    model = get_model("logistic")
    X, y = make_problem("logistic")
    params = make_params(model, N_FEATURES, 2)
    with pytest.raises(InvalidInput, match="at least one"):
        model.coded_gradient(params, [])
    with pytest.raises(InvalidInput, match="coefficients must be finite"):
        model.coded_gradient(params, [(1.0, X, y), (math.inf, X, y)])
    with pytest.raises(InvalidInput, match=r"sequence of \(coefficient, X, y\)"):
        model.coded_gradient(params, [(1.0, X)])
    with pytest.raises(InvalidInput, match=r"sequence of \(coefficient, X, y\)"):
        model.coded_gradient(params, [("one", X, y)])
