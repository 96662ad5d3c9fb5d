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
    _worst_condition_of,
    default_suite,
    exactness_cases,
    exactness_row,
    verify_flat,
    verify_hierarchical,
    verify_matvec,
    verify_partial,
    verify_stochastic,
)
from edgecode.errors import NotDecodable


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


# -- the survivors of the mutation run (docs/notes/mutation.md) ---------------------------------


def _same_report(a: Verification, b: Verification) -> bool:
    return a == b and math.isfinite(a.worst_relative_error)


def test_default_widths_are_the_documented_ones() -> None:
    """dim (flat, hierarchical 8; partial, stochastic 4) and the matvec size 240 are the
    defaults: the report equals the one asked for explicitly with the same seed."""
    cases = [
        (verify_flat, cyclic_repetition(5, 2), "dim", 8),
        (verify_hierarchical, hierarchical([3, 3], 1, 1), "dim", 8),
        (verify_partial, cyclic_partial(6, 2, 0.8), "dim", 4),
        (verify_stochastic, stochastic(4, 2, 0.3), "dim", 4),
        (verify_matvec, sparse_mv_code(6, 4), "size", 240),
    ]
    for verify, code, name, value in cases:
        default = verify(code, np.random.default_rng(3))  # type: ignore[operator]
        explicit = verify(code, np.random.default_rng(3), **{name: value})  # type: ignore[operator]
        other = verify(code, np.random.default_rng(3), **{name: value + 1})  # type: ignore[operator]
        assert _same_report(default, explicit), verify
        assert other.worst_relative_error != default.worst_relative_error, verify
    row = exactness_row(6, 2, np.random.default_rng(3))
    explicit_row = exactness_row(6, 2, np.random.default_rng(3), dim=8)
    other_row = exactness_row(6, 2, np.random.default_rng(3), dim=9)
    assert row.worst_relative_error == explicit_row.worst_relative_error
    assert other_row.worst_relative_error != row.worst_relative_error


def test_flat_errors_are_relative_and_refusals_are_counted() -> None:
    code = cyclic_repetition(6, 2)
    exact = code.decode_vector
    refused = (0, 1, 2, 3)

    def doubled(alive: object) -> np.ndarray:
        key = tuple(sorted(alive))  # type: ignore[call-overload]
        if key == refused:
            raise NotDecodable("refused on purpose")
        return 2.0 * exact(alive)  # type: ignore[arg-type]

    code.decode_vector = doubled  # type: ignore[method-assign]
    report = verify_flat(code, np.random.default_rng(0))
    # every other alive set decodes to twice the sum: relative error exactly 1 (up to rounding)
    assert report.patterns == math.comb(6, 4) and report.failures == 1
    assert report.worst_relative_error == math.inf
    code2 = cyclic_repetition(6, 2)
    exact2 = code2.decode_vector
    code2.decode_vector = lambda alive: 2.0 * exact2(alive)  # type: ignore[method-assign]
    errors = verify_flat(code2, np.random.default_rng(0)).worst_relative_error
    assert math.isfinite(errors) and abs(errors - 1.0) <= 1e-12


def test_sampled_patterns_come_from_the_given_rng() -> None:
    """Above the enumeration limit the alive sets are drawn with the caller's rng (two seeds
    give two different worst conditions), 2,000 of them."""
    code = cyclic_repetition(24, 12)
    one = verify_flat(code, np.random.default_rng(1))
    two = verify_flat(code, np.random.default_rng(2))
    assert one.patterns == two.patterns == 2_000
    assert one.worst_condition != two.worst_condition
    row1 = exactness_row(24, 12, np.random.default_rng(1))
    row2 = exactness_row(24, 12, np.random.default_rng(2))
    assert row1.worst_condition != row2.worst_condition


def test_worst_condition_scans_every_alive_set() -> None:
    """The first set and the set just after a 4096-chunk are both read."""
    nearly_singular = np.array([[1.0, 0.0], [1.0, 1e-6]])
    stack = np.concatenate([np.eye(2)[np.newaxis], nearly_singular[np.newaxis]])
    for where in (0, 4096):
        alive_sets = np.zeros((4100, 2), dtype=np.intp)
        alive_sets[:] = (0, 1)
        B = np.vstack([np.eye(2), nearly_singular])  # rows 2, 3 are the bad pair
        alive_sets[where] = (2, 3)
        worst = _worst_condition_of(B, alive_sets)
        expected = float(conditions(stack)[1])
        assert math.isfinite(worst) and worst == pytest.approx(expected, rel=1e-12)
        assert worst > 1e5


