"""Hierarchical codes at small sizes, fast: the bound, the counts, both decoding layers and the
one-vector form on every pattern, and the argument checks. The heavy sweeps are in
tests/property/test_hierarchical_codes.py and test_coverage_hierarchical.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgecode.codes import hierarchical, hierarchical_from_counts, hierarchical_load_bound
from edgecode.codes.hierarchical import _apportion, smallest_partitions
from edgecode.errors import Infeasible, NotDecodable


def tolerated(code, alive: set[int]) -> bool:
    good = 0
    for e in code.active_edges:
        taking = [code.worker_offsets[e] + w for w in code.active_workers[e]]
        good += sum(w in alive for w in taking) >= len(taking) - code.s_workers[e]
    return good >= len(code.active_edges) - code.s_edge


def layered(code, messages: np.ndarray, alive: tuple[int, ...]) -> np.ndarray:
    """Decode as the edges and the master do: each edge from its alive local workers (edges
    that cannot decode drop out), then the master from the edges that answered."""
    results = {}
    for e in range(code.n_edges):
        start, size = code.worker_offsets[e], code.workers_per_edge[e]
        local = [w - start for w in alive if start <= w < start + size]
        try:
            vector = code.edge_decode_vector(e, local)
        except NotDecodable:
            continue
        assert vector.shape == (size,)
        assert np.all(vector[[w for w in range(size) if w not in local]] == 0.0)
        results[e] = vector @ messages[start : start + size]
    master = code.master_decode_vector(results)
    assert master.shape == (code.n_edges,)
    assert np.all(master[[e for e in range(code.n_edges) if e not in results]] == 0.0)
    return sum(master[e] * z for e, z in results.items())


def check_every_alive_set(code) -> None:
    """Every set of alive workers: refused when not tolerated; otherwise the one-vector form
    and the layered decoding both give sum_j g_j (each error finite and <= 1e-12)."""
    g = np.random.default_rng(0).standard_normal((code.n_partitions, 3))
    messages, true = code.B @ g, g.sum(axis=0)
    errors, patterns = [], []
    for size in range(code.n_workers + 1):
        for alive in itertools.combinations(range(code.n_workers), size):
            if not tolerated(code, set(alive)):
                with pytest.raises(NotDecodable):
                    code.decode_vector(alive)
                continue
            vector = code.decode_vector(alive)
            assert np.all(vector[[w for w in range(code.n_workers) if w not in alive]] == 0.0)
            for decoded in (vector @ messages, layered(code, messages, alive)):
                errors.append(float(np.linalg.norm(decoded - true) / np.linalg.norm(true)))
                patterns.append(alive)
    values = np.array(errors)
    assert values.size > 0
    worst = patterns[int(np.argmax(np.nan_to_num(values, nan=np.inf)))]
    assert np.all(np.isfinite(values)) and np.all(values <= 1e-12), worst


@pytest.mark.parametrize(
    ("m", "s_e", "s_w"),
    [([3, 3], 1, 1), ([2, 2, 2], 1, 1), ([4, 4, 3], 1, [1, 2, 0]), ([2, 3], 0, 1), ([3, 3], 1, 0)],
)
def test_every_pattern_of_small_clusters(m, s_e, s_w) -> None:
    code = hierarchical(m, s_e, s_w)
    assert code.workers_per_edge == tuple(m) and code.n_edges == len(m)
    assert code.n_workers == sum(m) and code.s_edge == s_e
    assert code.s_workers == tuple(s_w if isinstance(s_w, list) else [s_w] * len(m))
    assert code.s_worker == max(code.s_workers)
    assert code.worker_offsets == tuple(int(x) for x in np.cumsum([0, *m[:-1]]))
    assert code.edge_of_worker.tolist() == [e for e, mi in enumerate(m) for _ in range(mi)]
    assert code.load == pytest.approx(code.load_bound)
    assert code.partitions_of_worker == tuple(
        tuple(int(j) for j in np.flatnonzero(row)) for row in code.B
    )
    check_every_alive_set(code)


def test_nodes_left_out_decode_around_them() -> None:
    code = hierarchical_from_counts(
        n_partitions=6,
        s_edge=1,
        edge_partitions=[6, 6, 0],
        s_workers=[1, 0, 0],
        worker_partitions=[[6, 4, 2, 0], [3, 3], [0]],
    )
    assert code.active_edges == (0, 1) and code.active_workers == ((0, 1, 2), (0, 1), ())
    assert code.inner_codes[2] is None and code.n_partitions == 6
    with pytest.raises(NotDecodable, match=r"^edge 2 takes no part in this code$"):
        code.edge_decode_vector(2, [0])
    with pytest.raises(ValueError, match=r"^edge must be in \[0, 3\), got 3$"):
        code.edge_decode_vector(3, [0])
    # worker 3 of edge 0 holds nothing: alive or not, it changes nothing
    assert np.array_equal(code.edge_decode_vector(0, [0, 1, 3]), code.edge_decode_vector(0, [0, 1]))
    assert np.array_equal(code.master_decode_vector([0, 2]), code.master_decode_vector([0]))
    check_every_alive_set(code)


def test_condition_numbers_of_both_layers() -> None:
    code = hierarchical([4, 4, 4], 1, 1)
    layers = code.condition_numbers()
    assert set(layers) == {"edge", "worker"}
    inner = [c.condition_number() for c in code.inner_codes if c is not None]
    assert code.edge_code is not None
    assert layers == {"edge": code.edge_code.condition_number(), "worker": max(inner)}
    assert all(1.0 <= v < 100.0 for v in layers.values())


def test_load_bound() -> None:
    assert hierarchical_load_bound([4, 4], 1, 1) == pytest.approx(2 * 2 / 8)
    assert hierarchical_load_bound([5, 5, 5], 2, 0) == pytest.approx(3 / 15)
    # Water-filling: the edge of capacity 8 / 2 = 4 would need more than a 1 / 2 share, so it
    # saturates (covers everything) and the two others split the second copy.
    assert hierarchical_load_bound([8, 2, 2], 1, [1, 0, 0]) == pytest.approx(0.25)
    assert hierarchical_load_bound([3, 5, 4, 4], 1, [1, 2, 0, 1]) == pytest.approx(12 / 55)
    with pytest.raises(Infeasible, match=r"^s_edge \+ 1 = 3 copies need more than 2 edges$"):
        hierarchical_load_bound([4, 4], 2, 1)


def test_smallest_partitions_make_every_count_whole() -> None:
    assert smallest_partitions([3, 3], 1, [1, 1]) == 3
    assert smallest_partitions([3, 5, 4, 4], 1, [2, 2, 2, 2]) == 8
    assert smallest_partitions([2, 3], 0, [0, 1]) == 7
    with pytest.raises(Infeasible, match=r"^edge 0 would have to cover 1\.500 of the data"):
        smallest_partitions([6, 2], 1, [1, 1])


def test_given_partitions_are_rounded_and_reported() -> None:
    code = hierarchical([4, 4], 1, 1, n_partitions=7)
    assert code.n_partitions == 7 and code.load == pytest.approx(4 / 7)
    assert code.load > code.load_bound
    check_every_alive_set(code)


def test_apportion_is_proportional_capped_and_whole() -> None:
    assert _apportion(10, [1.0, 1.0, 1.0], cap=4) == [4, 3, 3]
    assert _apportion(7, [5.0, 1.0, 1.0], cap=3) == [3, 2, 2]  # the excess moves on
    assert _apportion(5, [1.0, 2.0], cap=10) == [2, 3]
    assert _apportion(0, [1.0, 2.0], cap=1) == [0, 0]
    with pytest.raises(Infeasible, match=r"^cannot place 7 copies with at most 3 per node$"):
        _apportion(7, [1.0, 1.0], cap=3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([3, 3], 2, 1), r"^s_edge must be in \[0, n_edges - 1\] = \[0, 1\], got 2$"),
        (([3, 3], -1, 1), "s_edge must be in"),
        (([3, 3], 1, 3), r"^edge 0: s_worker must be in \[0, m_i - 1\] = \[0, 2\], got 3$"),
        (([3, 3], 1, [1]), r"^s_worker needs one value per edge \(2\), got 1$"),
        (([0, 3], 0, 0), r"^workers_per_edge must be positive integers, got \[0, 3\]$"),
        (([], 0, 0), "workers_per_edge must be positive integers"),
        (([2.5, 3], 0, 0), "workers_per_edge must be positive integers"),
        (([3, 3], 1, 1, 0), r"^n_partitions must be a positive integer, got 0$"),
    ],
)
def test_bad_parameters_name_the_condition(args, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hierarchical(*args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (4, 1, [4, 3], [0, 0], [[4], [3]]),
            r"^edge coverages \[4, 3\] must each be in \[0, K=4\]",
        ),
        ((4, 1, [4, 4], [0, 1], [[4], [4, 3]]), r"^edge 1: worker loads \[4, 3\] must each be"),
        (
            (4, 1, [4, 4], [0, 1], [[4], [8]]),
            r"^edge 1: 1 workers take part, s_worker = 1 needs 2$",
        ),
        ((4, 1, [8, 0], [0, 0], [[8], [0]]), r"^1 edges take part; s_edge = 1 needs at least 2$"),
        ((4, 0, [4, 0], [0, 0], [[4], [1]]), r"^edge 1 covers no partitions but its workers have"),
        (
            (4, 1, [4, 4], [0], [[4], [4]]),
            r"^edge_partitions, s_workers and worker_partitions need",
        ),
    ],
)
def test_bad_counts_name_the_condition(args, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hierarchical_from_counts(*args)


def test_load_bound_is_the_water_level() -> None:
    """The least L with sum_i min(1, L m_i / (s_w_i + 1)) >= s_e + 1, found here by bisection."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 8))
        m = [int(x) for x in rng.integers(1, 20, n)]
        s_w = [int(rng.integers(0, mi)) for mi in m]
        s_e = int(rng.integers(0, n))
        capacity = np.array(m) / (np.array(s_w) + 1.0)
        low, high = 0.0, 1e3
        for _ in range(200):
            middle = (low + high) / 2
            if np.minimum(1.0, middle * capacity).sum() >= s_e + 1 - 1e-15:
                high = middle
            else:
                low = middle
        assert hierarchical_load_bound(m, s_e, s_w) == pytest.approx(high, rel=1e-9), (m, s_e, s_w)


