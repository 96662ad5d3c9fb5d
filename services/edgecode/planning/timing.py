"""Round time of a plan: exact expectation by numerical integration, Monte Carlo, and sampling.

The model
---------
A selected worker w holds ``l_w`` of the ``K`` partitions, ``f_w = l_w / K``. Its compute time is

    T_w = f_w (shift_w + X_w) M_w,    X_w ~ Exponential(rate_w),

independent across workers, with the straggling multiplier ``M_w = slow_factor_w`` with
probability ``pi_w`` (the per-round marginal of its Bernoulli / Markov model,
:func:`edgecode.stragglers.straggle_probability`) and 1 otherwise (``pi_w = 0`` for the plain
shifted exponential). Its message reaches its collector at ``A_w = T_w + link_w``.

Every scheme is a two-level "first k of n" rule over *groups* (:class:`RoundStructure`):

- ``"hgc"``: a group per selected edge i; it is done at the ``(m_i - s_worker_i)``-th arrival
  among its ``m_i`` selected workers and its result reaches the master ``link_i`` later; the round
  ends at the ``(n - s_edge)``-th of these edge arrivals.
- ``"flat"``, ``"uncoded"``, ``"ignore"``: one group ("master") holding every selected worker,
  whose message is forwarded by its edge: ``A_w = T_w + link_w + link_edge(w)``; the round ends
  at the ``(N - s_edge)``-th arrival (``s_edge = 0`` for uncoded).

Exact expectation
-----------------
With ``b_wc = link_w + f_w M_c shift_w`` and ``lambda_wc = rate_w / (f_w M_c)`` (components
``c``: ``M = 1`` with weight ``1 - pi_w``, ``M = slow_factor_w`` with weight ``pi_w``), a worker
has arrived by time x (measured at its collector) with probability

    F_w(x) = sum_c weight_c (1 - exp(-lambda_wc (x - b_wc))_+).

Group j (collector link ``L_j``, needs ``k_j`` arrivals among its workers) has delivered by the
master's time t with probability ``G_j(t) = P(at least k_j of its workers have F_w(t - L_j))``, a
Poisson-binomial tail over independent non-identical workers, computed by the recursion over
workers on the distribution of the number of arrivals (or of misses, whichever needs fewer
states), truncated at the threshold. The round ends by t with probability ``P(at least k of the
groups have delivered)``, the same recursion over the ``G_j``. Then

    E[T] = integral_0^inf P(T > t) dt = t_lo + integral_{t_lo}^{t_hi} P(T > t) dt,

where ``P(T > t) = 1`` below ``t_lo`` (the order statistic of the arrivals' earliest times) and
``t_hi`` is chosen by the union bound ``P(T > t) <= sum_wc weight_c exp(-lambda_wc (t - B_wc))``
(``B_wc`` = master-level breakpoint) so that the neglected tail is below the tolerance. The
integrand is smooth between the breakpoints ``B_wc`` (the kinks of the shifted exponentials), so
the integral is taken by Gauss-Legendre panels on the intervals between consecutive breakpoints,
bisected adaptively until the estimated error (whole panel vs its two halves) is below
``rtol * (lower bound of E[T])``. With the default ``rtol = 1e-10`` the result agrees with an
independent ``scipy.integrate.quad`` evaluation to ~1e-10 relative (see tests/unit/test_timing.py).

For the simulator
-----------------
:func:`round_structure` flattens a plan into the rule above; :func:`round_times` applies it to any
compute times (e.g. from :func:`edgecode.stragglers.sample_compute_times` or a discrete-event
simulation), and :func:`simulate_round_times` does both for consecutive rounds with each worker's
own model (Markov classes persist). :func:`round_time_cdf` gives the exact distribution to plot
against simulated histograms.

Example
-------
>>> from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec
>>> from edgecode.planning.plans import build_plan
>>> spec = ClusterSpec(edges=(EdgeSpec("e", (WorkerSpec("a", 0.0, 1.0), WorkerSpec("b", 0.0, 2.0))),))
>>> plan = build_plan(spec, "uncoded", 2, 0, [0], [2], [[1, 1]])
>>> # E[max] of Exp(2) and Exp(4) (each holds half the data): 1/2 + 1/4 - 1/6
>>> abs(expected_round_time(spec, plan) - (0.5 + 0.25 - 1 / 6)) < 1e-9
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgecode.planning._tails import slot_tails
from edgecode.planning.plans import check_plan
from edgecode.planning.spec import ClusterSpec, Plan
from edgecode.stragglers import sample_compute_times, straggle_probability

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

#: Gauss-Legendre order of one integration panel.
_ORDER = 8
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(_ORDER)
#: Cap on (groups x slots x components x points) evaluated at once, to bound memory.
_CHUNK_ELEMENTS = 2_000_000


# --------------------------------------------------------------------------------------------
# structure of a round
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundStructure:
    """The "first k of n, twice" rule of a plan, flattened for computation (selected workers only).

    Worker arrays have one entry per selected worker (spec order); group arrays one per group.
    A worker's compute seconds are ``fractions * (shifts + X) * M`` (see the module docstring);
    its message reaches its group's collector ``worker_links`` later; group ``j`` is done at the
    ``group_need[j]``-th arrival and delivers ``group_links[j]`` later; the round ends at the
    ``need``-th delivery. For one-layer schemes there is one group, ``"master"``, with link 0,
    and ``worker_links`` includes the forwarding edge's link.
    """

    scheme: str
    worker_names: tuple[str, ...]
    group_names: tuple[str, ...]
    group: IntArray
    fractions: FloatArray
    shifts: FloatArray
    rates: FloatArray
    worker_links: FloatArray
    straggle_probabilities: FloatArray
    slow_factors: FloatArray
    group_need: IntArray
    group_links: FloatArray
    need: int

    @property
    def n_workers(self) -> int:
        return len(self.worker_names)

    @property
    def n_groups(self) -> int:
        return len(self.group_names)


def round_structure(spec: ClusterSpec, plan: Plan) -> RoundStructure:
    """The :class:`RoundStructure` of ``plan`` on ``spec`` (the plan is checked first).

    Timing parameters (shift, rate, links, straggling) come from ``spec``; the plan contributes
    the selection, the loads ``l_w / K`` and the tolerances.
    """
    check_plan(plan, spec)
    K = plan.partitions
    names: list[str] = []
    group: list[int] = []
    rows: list[tuple[float, float, float, float, float, float]] = []
    group_names: list[str] = []
    group_need: list[int] = []
    group_links: list[float] = []
    hierarchical = plan.scheme == "hgc"
    for edge_plan, edge_spec in zip(plan.edges, spec.edges, strict=True):
        members = [
            (wp, ws)
            for wp, ws in zip(edge_plan.workers, edge_spec.workers, strict=True)
            if wp.selected
        ]
        if not members:
            continue
        if hierarchical:
            group_names.append(edge_spec.name)
            group_need.append(len(members) - edge_plan.s_worker)
            group_links.append(edge_spec.link_seconds)
        forward = 0.0 if hierarchical else edge_spec.link_seconds
        for wp, ws in members:
            names.append(ws.name)
            group.append(len(group_names) - 1 if hierarchical else 0)
            rows.append(
                (
                    wp.partitions / K,
                    ws.shift,
                    ws.rate,
                    ws.link_seconds + forward,
                    straggle_probability(ws),
                    ws.slow_factor,
                )
            )
    if hierarchical:
        need = len(group_names) - plan.s_edge
    else:
        group_names, group_links = ["master"], [0.0]
        group_need, need = [len(names) - plan.s_edge], 1
    table = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return RoundStructure(
        scheme=plan.scheme,
        worker_names=tuple(names),
        group_names=tuple(group_names),
        group=np.array(group, dtype=np.int64),
        fractions=table[:, 0].copy(),
        shifts=table[:, 1].copy(),
        rates=table[:, 2].copy(),
        worker_links=table[:, 3].copy(),
        straggle_probabilities=table[:, 4].copy(),
        slow_factors=table[:, 5].copy(),
        group_need=np.array(group_need, dtype=np.int64),
        group_links=np.array(group_links, dtype=np.float64),
        need=int(need),
    )


def round_times(structure: RoundStructure, compute_times: ArrayLike) -> FloatArray:
    """Round end times for given compute seconds, shape ``(..., n_workers) -> (...)``.

    ``compute_times[..., w]`` is worker w's compute time (already scaled by its load, from any
    straggler model, e.g. :func:`edgecode.stragglers.sample_compute_times`); the rule of
    ``structure`` is applied exactly: arrivals ``compute + worker_links``, each group done at its
    ``group_need``-th arrival, delivered ``group_links`` later, round at the ``need``-th delivery.
    """
    times = np.asarray(compute_times, dtype=np.float64)
    if times.shape[-1:] != (structure.n_workers,):
        raise ValueError(
            f"compute_times must have last axis {structure.n_workers}, got shape {times.shape}"
        )
    arrivals = times + structure.worker_links
    deliveries = np.empty((*times.shape[:-1], structure.n_groups), dtype=np.float64)
    for j in range(structure.n_groups):
        members = arrivals[..., structure.group == j]
        k = int(structure.group_need[j])
        done = np.partition(members, k - 1, axis=-1)[..., k - 1]
        deliveries[..., j] = done + structure.group_links[j]
    need = structure.need
    return np.asarray(np.partition(deliveries, need - 1, axis=-1)[..., need - 1])


# --------------------------------------------------------------------------------------------
# padded arrays and the survival function
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _GroupModel:
    """Padded per-group arrays of a round: groups x slots x mixture components."""

    offsets: FloatArray  # (g, m, C) b = link_w + f M_c shift_w (collector time)
    rates: FloatArray  # (g, m, C) lambda = rate / (f M_c)
    weights: FloatArray  # (g, m, C) mixture weights, 0 on padding
    mask: BoolArray  # (g, m) real worker slots
    need: IntArray  # (g,) arrivals each group waits for
    links: FloatArray  # (g,) collector -> master delay
    top_need: int


def _model_from_arrays(
    fractions: FloatArray,
    shifts: FloatArray,
    rates: FloatArray,
    worker_links: FloatArray,
    straggle: FloatArray,
    slow: FloatArray,
    mask: BoolArray,
    need: IntArray,
    links: FloatArray,
    top_need: int,
) -> _GroupModel:
    """Build the padded model; worker arrays have shape (g, m) (values ignored where ~mask)."""
    f = np.where(mask, fractions, 1.0)
    mixed = bool(np.any(mask & (straggle > 0) & (slow != 1.0)))
    if mixed:
        multiplier = np.stack([np.ones_like(slow), np.where(mask, slow, 1.0)], axis=-1)
        weights = np.stack([1.0 - straggle, straggle], axis=-1)
    else:
        multiplier = np.ones((*f.shape, 1))
        weights = np.ones((*f.shape, 1))
    weights = np.where(mask[..., None], weights, 0.0)
    offsets = worker_links[..., None] + f[..., None] * multiplier * shifts[..., None]
    lam = rates[..., None] / (f[..., None] * multiplier)
    return _GroupModel(
        offsets=np.where(mask[..., None], offsets, 0.0),
        rates=np.where(mask[..., None], lam, 1.0),
        weights=weights,
        mask=mask,
        need=need.astype(np.int64),
        links=links.astype(np.float64),
        top_need=int(top_need),
    )


def _group_model(structure: RoundStructure) -> _GroupModel:
    g = structure.n_groups
    counts = np.bincount(structure.group, minlength=g)
    m = int(counts.max())
    slot = np.zeros(structure.n_workers, dtype=np.int64)
    seen = np.zeros(g, dtype=np.int64)
    for w, j in enumerate(structure.group):
        slot[w] = seen[j]
        seen[j] += 1
    mask = np.zeros((g, m), dtype=bool)
    mask[structure.group, slot] = True

    def pad(values: FloatArray) -> FloatArray:
        out = np.zeros((g, m), dtype=np.float64)
        out[structure.group, slot] = values
        return out

    return _model_from_arrays(
        pad(structure.fractions),
        pad(structure.shifts),
        pad(structure.rates),
        pad(structure.worker_links),
        pad(structure.straggle_probabilities),
        pad(structure.slow_factors),
        mask,
        structure.group_need,
        structure.group_links,
        structure.need,
    )


def _count_tail(
    p: FloatArray, q: FloatArray, mask: BoolArray, need: IntArray, slots_first: bool = False
) -> tuple[FloatArray, FloatArray]:
    """For each group (axis 0): P(at least need of its items happen) and its complement.

    ``p, q`` (g, m, T) are each item's probability of happening and of not happening (computed
    separately, so no ``1 - p`` cancellation); ``mask`` (g, m) marks real items. The recursion
    over items tracks the distribution of the number of successes (when ``need <= m - need + 1``)
    or of failures otherwise, truncated at the threshold: O(m min(need, m - need + 1)) per point.
    Both returned tails are sums of non-negative terms. ``slots_first``: ``p, q`` are given as
    (m, g, T) (the recursion's order; no transposed copies).
    """
    if slots_first:
        m_max, g, T = p.shape
        group_axis: tuple[slice | None, ...] = (None, slice(None), None)
        item_mask = mask.T[..., None]
    else:
        g, m_max, T = p.shape
        group_axis = (slice(None), None, None)
        item_mask = mask[..., None]
    sizes = mask.sum(axis=1)
    need = np.asarray(need)
    by_success = need <= sizes - need + 1
    cap = np.where(by_success, need, sizes - need + 1)
    C = int(cap.max())
    if by_success.all():
        count, other = p, q
    elif not by_success.any():
        count, other = q, p
    else:
        pick = by_success[group_axis]
        count, other = np.where(pick, p, q), np.where(pick, q, p)
    if not mask.all():
        count = np.where(item_mask, count, 0.0)
        other = np.where(item_mask, other, 1.0)
    if not slots_first:
        count = np.ascontiguousarray(count.transpose(1, 0, 2))
        other = np.ascontiguousarray(other.transpose(1, 0, 2))
    dist = np.zeros((C + 1, g, T))
    dist[0] = 1.0
    # in place (the same bits as dist[1:C] = dist[1:C] * o + dist[:C-1] * c: float addition
    # commutes exactly), saving the temporaries of the (C + 1, g, T) state
    for j in range(m_max):
        c = count[j]
        o = other[j]
        absorbed = dist[C - 1] * c
        absorbed += dist[C]
        if C > 1:
            moved = dist[0 : C - 1] * c
            dist[1:C] *= o
            dist[1:C] += moved
        dist[0] *= o
        dist[C] = absorbed
    if bool((cap == C).all()):
        reached = dist[C]
        short = dist[:C].sum(axis=0)
    else:
        under = (np.arange(C + 1)[:, None] < cap[None, :]).astype(np.float64)  # (C + 1, g)
        short = np.einsum("jg,jgt->gt", under, dist)
        reached = np.einsum("jg,jgt->gt", 1.0 - under, dist)
    success = by_success[:, None]
    return np.where(success, reached, short), np.where(success, short, reached)


def _arrival_probabilities(model: _GroupModel, t: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(P(arrived), P(not arrived)) of every worker slot by master time t: (g, m, T)."""
    x = t[None, None, None, :] - model.links[:, None, None, None]
    delay = np.maximum(x - model.offsets[..., None], 0.0) * model.rates[..., None]
    w = model.weights[..., None]
    return np.sum(w * -np.expm1(-delay), axis=2), np.sum(w * np.exp(-delay), axis=2)


def _deliveries(model: _GroupModel, t: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(P(group delivered by t), complement) for every group: (g, T).

    The arrival probabilities of :func:`_arrival_probabilities` (by :func:`~edgecode.planning._tails.slot_tails`), laid
    out slots first (m, g, T) for the count recursion."""
    x = t[None, None, :] - model.links[None, :, None]  # (1, g, T)
    q, p = slot_tails(x, model.offsets[None], model.rates[None], model.weights[None])
    return _count_tail(p[:, 0], q[:, 0], model.mask, model.need, slots_first=True)


def _round_tails(model: _GroupModel, t: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(P(T <= t), P(T > t)) for a 1-D array of master times ``t``, each computed directly."""
    g, m, C = model.offsets.shape
    done = np.empty(t.size)
    left = np.empty(t.size)
    step = max(64, _CHUNK_ELEMENTS // max(1, g * m * C))
    for start in range(0, t.size, step):
        chunk = t[start : start + step]
        group_ge, group_lt = _deliveries(model, chunk)
        top_mask = np.ones((1, g), dtype=bool)
        top_ge, top_lt = _count_tail(
            group_ge[None], group_lt[None], top_mask, np.array([model.top_need])
        )
        done[start : start + step] = top_ge[0]
        left[start : start + step] = top_lt[0]
    return done, left


def _survival(model: _GroupModel, t: FloatArray) -> FloatArray:
    """P(T > t) for a 1-D array of master times ``t``."""
    return _round_tails(model, t)[1]


def _bounds(model: _GroupModel) -> tuple[float, float, FloatArray, FloatArray, FloatArray]:
    """(t_lo, lower bound of E[T], breakpoints B, their rates, their weights) at master level."""
    present = model.weights > 0
    master = model.offsets + model.links[:, None, None]
    earliest = np.where(present, master, np.inf).min(axis=2)  # (g, m)
    earliest = np.where(model.mask, earliest, np.inf)
    ordered = np.sort(earliest, axis=1)
    group_lo = ordered[np.arange(ordered.shape[0]), model.need - 1]
    t_lo = float(np.sort(group_lo)[model.top_need - 1])
    fastest = np.where(present, model.rates, 0.0).max(axis=2)
    mean_lo = max(t_lo, float(earliest.min()) + 1.0 / float(fastest[model.mask].sum()))
    return t_lo, mean_lo, master[present], model.rates[present], model.weights[present]


def _integrate(
    func: Callable[[FloatArray], FloatArray],
    boundaries: FloatArray,
    atol: float,
    max_passes: int = 60,
) -> tuple[float, FloatArray, FloatArray]:
    """Integral of ``func`` over [boundaries[0], boundaries[-1]] by adaptive Gauss-Legendre panels.

    Each panel's value is compared with the sum over its two halves; a panel is accepted (with
    the halves' value) when the difference is below ``atol`` times its share of the total length,
    otherwise it is replaced by its halves. The sum of the accepted differences, an overestimate
    of the error, is thus below ``atol``. Returns the integral and the quadrature rule it used
    (nodes, weights), so that other integrands can reuse the same nodes.
    """
    a = boundaries[:-1]
    b = boundaries[1:]
    keep = b > a
    a, b = a[keep], b[keep]
    if a.size == 0:
        return 0.0, np.zeros(0), np.zeros(0)
    density = atol / float(b[-1] - a[0])

    def panels(lo: FloatArray, hi: FloatArray) -> FloatArray:
        half = 0.5 * (hi - lo)
        nodes = (0.5 * (hi + lo))[:, None] + half[:, None] * _GL_NODES
        values = func(nodes.ravel()).reshape(nodes.shape)
        return np.asarray(half * (values @ _GL_WEIGHTS))

    whole = panels(a, b)
    total = 0.0
    accepted_lo: list[FloatArray] = []
    accepted_hi: list[FloatArray] = []
    for _ in range(max_passes):
        mid = 0.5 * (a + b)
        halves = panels(np.concatenate([a, mid]), np.concatenate([mid, b]))
        left, right = halves[: a.size], halves[a.size :]
        refined = left + right
        done = np.abs(whole - refined) <= density * (b - a)
        total += float(refined[done].sum())
        accepted_lo += [a[done], mid[done]]
        accepted_hi += [mid[done], b[done]]
        if done.all():
            break
        a, b, mid = a[~done], b[~done], mid[~done]
        whole = np.concatenate([left[~done], right[~done]])
        a, b = np.concatenate([a, mid]), np.concatenate([mid, b])
    else:
        total += float(whole.sum())
        accepted_lo.append(a)
        accepted_hi.append(b)
    lo = np.concatenate(accepted_lo)
    hi = np.concatenate(accepted_hi)
    half = 0.5 * (hi - lo)
    nodes = (0.5 * (hi + lo))[:, None] + half[:, None] * _GL_NODES
    weights = half[:, None] * _GL_WEIGHTS
    return total, nodes.ravel(), weights.ravel()


def _boundaries(
    model: _GroupModel, rtol: float, max_breaks: int | None
) -> tuple[float, float, FloatArray]:
    """(t_lo, absolute tolerance, panel boundaries from t_lo to t_hi) for a model."""
    t_lo, mean_lo, breaks, rates, weights = _bounds(model)
    atol = rtol * mean_lo
    count = breaks.size
    # Tail: sum_c w exp(-lambda (t - B)) / lambda <= atol / 4 for t >= t_hi.
    room = np.log(np.maximum(4.0 * count * weights / (rates * atol), 1.0)) / rates
    t_hi = max(float(np.max(breaks + room)), t_lo)
    inner = np.unique(breaks[(breaks > t_lo) & (breaks < t_hi)])
    if max_breaks is not None and inner.size > max_breaks:
        inner = inner[np.linspace(0, inner.size - 1, max_breaks).round().astype(np.int64)]
    last = max(t_lo, float(inner[-1]) if inner.size else t_lo)
    tail = last + (t_hi - last) * np.exp2(-2.0 * np.arange(7, 0, -1, dtype=np.float64))
    return t_lo, atol, np.unique(np.concatenate([[t_lo], inner, tail, [t_hi]]))


def _fixed_rule(model: _GroupModel, max_breaks: int) -> tuple[float, FloatArray, FloatArray]:
    """(t_lo, nodes, weights): one Gauss-Legendre panel per interval between (at most
    ``max_breaks``) breakpoints and the geometric tail splits, without error control.

    Exact up to the GL error on each panel when no breakpoints were merged; used by the search
    to rank candidates (final plans are evaluated adaptively).
    """
    t_lo, _, boundaries = _boundaries(model, 1e-8, max_breaks)
    half = 0.5 * np.diff(boundaries)
    nodes = (0.5 * (boundaries[1:] + boundaries[:-1]))[:, None] + half[:, None] * _GL_NODES
    return t_lo, nodes.ravel(), (half[:, None] * _GL_WEIGHTS).ravel()


def _quick_expected_time(model: _GroupModel, max_breaks: int = 64) -> float:
    """E[T] on the fixed rule of :func:`_fixed_rule` (search accuracy, ~1e-6 relative)."""
    t_lo, nodes, weights = _fixed_rule(model, max_breaks)
    return t_lo + float(_survival(model, nodes) @ weights)


def _expected_time(model: _GroupModel, rtol: float = 1e-10, max_breaks: int | None = None) -> float:
    """E[T] for a padded model (see the module docstring)."""
    t_lo, atol, boundaries = _boundaries(model, rtol, max_breaks)
    integral, _, _ = _integrate(lambda t: _survival(model, t), boundaries, atol / 2)
    return t_lo + integral


# --------------------------------------------------------------------------------------------
# public evaluation
# --------------------------------------------------------------------------------------------


def expected_round_time(spec: ClusterSpec, plan: Plan, rtol: float = 1e-10) -> float:
    """Exact E[round time] of ``plan`` on ``spec`` (see the module docstring), in seconds.

    ``rtol`` bounds the integration error relative to a lower bound of the result. The straggling
    of Bernoulli / Markov workers enters through its per-round marginal (stationary class).
    """
    if not (0 < rtol < 1):
        raise ValueError(f"rtol must be in (0, 1), got {rtol!r}")
    return _expected_time(_group_model(round_structure(spec, plan)), rtol)


def round_time_cdf(spec: ClusterSpec, plan: Plan, t: ArrayLike) -> FloatArray:
    """P(round time <= t) of ``plan`` on ``spec``, exact, for an array of times ``t`` (seconds)."""
    times = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(times)):
        raise ValueError("t must be finite")
    done, _ = _round_tails(_group_model(round_structure(spec, plan)), times.ravel())
    return np.clip(done, 0.0, 1.0).reshape(times.shape)


@dataclass(frozen=True)
class MonteCarloEstimate:
    """Sample mean of the round time, its standard error, and the number of samples."""

    mean: float
    stderr: float
    samples: int


def simulate_round_times(
    spec: ClusterSpec,
    plan: Plan,
    rounds: int,
    rng: np.random.Generator,
    stationary: bool = False,
) -> FloatArray:
    """Round times of ``rounds`` CONSECUTIVE rounds with every worker's own straggler model.

    Unlike :func:`sample_round_times` (independent rounds from the per-round marginal), Markov
    workers keep their class across rounds (starting in their spec class, or in a stationary
    draw with ``stationary``), via :func:`edgecode.stragglers.sample_compute_times`; the round
    rule is :func:`round_times`. Shape ``(rounds,)``.
    """
    structure = round_structure(spec, plan)
    by_name = {w.name: w for e in spec.edges for w in e.workers}
    workers = [by_name[name] for name in structure.worker_names]
    compute = sample_compute_times(workers, structure.fractions, int(rounds), rng, stationary)
    return round_times(structure, compute)


def sample_round_times(
    spec: ClusterSpec, plan: Plan, samples: int, rng: np.random.Generator
) -> FloatArray:
    """``samples`` independent round times of ``plan`` (per-round marginal model of each worker)."""
    structure = round_structure(spec, plan)
    return _sample(structure, int(samples), rng)


def _sample(structure: RoundStructure, samples: int, rng: np.random.Generator) -> FloatArray:
    shape = (samples, structure.n_workers)
    compute = structure.fractions * (
        structure.shifts + rng.exponential(1.0, shape) / structure.rates
    )
    straggling = rng.random(shape) < structure.straggle_probabilities
    compute = np.where(straggling, compute * structure.slow_factors, compute)
    return round_times(structure, compute)


def monte_carlo_round_time(
    spec: ClusterSpec,
    plan: Plan,
    samples: int,
    rng: np.random.Generator,
    batch: int = 20_000,
) -> MonteCarloEstimate:
    """Monte Carlo estimate of E[round time]: mean and standard error over ``samples`` rounds.

    Rounds are independent draws from each worker's per-round marginal model (the quantity
    :func:`expected_round_time` computes exactly); drawn in batches of ``batch`` rounds.
    """
    if int(samples) != samples or samples < 2:
        raise ValueError(f"samples must be an integer >= 2, got {samples!r}")
    if int(batch) != batch or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    structure = round_structure(spec, plan)
    # Chan et al.'s pairwise update of the mean and the sum of squared deviations per batch.
    done = 0
    mean = 0.0
    squares = 0.0
    while done < samples:
        size = min(int(batch), int(samples) - done)
        values = _sample(structure, size, rng)
        batch_mean = float(values.mean())
        batch_squares = float(np.square(values - batch_mean).sum())
        delta = batch_mean - mean
        total = done + size
        mean += delta * size / total
        squares += batch_squares + delta * delta * done * size / total
        done = total
    variance = squares / (done - 1)
    return MonteCarloEstimate(mean=mean, stderr=float(np.sqrt(variance / done)), samples=done)
