"""The planner: choose nodes, tolerances, K and unequal loads that minimise the expected round time.

What is optimised
-----------------
A plan (see :mod:`edgecode.planning.plans`) is a *structure* -- which edges and workers take
part, ``s_edge`` and ``s_worker_i`` for every selected edge -- plus integer counts ``K``,
``c_i``, ``l_w``. The objective is the exact expected round time
(:func:`edgecode.planning.timing.expected_round_time`).

Load rule (for a fixed structure and K)
---------------------------------------
Loads equalise the workers' finish quantiles, faster workers getting more (``_rule.py``):

1. the master waits for ``k_e = n - s_edge`` of ``n`` edges; the level
   ``p_top = I^{-1}_{1/2}(k_e, s_edge + 1)`` is the median of the ``k_e``-th order statistic of
   ``n`` uniforms. Edge i waits for ``k_i = m_i - s_worker_i`` workers; its workers' level
   ``p_i = I^{-1}_{p_top}(k_i, s_worker_i + 1)`` makes "``k_i`` of ``m_i`` arrived" happen with
   probability ``p_top`` when every worker is at its ``p_i``-quantile;
2. ``a_w`` = the ``p_i``-quantile of worker w's time per unit of data, ``(shift + X) M``;
3. continuous coverages ``g_i`` (``sum g_i = s_edge + 1``, ``g_i <= 1``) and shares are the
   water-filling solution that makes every selected worker's representative arrival
   ``g_i u_w a_w + link_w + link_i`` equal (capped at ``u_w <= 1``, ``g_i <= 1``);
4. integer counts: ``c_i`` near ``K g_i`` and ``l_w`` near ``c_i u_w`` with the exact sums,
   rounded so as to minimise the largest representative arrival (min-max).

Search (``optimize``)
---------------------
Small clusters (at most ``SMALL_CLUSTER`` = 16 workers with bimodal runtimes or coarse loads,
``SMALL_EASY_CLUSTER`` = 12 otherwise, see below): from every ``s_edge`` and every
uniform ``s_worker``, steepest descent over the complete neighbourhood (one ``s_worker`` to any
value, one worker or one edge in or out with any tolerances, any ``s_edge``) until no move
improves -- on every cluster tested this reaches the exhaustive optimum of the rule.

Larger clusters: a scan of ``s_edge`` (every value up to ``FULL_S_EDGE_SCAN`` = 8 edges, else a
geometric grid and the neighbours of its best) with uniform ``s_worker``, then coordinate
descent from the best one or two. Moves of edge i's inner configuration (another ``s_worker_i``,
one worker out or back in) are *screened* all at once: at the current master level Theta the
rule would give the edge the coverage ``cap_i(Theta - link_i)`` of its new configuration, which
changes ``P(T > t)`` by exactly ``-B_i(t) (G_i'(t) - G_i(t))`` (``B_i`` = probability that
exactly ``k_e - 1`` of the other edges have delivered, ``G_i`` = edge i's delivery CDF), while
the other edges absorb the coverage difference at their marginal cost ``dE/dg_j`` (measured by a
small coverage probe of each edge the same way). The best screened moves (all edges' together,
and the three best alone) are then evaluated with the rule's re-equalised loads; ``s_edge +- 1``
and the two least-covered edges out are tried directly. The number of evaluations is budgeted
(``max(80, min(400, 150000 / N))`` beyond those sizes), so large clusters stop early.

Each search step evaluates all its candidate structures at once: the rule in one batch, the
expected times on a fixed quadrature in one batch (:mod:`edgecode.planning._batch`), and a
candidate whose earliest possible round end ``t_lo`` is already no better than the structure it
would replace is not integrated at all (``E[T] >= t_lo``; the search path is unchanged).
With the complete neighbourhood the searches at the different quantile levels run in
lockstep (:func:`edgecode.planning._search.search_many`): each step's rule, brackets and
integrations for all levels are one batch, with the same results as one search after the other.

Pipeline
--------
1. K: fixed (``partitions``) or free up to ``K_max`` = min(:func:`default_max_partitions`,
   ``max_partitions``, ``rows // min_rows_per_partition``) (:func:`partition_limits`).
2. Structures: the search above at K (or ``K_max``) and the quantile ``level`` (0.5, the
   median); for bimodal runtimes (Bernoulli / Markov workers) or coarse loads (fewer than
   :data:`COARSE_PARTITIONS_PER_WORKER` partitions per worker) also at :data:`CANDIDATE_LEVELS`,
   whose rule loads then lead elsewhere (up to :data:`CANDIDATE_LEVEL_WORKERS` workers); for
   bimodal clusters up to 16 workers the searches at those levels descend from their
   :data:`EXTRA_LEVEL_SEEDS` best seeds only.
3. Rule loads of the best structure of each level's search and the :data:`TOP_STRUCTURES`
   (:data:`TOP_STRUCTURES_BIMODAL` for bimodal clusters up to 16 workers) best
   overall, at every level (bimodal or coarse clusters; otherwise the other levels for the
   best structure only) and, when K is free (up to :data:`K_CHOICE_WORKERS` workers), at K
   candidates (multiples of N and of 12, 24, 60, 120: every one for bimodal or coarse
   clusters, a spread of them otherwise), all in one batch (candidates with the same
   structure and fractions ``l / K`` integrated once).
4. Refinement: from the best rule loads of each of those structures (bimodal or coarse
   clusters, where refining reorders structures by several percent) or of the one or two best
   within 2%, projected gradient descent on the continuous loads with the exact gradient (40
   steps up to 64 workers, 12 up to 300, else 3; it stops early once steps gain < 1e-6;
   :mod:`edgecode.planning._refine`), then rounded at every K candidate at once.
5. The uniform plans (the paper's; up to :data:`CANDIDATE_UNIFORM_WORKERS` workers) ranked the
   same way; the two best are candidates.
6. Every candidate within :data:`EXACT_MARGIN` (0.1%) of the best on the search quadrature is
   timed exactly (all of them beyond :data:`~edgecode.planning._evaluate.SEARCH_BREAKS` kinks,
   where that quadrature merges panels); the plan with the smallest exact expected time wins.

Exhaustive search and baselines live in :mod:`.exhaustive` and :mod:`.baselines`; re-planning
in :mod:`.replan`.

Example
-------
>>> from edgecode.planning.baselines import uncoded_plan
>>> from edgecode.planning.plans import check_plan
>>> from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec
>>> fast = [WorkerSpec(f"f{j}", 0.05, 20.0) for j in range(3)]
>>> slow = [WorkerSpec(f"s{j}", 0.20, 4.0) for j in range(3)]
>>> spec = ClusterSpec(edges=(EdgeSpec("a", tuple(fast)), EdgeSpec("b", tuple(slow))))
>>> plan = optimize(spec)
>>> check_plan(plan, spec)
>>> plan.expected_round_seconds < uncoded_plan(spec).expected_round_seconds
True
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from edgecode.errors import Infeasible
from edgecode.planning import _batch, _refine, _rule, _search, hosts
from edgecode.planning._evaluate import (
    SEARCH_BREAKS,
    BoolArray,
    Evaluator,
    FloatArray,
    IntArray,
    Result,
    Structure,
    default_max_partitions,
    partitions_argument,
    to_plan,
)
from edgecode.planning._search import SMALL_CLUSTER, SMALL_EASY_CLUSTER
from edgecode.planning.baselines import uniform_counts, uniform_plan
from edgecode.planning.spec import ClusterSpec, Plan


def _k_candidates(spec: ClusterSpec, K_max: int, few: bool = False) -> list[int]:
    """K values tried when K is free: ``K_max``, the multiples of 12, 24, 60 and 120 when they
    are few, and the multiples ``j N`` of the worker count (equal loads): every one, or with
    ``few`` those with ``j`` in 1-6, 8, 12, 16, 24, ... and the four largest."""
    n_workers = spec.n_workers
    values = {K_max}
    for base in (12, 24, 60, 120):
        values.update(range(base, K_max + 1, base) if base * 8 >= K_max else ())
    top = K_max // n_workers
    steps = set(range(1, top + 1))
    if few:
        steps = {1, 2, 3, 4, 5, 6} | {2**k for k in range(3, 16)} | {3 * 2**k for k in range(2, 15)}
        steps |= set(range(max(1, top - 3), top + 1))
    values.update(j * n_workers for j in steps if j <= top)
    return sorted(v for v in values if v <= K_max)


#: Up to this many workers, :func:`optimize` repeats the rule search at other quantile levels.
CANDIDATE_LEVEL_WORKERS = 64
#: The extra quantile levels tried: bimodal runtimes (Bernoulli, Markov) want a high level.
CANDIDATE_LEVELS = (0.8, 0.95)
#: Up to this many workers, :func:`optimize` also evaluates the uniform plans (the paper's).
CANDIDATE_UNIFORM_WORKERS = 300
#: Uniform plans are evaluated this many s_worker values at a time.
UNIFORM_WAVE = 3
#: Up to this many workers, K is chosen among :func:`_k_candidates` when it is free.
K_CHOICE_WORKERS = 64
#: With fewer partitions than this per worker, the structure search runs at every level.
COARSE_PARTITIONS_PER_WORKER = 4
#: The rule loads of this many of the best structures are tried at every level and K ...
TOP_STRUCTURES = 3
#: ... and of this many for bimodal runtimes (Bernoulli / Markov workers) up to
#: ``SMALL_CLUSTER`` workers: the winners there are often the second or third structure of one
#: level's search, which the other levels' leaders crowd out of the first three.
TOP_STRUCTURES_BIMODAL = 6
#: For those clusters the searches at the extra levels (:data:`CANDIDATE_LEVELS`) descend from
#: this many of their best seeds only (the first level from every seed).
EXTRA_LEVEL_SEEDS = 1
#: Complete-neighbourhood descents of one level run side by side in the lockstep search
#: (:func:`edgecode.planning._search.search_many`).
SEARCH_PARALLEL = 1
#: Default least number of data rows per partition (with ``rows``).
MIN_ROWS_PER_PARTITION = 4
#: A candidate whose search-quadrature time exceeds the best one's by more than this (relative)
#: is not timed exactly: it cannot win (see :func:`_finalists`).
EXACT_MARGIN = 1e-3


@dataclass(frozen=True)
class _Final:
    """A candidate plan: its expected time on the search quadrature and how to build it
    (checked and exactly timed)."""

    value: float
    build: Callable[[], Plan]


@dataclass(frozen=True)
class _Limits:
    """K fixed by the caller (or None) and the largest K the planner may choose."""

    fixed: int | None
    largest: int


def partition_limits(
    spec: ClusterSpec,
    partitions: int | None = None,
    max_partitions: int | None = None,
    rows: int | None = None,
    min_rows_per_partition: int = MIN_ROWS_PER_PARTITION,
) -> tuple[int | None, int]:
    """``(fixed K or None, largest K)`` for :func:`optimize`, validated.

    K is fixed by ``partitions`` or ``spec.partitions``; otherwise the planner chooses it up to
    ``max_partitions`` (default :func:`default_max_partitions`). With ``rows`` (training rows),
    every partition must hold at least ``min_rows_per_partition`` of them, so
    ``K <= rows // min_rows_per_partition`` whether K is fixed or chosen. Raises ``ValueError``
    for malformed arguments and :class:`~edgecode.errors.Infeasible` naming the violated
    condition when no K fits.
    """
    fixed = partitions_argument(spec, partitions)
    if max_partitions is not None and (int(max_partitions) != max_partitions or max_partitions < 1):
        raise ValueError(f"max_partitions must be an integer >= 1, got {max_partitions!r}")
    largest = (
        int(max_partitions)
        if max_partitions is not None
        else default_max_partitions(spec.n_workers)
    )
    if fixed is not None and fixed > largest and max_partitions is not None:
        raise Infeasible(f"partitions K = {fixed} exceed max_partitions = {largest}")
    if rows is not None or min_rows_per_partition != MIN_ROWS_PER_PARTITION:
        if int(min_rows_per_partition) != min_rows_per_partition or min_rows_per_partition < 1:
            raise ValueError(
                f"min_rows_per_partition must be an integer >= 1, got {min_rows_per_partition!r}"
            )
    if rows is not None:
        if int(rows) != rows or rows < 0:
            raise ValueError(f"rows must be an integer >= 0, got {rows!r}")
        allowed = int(rows) // int(min_rows_per_partition)
        if allowed < 1:
            raise Infeasible(
                f"rows = {rows} cannot fill one partition of min_rows_per_partition = "
                f"{min_rows_per_partition} rows (need K <= rows // min_rows_per_partition)"
            )
        if fixed is not None and fixed > allowed:
            raise Infeasible(
                f"partitions K = {fixed} exceed the data: {rows} rows allow at most "
                f"K = rows // min_rows_per_partition = {allowed} partitions of at least "
                f"{min_rows_per_partition} rows"
            )
        largest = min(largest, allowed)
    return fixed, largest


def optimize(
    spec: ClusterSpec,
    partitions: int | None = None,
    *,
    max_partitions: int | None = None,
    rows: int | None = None,
    min_rows_per_partition: int = MIN_ROWS_PER_PARTITION,
    refine: bool = True,
    level: float = 0.5,
) -> Plan:
    """The hierarchical plan ("hgc") with the smallest expected round time the planner finds.

    ``partitions`` (or ``spec.partitions``) fixes K; otherwise K is chosen up to
    ``max_partitions`` (default :func:`default_max_partitions`) and, with ``rows`` (the data's
    rows), up to ``rows // min_rows_per_partition`` (see :func:`partition_limits`; raises
    :class:`~edgecode.errors.Infeasible` naming the condition when no plan fits).
    ``refine=False`` skips the load refinement (the rule's loads only, what
    :func:`~edgecode.planning.exhaustive.exhaustive_optimum` compares with); ``level`` is the
    rule's quantile level of the master (0.5: the median). Clusters of up to
    :data:`CANDIDATE_UNIFORM_WORKERS` also evaluate the uniform plans (the paper's parameters;
    for each s_edge the s_worker scan stops once the expected time has risen twice in a row).
    The plan with the smallest exact expected time wins, so the result is never slower than
    those candidates. ``plan.extra``: ``candidate`` (which won), ``evaluations``, ``seconds``,
    ``rule_seconds`` (the best rule loads' time on the search quadrature, within about 1e-7 of
    the exact one). Candidates more than :data:`EXACT_MARGIN` slower than the best on the
    search quadrature are not timed exactly (they cannot win).
    """
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    began = time.perf_counter()
    fixed, largest = partition_limits(
        spec, partitions, max_partitions, rows, min_rows_per_partition
    )
    limits = _Limits(fixed, largest)
    cluster = _rule.cluster_arrays(spec)
    candidates = _rule_plans(cluster, limits, refine, level)
    if spec.n_workers <= CANDIDATE_UNIFORM_WORKERS:
        candidates.extend(_uniform_candidates(cluster, limits))
    timed = [final.build() for final in _finalists(cluster, candidates)]
    plan = replace(min(timed, key=lambda c: c.expected_round_seconds or math.inf), scheme="hgc")
    plan.extra["seconds"] = time.perf_counter() - began
    return plan


def _finalists(cluster: _rule.Cluster, candidates: list[_Final]) -> list[_Final]:
    """The candidates that can have the smallest exact expected time.

    When no structure has more kinks (workers x mixture components) than the search
    quadrature's :data:`~edgecode.planning._evaluate.SEARCH_BREAKS`, that quadrature puts one
    8-point Gauss-Legendre panel between consecutive kinks (exact up to that rule's error on
    smooth pieces; measured within 1e-7 of the exact time on the quality script's clusters), so
    a candidate more than :data:`EXACT_MARGIN` above the best cannot win and is dropped. With
    more kinks (merged panels) every candidate is timed exactly."""
    components = 2 if cluster.mixed else 1
    if int(cluster.mask.sum()) * components > SEARCH_BREAKS:
        return candidates
    best = min(final.value for final in candidates)
    return [final for final in candidates if final.value <= best * (1.0 + EXACT_MARGIN)]


def _uniform_candidates(cluster: _rule.Cluster, limits: _Limits) -> list[_Final]:
    """The best uniform plans within the limits (at the fixed K, else at their smallest K), by
    the search's quadrature; the two best as candidates.

    For each s_edge the s_worker values are scanned in waves of :data:`UNIFORM_WAVE` (all
    s_edge at once) until the time has risen twice in a row."""
    spec = cluster.spec
    sizes = [len(e.workers) for e in spec.edges]
    counts: dict[tuple[int, int], tuple[int, list[int], int]] = {}
    values: dict[tuple[int, int], float] = {}
    open_s_edge = set(range(len(sizes)))
    for first in range(0, min(sizes), UNIFORM_WAVE):
        last = min(first + UNIFORM_WAVE, min(sizes))
        wave = []
        for s_edge in sorted(open_s_edge):
            for s_worker in range(first, last):
                try:
                    K, c, D = uniform_counts(spec, s_edge, s_worker, limits.fixed)
                except (Infeasible, ValueError):
                    continue
                if K <= limits.largest:
                    counts[(s_edge, s_worker)] = (K, c, D)
                    wave.append((s_edge, s_worker))
        if wave:
            values.update(zip(wave, _uniform_values(cluster, wave, counts), strict=True))
        for s_edge in list(open_s_edge):
            if _risen_twice([values.get((s_edge, s), math.inf) for s in range(last)]):
                open_s_edge.discard(s_edge)
        if not open_s_edge:
            break

    def build(s_edge: int, s_worker: int) -> Plan:
        plan = uniform_plan(spec, s_edge, s_worker, counts[(s_edge, s_worker)][0])
        plan.extra["candidate"] = f"uniform s_edge={s_edge} s_worker={s_worker}"
        return plan

    return [
        _Final(values[key], functools.partial(build, *key))
        for key in sorted(values, key=lambda key: values[key])[:2]
    ]


def _risen_twice(times: list[float]) -> bool:
    """Whether a scan (infeasible entries, inf, skipped) has risen twice in a row."""
    best, rises = math.inf, 0
    for seconds in times:
        if math.isinf(seconds):
            continue
        rises = rises + 1 if seconds > best else 0
        best = min(best, seconds)
        if rises >= 2:
            return True
    return False


def _uniform_values(
    cluster: _rule.Cluster,
    keys: list[tuple[int, int]],
    counts: dict[tuple[int, int], tuple[int, list[int], int]],
) -> FloatArray:
    """Expected times (search quadrature) of uniform plans given by (s_edge, s_worker)."""
    B = len(keys)
    wmask = np.broadcast_to(cluster.mask, (B, *cluster.mask.shape)).copy()
    s_w = np.array([[s] * cluster.n for _, s in keys], dtype=np.int64)
    s_e = np.array([e for e, _ in keys], dtype=np.int64)
    loads = np.stack([np.where(cluster.mask, counts[k][2], 0) for k in keys]).astype(np.int64)
    Ks = np.array([counts[k][0] for k in keys], dtype=np.int64)
    values = _batch.expected_times(cluster, wmask, s_w, s_e, loads, Ks, SEARCH_BREAKS)
    return np.maximum(values, hosts.floors(cluster.hosts, loads, Ks))


@dataclass(frozen=True)
class _Candidate:
    """Integer loads of a structure out of ``K`` (``level``: the rule's level, or None when
    refined) and their expected time on the search's quadrature."""

    result: Result
    K: int
    level: float | None


def _search_structures(
    cluster: _rule.Cluster, K: int, levels: list[float], small: int, extra_seeds: int | None
) -> tuple[list[Result], int]:
    """The structures to try further: the best of the rule search at each level, then the
    others it kept, best first (one entry per structure); and the number of evaluations.
    Clusters of up to ``small`` workers get the complete neighbourhood (the levels after the
    first from their ``extra_seeds`` best seeds; None: from all)."""
    leaders: list[Result] = []
    found: dict[bytes, Result] = {}
    size = int(cluster.mask.sum())
    # one quantiles memo for every level (the rule's quantiles depend on the cluster only)
    quantiles: dict[float, FloatArray] = {}
    evs = [Evaluator(cluster, K, at, quantiles=quantiles) for at in levels]
    if size <= small:
        # the levels' complete-neighbourhood searches in lockstep: one batch per step
        seeds = [None] + [extra_seeds] * (len(evs) - 1)
        searched = _search.search_many(evs, parallel=SEARCH_PARALLEL, seeds=seeds)
    else:
        for ev in evs:
            ev.budget = max(80, min(400, 150_000 // size))
        searched = [_search.search(ev, small=small) for ev in evs]
    for results in searched:
        leaders.extend(results[:1])
        for result in results:
            key = result.structure.key()
            if key not in found or result.value < found[key].value:
                found[key] = result
    evaluations = sum(ev.evaluations for ev in evs)
    ranked = sorted(found.values(), key=lambda r: r.value)
    order: dict[bytes, Result] = {}
    for result in sorted(leaders, key=lambda r: r.value) + ranked:
        order.setdefault(result.structure.key(), found[result.structure.key()])
    return list(order.values()), evaluations


def _evaluate_loads(
    cluster: _rule.Cluster,
    structures: list[Structure],
    Ks: list[int],
    levels: list[float | None],
    counts: list[tuple[IntArray, IntArray] | None] | None = None,
) -> list[_Candidate]:
    """Candidates for every (structure, K, level) triple given in parallel lists: the rule's
    counts at that K and level, or the given ``counts``; evaluated at once, best first."""
    wmask = np.stack([st.wmask for st in structures])
    s_w = np.stack([st.s_w for st in structures])
    s_e = np.array([st.s_edge for st in structures], dtype=np.int64)
    K_all = np.array(Ks, dtype=np.int64)
    if counts is None:
        rule_levels = np.array(levels, dtype=np.float64)
        c, l, feasible, theta = _rule.apply(cluster, wmask, s_w, s_e, K_all, rule_levels)
    else:
        feasible = np.array([x is not None for x in counts])
        n, m = wmask.shape[1:]
        c = np.stack([x[0] if x is not None else np.zeros(n, np.int64) for x in counts])
        l = np.stack([x[1] if x is not None else np.zeros((n, m), np.int64) for x in counts])
        theta = np.full(len(counts), np.nan)
    keep = np.nonzero(feasible)[0]
    if keep.size == 0:
        return []
    # the time depends on the structure and the fractions l / K only: equal ones (another K
    # or level giving proportional counts) are integrated once
    first, copies = _distinct(wmask[keep], s_w[keep], s_e[keep], l[keep], K_all[keep])
    unique = keep[first]
    values = _batch.expected_times(
        cluster, wmask[unique], s_w[unique], s_e[unique], l[unique], K_all[unique], SEARCH_BREAKS
    )
    values = np.maximum(values, hosts.floors(cluster.hosts, l[unique], K_all[unique]))[copies]
    found = [
        _Candidate(
            Result(float(v), structures[b], c[b], l[b], float(theta[b])), int(K_all[b]), levels[b]
        )
        for v, b in zip(values, keep, strict=True)
    ]
    return sorted(found, key=lambda x: x.result.value)


def _distinct(
    wmask: BoolArray, s_w: IntArray, s_e: IntArray, loads: IntArray, K: IntArray
) -> tuple[IntArray, IntArray]:
    """``(first, copies)``: ``first`` indexes one of each distinct (structure, fractions
    ``loads / K``) among B candidates, and candidate b is the same as ``first[copies[b]]``
    (fractions compared exactly, as the lowest terms of ``loads`` and ``K``)."""
    B = wmask.shape[0]
    flat = loads.reshape(B, -1)
    divisor = np.gcd.reduce(np.concatenate([flat, K[:, None]], axis=1), axis=1)[:, None]
    rows = np.concatenate(
        [wmask.reshape(B, -1), s_w, s_e[:, None], flat // divisor, K[:, None] // divisor],
        axis=1,
        dtype=np.int64,
    )
    width = rows.shape[1] * rows.itemsize
    data = rows.tobytes()
    seen: dict[bytes, int] = {}
    first: list[int] = []
    copies = np.empty(B, dtype=np.int64)
    for b in range(B):
        group = seen.setdefault(data[b * width : (b + 1) * width], len(first))
        if group == len(first):
            first.append(b)
        copies[b] = group
    return np.array(first, dtype=np.int64), copies


def _rule_plans(
    cluster: _rule.Cluster, limits: _Limits, refine: bool, level: float
) -> list[_Final]:
    """The best rule loads and (with ``refine``) refined loads as candidate plans."""
    began = time.perf_counter()
    N = cluster.spec.n_workers
    K0 = limits.fixed if limits.fixed is not None else limits.largest
    others = [x for x in CANDIDATE_LEVELS if x != level] if N <= CANDIDATE_LEVEL_WORKERS else []
    # The structure search itself runs at every level where the rule's loads are poor guides:
    # bimodal runtimes, or few partitions per worker (coarse integer loads).
    hard = cluster.mixed or K0 < COARSE_PARTITIONS_PER_WORKER * N
    # bimodal small clusters: fewer descents at the extra levels, more structures into the
    # grid and refinement (never a worse plan on 192 clusters, 18 faster: docs/notes/planner.md)
    bimodal = cluster.mixed and N <= SMALL_CLUSTER
    found, evaluations = _search_structures(
        cluster,
        K0,
        [level, *others] if hard else [level],
        SMALL_CLUSTER if hard else SMALL_EASY_CLUSTER,
        EXTRA_LEVEL_SEEDS if bimodal else None,
    )
    if not found:
        raise Infeasible(
            f"no structure is feasible with K = {K0} partitions (every selected worker "
            "needs at least one); raise partitions (or the data's rows)"
        )
    tops = TOP_STRUCTURES_BIMODAL if bimodal else TOP_STRUCTURES
    top = [r.structure for r in found[: max(tops, 1 + len(others) if hard else 0)]]
    free = limits.fixed is None and N <= K_CHOICE_WORKERS
    Ks = _k_candidates(cluster.spec, limits.largest) if free else [K0]
    # Where the rule is a good guide, a spread of K is enough for its loads (all K are tried
    # for the refined ones); bimodal runtimes and coarse loads need every K.
    few = _k_candidates(cluster.spec, limits.largest, few=not hard) if free else [K0]
    # Where the rule is a good guide, the other levels' loads are tried for the best structure.
    grid = [
        (st, K, at)
        for rank, st in enumerate(top)
        for at in ([level, *others] if hard or rank == 0 else [level])
        for K in few
    ]
    rule = _evaluate_loads(
        cluster, [g[0] for g in grid], [g[1] for g in grid], [g[2] for g in grid]
    )
    evaluations += len(grid)
    chosen = [rule[0]] if rule else [_Candidate(found[0], K0, level)]
    if refine:
        refined, counted = _refined(cluster, rule or chosen, Ks, N, hard)
        chosen += refined
        evaluations += counted
    extra = {
        "evaluations": evaluations,
        "method": "rule search + refinement" if refine else "rule search",
    }

    def build(x: _Candidate) -> Plan:
        plan = to_plan(cluster, x.K, x.result, dict(extra))
        plan.extra["candidate"] = (
            f"rule search (level {x.level})" if x.level is not None else "refined loads"
        )
        # the best rule loads' time (search quadrature: they may not have been timed exactly)
        plan.extra["rule_seconds"] = chosen[0].result.value
        plan.extra["seconds"] = time.perf_counter() - began
        return plan

    return [_Final(x.result.value, functools.partial(build, x)) for x in chosen]


def _refined(
    cluster: _rule.Cluster, rule: list[_Candidate], Ks: list[int], N: int, every: bool
) -> tuple[list[_Candidate], int]:
    """Refined loads from the best rule candidate of every structure tried (``every``: bimodal
    runtimes or coarse loads, where refining reorders structures by several percent), else of
    the (at most two) best structures within 2% of the best: continuous descent, then rounded
    at every K and the best kept when better than its start; and the number of rounded loads
    evaluated."""
    iterations = 40 if N <= 64 else 12 if N <= 300 else 3
    starts: dict[bytes, _Candidate] = {}
    for x in rule:
        if not every and (len(starts) == 2 or x.result.value > rule[0].result.value * 1.02):
            break
        starts.setdefault(x.result.structure.key(), x)
    out = []
    for start in starts.values():
        loads = _refine.descend(cluster, start.result, start.K, iterations)
        counts = _refine.rounded_many(loads, Ks)
        best = _evaluate_loads(cluster, [loads.structure] * len(Ks), Ks, [None] * len(Ks), counts)
        if best and best[0].result.value < start.result.value:
            out.append(best[0])
    return out, len(starts) * len(Ks)


__all__ = [
    "CANDIDATE_LEVELS",
    "CANDIDATE_LEVEL_WORKERS",
    "CANDIDATE_UNIFORM_WORKERS",
    "MIN_ROWS_PER_PARTITION",
    "default_max_partitions",
    "optimize",
    "partition_limits",
]
