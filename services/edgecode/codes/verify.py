"""Verification report: decode every (or a large sample of) tolerated straggler pattern of a code
and measure the relative error against the true result and the worst-case condition number.

``edgecode codes verify`` renders :func:`run_suite`; the tests call the same functions.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np

from edgecode.codes._linalg import conditions, subsets
from edgecode.codes.flat import GradientCode, cyclic_repetition, fractional_repetition
from edgecode.codes.hierarchical import HierarchicalCode, hierarchical
from edgecode.codes.matrix import MatVecCode, dense_mds_code, matvec, sparse_mv_code, split_columns
from edgecode.codes.partial import PartialRecoveryScheme, cyclic_partial, subset_design
from edgecode.codes.stochastic import StochasticCode, stochastic
from edgecode.errors import NotDecodable

#: Straggler patterns checked per code when they cannot all be enumerated.
SAMPLED_PATTERNS = 2_000


@dataclass(frozen=True)
class Verification:
    """One line of the report."""

    code: str
    parameters: str
    patterns: int
    exhaustive: bool
    failures: int
    worst_relative_error: float
    worst_condition: float
    load: float
    load_bound: float
    #: anything specific to the code (communication load, weight, ...)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.failures == 0


def verify_flat(code: GradientCode, rng: np.random.Generator, dim: int = 8) -> Verification:
    """Decode from every alive set of size n - s (sampled above the enumeration limit)."""
    n, s = code.n_workers, code.stragglers
    gradients = rng.standard_normal((code.n_partitions, dim))
    messages = code.B @ gradients
    true = code.targets @ gradients
    alive_sets = np.array(list(subsets(n, n - s, rng, samples=SAMPLED_PATTERNS)), dtype=np.intp)
    errors = []
    for alive in alive_sets:
        try:
            decoded = code.decode_vector(alive)[alive] @ messages[alive]
        except NotDecodable:
            errors.append(math.inf)
            continue
        errors.append(float(np.linalg.norm(decoded - true) / np.linalg.norm(true)))
    worst, failures = _worst(errors)
    return Verification(
        code=code.name,
        parameters=f"n={n} s={s}",
        patterns=len(errors),
        exhaustive=len(errors) == math.comb(n, n - s),
        failures=failures,
        worst_relative_error=worst,
        worst_condition=_worst_condition_of(code.B, alive_sets),
        load=code.load,
        load_bound=code.load_bound,
    )


def _worst(errors: list[float]) -> tuple[float, int]:
    """The largest error and the number of failures: patterns that did not decode (inf) or
    decoded to something non-finite (NaN). NaN is reported, never dropped: ``max(0.0, nan)``
    would be 0.0."""
    values = np.asarray(errors, dtype=np.float64)
    if values.size == 0:
        return 0.0, 0
    failures = int(np.count_nonzero(~np.isfinite(values)))
    return float(values.max()), failures  # numpy's max is NaN when any value is


def _worst_condition_of(B: np.ndarray, alive_sets: np.ndarray) -> float:
    values = np.concatenate(
        [conditions(B[alive_sets[i : i + 4096]]) for i in range(0, len(alive_sets), 4096)]
    )
    return float(values.max())  # NaN when any is; never empty (subsets yields at least one)


def _hierarchical_patterns(
    code: HierarchicalCode, rng: np.random.Generator
) -> Iterator[tuple[tuple[int, ...], dict[int, tuple[int, ...]]]]:
    """(alive edges, alive local workers per alive edge) at exactly the tolerated limits."""
    edge_sets = list(
        itertools.combinations(code.active_edges, len(code.active_edges) - code.s_edge)
    )
    per_edge = {
        e: list(
            itertools.combinations(
                code.active_workers[e], len(code.active_workers[e]) - code.s_workers[e]
            )
        )
        for e in code.active_edges
    }
    total = sum(math.prod(len(per_edge[e]) for e in edges) for edges in edge_sets)
    if total <= SAMPLED_PATTERNS * 5:
        for edges in edge_sets:
            for choice in itertools.product(*(per_edge[e] for e in edges)):
                yield edges, dict(zip(edges, choice, strict=True))
        return
    for _ in range(SAMPLED_PATTERNS):
        edges = edge_sets[int(rng.integers(len(edge_sets)))]
        yield edges, {e: per_edge[e][int(rng.integers(len(per_edge[e])))] for e in edges}


def verify_hierarchical(
    code: HierarchicalCode, rng: np.random.Generator, dim: int = 8
) -> Verification:
    """Decode layer by layer (edges, then master) for every tolerated pattern (or a sample)."""
    gradients = rng.standard_normal((code.n_partitions, dim))
    messages = code.B @ gradients
    true = gradients.sum(axis=0)
    offsets = code.worker_offsets
    errors: list[float] = []
    for edges, workers in _hierarchical_patterns(code, rng):
        try:
            results = {}
            for e in edges:
                rows = messages[offsets[e] : offsets[e] + code.workers_per_edge[e]]
                results[e] = code.edge_decode_vector(e, workers[e]) @ rows
            a = code.master_decode_vector(edges)
            decoded = sum(a[e] * z for e, z in results.items())
        except NotDecodable:
            errors.append(math.inf)
            continue
        errors.append(float(np.linalg.norm(decoded - true) / np.linalg.norm(true)))
    worst_error, failures = _worst(errors)
    patterns = len(errors)
    layer_conditions = code.condition_numbers()
    exhaustive = patterns == sum(
        math.prod(math.comb(len(code.active_workers[e]), code.s_workers[e]) for e in edges)
        for edges in itertools.combinations(code.active_edges, len(code.active_edges) - code.s_edge)
    )
    return Verification(
        code="hierarchical",
        parameters=(
            f"m={list(code.workers_per_edge)} s_e={code.s_edge} s_w={code.s_worker} "
            f"K={code.n_partitions}"
        ),
        patterns=patterns,
        exhaustive=exhaustive,
        failures=failures,
        worst_relative_error=worst_error,
        worst_condition=float(np.max(list(layer_conditions.values()))),
        load=code.load,
        load_bound=code.load_bound,
    )


def verify_partial(
    scheme: PartialRecoveryScheme, rng: np.random.Generator, dim: int = 4
) -> Verification:
    """Every straggler set of size s (sampled above the limit): the recovered sum is exactly the
    0/1 combination ``decode`` reports, with at least ceil(alpha k) ones."""
    n, s, k = scheme.n_workers, scheme.stragglers, scheme.n_partitions
    gradients = rng.standard_normal((k, dim))
    sent = [scheme.encode(w, gradients) for w in range(n)]
    errors: list[float] = []
    wrong_sets = 0
    for stragglers in subsets(n, s, rng, samples=SAMPLED_PATTERNS):
        try:
            coefficients = scheme.decode(stragglers)
            chosen = scheme.decode_messages(stragglers)
        except NotDecodable:
            errors.append(math.inf)
            continue
        decoded = sum(c * sent[w][m] for (w, m), c in chosen.items())
        true = coefficients @ gradients
        ones = int(np.count_nonzero(coefficients == 1.0))
        if ones < scheme.min_recovered or np.any((coefficients != 0.0) & (coefficients != 1.0)):
            wrong_sets += 1
        errors.append(float(np.linalg.norm(decoded - true) / np.linalg.norm(true)))
    worst, failures = _worst(errors)
    patterns, failures = len(errors), failures + wrong_sets
    return Verification(
        code=f"partial {type(scheme).__name__}",
        parameters=f"n={n} s={s} alpha={float(scheme.alpha):g} k={k}",
        patterns=patterns,
        exhaustive=patterns == math.comb(n, s),
        failures=failures,
        worst_relative_error=worst,
        worst_condition=1.0,
        load=scheme.computation_load,
        load_bound=scheme.lower_bound,
        note=f"vectors/worker={scheme.communication_load}",
    )


def verify_stochastic(code: StochasticCode, rng: np.random.Generator, dim: int = 4) -> Verification:
    """Unbiasedness, exactly: E[sum_i g_i] over all 2^n straggler patterns equals sum_j g_j."""
    n = code.n_workers
    gradients = rng.standard_normal((code.n_partitions, dim))
    expected = np.zeros(dim)
    for alive in itertools.product((False, True), repeat=n):
        mask = np.array(alive)
        expected += code.pattern_probability(mask) * code.encode(mask, gradients).sum(axis=0)
    true = gradients.sum(axis=0)
    error = float(np.linalg.norm(expected - true) / np.linalg.norm(true))
    return Verification(
        code="stochastic",
        parameters=f"n={n} d={code.replication} p={code.straggle_probability:g}",
        patterns=2**n,
        exhaustive=True,
        failures=int(not error <= 1e-9),
        worst_relative_error=error,
        worst_condition=1.0,
        load=code.computation_load,
        load_bound=code.replication / n,
        note=f"weight={code.weight:.4g}",
    )


def verify_matvec(code: MatVecCode, rng: np.random.Generator, size: int = 240) -> Verification:
    """A^T x from every k-subset of workers (sampled above the limit) vs the direct product."""
    import scipy.sparse as sp

    n, k = code.n_workers, code.k
    A = sp.random(size, size, density=0.05, format="csr", random_state=np.random.RandomState(1))
    x = rng.standard_normal(size)
    coded = code.encode(split_columns(A, k))
    true = A.T @ x
    errors: list[float] = []
    for alive in subsets(n, k, rng, samples=SAMPLED_PATTERNS):
        try:
            result = matvec(code, coded, x, alive, n_cols=size)
        except NotDecodable:
            errors.append(math.inf)
            continue
        errors.append(float(np.linalg.norm(result - true) / np.linalg.norm(true)))
    worst, failures = _worst(errors)
    patterns = len(errors)
    return Verification(
        code="sparse matvec" if code.weight < k else "dense matvec",
        parameters=f"n={n} k={k}",
        patterns=patterns,
        exhaustive=patterns == math.comb(n, k),
        failures=failures,
        worst_relative_error=worst,
        worst_condition=code.condition_number(),
        load=code.weight / k,
        load_bound=code.lower_bound / k,
        note=f"weight={code.weight}",
    )


@dataclass(frozen=True)
class ExactnessRow:
    """The worst alive set of ``cyclic_repetition(n, s)``: every one when ``exhaustive``.

    ``worst_residual`` is ``max_A |decode_vector(A) @ B - 1|_inf`` computed in float64 as any
    caller computes it; ``worst_relative_error`` is ``|decoded - true| / |true|`` for random
    float64 gradients; ``worst_condition`` is the largest ``cond_2(B[A])``.
    """

    n: int
    s: int
    alive_sets: int
    exhaustive: bool
    worst_condition: float
    worst_residual: float
    worst_relative_error: float
    build_seconds: float


def exactness_row(n: int, s: int, rng: np.random.Generator, dim: int = 8) -> ExactnessRow:
    """Build ``cyclic_repetition(n, s)`` (timed) and decode from every alive set of size
    n - s (a sample of ``SAMPLED_PATTERNS`` above ``ENUMERATION_LIMIT``)."""
    started = time.perf_counter()
    code = cyclic_repetition(n, s)
    build_seconds = time.perf_counter() - started
    alive_sets = np.array(list(subsets(n, n - s, rng, samples=SAMPLED_PATTERNS)), dtype=np.intp)
    vectors = np.stack([code.decode_vector(alive) for alive in alive_sets])
    residuals = np.abs(vectors @ code.B - code.targets).max(axis=1)
    gradients = rng.standard_normal((code.n_partitions, dim))
    messages = code.B @ gradients
    true = code.targets @ gradients
    decoded = np.einsum(
        "ai,aid->ad", np.take_along_axis(vectors, alive_sets, 1), messages[alive_sets]
    )
    errors = np.linalg.norm(decoded - true, axis=1) / np.linalg.norm(true)
    return ExactnessRow(
        n=n,
        s=s,
        alive_sets=len(alive_sets),
        exhaustive=len(alive_sets) == math.comb(n, n - s),
        worst_condition=_worst_condition_of(code.B, alive_sets),
        worst_residual=_worst(residuals.tolist())[0],
        worst_relative_error=_worst(errors.tolist())[0],
        build_seconds=build_seconds,
    )


def exactness_cases(sizes: Iterable[int]) -> list[tuple[int, int]]:
    """(n, s) pairs of the exactness table: every s in 1..n-1 for n <= 16; for larger n the
    extremes and eighths (1, 2, 3, n/8, n/4, ..., 7n/8, n-3, n-2, n-1)."""
    cases = []
    for n in sizes:
        if n <= 16:
            chosen = set(range(1, n))
        else:
            chosen = {1, 2, 3, n - 3, n - 2, n - 1} | {n * e // 8 for e in range(1, 8)}
        cases += [(n, s) for s in sorted(chosen)]  # every s is in 1..n-1 already
    return cases


def _check_cyclic(n: int, s: int, rng: np.random.Generator) -> Verification:
    return verify_flat(cyclic_repetition(n, s), rng)


def _check_fractional(n: int, s: int, rng: np.random.Generator) -> Verification:
    return verify_flat(fractional_repetition(n, s), rng)


def _check_hierarchical(m: list[int], s_e: int, s_w: int, rng: np.random.Generator) -> Verification:
    return verify_hierarchical(hierarchical(m, s_e, s_w), rng)


Check = Callable[[np.random.Generator], Verification]


def default_suite(max_n: int = 64) -> list[tuple[str, Check]]:
    """The codes and sizes the report covers (flat sizes up to ``max_n``)."""
    suite: list[tuple[str, Check]] = []
    for n in (n for n in (8, 16, 32, 64) if n <= max_n):
        for s in sorted({1, n // 4, n // 2}):
            suite.append((f"cyclic n={n} s={s}", partial(_check_cyclic, n, s)))
            if n % (s + 1) == 0:
                suite.append((f"fractional n={n} s={s}", partial(_check_fractional, n, s)))
    hierarchical_cases = (
        ([4, 4], 1, 1),
        ([4, 4, 4], 1, 1),
        ([3, 5, 4, 4], 1, 2),
        ([8] * 4, 1, 2),
        ([16] * 4, 2, 4),
    )
    for m, s_e, s_w in hierarchical_cases:
        label = f"hierarchical m={m} s_e={s_e} s_w={s_w}"
        suite.append((label, partial(_check_hierarchical, m, s_e, s_w)))
    for n, s, alpha in ((10, 3, 0.9), (10, 3, 0.8), (12, 4, 0.75)):
        suite.append(
            (f"partial subset n={n} s={s} alpha={alpha}", partial(_check_subset, n, s, alpha))
        )
        suite.append(
            (
                f"partial cyclic n={n} s={s} alpha={alpha}",
                partial(_check_cyclic_partial, n, s, alpha),
            )
        )
    for n, d, p in ((8, 2, 0.2), (10, 3, 0.4)):
        suite.append((f"stochastic n={n} d={d} p={p}", partial(_check_stochastic, n, d, p)))
    for n, k in ((8, 4), (12, 9), (20, 16)):
        suite.append((f"sparse matvec n={n} k={k}", partial(_check_matvec, "sparse", n, k)))
        suite.append((f"dense matvec n={n} k={k}", partial(_check_matvec, "dense", n, k)))
    return suite


def _check_subset(n: int, s: int, alpha: float, rng: np.random.Generator) -> Verification:
    return verify_partial(subset_design(n, s, alpha), rng)


def _check_cyclic_partial(n: int, s: int, alpha: float, rng: np.random.Generator) -> Verification:
    return verify_partial(cyclic_partial(n, s, alpha), rng)


def _check_stochastic(n: int, d: int, p: float, rng: np.random.Generator) -> Verification:
    return verify_stochastic(stochastic(n, d, p), rng)


def _check_matvec(kind: str, n: int, k: int, rng: np.random.Generator) -> Verification:
    code = sparse_mv_code(n, k) if kind == "sparse" else dense_mds_code(n, k)
    return verify_matvec(code, rng)
