"""The search over structures (private; see :mod:`edgecode.planning.optimize` for the method).

Small clusters (at most ``SMALL_CLUSTER`` workers): steepest descent over the complete
neighbourhood from every ``s_edge`` and uniform ``s_worker``. Larger ones: a scan of ``s_edge``,
then coordinate descent whose inner moves are *screened* with the exact first-order change of
``E[T]`` (:func:`screen`) before the best are evaluated.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence

import numpy as np
from scipy.special import betaincinv

from edgecode.planning import _rule
from edgecode.planning._evaluate import (
    BoolArray,
    Evaluator,
    IntArray,
    Result,
    Structure,
    best_many,
    evaluate_many,
    structures,
    valid,
)
from edgecode.planning._gradient import _pivotal
from edgecode.planning.timing import (
    _GL_NODES,
    _GL_WEIGHTS,
    _arrival_probabilities,
    _boundaries,
    _count_tail,
    _deliveries,
    _model_from_arrays,
)

#: Up to this many edges every s_edge is searched.
FULL_S_EDGE_SCAN = 8
#: Clusters with at most this many workers get the complete local-search neighbourhood ...
SMALL_CLUSTER = 16
#: ... and so do clusters up to this many when the rule's loads are a good guide (shifted
#: exponential runtimes, many partitions per worker): on 15 such random clusters of 13-16
#: workers the screened search found the same plans (one 0.8% faster), while on bimodal ones
#: it lost up to 3.8%.
SMALL_EASY_CLUSTER = 12


def _inner_candidates(
    structure: Structure,
    result: Result,
    cluster: _rule.Cluster,
    i: int,
    full: bool,
    coarse: bool = False,
) -> list[tuple[BoolArray, int]]:
    """Inner moves of edge i: another s_worker, one worker out or one back in.

    ``full``: every s_worker and every worker. Otherwise every s_worker (within +-4 beyond 12
    workers), the 4 (beyond 12 workers: 2) workers with the smallest loads out, and as many of
    the fastest unselected workers (mean per-unit time) back in. ``coarse`` (many edges):
    s_worker within +-2 and 2 workers each way.
    """
    row = structure.wmask[i]
    size = int(row.sum())
    s_w = int(structure.s_w[i])
    members = np.nonzero(row)[0]
    outside = np.nonzero(~row & cluster.mask[i])[0]
    if full or (size <= 12 and not coarse):
        span: Iterable[int] = range(size)
    else:
        reach = 2 if coarse else 4
        span = range(max(0, s_w - reach), min(size, s_w + reach + 1))
    if not full:
        few = 4 if size <= 12 and not coarse else 2
        members = members[np.argsort(result.l[i, members], kind="stable")[:few]]
        speed = cluster.shift[i, outside] + 1.0 / cluster.rate[i, outside]
        outside = outside[np.argsort(speed, kind="stable")[:few]]
    out: list[tuple[BoolArray, int]] = []
    for s in span:
        if s != s_w and 0 <= s < size:
            out.append((row, s))
    if size >= 2:
        for w in members:
            smaller = row.copy()
            smaller[w] = False
            for s in sorted({min(s_w, size - 2), max(0, s_w - 1)}):
                out.append((smaller, s))
    for w in outside:
        larger = row.copy()
        larger[w] = True
        for s in (s_w, s_w + 1):
            out.append((larger, s))
    return out


def _screen(ev: Evaluator, current: Result, full: bool) -> list[tuple[float, int, BoolArray, int]]:
    """Predicted change of E[T] of every inner move of every selected edge (fixed coverages)."""
    cl = ev.cluster
    st = current.structure
    model = _rule.model(cl, st.wmask, st.s_w, st.s_edge, current.l, ev.K)
    # A fixed (non-adaptive) rule is enough to rank moves: Gauss-Legendre panels between
    # (at most 24) breakpoints, and 8 panels below t_lo where a faster candidate may matter.
    t_lo, _, boundaries = _boundaries(model, 1e-6, 12)
    if t_lo > 0:
        boundaries = np.concatenate([np.linspace(0.0, t_lo, 5)[:-1], boundaries])
    half = 0.5 * np.diff(boundaries)
    nodes = (
        (0.5 * (boundaries[1:] + boundaries[:-1]))[:, None] + half[:, None] * _GL_NODES
    ).ravel()
    weights = (half[:, None] * _GL_WEIGHTS).ravel()
    ge, lt = _deliveries(model, nodes)
    pivot = _pivotal(ge, lt, model.top_need)  # (g, T) over selected edges
    rows = np.nonzero(st.emask)[0]
    n_sel = rows.size
    k_e = n_sel - st.s_edge
    p_top = float(betaincinv(k_e, st.s_edge + 1, ev.level))
    moves: list[tuple[int, BoolArray, int]] = []
    coarse = not full and n_sel > FULL_S_EDGE_SCAN * 3
    for g_index, i in enumerate(rows):
        for mask_row, s in _inner_candidates(st, current, cl, int(i), full, coarse):
            moves.append((g_index, mask_row, s))
    # One probe per edge: same configuration, a little more coverage (marginal cost dE/dg).
    probes = len(moves)
    for g_index, i in enumerate(rows):
        moves.append((g_index, st.wmask[i], int(st.s_w[i])))
    index = np.array([rows[g] for g, _, _ in moves])
    group = np.array([g for g, _, _ in moves])
    wmask = np.stack([mk for _, mk, _ in moves])[:, None, :]
    s_w = np.array([s for _, _, s in moves], dtype=np.int64)[:, None]
    sub = _rule.Cluster(
        spec=cl.spec,
        sizes=cl.sizes[index],
        mask=cl.mask[index][:, None],
        shift=cl.shift[index][:, None],
        rate=cl.rate[index][:, None],
        link=cl.link[index][:, None],
        straggle=cl.straggle[index][:, None],
        slow=cl.slow[index][:, None],
        edge_link=cl.edge_link[index][:, None],
    )
    k = wmask.sum(axis=-1) - s_w
    p = np.asarray(betaincinv(k, s_w + 1, p_top), dtype=np.float64)
    a = _rule.unit_costs(sub, p)
    # The rule gives a changed edge the coverage it serves by the current master level Theta;
    # the other edges absorb the difference at their marginal cost dE/dg (first order).
    level_at_edge = np.array([[current.theta]]) - sub.edge_link
    cover = np.minimum(_rule.edge_capacity(a, sub.link, wmask, s_w, level_at_edge), 1.0)[:, 0]
    lower = -(-wmask[:, 0].sum(axis=-1) // (s_w[:, 0] + 1))
    c_new = np.clip(np.round(cover * ev.K).astype(np.int64), lower, ev.K)
    c_old = current.c[index]
    if n_sel == 1:
        c_new = c_old.copy()
    step = np.maximum(1, c_old[probes:] // 50)
    c_new[probes:] = c_old[probes:] + step
    loads = _rule.worker_loads(sub, a, wmask, s_w, c_new[:, None], ev.K)[:, 0]
    sel = wmask[:, 0]
    cand = _model_from_arrays(
        fractions=loads / ev.K,
        shifts=cl.shift[index],
        rates=cl.rate[index],
        worker_links=cl.link[index],
        straggle=cl.straggle[index],
        slow=cl.slow[index],
        mask=sel,
        need=sel.sum(axis=-1) - s_w[:, 0],
        links=cl.edge_link[index],
        top_need=1,
    )
    p_arr, q_arr = _arrival_probabilities(cand, nodes)
    cand_ge, _ = _count_tail(p_arr, q_arr, cand.mask, cand.need)
    change = -((pivot[group] * (cand_ge - ge[group])) @ weights)
    marginal = change[probes:] / (step / ev.K)  # dE/dg_j >= 0 (more coverage, slower)
    others = (marginal.sum() - marginal) / max(1, n_sel - 1)
    change = change[:probes] - (c_new[:probes] - c_old[:probes]) / ev.K * others[group[:probes]]
    return [(float(change[j]), int(index[j]), moves[j][1], moves[j][2]) for j in range(probes)]


def _descend(ev: Evaluator, start: Result, full: bool, rounds: int) -> Result:
    """Coordinate descent on inner configurations (screened), then confirmed by evaluation."""
    current = start
    for _ in range(rounds):
        if ev.exhausted:
            break
        screened = _screen(ev, current, full)
        best_per_edge: dict[int, tuple[float, BoolArray, int]] = {}
        for change, i, mask_row, s in screened:
            if change < -1e-12 * current.value and (
                i not in best_per_edge or change < best_per_edge[i][0]
            ):
                best_per_edge[i] = (change, mask_row, s)
        if not best_per_edge:
            break
        ordered = sorted(best_per_edge.items(), key=lambda item: item[1][0])
        trials: list[Structure] = []
        combined_mask = current.structure.wmask.copy()
        combined_sw = current.structure.s_w.copy()
        for i, (_, mask_row, s) in ordered:
            combined_mask[i] = mask_row
            combined_sw[i] = s
        trials.append(Structure(current.structure.s_edge, combined_mask, combined_sw))
        for i, (_, mask_row, s) in ordered[: 3 if len(ordered) > 1 else 0]:
            wm = current.structure.wmask.copy()
            sw = current.structure.s_w.copy()
            wm[i] = mask_row
            sw[i] = s
            trials.append(Structure(current.structure.s_edge, wm, sw))
        best = ev.best([t for t in trials if valid(t)], bound=current.value)
        if best is None or best.value >= current.value * (1 - 1e-12):
            break
        current = best
    return current


def _neighbours(structure: Structure, full: bool, worst_edges: Iterable[int]) -> list[Structure]:
    """Top-level moves: s_edge +- 1, an edge out (its s_edge kept or lowered), an edge back in."""
    out: list[Structure] = []
    n_sel = int(structure.emask.sum())
    for s_e in (structure.s_edge - 1, structure.s_edge + 1):
        out.append(Structure(s_e, structure.wmask, structure.s_w))
    candidates = range(structure.wmask.shape[0]) if full else worst_edges
    for i in candidates:
        if structure.emask[i] and n_sel >= 2:
            wm = structure.wmask.copy()
            wm[i] = False
            sw = structure.s_w.copy()
            sw[i] = 0
            for s_e in {min(structure.s_edge, n_sel - 2), max(0, structure.s_edge - 1)}:
                out.append(Structure(s_e, wm, sw))
    return [s for s in out if valid(s)]


def _local_search(ev: Evaluator, start: Result, full: bool, max_rounds: int) -> Result:
    """Steepest descent from ``start`` (at most ``max_rounds`` neighbourhood steps).

    With the complete neighbourhood (``full``) a step depends on the current structure only,
    so where a descent reaches a structure an earlier one of this evaluator passed through
    (``ev.paths``: where that one ended and after how many steps), it ends there too (see
    :func:`_descent`)."""
    if full:
        steps = _descent(ev, start, max_rounds)
        try:
            current = next(steps)
            while True:
                found = ev.best(_full_neighbours(current.structure, ev.cluster), current.value)
                current = steps.send(found)
        except StopIteration as stop:
            ended: Result = stop.value
            return ended
    current = start
    for _ in range(max_rounds):
        if ev.exhausted:
            break
        improved = _descend(ev, current, full, rounds=max_rounds)
        coverage_order = np.argsort(improved.c + np.where(improved.structure.emask, 0, 10**9))
        neighbours = _neighbours(improved.structure, full, [int(i) for i in coverage_order[:2]])
        best = ev.best(neighbours, bound=improved.value)
        if best is not None and best.value < improved.value * (1 - 1e-12):
            current = best
            continue
        current = improved
        break
    return current


def _descent(
    ev: Evaluator, start: Result, max_rounds: int
) -> Generator[Result, Result | None, Result]:
    """The complete-neighbourhood descent from ``start`` as a generator: it yields the current
    structure and is sent the best of its complete neighbourhood (:func:`_full_neighbours`,
    bound: the current value; None when none is better), and returns where it ends. Whoever
    drives it may answer the questions of several descents at once (:func:`search_many`).

    A step depends on the current structure only, so where a descent reaches a structure an
    earlier one of this evaluator passed through (``ev.paths``: where that one ended and after
    how many steps), it ends there too, if it has the steps left."""
    current = start
    path: list[bytes] = []
    for done in range(max_rounds):
        if ev.exhausted:
            break
        key = current.structure.key()
        known = ev.paths.get(key)
        if known is not None and known[1] <= max_rounds - done:
            _remember(ev, path, known[0], known[1])
            return known[0]
        path.append(key)
        best = yield current
        if best is not None and best.value < current.value * (1 - 1e-12):
            current = best
            continue
        _remember(ev, path, current, 1)
        break
    return current


def _full_neighbours(structure: Structure, cluster: _rule.Cluster) -> list[Structure]:
    """Every move of the complete neighbourhood: the top-level moves of every edge and every
    single change (:func:`_complete_neighbourhood`)."""
    return _neighbours(structure, True, ()) + _complete_neighbourhood(structure, cluster)


def _remember(ev: Evaluator, path: list[bytes], end: Result, steps: int) -> None:
    """Record that descents from each structure of ``path`` (in order) end at ``end``, the
    last of them after ``steps`` neighbourhood steps."""
    for back, key in enumerate(reversed(path)):
        ev.paths[key] = (end, steps + back)


def _complete_neighbourhood(structure: Structure, cluster: _rule.Cluster) -> list[Structure]:
    """Every single change: one s_worker to any value, one worker or one edge in or out (with
    any s_worker of that edge and any s_edge), or another s_edge."""
    wmask, s_w, s_e = structure.wmask, structure.s_w, structure.s_edge
    n = wmask.shape[0]
    blocks: list[tuple[BoolArray, IntArray, IntArray]] = []

    def block(count: int) -> tuple[BoolArray, IntArray]:
        return np.repeat(wmask[None], count, axis=0), np.repeat(s_w[None], count, axis=0)

    for i in range(n):
        size = int(cluster.sizes[i])
        wm, sw = block(size)
        sw[:, i] = np.arange(size)
        blocks.append((wm, sw, np.full(size, s_e)))
        worker, tolerance, top = (
            a.ravel() for a in np.meshgrid(*(np.arange(k) for k in (size, size, n)), indexing="ij")
        )
        wm, sw = block(worker.size)
        wm[np.arange(worker.size), i, worker] ^= True
        sw[:, i] = np.where(wm[:, i].any(axis=-1), tolerance, 0)
        blocks.append((wm, sw, top))
        if not structure.emask[i]:
            tolerance, top = (
                a.ravel() for a in np.meshgrid(np.arange(size), np.arange(n), indexing="ij")
            )
            wm, sw = block(tolerance.size)
            wm[:, i, :size] = True
            sw[:, i] = tolerance
            blocks.append((wm, sw, top))
    wm, sw = block(n)
    blocks.append((wm, sw, np.arange(n)))
    return structures(
        np.concatenate([b[0] for b in blocks]),
        np.concatenate([b[1] for b in blocks]),
        np.concatenate([b[2] for b in blocks]).astype(np.int64),
    )


def _s_edge_scan(n: int) -> list[int]:
    if n <= FULL_S_EDGE_SCAN:
        return list(range(n))
    values = {0, 1, 2, 3, n - 1}
    x = 3.0
    while x < n - 1:
        values.add(round(x))
        x *= 1.4
    return sorted(values)


def _starts(ev: Evaluator, values: Iterable[int], full: bool) -> list[Structure]:
    """Every worker in, uniform s_worker (every value with ``full``, else 0 and 1, or 0), at
    each s_edge of ``values``."""
    cl = ev.cluster
    spread = list(
        range(int(cl.sizes.max())) if full else range(2 if cl.n <= FULL_S_EDGE_SCAN else 1)
    )
    if ev.K < int(cl.mask.sum()):
        # few partitions: only high tolerances let every worker hold one (c_i (s_w+1) >= m_i)
        spread.append(int(cl.sizes.max()) - 1)
    all_in = cl.mask.copy()
    return [
        Structure(s_e, all_in, np.minimum(t, cl.sizes - 1).astype(np.int64))
        for s_e in values
        for t in spread
    ]


def _best_per_s_edge(results: Iterable[Result | None]) -> list[Result]:
    by_s_edge: dict[int, Result] = {}
    for result in results:
        if result is None:
            continue
        s_e = result.structure.s_edge
        if s_e not in by_s_edge or result.value < by_s_edge[s_e].value:
            by_s_edge[s_e] = result
    return sorted(by_s_edge.values(), key=lambda r: r.value)


def _seeds(evs: Sequence[Evaluator], full: bool) -> list[list[Result]]:
    """The descents' starts of each evaluator (one cluster): the best uniform start of every
    s_edge of the scan (beyond ``FULL_S_EDGE_SCAN`` edges a grid, then around its best), best
    first; the evaluators' starts evaluated together."""
    n = evs[0].cluster.n
    scan = _s_edge_scan(n)
    found = evaluate_many([(ev, _starts(ev, scan, full)) for ev in evs])
    seeds = [_best_per_s_edge(results) for results in found]
    if n > FULL_S_EDGE_SCAN:
        around = [
            [v for v in {s[0].structure.s_edge + d for d in range(-2, 3)} - set(scan) if 0 <= v < n]
            if s
            else []
            for s in seeds
        ]
        more = evaluate_many(
            [(ev, _starts(ev, a, full)) for ev, a in zip(evs, around, strict=True)]
        )
        seeds = [
            sorted(s + _best_per_s_edge(m), key=lambda r: r.value) if s else s
            for s, m in zip(seeds, more, strict=True)
        ]
    return seeds


