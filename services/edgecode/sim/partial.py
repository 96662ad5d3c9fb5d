r"""Partial-recovery rounds played message by message with the master's real rule.

:func:`simulate_partial` plays R consecutive rounds of a partial scheme on a cluster spec: every
worker's compute time comes from its straggler model (:func:`edgecode.sim.engine.spec_sampler`;
Markov classes persist across rounds), its response reaches the master
``compute + delay`` later (the delay of :func:`edgecode.planning.partial.partial_structure`,
extra vectors included), and the responses are offered, in arrival order, to a fresh
:class:`~edgecode.codes.partial_rule.PartialRecoveryRule` until it declares the round complete;
the round lasts until that arrival. Each round's decoded value is checked against the direct sum
of the recovered partitions' gradients. This is independent of the planner's integral
(:mod:`edgecode.planning.partial`), so the two check each other.

:func:`partial_bench_rows` is what the benchmark calls: n = 10 workers, s = 3, alpha in
{1, 0.9, 0.8}, shifted-exponential and Bernoulli stragglers; every candidate design simulated
beside full gradient coding (flat cyclic repetition) on the same cluster.

:func:`train_partial` runs gradient descent where every step uses the rule's value: it checks that
training with partial recovery reaches the optimum (step ``lr0 / (1 + t / decay)``).

Example
-------
>>> from edgecode.codes.partial import cyclic_partial
>>> spec = bench_cluster("shifted_exponential", n=6)
>>> result = simulate_partial(spec, cyclic_partial(6, 2, 0.5), 50, np.random.default_rng(0))
>>> bool(np.all(result.recovered >= 3) and np.all(result.errors <= 1e-12))
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edgecode.codes.partial import PartialRecoveryScheme
from edgecode.codes.partial_rule import PartialDecoder
from edgecode.codes.partial_schemes import worker_encoding
from edgecode.errors import InvalidInput
from edgecode.learning.datasets import partition_bounds
from edgecode.learning.models import Model
from edgecode.planning.partial import (
    choose_partial_design,
    full_coding_round_time,
    partial_structure,
)
from edgecode.planning.plans import one_layer_plan
from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec
from edgecode.sim.engine import SamplerFactory, simulate, spec_sampler

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class PartialSimResult:
    """Per-round outcome of :func:`simulate_partial` (arrays of shape (rounds,)).

    ``arrivals``: the arrival at which the round ended; ``recovered``: |R|; ``errors``:
    ``||value - scale sum_{j in R} g_j|| / ||scale sum_{j in R} g_j||`` of the rule's value.
    """

    label: str
    round_seconds: FloatArray
    arrivals: IntArray
    recovered: IntArray
    errors: FloatArray
    expected_round_seconds: float | None = None

    @property
    def mean_round_seconds(self) -> float:
        return float(self.round_seconds.mean())

    @property
    def standard_error(self) -> float:
        """Standard error of the mean round time (i.i.d. approximation)."""
        size = self.round_seconds.size
        return float(self.round_seconds.std(ddof=1) / math.sqrt(size)) if size > 1 else math.nan


def simulate_partial(
    spec: ClusterSpec,
    scheme: PartialRecoveryScheme | PartialDecoder,
    rounds: int,
    rng: np.random.Generator,
    *,
    vector_seconds: float | None = None,
    dim: int = 4,
    sampler_factory: SamplerFactory | None = None,
) -> PartialSimResult:
    """Play ``rounds`` consecutive partial-recovery rounds of ``scheme`` on ``spec``.

    Partition gradients are random ``(k, dim)`` vectors drawn once with ``rng``; round r uses
    ``decoder.rule(dim, rotation=r)``. Ties between arrivals go to the lower worker index.
    """
    if isinstance(rounds, bool) or int(rounds) != rounds or rounds < 1:
        raise InvalidInput(f"rounds must be an integer >= 1, got {rounds!r}")
    structure = partial_structure(spec, scheme, vector_seconds=vector_seconds)
    decoder = structure.decoder
    workers = tuple(w for edge in spec.edges for w in edge.workers)
    sampler = (sampler_factory or spec_sampler)(workers, structure.fractions)
    gradients = rng.standard_normal((decoder.n_partitions, int(dim)))
    responses = [
        worker_encoding(decoder.scheme, w).encode(gradients) for w in range(decoder.n_workers)
    ]
    seconds = np.empty(int(rounds))
    used = np.empty(int(rounds), dtype=np.int64)
    recovered = np.empty(int(rounds), dtype=np.int64)
    errors = np.empty(int(rounds))
    for r in range(int(rounds)):
        arrivals = np.asarray(sampler.sample(rng), dtype=np.float64) + structure.delays
        rule = decoder.rule(int(dim), rotation=r)
        for j, worker in enumerate(np.argsort(arrivals, kind="stable").tolist(), start=1):
            if rule.offer(worker, responses[worker]):
                seconds[r], used[r] = arrivals[worker], j
                break
        else:
            raise AssertionError("unreachable: every worker answered and the scheme is certified")
        result = rule.result()
        assert result.recovered is not None
        reference = result.scale * gradients[list(result.recovered)].sum(axis=0)
        recovered[r] = len(result.recovered)
        errors[r] = np.linalg.norm(result.value - reference) / np.linalg.norm(reference)
    return PartialSimResult(structure.label, seconds, used, recovered, errors)


# --------------------------------------------------------------------------------------------
# the benchmark's simulated rows
# --------------------------------------------------------------------------------------------


def bench_cluster(
    model: str,
    n: int = 10,
    *,
    shift: float = 1.0,
    rate: float = 2.0,
    link_seconds: float = 0.005,
    p_straggle: float = 0.2,
    slow_factor: float = 5.0,
) -> ClusterSpec:
    """n identical workers on one edge: ``shift`` + Exponential(``rate``) seconds for the whole
    data set, ``link_seconds`` per message; Bernoulli workers straggle with ``p_straggle``
    (``slow_factor`` times slower)."""
    if model not in ("shifted_exponential", "bernoulli"):
        raise InvalidInput(f"model must be shifted_exponential or bernoulli, got {model!r}")
    bernoulli = model == "bernoulli"
    workers = tuple(
        WorkerSpec(
            f"w{i}",
            shift,
            rate,
            link_seconds=link_seconds,
            model=model,
            p_straggle=p_straggle if bernoulli else 0.0,
            slow_factor=slow_factor if bernoulli else 1.0,
        )
        for i in range(n)
    )
    return ClusterSpec(edges=(EdgeSpec("edge-0", workers),))


@dataclass(frozen=True)
class PartialBenchRow:
    """One design on one cluster: loads beside the LP bound, times beside full coding."""

    model: str
    alpha: float
    design: str
    chosen: bool
    partitions: int
    computation_load: float
    lower_bound: float
    communication_load: int
    expected_seconds: float
    simulated_seconds: float
    simulated_stderr: float
    full_expected_seconds: float
    full_simulated_seconds: float
    full_simulated_stderr: float
    mean_arrivals: float
    worst_error: float

    @property
    def load_over_bound(self) -> float:
        return self.computation_load / self.lower_bound

    @property
    def ratio_to_full(self) -> float:
        """Simulated mean round time over full coding's, in the same run."""
        return self.simulated_seconds / self.full_simulated_seconds


