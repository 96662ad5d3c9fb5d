"""Verification report: decode every (or a large sample of) tolerated straggler pattern of a code
and measure the relative error against the true result and the worst-case condition number.

``edgecode codes verify`` renders :func:`run_suite`; the tests call the same functions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np

from edgecode.codes._linalg import condition, subsets
from edgecode.codes.flat import GradientCode, cyclic_repetition, fractional_repetition
from edgecode.codes.hierarchical import HierarchicalCode, hierarchical
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

    @property
    def ok(self) -> bool:
        return self.failures == 0


def verify_flat(code: GradientCode, rng: np.random.Generator, dim: int = 8) -> Verification:
    """Decode from every alive set of size n - s (sampled above the enumeration limit)."""
    n, s = code.n_workers, code.stragglers
    gradients = rng.standard_normal((code.n_partitions, dim))
    messages = code.B @ gradients
    true = code.targets @ gradients
    patterns = failures = 0
    worst_error = worst_cond = 0.0
    for alive in subsets(n, n - s, rng, samples=SAMPLED_PATTERNS):
        rows = list(alive)
        patterns += 1
        try:
            decoded = code.decode_vector(alive)[rows] @ messages[rows]
        except NotDecodable:
            failures += 1
            continue
        error = float(np.linalg.norm(decoded - true) / np.linalg.norm(true))
        worst_error = max(worst_error, error)
        worst_cond = max(worst_cond, condition(code.B[rows]))
    return Verification(
        code=code.name,
        parameters=f"n={n} s={s}",
        patterns=patterns,
        exhaustive=patterns == math.comb(n, n - s),
        failures=failures,
        worst_relative_error=worst_error,
        worst_condition=worst_cond,
        load=code.load,
        load_bound=code.load_bound,
    )


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
    patterns = failures = 0
    worst_error = 0.0
    for edges, workers in _hierarchical_patterns(code, rng):
        patterns += 1
        try:
            results = {}
            for e in edges:
                rows = messages[offsets[e] : offsets[e] + code.workers_per_edge[e]]
                results[e] = code.edge_decode_vector(e, workers[e]) @ rows
            a = code.master_decode_vector(edges)
            decoded = sum(a[e] * z for e, z in results.items())
        except NotDecodable:
            failures += 1
            continue
        worst_error = max(worst_error, float(np.linalg.norm(decoded - true) / np.linalg.norm(true)))
    conditions = code.condition_numbers()
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
        worst_condition=max(conditions.values()),
        load=code.load,
        load_bound=code.load_bound,
    )


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
    return suite
