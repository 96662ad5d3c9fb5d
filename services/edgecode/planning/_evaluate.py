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
#: The first, coarse brackets use every this many panel boundaries of the fine ones ...
COARSE_STRIDE = 2
#: ... and this many points per panel.
COARSE_POINTS = 1
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
    #: coarser guaranteed bounds of pending structures (see :func:`_prune`)
    coarse: dict[bytes, tuple[float, float]] = field(default_factory=dict)
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
        todo = [k for k in dict.fromkeys(keys) if k in self.pending and self.pending[k][1] < bound]
        if todo:
            self._integrate(todo)
        return [self.cache.get(k) for k in keys]

    def best(self, structures: Sequence[Structure], bound: float = math.inf) -> Result | None:
        """The structure with the smallest expected time (None: none feasible, or none with a
        lower bound below ``bound``). Without a budget, on the batch path, candidates that
        guaranteed bounds (:func:`edgecode.planning._batch.brackets`, raised to the shared
        hosts' floor like the values) show to be no better than ``bound``, than a known value
        or than another candidate's upper bound are not integrated: the answer is the same.
        (:func:`best_many` answers several such questions, of several evaluators, at once.)"""
        return best_many([(self, structures, bound)])[0]

    def _apply_rule(self, structures: dict[bytes, Structure]) -> None:
        _apply_rules([(self, structures)])

    def _integrate(self, keys: list[bytes]) -> None:
        _integrate([(self, k) for k in keys])


Request = tuple[Evaluator, Sequence[Structure], float]


def best_many(requests: Sequence[Request]) -> list[Result | None]:
    """``[ev.best(structures, bound) for ev, structures, bound in requests]`` with one rule
    batch, one bracket batch and at most two integration batches for all of them (the
    evaluators must share one cluster). Same answers: each request's candidates are pruned
    and integrated as :meth:`Evaluator.best` would, only values found for another request of
    the same call are not used to prune (so a few more may be integrated)."""
    keys = [[s.key() for s in structures] for _, structures, _ in requests]
    _apply_rules(
        [
            (ev, dict(zip(k, structures, strict=True)))
            for (ev, structures, _), k in zip(requests, keys, strict=True)
        ]
    )
    todo = [
        [k for k in dict.fromkeys(ks) if k in ev.pending and ev.pending[k][1] < bound]
        for (ev, _, bound), ks in zip(requests, keys, strict=True)
    ]
    aside = _prune(requests, keys, todo)
    wanted: dict[tuple[int, bytes], tuple[Evaluator, bytes]] = {}
    for (ev, _, _), ks, skip in zip(requests, todo, aside, strict=True):
        for k in ks:
            if k not in skip and k in ev.pending:
                wanted.setdefault((id(ev), k), (ev, k))
    _integrate(list(wanted.values()))
    out: list[Result | None] = []
    for (ev, _, _), ks in zip(requests, keys, strict=True):
        results = [r for k in ks if (r := ev.cache.get(k)) is not None]
        out.append(min(results, key=lambda r: r.value) if results else None)
    return out


def evaluate_many(
    batches: Sequence[tuple[Evaluator, Sequence[Structure]]],
) -> list[list[Result | None]]:
    """``[ev.evaluate(structures) for ev, structures in batches]`` (no bound) with one rule
    batch and one integration batch for all of them (one cluster)."""
    keys = [[s.key() for s in structures] for _, structures in batches]
    _apply_rules(
        [
            (ev, dict(zip(k, structures, strict=True)))
            for (ev, structures), k in zip(batches, keys, strict=True)
        ]
    )
    wanted: dict[tuple[int, bytes], tuple[Evaluator, bytes]] = {}
    for (ev, _), ks in zip(batches, keys, strict=True):
        for k in ks:
            if k in ev.pending and ev.pending[k][1] < math.inf:
                wanted.setdefault((id(ev), k), (ev, k))
    _integrate(list(wanted.values()))
    return [[ev.cache.get(k) for k in ks] for (ev, _), ks in zip(batches, keys, strict=True)]


