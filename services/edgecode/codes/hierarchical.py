"""Hierarchical gradient codes: master -> n edge nodes -> m_i workers per edge (paper 1).

A round: every worker sends ONE coded vector to its edge; edge i waits for any m_i - s_w of its
workers and decodes one vector; the master waits for any n - s_e edges and decodes the exact full
gradient sum_j g_j.

Load bound (Tang et al. 2024): every partition must survive s_e dead edges and s_w dead workers
in each surviving edge, so it needs (s_e + 1)(s_w + 1) copies and

    D / K >= (s_e + 1)(s_w + 1) / sum_i m_i.

Construction meeting it with equality (papers.md, section 1): the universal placement code twice.
Edge layer: each partition is held by s_e + 1 distinct edges, edge i covering
c_i = K (s_e + 1) m_i / sum(m) partitions (needs m_i / sum(m) <= 1 / (s_e + 1)); its coefficients
C (n x K) have targets 1. Inside edge i: each of its c_i partitions is held by s_w + 1 of its
workers, with targets C[i, j], so the edge's decoded vector is exactly ``C[i] @ g``. Every worker
then holds D = K (s_e + 1)(s_w + 1) / sum(m) partitions.

Unequal variants (for heterogeneous clusters): :func:`hierarchical_from_counts` takes any edge
coverage c_i (summing to K (s_e + 1), each <= K), any per-edge s_w and any per-worker loads l_w
(summing to c_i (s_w_i + 1) within edge i, each <= c_i); zero counts leave a node out.

Example
-------
>>> import numpy as np
>>> code = hierarchical([3, 3], s_edge=1, s_worker=1)
>>> code.n_partitions, code.load == code.load_bound
(3, True)
>>> g = np.random.default_rng(0).standard_normal((code.n_partitions, 4))
>>> messages = code.B @ g
>>> z0 = code.edge_decode_vector(0, [0, 2]) @ messages[0:3]
>>> bool(np.allclose(code.master_decode_vector([0]) @ np.stack([z0, z0]), g.sum(axis=0)))
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from edgecode.codes._linalg import (
    FloatArray,
    cyclic_fill,
    holders_of_items,
    max_load,
    normalize_alive,
    partitions_of_rows,
)
from edgecode.codes.flat import DEFAULT_DRAWS, GradientCode, placement_code
from edgecode.errors import Infeasible, NotDecodable


@dataclass(eq=False)
class HierarchicalCode:
    """A two-layer gradient code. Workers are numbered edge-major: edge 0's workers first."""

    workers_per_edge: tuple[int, ...]
    s_edge: int
    s_workers: tuple[int, ...]
    #: edge layer over the taking-part edges (targets 1)
    edge_code: GradientCode | None
    #: for each edge, its inner code over its taking-part workers (None when it takes no part)
    inner_codes: tuple[GradientCode | None, ...]
    #: indices of the taking-part edges, and per edge the local indices of its taking-part workers
    active_edges: tuple[int, ...]
    active_workers: tuple[tuple[int, ...], ...]
    B: FloatArray
    edge_of_worker: np.ndarray

    @property
    def n_edges(self) -> int:
        return len(self.workers_per_edge)

    @property
    def n_workers(self) -> int:
        return int(self.B.shape[0])

    @property
    def n_partitions(self) -> int:
        return int(self.B.shape[1])

    @property
    def s_worker(self) -> int:
        """The common s_w (the largest one when edges differ)."""
        return max(self.s_workers)

    @property
    def worker_offsets(self) -> tuple[int, ...]:
        """Global index of each edge's first worker."""
        return tuple(int(x) for x in np.concatenate([[0], np.cumsum(self.workers_per_edge)[:-1]]))

    @property
    def partitions_of_worker(self) -> tuple[tuple[int, ...], ...]:
        return partitions_of_rows(self.B)

    @property
    def load(self) -> float:
        """Largest fraction of the partitions held by one worker (D / K)."""
        return max_load(self.B)

    @property
    def load_bound(self) -> float:
        """Lower bound on D / K for these parameters (see :func:`hierarchical_load_bound`)."""
        return hierarchical_load_bound(self.workers_per_edge, self.s_edge, self.s_workers)

    def edge_decode_vector(self, edge: int, alive_workers: Iterable[int]) -> FloatArray:
        """Decoding vector (length m_edge) over edge ``edge``'s workers, given the LOCAL indices
        (0 .. m_edge - 1) of those that answered. ``vector @ messages_of_edge`` is the edge's
        coded vector ``C[edge] @ g``."""
        if not 0 <= edge < self.n_edges:
            raise ValueError(f"edge must be in [0, {self.n_edges}), got {edge}")
        inner = self.inner_codes[edge]
        if inner is None:
            raise NotDecodable(f"edge {edge} takes no part in this code")
        local = normalize_alive(alive_workers, self.workers_per_edge[edge], "alive_workers")
        position = {w: i for i, w in enumerate(self.active_workers[edge])}
        compact = inner.decode_vector([position[w] for w in local if w in position])
        vector = np.zeros(self.workers_per_edge[edge])
        vector[list(self.active_workers[edge])] = compact
        return vector

    def master_decode_vector(self, alive_edges: Iterable[int]) -> FloatArray:
        """Decoding vector (length n_edges) over the edges that answered; applied to the edges'
        decoded vectors it gives sum_j g_j exactly."""
        alive = normalize_alive(alive_edges, self.n_edges, "alive_edges")
        assert self.edge_code is not None
        position = {e: i for i, e in enumerate(self.active_edges)}
        compact = self.edge_code.decode_vector([position[e] for e in alive if e in position])
        vector = np.zeros(self.n_edges)
        vector[list(self.active_edges)] = compact
        return vector

    def decode_vector(self, alive_workers: Iterable[int]) -> FloatArray:
        """One vector over ALL workers (global indices) equivalent to decoding both layers:
        ``vector @ B == 1``. Edges with too few alive workers count as stragglers."""
        alive = set(normalize_alive(alive_workers, self.n_workers, "alive_workers"))
        offsets = self.worker_offsets
        vector = np.zeros(self.n_workers)
        edge_vectors: dict[int, FloatArray] = {}
        for edge in self.active_edges:
            local = [
                w - offsets[edge]
                for w in alive
                if offsets[edge] <= w < offsets[edge] + self.workers_per_edge[edge]
            ]
            try:
                edge_vectors[edge] = self.edge_decode_vector(edge, local)
            except NotDecodable:
                continue
        master = self.master_decode_vector(edge_vectors)
        for edge, inner in edge_vectors.items():
            start = offsets[edge]
            vector[start : start + len(inner)] = master[edge] * inner
        return vector

    def condition_numbers(self) -> dict[str, float]:
        """Worst-case condition numbers of the edge layer and of the worst inner code."""
        assert self.edge_code is not None
        inner = [c.condition_number() for c in self.inner_codes if c is not None]
        return {"edge": self.edge_code.condition_number(), "worker": float(np.max(inner))}


