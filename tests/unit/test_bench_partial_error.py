"""The exact gradient-error table behind ``edgecode bench partial`` (iid vs label-sorted data):
ignore and inverse-probability partial recovery are unbiased, K/|R| rescaling of the two-size
subset designs is not, and label-sorted data makes every estimate worse."""

from __future__ import annotations

import numpy as np
import pytest

from edgecode.bench.partial_error import _errors, gradient_error_rows


@pytest.fixture(scope="module")
def rows() -> dict[tuple[str, str, str, str], dict[str, float]]:
    return {(r["data"], r["params"], r["scheme"], r["scale"]): r for r in gradient_error_rows()}


def test_every_error_is_finite_and_the_recovered_fractions_are_the_designs(
    rows: dict[tuple[str, str, str, str], dict[str, float]],
) -> None:
    values = np.array([[r["bias"], r["rms_error"]] for r in rows.values()])
    assert values.shape == (2 * 2 * 5, 2) and np.all(np.isfinite(values)) and np.all(values >= 0)
    for (_, _, scheme, _), row in rows.items():
        expected = {"ignore": 0.7, "partial alpha=0.9 subset": 0.9}.get(scheme, 0.8)
        assert row["recovered"] == pytest.approx(expected, abs=1e-12)


def test_unbiased_estimates_and_the_biased_rescale(
    rows: dict[tuple[str, str, str, str], dict[str, float]],
) -> None:
    for (data, _, scheme, scale), row in rows.items():
        if scheme == "ignore" or scale == "inverse-probability":
            assert row["bias"] <= 1e-12, (data, scheme, scale)
        else:  # K/|R| on a design mixing one- and two-worker partitions
            assert row["bias"] >= 1e-3, (data, scheme, scale)
    at = "initial"
    for scheme in ("ignore", "partial alpha=0.8 subset"):
        iid = rows[("iid", at, scheme, "rescale")]["rms_error"]
        assert rows[("sorted", at, scheme, "rescale")]["rms_error"] > 1.5 * iid


def test_errors_of_a_hand_sized_case() -> None:
    # two partitions, both on every worker: always recovered, no error at all
    blocks = np.array([[1.0, 2.0], [3.0, -1.0]])
    assert _errors(blocks, [set(range(10))] * 2, "rescale") == (0.0, 0.0, 1.0)
    # ten single-worker partitions, identical gradients: rescaling 7 of them is exact
    same = np.ones((10, 3))
    bias, rms, recovered = _errors(same, [{i} for i in range(10)], "rescale")
    assert bias <= 1e-15 and rms <= 1e-15 and recovered == pytest.approx(0.7)
    # one partition carries everything: ignore's estimate is 10/7 g w.p. 0.7, else 0
    lone = np.zeros((10, 1))
    lone[0, 0] = 1.0
    bias, rms, _ = _errors(lone, [{i} for i in range(10)], "rescale")
    assert bias <= 1e-12
    assert rms == pytest.approx(np.sqrt(0.7 * (10 / 7 - 1) ** 2 + 0.3), rel=1e-12)
