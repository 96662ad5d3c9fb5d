"""Simulator of approximate gradient coding with data shuffling under two straggler classes.

The paper-2 experiment (papers.md section 2) at 100+ workers, round by round:

1. every worker's per-unit-load time of every round is drawn once from the two-class Markov model
   (:func:`edgecode.stragglers.sample_markov`; the initially slow workers are picked by
   :meth:`StraggleClasses.pick_slow` from the seed), and every scheme replays the SAME draws
   (common random numbers); a worker holding the fraction f of the data computes ``f Y`` seconds;
2. the code is fractional (``"frc"``) or cyclic (``"crc"``) repetition, K = n partitions, each on
   s + 1 workers (f = (s + 1) / n); the master ends a round at the ``wait``-th answer or at the
   ``deadline`` and applies the scheme's rule:

   ==========================  ==============================================================
   ``approx``                  least-squares decoding of what arrived (no shuffling)
   ``approx-shuffle-random``   the same, and every ``tau`` rounds a uniform random permutation
                               of the code rows among the workers (the paper's shuffle)
   ``approx-shuffle-aware``    the same, and every ``tau`` rounds the straggler-aware shuffle,
                               fed by the class filter on the master's view of response times
   ``exact``                   wait for the first decodable set (no deadline), exact gradient
   ``ignore``                  uncoded (one partition per worker, f = 1 / n), first ``wait``
                               answers, rescaled by n / answers (biased)
   ==========================  ==============================================================

3. a shuffle's data really moves: its transfers (worker to worker) take
   ``transfer_seconds x`` the largest number of partitions one worker sends or receives, added
   to the wall clock after the round.

Per round the run keeps the partition weights ``w`` (K,), the residual ``||w - 1||^2 / K``, the
round time and the shuffle time; partition j is *used* in a round when ``|w_j| > threshold``.
:func:`train_runs` replays the weights on a real model (sum_j w_j g_j as the gradient) to compare
losses at equal wall time; :func:`plot_shuffle` draws usage and error over rounds.

Example
-------
>>> from edgecode.stragglers import StraggleClasses
>>> scenario = ShuffleScenario(workers=12, stragglers=1, rounds=30, tau=5,
...                            classes=StraggleClasses(4, (), 0.9, 0.05))
>>> rows = compare_shuffle(scenario, seed=0)
>>> [row["scheme"] for row in rows] == list(SCHEMES)
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from edgecode.codes.approximate import USAGE_THRESHOLD, LeastSquaresDecoder
from edgecode.codes.flat import cyclic_repetition, fractional_repetition
from edgecode.learning.datasets import Dataset, partition_bounds
from edgecode.learning.models import get_model, smoothness
from edgecode.learning.optimizers import GradientDescent
from edgecode.planning.shuffle import (
    MIN_SWAP_GAIN,
    Assignment,
    Shuffle,
    aware_shuffle,
    random_shuffle,
)
from edgecode.straggle_classes import LATE_FACTOR, ClassFilter, StraggleClasses, lateness
from edgecode.stragglers import sample_markov

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

SCHEMES = ("approx", "approx-shuffle-random", "approx-shuffle-aware", "exact", "ignore")
CODES = ("frc", "crc")
_POLICY = {"approx-shuffle-random": "random", "approx-shuffle-aware": "aware"}
#: The keyword arguments a :class:`ClassFilter` takes (``ShuffleScenario.filter_model``).
FILTER_KEYS = ("p_slow", "p_active", "q_as", "q_sa", "prior_slow")


@dataclass(frozen=True)
class ShuffleScenario:
    """One simulated cluster and job.

    ``classes``: the two-class model (``slow_count`` workers start slow); ``shift``/``rate``:
    seconds for the whole data set, ``shift + Exponential(rate)``; ``wait``: answers the master
    waits for (None: n minus the mean plus two standard deviations of the number of stragglers
    per round, rounded up, so a round rarely waits for a straggler); ``deadline``:
    seconds after the round start (None: none); ``tau``: rounds between shuffles; ``budget``:
    partitions moved per shuffle at most (None: unbounded); ``transfer_seconds``: streaming one
    partition between two workers (None: the mean time to compute one partition's gradient,
    ``(shift + 1 / rate) / K``); ``filter_model``: the keyword arguments of the aware policy's
    :class:`ClassFilter` (None: the scenario's own classes, :meth:`ClassFilter.from_classes`;
    the master uses a fixed model, ``edgecode.master.epochs.FILTER_MODEL``);
    ``min_swap_gain``: the aware policy's threshold (:data:`MIN_SWAP_GAIN`).
    """

    workers: int = 100
    code: str = "frc"
    stragglers: int = 4
    classes: StraggleClasses = field(default_factory=lambda: StraggleClasses(20, (), 0.8, 0.05))
    rounds: int = 200
    wait: int | None = None
    deadline: float | None = None
    tau: int = 10
    budget: int | None = None
    shift: float = 1.0
    rate: float = 4.0
    transfer_seconds: float | None = None
    late_factor: float = LATE_FACTOR
    usage_threshold: float = USAGE_THRESHOLD
    filter_model: Mapping[str, float] | None = None
    min_swap_gain: float = MIN_SWAP_GAIN

    def __post_init__(self) -> None:
        n, s = self.workers, self.stragglers
        if self.code not in CODES:
            raise ValueError(f"code must be one of {CODES}, got {self.code!r}")
        if n < 2 or not 0 <= s < n or (self.code == "frc" and n % (s + 1)):
            raise ValueError(f"workers={n}, stragglers={s}: need 0 <= s < n (frc: (s+1) | n)")
        if self.classes.slow_count > n:
            raise ValueError(f"classes: {self.classes.slow_count} slow workers but only {n}")
        if self.wait is not None and not 1 <= self.wait <= n:
            raise ValueError(f"wait must be in [1, {n}], got {self.wait}")
        if self.rounds < 1 or self.tau < 1:
            raise ValueError(f"rounds and tau must be >= 1, got {self.rounds}, {self.tau}")
        if self.deadline is not None and not self.deadline > 0:
            raise ValueError(f"deadline must be > 0 seconds, got {self.deadline}")
        if self.budget is not None and self.budget < 0:
            raise ValueError(f"budget must be >= 0 partitions, got {self.budget}")
        if self.transfer_seconds is not None and not self.transfer_seconds >= 0:
            raise ValueError(f"transfer_seconds must be >= 0, got {self.transfer_seconds}")
        unknown = set(self.filter_model or ()) - set(FILTER_KEYS)
        if unknown:
            raise ValueError(
                f"filter_model: unknown keys {sorted(unknown)}, expected {FILTER_KEYS}"
            )
        if not self.min_swap_gain >= 0:
            raise ValueError(f"min_swap_gain must be >= 0, got {self.min_swap_gain}")

    def class_filter(self) -> ClassFilter:
        """The aware policy's filter over the scenario's workers."""
        if self.filter_model is not None:
            return ClassFilter(self.workers, **self.filter_model)
        return ClassFilter.from_classes(self.classes, self.workers, self.resolved_wait)

    @property
    def resolved_wait(self) -> int:
        if self.wait is not None:
            return self.wait
        c = self.classes
        moves = c.q_as + c.q_sa
        slow = c.q_as / moves if moves > 0 else min(1.0, c.slow_count / self.workers)
        p = np.array([c.p_slow, c.p_active])
        counts = self.workers * np.array([slow, 1 - slow])
        mean, variance = float(counts @ p), float(counts @ (p * (1 - p)))
        return max(1, self.workers - math.ceil(mean + 2 * math.sqrt(variance) - 1e-9))

    @property
    def resolved_transfer_seconds(self) -> float:
        if self.transfer_seconds is not None:
            return self.transfer_seconds
        return (self.shift + 1.0 / self.rate) / self.workers

    def code_matrix(self) -> FloatArray:
        """The code ``B`` (n, n) of the scenario."""
        n, s = self.workers, self.stragglers
        code = fractional_repetition(n, s) if self.code == "frc" else cyclic_repetition(n, s)
        return code.B


@dataclass(frozen=True)
class ShuffleRun:
    """Per-round record of one scheme (arrays indexed by round, then partition)."""

    scheme: str
    partition_weights: FloatArray
    residual: FloatArray
    round_seconds: FloatArray
    shuffle_seconds: FloatArray
    moved_partitions: IntArray
    usage_threshold: float
    #: partitions held only by initially slow workers under the initial assignment
    slow_only: tuple[int, ...] = ()

    @property
    def used(self) -> BoolArray:
        return np.asarray(np.abs(self.partition_weights) > self.usage_threshold)

    @property
    def partition_usage(self) -> FloatArray:
        """Fraction of rounds in which each partition had weight."""
        return np.asarray(self.used.mean(axis=0), dtype=np.float64)

    @property
    def wall_seconds(self) -> FloatArray:
        """Wall clock at the end of every round (shuffle time counted after its round)."""
        return np.asarray(np.cumsum(self.round_seconds + self.shuffle_seconds), dtype=np.float64)

    def summary(self) -> dict[str, Any]:
        usage = self.partition_usage
        slow_only = usage[list(self.slow_only)] if self.slow_only else np.zeros(0)
        rounds = self.residual.size
        return {
            "scheme": self.scheme,
            "min_usage": float(usage.min()),
            "mean_usage": float(usage.mean()),
            "min_over_mean": float(usage.min() / usage.mean()) if usage.mean() > 0 else 0.0,
            "slow_only_partitions": len(self.slow_only),
            "slow_only_usage": float(slow_only.mean()) if slow_only.size else float("nan"),
            "min_mean_weight": float(self.partition_weights.mean(axis=0).min()),
            "mean_residual": float(self.residual.mean()),
            "moved_partitions": int(self.moved_partitions.sum()),
            "shuffles": int(np.count_nonzero(self.moved_partitions)),
            "mean_round_seconds": float(self.wall_seconds[-1] / rounds),
            "mean_compute_seconds": float(self.round_seconds.mean()),
        }


def worker_names(n: int) -> list[str]:
    return [f"w{i}" for i in range(n)]


def sample_unit_times(
    scenario: ShuffleScenario, rng: np.random.Generator
) -> tuple[FloatArray, BoolArray]:
    """Per-unit-load seconds ``Y`` (rounds, n) of every worker and the initial slow mask (n,)."""
    c, n = scenario.classes, scenario.workers
    slow_names = set(c.pick_slow(worker_names(n), rng))
    slow = np.array([name in slow_names for name in worker_names(n)])
    columns = [_worker_times(scenario, c, bool(slow[w]), rng) for w in range(n)]
    return np.column_stack(columns), slow


def _worker_times(
    scenario: ShuffleScenario, c: StraggleClasses, slow: bool, rng: np.random.Generator
) -> FloatArray:
    return sample_markov(
        scenario.shift, scenario.rate, c.p_slow, c.p_active, c.q_as, c.q_sa,
        c.slow_factor, 1.0, scenario.rounds, rng, slow=slow,
    )  # fmt: skip


def simulate_shuffle(
    scenario: ShuffleScenario,
    scheme: str,
    unit_times: FloatArray,
    slow: BoolArray,
    rng: np.random.Generator,
    B: FloatArray | None = None,
) -> ShuffleRun:
    """Play ``scenario.rounds`` rounds of ``scheme`` on the drawn ``unit_times`` (see module)."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    n, rounds = scenario.workers, scenario.rounds
    if unit_times.shape != (rounds, n) or slow.shape != (n,):
        raise ValueError(f"unit_times must be ({rounds}, {n}), got {unit_times.shape}")
    if scheme == "ignore":
        return _simulate_ignore(scenario, unit_times)
    code = scenario.code_matrix() if B is None else B
    slow_only = tuple(
        j for j, held in enumerate(Assignment.identity(n).holders(code)) if slow[list(held)].all()
    )
    if scheme == "exact":
        return _simulate_exact(scenario, code, unit_times, slow_only)
    return _simulate_approx(scenario, scheme, code, unit_times, rng, slow_only)