def test_exactness_row_reports_the_worst_alive_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """worst_residual and worst_relative_error are maxima over the alive sets of per-set
    values (not a norm over all of them): with every decoding vector doubled, each alive set
    has residual |2 - 1| = 1 and relative error |2 g - g| / |g| = 1."""
    import edgecode.codes.verify as verify

    def doubled_code(n: int, s: int) -> GradientCode:
        code = cyclic_repetition(n, s)
        exact = code.decode_vector
        code.decode_vector = lambda alive: 2.0 * exact(alive)  # type: ignore[method-assign]
        return code

    monkeypatch.setattr(verify, "cyclic_repetition", doubled_code)
    row = exactness_row(7, 3, np.random.default_rng(4))
    values = np.array([row.worst_residual, row.worst_relative_error])
    assert row.alive_sets == 35
    assert np.all(np.isfinite(values)) and np.all(np.abs(values - 1.0) <= 1e-12)
    assert 0.0 <= row.build_seconds <= 60.0


def test_exactness_cases_boundaries() -> None:
    assert exactness_cases([16]) == [(16, s) for s in range(1, 16)]
    assert exactness_cases([17]) == [(17, s) for s in (1, 2, 3, 4, 6, 8, 10, 12, 14, 15, 16)]
    assert exactness_cases([2, 3]) == [(2, 1), (3, 1), (3, 2)]
    assert exactness_cases([1]) == []
    # n - 3 = 37 and n // 8 = 5 differ from every other case at n = 40
    assert exactness_cases([40]) == [
        (40, s) for s in (1, 2, 3, 5, 10, 15, 20, 25, 30, 35, 37, 38, 39)
    ]


def test_hierarchical_pattern_enumeration_limit() -> None:
    """Every pattern up to 5 x SAMPLED_PATTERNS = 10,000 of them, else 2,000 draws."""
    from types import SimpleNamespace

    from edgecode.codes.verify import _hierarchical_patterns

    def fake(m: list[int], s_w: list[int]) -> SimpleNamespace:
        edges = tuple(range(len(m)))
        return SimpleNamespace(
            active_edges=edges,
            s_edge=0,
            active_workers={e: tuple(range(m[e])) for e in edges},
            s_workers=dict(enumerate(s_w)),
        )

    rng = np.random.default_rng(0)
    # C(5, 2)^4 = 10,000: exactly at the limit, every pattern
    at_limit = list(_hierarchical_patterns(fake([5] * 4, [2] * 4), rng))  # type: ignore[arg-type]
    assert len(at_limit) == 10_000 and len(set(map(repr, at_limit))) == 10_000
    # 1,000 patterns: every one
    assert len(list(_hierarchical_patterns(fake([5] * 3, [2] * 3), rng))) == 1_000  # type: ignore[arg-type]
    # 10 * 10 * 10 * 11 = 11,000 > 10,000: sampled
    above = fake([5, 5, 5, 11], [2, 2, 2, 1])
    assert len(list(_hierarchical_patterns(above, rng))) == 2_000  # type: ignore[arg-type]


def test_hierarchical_report_counts_refusals_and_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    code = hierarchical([3, 3, 3], 1, 1)
    exact = code.edge_decode_vector

    def refusing(edge: int, workers: object) -> np.ndarray:
        if edge == 0 and tuple(workers) == (0, 1):  # type: ignore[call-overload]
            raise NotDecodable("refused on purpose")
        return exact(edge, workers)  # type: ignore[arg-type]

    monkeypatch.setattr(code, "edge_decode_vector", refusing)
    report = verify_hierarchical(code, np.random.default_rng(0))
    # edge 0 is alive in 2 of the 3 edge pairs, with 3 local choices of the other edge
    assert report.patterns == 27 and report.failures == 2 * 3
    assert report.worst_relative_error == math.inf and not report.ok
    assert report.load == code.load and report.load_bound == code.load_bound
    doubled = hierarchical([3, 3, 3], 1, 1)
    master = doubled.master_decode_vector
    monkeypatch.setattr(doubled, "master_decode_vector", lambda edges: 2.0 * master(edges))
    twice = verify_hierarchical(doubled, np.random.default_rng(0))
    assert twice.failures == 0 and math.isfinite(twice.worst_relative_error)
    assert abs(twice.worst_relative_error - 1.0) <= 1e-12


