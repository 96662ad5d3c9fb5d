"""The schemes compared on one cluster, and the speed-up sweep of the report.

:func:`compare_schemes` builds, for a spec, the plans that ``edgecode plan`` and ``edgecode
simulate`` put side by side, each with its exact expected round time:

==================== ===========================================================================
``uncoded``           every worker holds 1 of K = N partitions; the master waits for all
``ignore-stragglers`` same placement; the master waits for the first N - s and rescales (biased)
``flat-cyclic``       Tandon's cyclic repetition over all N workers, the best s found
``hgc-uniform``       the paper's hierarchical code with uniform parameters: every node, one
                      s_worker for all edges, equal loads; the best (s_edge, s_worker) found
``hgc-optimized``     :func:`edgecode.planning.optimize.optimize`
==================== ===========================================================================

Choosing the baselines' parameters costs exact evaluations whose price grows with the tolerance,
so on large clusters not every value is tried: :func:`_search_tolerance` scans a geometric grid
upwards and stops once two grid points in a row are worse than the best so far, then refines
around the best (on small clusters every value is tried). Ignore-stragglers drops the slowest
``s = max(1, round(N / 10))`` workers by default: it is fast, but its gradient misses their data
(biased), so it is a reference point rather than a competitor.

:func:`speedup_sweep` is the paper-1 style comparison: on a generated heterogeneous cluster family
every worker straggles (Bernoulli) with probability ``p``, taking ``slowdown`` times as long; it
reports, per point, each scheme's exact expected and simulated mean round time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from edgecode.errors import Infeasible
from edgecode.planning.baselines import flat_plan, ignore_plan, uncoded_plan, uniform_plan
from edgecode.planning.optimize import optimize
from edgecode.planning.spec import ClusterSpec, EdgeSpec, Plan, WorkerSpec
from edgecode.sim.engine import SimResult, simulate

#: Scheme labels, in the order every table and figure lists them.
LABELS = ("uncoded", "ignore-stragglers", "flat-cyclic", "hgc-uniform", "hgc-optimized")
#: Up to this many candidate values of a tolerance, every value is evaluated.
EXHAUSTIVE_TOLERANCES = 32


@dataclass(frozen=True)
class Scheme:
    """One compared plan: its label, a short description of its parameters, and the plan."""

    label: str
    parameters: str
    plan: Plan

    @property
    def expected_round_seconds(self) -> float:
        assert self.plan.expected_round_seconds is not None
        return self.plan.expected_round_seconds


def describe(plan: Plan) -> str:
    """Short parameter summary, e.g. ``K=24 s_edge=1 s_worker=1,2,0 edges=3/3 workers=11/12``.

    With more than four edges and unequal tolerances, s_worker lists ``value x edges``.
    """
    selected = sum(w.selected for e in plan.edges for w in e.workers)
    total = sum(len(e.workers) for e in plan.edges)
    parts = [f"K={plan.partitions}"]
    if plan.scheme == "hgc":
        s_workers = [e.s_worker for e in plan.edges if e.selected]
        distinct = sorted(set(s_workers))
        parts.append(f"s_edge={plan.s_edge}")
        if len(distinct) == 1:
            parts.append(f"s_worker={distinct[0]}")
        elif len(s_workers) <= 4:
            parts.append("s_worker=" + ",".join(str(s) for s in s_workers))
        else:  # value x number of edges
            parts.append("s_worker=" + ",".join(f"{s}x{s_workers.count(s)}" for s in distinct))
        parts.append(f"edges={sum(e.selected for e in plan.edges)}/{len(plan.edges)}")
    elif plan.scheme in ("flat", "ignore"):
        parts.append(f"s={plan.s_edge}")
    parts.append(f"workers={selected}/{total}")
    return " ".join(parts)


def compare_schemes(
    spec: ClusterSpec,
    *,
    ignore_stragglers: int | None = None,
    optimized: Plan | None = None,
) -> list[Scheme]:
    """The five schemes of :data:`LABELS` on ``spec``, each with its exact expected round time.

    ``ignore_stragglers`` overrides the number of workers ignore-stragglers drops (default:
    :func:`default_ignored`). ``optimized`` reuses an already optimized plan.
    """
    n_workers = spec.n_workers
    uncoded = uncoded_plan(spec)
    flat = _search_tolerance(lambda s: flat_plan(spec, s), n_workers)
    assert flat is not None  # s = 0 is always feasible
    if ignore_stragglers is None:
        ignore_stragglers = default_ignored(n_workers)
    if not 0 <= ignore_stragglers < n_workers:
        raise ValueError(
            f"ignore_stragglers must be in [0, {n_workers}) (the workers), got {ignore_stragglers}"
        )
    ignore = ignore_plan(spec, ignore_stragglers)
    uniform = best_uniform(spec)
    best = optimized if optimized is not None else optimize(spec)
    plans = (uncoded, ignore, flat, uniform, best)
    return [Scheme(label, describe(plan), plan) for label, plan in zip(LABELS, plans, strict=True)]


def faster_than_optimized(schemes: Sequence[Scheme], tolerance: float = 1e-6) -> list[Scheme]:
    """Exact baselines (flat-cyclic, hgc-uniform) whose expected time beats the optimized plan.

    The optimizer should never lose to them; callers warn when it does.
    """
    best = next(s for s in schemes if s.label == "hgc-optimized").expected_round_seconds
    return [
        s
        for s in schemes
        if s.label in ("flat-cyclic", "hgc-uniform")
        and s.expected_round_seconds < best * (1 - tolerance)
    ]


def default_ignored(n_workers: int) -> int:
    """Workers ignore-stragglers drops by default: a tenth, at least one (none of a single one)."""
    return min(max(1, round(n_workers / 10)), n_workers - 1)


def best_uniform(spec: ClusterSpec) -> Plan:
    """The uniform hierarchical plan with the smallest expected time over the tried parameters.

    For each ``s_edge`` the best ``s_worker`` is searched (:func:`_search_tolerance`); ``s_edge``
    is searched the same way over those optima.
    """
    sizes = [len(edge.workers) for edge in spec.edges]

    def best_for_edge_tolerance(s_edge: int) -> Plan | None:
        return _search_tolerance(lambda s_w: uniform_plan(spec, s_edge, s_w), min(sizes))

    plan = _search_tolerance(best_for_edge_tolerance, len(sizes))
    if plan is None:  # pragma: no cover - s_edge = s_worker = 0 is always feasible
        raise Infeasible("no uniform hierarchical plan is feasible on this cluster")
    return plan


def _search_tolerance(
    build: Callable[[int], Plan | None], count: int, patience: int = 2
) -> Plan | None:
    """The plan of smallest expected time among ``build(s)``, ``0 <= s < count``.

    All values when ``count <= EXHAUSTIVE_TOLERANCES``; otherwise a geometric grid scanned upwards
    until ``patience`` grid points in a row are worse than the best, then every value between the
    best point's grid neighbours. ``build`` may raise :class:`Infeasible` (skipped) or return
    ``None`` (skipped).
    """
    cache: dict[int, Plan | None] = {}

    def value(s: int) -> float:
        if s not in cache:
            try:
                cache[s] = build(s)
            except Infeasible:
                cache[s] = None
        plan = cache[s]
        if plan is None or plan.expected_round_seconds is None:
            return math.inf
        return plan.expected_round_seconds

    if count <= EXHAUSTIVE_TOLERANCES:
        candidates: Sequence[int] = range(count)
        for s in candidates:
            value(s)
    else:
        grid = sorted(set(_geometric(count)))
        worse = 0
        best_index = 0
        for index, s in enumerate(grid):
            if value(s) < value(grid[best_index]):
                best_index, worse = index, 0
            elif index > 0:
                worse += 1
                if worse >= patience:
                    break
        low = grid[max(0, best_index - 1)]
        high = grid[min(len(grid) - 1, best_index + 1)]
        for s in range(low, high + 1):
            value(s)
    return cache[min(cache, key=value)]


def _geometric(count: int) -> Iterator[int]:
    s = 0
    while s < count:
        yield s
        s = max(s + 1, math.floor(s * 1.5))
    yield count - 1


# --------------------------------------------------------------------------------------------
# the report sweep
# --------------------------------------------------------------------------------------------

#: Raspberry Pi boards of the report's cluster family: (shift, rate) for the whole data set.
BOARDS = {"pi3": (0.90, 1.5), "pi4": (0.40, 3.5), "pi5": (0.18, 8.0)}


def cluster_family(
    p_straggle: float,
    slowdown: float,
    *,
    edges: int = 4,
    workers_per_edge: int = 5,
    seed: int = 2024,
) -> ClusterSpec:
    """The report's generated cluster: ``edges`` x ``workers_per_edge`` mixed Raspberry Pis.

    Boards are drawn (30 % Pi 3, 50 % Pi 4, 20 % Pi 5) with +-15 % spread from ``seed``, so the
    hardware is the same at every sweep point; worker links 0.5-3 ms, edge links 2-20 ms. Every
    worker straggles independently with probability ``p_straggle`` per round, then taking
    ``slowdown`` times as long (Bernoulli model).
    """
    rng = np.random.default_rng(seed)
    boards = list(BOARDS)
    edge_specs = []
    for i in range(edges):
        workers = []
        for j in range(workers_per_edge):
            board = boards[int(rng.choice(len(boards), p=[0.3, 0.5, 0.2]))]
            shift, rate = BOARDS[board]
            workers.append(
                WorkerSpec(
                    name=f"{board}-{i}-{j}",
                    shift=shift * float(rng.uniform(0.85, 1.15)),
                    rate=rate * float(rng.uniform(0.85, 1.15)),
                    link_seconds=float(rng.uniform(0.0005, 0.003)),
                    model="bernoulli",
                    p_straggle=p_straggle,
                    slow_factor=slowdown,
                )
            )
        edge_specs.append(EdgeSpec(f"edge-{i}", tuple(workers), float(rng.uniform(0.002, 0.020))))
    return ClusterSpec(tuple(edge_specs))


@dataclass(frozen=True)
class SweepPoint:
    """One point of the sweep: the straggler parameters and each scheme's times."""

    p_straggle: float
    slowdown: float
    schemes: tuple[Scheme, ...]
    simulated: tuple[SimResult, ...]

    def expected(self, label: str) -> float:
        return self._scheme(label).expected_round_seconds

    def mean(self, label: str) -> float:
        return self.simulated[LABELS.index(label)].mean_round_seconds

    def speedup(self, label: str, *, predicted: bool = False) -> float:
        """Speed-up of ``label`` over uncoded: simulated means, or exact expectations."""
        if predicted:
            return self.expected("uncoded") / self.expected(label)
        return self.mean("uncoded") / self.mean(label)

    def _scheme(self, label: str) -> Scheme:
        return self.schemes[LABELS.index(label)]


