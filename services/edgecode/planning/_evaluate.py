"""Structures of a hierarchical plan and their evaluation (private; used by the planner modules).

A *structure* fixes which edges and workers take part, ``s_edge`` and every ``s_worker_i``; the load
rule (:mod:`edgecode.planning._rule`) turns it, for a number of partitions K and a quantile level,
into integer counts, and :class:`Evaluator` returns their expected round time (a fast fixed
quadrature during the search, the adaptive one for final plans), caching by structure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgecode.planning import _rule
from edgecode.planning.plans import build_plan, check_plan
from edgecode.planning.spec import ClusterSpec, Plan
from edgecode.planning.timing import _expected_time, _quick_expected_time, expected_round_time

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

#: Integration tolerance of the search's evaluations (the returned plan is evaluated at 1e-10).
SEARCH_RTOL = 1e-6
#: Search evaluations use one Gauss-Legendre panel per interval between at most this many
#: breakpoints (no error control); final plans are evaluated adaptively with all of them.
SEARCH_BREAKS = 64


def default_max_partitions(n_workers: int) -> int:
    """``K_max = 240 * ceil(N / 20)``: at least 12 partitions per worker at zero redundancy."""
    return 240 * max(1, math.ceil(n_workers / 20))


@dataclass(frozen=True)
class Structure:
    s_edge: int
    wmask: BoolArray  # (n, m)
    s_w: IntArray  # (n,)

    def key(self) -> bytes:
        return (
            bytes([self.s_edge % 256, self.s_edge // 256])
            + self.wmask.tobytes()
            + self.s_w.astype(np.int64).tobytes()
        )

    @property
    def emask(self) -> BoolArray:
        return np.asarray(self.wmask.any(axis=1))


@dataclass
class Result:
    value: float
    structure: Structure
    c: IntArray
    l: IntArray
    theta: float = math.nan


@dataclass
class Evaluator:
    cluster: _rule.Cluster
    K: int
    level: float = 0.5
    rtol: float = SEARCH_RTOL
    max_breaks: int | None = SEARCH_BREAKS
    cache: dict[bytes, Result | None] = field(default_factory=dict)
    evaluations: int = 0
    #: the search stops starting new descent rounds beyond this many evaluations
    budget: int = 10**9

    @property
    def exhausted(self) -> bool:
        return self.evaluations >= self.budget

    def evaluate(self, structures: Sequence[Structure]) -> list[Result | None]:
        """Rule + expected time for each structure (None when infeasible at this K)."""
        todo = [s for s in structures if s.key() not in self.cache]
        unique: dict[bytes, Structure] = {s.key(): s for s in todo}
        if unique:
            batch = list(unique.values())
            wmask = np.stack([s.wmask for s in batch])
            s_w = np.stack([s.s_w for s in batch])
            s_e = np.array([s.s_edge for s in batch], dtype=np.int64)
            c, l, feasible, theta = _rule.apply(self.cluster, wmask, s_w, s_e, self.K, self.level)
            for b, structure in enumerate(batch):
                if not feasible[b]:
                    self.cache[structure.key()] = None
                    continue
                model = _rule.model(
                    self.cluster, structure.wmask, structure.s_w, structure.s_edge, l[b], self.K
                )
                if self.max_breaks is None:
                    value = _expected_time(model, self.rtol)
                else:
                    value = _quick_expected_time(model, self.max_breaks)
                self.evaluations += 1
                self.cache[structure.key()] = Result(value, structure, c[b], l[b], float(theta[b]))
        return [self.cache[s.key()] for s in structures]

    def best(self, structures: Sequence[Structure]) -> Result | None:
        results = [r for r in self.evaluate(structures) if r is not None]
        return min(results, key=lambda r: r.value) if results else None


def valid(structure: Structure) -> bool:
    m_sel = structure.wmask.sum(axis=1)
    emask = m_sel > 0
    if not emask.any() or structure.s_edge < 0 or structure.s_edge >= emask.sum():
        return False
    return bool(
        np.all((structure.s_w >= 0) & np.where(emask, structure.s_w < m_sel, structure.s_w == 0))
    )


def partitions_argument(spec: ClusterSpec, partitions: int | None) -> int | None:
    K = partitions if partitions is not None else spec.partitions
    if K is not None and (int(K) != K or K < 1):
        raise ValueError(f"partitions must be an integer >= 1, got {K!r}")
    return None if K is None else int(K)


def to_plan(ev: Evaluator, result: Result, extra: dict[str, Any]) -> Plan:
    cl = ev.cluster
    spec = cl.spec
    st = result.structure
    loads = [[int(result.l[i, j]) for j in range(len(e.workers))] for i, e in enumerate(spec.edges)]
    plan = build_plan(
        spec,
        "hgc",
        ev.K,
        st.s_edge,
        [int(x) if st.emask[i] else 0 for i, x in enumerate(st.s_w)],
        [int(x) for x in result.c],
        loads,
        extra=extra,
    )
    check_plan(plan, spec)
    return replace(plan, expected_round_seconds=expected_round_time(spec, plan))
