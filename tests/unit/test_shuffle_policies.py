"""Shuffle policies and transfer plans (edgecode.planning.shuffle)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecode.codes import cyclic_repetition, fractional_repetition
from edgecode.planning.shuffle import (
    Assignment,
    aware_shuffle,
    plan_transfers,
    random_shuffle,
    shuffle,
)


def _cyclic_support(n: int, s: int) -> np.ndarray:
    """The support of the cyclic repetition code (worker i holds i..i+s mod n): the policies
    only look at which partitions a row holds, so the coefficients do not matter here."""
    return sum(np.roll(np.eye(n), u, axis=1) for u in range(s + 1))


def _risk(B: np.ndarray, assignment: Assignment, p: np.ndarray) -> np.ndarray:
    return np.array([np.prod(p[list(h)]) for h in assignment.holders(B)])


def _slow_pattern(n: int, slow: int, seed: int) -> np.ndarray:
    p = np.full(n, 0.05)
    p[np.random.default_rng(seed).choice(n, slow, replace=False)] = 0.8
    return p


def test_assignment_views() -> None:
    B = fractional_repetition(4, 1).B
    a = Assignment((2, 0, 3, 1))
    assert a.partitions_of(B) == ((2, 3), (0, 1), (2, 3), (0, 1))
    assert a.holders(B) == ((1, 3), (1, 3), (0, 2), (0, 2))
    np.testing.assert_array_equal(a.sender_matrix(B), B[[2, 0, 3, 1]])
    with pytest.raises(ValueError, match="permutation"):
        Assignment((0, 0, 1))
    with pytest.raises(ValueError, match="code matrix"):
        a.partitions_of(np.ones((3, 2)))


def test_transfers_realise_the_new_assignment() -> None:
    B = cyclic_repetition(8, 2).B
    before, after = Assignment.identity(8), Assignment((3, 1, 7, 0, 2, 6, 5, 4))
    sizes = np.arange(10, 18)
    transfers = plan_transfers(B, before, after, sizes)
    old = [set(p) for p in before.partitions_of(B)]
    new = [set(p) for p in after.partitions_of(B)]
    received: list[set[int]] = [set() for _ in range(8)]
    for t in transfers:
        assert t.partition in old[t.source] and t.partition not in old[t.destination]
        assert t.bytes == sizes[t.partition]
        received[t.destination].add(t.partition)
    assert [old[w] | received[w] >= new[w] for w in range(8)] == [True] * 8
    assert len(transfers) == sum(len(new[w] - old[w]) for w in range(8))
    sent = np.bincount([t.source for t in transfers], minlength=8)
    assert sent.max() - sent.min() <= 2  # uploads spread over the holders


def test_random_shuffle_is_uniform_and_reproducible() -> None:
    B = fractional_repetition(6, 1).B
    start = Assignment.identity(6)
    first = random_shuffle(B, start, np.random.default_rng(3))
    assert first == random_shuffle(B, start, np.random.default_rng(3))
    rng = np.random.default_rng(4)
    counts = np.zeros((6, 6))
    draws = 3000
    for _ in range(draws):
        rows = random_shuffle(B, start, rng).after.rows
        counts[np.arange(6), rows] += 1
    # each worker plays each row w.p. 1/6: 500 expected, sd ~ 20
    assert np.all(np.abs(counts - draws / 6) < 100), counts


def test_random_shuffle_respects_the_budget() -> None:
    B = cyclic_repetition(20, 3, draws=1).B
    for budget in (0, 5, 17, 40):
        moved = random_shuffle(
            B, Assignment.identity(20), np.random.default_rng(budget), None, budget
        )
        assert moved.bytes_moved <= budget
    assert moved.bytes_moved > 20  # a budget of 40 is really used


@pytest.mark.parametrize("code", ["frc", "crc"])
def test_aware_gives_every_partition_an_active_holder(code: str) -> None:
    n, s = 60, 2
    B = fractional_repetition(n, s).B if code == "frc" else _cyclic_support(n, s)
    assert (
        code == "frc" or _cyclic_support(8, 2).tolist() == (cyclic_repetition(8, 2).B != 0).tolist()
    )
    had_slow_only = 0
    for seed in range(5):
        p = _slow_pattern(n, 20, seed)
        before = _risk(B, Assignment.identity(n), p)
        moved = aware_shuffle(B, Assignment.identity(n), p)
        after = _risk(B, moved.after, p)
        slow_only = [all(p[h] > 0.5 for h in held) for held in moved.after.holders(B)]
        assert not any(slow_only), seed
        assert after.max() <= 0.8 * 0.05 * 0.8, seed
        # a partition held only by slow workers is worth moving; smaller gains (below
        # MIN_SWAP_GAIN per swap) are not, so the total may stay the same
        if before.max() > 0.8**3 - 1e-12:
            had_slow_only += 1
            assert after.sum() < before.sum(), seed
        else:
            assert after.sum() <= before.sum(), seed
        # stable: nothing left to improve, so the next shuffle moves nothing
        assert aware_shuffle(B, moved.after, p).partitions_moved == 0
    assert had_slow_only >= 2  # the strict case is exercised


def test_aware_parts_adjacent_slow_workers_of_the_cyclic_code() -> None:
    """bench shuffle's crc cluster: 10 workers, s = 1, workers 0, 1 and 7 slow (the filter
    predicts about 0.77 for them). The first shuffle parts workers 0 and 1, so no partition is
    held by two slow workers."""
    B = cyclic_repetition(10, 1).B
    p = np.full(10, 0.05)
    p[[0, 1, 7]] = 0.77
    moved = aware_shuffle(B, Assignment.identity(10), p)
    pairs = [sorted(p[list(h)]) for h in moved.after.holders(B)]
    assert all(low < 0.5 for low, _ in pairs), pairs
    assert 0 < moved.partitions_moved <= 8


def test_aware_does_not_chase_one_late_answer() -> None:
    """After that shuffle one active worker next to a slow one answers late once: the master's
    filter lifts its straggle probability to about 0.27. Moving the slow worker away again
    gains about 0.17, below MIN_SWAP_GAIN, so nothing moves; a worker that has
    really turned slow (0.77) is moved away from."""
    B = cyclic_repetition(10, 1).B
    p = np.full(10, 0.05)
    p[[0, 3, 7]] = 0.77  # no two slow workers adjacent: partition j is held by j-1 and j
    settled = Assignment.identity(10)
    assert aware_shuffle(B, settled, p).partitions_moved == 0
    noisy = p.copy()
    noisy[1] = 0.27  # worker 1 shares partition 1 with slow worker 0
    assert aware_shuffle(B, settled, noisy).partitions_moved == 0
    assert aware_shuffle(B, settled, noisy, min_swap_gain=0.0).partitions_moved > 0  # chases it
    turned = p.copy()
    turned[1] = 0.77
    moved = aware_shuffle(B, settled, turned)
    assert moved.partitions_moved > 0
    assert all(min(turned[list(h)]) < 0.5 for h in moved.after.holders(B))


def test_aware_moves_nothing_when_workers_look_alike() -> None:
    B = cyclic_repetition(12, 2).B
    moved = aware_shuffle(B, Assignment((5, 3, 1, 0, 2, 4, 6, 8, 7, 9, 11, 10)), np.full(12, 0.1))
    assert moved.partitions_moved == 0 and moved.after == moved.before


def test_aware_respects_the_budget_and_still_helps() -> None:
    n = 60
    B = fractional_repetition(n, 1).B
    p = np.full(n, 0.05)
    p[:20] = 0.8  # ten all-slow pairs
    sizes = np.full(n, 1000)
    free = aware_shuffle(B, Assignment.identity(n), p, sizes)
    for budget in (0, 3999, 4000, 12_000):
        moved = aware_shuffle(B, Assignment.identity(n), p, sizes, budget)
        assert moved.bytes_moved <= budget
        assert _risk(B, moved.after, p).sum() <= _risk(B, moved.before, p).sum()
    assert moved.bytes_moved > 0 and free.bytes_moved >= moved.bytes_moved
    # one swap moves 2 x 2 partitions of 1000 bytes
    assert aware_shuffle(B, Assignment.identity(n), p, sizes, 3999).bytes_moved == 0
    assert aware_shuffle(B, Assignment.identity(n), p, sizes, 4000).bytes_moved == 4000


def test_dispatch_and_validation() -> None:
    B = fractional_repetition(4, 1).B
    start = Assignment.identity(4)
    rng = np.random.default_rng(0)
    assert shuffle("random", B, start, rng=rng).after.n_workers == 4
    assert shuffle("aware", B, start, rng=rng, straggle_probability=np.full(4, 0.2)).transfers == ()
    with pytest.raises(ValueError, match="policy"):
        shuffle("sorted", B, start, rng=rng)
    with pytest.raises(ValueError, match="straggle_probability"):
        shuffle("aware", B, start, rng=rng)
    with pytest.raises(ValueError, match="straggle_probability"):
        aware_shuffle(B, start, np.array([0.1, 2.0, 0.1, 0.1]))
    with pytest.raises(ValueError, match="partition_bytes"):
        random_shuffle(B, start, rng, partition_bytes=[1, 2])
    with pytest.raises(ValueError, match="budget_bytes"):
        random_shuffle(B, start, rng, budget_bytes=-1)