def _empty(rounds: int, k: int) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, IntArray]:
    return (
        np.zeros((rounds, k)),
        np.zeros(rounds),
        np.zeros(rounds),
        np.zeros(rounds),
        np.zeros(rounds, dtype=np.int64),
    )


def _round_end(scenario: ShuffleScenario, times: FloatArray) -> float:
    end = float(np.sort(times)[scenario.resolved_wait - 1])
    return end if scenario.deadline is None else min(end, scenario.deadline)


def _simulate_approx(
    scenario: ShuffleScenario,
    scheme: str,
    B: FloatArray,
    unit_times: FloatArray,
    rng: np.random.Generator,
    slow_only: tuple[int, ...],
) -> ShuffleRun:
    n, rounds = scenario.workers, scenario.rounds
    weights, residual, seconds, shuffle_seconds, moved = _empty(rounds, B.shape[1])
    fraction = (scenario.stragglers + 1) / n
    assignment = Assignment.identity(n)
    decoder = LeastSquaresDecoder(assignment.sender_matrix(B))
    policy = _POLICY.get(scheme)
    estimator = scenario.class_filter()
    for r in range(rounds):
        times = unit_times[r] * fraction
        end = _round_end(scenario, times)
        arrived = times <= end
        decoding = decoder.decode(np.flatnonzero(arrived))
        weights[r], residual[r], seconds[r] = decoding.partition_weights, decoding.residual, end
        if policy == "aware":
            estimator.update(lateness(np.where(arrived, times, np.nan), scenario.late_factor))
        if policy is None or (r + 1) % scenario.tau or r + 1 == rounds:
            continue
        budget = scenario.budget
        if policy == "random":
            step = random_shuffle(B, assignment, rng, budget_bytes=budget)
        else:
            step = aware_shuffle(
                B, assignment, estimator.straggle_probability(), None, budget,
                min_swap_gain=scenario.min_swap_gain,
            )  # fmt: skip
        moved[r] = step.partitions_moved
        shuffle_seconds[r] = transfer_time(step, scenario.resolved_transfer_seconds)
        if step.after != assignment:
            assignment = step.after
            decoder = LeastSquaresDecoder(assignment.sender_matrix(B))
    return ShuffleRun(
        scheme, weights, residual, seconds, shuffle_seconds, moved,
        scenario.usage_threshold, slow_only,
    )  # fmt: skip