def _ranked(ends: Iterable[Result], seeds: list[Result], keep: int) -> list[Result]:
    """The ``keep`` best of the descents' ends (in order, a later end of the same structure
    replacing an earlier) and the seeds."""
    found: dict[bytes, Result] = {}
    for result in ends:
        found[result.structure.key()] = result
    for seed in seeds:
        found.setdefault(seed.structure.key(), seed)
    return sorted(found.values(), key=lambda r: r.value)[:keep]


def search(ev: Evaluator, keep: int = 3, small: int = SMALL_CLUSTER) -> list[Result]:
    """Best structures found (best first, at most ``keep``).

    Small clusters (up to ``small`` workers): every s_edge, every uniform s_worker start,
    descent with the complete neighbourhood until no move improves. Larger ones: a scan of
    s_edge (all up to ``FULL_S_EDGE_SCAN`` edges, else a geometric grid and the neighbours of its
    best) with uniform s_worker 0 and 1, screened descent from the three best, then top-level
    moves (s_edge +- 1, the two least-covered edges out) and descent again while they improve.
    """
    n = ev.cluster.n
    full = int(ev.cluster.mask.sum()) <= small
    seeds = _seeds([ev], full)[0]
    chosen = seeds if full else [r for r in seeds[:2] if r.value <= seeds[0].value * 1.02]
    rounds = 20 if full else 3 if n <= 24 else 4
    return _ranked([_local_search(ev, seed, full, rounds) for seed in chosen], seeds, keep)