def partial_bench_rows(
    rng: np.random.Generator,
    *,
    n: int = 10,
    s: int = 3,
    alphas: Sequence[float] = (1.0, 0.9, 0.8),
    models: Sequence[str] = ("shifted_exponential", "bernoulli"),
    rounds: int = 2_000,
    vector_seconds: float | None = None,
) -> list[PartialBenchRow]:
    """Every candidate design (``auto``'s choice marked) for each model and alpha, simulated for
    ``rounds`` rounds beside full coding (flat cyclic repetition, s stragglers) on
    :func:`bench_cluster`."""
    rows = []
    for model in models:
        spec = bench_cluster(model, n)
        plan = one_layer_plan(spec, "flat", n, s, [[s + 1] * n])
        full = simulate(spec, plan, rounds, rng)
        full_expected = full_coding_round_time(spec, s)
        for alpha in alphas:
            choice = choose_partial_design(spec, s, alpha, vector_seconds=vector_seconds, rng=rng)
            for option in choice.options:
                sim = simulate_partial(
                    spec, option.scheme, rounds, rng, vector_seconds=vector_seconds
                )
                rows.append(
                    PartialBenchRow(
                        model=model,
                        alpha=float(alpha),
                        design=option.label,
                        chosen=option is choice.best,
                        partitions=option.partitions,
                        computation_load=option.computation_load,
                        lower_bound=option.lower_bound,
                        communication_load=option.communication_load,
                        expected_seconds=option.expected_round_seconds,
                        simulated_seconds=sim.mean_round_seconds,
                        simulated_stderr=sim.standard_error,
                        full_expected_seconds=full_expected,
                        full_simulated_seconds=full.mean_round_seconds,
                        full_simulated_stderr=full.standard_error,
                        mean_arrivals=float(sim.arrivals.mean()),
                        worst_error=float(np.max(sim.errors)),
                    )
                )
    return rows


