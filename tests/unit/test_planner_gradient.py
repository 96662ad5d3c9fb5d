"""The load gradient of the expected round time (planning._gradient), against finite differences
and against the value the timing module computes on the same quadrature."""

from __future__ import annotations

import numpy as np
import pytest

from edgecode.planning._gradient import _expected_time_and_gradient
from edgecode.planning.timing import _expected_time, _model_from_arrays, _quick_expected_time


def _arrays(rng: np.random.Generator, mixed: bool) -> dict[str, np.ndarray]:
    """Two edges (3 and 2 workers, padded to 3), random loads, shifts, rates and links."""
    mask = np.array([[True, True, True], [True, True, False]])
    return {
        "fractions": np.where(mask, rng.uniform(0.2, 0.7, (2, 3)), 0.0),
        "shifts": rng.uniform(0.05, 0.5, (2, 3)),
        "rates": rng.uniform(1.0, 20.0, (2, 3)),
        "worker_links": rng.uniform(0.0, 0.01, (2, 3)),
        "straggle": np.full((2, 3), 0.2 if mixed else 0.0),
        "slow": np.full((2, 3), 4.0 if mixed else 1.0),
        "mask": mask,
        "need": np.array([2, 1]),
        "links": rng.uniform(0.0, 0.02, 2),
    }


def _model(a: dict[str, np.ndarray], fractions: np.ndarray):  # type: ignore[no-untyped-def]
    return _model_from_arrays(
        fractions,
        a["shifts"],
        a["rates"],
        a["worker_links"],
        a["straggle"],
        a["slow"],
        a["mask"],
        a["need"],
        a["links"],
        1,
    )


def _gradient(a: dict[str, np.ndarray], quick: bool) -> tuple[float, np.ndarray]:
    f = a["fractions"]
    rates = np.where(a["mask"], a["rates"], 1.0)
    return _expected_time_and_gradient(
        _model(a, f), f, rates, a["worker_links"], a["slow"], 1e-12, 64 if quick else None, quick
    )


@pytest.mark.parametrize("mixed", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_matches_central_differences(seed: int, mixed: bool) -> None:
    a = _arrays(np.random.default_rng(seed), mixed)
    value, gradient = _gradient(a, quick=False)
    assert abs(value / _expected_time(_model(a, a["fractions"]), 1e-12) - 1) < 1e-9
    h = 1e-5
    errs = []
    for i, j in zip(*np.nonzero(a["mask"]), strict=True):
        up, down = a["fractions"].copy(), a["fractions"].copy()
        up[i, j] += h
        down[i, j] -= h
        fd = (_expected_time(_model(a, up), 1e-13) - _expected_time(_model(a, down), 1e-13)) / (
            2 * h
        )
        errs.append(abs(gradient[i, j] - fd) / max(abs(fd), 1e-3))
    errs_a = np.array(errs)
    assert np.all(np.isfinite(errs_a)) and np.all(errs_a <= 1e-5), errs_a
    assert np.all(gradient[~a["mask"]] == 0.0)


@pytest.mark.parametrize("mixed", [False, True])
@pytest.mark.parametrize("seed", [3, 4])
def test_quick_value_is_the_quick_expected_time(seed: int, mixed: bool) -> None:
    """The fixed-rule path computes P(T > t) with the gradient: same value as timing's."""
    a = _arrays(np.random.default_rng(seed), mixed)
    value, quick_gradient = _gradient(a, quick=True)
    reference = _quick_expected_time(_model(a, a["fractions"]), 64)
    assert np.isfinite(value) and abs(value / reference - 1) < 1e-12
    exact_gradient = _gradient(a, quick=False)[1]
    errs = np.abs(quick_gradient - exact_gradient) / np.abs(exact_gradient).max()
    assert np.all(np.isfinite(errs)) and np.all(errs <= 1e-4), errs