class _FakePartial:
    """Worker w sends g_w; decode says the alive workers' partitions (1) and nothing else."""

    def __init__(self, n: int, s: int, min_recovered: int) -> None:
        self.n_workers, self.stragglers, self.n_partitions = n, s, n
        self.alpha, self.min_recovered = 0.5, min_recovered
        self.computation_load, self.lower_bound, self.communication_load = 0.25, 0.125, 3
        self.refuse: set[tuple[int, ...]] = set()
        self.halves: set[tuple[int, ...]] = set()
        self.scale = 1.0
        self.seen: list[tuple[int, ...]] = []

    def encode(self, worker: int, gradients: np.ndarray) -> np.ndarray:
        return np.asarray(gradients[worker : worker + 1])

    def decode(self, stragglers: tuple[int, ...]) -> np.ndarray:
        self.seen.append(tuple(stragglers))
        if tuple(stragglers) in self.refuse:
            raise NotDecodable("refused on purpose")
        c = np.ones(self.n_workers)
        c[list(stragglers)] = 0.0
        if tuple(stragglers) in self.halves:
            c[next(w for w in range(self.n_workers) if w not in stragglers)] = 0.5
        return c

    def decode_messages(self, stragglers: tuple[int, ...]) -> dict[tuple[int, int], float]:
        c = self.decode(stragglers)
        self.seen.pop()
        return {(w, 0): self.scale * float(c[w]) for w in range(self.n_workers) if c[w] != 0.0}


def test_partial_report_counts_wrong_decodings() -> None:
    fake = _FakePartial(6, 2, min_recovered=3)
    fake.refuse = {(0, 1)}
    fake.halves = {(0, 2), (0, 3)}  # three ones, enough, but a 0.5: wrong
    report = verify_partial(fake, np.random.default_rng(0))  # type: ignore[arg-type]
    assert report.patterns == 15 and report.exhaustive
    assert report.failures == 1 + 2 and report.worst_relative_error == math.inf
    assert report.code == "partial _FakePartial"
    assert report.parameters == "n=6 s=2 alpha=0.5 k=6"
    assert report.worst_condition == 1.0
    assert (report.load, report.load_bound) == (0.25, 0.125)
    assert report.note == "vectors/worker=3"
    # too few ones (min_recovered 5 > 4), all entries 0/1: every set is wrong
    strict = _FakePartial(6, 2, min_recovered=5)
    assert verify_partial(strict, np.random.default_rng(0)).failures == 15  # type: ignore[arg-type]
    # the decoded sum twice the true one: relative error 1, finite, no failure
    doubled = _FakePartial(6, 2, min_recovered=4)
    doubled.scale = 2.0
    twice = verify_partial(doubled, np.random.default_rng(0))  # type: ignore[arg-type]
    assert twice.failures == 0
    assert math.isfinite(twice.worst_relative_error)
    assert abs(twice.worst_relative_error - 1.0) <= 1e-12


def test_partial_sampled_sets_come_from_the_given_rng() -> None:
    from edgecode.codes._linalg import subsets

    fake = _FakePartial(30, 4, min_recovered=26)  # C(30, 4) = 27,405 > 20,000: sampled
    report = verify_partial(fake, np.random.default_rng(5))  # type: ignore[arg-type]
    assert report.patterns == 2_000 and not report.exhaustive and report.ok
    rng = np.random.default_rng(5)
    rng.standard_normal((30, 4))
    assert fake.seen == list(subsets(30, 4, rng, samples=2_000))


