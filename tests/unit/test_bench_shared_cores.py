"""The shared-cores simulation's bookkeeping (edgecode.bench.shared_cores), without processes:
which answers end a round under each plan, what the coordinator would know after profiling."""

from __future__ import annotations

import numpy as np

from edgecode.bench.shared_cores import PLANS, _fractions, _plans, _spec, _tau
from edgecode.planning.hosts import host_arrays
from edgecode.planning.plans import check_plan


def ends(name: str, answered: set[str]) -> bool:
    _, edges, needed = _fractions(_plans()[name])
    return sum(sum(w in answered for w in ws) >= need for ws, need in edges) >= needed


def test_every_plan_is_valid_and_ends_its_round_on_the_right_answers() -> None:
    plans = _plans()
    assert list(plans) == list(PLANS)
    spec = _spec(
        {w: [(0.5, 0.01, 0.02, 0.03, 0.04)] * 3 for w in ("w0", "w1", "w2", "w3")}, 2.0, False
    )
    for plan in plans.values():
        check_plan(plan, spec)
    everyone = {"w0", "w1", "w2", "w3"}
    cases = {
        "full (1,1)": ({"w3"}, set()),
        "edge copies (1,0)": ({"w2", "w3"}, {"w0", "w2"}),
        "worker copies (0,1)": ({"w1", "w2"}, {"w0", "w1"}),
        "split (0,0)": (everyone, everyone - {"w1"}),
        "two copies (1,-)": ({"w2"}, {"w1", "w3"}),
        "two halves (0,-)": ({"w0", "w2"}, {"w0", "w1", "w3"}),
    }
    for name, (enough, short) in cases.items():
        assert ends(name, enough), name
        assert not ends(name, short), name
    fractions, _, _ = _fractions(plans["two halves (0,-)"])
    assert fractions == {"w0": 0.5, "w1": 0.0, "w2": 0.5, "w3": 0.0}


def test_the_profile_gives_fits_cpu_and_the_stretch_of_the_workers_that_computed() -> None:
    rng = np.random.default_rng(4)
    answers: dict[str, list[tuple[float, ...]]] = {"w1": [], "w3": []}
    for name in ("w0", "w2"):  # (fraction, cpu, compute wall, compute + wait, response)
        cpu = 0.02 * np.ones(30)
        wall = cpu * 6.0  # (2 + L) / 2 = 6: L = 10 on 2 cores
        total = wall + rng.exponential(0.01, 30)
        answers[name] = [
            (0.5, c, w, t, t + 0.003) for c, w, t in zip(cpu, wall, total, strict=True)
        ]
    spec = _spec(answers, 2.0, stretch=True)
    workers = {w.name: w for e in spec.edges for w in e.workers}
    assert {n: w.compute_stretch for n, w in workers.items()} == {
        "w0": 6.0,
        "w1": 0.0,
        "w2": 6.0,
        "w3": 0.0,
    }
    assert all(abs(w.cpu_seconds - 0.04) <= 1e-12 for w in workers.values())
    assert workers["w1"].shift == workers["w0"].shift  # the idle partner takes w0's fit
    assert all(abs(w.link_seconds - 0.003) <= 1e-9 for w in workers.values())
    arrays = host_arrays(spec)
    assert arrays is not None and abs(arrays.load[0] - 10.0) <= 1e-9
    plain = host_arrays(_spec(answers, 2.0, stretch=False))
    assert plain is not None and plain.load.tolist() == [0.0]


def test_kendall_tau() -> None:
    assert _tau([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]) == 1.0
    assert _tau([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == -1.0
    assert _tau([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) == 1 / 3
