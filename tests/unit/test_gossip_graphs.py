"""Graphs, Metropolis mixing matrices and the gossip step of edgecode.learning.gossip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edgecode.errors import Infeasible, InvalidInput
from edgecode.learning.datasets import synthetic_least_squares
from edgecode.learning.gossip import (
    StepSchedule,
    Topology,
    _graph,
    build_topology,
    check_mixing_matrix,
    goco_step,
    gossip_scheme,
    metropolis_weights,
    mix_row,
    parse_graph,
    partition_order,
    peer_step_size,
    place_partitions,
    ring,
    second_largest_modulus,
    torus,
)

#: (spec, n, seed) for every graph kind; the seeds give connected random graphs.
GRAPHS = [
    ("ring", 2, 0),
    ("ring", 12, 0),
    ("ring", 101, 0),
    ("torus", 12, 0),
    ("torus", 4, 0),
    ("torus:rows=2", 10, 0),
    ("torus", 144, 0),
    ("er:p=0.3", 12, 1),
    ("er:p=0.08", 150, 2),
    ("geometric:r=0.4", 12, 2),
    ("geometric:r=0.2", 120, 4),
    ("complete", 7, 0),
]
#: Small enough for pure averaging down to 1e-6 in a fraction of a second each.
RATE_GRAPHS = [
    ("ring", 12, 0),
    ("ring", 41, 0),
    ("torus", 12, 0),
    ("torus", 36, 0),
    ("torus:rows=2", 10, 0),
    ("er:p=0.3", 12, 1),
    ("er:p=0.1", 60, 3),
    ("geometric:r=0.4", 12, 2),
    ("geometric:r=0.25", 60, 3),
]


def _edge_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "edges.txt"
    path.write_text(text)
    return str(path)


def _assert_valid_mixing(topology: Topology) -> None:
    """Symmetric, doubly stochastic to 1e-12, non-negative, positive diagonal, edges only."""
    W = topology.dense()
    n = topology.n_peers
    checks = np.array(
        [
            np.max(np.abs(W - W.T)),
            np.max(np.abs(W.sum(axis=0) - 1.0)),
            np.max(np.abs(W.sum(axis=1) - 1.0)),
        ]
    )
    assert np.all(np.isfinite(checks)) and np.all(checks <= 1e-12), checks
    assert np.all(W >= 0.0) and np.all(np.diag(W) > 0.0)
    allowed = topology.graph.adjacency().toarray() != 0
    np.fill_diagonal(allowed, True)
    assert np.all(W[~allowed] == 0.0)
    assert np.all(W[allowed] > 0.0)
    assert W.shape == (n, n)


@pytest.mark.parametrize(("spec", "n", "seed"), GRAPHS)
def test_every_graph_kind_gives_a_valid_metropolis_matrix(spec: str, n: int, seed: int) -> None:
    topology = build_topology(spec, n, np.random.default_rng(seed))
    assert topology.graph.is_connected
    _assert_valid_mixing(topology)
    assert 0.0 <= topology.slem < 1.0 and topology.spectral_gap > 0.0


def test_edge_list_file_gives_a_valid_metropolis_matrix(tmp_path: Path) -> None:
    text = "# a 5-cycle with a chord\n0 1\n1,2\n2 3  # comment\n\n3 4\n4 0\n0 2\n2 0\n"
    topology = build_topology(_edge_file(tmp_path, text), 5, np.random.default_rng(0))
    assert topology.graph.edges == ((0, 1), (0, 2), (0, 4), (1, 2), (2, 3), (3, 4))
    _assert_valid_mixing(topology)


def test_metropolis_weights_by_hand() -> None:
    triangle = ring(3)  # degrees 2: every weight 1/3
    np.testing.assert_allclose(metropolis_weights(triangle).toarray(), np.full((3, 3), 1 / 3))
    # star centred on 1: degrees 1, 3, 1, 1; every edge touches node 1 -> 1 / (1 + 3)
    star = _graph(4, [(0, 1), (1, 2), (1, 3)], "star")
    expected = np.array(
        [
            [0.75, 0.25, 0.0, 0.0],
            [0.25, 0.25, 0.25, 0.25],
            [0.0, 0.25, 0.75, 0.0],
            [0.0, 0.25, 0.0, 0.75],
        ]
    )
    np.testing.assert_allclose(metropolis_weights(star).toarray(), expected, rtol=0, atol=1e-15)


def test_graph_structure() -> None:
    assert set(ring(12).degrees.tolist()) == {2}
    grid = torus(12)
    assert grid.name == "torus:rows=3" and set(grid.degrees.tolist()) == {4}
    assert set(torus(20, rows=4).degrees.tolist()) == {4}
    complete = parse_graph("complete", 6, np.random.default_rng(0))
    assert set(complete.degrees.tolist()) == {5} and len(complete.edges) == 15


@pytest.mark.parametrize("n", [5, 12, 40])
def test_ring_spectrum_matches_the_closed_form(n: int) -> None:
    # Metropolis ring: W = (I + S + S^-1) / 3, eigenvalues (1 + 2 cos(2 pi k / n)) / 3
    eigen = (1.0 + 2.0 * np.cos(2.0 * np.pi * np.arange(1, n) / n)) / 3.0
    topology = build_topology("ring", n, np.random.default_rng(0))
    assert topology.slem == pytest.approx(float(np.max(np.abs(eigen))), abs=1e-12)


@pytest.mark.parametrize(
    ("spec", "n"),
    [("ring", 120), ("torus", 120), ("er:p=0.1", 120), ("geometric:r=0.25", 120), ("torus", 600)],
)
def test_arpack_spectrum_agrees_with_the_dense_one(spec: str, n: int) -> None:
    topology = build_topology(spec, n, np.random.default_rng(5))  # ARPACK above 500 nodes
    dense = second_largest_modulus(topology.weights, dense_limit=10**6)
    sparse = second_largest_modulus(topology.weights, dense_limit=0)
    errs = np.abs(np.array([dense - sparse, dense - topology.slem]))
    assert np.all(np.isfinite(errs)) and np.all(errs <= 1e-8)


@pytest.mark.parametrize(("spec", "n", "seed"), RATE_GRAPHS)
def test_pure_averaging_converges_at_the_rate_of_the_spectral_gap(
    spec: str, n: int, seed: int
) -> None:
    topology = build_topology(spec, n, np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 100)
    X = rng.standard_normal((n, 3))
    mean = X.mean(axis=0)
    reduction = 1e-6
    rounds = max(20, math.ceil(topology.predicted_rounds(reduction)))
    assert rounds <= 200_000
    errors = [float(np.linalg.norm(X - mean))]
    zero = np.zeros_like(X)
    everyone = np.ones(n, dtype=bool)
    for _ in range(rounds):
        X = goco_step(X, zero, everyone, 1.0, 0.0, topology.weights)
        errors.append(float(np.linalg.norm(X - mean)))
    errs = np.asarray(errors)
    assert np.all(np.isfinite(errs))
    # the mean never moves
    mean_drift = np.abs(X.mean(axis=0) - mean)
    assert np.all(np.isfinite(mean_drift)) and np.all(mean_drift <= 1e-12)
    # never faster than the bound allows: ||X_t - mean|| <= slem^t ||X_0 - mean||
    bound = topology.slem ** np.arange(rounds + 1) * errs[0]
    assert np.all(errs <= bound * (1 + 1e-9) + 1e-13)
    # the asymptotic rate over the second half is the predicted slem, within 20 %
    half = rounds // 2
    measured = math.log(errs[-1] / errs[half]) / (rounds - half)
    predicted = math.log(topology.slem)
    assert abs(measured - predicted) <= 0.2 * abs(predicted), (measured, predicted)


@pytest.mark.parametrize("m", [3, 4])
def test_the_most_negative_eigenvalue_counts(tmp_path: Path, m: int) -> None:
    # complete bipartite K_{m,m}: W = (I + A) / (m + 1), eigenvalues 1, 1 / (m + 1) and
    # (1 - m) / (m + 1), which sets the rate: the deviation flips sign every round
    edges = "".join(f"{i} {m + j}\n" for i in range(m) for j in range(m))
    topology = build_topology(_edge_file(tmp_path, edges), 2 * m, np.random.default_rng(0))
    slem = (m - 1) / (m + 1)
    assert topology.slem == pytest.approx(slem, abs=1e-12)
    X = np.random.default_rng(m).standard_normal((2 * m, 2))
    deviation = X - X.mean(axis=0)
    for _ in range(6):
        X = topology.mix(X)
    after = X - X.mean(axis=0)
    ratio = np.linalg.norm(after) / np.linalg.norm(deviation)
    assert np.isfinite(ratio) and ratio <= slem**6 * (1 + 1e-9)
    sides = np.concatenate([np.ones(m), -np.ones(m)])[:, None]  # the lambda_n eigenvector
    flipped = topology.mix(sides)
    np.testing.assert_allclose(flipped, -slem * sides, rtol=0, atol=1e-14)


def test_a_complete_graph_averages_in_one_round() -> None:
    topology = build_topology("complete", 9, np.random.default_rng(0))
    X = np.random.default_rng(1).standard_normal((9, 4))
    mixed = topology.mix(X)
    err = np.abs(mixed - X.mean(axis=0))
    assert np.all(np.isfinite(err)) and np.all(err <= 1e-12)
    assert topology.slem <= 1e-12 and topology.predicted_rounds(1e-6) == 0.0


@pytest.mark.parametrize(
    ("spec", "n"),
    [("er:p=0.02", 30), ("geometric:r=0.05", 30)],
)
def test_disconnected_random_graphs_are_refused(spec: str, n: int) -> None:
    with pytest.raises(Infeasible, match="disconnected"):
        build_topology(spec, n, np.random.default_rng(0))


def test_disconnected_file_is_refused(tmp_path: Path) -> None:
    path = _edge_file(tmp_path, "0 1\n1 2\n3 4\n")
    with pytest.raises(Infeasible, match="2 components"):
        build_topology(path, 5, np.random.default_rng(0))
    with pytest.raises(Infeasible, match="disconnected"):  # node 5 has no edge at all
        build_topology(_edge_file(tmp_path, "0 1\n1 2\n2 3\n3 4\n"), 6, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("0 0\n", "self-loop"),
        ("0 7\n", "outside"),
        ("0 1 2\n", "line 1"),
        ("a b\n", "line 1"),
        ("0 -1\n", "line 1"),
    ],
)
def test_bad_edge_files_are_refused(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        build_topology(_edge_file(tmp_path, text), 3, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("spec", "n", "error", "match"),
    [
        ("torus", 13, Infeasible, "no factorisation"),
        ("torus:rows=5", 12, Infeasible, "must divide"),
        ("torus:rows=x", 12, ValueError, "rows"),
        ("er", 12, ValueError, "needs p"),
        ("er:p=abc", 12, ValueError, "number"),
        ("er:p=1.5", 12, ValueError, r"\(0, 1\]"),
        ("er:q=0.2", 12, ValueError, "bad option"),
        ("ring:rows=3", 12, ValueError, "takes no options"),
        ("geometric:r=0", 12, ValueError, "geometric: r"),
        ("ring", 1, ValueError, "n must be"),
        ("/no/such/file.txt", 12, ValueError, "neither a graph kind"),
    ],
)
def test_bad_specs_name_the_problem(spec: str, n: int, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build_topology(spec, n, np.random.default_rng(0))


def test_check_mixing_matrix_refuses_bad_matrices() -> None:
    graph = ring(4)
    good = metropolis_weights(graph).toarray()
    check_mixing_matrix(good, graph)
    asymmetric = good.copy()
    asymmetric[0, 1] += 1e-9
    asymmetric[0, 0] -= 1e-9
    with pytest.raises(Infeasible, match="symmetric"):
        check_mixing_matrix(asymmetric, graph)
    scaled = good * (1 + 1e-9)
    with pytest.raises(Infeasible, match="doubly stochastic"):
        check_mixing_matrix(scaled, graph)
    shortcut = good.copy()  # 0 and 2 are not neighbours on the 4-ring
    shortcut[0, 2] = shortcut[2, 0] = 0.1
    shortcut[0, 0] -= 0.1
    shortcut[2, 2] -= 0.1
    with pytest.raises(Infeasible, match="not neighbours"):
        check_mixing_matrix(shortcut, graph)
    negative = np.array([[1.5, -0.5, 0, 0], [-0.5, 1.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    with pytest.raises(Infeasible, match="non-negative"):
        check_mixing_matrix(negative, graph)
    with pytest.raises(Infeasible, match="shape"):
        check_mixing_matrix(np.eye(3), graph)


def test_mix_row_with_everyone_is_the_row_of_w() -> None:
    topology = build_topology("torus", 12, np.random.default_rng(0))
    X = np.random.default_rng(1).standard_normal((12, 5))
    full = topology.mix(X)
    for peer in range(12):
        neighbours, weights, self_weight = topology.row(peer)
        row = mix_row(
            X[peer],
            self_weight,
            dict(zip(neighbours, weights, strict=True)),
            {n: X[n] for n in neighbours},
        )
        err = np.abs(row - full[peer])
        assert np.all(np.isfinite(err)) and np.all(err <= 1e-14)


def test_mix_row_moves_missing_weight_onto_the_own_value() -> None:
    own = np.array([1.0, 2.0])
    value = np.array([5.0, -1.0])
    mixed = mix_row(own, 0.4, {3: 0.35, 7: 0.25}, {7: value})
    np.testing.assert_allclose(mixed, 0.75 * own + 0.25 * value, rtol=0, atol=1e-15)
    # a constant vector stays constant whatever is missing: the row sums to 1
    ones = np.ones(3)
    for received in ({}, {3: ones}, {7: ones}, {3: ones, 7: ones}):
        err = np.abs(mix_row(ones, 0.4, {3: 0.35, 7: 0.25}, received) - 1.0)
        assert np.all(err <= 1e-15)


def test_a_link_lost_both_ways_preserves_the_mean() -> None:
    topology = build_topology("er:p=0.5", 10, np.random.default_rng(3))
    X = np.random.default_rng(4).standard_normal((10, 3))
    lost = set(topology.graph.edges[::3])  # drop every third edge, in both directions
    mixed = np.empty_like(X)
    for peer in range(10):
        neighbours, weights, self_weight = topology.row(peer)
        received = {n: X[n] for n in neighbours if (min(peer, n), max(peer, n)) not in lost}
        mixed[peer] = mix_row(
            X[peer], self_weight, dict(zip(neighbours, weights, strict=True)), received
        )
    drift = np.abs(mixed.mean(axis=0) - X.mean(axis=0))
    assert np.all(np.isfinite(drift)) and np.all(drift <= 1e-14)


def test_goco_step_by_hand() -> None:
    W = np.array([[0.5, 0.5, 0.0], [0.5, 0.25, 0.25], [0.0, 0.25, 0.75]])
    X = np.array([[1.0], [2.0], [3.0]])
    G = np.array([[10.0], [20.0], [30.0]])
    out = goco_step(X, G, np.array([True, False, True]), 2.0, 0.1, W)
    stepped = np.array([[1.0 - 2.0], [2.0], [3.0 - 6.0]])
    np.testing.assert_allclose(out, W @ stepped, rtol=0, atol=1e-15)


def test_schemes() -> None:
    goco = gossip_scheme("goco", 6, 0.5, replication=3)
    assert goco.replication == 3 and goco.coefficient == pytest.approx(1 / 1.5)
    assert not goco.waits
    gossip = gossip_scheme("gossip", 6, 0.5, replication=3)
    assert gossip.replication == 1 and gossip.coefficient == 1.0 and not gossip.waits
    wait = gossip_scheme("gossip-wait", 6, 0.5)
    assert wait.replication == 1 and wait.coefficient == 1.0 and wait.waits
    with pytest.raises(ValueError, match="scheme must be one of"):
        gossip_scheme("push-sum", 6, 0.5)


def test_step_schedule_and_peer_step() -> None:
    schedule = StepSchedule(0.2, decay_rounds=10.0)
    assert [schedule.at(t) for t in (0, 10, 30)] == pytest.approx([0.2, 0.1, 0.05])
    assert StepSchedule(0.3).at(10**6) == 0.3
    assert peer_step_size(0.5, 12, 1200) == pytest.approx(0.005)
    with pytest.raises(ValueError, match="decay_rounds"):
        StepSchedule(0.1, decay_rounds=0.0)
    with pytest.raises(ValueError, match="initial"):
        StepSchedule(float("nan"))


def test_non_iid_partitions_are_sorted_by_label() -> None:
    data = synthetic_least_squares(103, 3, np.random.default_rng(0), noise=0.1)
    code = gossip_scheme("goco", 5, 0.3, replication=2).code
    placed = place_partitions(data, code, non_iid=True)
    labels = {}
    for peer, parts in enumerate(placed):
        for j, (_, y) in zip(code.partitions_of_worker[peer], parts, strict=True):
            labels[j] = y
    for j in range(4):
        assert labels[j].max() <= labels[j + 1].min()
    rows = sum(len(y) for parts in placed for _, y in parts)
    assert rows == 2 * 103  # every row on exactly d = 2 peers
    order = partition_order(data, non_iid=False)
    np.testing.assert_array_equal(order, np.arange(103))
    iid = place_partitions(data, code, non_iid=False)
    np.testing.assert_array_equal(iid[0][0][1], data.y[:21])