def test_apportion_moves_a_capped_remainder_on() -> None:
    # shares 4.55 and 0.45: the first is capped at 3; the two copies left go to the second
    assert _apportion(5, [10.0, 1.0], cap=3) == [3, 2]
    assert _apportion(6, [1.0, 1.0, 4.0], cap=3) == [2, 1, 3]  # whole shares; ties in order


def test_argument_names_in_decoding_errors() -> None:
    code = hierarchical([3, 3], 1, 1)
    with pytest.raises(ValueError, match=r"^alive_workers must hold indices in \[0, 3\)"):
        code.edge_decode_vector(0, [5])
    with pytest.raises(ValueError, match=r"^alive_edges must hold indices in \[0, 2\)"):
        code.master_decode_vector([7])
    with pytest.raises(ValueError, match=r"^alive_workers must hold indices in \[0, 6\)"):
        code.decode_vector([99])


def test_small_edges_and_one_partition_are_allowed() -> None:
    check_every_alive_set(hierarchical([1, 2], 0, 0))
    check_every_alive_set(hierarchical([2, 2], 0, 0, n_partitions=1))
    check_every_alive_set(hierarchical_from_counts(2, 1, [2, 1, 1], [0, 0, 0], [[2], [1], [1]]))


def test_seed_reaches_both_layers() -> None:
    # (Layers whose subspace is 1- or (N-1)-dimensional are the same for every seed.)
    base = hierarchical([4] * 5, 2, 2)
    assert np.array_equal(base.B, hierarchical([4] * 5, 2, 2, seed=0).B)
    one = hierarchical([4] * 5, 2, 2, draws=1)
    other = hierarchical([4] * 5, 2, 2, seed=1, draws=1)
    assert one.edge_code is not None and other.edge_code is not None
    assert not np.array_equal(one.edge_code.B, other.edge_code.B)
    inner_one, inner_other = one.inner_codes[0], other.inner_codes[0]
    assert inner_one is not None and inner_other is not None
    assert not np.array_equal(inner_one.B, inner_other.B)
    counts = ([2, 2, 2], [1, 1, 1], [[2, 2], [2, 2], [2, 2]])
    assert np.array_equal(
        hierarchical_from_counts(3, 1, *counts).B, hierarchical_from_counts(3, 1, *counts, seed=0).B
    )


