"""Coverage of the issue's numerical-quality bar for the hierarchical codes.

* Clusters of up to 64 workers: >= 2,000 distinct tolerated patterns sampled exactly at the
  limits (n - s_e edges alive, m_i - s_w_i workers alive in each), plus patterns with more
  alive nodes, decoded layer by layer as the nodes do it (``edge_decode_vector`` with LOCAL
  worker indices, then ``master_decode_vector``): relative error <= 1e-6.
* Small clusters (<= 4 edges of <= 4 workers; Hypothesis over the parameters): EVERY tolerated
  pattern, including those with more alive nodes than needed, with relative error <= 1e-9;
  every local alive set or edge set below the limit must raise ``NotDecodable``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgecode.codes import HierarchicalCode, hierarchical
from edgecode.codes._linalg import condition
from edgecode.errors import Infeasible, NotDecodable
from helpers import assert_within

SMALL_BOUND = 1e-9
LARGE_BOUND = 1e-6
#: Distinct patterns at the tolerated limits per large code, and extra ones above them.
AT_LIMIT = 2_000
ABOVE_LIMIT = 500
DIM = 6

#: (alive edges, {edge: LOCAL indices of its alive workers})
Pattern = tuple[tuple[int, ...], dict[int, tuple[int, ...]]]


@dataclass(frozen=True)
class Report:
    """Per-pattern errors and per-layer condition numbers (arrays: no running max that would
    drop a NaN)."""

    patterns: list[Pattern]
    errors: np.ndarray
    edge_conditions: np.ndarray
    worker_conditions: np.ndarray


def relative_errors(decoded: np.ndarray, true: np.ndarray) -> np.ndarray:
    return np.linalg.norm(decoded - true, axis=-1) / np.linalg.norm(true)


def edge_rows(code: HierarchicalCode, messages: np.ndarray, edge: int) -> np.ndarray:
    start = code.worker_offsets[edge]
    return messages[start : start + code.workers_per_edge[edge]]


def edge_result(
    code: HierarchicalCode, messages: np.ndarray, edge: int, local: Sequence[int]
) -> np.ndarray:
    """What edge ``edge`` sends up: its decoding vector (local indices) times its messages."""
    vector = code.edge_decode_vector(edge, local)
    assert vector.shape == (code.workers_per_edge[edge],)
    dead = [w for w in range(code.workers_per_edge[edge]) if w not in local]
    assert np.all(vector[dead] == 0.0), "an edge must not use a worker that did not answer"
    return vector @ edge_rows(code, messages, edge)


def master_vector(code: HierarchicalCode, edges: Sequence[int]) -> np.ndarray:
    vector = code.master_decode_vector(edges)
    assert vector.shape == (code.n_edges,)
    assert np.all(vector[[e for e in range(code.n_edges) if e not in edges]] == 0.0)
    return vector


def decode_layered(code: HierarchicalCode, messages: np.ndarray, pattern: Pattern) -> np.ndarray:
    edges, local = pattern
    a = master_vector(code, edges)
    return sum(a[e] * edge_result(code, messages, e, local[e]) for e in edges)


# --------------------------------------------------------------- sampled, up to 64 workers


def sample_patterns(code: HierarchicalCode, rng: np.random.Generator) -> list[Pattern]:
    """AT_LIMIT distinct patterns exactly at the limits, then ABOVE_LIMIT with between that
    and every node alive. Workers that take no part in an edge are alive or not at random."""
    active = code.active_edges

    def draw(at_limit: bool) -> Pattern:
        n_alive = len(active) - code.s_edge
        if not at_limit:
            n_alive = int(rng.integers(n_alive, len(active) + 1))
        edges = tuple(sorted(int(e) for e in rng.choice(active, size=n_alive, replace=False)))
        local = {}
        for e in edges:
            taking = code.active_workers[e]
            dead = code.s_workers[e] if at_limit else int(rng.integers(0, code.s_workers[e] + 1))
            gone = {int(w) for w in rng.choice(taking, size=dead, replace=False)}
            idle = [w for w in range(code.workers_per_edge[e]) if w not in taking]
            gone |= {w for w in idle if rng.random() < 0.5}
            local[e] = tuple(w for w in range(code.workers_per_edge[e]) if w not in gone)
        return edges, local

    def key(pattern: Pattern) -> tuple[object, ...]:
        return pattern[0], tuple(pattern[1][e] for e in pattern[0])

    seen: dict[tuple[object, ...], Pattern] = {}
    while len(seen) < AT_LIMIT:
        pattern = draw(at_limit=True)
        seen.setdefault(key(pattern), pattern)
    above = [draw(at_limit=False) for _ in range(ABOVE_LIMIT)]
    return list(seen.values()) + above


def check_sampled(code: HierarchicalCode, seed: int) -> Report:
    rng = np.random.default_rng(seed)
    gradients = rng.standard_normal((code.n_partitions, DIM))
    messages = code.B @ gradients
    true = gradients.sum(axis=0)
    patterns = sample_patterns(code, rng)
    assert code.edge_code is not None
    errors, edge_conditions = [], []
    worker_conditions: dict[tuple[int, tuple[int, ...]], float] = {}
    for edges, local in patterns:
        decoded = decode_layered(code, messages, (edges, local))
        errors.append(float(relative_errors(decoded, true)))
        position = {e: i for i, e in enumerate(code.active_edges)}
        edge_conditions.append(condition(code.edge_code.B[[position[e] for e in edges]]))
        for e in edges:
            if (e, local[e]) not in worker_conditions:
                inner = code.inner_codes[e]
                assert inner is not None
                rows = [i for i, w in enumerate(code.active_workers[e]) if w in local[e]]
                worker_conditions[(e, local[e])] = condition(inner.B[rows])
    # The one-vector form over global indices gives the same sum (edges outside the pattern
    # are entirely dead), on a slice of the patterns.
    offsets = code.worker_offsets
    for edges, local in patterns[:: len(patterns) // 50]:
        alive = [offsets[e] + w for e in edges for w in local[e]]
        decoded = code.decode_vector(alive) @ messages
        assert float(relative_errors(decoded, true)) <= LARGE_BOUND, (edges, local)
    # One more dead node than tolerated must be refused, in either layer.
    for edges, local in patterns[:20]:
        e = edges[0]
        taking_alive = [w for w in local[e] if w in code.active_workers[e]]
        if len(taking_alive) == len(code.active_workers[e]) - code.s_workers[e]:
            with pytest.raises(NotDecodable):
                code.edge_decode_vector(e, [w for w in local[e] if w != taking_alive[0]])
        if len(edges) == len(code.active_edges) - code.s_edge:
            with pytest.raises(NotDecodable):
                code.master_decode_vector(edges[1:])
    return Report(
        patterns,
        np.array(errors),
        np.array(edge_conditions),
        np.array(list(worker_conditions.values())),
    )


LARGE_CASES = [
    *(([16] * 4, s_e, s_w) for s_e in (1, 2) for s_w in (2, 4, 8)),
    ([8] * 8, 3, 3),
    ([10, 14, 20, 20], 1, 2),
    ([10, 14, 20, 20], 1, [2, 3, 4, 4]),
    ([8, 8, 12, 16, 20], 2, [1, 1, 2, 3, 4]),
    ([6, 10, 12, 16, 20], 1, [1, 1, 2, 3, 3]),
]


@pytest.mark.parametrize(("m", "s_e", "s_w"), LARGE_CASES, ids=str)
def test_sampled_patterns_decode_up_to_64_workers(
    m: list[int], s_e: int, s_w: int | list[int]
) -> None:
    assert sum(m) <= 64
    code = hierarchical(m, s_e, s_w)
    assert code.load == pytest.approx(code.load_bound)
    report = check_sampled(code, seed=sum(m) + 10 * s_e)
    assert len(report.patterns) == AT_LIMIT + ABOVE_LIMIT
    assert np.all(np.isfinite(report.edge_conditions)), report.edge_conditions
    assert np.all(np.isfinite(report.worker_conditions)), report.worker_conditions
    assert_within(report.errors, report.patterns, LARGE_BOUND)


# ------------------------------------------------------------- exhaustive, small clusters


def check_every_pattern(code: HierarchicalCode, seed: int) -> np.ndarray:
    """Decode from every tolerated (alive edges, alive local workers) pattern; return the
    relative error of each, in one array. The per-edge results are computed once per local
    alive set, and the master's sums over every combination of them are formed by broadcasting.
    """
    rng = np.random.default_rng(seed)
    gradients = rng.standard_normal((code.n_partitions, DIM))
    messages = code.B @ gradients
    true = gradients.sum(axis=0)
    results: dict[int, np.ndarray] = {}
    for e in code.active_edges:
        m_e, taking = code.workers_per_edge[e], code.active_workers[e]
        needed = len(taking) - code.s_workers[e]
        ok = []
        for size in range(m_e + 1):
            for local in itertools.combinations(range(m_e), size):
                if sum(1 for w in local if w in taking) >= needed:
                    ok.append(edge_result(code, messages, e, local))
                else:
                    with pytest.raises(NotDecodable):
                        code.edge_decode_vector(e, local)
        # 2^(idle workers) * sum_{j >= needed} C(|taking|, j) tolerated local sets
        assert len(ok) == 2 ** (m_e - len(taking)) * sum(
            math.comb(len(taking), j) for j in range(needed, len(taking) + 1)
        )
        results[e] = np.stack(ok)
    errors: list[np.ndarray] = []
    active = code.active_edges
    for size in range(len(active) + 1):
        for edges in itertools.combinations(active, size):
            if size < len(active) - code.s_edge:
                with pytest.raises(NotDecodable):
                    code.master_decode_vector(edges)
                continue
            a = master_vector(code, edges)
            total = np.zeros(DIM)
            for e in edges:  # shape grows to (L_e1, L_e2, ..., DIM)
                total = total[..., np.newaxis, :] + a[e] * results[e]
            errors.append(relative_errors(total, true).ravel())
    return np.concatenate(errors) if errors else np.zeros(0)


@st.composite
def small_clusters(draw: st.DrawFn) -> tuple[list[int], int, int | list[int]]:
    n = draw(st.integers(1, 4), label="edges")
    m = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n), label="m")
    s_e = draw(st.integers(0, n - 1), label="s_e")
    if draw(st.booleans(), label="per-edge s_w"):
        s_w: int | list[int] = [draw(st.integers(0, mi - 1)) for mi in m]
    else:
        s_w = draw(st.integers(0, min(m) - 1), label="s_w")
    return m, s_e, s_w


@settings(max_examples=150, deadline=None, derandomize=True)
@given(params=small_clusters())
@example(params=([4, 4, 4, 4], 3, 3))
@example(params=([4, 4, 4, 4], 1, 2))
@example(params=([4, 4, 4, 4], 2, [3, 2, 2, 3]))
@example(params=([4, 4, 3, 2], 1, [1, 2, 0, 1]))
@example(params=([2, 3, 4, 4], 1, 1))
def test_every_tolerated_pattern_of_small_clusters(
    params: tuple[list[int], int, int | list[int]],
) -> None:
    m, s_e, s_w = params
    s_ws = [s_w] * len(m) if isinstance(s_w, int) else s_w
    try:
        code = hierarchical(m, s_e, s_w)
    except Infeasible as exc:
        # The only legitimate refusal here: some edge would have to cover more than
        # 1 / (s_e + 1) of the data (its capacity m_i / (s_w_i + 1) is too large a share).
        capacity = [Fraction(mi, sw + 1) for mi, sw in zip(m, s_ws, strict=True)]
        assert max(capacity) / sum(capacity) > Fraction(1, s_e + 1), exc
        return
    assert code.load == pytest.approx(code.load_bound)
    errors = check_every_pattern(code, seed=sum(m))
    expected = sum(
        math.prod(
            2 ** (code.workers_per_edge[e] - len(code.active_workers[e]))
            * sum(
                math.comb(len(code.active_workers[e]), j)
                for j in range(len(code.active_workers[e]) - code.s_workers[e], 99)
            )
            for e in edges
        )
        for size in range(len(code.active_edges) - s_e, len(code.active_edges) + 1)
        for edges in itertools.combinations(code.active_edges, size)
    )
    assert errors.size == expected > 0
    assert_within(errors, [(m, s_e, s_w, i) for i in range(errors.size)], SMALL_BOUND)
