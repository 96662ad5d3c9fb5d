"""learning.stacked: a worker's coded gradient as one product over its stacked partitions
equals the per-part sum of models.coded_gradient (to rounding), for every linear model, dense
and sparse, with and without intercept and L2; bad parts are refused at preparation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from edgecode.errors import InvalidInput
from edgecode.learning.models import LogisticRegression, get_model
from edgecode.learning.stacked import prepare_coded

#: (model name, classes)
MODELS = [("logistic", 2), ("softmax", 3), ("least_squares", 1)]
#: relative to sum_j |c_j| * max |g_j| (the size of the terms summed): rounding only
RTOL = 1e-12


def _parts(
    rng: np.random.Generator, name: str, classes: int, count: int, sparse: bool
) -> list[tuple[float, Any, Any]]:
    parts = []
    for j in range(count):
        rows = int(rng.integers(1, 9))
        X = rng.normal(size=(rows, 5)) * (rng.random((rows, 5)) < (0.4 if sparse else 1.0))
        y = rng.normal(size=rows) if name == "least_squares" else rng.integers(0, classes, rows)
        c = 0.0 if j == 2 else float(rng.normal() * 3)  # a zero coefficient among them
        parts.append((c, sp.csr_matrix(X) if sparse else X, y))
    return parts


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize(("name", "classes"), MODELS)
def test_the_stacked_gradient_is_the_sum_of_the_parts(
    name: str, classes: int, l2: float, intercept: bool, sparse: bool
) -> None:
    model = get_model(name, l2=l2, fit_intercept=intercept)
    n_params = model.n_params(5, classes)
    rng = np.random.default_rng([len(name), classes, int(10 * l2), intercept, sparse])
    for count in (1, 2, 4):
        parts = _parts(rng, name, classes, count, sparse)
        coded = prepare_coded(model, parts, n_params)
        assert coded.offsets[-1] == sum(X.shape[0] for _, X, _ in parts)
        for share in (1.0, 1 / 16, 0.0):
            params = rng.normal(size=n_params)
            got = coded.gradient(params, share)
            want = model.coded_gradient(params, parts, share)
            scale = sum(
                abs(c) * np.max(np.abs(model.gradient(params, X, y, share))) for c, X, y in parts
            )
            error = np.abs(got - want)
            assert got.shape == want.shape == (n_params,)
            assert np.all(np.isfinite(got)) and np.all(error <= RTOL * scale + 1e-300), (
                count,
                share,
                error.max(),
                scale,
            )


def test_each_part_keeps_its_own_coefficient() -> None:
    """Swapping two parts' coefficients changes the result (a stacking that mixed up which
    rows carry which c_j, or used one c for all, would not)."""
    model = get_model("least_squares")
    rng = np.random.default_rng(5)
    parts = _parts(rng, "least_squares", 1, 2, False)
    swapped = [(parts[1][0], parts[0][1], parts[0][2]), (parts[0][0], parts[1][1], parts[1][2])]
    params = rng.normal(size=6)
    a = prepare_coded(model, parts, 6).gradient(params)
    b = prepare_coded(model, swapped, 6).gradient(params)
    assert np.allclose(a, model.coded_gradient(params, parts), rtol=0, atol=1e-10)
    assert not np.allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "parts", "n_params", "message"),
    [
        ("logistic", [(1.0, np.ones((2, 3)), np.array([0, 2]))], 4, "labels in [0, 2)"),
        ("softmax", [(1.0, np.ones((2, 3)), np.array([0, 3]))], 12, "labels in [0, 3)"),
        ("logistic", [(1.0, np.ones((2, 3)), np.array([0, 1, 1]))], 4, "shape (2,)"),
        (  # the totals agree (4 rows, 4 labels), the parts do not
            "logistic",
            [(1.0, np.ones((2, 3)), np.array([0, 1, 1])), (1.0, np.ones((2, 3)), np.array([0]))],
            4,
            "parts[0]: y must have shape (2,)",
        ),
        (
            "logistic",
            [(1.0, np.ones((2, 3)), np.array([0, 1])), (1.0, np.ones((1, 2)), [1])],
            4,
            "same columns",
        ),
        ("logistic", [(1.0, np.ones((2, 3)), np.array([0, 1]))], 5, "multiple of 4"),
        ("least_squares", [(1.0, np.ones((2, 3)), np.array([0.5, np.nan]))], 4, "finite"),
        ("least_squares", [(np.inf, np.ones((2, 3)), np.array([0.5, 1.0]))], 4, "finite"),
        ("least_squares", [], 4, "at least one"),
    ],
)
def test_bad_parts_are_refused_at_preparation(
    name: str, parts: list[Any], n_params: int, message: str
) -> None:
    with pytest.raises(
        InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        prepare_coded(get_model(name), parts, n_params)


def test_bad_params_are_refused_every_round() -> None:
    coded = prepare_coded(get_model("logistic"), [(1.0, np.ones((2, 3)), np.array([0, 1]))], 4)
    with pytest.raises(InvalidInput, match="length 4"):
        coded.gradient(np.zeros(5))
    with pytest.raises(InvalidInput, match="finite"):
        coded.gradient(np.array([0.0, np.nan, 0.0, 0.0]))


def test_a_model_without_the_stacked_form_uses_its_own_coded_gradient() -> None:
    @dataclass(frozen=True)
    class Doubled(LogisticRegression):
        name: ClassVar[str] = "doubled"

        def gradient(self, params: Any, X: Any, y: Any, reg_share: float = 1.0) -> Any:
            return 2.0 * super().gradient(params, X, y, reg_share)

    model = Doubled()
    rng = np.random.default_rng(2)
    parts = _parts(rng, "logistic", 2, 3, False)
    params = rng.normal(size=6)
    got = prepare_coded(model, parts, 6).gradient(params, 0.25)
    assert np.array_equal(got, model.coded_gradient(params, parts, 0.25))