def test_inner_codes_are_embedded_over_all_partitions() -> None:
    code = hierarchical([3, 3], 1, 1)
    inner = code.inner_codes[0]
    assert inner is not None and inner.name == "placement"
    assert inner.n_partitions == code.n_partitions and len(inner.holders) == code.n_partitions
    held = set(np.flatnonzero(np.any(code.B[:3] != 0.0, axis=0)).tolist())
    assert all((inner.holders[j] != ()) == (j in held) for j in range(code.n_partitions))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (2, 1, [3, 1, 0], [0, 0, 0], [[3], [1], [0]]),
            r"\[0, K=2\] and add up to K \(s_edge \+ 1\) = 4$",
        ),
        (
            (2, 1, [2, 2], [1, 0], [[3, 1], [2]]),
            r"\[0, c_i=2\] and add up to c_i \(s_worker \+ 1\) = 4$",
        ),
    ],
)
def test_counts_above_the_cap_are_refused(args, message: str) -> None:
    with pytest.raises(Infeasible, match=message):
        hierarchical_from_counts(*args)


def test_infeasible_share_message_says_what_to_do() -> None:
    with pytest.raises(Infeasible) as raised:
        smallest_partitions([6, 2], 1, [1, 1])
    assert str(raised.value) == (
        "edge 0 would have to cover 1.500 of the data (m_i / (s_w_i+1) over the sum must be <= "
        "1 / (s_edge + 1) = 0.500); lower s_edge or give this edge fewer workers, or pass "
        "n_partitions to round"
    )