def test_stochastic_report_fields_and_bias(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecode.codes.stochastic import StochasticCode

    code = stochastic(4, 2, 0.3)
    report = verify_stochastic(code, np.random.default_rng(0))
    assert report.code == "stochastic" and report.parameters == "n=4 d=2 p=0.3"
    assert report.worst_condition == 1.0 and report.load == code.computation_load
    assert report.load_bound == 2 / 4 and report.note == f"weight={code.weight:.4g}"
    probability = StochasticCode.pattern_probability
    monkeypatch.setattr(
        StochasticCode, "pattern_probability", lambda self, alive: 1.5 * probability(self, alive)
    )
    wrong = verify_stochastic(code, np.random.default_rng(0))
    # the expectation is 1.5 x the sum: relative error 0.5
    assert math.isfinite(wrong.worst_relative_error)
    assert abs(wrong.worst_relative_error - 0.5) <= 1e-12 and wrong.failures == 1


def test_matvec_report_kinds_refusals_and_patterns(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgecode.codes.verify as verify
    from edgecode.codes import dense_mds_code
    from edgecode.codes._linalg import subsets

    dense = verify_matvec(dense_mds_code(6, 4), np.random.default_rng(0), size=40)
    assert dense.code == "dense matvec" and dense.note == "weight=4" and dense.ok
    sparse = verify_matvec(sparse_mv_code(6, 4), np.random.default_rng(0), size=40)
    assert sparse.code == "sparse matvec" and sparse.note == f"weight={sparse_mv_code(6, 4).weight}"
    # padding: 23 columns in blocks of 5 (n_cols drops the 2 padded ones)
    padded = verify_matvec(sparse_mv_code(8, 5), np.random.default_rng(0), size=23)
    assert padded.ok and padded.worst_relative_error <= 1e-12
    # the same seed gives the same report: the matrix is fixed, x comes from rng
    again = verify_matvec(sparse_mv_code(8, 5), np.random.default_rng(0), size=23)
    assert again == padded
    exact = verify.matvec
    seen: list[tuple[int, ...]] = []

    def recording(code: object, coded: object, x: object, alive: object, **kw: object) -> object:
        seen.append(tuple(alive))  # type: ignore[call-overload]
        if tuple(alive) == (0, 1, 2, 3):  # type: ignore[call-overload]
            raise NotDecodable("refused on purpose")
        return 2.0 * exact(code, coded, x, alive, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(verify, "matvec", recording)
    report = verify_matvec(sparse_mv_code(6, 4), np.random.default_rng(0), size=40)
    assert report.patterns == 15 and report.failures == 1 and len(seen) == 15
    assert report.worst_relative_error == math.inf
    seen.clear()
    sampled = verify_matvec(sparse_mv_code(26, 20), np.random.default_rng(7), size=40)
    assert sampled.patterns == 2_000 and not sampled.exhaustive and sampled.failures == 0
    assert math.isfinite(sampled.worst_relative_error)
    assert abs(sampled.worst_relative_error - 1.0) <= 1e-12
    rng = np.random.default_rng(7)
    rng.standard_normal(40)
    assert seen == list(subsets(26, 20, rng, samples=2_000))


def test_matvec_default_matrix() -> None:
    """The default matrix: 240 x 240, 5 % dense, scipy's seed 1 (reproduced here)."""
    import scipy.sparse as sp

    from edgecode.codes.matrix import matvec, split_columns

    code = sparse_mv_code(6, 4)
    report = verify_matvec(code, np.random.default_rng(2))
    A = sp.random(240, 240, density=0.05, format="csr", random_state=np.random.RandomState(1))
    x = np.random.default_rng(2).standard_normal(240)
    coded = code.encode(split_columns(A, 4))
    true = A.T @ x
    errors = [
        float(
            np.linalg.norm(matvec(code, coded, x, alive, n_cols=240) - true) / np.linalg.norm(true)
        )
        for alive in itertools.combinations(range(6), 4)
    ]
    assert np.all(np.isfinite(errors)) and np.all(np.asarray(errors) <= 1e-12)
    assert report.worst_relative_error == max(errors)


def test_every_check_of_the_suite_runs_what_its_label_says() -> None:
    """The full list of labels, and each check's arguments read back from its label."""
    suite = default_suite()
    labels = [label for label, _ in suite]
    flat = []
    for n in (8, 16, 32, 64):
        for s in sorted({1, n // 4, n // 2}):
            flat.append(f"cyclic n={n} s={s}")
            if n % (s + 1) == 0:
                flat.append(f"fractional n={n} s={s}")
    expected = [
        *flat,
        "hierarchical m=[4, 4] s_e=1 s_w=1",
        "hierarchical m=[4, 4, 4] s_e=1 s_w=1",
        "hierarchical m=[3, 5, 4, 4] s_e=1 s_w=2",
        "hierarchical m=[8, 8, 8, 8] s_e=1 s_w=2",
        "hierarchical m=[16, 16, 16, 16] s_e=2 s_w=4",
        "partial subset n=10 s=3 alpha=0.9",
        "partial cyclic n=10 s=3 alpha=0.9",
        "partial subset n=10 s=3 alpha=0.8",
        "partial cyclic n=10 s=3 alpha=0.8",
        "partial subset n=12 s=4 alpha=0.75",
        "partial cyclic n=12 s=4 alpha=0.75",
        "stochastic n=8 d=2 p=0.2",
        "stochastic n=10 d=3 p=0.4",
        "sparse matvec n=8 k=4",
        "dense matvec n=8 k=4",
        "sparse matvec n=12 k=9",
        "dense matvec n=12 k=9",
        "sparse matvec n=20 k=16",
        "dense matvec n=20 k=16",
    ]
    assert labels == expected
    assert [label for label, _ in default_suite(64)] == expected
    assert [label for label, _ in default_suite(63)] == [
        x for x in expected if not x.startswith(("cyclic n=64", "fractional n=64"))
    ]
    from edgecode.codes import verify as v

    families = {
        "cyclic": v._check_cyclic,
        "fractional": v._check_fractional,
        "hierarchical": v._check_hierarchical,
        "partial subset": v._check_subset,
        "partial cyclic": v._check_cyclic_partial,
        "stochastic": v._check_stochastic,
        "sparse matvec": v._check_matvec,
        "dense matvec": v._check_matvec,
    }
    for label, check in suite:
        family = next(f for f in families if label.startswith(f + " "))
        assert check.func is families[family], label  # type: ignore[attr-defined]
        args = list(check.args)  # type: ignore[attr-defined]
        if family.endswith("matvec"):
            assert args.pop(0) == family.split()[0], label
        names = {"hierarchical": ["m", "s_e", "s_w"], "stochastic": ["n", "d", "p"]}.get(
            family, ["n", "k"] if family.endswith("matvec") else ["n", "s", "alpha"]
        )
        names = names[: len(args)] if family in ("cyclic", "fractional") else names
        rebuilt = " ".join(f"{name}={value}" for name, value in zip(names, args, strict=True))
        assert f"{family} {rebuilt}" == label


def test_each_family_check_runs_its_code() -> None:
    from edgecode.codes import verify as v

    rng = np.random.default_rng(0)
    reports = [
        (v._check_cyclic(5, 2, rng), "cyclic", "n=5 s=2"),
        (v._check_fractional(4, 1, rng), "fractional", "n=4 s=1"),
        (v._check_subset(6, 2, 0.8, rng), "partial SubsetDesign", "n=6 s=2 alpha=0.8 k=60"),
        (v._check_stochastic(4, 2, 0.3, rng), "stochastic", "n=4 d=2 p=0.3"),
        (v._check_matvec("sparse", 6, 4, rng), "sparse matvec", "n=6 k=4"),
        (v._check_matvec("dense", 6, 4, rng), "dense matvec", "n=6 k=4"),
    ]
    for report, code, parameters in reports:
        assert report.ok and report.code == code and report.parameters == parameters, code
    partial_cyclic = v._check_cyclic_partial(6, 2, 0.8, rng)
    assert partial_cyclic.ok and partial_cyclic.parameters.startswith("n=6 s=2 alpha=0.8")
    assert partial_cyclic.code == f"partial {type(cyclic_partial(6, 2, 0.8)).__name__}"
    h = v._check_hierarchical([3, 3], 1, 1, rng)
    assert h.ok and h.parameters.startswith("m=[3, 3] s_e=1 s_w=1")
