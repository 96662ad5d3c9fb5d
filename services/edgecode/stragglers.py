"""Straggler runtime models: sampling (with an injected generator) and fitting.

Every model gives the compute seconds of a worker that holds a fraction ``f = l / K`` of the data
set in one round as

    T = f * Y,      Y = (shift + X) * M,      X ~ Exponential(rate)   (mean 1 / rate),

where ``shift + X`` is the time to process the WHOLE data set ("per unit of load") and ``M`` is the
straggling multiplier of the round:

- **shifted exponential**: ``M = 1`` always;
- **Bernoulli**: ``M = slow_factor`` with probability ``p_straggle``, independently every round;
- **two-class Markov** (Johri et al.): the worker is in class *slow* or *active*; in a round it
  straggles (``M = slow_factor``) with probability ``p_slow`` or ``p_active`` depending on its
  class; between rounds the class moves active -> slow with probability ``q_as`` and slow -> active
  with probability ``q_sa`` (``q_as = q_sa = 0``: the class never changes);
- **trace replay**: ``Y`` (or ``T`` itself, see :class:`TraceRuntime`) is read from an array of
  recorded times, one per round, cycling.

Per round, workers are independent. Across rounds only the Markov class carries memory, so the
per-round marginal of every model but trace replay is a two-component mixture: ``M = slow_factor``
with probability :func:`straggle_probability` (the stationary straggling probability
``pi_slow p_slow + (1 - pi_slow) p_active`` with ``pi_slow = q_as / (q_as + q_sa)`` for the Markov
model). The planner's exact expected round time uses this marginal.

Two interfaces:

- vectorised draws of many rounds for Monte Carlo and the simulator:
  :func:`sample_shifted_exponential`, :func:`sample_bernoulli`,
  :func:`sample_markov_classes`, :func:`sample_markov`, :func:`replay_trace`, and
  :func:`sample_compute_times` (many workers x many rounds from specs);
- a small stateful object per worker for round-by-round simulation (:class:`WorkerRuntime`):
  ``runtime.sample(load_fraction, rng)`` gives this round's compute seconds,
  ``runtime.advance(rng)`` moves to the next round. Build one from a spec with :func:`runtime_for`.

Fitting: :func:`fit_shifted_exponential` turns measured compute times and the data fractions the
worker held into ``(shift, rate)``.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> times = sample_shifted_exponential(0.2, 5.0, 0.25, rng, size=20_000)
>>> shift, rate = fit_shifted_exponential(times, np.full(times.size, 0.25))
>>> bool(abs(shift - 0.2) < 0.01 and abs(rate - 5.0) < 0.2)
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgecode.straggle_classes import (
    ClassFilter,
    StraggleClasses,
    lateness,
    parse_straggle_classes,
)

if TYPE_CHECKING:  # planning imports this module; a runtime import would be circular
    from edgecode.planning.spec import WorkerSpec

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: Mean of X relative to the mean of Y used when every measured sample is identical (no spread).
MIN_RELATIVE_SPREAD = 1e-6


# --------------------------------------------------------------------------------------------
# validation helpers (public edges only)
# --------------------------------------------------------------------------------------------


def _check_nonnegative(name: str, value: ArrayLike) -> FloatArray:
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return array


def _check_positive(name: str, value: ArrayLike) -> FloatArray:
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return array


def _check_probability(name: str, value: float) -> float:
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def _check_fraction(value: ArrayLike) -> FloatArray:
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)) or np.any(array < 0) or np.any(array > 1):
        raise ValueError(f"load_fraction must be in [0, 1], got {value!r}")
    return array


def _check_rounds(rounds: int) -> int:
    if int(rounds) != rounds or rounds < 0:
        raise ValueError(f"rounds must be an integer >= 0, got {rounds!r}")
    return int(rounds)


# --------------------------------------------------------------------------------------------
# vectorised samplers
# --------------------------------------------------------------------------------------------


def sample_shifted_exponential(
    shift: ArrayLike,
    rate: ArrayLike,
    load_fraction: ArrayLike,
    rng: np.random.Generator,
    size: int | tuple[int, ...] | None = None,
) -> FloatArray:
    """Draw ``T = f (shift + X)``, ``X ~ Exponential(rate)``; arguments broadcast with ``size``.

    ``shift`` and ``1 / rate`` are seconds for the whole data set; ``f = load_fraction``.
    """
    shift_a = _check_nonnegative("shift", shift)
    rate_a = _check_positive("rate", rate)
    fraction = _check_fraction(load_fraction)
    x = rng.exponential(
        1.0, size=size if size is not None else np.broadcast(shift_a, rate_a, fraction).shape
    )
    return np.asarray(fraction * (shift_a + x / rate_a), dtype=np.float64)


def sample_bernoulli(
    shift: ArrayLike,
    rate: ArrayLike,
    p_straggle: float,
    slow_factor: float,
    load_fraction: ArrayLike,
    rng: np.random.Generator,
    size: int | tuple[int, ...] | None = None,
) -> FloatArray:
    """Draw ``T = f (shift + X) M`` with ``M = slow_factor`` w.p. ``p_straggle``, else 1, i.i.d."""
    p = _check_probability("p_straggle", p_straggle)
    factor = float(_check_positive("slow_factor", slow_factor))
    base = sample_shifted_exponential(shift, rate, load_fraction, rng, size)
    straggle = rng.random(base.shape) < p
    return np.where(straggle, base * factor, base)


def _sojourn_sequence(
    leave_active: float, leave_slow: float, rounds: int, slow: bool, rng: np.random.Generator
) -> BoolArray:
    """Markov class per round (True = slow), drawn as alternating geometric sojourns."""
    classes = np.empty(rounds, dtype=bool)
    position, state = 0, slow
    while position < rounds:
        leave = leave_slow if state else leave_active
        # Sojourn length: rounds spent in `state` before switching, Geometric(leave) on {1, 2, ...}.
        remaining = rounds - position
        length = remaining if leave <= 0.0 else min(remaining, int(rng.geometric(leave)))
        classes[position : position + length] = state
        position += length
        state = not state
    return classes


def sample_markov_classes(
    q_as: float, q_sa: float, rounds: int, rng: np.random.Generator, slow: bool = False
) -> BoolArray:
    """Class of the two-class Markov chain for ``rounds`` consecutive rounds (True = slow).

    Round 0 is in the class ``slow``; after each round the class moves active -> slow with
    probability ``q_as`` and slow -> active with probability ``q_sa``. Sojourns are drawn as
    geometric run lengths, so the cost is proportional to the number of class changes.
    """
    q_as = _check_probability("q_as", q_as)
    q_sa = _check_probability("q_sa", q_sa)
    return _sojourn_sequence(q_as, q_sa, _check_rounds(rounds), bool(slow), rng)


def sample_markov(
    shift: float,
    rate: float,
    p_slow: float,
    p_active: float,
    q_as: float,
    q_sa: float,
    slow_factor: float,
    load_fraction: float,
    rounds: int,
    rng: np.random.Generator,
    slow: bool = False,
) -> FloatArray:
    """Compute seconds of one two-class Markov worker over ``rounds`` consecutive rounds.

    ``T_r = f (shift + X_r) M_r``: ``M_r = slow_factor`` with probability ``p_slow`` (slow class)
    or ``p_active`` (active class) given the class of round ``r`` (:func:`sample_markov_classes`).
    """
    p_slow = _check_probability("p_slow", p_slow)
    p_active = _check_probability("p_active", p_active)
    factor = float(_check_positive("slow_factor", slow_factor))
    classes = sample_markov_classes(q_as, q_sa, rounds, rng, slow)
    base = sample_shifted_exponential(shift, rate, load_fraction, rng, size=classes.size)
    straggle = rng.random(classes.size) < np.where(classes, p_slow, p_active)
    return np.where(straggle, base * factor, base)


def replay_trace(
    times: ArrayLike,
    load_fraction: float,
    rounds: int,
    start: int = 0,
    per_unit_load: bool = True,
) -> FloatArray:
    """Rounds ``start, start + 1, ...`` of a recorded trace, cycling when it runs out.

    With ``per_unit_load`` the trace holds seconds for the whole data set and is scaled by
    ``load_fraction``; otherwise it holds the seconds to return as they are.
    """
    trace = _check_trace(times)
    index = (int(start) + np.arange(_check_rounds(rounds))) % trace.size
    scale = float(_check_fraction(load_fraction)) if per_unit_load else 1.0
    return np.asarray(trace[index] * scale, dtype=np.float64)


def _check_trace(times: ArrayLike) -> FloatArray:
    trace = np.asarray(times, dtype=np.float64)
    if trace.ndim != 1 or trace.size == 0:
        raise ValueError(f"trace times must be a non-empty 1-D array, got shape {trace.shape}")
    if not np.all(np.isfinite(trace)) or np.any(trace < 0):
        raise ValueError("trace times must be finite and >= 0")
    return trace


def straggle_probability(worker: WorkerSpec) -> float:
    """Per-round marginal probability that ``worker`` straggles (``M = slow_factor``).

    shifted exponential: 0; Bernoulli: ``p_straggle``; Markov: ``pi p_slow + (1 - pi) p_active``
    with the stationary slow probability ``pi = q_as / (q_as + q_sa)``, or ``pi = 1`` / ``0`` for a
    chain that never moves (``q_as = q_sa = 0``), according to the worker's initial class ``slow``.
    """
    if worker.model == "bernoulli":
        return worker.p_straggle
    if worker.model == "markov":
        moves = worker.q_as + worker.q_sa
        pi_slow = worker.q_as / moves if moves > 0 else float(worker.slow)
        return pi_slow * worker.p_slow + (1.0 - pi_slow) * worker.p_active
    return 0.0


def sample_compute_times(
    workers: Sequence[WorkerSpec],
    load_fractions: ArrayLike,
    rounds: int,
    rng: np.random.Generator,
    stationary: bool = False,
) -> FloatArray:
    """Compute seconds of many workers over many consecutive rounds, shape ``(rounds, n)``.

    Each worker follows its own ``model``. Markov workers start in their spec class ``slow``, or,
    with ``stationary=True``, in a class drawn from the chain's stationary distribution (what
    the planner's expected round time assumes).
    """
    fractions = _check_fraction(np.broadcast_to(load_fractions, (len(workers),)))
    rounds = _check_rounds(rounds)
    out = np.empty((rounds, len(workers)), dtype=np.float64)
    for column, (worker, fraction) in enumerate(zip(workers, fractions, strict=True)):
        if worker.model == "markov":
            slow = worker.slow
            moves = worker.q_as + worker.q_sa
            if stationary and moves > 0:
                slow = bool(rng.random() < worker.q_as / moves)
            out[:, column] = sample_markov(
                worker.shift,
                worker.rate,
                worker.p_slow,
                worker.p_active,
                worker.q_as,
                worker.q_sa,
                worker.slow_factor,
                float(fraction),
                rounds,
                rng,
                slow,
            )
        elif worker.model == "bernoulli":
            out[:, column] = sample_bernoulli(
                worker.shift,
                worker.rate,
                worker.p_straggle,
                worker.slow_factor,
                float(fraction),
                rng,
                rounds,
            )
        else:
            out[:, column] = sample_shifted_exponential(
                worker.shift, worker.rate, float(fraction), rng, rounds
            )
    return out


# --------------------------------------------------------------------------------------------
# stateful per-worker runtimes (round-by-round simulation)
# --------------------------------------------------------------------------------------------


class WorkerRuntime(Protocol):
    """A worker's compute-time model for a round-by-round simulation.

    ``sample`` returns the compute seconds of the CURRENT round for the given fraction of the data
    (call it once per round); ``advance`` moves the model to the next round.
    """

    def sample(self, load_fraction: float, rng: np.random.Generator) -> float: ...

    def advance(self, rng: np.random.Generator) -> None: ...


@dataclass
class ShiftedExponentialRuntime:
    """``T = f (shift + X)``, independent across rounds."""

    shift: float
    rate: float

    def sample(self, load_fraction: float, rng: np.random.Generator) -> float:
        """One draw, the same as :func:`sample_shifted_exponential` gives for scalars (same
        checks, same stream, same value); in plain floats, as a worker draws one every round."""
        fraction, shift, rate = float(load_fraction), float(self.shift), float(self.rate)
        if not (math.isfinite(shift) and shift >= 0):
            raise ValueError(f"shift must be finite and >= 0, got {self.shift!r}")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be finite and > 0, got {self.rate!r}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"load_fraction must be in [0, 1], got {load_fraction!r}")
        return fraction * (shift + float(rng.exponential(1.0)) / rate)

    def advance(self, rng: np.random.Generator) -> None:
        """Rounds are independent: nothing to move."""


@dataclass
class BernoulliRuntime:
    """``T = f (shift + X) M``, ``M = slow_factor`` w.p. ``p_straggle`` (i.i.d. rounds)."""

    shift: float
    rate: float
    p_straggle: float
    slow_factor: float

    def sample(self, load_fraction: float, rng: np.random.Generator) -> float:
        return float(
            sample_bernoulli(
                self.shift, self.rate, self.p_straggle, self.slow_factor, load_fraction, rng
            )
        )

    def advance(self, rng: np.random.Generator) -> None:
        """Rounds are independent: nothing to move."""


@dataclass
class MarkovRuntime:
    """Two-class slow/active Markov worker; ``slow`` is the class of the current round."""

    shift: float
    rate: float
    p_slow: float
    p_active: float
    q_as: float
    q_sa: float
    slow_factor: float
    slow: bool = False

    def sample(self, load_fraction: float, rng: np.random.Generator) -> float:
        base = float(sample_shifted_exponential(self.shift, self.rate, load_fraction, rng))
        p = self.p_slow if self.slow else self.p_active
        return base * self.slow_factor if rng.random() < p else base

    def advance(self, rng: np.random.Generator) -> None:
        """Class transition: active -> slow w.p. ``q_as``, slow -> active w.p. ``q_sa``."""
        leave = self.q_sa if self.slow else self.q_as
        if rng.random() < leave:
            self.slow = not self.slow


@dataclass
class TraceRuntime:
    """Replays recorded times, one per round, cycling; ``position`` is the current round's index.

    With ``per_unit_load`` the trace holds seconds for the whole data set (scaled by the load
    fraction); otherwise the recorded seconds are returned as they are.
    """

    times: FloatArray
    per_unit_load: bool = True
    position: int = 0
    _trace: FloatArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._trace = _check_trace(self.times)

    def sample(self, load_fraction: float, rng: np.random.Generator) -> float:
        value = float(self._trace[self.position % self._trace.size])
        return value * float(load_fraction) if self.per_unit_load else value

    def advance(self, rng: np.random.Generator) -> None:
        self.position += 1


def runtime_for(worker: WorkerSpec) -> WorkerRuntime:
    """The stateful runtime of a spec worker, starting in its spec class (Markov ``slow``)."""
    if worker.model == "markov":
        return MarkovRuntime(
            worker.shift,
            worker.rate,
            worker.p_slow,
            worker.p_active,
            worker.q_as,
            worker.q_sa,
            worker.slow_factor,
            worker.slow,
        )
    if worker.model == "bernoulli":
        return BernoulliRuntime(worker.shift, worker.rate, worker.p_straggle, worker.slow_factor)
    return ShiftedExponentialRuntime(worker.shift, worker.rate)


# --------------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------------


def fit_shifted_exponential(times: ArrayLike, fractions: ArrayLike) -> tuple[float, float]:
    """Fit ``(shift, rate)`` of ``Y = shift + X``, ``X ~ Exponential(rate)``, from measurements,
    robustly to a few slow outlier rounds.

    ``times[j]`` is a measured compute time of a round in which the worker held the fraction
    ``fractions[j]`` of the data, so ``y_j = times[j] / fractions[j]`` are samples of ``Y``
    (seconds for the whole data set).

    A busy profiling round (another process on the device, a page-in) makes one ``y`` many
    times too large; the plain maximum-likelihood fit (``1 / rate = mean(y) - min(y)``) then
    follows it. Here the ``t = ceil(n / 5)`` largest of ``n >= 3`` samples are *censored*: only
    known to be at least ``y_(r)``, ``r = n - t`` (the model's own view of the slowest rounds),
    and the estimator is the unbiased (UMVU) one of a type-II censored exponential sample
    (Epstein and Sobel, 1954)::

        1 / rate = [sum_{i <= r} (y_(i) - y_(1)) + t (y_(r) - y_(1))] / (r - 1)
        shift    = y_(1) - (1 / rate) / n                   (clipped at 0)

    The bracket is the sum of the ``r - 1`` normalised spacings ``(n - i + 1)(y_(i) - y_(i-1))``,
    i.i.d. ``Exponential(rate)``, and ``y_(1) - shift ~ Exponential(n rate)``: both estimates are
    exactly unbiased for clean samples at every ``n`` (the small-sample correction), with
    ``Var(1 / rate) = 1 / (rate^2 (r - 1))``, and up to ``t`` slow outliers (one for
    ``n <= 5``, two for ``n <= 10``) do not enter them at all. A fast outlier (below the true
    shift) is not guarded against: compute cannot beat its deterministic part.

    Degenerate inputs give sane values instead of infinities:

    - one sample ``y``: shift and spread cannot be told apart; return ``shift = y / 2`` and
      ``rate = 2 / y`` (the mean ``y`` is kept, half of it random); two samples: no censoring;
    - when the shift is clipped at 0, ``1 / rate`` becomes the fitted mean ``shift + 1 / rate``;
    - no spread (all ``y`` equal): ``1 / rate`` is floored at ``MIN_RELATIVE_SPREAD`` times the
      fitted mean and the shift lowered to keep it; all zeros give ``(0, 1e12)``.

    Example
    -------
    >>> shift, rate = fit_shifted_exponential([1.1, 1.3, 1.2, 12.0], [1.0, 1.0, 1.0, 1.0])
    >>> round(shift + 1 / rate, 2)  # the 12 s round counts as "at least 1.3 s"; mean(y) is 3.9
    1.29
    """
    t = np.asarray(times, dtype=np.float64)
    f = np.asarray(fractions, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"times must be a non-empty 1-D array, got shape {t.shape}")
    if f.shape != t.shape:
        raise ValueError(f"fractions must have the shape of times {t.shape}, got {f.shape}")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError("times must be finite and >= 0")
    if not np.all(np.isfinite(f)) or np.any(f <= 0) or np.any(f > 1):
        raise ValueError("fractions must be in (0, 1]")
    y = np.sort(t / f)
    n = y.size
    if float(y[-1]) == 0.0:
        return 0.0, 1e12
    if n == 1:
        return 0.5 * float(y[0]), 2.0 / float(y[0])
    censored = censored_count(n)
    r = n - censored
    low = float(y[0])
    spacings = float(np.sum(y[:r] - low)) + censored * (float(y[r - 1]) - low)
    spread = spacings / (r - 1)
    shift = low - spread / n
    mean = shift + spread
    if shift < 0.0:
        shift, spread = 0.0, mean
    if spread < MIN_RELATIVE_SPREAD * mean:
        spread = MIN_RELATIVE_SPREAD * mean
        shift = max(0.0, mean - spread)
    return shift, 1.0 / spread


def censored_count(n: int) -> int:
    """How many of ``n`` samples :func:`fit_shifted_exponential` censors: ``ceil(n / 5)`` from
    three samples on (at least two stay uncensored), none below."""
    return 0 if n < 3 else -(-n // 5)


def fit_worker(worker: WorkerSpec, times: ArrayLike, fractions: ArrayLike) -> WorkerSpec:
    """``worker`` with ``shift`` and ``rate`` replaced by :func:`fit_shifted_exponential`."""
    shift, rate = fit_shifted_exponential(times, fractions)
    return replace(worker, shift=shift, rate=rate)


__all__ = [
    "BernoulliRuntime",
    "ClassFilter",
    "MarkovRuntime",
    "ShiftedExponentialRuntime",
    "StraggleClasses",
    "TraceRuntime",
    "WorkerRuntime",
    "censored_count",
    "fit_shifted_exponential",
    "fit_worker",
    "lateness",
    "parse_straggle_classes",
    "replay_trace",
    "runtime_for",
    "sample_bernoulli",
    "sample_compute_times",
    "sample_markov",
    "sample_markov_classes",
    "sample_shifted_exponential",
    "straggle_probability",
]