# --------------------------------------------------------------------------------------------
# training with partial recovery
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartialTraining:
    """Outcome of :func:`train_partial`: the final parameters and loss, the full loss after every
    ``record_every``-th step (steps ``record_every, 2 record_every, ...``), and the mean fraction
    of partitions recovered per step."""

    params: FloatArray
    loss: float
    losses: FloatArray
    recovered_fraction: float


def train_partial(
    model: Model,
    X: FloatArray,
    y: FloatArray,
    scheme: PartialRecoveryScheme,
    params: FloatArray,
    steps: int,
    rng: np.random.Generator,
    *,
    lr: float = 0.5,
    decay: float = 100.0,
    scale: str = "rescale",
    record_every: int = 0,
) -> PartialTraining:
    """Gradient descent on the mean loss with partially recovered gradients.

    The rows are cut into k contiguous partitions (partition j = the j-th block); each step,
    the workers answer in a uniformly random order (exchangeable workers), the rule recovers
    R and returns ``scale * sum_{j in R} g_j``, and
    ``params <- params - lr_t * value / N`` with ``lr_t = lr / (1 + t / decay)``.
    ``record_every = 0`` records no intermediate loss.
    """
    if int(steps) != steps or steps < 1:
        raise InvalidInput(f"steps must be an integer >= 1, got {steps!r}")
    decoder = PartialDecoder(scheme, scale)
    n_rows = int(X.shape[0])
    bounds = partition_bounds(n_rows, decoder.n_partitions)
    encodings = [worker_encoding(scheme, w) for w in range(decoder.n_workers)]
    x = np.asarray(params, dtype=np.float64).copy()
    losses: list[float] = []
    recovered = 0
    for t in range(int(steps)):
        grads = np.stack(
            [model.gradient(x, X[a:b], y[a:b], reg_share=(b - a) / n_rows) for a, b in bounds]
        )
        rule = decoder.rule(x.size, rotation=t)
        for worker in rng.permutation(decoder.n_workers).tolist():
            if rule.offer(worker, encodings[worker].encode(grads)):
                break
        result = rule.result()
        assert result.recovered is not None
        recovered += len(result.recovered)
        x -= (lr / (1.0 + t / decay)) * result.value / n_rows
        if record_every and (t + 1) % record_every == 0:
            losses.append(model.loss(x, X, y))
    return PartialTraining(
        params=x,
        loss=model.loss(x, X, y),
        losses=np.array(losses),
        recovered_fraction=recovered / (int(steps) * decoder.n_partitions),
    )
