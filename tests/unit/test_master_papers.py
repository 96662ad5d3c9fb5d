"""Papers 2 and 3 in the master's engine, in-process: partial recovery (``partial``) and
approximate decoding (``approx``) run whole jobs over real edge and worker logic (no sockets).

The gradient of every round is read back from the parameters: with plain gradient descent,
``g_t = (x_t - x_{t+1}) n / lr``; it must be ``scale * sum_{j in R} g_j(x_t)`` for a recovered set
R of at least ceil(alpha K) partitions (partial), or the exact gradient whenever every worker
answered (approx with wait = n).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from inprocess import grid
from test_master_logic import Harness, assert_exact, job_config, reference

from edgecode.learning.datasets import load_split
from edgecode.learning.models import get_model
from edgecode.records import SUCCEEDED, JobConfig

LR = 0.5


@pytest.fixture
def harness() -> Iterator[Harness]:
    made = Harness(topology=grid(3, 3))
    yield made
    made.close()


def partition_gradients(config: JobConfig, params: np.ndarray, K: int) -> np.ndarray:
    """g_j(params) of every partition j (the worker's view: L2 shared as 1/K each)."""
    rng = np.random.default_rng(config.seed)
    train, _ = load_split(config.dataset, rng)
    model = get_model(config.model or train.default_model, l2=config.l2)
    return np.stack(
        [model.gradient(params, X, y, reg_share=1.0 / K) for X, y in train.partition(K)]
    )


def initial_params(config: JobConfig) -> np.ndarray:
    rng = np.random.default_rng(config.seed)
    train, _ = load_split(config.dataset, rng)
    model = get_model(config.model or train.default_model, l2=config.l2)
    return model.init_params(rng, train.n_features, train.n_classes)


def applied_gradients(config: JobConfig, history: list[np.ndarray]) -> list[np.ndarray]:
    rng = np.random.default_rng(config.seed)
    train, _ = load_split(config.dataset, rng)
    points = [initial_params(config), *history]
    return [(a - b) * train.n_rows / LR for a, b in itertools.pairwise(points)]


def test_partial_with_alpha_one_is_exact(harness: Harness) -> None:
    config = job_config("partial", alpha=1.0, partial_design="cyclic", optimizer="gd", s_flat=2)
    harness.transport.workers.slow = lambda worker, round_: worker in ("w1", "w5")
    job = harness.run(config)
    assert job.state == SUCCEEDED, job.message
    assert_exact(job.param_history, reference(config)[0])
    assert all(r.recovered_fraction == 1.0 for r in job.history)


@pytest.mark.parametrize(
    ("design", "alpha", "slow"),
    [("cyclic", 0.8, ("w1", "w5")), ("subset", 0.75, ("w0", "w4")), ("cyclic", 0.6, ("w2",))],
)
def test_partial_recovers_at_least_alpha_of_the_partitions_exactly(
    harness: Harness, design: str, alpha: float, slow: tuple[str, ...]
) -> None:
    """Every round's gradient is (K / |R|) times the plain sum of a recovered set R with
    |R| >= ceil(alpha K): found by enumerating every candidate set."""
    config = job_config(
        "partial",
        alpha=alpha,
        partial_design=design,
        optimizer="gd",
        learning_rate=LR,
        s_flat=2,
        rounds=4,
    )
    harness.transport.workers.slow = lambda worker, round_: worker in slow
    job = harness.run(config)
    assert job.state == SUCCEEDED, job.message
    layout = job.layout
    assert layout is not None and layout.partial is not None
    K = layout.n_partitions
    need = math.ceil(alpha * K - 1e-12)
    points = [initial_params(config), *job.param_history]
    for t, got in enumerate(applied_gradients(config, job.param_history)):
        G = partition_gradients(config, points[t], K)
        errors = []
        for size in range(need, K + 1):
            for chosen in itertools.combinations(range(K), size):
                want = (K / size) * G[list(chosen)].sum(axis=0)
                errors.append(np.linalg.norm(got - want) / np.linalg.norm(want))
        best = float(np.nanmin(errors))
        assert np.isfinite(best) and best <= 1e-9, (t, best)
        assert need / K <= job.history[t].recovered_fraction <= 1.0
    assert len(job.partition_usage) == K
    assert all(0.0 <= u <= 1.0 for u in job.partition_usage)


def test_a_bad_alpha_is_refused_at_submit(harness: Harness) -> None:
    from edgecode.errors import InvalidInput

    for alpha in (0.0, -0.5, 1.5, math.nan):
        with pytest.raises(InvalidInput, match="0 < alpha <= 1"):
            harness.logic.submit(job_config("partial", alpha=alpha))


def test_approx_waiting_for_every_worker_is_exact(harness: Harness) -> None:
    config = job_config("approx", base_code="frc", s_flat=2, wait=9)
    job = harness.run(config)
    assert job.state == SUCCEEDED, job.message
    assert_exact(job.param_history, reference(config)[0])
    assert all(r.residual <= 1e-20 and r.recovered_fraction == 1.0 for r in job.history)


def test_approx_uses_what_arrived_and_reports_residual_and_usage(harness: Harness) -> None:
    """Three workers holding whole frc groups straggle for good: the master ends every round at
    6 answers; the partitions only they hold never get weight and the residual says so."""
    config = replace(
        job_config("approx", base_code="frc", s_flat=2, wait=6, rounds=4),
        round_deadline_seconds=5.0,
    )
    harness.transport.workers.slow = lambda worker, round_: worker in ("w0", "w1", "w2")
    job = harness.run(config)
    assert job.state == SUCCEEDED, job.message
    residuals = np.array([r.residual for r in job.history])
    assert np.all(np.isfinite(residuals)) and np.all(residuals > 0.1)
    usage = np.array(job.partition_usage)
    layout = job.layout
    assert layout is not None
    lost = [j for j in range(layout.n_partitions) if set(layout.code.holders[j]) <= {0, 1, 2}]
    assert lost and np.all(usage[lost] == 0.0)
    others = [j for j in range(layout.n_partitions) if j not in lost]
    assert np.all(usage[others] == 1.0)


@pytest.mark.parametrize("policy", ["random", "aware"])
def test_shuffles_move_data_between_workers_and_keep_rounds_consistent(
    harness: Harness, policy: str
) -> None:
    """approx-shuffle with every worker answering is exact at every round, whatever the
    shuffles do meanwhile; each shuffle is a new epoch assembled by the workers themselves."""
    config = job_config(
        "approx-shuffle",
        base_code="frc",
        s_flat=2,
        wait=9,
        rounds=12,
        shuffle_every=3,
        shuffle=policy,
    )
    job = harness.run(config)
    assert job.state == SUCCEEDED, job.message
    assert_exact(job.param_history, reference(config)[0])
    if policy == "random":
        assert job.shuffles >= 1 and job.shuffle_bytes > 0
        epochs = {epoch for _, epoch, _ in harness.transport.fetched}
        assert len(epochs) == job.shuffles and min(epochs) > 1
    moved = sum(fetched for _, _, fetched in harness.transport.fetched)
    assert moved == job.shuffle_bytes


def test_a_shuffle_in_flight_when_the_rounds_end_settles_before_the_job_does(
    harness: Harness,
) -> None:
    """Fetches slower than all the remaining rounds: the job must not be seen to end (nor its
    data be dropped) while a shuffle is still moving data, so the counters match the fetches."""
    config = job_config(
        "approx-shuffle", base_code="frc", s_flat=2, wait=9, rounds=6, shuffle_every=3
    )
    transport = harness.transport
    fetch = transport.fetch_placement
    drops_seen: list[int] = []

    def slow_fetch(*args: Any, **kwargs: Any) -> tuple[int, float]:
        time.sleep(0.5)
        fetched = fetch(*args, **kwargs)
        drops_seen.append(len(transport.dropped))
        return fetched

    transport.fetch_placement = slow_fetch  # type: ignore[method-assign]
    job = harness.run(config)
    assert job.state == SUCCEEDED, job.message
    assert_exact(job.param_history, reference(config)[0])
    assert job.shuffles == 1 and job.shuffle_bytes > 0
    assert {epoch for _, epoch, _ in transport.fetched} == {2}
    assert sum(fetched for _, _, fetched in transport.fetched) == job.shuffle_bytes
    assert drops_seen and not any(drops_seen), "a worker fetched after the job's data was dropped"


def test_aware_shuffling_brings_the_slow_nodes_data_back_into_use(harness: Harness) -> None:
    """Workers w0-w2 (one whole frc group) are persistently slow and the master waits for 6
    answers: without shuffling their partitions are never used (see the approx test above);
    aware shuffling moves them onto active workers, so every partition gets used."""
    config = replace(
        job_config(
            "approx-shuffle",
            base_code="frc",
            s_flat=2,
            wait=6,
            rounds=16,
            shuffle_every=4,
            shuffle="aware",
        ),
        round_deadline_seconds=5.0,
    )
    harness.transport.workers.slow = lambda worker, round_: worker in ("w0", "w1", "w2")
    job = harness.run(config)
    assert job.state == SUCCEEDED, job.message
    assert job.shuffles >= 1 and job.shuffle_bytes > 0
    usage = np.array(job.partition_usage)
    assert np.all(np.isfinite(usage)) and np.all(usage > 0), usage


# ---- lying workers (issue 15, item 5: verify) --------------------------------------------------

TAMPERS = {
    "scaled": lambda v, rng: 3.0 * v,
    "random": lambda v, rng: rng.standard_normal(v.shape),
    "sign-flipped": lambda v, rng: -v,
}


@pytest.mark.parametrize("scheme", ["hgc", "flat"])
@pytest.mark.parametrize("kind", list(TAMPERS))
def test_a_lying_worker_is_caught_never_applied_and_quarantined(scheme: str, kind: str) -> None:
    """w0 (its edge's first answer, so always among the arrivals a round decodes from)
    tampers with its answer in random rounds (about 60 %); with verify on, every such round is
    caught (two spare answers always exist here: hgc with 5 workers per edge and
    s_worker = 2, flat with 9 workers and s = 2), the lie never reaches the model (the
    trajectory equals the plain full-gradient one to 1e-9 at every round) and w4 is quarantined
    after quarantine_after catches (then the rounds go on without it)."""
    harness = Harness(topology=grid(2, 5) if scheme == "hgc" else grid(3, 3))
    try:
        _lying_worker(harness, scheme, kind)
    finally:
        harness.close()


def _lying_worker(harness: Harness, scheme: str, kind: str) -> None:
    rng = np.random.default_rng(7)
    lies: list[int] = []

    def tamper(worker: str, vector: np.ndarray) -> np.ndarray:
        if worker == "w0" and rng.random() < 0.6:
            lies.append(1)
            return TAMPERS[kind](vector, rng)
        return vector

    harness.transport.workers.tamper = tamper
    config = job_config(
        scheme, verify=True, verify_slack_seconds=2.0, quarantine_after=2, rounds=8, s_worker=2
    )
    job = harness.run(config)
    assert job.state == SUCCEEDED, job.message
    assert_exact(job.param_history, reference(config)[0])
    assert lies, "the liar never lied"
    caught = harness.metrics.of("inconsistent")
    assert caught and all(node == ("w0",) for node in caught)
    # Every lie told before the quarantine was caught (the 2nd catch quarantines).
    assert len(caught) == min(len(lies), 2) and job.inconsistent_rounds == len(caught)
    assert job.quarantined == ("w0",)
    layout = job.layout
    assert layout is not None and "w0" not in {w.name for w in layout.workers}


def test_without_verify_a_lie_reaches_the_model(harness: Harness) -> None:
    """The control: the same liar without verify changes the trajectory (so the test above
    means something)."""
    harness.transport.workers.tamper = lambda worker, v: -v if worker == "w0" else v
    config = job_config("flat", rounds=3)
    job = harness.run(config)
    assert job.state == SUCCEEDED
    want = reference(config)[0]
    errors = [
        float(np.linalg.norm(a - b) / np.linalg.norm(b))
        for a, b in zip(job.param_history, want, strict=True)
    ]
    assert max(errors) > 1e-3