def transfer_time(step: Shuffle, seconds_per_partition: float) -> float:
    """Seconds a shuffle takes when every worker sends and receives one partition at a time
    (full duplex): ``seconds_per_partition x`` the largest count one worker sends or receives."""
    if not step.transfers:
        return 0.0
    sent = np.bincount([t.source for t in step.transfers], minlength=step.before.n_workers)
    got = np.bincount([t.destination for t in step.transfers], minlength=step.before.n_workers)
    return float(seconds_per_partition * max(int(sent.max()), int(got.max())))


def _first_decodable(decoder: LeastSquaresDecoder, order: IntArray, B: FloatArray) -> int:
    """Smallest k such that the first k workers of ``order`` form a decodable set."""
    # Necessary: every partition has a holder among the first k (cheap, from arrival ranks).
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    first_holder = np.array([rank[np.flatnonzero(column)].min() for column in B.T])
    low, high = int(first_holder.max()) + 1, order.size
    while low < high:
        middle = (low + high) // 2
        if decoder.decode(order[:middle]).exact:
            high = middle
        else:
            low = middle + 1
    return low


def _simulate_exact(
    scenario: ShuffleScenario, B: FloatArray, unit_times: FloatArray, slow_only: tuple[int, ...]
) -> ShuffleRun:
    n, rounds = scenario.workers, scenario.rounds
    weights, residual, seconds, shuffle_seconds, moved = _empty(rounds, B.shape[1])
    decoder = LeastSquaresDecoder(B, cache_size=0)
    fraction = (scenario.stragglers + 1) / n
    for r in range(rounds):
        times = unit_times[r] * fraction
        order = np.argsort(times, kind="stable")
        k = _first_decodable(decoder, order, B)
        decoding = decoder.decode(order[:k])
        weights[r], residual[r] = decoding.partition_weights, decoding.residual
        seconds[r] = times[order[k - 1]]
    return ShuffleRun(
        "exact", weights, residual, seconds, shuffle_seconds, moved,
        scenario.usage_threshold, slow_only,
    )  # fmt: skip


