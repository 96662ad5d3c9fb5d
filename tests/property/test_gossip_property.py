"""Gossip mixing and GOCO's coded gradients hold for EVERY graph drawn and EVERY straggler pattern."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgecode.errors import Infeasible
from edgecode.learning.gossip import Topology, build_topology, gossip_scheme, mix_row

SPECS = st.sampled_from(["er:p=0.3", "er:p=0.6", "geometric:r=0.5", "ring", "torus", "complete"])


def _topology(spec: str, n: int, seed: int) -> Topology:
    try:
        return build_topology(spec, n, np.random.default_rng(seed))
    except Infeasible:  # a disconnected draw, or a torus on a prime n: refused, as it must be
        assume(False)
        raise


@settings(max_examples=60, deadline=None)
@given(spec=SPECS, n=st.integers(3, 30), seed=st.integers(0, 2**32 - 1))
def test_metropolis_matrix_is_symmetric_doubly_stochastic_and_contracts(
    spec: str, n: int, seed: int
) -> None:
    topology = _topology(spec, n, seed)
    W = topology.dense()
    errs = np.array(
        [
            np.max(np.abs(W - W.T)),
            np.max(np.abs(W.sum(axis=0) - 1)),
            np.max(np.abs(W.sum(axis=1) - 1)),
        ]
    )
    assert np.all(np.isfinite(errs)) and np.all(errs <= 1e-12)
    assert topology.slem < 1.0
    X = np.random.default_rng(seed ^ 1).standard_normal((n, 3))
    mean = X.mean(axis=0)
    mixed = topology.mix(X)
    drift = np.abs(mixed.mean(axis=0) - mean)
    assert np.all(np.isfinite(drift)) and np.all(drift <= 1e-12)
    before = np.linalg.norm(X - mean)
    after = np.linalg.norm(mixed - mean)
    assert np.isfinite(after) and after <= topology.slem * before * (1 + 1e-9) + 1e-12


@settings(max_examples=60, deadline=None)
@given(
    spec=SPECS,
    n=st.integers(3, 16),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_lost_links_keep_rows_stochastic_and_symmetric_losses_keep_the_mean(
    spec: str, n: int, seed: int, data: st.DataObject
) -> None:
    topology = _topology(spec, n, seed)
    edges = topology.graph.edges
    lost_both = set(data.draw(st.sets(st.sampled_from(edges)), label="lost both ways"))
    lost_one = set(
        data.draw(st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))), label="one way")
    )
    X = np.random.default_rng(seed ^ 2).standard_normal((n, 2))

    def mixed_network(drop_one_way: bool) -> np.ndarray:
        out = np.empty_like(X)
        for peer in range(n):
            neighbours, weights, self_weight = topology.row(peer)
            received = {
                other: X[other]
                for other in neighbours
                if (min(peer, other), max(peer, other)) not in lost_both
                and not (drop_one_way and (other, peer) in lost_one)
            }
            table = dict(zip(neighbours, weights, strict=True))
            out[peer] = mix_row(X[peer], self_weight, table, received)
            # a constant vector stays put: the row with the missing weight moved still sums to 1
            ones = mix_row(
                np.ones(1), self_weight, table, {other: np.ones(1) for other in received}
            )
            assert abs(float(ones[0]) - 1.0) <= 1e-14
        return out

    drift = np.abs(mixed_network(False).mean(axis=0) - X.mean(axis=0))
    assert np.all(np.isfinite(drift)) and np.all(drift <= 1e-12)
    # one-way losses move the mean but never leave the convex hull of the values
    one_way = mixed_network(True)
    assert np.all(one_way >= X.min(axis=0) - 1e-12) and np.all(one_way <= X.max(axis=0) + 1e-12)


def _exact_expected_sum(scheme_name: str, n: int, d: int, p: float, G: np.ndarray) -> np.ndarray:
    """E[sum_i g_i] over all 2^n straggler patterns, g_i = [alive_i] c sum_{j in D_i} G_j."""
    scheme = gossip_scheme(scheme_name, n, p, replication=d)
    sums = (scheme.code.B != 0).astype(float) @ G  # row i: sum of peer i's partial gradients
    expectation = np.zeros(G.shape[1])
    total_probability = 0.0
    for pattern in itertools.product([False, True], repeat=n):
        alive = np.array(pattern)
        probability = scheme.code.pattern_probability(alive)
        expectation += probability * scheme.coefficient * sums[alive].sum(axis=0)
        total_probability += probability
    assert abs(total_probability - 1.0) <= 1e-12
    return expectation


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 8),
    data=st.data(),
    p=st.sampled_from([0.05, 0.3, 0.5, 0.7, 0.95]),
    seed=st.integers(0, 2**32 - 1),
)
def test_goco_coded_gradients_are_unbiased_over_every_pattern(
    n: int, data: st.DataObject, p: float, seed: int
) -> None:
    d = data.draw(st.integers(1, n), label="d")
    G = np.random.default_rng(seed).standard_normal((n, 3)) * 10
    full = G.sum(axis=0)
    err = np.abs(_exact_expected_sum("goco", n, d, p, G) - full)
    assert np.all(np.isfinite(err)) and np.all(err <= 1e-12 * max(1.0, np.abs(G).sum()))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 8), p=st.sampled_from([0.3, 0.5, 0.7]), seed=st.integers(0, 2**32 - 1))
def test_uncoded_gossip_is_biased_by_the_straggle_probability(n: int, p: float, seed: int) -> None:
    # the baseline steps with weight 1 and skips stragglers: E[sum g_i] = (1 - p) sum_j G_j
    G = np.random.default_rng(seed).standard_normal((n, 2))
    err = np.abs(_exact_expected_sum("gossip", n, 1, p, G) - (1 - p) * G.sum(axis=0))
    assert np.all(np.isfinite(err)) and np.all(err <= 1e-12 * max(1.0, np.abs(G).sum()))
