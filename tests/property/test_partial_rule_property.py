"""Property tests of the partial-recovery round rule over random designs and arrival orders.

Hypothesis draws (n <= 12, s, alpha, design, V, scale) and an arrival order (a permutation of
the workers). The rule must end the round at the first prefix from which ceil(alpha k)
partitions are recoverable (brute-force oracle over pairwise disjoint messages), recover that
many, and return the weighted sum of exactly those partitions to 1e-12. Every order of n <= 6
workers is enumerated in tests/unit/test_partial_rule.py; here larger n are sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from functools import cache

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecode.codes.partial import PartialRecoveryScheme, cyclic_partial, subset_design
from edgecode.codes.partial_rule import SCALES, PartialDecoder
from edgecode.codes.partial_schemes import worker_encoding
from edgecode.errors import Infeasible

TOLERANCE = 1e-12
MAX_SUBSET_PARTITIONS = 400


@cache
def _scheme(n: int, s: int, alpha: Fraction, design: str, vectors: int) -> PartialRecoveryScheme:
    if design == "subset":
        return subset_design(n, s, alpha, max_partitions=MAX_SUBSET_PARTITIONS)
    return cyclic_partial(n, s, alpha, vectors)


@cache
def _decoder(scheme: PartialRecoveryScheme, scale: str) -> PartialDecoder:
    return PartialDecoder(scheme, scale)


def _oracle(scheme: PartialRecoveryScheme, workers: Sequence[int]) -> int:
    messages = scheme.messages
    if all(len(m) == 1 for w in messages for m in w):
        return len({m[0] for w in workers for m in messages[w]})
    reachable = {0}
    for w in workers:
        for message in messages[w]:
            bits = sum(1 << j for j in message)
            reachable |= {r | bits for r in reachable if not r & bits}
    return max(bin(r).count("1") for r in reachable)


@st.composite
def rounds(draw: st.DrawFn) -> tuple[PartialRecoveryScheme, str, list[int]]:
    n = draw(st.integers(min_value=2, max_value=12))
    s = draw(st.integers(min_value=0, max_value=n - 1))
    alpha = Fraction(draw(st.integers(min_value=1, max_value=20)), 20)
    design = draw(st.sampled_from(["subset", "cyclic"]))
    vectors = draw(st.integers(min_value=1, max_value=3))
    try:
        scheme = _scheme(n, s, alpha, design, vectors)
    except Infeasible:  # a subset design above the partition cap: use the cyclic one
        scheme = _scheme(n, s, alpha, "cyclic", vectors)
    order = draw(st.permutations(list(range(n))))
    return scheme, draw(st.sampled_from(SCALES)), order


@settings(max_examples=150, deadline=None)
@given(rounds(), st.integers(min_value=0, max_value=2**32 - 1))
def test_rule_ends_at_the_first_sufficient_prefix_with_the_exact_sum(
    drawn: tuple[PartialRecoveryScheme, str, list[int]], seed: int
) -> None:
    scheme, scale, order = drawn
    decoder = _decoder(scheme, scale)
    G = np.random.default_rng(seed).standard_normal((scheme.n_partitions, 3))
    rule = decoder.rule(3, rotation=seed)
    used = 0
    for j, worker in enumerate(order, start=1):
        if rule.offer(worker, worker_encoding(scheme, worker).encode(G)):
            used = j
            break
    first = next(j for j in range(1, len(order) + 1) if _oracle(scheme, order[:j]) >= decoder.need)
    assert used == first
    result = rule.result()
    assert result.recovered is not None and result.partition_weights is not None
    assert len(result.recovered) == _oracle(scheme, order[:used]) >= decoder.need
    assert set(result.used) <= set(order[:used])
    assert np.array_equal(
        np.flatnonzero(result.partition_weights), np.array(result.recovered, dtype=np.int64)
    )
    reference = result.partition_weights @ G
    error = np.linalg.norm(result.value - reference) / np.linalg.norm(reference)
    errs = np.array([error])
    assert np.all(np.isfinite(errs)) and np.all(errs <= TOLERANCE)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=7, max_value=12),
    st.data(),
)
def test_every_straggler_set_of_size_s_is_recovered_in_time(n: int, data: st.DataObject) -> None:
    """A sampled straggler set of size s: the round ends before any straggler answers."""
    s = data.draw(st.integers(min_value=0, max_value=n - 1))
    alpha = Fraction(data.draw(st.integers(min_value=1, max_value=20)), 20)
    vectors = data.draw(st.integers(min_value=1, max_value=3))
    scheme = _scheme(n, s, alpha, "cyclic", vectors)
    stragglers = data.draw(st.sets(st.integers(0, n - 1), min_size=s, max_size=s))
    alive = data.draw(st.permutations([w for w in range(n) if w not in stragglers]))
    decoder = _decoder(scheme, "rescale")
    G = np.random.default_rng(n).standard_normal((scheme.n_partitions, 2))
    rule = decoder.rule(2)
    done = [rule.offer(w, worker_encoding(scheme, w).encode(G)) for w in alive]
    assert done[-1], rule.failure()
    result = rule.result()
    assert result.recovered is not None
    reference = result.scale * G[list(result.recovered)].sum(axis=0)
    errs = np.array([np.linalg.norm(result.value - reference) / np.linalg.norm(reference)])
    assert np.all(np.isfinite(errs)) and np.all(errs <= TOLERANCE)
