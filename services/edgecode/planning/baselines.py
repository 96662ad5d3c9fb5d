"""The baselines every plan is compared with: uncoded, flat cyclic, ignore-stragglers and the
paper's uniform hierarchical plan (every node, one ``s_worker``, equal loads), each returned with
its exact expected round time.

Example
-------
>>> from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec
>>> spec = ClusterSpec(edges=(EdgeSpec("e", (WorkerSpec("a", 0.0, 1.0), WorkerSpec("b", 0.0, 2.0))),))
>>> plan = uncoded_plan(spec)  # each holds half the data: E[max(Exp(2), Exp(4))]
>>> abs(plan.expected_round_seconds - (0.5 + 0.25 - 1 / 6)) < 1e-9
True
"""

from __future__ import annotations

import math
from dataclasses import replace

from edgecode.errors import Infeasible
from edgecode.planning.hosts import planned_seconds
from edgecode.planning.plans import build_plan, check_plan, one_layer_plan
from edgecode.planning.spec import ClusterSpec, Plan
from edgecode.planning.timing import expected_round_time


def timed(spec: ClusterSpec, plan: Plan) -> Plan:
    """``plan`` checked against ``spec`` and carrying its exact expected round time."""
    check_plan(plan, spec)
    seconds = planned_seconds(spec, plan, expected_round_time(spec, plan))
    return replace(plan, expected_round_seconds=seconds)


def uncoded_plan(spec: ClusterSpec) -> Plan:
    """Every worker holds 1 of K = N partitions; the master waits for all (with its time)."""
    rows = [[1] * len(e.workers) for e in spec.edges]
    return timed(spec, one_layer_plan(spec, "uncoded", spec.n_workers, 0, rows))


def flat_plan(spec: ClusterSpec, s: int) -> Plan:
    """Flat cyclic repetition over all N workers: each holds s + 1 of K = N partitions, the
    master waits for the first N - s (messages forwarded by the edges)."""
    N = spec.n_workers
    if int(s) != s or not (0 <= s < N):
        raise ValueError(f"s must be an integer in [0, {N}), got {s!r}")
    rows = [[int(s) + 1] * len(e.workers) for e in spec.edges]
    return timed(spec, one_layer_plan(spec, "flat", N, int(s), rows))


def ignore_plan(spec: ClusterSpec, s: int) -> Plan:
    """Ignore stragglers: each worker holds 1 of K = N partitions, the master uses the first
    N - s messages and rescales (biased); compare with ``flat_plan(spec, s)``."""
    N = spec.n_workers
    if int(s) != s or not (0 <= s < N):
        raise ValueError(f"s must be an integer in [0, {N}), got {s!r}")
    rows = [[1] * len(e.workers) for e in spec.edges]
    return timed(spec, one_layer_plan(spec, "ignore", N, int(s), rows))


def uniform_plan(
    spec: ClusterSpec, s_edge: int, s_worker: int, partitions: int | None = None
) -> Plan:
    """The paper's uniform hierarchical plan: every node, one s_worker, equal loads.

    Edge i covers ``c_i = K (s_edge + 1) m_i / sum(m)`` partitions and every worker holds
    ``D = K (s_edge + 1)(s_worker + 1) / sum(m)``, meeting the bound
    ``D / K = (s_e + 1)(s_w + 1) / sum(m)``. K is the smallest making these integers unless
    ``partitions`` is given. Raises :class:`~edgecode.errors.Infeasible` when
    ``m_i (s_edge + 1) > sum(m)`` for some edge or ``s_worker >= min(m_i)``, or when the given K
    does not make the counts integral.
    """
    K, c, D = uniform_counts(spec, s_edge, s_worker, partitions)
    sizes = [len(e.workers) for e in spec.edges]
    plan = build_plan(
        spec,
        "hgc",
        K,
        s_edge,
        [s_worker] * len(sizes),
        c,
        [[D] * m_i for m_i in sizes],
        extra={"variant": "uniform"},
    )
    return timed(spec, plan)


def uniform_counts(
    spec: ClusterSpec, s_edge: int, s_worker: int, partitions: int | None = None
) -> tuple[int, list[int], int]:
    """``(K, c_i per edge, D)`` of :func:`uniform_plan` (same checks and errors), untimed."""
    sizes = [len(e.workers) for e in spec.edges]
    total = sum(sizes)
    if int(s_edge) != s_edge or not (0 <= s_edge < len(sizes)):
        raise ValueError(f"s_edge must be an integer in [0, {len(sizes)}), got {s_edge!r}")
    if int(s_worker) != s_worker or not (0 <= s_worker < min(sizes)):
        raise Infeasible(
            f"s_worker must be an integer in [0, {min(sizes)}) (the smallest edge), "
            f"got {s_worker!r}"
        )
    if max(sizes) * (s_edge + 1) > total:
        raise Infeasible(
            f"an edge with {max(sizes)} of {total} workers would cover more than "
            f"all the data at s_edge = {s_edge}: need m_i (s_edge + 1) <= sum(m)"
        )
    K_min = 1
    for m_i in sizes:
        for numerator in ((s_edge + 1) * m_i, (s_edge + 1) * (s_worker + 1)):
            K_min = math.lcm(K_min, total // math.gcd(total, numerator))
    K = K_min if partitions is None else int(partitions)
    if K % K_min:
        raise Infeasible(f"uniform plan needs K to be a multiple of {K_min}, got {K}")
    c = [K * (s_edge + 1) * m_i // total for m_i in sizes]
    D = K * (s_edge + 1) * (s_worker + 1) // total
    return K, c, D


def best_uniform_plan(spec: ClusterSpec) -> Plan:
    """The uniform plan with the smallest expected time over all feasible (s_edge, s_worker)."""
    best: Plan | None = None
    sizes = [len(e.workers) for e in spec.edges]
    for s_edge in range(len(sizes)):
        for s_worker in range(min(sizes)):
            try:
                plan = uniform_plan(spec, s_edge, s_worker)
            except Infeasible:
                continue
            assert plan.expected_round_seconds is not None
            if best is None or plan.expected_round_seconds < (best.expected_round_seconds or 0):
                best = plan
    if best is None:
        raise Infeasible("no uniform plan is feasible on this cluster")
    return best


def best_flat_plan(spec: ClusterSpec) -> Plan:
    """The flat cyclic plan with the smallest expected time over all s."""
    plans = [flat_plan(spec, s) for s in range(spec.n_workers)]
    return min(plans, key=lambda p: p.expected_round_seconds or math.inf)


__all__ = [
    "best_flat_plan",
    "best_uniform_plan",
    "flat_plan",
    "ignore_plan",
    "timed",
    "uncoded_plan",
    "uniform_counts",
    "uniform_plan",
]
