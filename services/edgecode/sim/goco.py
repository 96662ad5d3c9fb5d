r"""Vectorised simulator of GOCO and its gossip baselines on least squares, for error curves.

All N peers advance together, one numpy step per round (:func:`edgecode.learning.gossip.goco_step`,
W sparse): a 1,000-peer torus runs hundreds of rounds per second. The objective is least squares
split over K = N partitions (:func:`least_squares_peers`), a quadratic, so peer i's summed partial
gradient is ``H_i x_i - c_i`` with ``H_i = sum_{j in D_i} A_j^T A_j`` and ``c_i = sum_{j in D_i}
A_j^T y_j`` (A = [X, 1]), precomputed once.

What a run records (:class:`GossipRun`), after every round t:

* ``gap[t]``: the relative optimality gap of the average model x_bar = (1/N) sum_i x_i,
  ``(F(x_bar) - F*) / (F(x_0) - F*)`` with F the summed loss, computed exactly as
  ``(x_bar - x*)^T H (x_bar - x*) / 2`` (no cancellation);
* ``consensus[t]``: ``(1/N) sum_i ||x_i - x_bar||^2``;
* ``wall_seconds[t]``: emulated time (:class:`TimeModel`). A peer not straggling computes one
  partition in ``unit_seconds``, so d partitions in ``d * unit_seconds``; a straggler is
  ``slow_factor`` times slower. GOCO and gossip cut the computation at the deadline ``d *
  unit_seconds`` and gossip for ``gossip_seconds``: every round lasts ``d * unit_seconds +
  gossip_seconds``. gossip-wait peers wait for their own gradient and for their neighbours'
  values: ``T_i(t) = max_{l in N_i + {i}} T_l(t-1) + compute_i(t) + gossip_seconds``, and the
  wall time of round t is ``max_i T_i(t)``.

Straggling is Bernoulli(p) per peer and round; the same pattern is shared by every scheme of a
comparison (common random numbers). :func:`goco_comparison` returns the benchmark rows and
:func:`plot_gossip_runs` draws the curves (PNG, Agg).

Example
-------
>>> import numpy as np
>>> from edgecode.learning import synthetic_least_squares
>>> from edgecode.learning.gossip import StepSchedule, build_topology, gossip_scheme
>>> rng = np.random.default_rng(0)
>>> data = synthetic_least_squares(240, 4, rng, noise=0.5)
>>> topology = build_topology("ring", 12, rng)
>>> scheme = gossip_scheme("goco", 12, 0.3)
>>> problem = least_squares_peers(data, scheme.code, non_iid=True)
>>> run = simulate_gossip(problem, topology, scheme, 400, StepSchedule(0.02, 50.0), rng)
>>> bool(run.gap[-1] < 1e-3 * run.gap[0])
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from edgecode.codes.stochastic import StochasticCode
from edgecode.errors import InvalidInput
from edgecode.learning.datasets import Dataset, partition_bounds, synthetic_least_squares
from edgecode.learning.gossip import (
    SCHEMES,
    GossipScheme,
    StepSchedule,
    Topology,
    build_topology,
    consensus_distance,
    goco_step,
    gossip_scheme,
    partition_order,
    peer_step_size,
)
from edgecode.learning.models import LeastSquares, smoothness

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: Colours of the gossip schemes in figures.
GOSSIP_COLOURS = {"goco": "#2ca02c", "gossip": "#d62728", "gossip-wait": "#7f7f7f"}


@dataclass(frozen=True, eq=False)
class QuadraticPeers:
    """Least squares split over peers: ``local_gradients(X)[i] = H_i x_i - c_i``.

    ``hessians`` (N, dim, dim), ``linear`` (N, dim): peer i's summed partial Hessian and
    ``A^T y`` over the partitions it holds; ``hessian`` (dim, dim) and ``optimum`` (dim,) those
    of the whole objective F (each partition counted once); ``initial`` (dim,) the common start.
    """

    hessians: FloatArray
    linear: FloatArray
    hessian: FloatArray
    optimum: FloatArray
    initial: FloatArray

    @property
    def n_peers(self) -> int:
        return int(self.hessians.shape[0])

    @property
    def dim(self) -> int:
        return int(self.optimum.shape[0])

    def local_gradients(self, params: FloatArray) -> FloatArray:
        """Row i: ``sum_{j in D_i} grad f_j(x_i)`` for params X of shape (N, dim)."""
        return np.asarray(
            np.einsum("nab,nb->na", self.hessians, params) - self.linear, dtype=np.float64
        )

    def gaps(self, points: FloatArray) -> FloatArray:
        """``F(x) - F*`` for each row x of ``points`` (m, dim), exactly (x - x*)^T H (x - x*)/2."""
        delta = np.atleast_2d(points) - self.optimum
        return np.asarray(0.5 * np.einsum("ma,ab,mb->m", delta, self.hessian, delta))

    @property
    def initial_gap(self) -> float:
        return float(self.gaps(self.initial[None, :])[0])


def least_squares_peers(
    dataset: Dataset,
    code: StochasticCode,
    *,
    non_iid: bool,
    l2: float = 0.0,
    initial: FloatArray | None = None,
) -> QuadraticPeers:
    """The quadratic of :class:`edgecode.learning.models.LeastSquares` (intercept, L2 ``l2`` on
    the weights with share 1/K per partition) placed on peers by ``code`` (K partitions of the
    rows in :func:`edgecode.learning.gossip.partition_order`). ``initial`` defaults to zeros.
    """
    if dataset.task != "regression":
        raise ValueError(f"dataset must be a regression data set, got task {dataset.task!r}")
    if not (math.isfinite(l2) and l2 >= 0.0):
        raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
    matrix: Any = dataset.X
    X = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
    A = np.hstack([X, np.ones((X.shape[0], 1))])
    y = np.asarray(dataset.y, dtype=np.float64)
    dim, k = A.shape[1], code.n_partitions
    order = partition_order(dataset, non_iid=non_iid)
    penalty = np.full(dim, l2 / k)
    penalty[-1] = 0.0
    part_h = np.empty((k, dim, dim))
    part_c = np.empty((k, dim))
    for j, (start, stop) in enumerate(partition_bounds(dataset.n_rows, k)):
        rows = A[order[start:stop]]
        part_h[j] = rows.T @ rows + np.diag(penalty)
        part_c[j] = rows.T @ y[order[start:stop]]
    placement = (code.B != 0).astype(np.float64)
    hessian = part_h.sum(axis=0)
    start_point = np.zeros(dim) if initial is None else np.asarray(initial, dtype=np.float64)
    if start_point.shape != (dim,) or not np.all(np.isfinite(start_point)):
        raise InvalidInput(f"initial must be finite with shape ({dim},), got {start_point.shape}")
    return QuadraticPeers(
        hessians=np.einsum("nk,kab->nab", placement, part_h),
        linear=placement @ part_c,
        hessian=hessian,
        optimum=np.linalg.solve(hessian, part_c.sum(axis=0)),
        initial=start_point,
    )


@dataclass(frozen=True)
class TimeModel:
    """Emulated seconds: one partition's gradient takes ``unit_seconds`` (``slow_factor`` times
    more when the peer straggles), one gossip exchange ``gossip_seconds``."""

    unit_seconds: float = 1.0
    slow_factor: float = 5.0
    gossip_seconds: float = 0.1

    def __post_init__(self) -> None:
        for name in ("unit_seconds", "slow_factor", "gossip_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.slow_factor < 1.0:
            raise ValueError(f"slow_factor must be >= 1, got {self.slow_factor!r}")


@dataclass(frozen=True, eq=False)
class GossipRun:
    """One simulated run; arrays indexed by round (entry 0 = before the first round)."""

    scheme: str
    graph: str
    straggle_probability: float
    replication: int
    step: StepSchedule
    #: relative optimality gap of the average model, (R + 1,)
    gap: FloatArray
    #: (1/N) sum_i ||x_i - x_bar||^2, (R + 1,)
    consensus: FloatArray
    #: emulated wall-clock seconds at the end of each round, (R + 1,)
    wall_seconds: FloatArray
    #: peers whose gradient was cut at the deadline, per round (R,)
    skipped: NDArray[np.int64]
    #: every peer's parameters after the last round, (N, dim)
    final: FloatArray

    @property
    def rounds(self) -> int:
        return int(self.skipped.size)

    def rounds_to(self, target: float) -> int | None:
        """The first round from which the gap stays <= ``target`` to the end (None: never)."""
        above = np.flatnonzero(~(self.gap <= target))
        if above.size == 0:
            return 0
        first = int(above[-1]) + 1
        return first if first <= self.rounds else None

    def wall_to(self, target: float) -> float | None:
        """Emulated seconds at :meth:`rounds_to` (None: never)."""
        rounds = self.rounds_to(target)
        return None if rounds is None else float(self.wall_seconds[rounds])


def _wall_seconds(
    topology: Topology, scheme: GossipScheme, alive: BoolArray, time: TimeModel
) -> FloatArray:
    rounds = alive.shape[0]
    load = scheme.replication * time.unit_seconds
    if not scheme.waits:
        return np.arange(rounds + 1) * (load + time.gossip_seconds)
    closed = (topology.graph.adjacency() + sp.eye_array(topology.n_peers)).tocsr()
    finish = np.zeros(topology.n_peers)
    wall = np.zeros(rounds + 1)
    for t in range(rounds):
        ready = np.maximum.reduceat(finish[closed.indices], closed.indptr[:-1])
        compute = np.where(alive[t], load, load * time.slow_factor)
        finish = ready + compute + time.gossip_seconds
        wall[t + 1] = finish.max()
    return wall


def simulate_gossip(
    problem: QuadraticPeers,
    topology: Topology,
    scheme: GossipScheme,
    rounds: int,
    step: StepSchedule,
    rng: np.random.Generator,
    *,
    time: TimeModel | None = None,
    alive: BoolArray | None = None,
    initial: FloatArray | None = None,
) -> GossipRun:
    """Run ``rounds`` synchronous rounds of ``scheme`` on every peer.

    ``step`` gives the PEER step eta_t (see :func:`edgecode.learning.gossip.peer_step_size`);
    ``alive`` (rounds, N) fixes the straggler pattern (drawn from ``rng`` with the scheme's p
    otherwise); ``initial`` (N, dim) per-peer starts (default: every peer at
    ``problem.initial``). A run whose parameters overflow stops, its remaining gaps are inf.
    """
    n = topology.n_peers
    if problem.n_peers != n or scheme.code.n_workers != n:
        raise ValueError(
            f"problem ({problem.n_peers}), scheme ({scheme.code.n_workers}) and topology ({n}) "
            "must have the same number of peers"
        )
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds must be an integer >= 0, got {rounds!r}")
    if alive is None:
        alive = scheme.code.sample_alive_rounds(rng, rounds)
    alive = np.asarray(alive, dtype=np.bool_)
    if alive.shape != (rounds, n):
        raise ValueError(f"alive must have shape ({rounds}, {n}), got {alive.shape}")
    params = np.tile(problem.initial, (n, 1)) if initial is None else np.array(initial, float)
    if params.shape != (n, problem.dim) or not np.all(np.isfinite(params)):
        raise InvalidInput(f"initial must be finite with shape ({n}, {problem.dim})")
    computed = np.ones_like(alive) if scheme.waits else alive
    means = np.full((rounds + 1, problem.dim), np.inf)
    consensus = np.full(rounds + 1, np.inf)
    means[0] = params.mean(axis=0)
    consensus[0] = consensus_distance(params)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(rounds):
            gradients = problem.local_gradients(params)
            params = goco_step(
                params, gradients, computed[t], scheme.coefficient, step.at(t), topology.weights
            )
            if not np.all(np.isfinite(params)):
                break
            means[t + 1] = params.mean(axis=0)
            consensus[t + 1] = consensus_distance(params)
        gaps = problem.gaps(means) / problem.initial_gap
    gaps[~np.isfinite(gaps)] = np.inf
    return GossipRun(
        scheme=scheme.name,
        graph=topology.graph.name,
        straggle_probability=scheme.straggle_probability,
        replication=scheme.replication,
        step=step,
        gap=gaps,
        consensus=consensus,
        wall_seconds=_wall_seconds(topology, scheme, alive, time or TimeModel()),
        skipped=np.asarray((~computed).sum(axis=1), dtype=np.int64),
        final=params,
    )


def mean_smoothness(dataset: Dataset) -> float:
    """L of the MEAN least-squares loss with intercept (:func:`edgecode.learning.smoothness`)."""
    return smoothness(LeastSquares(), dataset.X)


@dataclass(frozen=True)
class ComparisonRow:
    """One row of :func:`goco_comparison` (means over the repeats)."""

    scheme: str
    graph: str
    p: float
    replication: int
    #: the chosen step on the mean loss, in units of 1 / L
    lr: float
    rounds: int
    #: relative optimality gap of the average model after ``rounds`` rounds (mean, std error)
    gap: float
    gap_stderr: float
    consensus: float
    #: mean rounds / emulated seconds until the gap stays below the target (None: some repeat
    #: never got there)
    rounds_to_target: float | None
    wall_to_target: float | None


def _mean_or_none(values: Sequence[float | int | None]) -> float | None:
    if any(value is None for value in values):
        return None
    return float(np.mean([float(value) for value in values if value is not None]))


def _run_scheme(
    dataset: Dataset,
    topology: Topology,
    scheme: GossipScheme,
    patterns: Sequence[BoolArray],
    lr: float,
    decay_rounds: float,
    non_iid: bool,
    time: TimeModel,
    rng: np.random.Generator,
) -> list[GossipRun]:
    problem = least_squares_peers(dataset, scheme.code, non_iid=non_iid)
    eta = peer_step_size(lr / mean_smoothness(dataset), topology.n_peers, dataset.n_rows)
    schedule = StepSchedule(eta, decay_rounds)
    return [
        simulate_gossip(
            problem, topology, scheme, pattern.shape[0], schedule, rng, alive=pattern, time=time
        )
        for pattern in patterns
    ]


def goco_comparison(
    rng: np.random.Generator,
    *,
    graphs: Sequence[str] = ("ring", "torus"),
    probabilities: Sequence[float] = (0.3, 0.5, 0.7),
    schemes: Sequence[str] = SCHEMES,
    n_peers: int = 12,
    rounds: int = 300,
    target_gap: float = 1e-3,
    replication: int = 2,
    non_iid: bool = True,
    repeats: int = 5,
    learning_rates: Sequence[float] = (0.05, 0.1, 0.2, 0.4),
    decay_rounds: float = 50.0,
    n_rows: int = 1200,
    n_features: int = 10,
    noise: float = 1.0,
    time: TimeModel | None = None,
) -> list[ComparisonRow]:
    """GOCO against its baselines, per (graph, p, scheme), on one synthetic least-squares set.

    Every scheme sees the same data, graph and straggler patterns (``repeats`` patterns drawn
    per (graph, p)); each scheme's step ``lr / L`` (L: :func:`mean_smoothness`) is the one of
    ``learning_rates`` with the lowest mean gap after ``rounds`` rounds (each scheme tuned, no
    handicap), decaying as ``1 / (1 + t / decay_rounds)``. Rows come in the order graph, p,
    scheme.
    """
    if not graphs or not probabilities or not schemes or not learning_rates:
        raise ValueError("graphs, probabilities, schemes and learning_rates must be non-empty")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    time = time or TimeModel()
    dataset = synthetic_least_squares(n_rows, n_features, rng, noise=noise)
    rows: list[ComparisonRow] = []
    for graph in graphs:
        topology = build_topology(graph, n_peers, rng)
        for p in probabilities:
            patterns = [rng.random((rounds, n_peers)) >= p for _ in range(repeats)]
            for name in schemes:
                scheme = gossip_scheme(name, n_peers, p, replication)
                best: tuple[float, float, list[GossipRun]] | None = None
                for lr in learning_rates:
                    runs = _run_scheme(
                        dataset, topology, scheme, patterns, lr, decay_rounds, non_iid, time, rng
                    )
                    final = float(np.mean([run.gap[-1] for run in runs]))
                    if best is None or final < best[0]:
                        best = (final, lr, runs)
                assert best is not None
                rows.append(_row(scheme, topology, best[1], rounds, best[2], target_gap))
    return rows


def _row(
    scheme: GossipScheme,
    topology: Topology,
    lr: float,
    rounds: int,
    runs: Sequence[GossipRun],
    target: float,
) -> ComparisonRow:
    finals = np.array([run.gap[-1] for run in runs])
    stderr = float(finals.std(ddof=1) / math.sqrt(finals.size)) if finals.size > 1 else 0.0
    return ComparisonRow(
        scheme=scheme.name,
        graph=topology.graph.name,
        p=scheme.straggle_probability,
        replication=scheme.replication,
        lr=lr,
        rounds=rounds,
        gap=float(finals.mean()),
        gap_stderr=stderr,
        consensus=float(np.mean([run.consensus[-1] for run in runs])),
        rounds_to_target=_mean_or_none([run.rounds_to(target) for run in runs]),
        wall_to_target=_mean_or_none([run.wall_to(target) for run in runs]),
    )


def gossip_curves(
    rng: np.random.Generator,
    *,
    graph: str = "torus",
    n_peers: int = 1000,
    p: float = 0.5,
    rounds: int = 500,
    schemes: Sequence[str] = SCHEMES,
    replication: int = 2,
    non_iid: bool = True,
    lr: float = 0.1,
    decay_rounds: float = 50.0,
    rows_per_peer: int = 20,
    n_features: int = 10,
    noise: float = 1.0,
    time: TimeModel | None = None,
) -> dict[str, GossipRun]:
    """One run per scheme on a large graph (default: 1,000 peers), same data and stragglers,
    step ``lr / L`` for every scheme; the input of :func:`plot_gossip_runs`."""
    topology = build_topology(graph, n_peers, rng)
    dataset = synthetic_least_squares(rows_per_peer * n_peers, n_features, rng, noise=noise)
    pattern = rng.random((rounds, n_peers)) >= p
    runs = {}
    for name in schemes:
        scheme = gossip_scheme(name, n_peers, p, replication)
        runs[name] = _run_scheme(
            dataset,
            topology,
            scheme,
            [pattern],
            lr,
            decay_rounds,
            non_iid,
            time or TimeModel(),
            rng,
        )[0]
    return runs


def plot_gossip_runs(
    runs: Mapping[str, GossipRun], path: str | Path, *, title: str | None = None
) -> Path:
    """Three panels: relative gap vs rounds, consensus distance vs rounds (log y), and gap vs
    emulated wall-clock seconds. ``runs`` maps a label to a run. Returns the written path."""
    from matplotlib.figure import Figure  # only the figure needs matplotlib

    if not runs:
        raise ValueError("runs: need at least one run to plot")
    path = Path(path)
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    gaps, consensus, walls = fig.subplots(1, 3)
    for index, (label, run) in enumerate(runs.items()):
        colour = GOSSIP_COLOURS.get(run.scheme, f"C{index}")
        rounds = np.arange(run.rounds + 1)
        gaps.semilogy(rounds, _positive(run.gap), color=colour, label=label)
        consensus.semilogy(rounds, _positive(run.consensus), color=colour, label=label)
        walls.semilogy(run.wall_seconds, _positive(run.gap), color=colour, label=label)
    gaps.set(xlabel="round", ylabel="(F(x_bar) - F*) / (F(x_0) - F*)", title="optimality gap")
    consensus.set(xlabel="round", ylabel="(1/N) sum ||x_i - x_bar||^2", title="consensus distance")
    walls.set(xlabel="emulated seconds", ylabel="relative gap", title="gap vs wall clock")
    for ax in (gaps, consensus, walls):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")
    any_run = next(iter(runs.values()))
    fig.suptitle(
        title
        or f"gossip learning on {any_run.graph}, {any_run.final.shape[0]} peers, "
        f"p = {any_run.straggle_probability:g}"
    )
    fig.savefig(path, dpi=120)
    return path


def _positive(values: FloatArray) -> Any:
    """Values for a log axis: non-positive and non-finite entries masked."""
    return np.ma.masked_where(~(values > 0.0) | ~np.isfinite(values), values)


__all__ = [
    "ComparisonRow",
    "GossipRun",
    "QuadraticPeers",
    "TimeModel",
    "goco_comparison",
    "gossip_curves",
    "least_squares_peers",
    "mean_smoothness",
    "plot_gossip_runs",
    "simulate_gossip",
]
