"""Property tests: every partial-recovery scheme decodes EVERY straggler pattern it promises to.

For each drawn (n, s, alpha) the check is exhaustive over the straggler sets of size exactly s
(the hardest ones) and, for n <= 8, over every set of size <= s. A decoding must be a 0/1
vector with at least ceil(alpha k) ones, built from pairwise disjoint messages of alive workers
whose sum reproduces ``coefficients @ G`` on random float64 gradients.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from edgecode.codes.partial import (
    PartialRecoveryScheme,
    cyclic_formula_d,
    cyclic_partial,
    partial_load_optimum,
    subset_design,
)

#: keep the exhaustive check fast: the subset design decodes k partitions per pattern
MAX_SUBSET_PARTITIONS = 2_000


@st.composite
def codes(draw: st.DrawFn, max_n: int = 12) -> tuple[int, int, Fraction]:
    n = draw(st.integers(min_value=2, max_value=max_n))
    s = draw(st.integers(min_value=0, max_value=n - 1))
    alpha = Fraction(draw(st.integers(min_value=1, max_value=20)), 20)
    return n, s, alpha


def _straggler_sets(n: int, s: int) -> list[tuple[int, ...]]:
    sizes = range(s + 1) if n <= 8 else [s]
    return [c for size in sizes for c in itertools.combinations(range(n), size)]


def _check_every_pattern(scheme: PartialRecoveryScheme, seed: int) -> None:
    n, k = scheme.n_workers, scheme.n_partitions
    G = np.random.default_rng(seed).standard_normal((k, 3))
    sent = [scheme.encode(w, G) for w in range(n)]
    messages = scheme.messages
    need = math.ceil(scheme.alpha * k)
    for stragglers in _straggler_sets(n, scheme.stragglers):
        coefficients = scheme.decode(stragglers)
        assert set(np.unique(coefficients).tolist()) <= {0.0, 1.0}
        assert coefficients.sum() >= need
        chosen = scheme.decode_messages(stragglers)
        assert set(chosen.values()) == {1.0}
        covered = np.zeros(k)
        total = np.zeros(3)
        for (w, m), c in chosen.items():
            assert w not in stragglers
            covered[list(messages[w][m])] += 1
            total += c * sent[w][m]
        np.testing.assert_array_equal(covered, coefficients)  # disjoint, and the same set
        np.testing.assert_allclose(total, coefficients @ G, rtol=0, atol=1e-12)


@settings(max_examples=120, deadline=None)
@given(code=codes(), seed=st.integers(0, 2**32 - 1))
@example(code=(10, 3, Fraction(9, 10)), seed=0)
@example(code=(12, 4, Fraction(3, 4)), seed=0)
@example(code=(12, 6, Fraction(1, 2)), seed=0)
def test_subset_design_decodes_every_pattern(code: tuple[int, int, Fraction], seed: int) -> None:
    n, s, alpha = code
    optimum = partial_load_optimum(n, s, alpha)
    k = math.lcm(
        *(
            Fraction(w, math.comb(n, r)).denominator
            for r, w in zip(optimum.sizes, optimum.weights, strict=True)
        )
    )
    assume(k <= MAX_SUBSET_PARTITIONS)
    design = subset_design(n, s, alpha)
    assert design.exact and design.n_partitions == k
    assert design.load_exact == optimum.load  # meets the LP bound with equality
    _check_every_pattern(design, seed)


@settings(max_examples=150, deadline=None)
@given(
    code=codes(),
    vectors=st.integers(min_value=1, max_value=4),
    seed=st.integers(0, 2**32 - 1),
)
@example(code=(12, 6, Fraction(1, 2)), vectors=1, seed=0)
@example(code=(12, 5, Fraction(17, 20)), vectors=2, seed=0)
@example(code=(12, 11, Fraction(1)), vectors=1, seed=0)
@example(code=(11, 4, Fraction(1)), vectors=3, seed=0)
def test_cyclic_scheme_decodes_every_pattern(
    code: tuple[int, int, Fraction], vectors: int, seed: int
) -> None:
    n, s, alpha = code
    scheme = cyclic_partial(n, s, alpha, vectors_per_worker=vectors)
    assert scheme.d >= cyclic_formula_d(n, s, alpha)  # the formula is a lower bound
    assert scheme.computation_load >= scheme.lower_bound
    _check_every_pattern(scheme, seed)