def search_many(
    evs: Sequence[Evaluator],
    keep: int = 3,
    parallel: int = 1,
    seeds: Sequence[int | None] | None = None,
) -> list[list[Result]]:
    """``[search(ev, keep) for ev in evs]`` for evaluators of one cluster small enough for the
    complete neighbourhood, run in lockstep (``seeds``: per evaluator, descend from only that
    many of its best seeds, None: all): the seeds of all of them are evaluated together,
    then each round of the descents (up to ``parallel`` at a time per evaluator, in seed
    order, so that later descents of an evaluator can join earlier paths) asks one
    :func:`~edgecode.planning._evaluate.best_many` question for all of them.
    The same results as one search after the other (up to a batch's last bits)."""
    starts = _seeds(evs, True)
    if seeds is not None:
        starts = [s if n is None else s[:n] for s, n in zip(starts, seeds, strict=True)]
    queued = [list(enumerate(s)) for s in starts]
    ends: list[dict[int, Result]] = [{} for _ in evs]
    running: list[tuple[int, int, Generator[Result, Result | None, Result], Result]] = []

    def start(e: int) -> None:
        while queued[e] and sum(r[0] == e for r in running) < parallel:
            j, seed = queued[e].pop(0)
            steps = _descent(evs[e], seed, 20)
            try:
                running.append((e, j, steps, next(steps)))
            except StopIteration as stop:
                ends[e][j] = stop.value

    for e in range(len(evs)):
        start(e)
    while running:
        asked: dict[tuple[int, bytes], Result] = {}
        for e, _, _, current in running:
            asked.setdefault((e, current.structure.key()), current)
        answers = best_many(
            [
                (evs[e], _full_neighbours(current.structure, evs[e].cluster), current.value)
                for (e, _), current in asked.items()
            ]
        )
        found = dict(zip(asked, answers, strict=True))
        before, running = running, []
        for e, j, steps, current in before:
            try:
                running.append((e, j, steps, steps.send(found[(e, current.structure.key())])))
            except StopIteration as stop:
                ends[e][j] = stop.value
        for e in range(len(evs)):
            start(e)
    return [
        _ranked([end[j] for j in sorted(end)], s, keep) for end, s in zip(ends, starts, strict=True)
    ]
