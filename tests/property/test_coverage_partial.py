"""Coverage of the issue's numerical-quality bar for partial recovery at n = 13..16.

For the subset design and the cyclic scheme, EVERY straggler set of size exactly s (the hardest
ones; fewer stragglers only add alive messages) is decoded: ``decode`` must be a 0/1 vector with
at least ceil(alpha k) ones, and ``decode_messages`` must pick messages of alive workers with
pairwise disjoint supports covering exactly those partitions, whose sum reproduces
``coefficients @ G`` to 1e-12 on random float64 gradients.

A deterministic grid of (s, alpha) runs for every n; subset designs with more than
``SUBSET_CAP`` partitions are refused by the constructor (``Infeasible``) and skipped to keep
the run time bounded; the tests assert that enough combinations still run. Hypothesis then
draws further (n, s <= 6, alpha, vectors per worker).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgecode.codes.partial import (
    CyclicPartial,
    PartialRecoveryScheme,
    SubsetDesign,
    cyclic_partial,
    subset_design,
)
from edgecode.errors import Infeasible

#: Largest subset design built here (each straggler set costs O(k n) to decode).
SUBSET_CAP = 2_000
#: The same for the designs Hypothesis draws (more of them, so smaller).
HYPOTHESIS_SUBSET_CAP = 600
#: The issue's tolerance on the decoded sum.
ATOL = 1e-12
DIM = 3
GRID = [
    (s, alpha) for s in (2, 3, 4, 6) for alpha in (Fraction(3, 4), Fraction(9, 10), Fraction(1))
]
SIZES = [13, 14, 15, 16]


@dataclass(frozen=True)
class Outcome:
    patterns: int
    least_recovered: int
    worst_abs_error: float


def check_every_straggler_set(scheme: PartialRecoveryScheme, seed: int) -> Outcome:
    n, k, s = scheme.n_workers, scheme.n_partitions, scheme.stragglers
    alpha = Fraction(scheme.alpha)
    need = -(-alpha.numerator * k // alpha.denominator)  # ceil(alpha k), exactly
    assert scheme.min_recovered == need
    G = np.random.default_rng(seed).standard_normal((k, DIM))
    messages = scheme.messages
    counts = np.array([len(m) for m in messages], dtype=np.intp)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    sent = [scheme.encode(w, G) for w in range(n)]
    assert all(v.shape == (counts[w], DIM) for w, v in enumerate(sent))
    stacked = np.concatenate(sent)  # one row per (worker, message), worker-major
    # the partitions of every message, laid end to end (message-major, like ``stacked``)
    lengths = np.array([len(part) for w in range(n) for part in messages[w]], dtype=np.intp)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.intp)
    parts = np.array([j for w in range(n) for part in messages[w] for j in part], dtype=np.intp)
    patterns, least, errors = 0, k, []
    for stragglers in itertools.combinations(range(n), s):
        dead = np.zeros(n, dtype=np.bool_)
        dead[list(stragglers)] = True
        coefficients = scheme.decode(stragglers)
        assert coefficients.shape == (k,) and coefficients.dtype == np.float64
        assert np.all((coefficients == 0.0) | (coefficients == 1.0)), stragglers
        recovered = int(np.count_nonzero(coefficients))
        assert recovered >= need, stragglers
        chosen = scheme.decode_messages(stragglers)
        assert set(chosen.values()) <= {1.0}
        workers = np.fromiter((w for w, _ in chosen), dtype=np.intp, count=len(chosen))
        index = np.fromiter((m for _, m in chosen), dtype=np.intp, count=len(chosen))
        assert not dead[workers].any(), "a straggler's message was used"
        assert np.all((index >= 0) & (index < counts[workers]))
        flat = offsets[workers] + index
        # every partition of every chosen message: start of its message + rank inside it
        size = lengths[flat]
        ends = np.cumsum(size)
        rank = np.arange(int(ends[-1]) if size.size else 0) - np.repeat(ends - size, size)
        covered = np.bincount(parts[np.repeat(starts[flat], size) + rank], minlength=k)
        # disjoint supports (no partition twice) that cover exactly the decoded partitions
        np.testing.assert_array_equal(covered, coefficients)
        total = stacked[flat].sum(axis=0)
        error = float(np.abs(total - coefficients @ G).max())
        assert error <= ATOL, (stragglers, error)
        patterns += 1
        least = min(least, recovered)
        errors.append(error)
    assert patterns == math.comb(n, s)
    return Outcome(patterns, least, float(np.max(errors)))  # np.max keeps a NaN


def check_subset_design(design: SubsetDesign, seed: int) -> Outcome:
    outcome = check_every_straggler_set(design, seed)
    # Exactly the partitions whose holders all straggle are lost: sum_r a_r C(s, r) of them.
    lost = sum(
        a * math.comb(design.stragglers, r)
        for r, a in zip(design.sizes, design.multiplicities, strict=True)
    )
    assert outcome.least_recovered == design.n_partitions - lost
    return outcome


def check_cyclic(scheme: CyclicPartial, seed: int) -> Outcome:
    outcome = check_every_straggler_set(scheme, seed)
    # The constructor's certified worst case is attained, and is the true minimum.
    assert outcome.least_recovered == scheme.worst_case_recovered
    return outcome


# ------------------------------------------------------------------------- deterministic grid


@pytest.mark.parametrize("n", SIZES)
def test_subset_design_every_straggler_set(n: int) -> None:
    ran: list[int] = []
    for s, alpha in GRID:
        try:
            design = subset_design(n, s, alpha, max_partitions=SUBSET_CAP)
        except Infeasible:
            continue
        assert design.exact
        check_subset_design(design, seed=100 * n + s)
        ran.append(design.n_partitions)
    assert len(ran) >= 6, f"only {len(ran)} (s, alpha) combinations ran at n={n}"
    # not only the trivial one-partition-per-worker designs
    assert sum(k > n for k in ran) >= 4, ran


@pytest.mark.parametrize("n", SIZES)
def test_cyclic_partial_every_straggler_set(n: int) -> None:
    ran: list[int] = []
    for s, alpha in GRID:
        try:
            scheme = cyclic_partial(n, s, alpha)
        except Infeasible:
            continue
        assert scheme.communication_load == 1
        check_cyclic(scheme, seed=100 * n + s)
        ran.append(scheme.d)
    assert len(ran) >= 6, f"only {len(ran)} (s, alpha) combinations ran at n={n}"
    assert sum(d > 1 for d in ran) >= 4, ran  # not only the uncoded d = 1


# -------------------------------------------------------------------------- Hypothesis


@st.composite
def parameters(draw: st.DrawFn) -> tuple[int, int, Fraction]:
    n = draw(st.integers(13, 16), label="n")
    s = draw(st.integers(0, 6), label="s")
    alpha = Fraction(draw(st.integers(1, 20), label="alpha * 20"), 20)
    return n, s, alpha


@settings(max_examples=25, deadline=None, derandomize=True)
@given(params=parameters(), vectors=st.integers(1, 4))
def test_cyclic_partial_random_parameters(params: tuple[int, int, Fraction], vectors: int) -> None:
    n, s, alpha = params
    scheme = cyclic_partial(n, s, alpha, vectors_per_worker=vectors)
    check_cyclic(scheme, seed=n + s)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(params=parameters())
def test_subset_design_random_parameters(params: tuple[int, int, Fraction]) -> None:
    n, s, alpha = params
    try:
        design = subset_design(n, s, alpha, max_partitions=HYPOTHESIS_SUBSET_CAP)
    except Infeasible:
        assume(False)
        return
    check_subset_design(design, seed=n + s)