def hierarchical_load_bound(
    workers_per_edge: Sequence[int], s_edge: int, s_workers: int | Sequence[int]
) -> float:
    """Least possible D / K: (s_e + 1)(s_w + 1) / sum(m) for a common s_w.

    For per-edge s_w_i (or when an edge would exceed the 1 / (s_e + 1) share) it is the
    water-filling value min max_i c_i (s_w_i + 1) / (m_i K) over edge coverages with
    sum c_i = K (s_e + 1) and c_i <= K.
    """
    m = np.asarray(workers_per_edge, dtype=np.float64)
    s_w = np.broadcast_to(np.asarray(s_workers, dtype=np.float64), m.shape)
    capacity = np.sort(m / (s_w + 1.0))[::-1]  # coverage fraction per unit of load, largest first
    need = float(s_edge + 1)
    if need > len(capacity):
        raise Infeasible(f"s_edge + 1 = {s_edge + 1} copies need more than {len(capacity)} edges")
    # Smallest L with sum_i min(1, L capacity_i) >= s_e + 1: the t largest edges saturate, for
    # the first t with L_t capacity_t <= 1, L_t = (s_e + 1 - t) / sum_{i >= t} capacity_i.
    # (Failing at t - 1 means L_t capacity_{t-1} > 1, so the saturated ones stay saturated; at
    # L_t capacity_t = 1 exactly, t and t + 1 give the same level.) If the first n - 1 edges
    # all saturate, s_e + 1 = n and every edge holds everything: L = 1 / (smallest capacity).
    for t in range(len(capacity) - 1):
        load = (need - t) / capacity[t:].sum()
        if load * capacity[t] <= 1.0:
            return float(load)
    return float(1.0 / capacity[-1])


