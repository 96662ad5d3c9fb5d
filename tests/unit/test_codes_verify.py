"""The verification report (``edgecode.codes.verify``) in process: counts, exhaustiveness,
failures and NaN handling, checked against numbers computed here."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from edgecode.codes import (
    cyclic_partial,
    cyclic_repetition,
    fractional_repetition,
    hierarchical,
    sparse_mv_code,
    stochastic,
    subset_design,
)
from edgecode.codes._linalg import conditions
from edgecode.codes.flat import GradientCode
from edgecode.codes.verify import (
    Verification,
    _worst,
    default_suite,
    exactness_cases,
    exactness_row,
    verify_flat,
    verify_hierarchical,
    verify_matvec,
    verify_partial,
    verify_stochastic,
)


def test_worst_keeps_nan_and_counts_failures() -> None:
    assert _worst([]) == (0.0, 0)
    assert _worst([1e-12, 3e-12, 2e-12]) == (3e-12, 0)
    worst, failures = _worst([0.0, math.nan, 1.0])
    assert math.isnan(worst) and failures == 1
    assert _worst([1e-3, math.inf]) == (math.inf, 1)


def test_flat_report_matches_a_direct_computation() -> None:
    code = cyclic_repetition(7, 3)
    report = verify_flat(code, np.random.default_rng(0))
    assert report.code == "cyclic" and report.parameters == "n=7 s=3"
    assert report.patterns == math.comb(7, 4) and report.exhaustive
    assert report.failures == 0 and report.ok
    assert 0.0 < report.worst_relative_error <= 1e-13
    every = np.array(list(itertools.combinations(range(7), 4)), dtype=np.intp)
    assert report.worst_condition == pytest.approx(float(conditions(code.B[every]).max()))
    assert report.load == report.load_bound == pytest.approx(4 / 7)


def test_a_code_that_decodes_to_nan_fails_the_report() -> None:
    good = fractional_repetition(4, 1)
    B = good.B.copy()
    B[0, 0] = math.nan
    broken = GradientCode(
        B=B, stragglers=1, holders=good.holders, name="broken", targets=np.ones(4)
    )
    report = verify_flat(broken, np.random.default_rng(0))
    # every alive set holding worker 0 is refused (NotDecodable): 3 of the 4
    assert not report.ok and report.failures == 3
    assert report.worst_relative_error == math.inf and math.isnan(report.worst_condition)


def test_sampled_flat_report() -> None:
    report = verify_flat(cyclic_repetition(30, 15), np.random.default_rng(1))
    assert report.patterns == 2_000 and not report.exhaustive and report.ok
    assert report.worst_relative_error <= 1e-9


def test_hierarchical_report_counts_every_pattern() -> None:
    code = hierarchical([3, 3, 3], 1, 1)
    report = verify_hierarchical(code, np.random.default_rng(0))
    # C(3, 2) edge pairs, C(3, 2)^2 local choices each
    assert report.patterns == 3 * 9 and report.exhaustive and report.ok
    assert report.code == "hierarchical"
    assert report.parameters == f"m=[3, 3, 3] s_e=1 s_w=1 K={code.n_partitions}"
    assert 0.0 < report.worst_relative_error <= 1e-13
    assert report.worst_condition == max(code.condition_numbers().values())
    big = verify_hierarchical(hierarchical([8] * 4, 1, 2), np.random.default_rng(0))
    assert big.patterns == 2_000 and not big.exhaustive and big.ok


def test_partial_reports() -> None:
    for scheme in (subset_design(6, 2, 0.8), cyclic_partial(6, 2, 0.8)):
        report = verify_partial(scheme, np.random.default_rng(0))
        assert report.patterns == math.comb(6, 2) and report.exhaustive and report.ok
        assert report.worst_relative_error <= 1e-13
        assert report.code == f"partial {type(scheme).__name__}"


def test_stochastic_report_is_exactly_unbiased() -> None:
    report = verify_stochastic(stochastic(6, 2, 0.3), np.random.default_rng(0))
    assert report.patterns == 64 and report.exhaustive and report.ok
    assert report.worst_relative_error <= 1e-12


def test_matvec_report() -> None:
    code = sparse_mv_code(8, 5)
    report = verify_matvec(code, np.random.default_rng(0))
    assert report.code == "sparse matvec" and report.parameters == "n=8 k=5"
    assert report.patterns == math.comb(8, 5) and report.exhaustive and report.ok
    assert report.worst_relative_error <= 1e-12
    assert report.worst_condition == code.condition_number()
    assert report.load == code.weight / 5 and report.load_bound == code.lower_bound / 5


def test_exactness_row_and_cases() -> None:
    row = exactness_row(8, 3, np.random.default_rng(0))
    assert (row.n, row.s, row.alive_sets, row.exhaustive) == (8, 3, 56, True)
    assert 1.0 <= row.worst_condition <= 1e3 and row.build_seconds >= 0.0
    assert 0.0 < row.worst_residual <= 1e-13 and 0.0 < row.worst_relative_error <= 1e-13
    assert exactness_cases([3]) == [(3, 1), (3, 2)]
    big = exactness_cases([24])
    assert big == [(24, s) for s in (1, 2, 3, 6, 9, 12, 15, 18, 21, 22, 23)]
    assert exactness_row(24, 12, np.random.default_rng(0)).alive_sets == 2_000


def test_default_suite_covers_every_family() -> None:
    labels = [label for label, _ in default_suite(8)]
    assert "cyclic n=8 s=4" in labels and "fractional n=8 s=1" in labels
    assert not any("n=16" in label for label in labels if label.startswith("cyclic"))
    assert any(label.startswith("hierarchical") for label in labels)
    assert any(label.startswith("stochastic") for label in labels)
    check = dict(default_suite(8))["cyclic n=8 s=2"]
    result = check(np.random.default_rng(0))
    assert isinstance(result, Verification) and result.ok and result.patterns == 28
