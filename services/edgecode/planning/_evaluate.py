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

from edgecode.planning import _batch, _rule, hosts
from edgecode.planning.plans import build_plan, check_plan
from edgecode.planning.spec import ClusterSpec, Plan
from edgecode.planning.timing import _expected_time, expected_round_time

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

#: Integration tolerance of the search's evaluations (the returned plan is evaluated at 1e-10).
SEARCH_RTOL = 1e-6
#: Search evaluations use one Gauss-Legendre panel per interval between at most this many
#: breakpoints (no error control); final plans are evaluated adaptively with all of them.
SEARCH_BREAKS = 64


#: No evaluation budget (the default of :attr:`Evaluator.budget`).
_UNBUDGETED = 10**9
#: :meth:`Evaluator.best` brackets its pending candidates when there are at least this many.
BRACKET_MIN = 16
#: Points per quadrature panel of those brackets.
BRACKET_POINTS = 2
#: With more candidates left than twice this, :meth:`Evaluator.best` integrates this many
#: (smallest upper bounds) first and sets aside the others their values beat.
BRACKET_FIRST = 3
#: Relative slack between the brackets (of the true integral) and the search quadrature.
BRACKET_SLACK = 1e-6


def default_max_partitions(n_workers: int) -> int:
    """``K_max = 240 * ceil(N / 20)``: at least 12 partitions per worker at zero redundancy."""
    return 240 * max(1, math.ceil(n_workers / 20))


