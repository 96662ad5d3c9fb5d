"""What makes a :class:`~edgecode.planning.spec.Plan` valid, and building plans from counts.

Schemes and the round they stand for (``K = plan.partitions``, ``l_w`` = a worker's partitions,
``c_i`` = an edge's partitions):

``"hgc"`` (hierarchical gradient code, two layers)
    Edge i waits for the first ``m_i - s_worker_i`` of its ``m_i`` selected workers and decodes;
    the master waits for the first ``n - s_edge`` of the ``n`` selected edges. Exact (every
    partition held by exactly the right nodes) when

    - the selected edges' ``c_i`` add up to ``K (s_edge + 1)``, each ``1 <= c_i <= K``;
    - in a selected edge the selected workers' ``l_w`` add up to ``c_i (s_worker_i + 1)``,
      each ``1 <= l_w <= c_i``, and ``s_worker_i < m_i``;
    - ``s_edge < n``.

``"flat"`` (one-layer gradient code, e.g. cyclic repetition)
    Edges only forward; the master waits for the first ``N - s_edge`` of the ``N`` selected
    workers. Exact when the ``l_w`` add up to ``K (s_edge + 1)``, each ``<= K``, ``s_edge < N``.

``"uncoded"``
    Every partition once (``l_w`` add up to ``K``), ``s_edge = 0``: the master waits for all.

``"ignore"`` (ignore stragglers)
    Every partition once (``l_w`` add up to ``K``); the master waits for the first
    ``N - s_edge`` workers and rescales what arrived: fast but biased.

For the one-layer schemes every ``s_worker`` is 0 and an edge's ``partitions`` is
``min(K, sum of its workers' l_w)`` (informational: it is > 0 exactly when the edge forwards).
In every scheme an unselected worker has ``partitions == 0`` and a selected one ``>= 1``. The
plan's edges and workers are the spec's, in the spec's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgecode.planning.spec import ClusterSpec, EdgePlan, EdgeSpec, Plan, WorkerPlan

SCHEMES = ("hgc", "flat", "uncoded", "ignore")


def _fail(message: str) -> None:
    raise ValueError(f"plan: {message}")


def check_plan(plan: Plan, spec: ClusterSpec) -> None:
    """Raise ``ValueError`` naming the first violated constraint of ``plan`` on ``spec``.

    The constraints are listed in the module docstring; nothing is returned when all hold.
    """
    if plan.scheme not in SCHEMES:
        _fail(f"scheme must be one of {SCHEMES}, got {plan.scheme!r}")
    K = plan.partitions
    if not isinstance(K, int) or K < 1:
        _fail(f"partitions (K) must be an integer >= 1, got {K!r}")
    if not isinstance(plan.s_edge, int) or plan.s_edge < 0:
        _fail(f"s_edge must be an integer >= 0, got {plan.s_edge!r}")
    if len(plan.edges) != len(spec.edges):
        _fail(f"has {len(plan.edges)} edges, the spec {len(spec.edges)}")
    selected_edges = 0
    selected_workers = 0
    edge_total = 0
    worker_total = 0
    for edge_plan, edge_spec in zip(plan.edges, spec.edges, strict=True):
        loads = _check_edge(plan, edge_plan, edge_spec)
        selected_workers += len(loads)
        worker_total += sum(loads)
        if loads:
            selected_edges += 1
            edge_total += edge_plan.partitions
    s_e = plan.s_edge
    if plan.scheme == "hgc":
        if selected_edges == 0:
            _fail("no edge takes part")
        if s_e >= selected_edges:
            _fail(f"s_edge = {s_e} must be < the {selected_edges} selected edges")
        if edge_total != K * (s_e + 1):
            _fail(
                f"selected edges' partitions sum to {edge_total}, expected K (s_edge + 1) = "
                f"{K} * {s_e + 1} = {K * (s_e + 1)}"
            )
        return
    if selected_workers == 0:
        _fail("no worker takes part")
    if s_e >= selected_workers:
        _fail(f"s_edge = {s_e} must be < the {selected_workers} selected workers")
    copies = s_e + 1 if plan.scheme == "flat" else 1
    if plan.scheme == "uncoded" and s_e != 0:
        _fail(f"s_edge must be 0 in an uncoded plan, got {s_e}")
    if worker_total != K * copies:
        _fail(
            f"selected workers' partitions sum to {worker_total}, expected "
            f"K * {copies} = {K * copies} in a {plan.scheme!r} plan"
        )


def _check_edge(plan: Plan, edge_plan: EdgePlan, edge_spec: EdgeSpec) -> list[int]:
    """Check one edge of ``plan`` (names, counts, its own sums); its selected workers' loads."""
    K = plan.partitions
    where = f"edge {edge_spec.name!r}"
    if edge_plan.name != edge_spec.name:
        _fail(f"edge {edge_plan.name!r} where the spec has {edge_spec.name!r}")
    if len(edge_plan.workers) != len(edge_spec.workers):
        _fail(f"{where} has {len(edge_plan.workers)} workers, the spec {len(edge_spec.workers)}")
    if not isinstance(edge_plan.s_worker, int) or edge_plan.s_worker < 0:
        _fail(f"{where}: s_worker must be an integer >= 0, got {edge_plan.s_worker!r}")
    if not isinstance(edge_plan.partitions, int) or edge_plan.partitions < 0:
        _fail(f"{where}: partitions must be an integer >= 0, got {edge_plan.partitions!r}")
    loads = []
    for worker_plan, worker_spec in zip(edge_plan.workers, edge_spec.workers, strict=True):
        if worker_plan.name != worker_spec.name:
            _fail(f"{where}: worker {worker_plan.name!r} where the spec has {worker_spec.name!r}")
        l = worker_plan.partitions
        if not isinstance(l, int) or l < 0:
            _fail(f"worker {worker_spec.name!r}: partitions must be an integer >= 0, got {l!r}")
        if worker_plan.selected and l < 1:
            _fail(f"worker {worker_spec.name!r} is selected but holds {l} partitions")
        if not worker_plan.selected and l != 0:
            _fail(f"worker {worker_spec.name!r} is not selected but holds {l} partitions")
        if l > K:
            _fail(f"worker {worker_spec.name!r} holds {l} > K = {K} partitions")
        if worker_plan.selected:
            loads.append(l)
    m = len(loads)
    c = edge_plan.partitions
    if (c > 0) != (m > 0):
        _fail(
            f"{where}: partitions = {c} but {m} selected workers (an edge takes part "
            "exactly when some of its workers do)"
        )
    if c > K:
        _fail(f"{where}: partitions c_i = {c} > K = {K}")
    if m == 0:
        return loads
    if plan.scheme == "hgc":
        s_w = edge_plan.s_worker
        if s_w >= m:
            _fail(f"{where}: s_worker = {s_w} must be < its {m} selected workers")
        if sum(loads) != c * (s_w + 1):
            _fail(
                f"{where}: selected workers' partitions sum to {sum(loads)}, expected "
                f"c_i (s_worker + 1) = {c} * {s_w + 1} = {c * (s_w + 1)}"
            )
        if max(loads) > c:
            _fail(f"{where}: a worker holds {max(loads)} > c_i = {c} partitions")
    else:
        if edge_plan.s_worker != 0:
            _fail(f"{where}: s_worker must be 0 in a {plan.scheme!r} plan")
        if c != min(K, sum(loads)):
            _fail(
                f"{where}: partitions must be min(K, sum of its workers' partitions) = "
                f"{min(K, sum(loads))} in a {plan.scheme!r} plan, got {c}"
            )
    return loads


