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
Small clusters (at most ``SMALL_CLUSTER`` = 16 workers): from every ``s_edge`` and every
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
(``max(80, min(400, 150000 / N))`` beyond 16 workers), so large clusters stop early.

When K is free, the search runs at ``K_max`` (:func:`default_max_partitions`); for up to 64
workers K is then chosen among a few candidates (multiples of N and of 12, 24, 60, 120) by the
rule's expected time.

Refinement
----------
The best one or two structures' loads are then refined by projected gradient descent on the
continuous loads with the exact gradient (40 steps up to 64 workers, 12 up to 300, else 3;
:mod:`edgecode.planning._refine`), kept only when the exact expected time is lower.

Refinement, exhaustive search and baselines live in :mod:`._refine`, :mod:`.exhaustive` and
:mod:`.baselines`; re-planning in :mod:`.replan`.

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

import math
import time
from dataclasses import replace

from edgecode.errors import Infeasible
from edgecode.planning import _refine, _rule, _search
from edgecode.planning._evaluate import (
    Evaluator,
    default_max_partitions,
    partitions_argument,
    to_plan,
)
from edgecode.planning._search import SMALL_CLUSTER
from edgecode.planning.baselines import uniform_plan
from edgecode.planning.spec import ClusterSpec, Plan


def _k_candidates(spec: ClusterSpec, K_max: int) -> list[int]:
    n_workers = spec.n_workers
    values = {K_max}
    for base in (12, 24, 60, 120):
        values.update(range(base, K_max + 1, base) if base * 8 >= K_max else ())
    values.update(j * n_workers for j in range(1, K_max // n_workers + 1))
    return sorted(v for v in values if v <= K_max)


#: Up to this many workers, :func:`optimize` repeats the rule search at other quantile levels.
CANDIDATE_LEVEL_WORKERS = 64
#: The extra quantile levels tried: bimodal runtimes (Bernoulli, Markov) want a high level.
CANDIDATE_LEVELS = (0.8, 0.95)
#: Up to this many workers, :func:`optimize` also evaluates the uniform plans (the paper's).
CANDIDATE_UNIFORM_WORKERS = 300


def optimize(
    spec: ClusterSpec,
    partitions: int | None = None,
    *,
    max_partitions: int | None = None,
    refine: bool = True,
    level: float = 0.5,
) -> Plan:
    """The hierarchical plan ("hgc") with the smallest expected round time the planner finds.

    Besides the rule search at ``level``, small clusters (:data:`CANDIDATE_LEVEL_WORKERS`) repeat
    it at :data:`CANDIDATE_LEVELS`, and clusters of up to :data:`CANDIDATE_UNIFORM_WORKERS`
    evaluate the uniform plans (the paper's parameters; for each s_edge the s_worker scan stops
    once the expected time has risen twice in a row). The plan with the smallest exact expected
    time wins, so the result is never slower than those candidates.
    ``plan.extra["candidate"]`` says which won.
    """
    began = time.perf_counter()
    candidates = [
        _optimize_rule(spec, partitions, max_partitions=max_partitions, refine=refine, level=level)
    ]
    candidates[0].extra["candidate"] = f"rule search (level {level})"
    if spec.n_workers <= CANDIDATE_LEVEL_WORKERS:
        for other in CANDIDATE_LEVELS:
            if other != level:
                found = _optimize_rule(
                    spec, partitions, max_partitions=max_partitions, refine=refine, level=other
                )
                found.extra["candidate"] = f"rule search (level {other})"
                candidates.append(found)
    if spec.n_workers <= CANDIDATE_UNIFORM_WORKERS:
        candidates.extend(
            _uniform_candidates(spec, partitions if partitions is not None else spec.partitions)
        )
    plan = replace(
        min(candidates, key=lambda c: c.expected_round_seconds or math.inf), scheme="hgc"
    )
    plan.extra["seconds"] = time.perf_counter() - began
    return plan


def _uniform_candidates(spec: ClusterSpec, partitions: int | None) -> list[Plan]:
    sizes = [len(e.workers) for e in spec.edges]
    found: list[Plan] = []
    for s_edge in range(len(sizes)):
        best_here, rises = math.inf, 0
        for s_worker in range(min(sizes)):
            try:
                plan = uniform_plan(spec, s_edge, s_worker, partitions)
            except (Infeasible, ValueError):
                continue
            seconds = plan.expected_round_seconds or math.inf
            plan.extra["candidate"] = f"uniform s_edge={s_edge} s_worker={s_worker}"
            found.append(plan)
            rises = rises + 1 if seconds > best_here else 0
            best_here = min(best_here, seconds)
            if rises >= 2:
                break
    return found


def _optimize_rule(
    spec: ClusterSpec,
    partitions: int | None = None,
    *,
    max_partitions: int | None = None,
    refine: bool = True,
    level: float = 0.5,
) -> Plan:
    """The rule search (with K choice and load refinement) at one quantile level.

    ``partitions`` (or ``spec.partitions``) fixes K; otherwise K is chosen up to
    ``max_partitions`` (default :func:`default_max_partitions`). ``refine=False`` returns the
    best plan of the load rule (what :func:`exhaustive_optimum` compares with). ``level`` is the
    rule's quantile level of the master (0.5: median). ``plan.extra`` records the search:
    ``evaluations``, ``seconds``, ``rule_seconds`` (expected time before refinement).
    See the module docstring for the method.
    """
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    began = time.perf_counter()
    cluster = _rule.cluster_arrays(spec)
    fixed = partitions_argument(spec, partitions)
    K_max = max_partitions if max_partitions is not None else default_max_partitions(spec.n_workers)
    if K_max < 1:
        raise ValueError(f"max_partitions must be >= 1, got {max_partitions!r}")
    ev = Evaluator(cluster, fixed if fixed is not None else K_max, level)
    size = int(cluster.mask.sum())
    if size > SMALL_CLUSTER:
        ev.budget = max(80, min(400, 150_000 // size))
    results = _search.search(ev)
    if not results:
        raise Infeasible(
            f"no structure is feasible with K = {ev.K} partitions (every selected "
            "worker needs at least one); raise partitions"
        )
    best = results[0]
    evaluations = ev.evaluations
    if fixed is None and spec.n_workers <= 64:
        # choose K: same structure, rule loads, among a few candidates
        for K in _k_candidates(spec, K_max):
            if K == ev.K:
                continue
            trial = Evaluator(cluster, K, level)
            found = trial.best([best.structure])
            evaluations += trial.evaluations
            if found is not None and found.value < best.value * (1 - 1e-9):
                best, ev = found, trial
    rule_best = best
    if refine:
        size = int(cluster.mask.sum())
        iterations = 40 if size <= 64 else 12 if size <= 300 else 3
        refined = [_refine.refine(ev, best, iterations)]
        if fixed is not None or len(results) > 1:
            for other in results[1:2]:
                if other.value < best.value * 1.02:
                    refined.append(
                        _refine.refine(Evaluator(cluster, ev.K, level), other, iterations)
                    )
        best = min(refined, key=lambda r: r.value)
    extra = {
        "evaluations": evaluations + ev.evaluations,
        "method": "rule search + refinement" if refine else "rule search",
    }
    # Final choice on exact values (the search compared fast evaluations).
    rule_plan = to_plan(ev, rule_best, dict(extra))
    plan = rule_plan if best is rule_best else to_plan(ev, best, dict(extra))
    assert plan.expected_round_seconds is not None
    assert rule_plan.expected_round_seconds is not None
    if rule_plan.expected_round_seconds <= plan.expected_round_seconds:
        plan = rule_plan
    plan.extra["rule_seconds"] = rule_plan.expected_round_seconds
    plan.extra["seconds"] = time.perf_counter() - began
    return plan


__all__ = ["default_max_partitions", "optimize"]