@dataclass(frozen=True)
class Structure:
    """Which workers take part (``wmask``), their edges' ``s_w`` and ``s_edge``; its cache key
    is computed once."""

    s_edge: int
    wmask: BoolArray  # (n, m)
    s_w: IntArray  # (n,)
    #: the cache key, computed here unless given (by :func:`structures`, for a whole batch)
    _key: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self._key:
            key = (
                int(self.s_edge).to_bytes(4, "little", signed=True)
                + self.wmask.tobytes()
                + self.s_w.astype(np.int64).tobytes()
            )
            object.__setattr__(self, "_key", key)

    def key(self) -> bytes:
        return self._key

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
    """The load rule and the expected time of structures at one K and quantile level, cached.

    Search evaluations (``max_breaks`` set) integrate all new structures of a call at once on
    the fixed rule of :mod:`edgecode.planning._batch`; ``max_breaks=None`` evaluates each
    adaptively to ``rtol`` (final plans, exhaustive finalists).
    """

    cluster: _rule.Cluster
    K: int
    level: float = 0.5
    rtol: float = SEARCH_RTOL
    max_breaks: int | None = SEARCH_BREAKS
    cache: dict[bytes, Result | None] = field(default_factory=dict)
    #: the rule's counts and lower bound of structures whose time is not known yet
    pending: dict[bytes, tuple[Result, float]] = field(default_factory=dict)
    evaluations: int = 0
    #: the search stops starting new descent rounds beyond this many evaluations
    budget: int = _UNBUDGETED
    #: guaranteed (lower, upper) bounds of pending structures' times (see :meth:`best`)
    brackets: dict[bytes, tuple[float, float]] = field(default_factory=dict)
    #: pending structures the current :meth:`best` call need not integrate
    set_aside: set[bytes] = field(default_factory=set)
    #: the rule's bimodal quantiles by level (see :func:`edgecode.planning._rule.unit_costs`)
    quantiles: dict[float, FloatArray] = field(default_factory=dict)
    #: complete-neighbourhood descents: structure -> (where they end, steps) (see _search)
    paths: dict[bytes, tuple[Result, int]] = field(default_factory=dict)

    @property
    def exhausted(self) -> bool:
        return self.evaluations >= self.budget

    def evaluate(
        self, structures: Sequence[Structure], bound: float = math.inf
    ) -> list[Result | None]:
        """Rule + expected time for each structure; None when infeasible at this K, or when
        its lower bound ``t_lo`` (:func:`edgecode.planning._batch.lower_bounds`) is at least
        ``bound`` (it cannot have a smaller expected time; it is integrated when asked again
        with a larger bound)."""
        keys = [s.key() for s in structures]
        self._apply_rule({k: s for k, s in zip(keys, structures, strict=True)})
        todo = [
            k
            for k in dict.fromkeys(keys)
            if k in self.pending and self.pending[k][1] < bound and k not in self.set_aside
        ]
        self.set_aside = set()
        if todo:
            self._integrate(todo)
        return [self.cache.get(k) for k in keys]

    def best(self, structures: Sequence[Structure], bound: float = math.inf) -> Result | None:
        """The structure with the smallest expected time (None: none feasible, or none with a
        lower bound below ``bound``). Without a budget, on the batch path, candidates that
        guaranteed bounds (:func:`edgecode.planning._batch.brackets`, raised to the shared
        hosts' floor like the values) show to be no better than ``bound``, than a known value
        or than another candidate's upper bound are not integrated: the answer is the same."""
        if self.budget >= _UNBUDGETED and self.max_breaks is not None:
            self._prune(structures, bound)
        results = [r for r in self.evaluate(structures, bound) if r is not None]
        return min(results, key=lambda r: r.value) if results else None

    def _prune(self, structures: Sequence[Structure], bound: float) -> None:
        """Brackets the pending candidates among ``structures`` (once each) and sets aside,
        for this call, those that cannot be the best (see :meth:`best`)."""
        keys = [s.key() for s in structures]
        self._apply_rule({k: s for k, s in zip(keys, structures, strict=True)})
        todo = [k for k in dict.fromkeys(keys) if k in self.pending and self.pending[k][1] < bound]
        cluster = self.cluster
        kinks = int(cluster.mask.sum()) * (2 if cluster.mixed else 1)
        if (
            len(todo) < BRACKET_MIN
            or cluster.n * cluster.m > _batch.BATCH_SLOTS
            # merged panels: the search quadrature may then be further than the slack from
            # the integral the brackets bound
            or kinks > (self.max_breaks or 0)
        ):
            return
        new = [k for k in todo if k not in self.brackets]
        if new:
            results = [self.pending[k][0] for k in new]
            loads = np.stack([r.l for r in results])
            lower, upper = _batch.brackets(
                cluster,
                np.stack([r.structure.wmask for r in results]),
                np.stack([r.structure.s_w for r in results]),
                np.array([r.structure.s_edge for r in results], dtype=np.int64),
                loads,
                self.K,
                self.max_breaks,
                BRACKET_POINTS,
            )
            # the values are max(E[T], the shared hosts' floor) (see _integrate): so are the
            # bounds (max is monotone)
            floor = hosts.floors(cluster.hosts, loads, self.K)
            lower, upper = np.maximum(lower, floor), np.maximum(upper, floor)
            bounds = zip(lower.tolist(), upper.tolist(), strict=True)
            self.brackets.update(zip(new, bounds, strict=True))
        known = [r.value for k in keys if (r := self.cache.get(k)) is not None]
        ceiling = min([bound, *known, *(self.brackets[k][1] for k in todo)])
        # the search quadrature is within ~1e-7 of the true integral the brackets bound
        aside = {k for k in todo if self.brackets[k][0] > ceiling * (1.0 + BRACKET_SLACK)}
        left = [k for k in todo if k not in aside]
        if len(left) > 2 * BRACKET_FIRST:
            # the likeliest best first: their values usually set most of the others aside
            first = sorted(left, key=lambda k: self.brackets[k][1])[:BRACKET_FIRST]
            self._integrate(first)
            values = [r.value for k in first if (r := self.cache[k]) is not None]
            ceiling = min([ceiling, *values])
            aside |= {k for k in left if self.brackets[k][0] > ceiling * (1.0 + BRACKET_SLACK)}
        self.set_aside = aside

    def _apply_rule(self, structures: dict[bytes, Structure]) -> None:
        new = [s for k, s in structures.items() if k not in self.cache and k not in self.pending]
        if not new:
            return
        wmask = np.stack([s.wmask for s in new])
        s_w = np.stack([s.s_w for s in new])
        s_e = np.array([s.s_edge for s in new], dtype=np.int64)
        c, l, feasible, theta = _rule.apply(
            self.cluster, wmask, s_w, s_e, self.K, self.level, memo=self.quantiles
        )
        lower = _batch.lower_bounds(self.cluster, wmask, s_w, s_e, l, self.K)
        for b, structure in enumerate(new):
            if feasible[b]:
                result = Result(math.nan, structure, c[b], l[b], float(theta[b]))
                self.pending[structure.key()] = (result, float(lower[b]))
            else:
                self.cache[structure.key()] = None

    def _integrate(self, keys: list[bytes]) -> None:
        results = [self.pending.pop(k)[0] for k in keys]
        if self.max_breaks is None:
            values = [
                _expected_time(
                    _rule.model(
                        self.cluster,
                        r.structure.wmask,
                        r.structure.s_w,
                        r.structure.s_edge,
                        r.l,
                        self.K,
                    ),
                    self.rtol,
                )
                for r in results
            ]
        else:
            values = list(
                _batch.expected_times(
                    self.cluster,
                    np.stack([r.structure.wmask for r in results]),
                    np.stack([r.structure.s_w for r in results]),
                    np.array([r.structure.s_edge for r in results], dtype=np.int64),
                    np.stack([r.l for r in results]),
                    self.K,
                    self.max_breaks,
                )
            )
        loads = np.stack([r.l for r in results])
        values = list(np.maximum(values, hosts.floors(self.cluster.hosts, loads, self.K)))
        for key, result, value in zip(keys, results, values, strict=True):
            result.value = float(value)
            self.cache[key] = result
        self.evaluations += len(results)


