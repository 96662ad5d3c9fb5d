"""Every shuffle keeps the code structure, is realised by its transfers, keeps to its budget,
and the aware policy never increases the expected number of partitions without weight."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecode.codes import cyclic_repetition, fractional_repetition
from edgecode.planning.shuffle import Assignment, aware_shuffle, random_shuffle


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[np.ndarray, Assignment, np.ndarray, np.ndarray, int | None]:
    n = draw(st.integers(2, 24))
    s = draw(st.sampled_from([d - 1 for d in range(1, n + 1) if n % d == 0]))
    frc = draw(st.booleans())
    B = fractional_repetition(n, s).B if frc else cyclic_repetition(n, s, draws=1).B
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    start = Assignment(tuple(int(i) for i in rng.permutation(n)))
    p = rng.choice([0.02, 0.1, 0.5, 0.9], size=n)
    sizes = rng.integers(0, 50, size=n)
    budget = draw(st.none() | st.integers(0, 400))
    return B, start, p, sizes, budget


def _check_realised(B: np.ndarray, moved, sizes: np.ndarray, budget: int | None) -> None:
    n = moved.before.n_workers
    assert sorted(moved.after.rows) == list(range(n))  # the same rows, permuted
    old = [set(x) for x in moved.before.partitions_of(B)]
    new = [set(x) for x in moved.after.partitions_of(B)]
    have = [set(x) for x in old]
    for t in moved.transfers:
        assert t.partition in old[t.source] and t.bytes == sizes[t.partition]
        have[t.destination].add(t.partition)
    assert all(have[w] >= new[w] for w in range(n))
    assert moved.bytes_moved == sum(int(sizes[j]) for w in range(n) for j in new[w] - old[w])
    if budget is not None:
        assert moved.bytes_moved <= budget


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.integers(0, 2**32 - 1))
def test_random_shuffles_are_realised(scenario, seed: int) -> None:
    B, start, _, sizes, budget = scenario
    moved = random_shuffle(B, start, np.random.default_rng(seed), sizes, budget)
    _check_realised(B, moved, sizes, budget)


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_aware_shuffles_are_realised_and_lower_the_risk(scenario) -> None:
    B, start, p, sizes, budget = scenario
    moved = aware_shuffle(B, start, p, sizes, budget)
    _check_realised(B, moved, sizes, budget)
    risk = [
        sum(float(np.prod(p[list(h)])) for h in a.holders(B)) for a in (moved.before, moved.after)
    ]
    assert np.isfinite(risk).all() and risk[1] <= risk[0] * (1 + 1e-12)
    if moved.transfers:
        assert risk[1] < risk[0]