def _simulate_ignore(scenario: ShuffleScenario, unit_times: FloatArray) -> ShuffleRun:
    n, rounds = scenario.workers, scenario.rounds
    weights, residual, seconds, shuffle_seconds, moved = _empty(rounds, n)
    for r in range(rounds):
        times = unit_times[r] / n
        end = _round_end(scenario, times)
        arrived = times <= end
        count = int(arrived.sum())
        weights[r] = np.where(arrived, n / count, 0.0) if count else 0.0
        residual[r] = float(np.sum((weights[r] - 1.0) ** 2)) / n
        seconds[r] = end
    return ShuffleRun(
        "ignore", weights, residual, seconds, shuffle_seconds, moved, scenario.usage_threshold
    )


def run_schemes(
    scenario: ShuffleScenario, seed: int, schemes: Sequence[str] = SCHEMES
) -> dict[str, ShuffleRun]:
    """Every scheme on the same straggler draws (seeded by ``seed``), keyed by scheme."""
    unit_times, slow = sample_unit_times(scenario, np.random.default_rng([seed, 0]))
    B = scenario.code_matrix()
    return {
        scheme: simulate_shuffle(
            scenario, scheme, unit_times, slow, np.random.default_rng([seed, 1, index]), B
        )
        for index, scheme in enumerate(schemes)
    }