def hierarchical(
    workers_per_edge: Sequence[int],
    s_edge: int,
    s_worker: int | Sequence[int],
    n_partitions: int | None = None,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
) -> HierarchicalCode:
    """The hierarchical code meeting D / K = (s_e + 1)(s_w + 1) / sum(m) whenever it can.

    ``workers_per_edge`` lists m_i; ``s_worker`` is one s_w for every edge or one per edge.
    With ``n_partitions=None`` K is the smallest number of partitions for which every edge
    coverage c_i = K (s_e + 1) m_i / sum(m) and every worker load are whole numbers. With a
    given K that does not divide evenly, coverages and loads are rounded (largest remainder) and
    the achieved ``load`` is reported beside ``load_bound``.
    Raises :class:`~edgecode.errors.Infeasible` (a ``ValueError``) naming the failed condition.
    """
    m = _check_edges(workers_per_edge)
    s_w = _check_s_workers(s_worker, m)
    n = len(m)
    if not isinstance(s_edge, int | np.integer) or not 0 <= s_edge < n:
        raise Infeasible(f"s_edge must be in [0, n_edges - 1] = [0, {n - 1}], got {s_edge!r}")
    if n_partitions is None:
        n_partitions = smallest_partitions(m, s_edge, s_w)
    if not isinstance(n_partitions, int | np.integer) or n_partitions < 1:
        raise ValueError(f"n_partitions must be a positive integer, got {n_partitions!r}")
    coverage = _apportion(
        n_partitions * (s_edge + 1),
        [mi / (sw + 1) for mi, sw in zip(m, s_w, strict=True)],
        cap=n_partitions,
    )
    loads = [
        _apportion(c * (sw + 1), [1.0] * mi, cap=c) if c else [0] * mi
        for c, sw, mi in zip(coverage, s_w, m, strict=True)
    ]
    return hierarchical_from_counts(
        n_partitions, s_edge, coverage, s_w, loads, seed=seed, draws=draws
    )


def smallest_partitions(
    workers_per_edge: Sequence[int], s_edge: int, s_workers: Sequence[int]
) -> int:
    """Smallest K making every c_i = K (s_e + 1) m_i' / sum(m') and every worker load
    c_i (s_w_i + 1) / m_i integral, where m_i' = m_i / (s_w_i + 1) is edge i's capacity."""
    m = list(workers_per_edge)
    # Exact fractions: c_i / K = (s_e + 1) w_i / sum(w), w_i = m_i / (s_w_i + 1).
    weights = [Fraction(mi, sw + 1) for mi, sw in zip(m, s_workers, strict=True)]
    total = sum(weights)
    shares = [Fraction(s_edge + 1) * w / total for w in weights]
    if any(share > 1 for share in shares):
        edge = next(i for i, share in enumerate(shares) if share > 1)
        raise Infeasible(
            f"edge {edge} would have to cover {float(shares[edge]):.3f} of the data "
            f"(m_i / (s_w_i+1) over the sum must be <= 1 / (s_edge + 1) = {1 / (s_edge + 1):.3f}); "
            "lower s_edge or give this edge fewer workers, or pass n_partitions to round"
        )
    # Every worker's load D_i / K = (c_i / K)(s_w_i + 1) / m_i = (s_e + 1) / sum(w): one value.
    load = Fraction(s_edge + 1) / total
    return math.lcm(load.denominator, *(share.denominator for share in shares))