def sweep_point(
    spec: ClusterSpec,
    rounds: int,
    rng: np.random.Generator,
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[tuple[Scheme, ...], tuple[SimResult, ...]]:
    """Plan every scheme of :data:`LABELS` on ``spec`` and simulate ``rounds`` rounds of each."""
    schemes = tuple(compare_schemes(spec))
    results = tuple(
        simulate(spec, scheme.plan, rounds, rng, progress=progress) for scheme in schemes
    )
    return schemes, results


def speedup_sweep(
    points: Sequence[tuple[float, float]],
    rounds: int,
    rng: np.random.Generator,
    *,
    family: Callable[[float, float], ClusterSpec] = cluster_family,
    progress: Callable[[int], None] | None = None,
) -> list[SweepPoint]:
    """Evaluate every ``(p_straggle, slowdown)`` point on ``family(p, slowdown)``.

    ``progress`` is called with 1 after every simulated round (``len(points) * 5 * rounds``).
    """
    if rounds < 2:
        raise ValueError(f"rounds must be >= 2, got {rounds}")
    out = []
    for p_straggle, slowdown in points:
        spec = family(p_straggle, slowdown)
        schemes, results = sweep_point(spec, rounds, rng, progress=progress)
        out.append(SweepPoint(p_straggle, slowdown, schemes, results))
    return out