def test_apportion_caps_a_later_round_too() -> None:
    # round 1: shares 11.65, 0.23, 0.12 -> [4, 1, 1]; round 2 splits the 6 left as 4 and 2,
    # but the second node has room for 3 only, so the last copy needs a third round
    assert _apportion(12, [100.0, 2.0, 1.0], cap=4) == [4, 4, 4]


def test_apportion_breaks_ties_by_position_on_many_nodes() -> None:
    """Equal remainders go to the lowest indices also above 16 nodes (where numpy's default
    sort is not stable)."""
    weights = [1.0, 2.0] * 9  # remainders 1/9 and 2/9 of 3: the three first "2" nodes win
    assert _apportion(3, weights, cap=5) == [0, 1] * 3 + [0] * 12
    assert _apportion(3, [2.0, 1.0] * 10, cap=5) == [1, 0] * 3 + [0] * 14


def test_apportion_without_room_is_refused() -> None:
    with pytest.raises(Infeasible, match=r"^cannot place 1 copies with at most 1 per node$"):
        _apportion(1, [], cap=1)
    with pytest.raises(Infeasible, match=r"^cannot place 2 copies with at most 0 per node$"):
        _apportion(2, [1.0, 1.0], cap=0)


def test_smallest_partitions_needs_every_denominator() -> None:
    # shares 1/2 each but worker loads 1/3: K = lcm(2, 3)
    assert smallest_partitions([3, 3], 0, [1, 1]) == 6
    code = hierarchical([3, 3], 0, 1)
    assert code.n_partitions == 6 and code.load == pytest.approx(code.load_bound)
    with pytest.raises(ValueError, match="zip"):
        smallest_partitions([3, 3], 0, [1])


def test_infeasible_share_names_the_first_edge_above_one() -> None:
    # shares 1, 1.5, 0.5: edge 0 is exactly at its limit, edge 1 above it
    with pytest.raises(Infeasible, match=r"^edge 1 would have to cover 1\.500 of the data"):
        smallest_partitions([2, 3, 1], 2, [0, 0, 0])


def test_load_bound_when_every_edge_holds_everything() -> None:
    # s_e + 1 = n: each edge covers all K partitions, the weakest edge sets the load
    assert hierarchical_load_bound([6, 2], 1, [1, 0]) == 0.5
    assert hierarchical_load_bound([2, 6, 3], 2, [1, 2, 0]) == 1.0
    assert hierarchical_load_bound([5], 0, 1) == 0.4


def test_draws_reach_the_construction() -> None:
    one = hierarchical([4] * 5, 2, 2, draws=1)
    assert one.n_partitions == 20
    counts = ([12] * 5, [2] * 5, [[9] * 4] * 5)
    assert np.array_equal(one.B, hierarchical_from_counts(20, 2, *counts, draws=1).B)
    assert not np.array_equal(one.B, hierarchical([4] * 5, 2, 2).B)


def test_seed_and_draws_reach_the_inner_codes_alone() -> None:
    """Two edges with s_e = 1: the edge layer is one-dimensional, the same for every seed and
    number of draws, so a change of the inner codes comes from their own seed and draws."""
    base = hierarchical([5, 5], 1, 2, draws=1)
    for other in (hierarchical([5, 5], 1, 2, seed=1, draws=1), hierarchical([5, 5], 1, 2)):
        assert base.edge_code is not None and other.edge_code is not None
        assert np.array_equal(base.edge_code.B, other.edge_code.B)
        assert base.inner_codes[0] is not None and other.inner_codes[0] is not None
        assert not np.array_equal(base.inner_codes[0].B, other.inner_codes[0].B)
    # and with five edges and s_e = 2 the edge layer itself depends on the draws
    one, default = hierarchical([4] * 5, 2, 2, draws=1), hierarchical([4] * 5, 2, 2)
    assert one.edge_code is not None and default.edge_code is not None
    assert not np.array_equal(one.edge_code.B, default.edge_code.B)
