"""Re-planning that pays for itself: new measurements in, and data moved only when it is worth it.

Two plans are the same *structure* when they would place the data identically: same scheme, K,
s_edge, and for every taking-part edge (by name) the same s_worker, coverage and per-worker
loads (:func:`same_structure`). Predicted times are deliberately not compared: a plan made under
older models carries a stale prediction, and re-placing identical data gains nothing.

A different structure replaces the current one only when the predicted saving over the rounds
still to run pays for moving the data, measured by what the last placement cost
(:func:`worth_replacing`)::

    (current_seconds - candidate_seconds) * remaining_rounds > placement_seconds

and, when asked, the candidate is at least ``min_gain`` (relative) faster. :func:`decide` returns
the decision with its reason; :func:`replan` applies it after re-optimising.

Example
-------
>>> worth_replacing(0.30, 0.25, remaining_rounds=100, placement_seconds=2.0)  # 5 s saved > 2 s
True
>>> worth_replacing(0.30, 0.25, remaining_rounds=10, placement_seconds=2.0)  # 0.5 s < 2 s
False
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from edgecode.errors import Infeasible
from edgecode.planning.baselines import timed
from edgecode.planning.optimize import MIN_ROWS_PER_PARTITION, optimize
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


def _layout(plan: Plan) -> tuple[object, ...]:
    edges = {
        e.name: (
            e.s_worker,
            e.partitions,
            frozenset((w.name, w.partitions) for w in e.workers if w.selected),
        )
        for e in plan.edges
        if e.selected
    }
    return (plan.scheme, plan.partitions, plan.s_edge, frozenset(edges.items()))


def same_structure(a: Plan, b: Plan) -> bool:
    """Whether ``a`` and ``b`` place the data identically: scheme, K, s_edge and, for every
    taking-part edge by name, s_worker, coverage and each taking-part worker's load (edges and
    workers that take no part, their order, predicted times and ``extra`` are ignored)."""
    return _layout(a) == _layout(b)


def worth_replacing(
    current_seconds: float,
    candidate_seconds: float,
    remaining_rounds: int,
    placement_seconds: float,
) -> bool:
    """Whether ``(current_seconds - candidate_seconds) * remaining_rounds > placement_seconds``:
    the predicted saving over the remaining rounds exceeds the measured cost of the last
    placement (all in seconds; ``current`` and ``candidate`` are expected round times)."""
    for name, value in (
        ("current_seconds", current_seconds),
        ("candidate_seconds", candidate_seconds),
        ("placement_seconds", placement_seconds),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    if int(remaining_rounds) != remaining_rounds or remaining_rounds < 0:
        raise ValueError(f"remaining_rounds must be an integer >= 0, got {remaining_rounds!r}")
    return (current_seconds - candidate_seconds) * remaining_rounds > placement_seconds


@dataclass(frozen=True)
class Decision:
    """Whether to replace the current plan by the candidate, and why.

    ``saving_seconds`` is the predicted saving over the remaining rounds (NaN when the rounds
    left are unknown or the structures are the same)."""

    replace: bool
    reason: str
    saving_seconds: float = math.nan


def decide(
    current: Plan,
    candidate: Plan,
    remaining_rounds: int | None = None,
    placement_seconds: float = 0.0,
    min_gain: float = 0.0,
) -> Decision:
    """Keep ``current`` when it has the same structure as ``candidate`` (whatever their predicted
    times), when the candidate is not at least ``min_gain`` (relative) faster, or, with
    ``remaining_rounds``, when :func:`worth_replacing` says the saving does not pay the
    placement; replace it otherwise. Both plans' ``expected_round_seconds`` must be set (for the
    same cluster models) unless their structures agree."""
    if not (0.0 <= min_gain < 1.0):
        raise ValueError(f"min_gain must be in [0, 1), got {min_gain!r}")
    if same_structure(current, candidate):
        return Decision(False, "same structure: nothing to move")
    now, then = current.expected_round_seconds, candidate.expected_round_seconds
    if now is None or then is None:
        raise ValueError("both plans need expected_round_seconds to be compared")
    if then > now * (1.0 - min_gain):
        return Decision(
            False, f"candidate {then:.6g} s vs {now:.6g} s: gain below min_gain = {min_gain:g}"
        )
    if remaining_rounds is None:
        return Decision(True, f"candidate {then:.6g} s vs {now:.6g} s per round")
    saving = (now - then) * remaining_rounds
    if not worth_replacing(now, then, remaining_rounds, placement_seconds):
        return Decision(
            False,
            f"saving {saving:.6g} s over {remaining_rounds} rounds does not pay the placement "
            f"({placement_seconds:.6g} s)",
            saving,
        )
    return Decision(
        True,
        f"saving {saving:.6g} s over {remaining_rounds} rounds > placement "
        f"{placement_seconds:.6g} s",
        saving,
    )


def replan(
    spec: ClusterSpec,
    models: Mapping[str, tuple[float, float] | WorkerSpec] | None = None,
    dead: Iterable[str] = (),
    current: Plan | None = None,
    min_gain: float = 0.0,
    partitions: int | None = None,
    *,
    remaining_rounds: int | None = None,
    placement_seconds: float = 0.0,
    max_partitions: int | None = None,
    rows: int | None = None,
    min_rows_per_partition: int = MIN_ROWS_PER_PARTITION,
) -> tuple[ClusterSpec, Plan]:
    """Re-plan after new measurements: ``(updated spec, plan to use)``.

    ``models`` maps worker names to fitted ``(shift, rate)`` (e.g. from
    :func:`edgecode.stragglers.fit_shifted_exponential`) or to whole ``WorkerSpec``; workers in
    ``dead`` (and edges left without live workers) are unselected. The optimum is found with
    :func:`~edgecode.planning.optimize.optimize` (``partitions``, ``max_partitions``, ``rows``
    and ``min_rows_per_partition`` as there); it covers every worker of ``spec`` (dead ones
    unselected) and its expected time is for the updated models. With ``current`` (which uses
    no dead worker), :func:`decide` compares it, re-timed on the updated models, with the optimum
    (``remaining_rounds``, ``placement_seconds``, ``min_gain``) and the current plan is returned
    when it is kept. ``plan.extra["decision"]`` holds the :class:`Decision` (with ``current``).
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
    live_plan = optimize(
        live_spec,
        partitions,
        max_partitions=max_partitions,
        rows=rows,
        min_rows_per_partition=min_rows_per_partition,
    )
    plan = _on_spec(live_plan, new_spec)
    if current is None:
        return new_spec, plan
    if any(w.selected and w.name in dead_set for e in current.edges for w in e.workers):
        decision = Decision(True, "the current plan uses dead workers")
    else:
        kept = replace(timed(new_spec, current), extra=dict(current.extra))
        decision = decide(kept, plan, remaining_rounds, placement_seconds, min_gain)
        if not decision.replace:
            kept.extra["decision"] = decision
            return new_spec, kept
    plan.extra["decision"] = decision
    return new_spec, plan


def _on_spec(live_plan: Plan, spec: ClusterSpec) -> Plan:
    """``live_plan`` (over the live workers) listed over every worker of ``spec``."""
    loads = {w.name: w.partitions for e in live_plan.edges for w in e.workers}
    edge_by_name = {e.name: e for e in live_plan.edges}
    plan = build_plan(
        spec,
        "hgc",
        live_plan.partitions,
        live_plan.s_edge,
        [edge_by_name[e.name].s_worker if e.name in edge_by_name else 0 for e in spec.edges],
        [edge_by_name[e.name].partitions if e.name in edge_by_name else 0 for e in spec.edges],
        [[loads.get(w.name, 0) for w in e.workers] for e in spec.edges],
        live_plan.expected_round_seconds,
        dict(live_plan.extra),
    )
    check_plan(plan, spec)
    return plan


__all__ = [
    "Decision",
    "decide",
    "replan",
    "same_structure",
    "updated_spec",
    "worth_replacing",
]