def compare_shuffle(
    scenario: ShuffleScenario, seed: int, schemes: Sequence[str] = SCHEMES
) -> list[dict[str, Any]]:
    """One summary row per scheme (see :meth:`ShuffleRun.summary`): min and mean partition
    usage, mean decoding residual, partitions moved, mean round seconds (shuffles included)."""
    return [run.summary() for run in run_schemes(scenario, seed, schemes).values()]


@dataclass(frozen=True)
class TrainingCurve:
    """Mean training loss after every round against the wall clock (index 0: before round 1);
    ``optimum`` is the smallest mean loss when the data set knows its minimiser (else NaN)."""

    scheme: str
    wall_seconds: FloatArray
    loss: FloatArray
    optimum: float = float("nan")

    def loss_at(self, seconds: float) -> float:
        """The loss after the last round that ended by ``seconds``."""
        done = int(np.searchsorted(self.wall_seconds, seconds, side="right")) - 1
        return float(self.loss[max(done, 0)])


def partition_rows(data: Dataset, n_partitions: int, heterogeneous: bool) -> list[IntArray]:
    """Row indices of the K partitions: contiguous blocks of the rows as stored, or, with
    ``heterogeneous``, of the rows sorted by label then first feature (non-i.i.d. partitions,
    so which partitions a gradient misses biases it)."""
    if heterogeneous:
        column: Any = data.X[:, [0]]
        first = np.asarray(column.toarray() if sp.issparse(column) else column).ravel()
        order = np.lexsort((first, np.asarray(data.y, dtype=np.float64)))
    else:
        order = np.arange(data.n_rows)
    return [order[a:b] for a, b in partition_bounds(data.n_rows, n_partitions)]


def train_runs(
    runs: Mapping[str, ShuffleRun],
    data: Dataset,
    *,
    model_name: str | None = None,
    lr: float | None = None,
    heterogeneous: bool = True,
    rng: np.random.Generator,
) -> dict[str, TrainingCurve]:
    """Replay every run's partition weights as gradient descent on ``data``.

    Round r's gradient is ``sum_j w_rj g_j(params)`` (g_j: the summed gradient of partition j,
    K = the runs' partition count), the step ``params -= lr * gradient / n_rows`` with
    ``lr = 1 / L`` by default (:func:`edgecode.learning.smoothness`). Every scheme starts from
    the same initial parameters. ``optimum`` is filled in when ``data.optimum`` is known and
    the model is the data set's default.
    """
    if not runs:
        raise ValueError("runs: need at least one run")
    model = get_model(model_name or data.default_model)
    step = 1.0 / smoothness(model, data.X) if lr is None else float(lr)
    k = next(iter(runs.values())).partition_weights.shape[1]
    parts = partition_rows(data, k, heterogeneous)
    start = model.init_params(rng, data.n_features, data.n_classes)
    known = data.optimum is not None and model_name in (None, data.default_model)
    optimum = model.loss(data.optimum, data.X, data.y) / data.n_rows if known else float("nan")
    curves = {}
    for scheme, run in runs.items():
        optimizer, params = GradientDescent(lr=step), start.copy()
        losses = [model.loss(params, data.X, data.y) / data.n_rows]
        for weights in run.partition_weights:
            gradient = np.zeros_like(params)
            for j in np.flatnonzero(weights):
                rows = parts[j]
                share = 1.0 / k
                gradient += weights[j] * model.gradient(params, data.X[rows], data.y[rows], share)
            params = optimizer.step(params, gradient, data.n_rows)
            losses.append(model.loss(params, data.X, data.y) / data.n_rows)
        wall = np.concatenate([[0.0], run.wall_seconds])
        curves[scheme] = TrainingCurve(scheme, wall, np.asarray(losses, dtype=np.float64), optimum)
    return curves


__all__ = [
    "CODES",
    "SCHEMES",
    "ShuffleRun",
    "ShuffleScenario",
    "TrainingCurve",
    "compare_shuffle",
    "partition_rows",
    "run_schemes",
    "sample_unit_times",
    "simulate_shuffle",
    "train_runs",
    "transfer_time",
]