def hierarchical_from_counts(
    n_partitions: int,
    s_edge: int,
    edge_partitions: Sequence[int],
    s_workers: Sequence[int],
    worker_partitions: Sequence[Sequence[int]],
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
) -> HierarchicalCode:
    """The hierarchical code for given counts: edge i covers ``edge_partitions[i]`` partitions
    and its worker w holds ``worker_partitions[i][w]`` of them.

    Conditions (each checked, with a message naming it): the taking-part edges' coverages add up
    to K (s_e + 1), each at most K, and there are more than s_e of them; inside a taking-part
    edge the loads add up to c_i (s_w_i + 1), each at most c_i, with more than s_w_i taking-part
    workers. Zero counts leave an edge or a worker out.
    """
    K = int(n_partitions)
    coverage = [int(c) for c in edge_partitions]
    n = len(coverage)
    if len(s_workers) != n or len(worker_partitions) != n:
        raise ValueError("edge_partitions, s_workers and worker_partitions need one entry per edge")
    active_edges = tuple(i for i, c in enumerate(coverage) if c > 0)
    if len(active_edges) <= s_edge:
        raise Infeasible(
            f"{len(active_edges)} edges take part; s_edge = {s_edge} needs at least {s_edge + 1}"
        )
    if sum(coverage) != K * (s_edge + 1) or max(coverage) > K or min(coverage) < 0:
        raise Infeasible(
            f"edge coverages {coverage} must each be in [0, K={K}] and add up to "
            f"K (s_edge + 1) = {K * (s_edge + 1)}"
        )
    edge_items = cyclic_fill([coverage[i] for i in active_edges], K)
    edge_code = placement_code(
        holders_of_items(edge_items, K), len(active_edges), s_edge, seed=seed, draws=draws
    )
    workers_per_edge = tuple(len(loads) for loads in worker_partitions)
    B = np.zeros((sum(workers_per_edge), K))
    inner_codes: list[GradientCode | None] = [None] * n
    active_workers: list[tuple[int, ...]] = [()] * n
    offset = 0
    for i in range(n):
        loads = [int(x) for x in worker_partitions[i]]
        if i in active_edges:
            rank = active_edges.index(i)
            partitions = edge_items[rank]
            c, sw = coverage[i], int(s_workers[i])
            taking = tuple(w for w, load in enumerate(loads) if load > 0)
            if len(taking) <= sw:
                raise Infeasible(
                    f"edge {i}: {len(taking)} workers take part, s_worker = {sw} needs {sw + 1}"
                )
            if sum(loads) != c * (sw + 1) or max(loads) > c or min(loads) < 0:
                raise Infeasible(
                    f"edge {i}: worker loads {loads} must each be in [0, c_i={c}] and add up to "
                    f"c_i (s_worker + 1) = {c * (sw + 1)}"
                )
            local_items = cyclic_fill([loads[w] for w in taking], c)
            targets = edge_code.B[rank, partitions]
            inner = placement_code(
                holders_of_items(local_items, c),
                len(taking),
                sw,
                targets=targets,
                seed=seed,
                draws=draws,
            )
            for position, w in enumerate(taking):
                B[offset + w, partitions] = inner.B[position]
            inner_codes[i] = _embed_columns(inner, partitions, K)
            active_workers[i] = taking
        elif any(loads):
            raise Infeasible(f"edge {i} covers no partitions but its workers have loads {loads}")
        offset += len(loads)
    edge_of_worker = np.repeat(np.arange(n), workers_per_edge)
    return HierarchicalCode(
        workers_per_edge=workers_per_edge,
        s_edge=int(s_edge),
        s_workers=tuple(int(x) for x in s_workers),
        edge_code=edge_code,
        inner_codes=tuple(inner_codes),
        active_edges=active_edges,
        active_workers=tuple(active_workers),
        B=B,
        edge_of_worker=edge_of_worker,
    )


def _embed_columns(code: GradientCode, partitions: Sequence[int], K: int) -> GradientCode:
    """The same code with its columns placed at ``partitions`` among K."""
    B = np.zeros((code.n_workers, K))
    B[:, list(partitions)] = code.B
    targets = np.zeros(K)
    targets[list(partitions)] = code.targets
    holders = tuple(
        code.holders[list(partitions).index(j)] if j in partitions else () for j in range(K)
    )
    return GradientCode(
        B=B, stragglers=code.stragglers, holders=holders, name=code.name, targets=targets
    )


def _apportion(total: int, weights: Sequence[float], cap: int) -> list[int]:
    """Split ``total`` into integers proportional to ``weights``, each at most ``cap``
    (largest remainder; excess above the cap goes to the others)."""
    w = np.asarray(weights, dtype=np.float64)
    counts = np.zeros(len(w), dtype=np.int64)
    remaining = total
    while remaining > 0:
        free = counts < cap
        if not free.any():
            raise Infeasible(f"cannot place {total} copies with at most {cap} per node")
        share = remaining * w * free / (w * free).sum()
        base = np.minimum(np.floor(share).astype(np.int64), cap - counts)
        counts += base
        remaining -= int(base.sum())
        order = np.argsort(-(share - np.floor(share)), kind="stable")
        for i in order:
            if remaining == 0:
                break
            if counts[i] < cap:
                counts[i] += 1
                remaining -= 1
    return [int(c) for c in counts]


def _check_edges(workers_per_edge: Sequence[int]) -> list[int]:
    m = [int(x) for x in workers_per_edge]
    if not m or min(m) < 1 or any(float(x) != int(x) for x in workers_per_edge):
        raise ValueError(
            f"workers_per_edge must be positive integers, got {list(workers_per_edge)}"
        )
    return m


def _check_s_workers(s_worker: int | Sequence[int], m: list[int]) -> list[int]:
    values = (
        [int(s_worker)] * len(m)
        if isinstance(s_worker, int | np.integer)
        else [int(x) for x in s_worker]
    )
    if len(values) != len(m):
        raise ValueError(f"s_worker needs one value per edge ({len(m)}), got {len(values)}")
    for edge, (sw, mi) in enumerate(zip(values, m, strict=True)):
        if not 0 <= sw < mi:
            raise Infeasible(
                f"edge {edge}: s_worker must be in [0, m_i - 1] = [0, {mi - 1}], got {sw}"
            )
    return values