def valid(structure: Structure) -> bool:
    return bool(
        valid_rows(structure.wmask[None], structure.s_w[None], np.array([structure.s_edge]))[0]
    )


def valid_rows(wmask: BoolArray, s_w: IntArray, s_e: IntArray) -> BoolArray:
    """Which of a batch of structures (B, n, m), (B, n), (B,) are valid: some edge selected,
    ``0 <= s_edge <`` selected edges, ``0 <= s_worker_i <`` edge i's selected workers (0 when
    the edge is out)."""
    m_sel = wmask.sum(axis=-1)
    emask = m_sel > 0
    n_sel = emask.sum(axis=-1)
    inner = np.all((s_w >= 0) & np.where(emask, s_w < m_sel, s_w == 0), axis=-1)
    return np.asarray((n_sel > 0) & (s_e >= 0) & (s_e < n_sel) & inner)


def structures(wmask: BoolArray, s_w: IntArray, s_e: IntArray) -> list[Structure]:
    """The valid structures of a batch, in batch order."""
    keep = np.nonzero(valid_rows(wmask, s_w, s_e))[0]
    wmask, s_w, s_e = wmask[keep], s_w[keep], s_e[keep]
    # the keys of Structure.__post_init__, for the whole batch at once
    rows = np.concatenate(
        [
            s_e.astype("<i4").view(np.uint8).reshape(keep.size, 4),
            np.ascontiguousarray(wmask).reshape(keep.size, -1).view(np.uint8),
            np.ascontiguousarray(s_w.astype(np.int64)).view(np.uint8).reshape(keep.size, -1),
        ],
        axis=1,
    )
    width = rows.shape[1]
    flat = rows.tobytes()
    return [
        Structure(int(e), w, s, flat[b * width : (b + 1) * width])
        for b, (e, w, s) in enumerate(zip(s_e.tolist(), wmask, s_w, strict=True))
    ]


def partitions_argument(spec: ClusterSpec, partitions: int | None) -> int | None:
    K = partitions if partitions is not None else spec.partitions
    if K is not None and (int(K) != K or K < 1):
        raise ValueError(f"partitions must be an integer >= 1, got {K!r}")
    return None if K is None else int(K)


def to_plan(cluster: _rule.Cluster, K: int, result: Result, extra: dict[str, Any]) -> Plan:
    """The checked plan of ``result``'s counts out of ``K``, with its exact expected time."""
    spec = cluster.spec
    st = result.structure
    loads = [[int(result.l[i, j]) for j in range(len(e.workers))] for i, e in enumerate(spec.edges)]
    plan = build_plan(
        spec,
        "hgc",
        K,
        st.s_edge,
        [int(x) if st.emask[i] else 0 for i, x in enumerate(st.s_w)],
        [int(x) for x in result.c],
        loads,
        extra=extra,
    )
    check_plan(plan, spec)
    seconds = hosts.planned_seconds(spec, plan, expected_round_time(spec, plan))
    return replace(plan, expected_round_seconds=seconds)
