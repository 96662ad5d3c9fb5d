"""Planner speed: seconds of :func:`edgecode.planning.optimize` against cluster size.

``python -m edgecode.bench.planner`` prints, for random heterogeneous clusters of 4 to 1,000
workers, the median planner time of a few runs with the target beside it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgecode.planning.baselines import uncoded_plan
from edgecode.planning.optimize import optimize
from edgecode.planning.spec import ClusterSpec, EdgeSpec, Plan, WorkerSpec


def bench_planner(
    sizes: Sequence[tuple[int, int]], rng: np.random.Generator, repeats: int = 1
) -> list[dict[str, Any]]:
    """Time :func:`optimize` on random heterogeneous clusters of ``(edges, workers per edge)``.

    Workers: shift ~ U(0.05, 0.5) s, rate ~ U(1, 20) /s, link ~ U(0, 0.01) s; edge links
    ~ U(0, 0.02) s. Returns one dict per size: edges, workers, seconds (best of ``repeats``),
    evaluations, expected_round_seconds, uncoded_seconds.
    """
    rows = []
    for n_edges, per_edge in sizes:
        spec = random_cluster(n_edges, per_edge, rng)
        timings = []
        plan: Plan | None = None
        for _ in range(repeats):
            began = time.perf_counter()
            plan = optimize(spec)
            timings.append(time.perf_counter() - began)
        assert plan is not None
        rows.append(
            {
                "edges": n_edges,
                "workers": n_edges * per_edge,
                "seconds": min(timings),
                "evaluations": plan.extra.get("evaluations"),
                "expected_round_seconds": plan.expected_round_seconds,
                "uncoded_seconds": uncoded_plan(spec).expected_round_seconds,
            }
        )
    return rows


def random_cluster(
    n_edges: int,
    per_edge: int | Sequence[int],
    rng: np.random.Generator,
    partitions: int | None = None,
) -> ClusterSpec:
    """A random heterogeneous cluster (see :func:`bench_planner` for the distributions)."""
    counts = [per_edge] * n_edges if isinstance(per_edge, int) else list(per_edge)
    edges = []
    for i, count in enumerate(counts):
        workers = tuple(
            WorkerSpec(
                f"e{i}-w{j}",
                float(rng.uniform(0.05, 0.5)),
                float(rng.uniform(1.0, 20.0)),
                float(rng.uniform(0.0, 0.01)),
            )
            for j in range(count)
        )
        edges.append(EdgeSpec(f"e{i}", workers, float(rng.uniform(0.0, 0.02))))
    return ClusterSpec(tuple(edges), partitions=partitions)


__all__ = ["bench_planner", "random_cluster"]
