"""Re-planning after new measurements: updated worker models, dead workers, and when to move data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from edgecode.errors import Infeasible
from edgecode.planning.baselines import timed
from edgecode.planning.optimize import optimize
from edgecode.planning.plans import build_plan, check_plan
from edgecode.planning.spec import ClusterSpec, EdgeSpec, Plan, WorkerSpec


def updated_spec(
    spec: ClusterSpec, models: Mapping[str, tuple[float, float] | WorkerSpec]
) -> ClusterSpec:
    """``spec`` with the named workers' ``(shift, rate)`` (or whole WorkerSpec) replaced."""
    known = {w.name for e in spec.edges for w in e.workers}
    unknown = set(models) - known
    if unknown:
        raise ValueError(f"models: unknown workers {sorted(unknown)}")
    edges = []
    for edge in spec.edges:
        workers = []
        for w in edge.workers:
            new = models.get(w.name)
            if isinstance(new, WorkerSpec):
                workers.append(replace(new, name=w.name))
            elif new is not None:
                shift, rate = new
                workers.append(replace(w, shift=float(shift), rate=float(rate)))
            else:
                workers.append(w)
        edges.append(replace(edge, workers=tuple(workers)))
    return replace(spec, edges=tuple(edges))


def replan(
    spec: ClusterSpec,
    models: Mapping[str, tuple[float, float] | WorkerSpec] | None = None,
    dead: Iterable[str] = (),
    current: Plan | None = None,
    min_gain: float = 0.0,
    partitions: int | None = None,
) -> tuple[ClusterSpec, Plan]:
    """Re-plan after new measurements: ``(updated spec, new plan)``.

    ``models`` maps worker names to fitted ``(shift, rate)`` (e.g. from
    :func:`edgecode.stragglers.fit_shifted_exponential`) or to whole ``WorkerSpec``; workers in
    ``dead`` (and edges left without live workers) are unselected. The plan covers every worker
    of ``spec`` (dead ones unselected) and its expected time is for the updated models. With
    ``current``, the current plan is kept (re-timed) when it uses no dead worker and the new
    optimum is not at least ``min_gain`` (relative) faster -- moving data has a cost.
    """
    new_spec = updated_spec(spec, models or {})
    dead_set = set(dead)
    known = {w.name for e in spec.edges for w in e.workers}
    if dead_set - known:
        raise ValueError(f"dead: unknown workers {sorted(dead_set - known)}")
    alive_edges = []
    for edge in new_spec.edges:
        alive = tuple(w for w in edge.workers if w.name not in dead_set)
        if alive:
            alive_edges.append(EdgeSpec(edge.name, alive, edge.link_seconds))
    if not alive_edges:
        raise Infeasible("every worker is dead")
    live_spec = ClusterSpec(tuple(alive_edges), partitions=new_spec.partitions)
    live_plan = optimize(live_spec, partitions)
    loads = {w.name: w.partitions for e in live_plan.edges for w in e.workers}
    edge_by_name = {e.name: e for e in live_plan.edges}
    worker_rows = [[loads.get(w.name, 0) for w in e.workers] for e in new_spec.edges]
    s_workers = [
        edge_by_name[e.name].s_worker if e.name in edge_by_name else 0 for e in new_spec.edges
    ]
    coverage = [
        edge_by_name[e.name].partitions if e.name in edge_by_name else 0 for e in new_spec.edges
    ]
    plan = build_plan(
        new_spec,
        "hgc",
        live_plan.partitions,
        live_plan.s_edge,
        s_workers,
        coverage,
        worker_rows,
        live_plan.expected_round_seconds,
        dict(live_plan.extra),
    )
    check_plan(plan, new_spec)
    if current is not None:
        uses_dead = any(w.selected and w.name in dead_set for e in current.edges for w in e.workers)
        if not uses_dead:
            kept = timed(new_spec, current)
            assert kept.expected_round_seconds is not None and plan.expected_round_seconds
            if plan.expected_round_seconds > kept.expected_round_seconds * (1 - min_gain):
                return new_spec, kept
    return new_spec, plan


__all__ = ["replan", "updated_spec"]
