"""Hierarchical codes: exact gradient from every tolerated pattern, load bound met."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecode.codes import hierarchical, hierarchical_from_counts
from edgecode.errors import Infeasible, NotDecodable
from helpers import assert_within


def _tolerated(code, alive: set[int]) -> bool:
    """Whether the alive workers leave >= n - s_e edges each with >= m_i - s_w_i alive."""
    good_edges = 0
    for edge in code.active_edges:
        taking = [code.worker_offsets[edge] + w for w in code.active_workers[edge]]
        alive_here = sum(1 for w in taking if w in alive)
        if alive_here >= len(taking) - code.s_workers[edge]:
            good_edges += 1
    return good_edges >= len(code.active_edges) - code.s_edge


def _check_all_patterns(code, rng) -> None:
    """Every alive set: refused when not tolerated, else decoded layer by layer (as an edge and
    the master do) and in one vector, each error finite and <= 1e-9."""
    gradients = rng.standard_normal((code.n_partitions, 5))
    messages = code.B @ gradients
    true = gradients.sum(axis=0)
    errors, residuals, patterns = [], [], []
    n = code.n_workers
    for size in range(n + 1):
        for alive in itertools.combinations(range(n), size):
            if not _tolerated(code, set(alive)):
                with pytest.raises(NotDecodable):
                    code.decode_vector(alive)
                continue
            # Decode layer by layer, as an edge and the master do.
            edge_results = {}
            offsets = code.worker_offsets
            for edge in code.active_edges:
                local = [
                    w - offsets[edge]
                    for w in alive
                    if offsets[edge] <= w < offsets[edge] + code.workers_per_edge[edge]
                ]
                try:
                    b = code.edge_decode_vector(edge, local)
                except NotDecodable:
                    continue
                rows = messages[offsets[edge] : offsets[edge] + code.workers_per_edge[edge]]
                assert np.all(b[[w for w in range(len(b)) if w not in local]] == 0.0)
                edge_results[edge] = b @ rows
            a = code.master_decode_vector(edge_results)
            decoded = sum(a[e] * z for e, z in edge_results.items())
            patterns.append(alive)
            errors.append(float(np.linalg.norm(decoded - true) / np.linalg.norm(true)))
            residuals.append(float(np.abs(code.decode_vector(alive) @ code.B - 1.0).max()))
    assert_within(errors, patterns, 1e-9)
    assert_within(residuals, patterns, 1e-9)


CASES = [
    ([3, 3], 1, 1),
    ([4, 4], 1, 1),
    ([4, 4], 0, 2),
    ([2, 2, 2], 1, 1),
    ([4, 4, 4], 1, 1),
    ([4, 4, 4], 2, 0),
    ([2, 3, 5], 1, 1),
    ([3, 3, 3], 1, 2),
    ([4, 4, 3], 1, [1, 2, 0]),
    ([5, 5], 1, 3),
]


@pytest.mark.parametrize(("m", "s_e", "s_w"), CASES)
def test_every_pattern_decodes_and_meets_bound(m, s_e, s_w) -> None:
    code = hierarchical(m, s_e, s_w)
    if isinstance(s_w, int):
        bound = Fraction((s_e + 1) * (s_w + 1), sum(m))
        assert code.load_bound == pytest.approx(float(bound))
    assert code.load == pytest.approx(code.load_bound), "load must equal the bound"
    assert code.edge_of_worker.tolist() == [e for e, mi in enumerate(m) for _ in range(mi)]
    _check_all_patterns(code, np.random.default_rng(len(m)))


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_random_parameters(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 3), label="edges")
    m = data.draw(st.lists(st.integers(1, 4), min_size=n, max_size=n), label="m")
    s_e = data.draw(st.integers(0, n - 1), label="s_e")
    s_w = data.draw(st.integers(0, min(m) - 1), label="s_w")
    try:
        code = hierarchical(m, s_e, s_w)
    except Infeasible as exc:
        # The only legitimate refusal for these ranges: an edge would need more than 1/(s_e+1).
        assert max(m) / sum(m) > 1 / (s_e + 1), exc
        return
    assert code.load == pytest.approx((s_e + 1) * (s_w + 1) / sum(m))
    _check_all_patterns(code, np.random.default_rng(0))


def test_given_partitions_round_and_report() -> None:
    code = hierarchical([4, 4], 1, 1, n_partitions=7)
    assert code.n_partitions == 7
    assert code.load >= code.load_bound
    assert code.load == pytest.approx(4 / 7)  # ceil(7 * 2 * 2 / 8) / 7
    _check_all_patterns(code, np.random.default_rng(1))


def test_unequal_counts_with_nodes_left_out() -> None:
    code = hierarchical_from_counts(
        n_partitions=6,
        s_edge=1,
        edge_partitions=[6, 6, 0],
        s_workers=[1, 0, 0],
        worker_partitions=[[6, 4, 2, 0], [3, 3], [0]],
    )
    assert code.active_edges == (0, 1)
    assert code.active_workers[0] == (0, 1, 2)
    assert len(code.partitions_of_worker[0]) == 6
    _check_all_patterns(code, np.random.default_rng(2))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([3, 3], 2, 1), "s_edge must be in"),
        (([3, 3], 1, 3), "edge 0: s_worker must be in"),
        (([6, 2], 1, 1), "edge 0 would have to cover"),
        (([3, 3], 1, [1]), "one value per edge"),
        (([0, 3], 0, 0), "positive integers"),
    ],
)
def test_infeasible_parameters_say_which_condition(args, message) -> None:
    with pytest.raises(ValueError, match=message):
        hierarchical(*args)


def test_bad_counts_say_which_condition() -> None:
    with pytest.raises(Infeasible, match="add up to K"):
        hierarchical_from_counts(4, 1, [4, 3], [0, 0], [[4], [3]])
    with pytest.raises(Infeasible, match="edge 1: worker loads"):
        hierarchical_from_counts(4, 1, [4, 4], [0, 1], [[4], [4, 3]])