def _bracketed(ev: Evaluator, todo: list[bytes]) -> bool:
    """Whether :func:`_prune` brackets these pending candidates of ``ev``."""
    return (
        ev.budget >= _UNBUDGETED
        and ev.max_breaks is not None
        and len(todo) >= BRACKET_MIN
        and bracketable(ev.cluster, ev.max_breaks)
    )


def bracketable(cluster: _rule.Cluster, max_breaks: int) -> bool:
    """Whether brackets (:func:`edgecode.planning._batch.brackets`) may rule candidates out
    against values on the search quadrature of ``max_breaks`` kinks: on the batch path, and
    only when that quadrature keeps every kink (merged panels may put it further than
    :data:`BRACKET_SLACK` from the integral the brackets bound)."""
    kinks = int(cluster.mask.sum()) * (2 if cluster.mixed else 1)
    return cluster.n * cluster.m <= _batch.BATCH_SLOTS and kinks <= max_breaks


def _prune(
    requests: Sequence[Request], keys: list[list[bytes]], todo: list[list[bytes]]
) -> list[set[bytes]]:
    """For each request, the pending candidates (``todo``) that need not be integrated: those
    whose bracket's lower end exceeds the bound, a known value or another candidate's upper
    end; where many are left, the three with the smallest upper ends are integrated first and
    their values set more aside (see :meth:`Evaluator.best`). Candidates are first bracketed
    on a coarse grid (:data:`COARSE_STRIDE`); only those it cannot set aside get the fine
    brackets (both are guaranteed bounds, so the answer is the same)."""
    active = [
        r for r, (req, ks) in enumerate(zip(requests, todo, strict=True)) if _bracketed(req[0], ks)
    ]
    aside: list[set[bytes]] = [set() for _ in requests]
    ceilings: dict[int, float] = {}
    for coarse in (True, False) if COARSE_STRIDE else (False,):
        new: dict[tuple[int, bytes], tuple[Evaluator, bytes]] = {}
        for r in active:
            ev = requests[r][0]
            for k in todo[r]:
                if (
                    k not in ev.brackets
                    and (not coarse or k not in ev.coarse)
                    and k not in aside[r]
                ):
                    new.setdefault((id(ev), k), (ev, k))
        _bracket(list(new.values()), coarse)
        for r in active:
            ev, _, bound = requests[r]
            left = [k for k in todo[r] if k not in aside[r]]
            found = {k: ev.brackets.get(k) or ev.coarse[k] for k in left}
            if r not in ceilings:
                known = [v.value for k in keys[r] if (v := ev.cache.get(k)) is not None]
                ceilings[r] = min([bound, *known])
            ceilings[r] = min([ceilings[r], *(hi for _, hi in found.values())])
            # the search quadrature is within ~1e-7 of the true integral the brackets bound
            limit = ceilings[r] * (1.0 + BRACKET_SLACK)
            aside[r] |= {k for k in left if found[k][0] > limit}
    first: dict[tuple[int, bytes], tuple[Evaluator, bytes]] = {}
    for r in active:
        ev = requests[r][0]
        left = [k for k in todo[r] if k not in aside[r]]
        if len(left) > 2 * BRACKET_FIRST:
            # the likeliest best first: their values usually set most of the others aside
            for k in sorted(left, key=lambda k: ev.brackets[k][1])[:BRACKET_FIRST]:
                first.setdefault((id(ev), k), (ev, k))
    _integrate([(ev, k) for ev, k in first.values() if k in ev.pending])
    for r in active:
        ev = requests[r][0]
        values = [v.value for k in todo[r] if (v := ev.cache.get(k)) is not None]
        limit = min([ceilings[r], *values]) * (1.0 + BRACKET_SLACK)
        aside[r] |= {k for k in todo[r] if k not in aside[r] and ev.brackets[k][0] > limit}
    return aside


