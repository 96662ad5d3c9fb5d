r"""Round time of gradient coding with partial recovery, and the ``auto`` design choice.

The model
---------
The scheme's n workers are the spec's workers in spec order (all of them take part). Worker w
holds ``l_w`` of the k partitions (``f_w = l_w / k``: the computation load) and sends ``V_w``
vectors (the communication load). With the planner's runtime model (:mod:`.timing`), its
response reaches the master at

    A_w = f_w (shift_w + X_w) M_w + path_w + (V_w - 1) v_w,

``path_w = link_w + link_edge(w)`` the delay of one gradient-sized message (edges forward) and
``v_w`` the time of one more vector in the same response: ``vector_seconds`` if given, else
``path_w`` (a response of V vectors takes V times one message's delay). With V = 1 this is
exactly the flat schemes' arrival time, so full gradient coding and the partial schemes are
compared on one model.

The round ends at the first arrival set A(t) = {w : A_w <= t} from which ceil(alpha k)
partitions are recovered (:class:`~edgecode.codes.partial_rule.PartialRecoveryRule`).
Recovery only grows with A, so ``P(T <= t) = P(A(t) is sufficient)``, and with independent
workers

    P(T > t) = sum_{A insufficient} prod_{w in A} F_w(t) prod_{w not in A} (1 - F_w(t)),

F_w the arrival CDF of :mod:`.timing` (a mixture of shifted exponentials). The sum runs over
the 2^n arrival sets (n <= ``MASK_LIMIT``), built for all of them at once by doubling over
workers; for subset designs sufficiency depends only on |A|, so T is the ``arrivals_needed``-th
order statistic and :mod:`.timing`'s Poisson-binomial recursion applies for any n. The
expectation ``E[T] = t_lo + int_{t_lo}^inf P(T > t) dt`` is integrated with :mod:`.timing`'s
adaptive Gauss-Legendre panels between the arrival-time breakpoints.

Recovery is guaranteed at the ``(n - s)``-th arrival (every (n - s)-set is sufficient), but a
round may end earlier: :func:`stop_arrival_distribution` gives P(the round ends at the j-th
arrival) for exchangeable workers; Monte Carlo (:func:`sample_partial_rounds`) gives it for any
cluster, and the discrete-event simulator (:mod:`edgecode.sim.partial`) plays the real rule.

Example
-------
>>> from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec
>>> from edgecode.codes.partial import cyclic_partial
>>> workers = tuple(WorkerSpec(f"w{i}", 1.0, 2.0) for i in range(6))
>>> spec = ClusterSpec(edges=(EdgeSpec("e", workers),))
>>> partial = partial_expected_round_time(spec, cyclic_partial(6, 2, 0.5))
>>> full = full_coding_round_time(spec, 2)
>>> bool(partial < full)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgecode.codes.partial import MAX_PARTITIONS, PartialRecoveryScheme
from edgecode.codes.partial_rule import MASK_LIMIT, PartialDecoder, _mask_bits
from edgecode.codes.partial_schemes import check_alpha, design_label, partial_designs
from edgecode.errors import InvalidInput
from edgecode.planning.plans import one_layer_plan
from edgecode.planning.spec import ClusterSpec
from edgecode.planning.timing import (
    MonteCarloEstimate,
    _arrival_probabilities,
    _boundaries,
    _expected_time,
    _GroupModel,
    _integrate,
    _model_from_arrays,
    expected_round_time,
)
from edgecode.stragglers import straggle_probability

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

#: Cap on (arrival sets x time points) evaluated at once.
_CHUNK_ELEMENTS = 1 << 21
#: Monte Carlo rounds used for designs whose exact time needs more than 2^MASK_LIMIT sets.
FALLBACK_SAMPLES = 20_000


@dataclass(frozen=True)
class PartialStructure:
    """A partial scheme laid on a cluster: per-worker arrays in scheme (= spec) order.

    A worker's response reaches the master at ``fractions * (shifts + X) * M + delays``,
    ``X ~ Exponential(rates)``, ``M = slow_factors`` with probability
    ``straggle_probabilities``; ``delays`` include the extra vectors (see the module docstring).
    """

    label: str
    decoder: PartialDecoder
    worker_names: tuple[str, ...]
    fractions: FloatArray
    vectors: IntArray
    shifts: FloatArray
    rates: FloatArray
    delays: FloatArray
    straggle_probabilities: FloatArray
    slow_factors: FloatArray

    @property
    def n_workers(self) -> int:
        return len(self.worker_names)


def partial_structure(
    spec: ClusterSpec,
    scheme: PartialRecoveryScheme | PartialDecoder,
    *,
    vector_seconds: float | None = None,
) -> PartialStructure:
    """Lay ``scheme`` on ``spec`` (worker i of the scheme = the i-th worker in spec order).

    Raises :class:`InvalidInput` when the scheme's n differs from the spec's workers or
    ``vector_seconds`` is negative or not finite.
    """
    decoder = scheme if isinstance(scheme, PartialDecoder) else PartialDecoder(scheme)
    if spec.n_workers != decoder.n_workers:
        raise InvalidInput(
            f"the scheme has n={decoder.n_workers} workers but the spec has {spec.n_workers}"
        )
    if vector_seconds is not None and not (math.isfinite(vector_seconds) and vector_seconds >= 0):
        raise InvalidInput(f"vector_seconds must be finite and >= 0, got {vector_seconds!r}")
    held = [len({j for msg in worker for j in msg}) for worker in decoder.scheme.messages]
    rows = []
    for edge in spec.edges:
        for worker in edge.workers:
            path = worker.link_seconds + edge.link_seconds
            rows.append((worker.name, worker, path))
    vectors = np.array(decoder.vectors, dtype=np.int64)
    paths = np.array([path for _, _, path in rows])
    extra = paths if vector_seconds is None else np.full(len(rows), float(vector_seconds))
    return PartialStructure(
        label=design_label(decoder.scheme),
        decoder=decoder,
        worker_names=tuple(name for name, _, _ in rows),
        fractions=np.array(held, dtype=np.float64) / decoder.n_partitions,
        vectors=vectors,
        shifts=np.array([w.shift for _, w, _ in rows]),
        rates=np.array([w.rate for _, w, _ in rows]),
        delays=paths + (vectors - 1) * extra,
        straggle_probabilities=np.array([straggle_probability(w) for _, w, _ in rows]),
        slow_factors=np.array([w.slow_factor for _, w, _ in rows]),
    )


# --------------------------------------------------------------------------------------------
# exact distribution of the round time
# --------------------------------------------------------------------------------------------


def _model(structure: PartialStructure) -> _GroupModel:
    """One group holding every worker; ``need`` = the fewest arrivals that can end a round
    (so :mod:`.timing`'s t_lo and tail bound are valid for T)."""
    n = structure.n_workers
    decoder = structure.decoder
    need = decoder.arrivals_needed
    if need is None:
        need = int(np.flatnonzero(stop_arrival_distribution(decoder))[0])

    def row(values: FloatArray) -> FloatArray:
        return np.asarray(values, dtype=np.float64).reshape(1, n)

    return _model_from_arrays(
        row(structure.fractions),
        row(structure.shifts),
        row(structure.rates),
        row(structure.delays),
        row(structure.straggle_probabilities),
        row(structure.slow_factors),
        np.ones((1, n), dtype=np.bool_),
        np.array([need], dtype=np.int64),
        np.zeros(1),
        1,
    )


def _set_probabilities(p: FloatArray, q: FloatArray) -> FloatArray:
    """(2^n, T): P(the arrived set is exactly A) for independent workers (bit i = worker i).

    ``p, q`` (n, T) are each worker's probabilities of having / not having arrived.
    """
    out = np.ones((1, p.shape[1]))
    for i in range(p.shape[0]):
        out = np.concatenate([out * q[i], out * p[i]])
    return out


def _survival(model: _GroupModel, insufficient: FloatArray, t: FloatArray) -> FloatArray:
    """P(T > t) = P(the arrived set at t is insufficient), for a 1-D array ``t``;
    ``insufficient`` is the (2^n,) 0/1 indicator of the insufficient sets."""
    out = np.empty(t.size)
    step = max(1, _CHUNK_ELEMENTS // insufficient.size)
    for start in range(0, t.size, step):
        p, q = _arrival_probabilities(model, t[start : start + step])
        out[start : start + step] = insufficient @ _set_probabilities(p[0], q[0])
    return out


def _expected(structure: PartialStructure, rtol: float) -> float:
    model = _model(structure)
    decoder = structure.decoder
    if decoder.count_only:
        return _expected_time(model, rtol)
    insufficient = (~decoder.sufficient_masks()).astype(np.float64)
    t_lo, atol, boundaries = _boundaries(model, rtol, None)
    integral, _, _ = _integrate(lambda t: _survival(model, insufficient, t), boundaries, atol / 2)
    return t_lo + integral


def partial_expected_round_time(
    spec: ClusterSpec,
    scheme: PartialRecoveryScheme | PartialDecoder,
    *,
    vector_seconds: float | None = None,
    rtol: float = 1e-10,
) -> float:
    """Exact E[round time] (seconds) of a partial scheme on ``spec`` (module docstring).

    Needs n <= ``MASK_LIMIT`` unless the scheme is a subset design (then any n); otherwise
    use :func:`monte_carlo_partial_round_time`.
    """
    if not 0 < rtol < 1:
        raise InvalidInput(f"rtol must be in (0, 1), got {rtol!r}")
    structure = partial_structure(spec, scheme, vector_seconds=vector_seconds)
    return _expected(structure, rtol)


def partial_round_time_cdf(
    spec: ClusterSpec,
    scheme: PartialRecoveryScheme | PartialDecoder,
    t: ArrayLike,
    *,
    vector_seconds: float | None = None,
) -> FloatArray:
    """P(round time <= t), exact, for an array of times ``t`` (n <= ``MASK_LIMIT``)."""
    times = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(times)):
        raise InvalidInput("t must be finite")
    structure = partial_structure(spec, scheme, vector_seconds=vector_seconds)
    insufficient = (~structure.decoder.sufficient_masks()).astype(np.float64)
    survival = _survival(_model(structure), insufficient, times.ravel())
    return np.clip(1.0 - survival, 0.0, 1.0).reshape(times.shape)


def stop_arrival_distribution(decoder: PartialDecoder) -> FloatArray:
    """P(the round ends at the j-th arrival), j = 0..n, for exchangeable workers.

    The first j arrivals are a uniformly random j-set; with ``q_j`` the fraction of sufficient
    j-sets, P(end <= j) = q_j (recovery grows with the set) and P(end = j) = q_j - q_{j-1}.
    Recovery is guaranteed at :func:`guaranteed_arrivals` (q = 1 from there on).
    """
    n = decoder.n_workers
    if decoder.by_arrivals is not None:
        reached = (decoder.by_arrivals >= decoder.need).astype(np.float64)
    else:
        sufficient = decoder.sufficient_masks()
        sizes = _mask_bits(n).sum(axis=1)
        counts = np.bincount(sizes[sufficient], minlength=n + 1)
        reached = counts / np.array([math.comb(n, j) for j in range(n + 1)], dtype=np.float64)
    return np.diff(reached, prepend=0.0)


def guaranteed_arrivals(decoder: PartialDecoder) -> int:
    """The least j such that every j-set of workers is sufficient (at most n - s): the order
    statistic at which recovery is guaranteed."""
    distribution = stop_arrival_distribution(decoder)
    return int(np.flatnonzero(distribution > 0)[-1])


# --------------------------------------------------------------------------------------------
# Monte Carlo
# --------------------------------------------------------------------------------------------


def arrival_times(
    structure: PartialStructure, samples: int, rng: np.random.Generator
) -> FloatArray:
    """(samples, n) independent draws of every worker's arrival time at the master."""
    shape = (int(samples), structure.n_workers)
    compute = structure.fractions * (
        structure.shifts + rng.exponential(1.0, shape) / structure.rates
    )
    straggling = rng.random(shape) < structure.straggle_probabilities
    compute = np.where(straggling, compute * structure.slow_factors, compute)
    return np.asarray(compute + structure.delays, dtype=np.float64)


def stop_times(decoder: PartialDecoder, arrivals: ArrayLike) -> tuple[FloatArray, IntArray]:
    """(round end times, arrivals used) of the first-sufficient-set rule, for arrival-time rows
    ``arrivals`` of shape (R, n); ties are taken in worker order."""
    times = np.asarray(arrivals, dtype=np.float64)
    order = np.argsort(times, axis=1, kind="stable")
    ordered = np.take_along_axis(times, order, axis=1)
    rows = np.arange(times.shape[0])
    if decoder.count_only:
        used = np.full(times.shape[0], decoder.arrivals_needed, dtype=np.int64)
    elif decoder.n_workers <= 62 and decoder.table is not None:
        masks = np.cumsum(np.left_shift(1, order), axis=1)
        used = np.argmax(decoder.sufficient_masks()[masks], axis=1) + 1
    else:
        used = np.empty(times.shape[0], dtype=np.int64)
        for r, row in enumerate(order.tolist()):
            mask = 0
            for j, worker in enumerate(row, start=1):
                mask |= 1 << worker
                if decoder.recovered_count(mask) >= decoder.need:
                    used[r] = j
                    break
    return ordered[rows, used - 1], used.astype(np.int64)


def sample_partial_rounds(
    spec: ClusterSpec,
    scheme: PartialRecoveryScheme | PartialDecoder,
    samples: int,
    rng: np.random.Generator,
    *,
    vector_seconds: float | None = None,
) -> tuple[FloatArray, IntArray]:
    """``samples`` independent rounds: (round times, arrivals the master used), each (samples,)."""
    if int(samples) != samples or samples < 1:
        raise InvalidInput(f"samples must be an integer >= 1, got {samples!r}")
    structure = partial_structure(spec, scheme, vector_seconds=vector_seconds)
    return stop_times(structure.decoder, arrival_times(structure, int(samples), rng))


def monte_carlo_partial_round_time(
    spec: ClusterSpec,
    scheme: PartialRecoveryScheme | PartialDecoder,
    samples: int,
    rng: np.random.Generator,
    *,
    vector_seconds: float | None = None,
) -> MonteCarloEstimate:
    """Sample mean and standard error of the round time over ``samples`` independent rounds."""
    if int(samples) != samples or samples < 2:
        raise InvalidInput(f"samples must be an integer >= 2, got {samples!r}")
    times, _ = sample_partial_rounds(spec, scheme, samples, rng, vector_seconds=vector_seconds)
    return MonteCarloEstimate(
        mean=float(times.mean()),
        stderr=float(times.std(ddof=1) / math.sqrt(times.size)),
        samples=int(times.size),
    )


# --------------------------------------------------------------------------------------------
# full coding and the auto design
# --------------------------------------------------------------------------------------------


def full_coding_round_time(spec: ClusterSpec, s: int, rtol: float = 1e-10) -> float:
    """Exact E[round time] of full gradient coding (flat cyclic repetition over every worker:
    each holds s + 1 of K = N partitions, the master decodes from the first N - s)."""
    n = spec.n_workers
    if isinstance(s, bool) or int(s) != s or not 0 <= s < n:
        raise InvalidInput(f"s must be an integer in [0, {n}) (the workers), got {s!r}")
    rows = [[int(s) + 1] * len(edge.workers) for edge in spec.edges]
    return expected_round_time(spec, one_layer_plan(spec, "flat", n, int(s), rows), rtol)


@dataclass(frozen=True)
class PartialOption:
    """One candidate design with its loads beside the LP bound and its expected round time."""

    label: str
    scheme: PartialRecoveryScheme
    partitions: int
    partitions_per_worker: int
    computation_load: float
    communication_load: int
    lower_bound: float
    expected_round_seconds: float
    #: the order statistic at which recovery is guaranteed (<= n - s)
    guaranteed_arrivals: int
    #: mean number of arrivals the round ends at (exchangeable workers)
    mean_arrivals: float
    #: False when the expectation is a Monte Carlo estimate (n > MASK_LIMIT, not a subset design)
    exact: bool


@dataclass(frozen=True)
class PartialChoice:
    """The ``auto`` choice: ``best`` (the lowest expected round time) among ``options``, and
    full gradient coding's expected round time on the same cluster and s."""

    stragglers: int
    alpha: Fraction
    best: PartialOption
    options: tuple[PartialOption, ...]
    full_coding_seconds: float


def evaluate_design(
    spec: ClusterSpec,
    scheme: PartialRecoveryScheme,
    *,
    vector_seconds: float | None = None,
    rtol: float = 1e-8,
    rng: np.random.Generator | None = None,
) -> PartialOption:
    """A :class:`PartialOption` for ``scheme`` on ``spec`` (exact time when possible, else a
    Monte Carlo mean over ``FALLBACK_SAMPLES`` rounds drawn with ``rng``)."""
    decoder = PartialDecoder(scheme)
    structure = partial_structure(spec, decoder, vector_seconds=vector_seconds)
    exact = decoder.count_only or decoder.n_workers <= MASK_LIMIT
    if exact:
        seconds = _expected(structure, rtol)
        distribution = stop_arrival_distribution(decoder)
        mean_arrivals = float(distribution @ np.arange(distribution.size))
    else:
        if rng is None:
            raise InvalidInput(f"{structure.label}: n > {MASK_LIMIT} needs an rng for Monte Carlo")
        times, used = stop_times(decoder, arrival_times(structure, FALLBACK_SAMPLES, rng))
        seconds, mean_arrivals = float(times.mean()), float(used.mean())
    return PartialOption(
        label=structure.label,
        scheme=scheme,
        partitions=scheme.n_partitions,
        partitions_per_worker=scheme.partitions_per_worker,
        computation_load=scheme.computation_load,
        communication_load=scheme.communication_load,
        lower_bound=scheme.lower_bound,
        expected_round_seconds=seconds,
        guaranteed_arrivals=scheme.n_workers - scheme.stragglers
        if not exact
        else guaranteed_arrivals(decoder),
        mean_arrivals=mean_arrivals,
        exact=exact,
    )


def choose_partial_design(
    spec: ClusterSpec,
    s: int,
    alpha: float | Fraction,
    *,
    vector_seconds: float | None = None,
    max_partitions: int = MAX_PARTITIONS,
    max_vectors: int | None = None,
    rng: np.random.Generator | None = None,
) -> PartialChoice:
    """The ``auto`` design: among :func:`~edgecode.codes.partial_schemes.partial_designs`, the one
    with the lowest expected round time on ``spec``. It weighs the computation load (a worker's
    compute time scales with its data fraction) against the communication load (every extra
    vector adds ``vector_seconds``); ties go to fewer vectors.

    Raises :class:`InvalidInput` for a bad alpha or s, and
    :class:`~edgecode.codes.partial_schemes.InvalidPartialParameters` naming the violated bound.
    """
    exact_alpha = check_alpha(alpha)
    n = spec.n_workers
    if isinstance(s, bool) or int(s) != s or not 0 <= s < n:
        raise InvalidInput(f"s must be an integer in [0, {n}) (the workers), got {s!r}")
    designs = partial_designs(
        n, int(s), exact_alpha, max_partitions=max_partitions, max_vectors=max_vectors
    )
    options = tuple(
        evaluate_design(spec, scheme, vector_seconds=vector_seconds, rng=rng) for scheme in designs
    )
    best = min(options, key=lambda o: (o.expected_round_seconds, o.communication_load))
    return PartialChoice(
        stragglers=int(s),
        alpha=exact_alpha,
        best=best,
        options=options,
        full_coding_seconds=full_coding_round_time(spec, int(s)),
    )
