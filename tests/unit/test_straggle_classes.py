"""The --straggle-classes spec, the class filter and lateness (edgecode.straggle_classes)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecode.emulation import parse_straggle
from edgecode.planning.spec import WorkerSpec
from edgecode.stragglers import (
    ClassFilter,
    StraggleClasses,
    lateness,
    parse_straggle_classes,
    sample_markov,
    sample_markov_classes,
)


def test_parse_the_issue_example() -> None:
    c = parse_straggle_classes("slow=3:p=0.8,active:p=0.05,q_as=0.02,q_sa=0.05")
    assert c == StraggleClasses(3, (), 0.8, 0.05, 0.02, 0.05, 5.0)
    assert not c.fixed


def test_parse_named_and_defaults() -> None:
    c = parse_straggle_classes(" slow=edge-0-w1+edge-1-w2 , factor=10")
    assert c.slow_count == 2 and c.slow_names == ("edge-0-w1", "edge-1-w2")
    assert (c.p_slow, c.p_active, c.slow_factor, c.fixed) == (1.0, 0.0, 10.0, True)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "active:p=0.1",  # no slow item
        "slow:p=0.8",  # slow without a count
        "slow=2.5",
        "slow=a++b",
        "slow=2:q=0.3",
        "slow=2,active=3",
        "slow=2,q_as=0.1:p=0.2",
        "slow=2,speed=3",
        "slow=2,q_as=x",
        "slow=2:p=1.5",
        "slow=2,factor=0.5",
        "slow=a+a",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"straggle-classes|slow|p_slow|factor"):
        parse_straggle_classes(text)


def test_pick_slow_from_seed_or_names() -> None:
    names = [f"edge-{e}-w{w}" for e in range(3) for w in range(4)]
    c = parse_straggle_classes("slow=4:p=0.9")
    picks = [c.pick_slow(names, np.random.default_rng(seed)) for seed in range(20)]
    assert picks[0] == c.pick_slow(names, np.random.default_rng(0))  # reproducible from seed
    assert all(len(p) == 4 and set(p) <= set(names) for p in picks)
    assert all(list(p) == [n for n in names if n in p] for p in picks)  # in names order
    assert len(set(picks)) > 10  # really random across seeds
    named = parse_straggle_classes("slow=edge-2-w0+edge-0-w3")
    assert named.pick_slow(names, np.random.default_rng(0)) == ("edge-0-w3", "edge-2-w0")
    with pytest.raises(ValueError, match="unknown"):
        parse_straggle_classes("slow=nobody").pick_slow(names, np.random.default_rng(0))
    with pytest.raises(ValueError, match="only 12"):
        parse_straggle_classes("slow=13").pick_slow(names, np.random.default_rng(0))


def test_worker_specs_round_trip_through_the_worker_parser() -> None:
    c = parse_straggle_classes("slow=1:p=0.8,active:p=0.05,q_as=0.02,q_sa=0.05,factor=7")
    for slow in (True, False):
        parsed = parse_straggle(c.straggle_spec(slow)).spec
        expected = c.worker_spec("worker", slow, shift=0.0, rate=parsed.rate)
        assert parsed == expected
        assert isinstance(expected, WorkerSpec) and expected.model == "markov"


def _observe(truth: np.ndarray, rounds: int, wait: int, seed: int) -> np.ndarray:
    """Lateness of n nodes over ``rounds`` when the master ends each round at the wait-th
    answer, from response times drawn with the two-class sampler (rate 4: spread 0.25 s)."""
    rng = np.random.default_rng(seed)
    times = np.column_stack(
        [
            sample_markov(1.0, 4.0, 0.8, 0.05, 0, 0, 5.0, 0.05, rounds, rng, slow=bool(t))
            for t in truth
        ]
    )
    late = []
    for row in times:
        end = np.sort(row)[wait - 1]
        late.append(lateness(np.where(row <= end, row, np.nan)))
    return np.array(late)


@pytest.mark.parametrize("seed", range(8))
def test_filter_finds_persistent_slow_nodes_within_a_few_rounds(seed: int) -> None:
    n, slow = 100, 20
    truth = np.zeros(n, dtype=bool)
    truth[np.random.default_rng(1000 + seed).choice(n, slow, replace=False)] = True
    late = _observe(truth, 20, wait=80, seed=seed)
    f = ClassFilter.from_classes(StraggleClasses(slow, (), 0.8, 0.05), n, wait=80)
    errors = []
    for row in late:
        f.update(row)
        errors.append(int(np.sum(f.classify() != truth)))
    assert errors[7] <= 3, errors  # 8 rounds: at most 3 of 100 wrong
    assert errors[-1] == 0, errors  # 20 rounds: every node right
    assert np.all(f.straggle_probability()[truth] > 0.7)
    assert np.all(f.straggle_probability()[~truth] < 0.1)


def test_filter_tracks_changing_classes_better_than_the_last_round() -> None:
    rng = np.random.default_rng(5)
    n, rounds = 60, 300
    q_as, q_sa = 0.02, 0.05
    classes = np.column_stack([sample_markov_classes(q_as, q_sa, rounds, rng) for _ in range(n)])
    late = rng.random((rounds, n)) < np.where(classes, 0.8, 0.05)
    f = ClassFilter(n, 0.8, 0.05, q_as, q_sa)
    right = np.array([f.update(row) > 0.5 for row in late]) == classes
    naive = late == classes  # "slow if it was late this round"
    assert classes.mean() > 0.15  # the chain really moved
    error, naive_error = 1 - right[50:].mean(), 1 - naive[50:].mean()
    assert error <= 0.07 and error < 0.7 * naive_error, (error, naive_error)


def test_filter_skips_unobserved_nodes_and_checks_shapes() -> None:
    f = ClassFilter(3, 0.8, 0.05, 0.0, 0.0, prior_slow=0.3)
    before = f.slow_probability
    after = f.update([True, True, False], observed=[True, False, True])
    assert after[0] > before[0] and after[1] == pytest.approx(before[1]) and after[2] < before[2]
    with pytest.raises(ValueError, match="shape"):
        f.update([True, False])
    with pytest.raises(ValueError, match="prior_slow"):
        ClassFilter(3, 0.8, 0.05, 0.0, 0.0, prior_slow=2.0)
    with pytest.raises(ValueError, match="p_slow"):
        ClassFilter(3, 1.8, 0.05, 0.0, 0.0)


def test_filter_late_probabilities_account_for_the_wait() -> None:
    c = StraggleClasses(20, (), 0.8, 0.05)
    plain = ClassFilter.from_classes(c, 100)
    cut = ClassFilter.from_classes(c, 100, wait=60)  # 80 expected on time, 20 of them cut
    np.testing.assert_allclose(plain.straggle_probability(), 0.2 * 0.8 + 0.8 * 0.05)
    np.testing.assert_allclose(
        cut.straggle_probability(), 0.2 * (0.8 + 0.2 * 0.25) + 0.8 * (0.05 + 0.95 * 0.25)
    )


def test_lateness() -> None:
    times = np.array([1.0, 1.1, 0.9, 2.5, np.nan, np.inf, 1.0])
    assert lateness(times).tolist() == [False, False, False, True, True, True, False]
    assert lateness(times, late_factor=3.0)[3] == np.False_
    assert lateness(np.full(3, np.nan)).all()
    with pytest.raises(ValueError, match="late_factor"):
        lateness(times, late_factor=0.0)