def _bracket(items: list[tuple[Evaluator, bytes]], coarse: bool = False) -> None:
    """Guaranteed bounds of pending structures (one batch), kept in their evaluators
    (``coarse``: on every :data:`COARSE_STRIDE`-th panel boundary only)."""
    if not items:
        return
    results = [ev.pending[k][0] for ev, k in items]
    cluster = items[0][0].cluster
    loads = np.stack([r.l for r in results])
    K = np.array([ev.K for ev, _ in items], dtype=np.int64)
    lower, upper = _batch.brackets(
        cluster,
        np.stack([r.structure.wmask for r in results]),
        np.stack([r.structure.s_w for r in results]),
        np.array([r.structure.s_edge for r in results], dtype=np.int64),
        loads,
        K,
        items[0][0].max_breaks,
        COARSE_POINTS if coarse else BRACKET_POINTS,
        COARSE_STRIDE if coarse else 1,
    )
    # the values are max(E[T], the shared hosts' floor) (see _integrate): so are the bounds
    # (max is monotone)
    floor = hosts.floors(cluster.hosts, loads, K)
    lower, upper = np.maximum(lower, floor), np.maximum(upper, floor)
    for (ev, k), lo, hi in zip(items, lower.tolist(), upper.tolist(), strict=True):
        (ev.coarse if coarse else ev.brackets)[k] = (lo, hi)


def _apply_rules(batches: Sequence[tuple[Evaluator, dict[bytes, Structure]]]) -> None:
    """The rule's counts and lower bounds of the structures new to their evaluators, all in
    one batch (each at its evaluator's K and level)."""
    new: dict[tuple[int, bytes], tuple[Evaluator, Structure]] = {}
    for ev, found in batches:
        for k, s in found.items():
            if k not in ev.cache and k not in ev.pending:
                new.setdefault((id(ev), k), (ev, s))
    if not new:
        return
    items = list(new.values())
    first = items[0][0]
    wmask = np.stack([s.wmask for _, s in items])
    s_w = np.stack([s.s_w for _, s in items])
    s_e = np.array([s.s_edge for _, s in items], dtype=np.int64)
    K = np.array([ev.K for ev, _ in items], dtype=np.int64)
    level = np.array([ev.level for ev, _ in items], dtype=np.float64)
    # the quantiles depend on the cluster only: one memo serves every evaluator
    c, l, feasible, theta = _rule.apply(
        first.cluster, wmask, s_w, s_e, K, level, memo=first.quantiles
    )
    lower = _batch.lower_bounds(first.cluster, wmask, s_w, s_e, l, K)
    for b, (ev, structure) in enumerate(items):
        if feasible[b]:
            result = Result(math.nan, structure, c[b], l[b], float(theta[b]))
            ev.pending[structure.key()] = (result, float(lower[b]))
        else:
            ev.cache[structure.key()] = None


def _integrate(items: list[tuple[Evaluator, bytes]]) -> None:
    """Expected times of pending structures: adaptive one by one (``max_breaks=None``), else
    all of one ``max_breaks`` in one batch."""
    groups: dict[int | None, list[tuple[Evaluator, Result]]] = {}
    for ev, k in items:
        groups.setdefault(ev.max_breaks, []).append((ev, ev.pending.pop(k)[0]))
    for max_breaks, group in groups.items():
        results = [r for _, r in group]
        cluster = group[0][0].cluster
        K = np.array([ev.K for ev, _ in group], dtype=np.int64)
        if max_breaks is None:
            values = np.array(
                [
                    _expected_time(
                        _rule.model(
                            cluster,
                            r.structure.wmask,
                            r.structure.s_w,
                            r.structure.s_edge,
                            r.l,
                            ev.K,
                        ),
                        ev.rtol,
                    )
                    for ev, r in group
                ]
            )
        else:
            values = _batch.expected_times(
                cluster,
                np.stack([r.structure.wmask for r in results]),
                np.stack([r.structure.s_w for r in results]),
                np.array([r.structure.s_edge for r in results], dtype=np.int64),
                np.stack([r.l for r in results]),
                K,
                max_breaks,
            )
        loads = np.stack([r.l for r in results])
        values = np.maximum(values, hosts.floors(cluster.hosts, loads, K))
        for (ev, result), value in zip(group, values.tolist(), strict=True):
            result.value = float(value)
            ev.cache[result.structure.key()] = result
            ev.evaluations += 1


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