def build_plan(
    spec: ClusterSpec,
    scheme: str,
    partitions: int,
    s_edge: int,
    s_workers: Sequence[int],
    edge_partitions: Sequence[int],
    worker_partitions: Sequence[Sequence[int]],
    expected_round_seconds: float | None = None,
    extra: dict[str, Any] | None = None,
) -> Plan:
    """Assemble a :class:`Plan` from counts given per edge / per worker in spec order.

    A worker is selected exactly when its count is > 0. The plan is not checked here.
    """
    edges = []
    for i, edge in enumerate(spec.edges):
        workers = tuple(
            WorkerPlan(name=w.name, selected=int(l) > 0, partitions=int(l))
            for w, l in zip(edge.workers, worker_partitions[i], strict=True)
        )
        edges.append(
            EdgePlan(
                name=edge.name,
                s_worker=int(s_workers[i]),
                link_seconds=edge.link_seconds,
                partitions=int(edge_partitions[i]),
                workers=workers,
            )
        )
    return Plan(
        scheme=scheme,
        partitions=int(partitions),
        s_edge=int(s_edge),
        edges=tuple(edges),
        expected_round_seconds=expected_round_seconds,
        extra=dict(extra or {}),
    )


def one_layer_plan(
    spec: ClusterSpec,
    scheme: str,
    partitions: int,
    s: int,
    worker_partitions: Sequence[Sequence[int]],
) -> Plan:
    """A ``"flat"``, ``"uncoded"`` or ``"ignore"`` plan from per-worker counts (edges forward)."""
    edge_partitions = [min(partitions, sum(int(x) for x in row)) for row in worker_partitions]
    return build_plan(
        spec, scheme, partitions, s, [0] * len(spec.edges), edge_partitions, worker_partitions
    )
