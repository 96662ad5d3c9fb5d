r"""Gossip learning core: communication graphs, Metropolis mixing matrices and the GOCO step.

GOCO (Li and Skoglund, *Gradient Coding in Decentralized Learning for Evading Stragglers*, 2024)
runs N peers on a connected undirected graph. Every data partition j is held by d peers (the
stochastic gradient code of :mod:`edgecode.codes.stochastic`), and a round t at peer i is::

    g_i   = c * sum_{j in D_i} grad f_j(x_i)      if i computed in time, else 0
    x_i'  = x_i - eta_t g_i                         (local step)
    x_i  <- sum_{l in N_i + {i}} W_il x_l'          (gossip)

with c = 1 / (d (1 - p)) for GOCO, so that E[sum_i g_i] = sum_j grad f_j at a common point.
The baselines run in the same step: ``gossip`` (uncoded, d = 1, c = 1: a straggler skips its
step, the others step as usual) and ``gossip-wait`` (d = 1, c = 1, every peer waits for its own
gradient: nobody ever skips, rounds just take longer).

W is the Metropolis matrix of the graph, ``W_il = 1 / (1 + max(deg_i, deg_l))`` on every edge
and ``W_ii = 1 - sum_l W_il``: symmetric, doubly stochastic, with a positive diagonal, so on a
connected graph pure gossip ``X <- W X`` converges to the initial mean at the rate of the second
largest eigenvalue modulus ``slem = max(|lambda_2|, |lambda_N|) < 1``:
``||X_t - mean|| <= slem^t ||X_0 - mean||``. The spectral gap is ``1 - slem``.

Graph specs (:func:`parse_graph`): ``ring``, ``torus`` (or ``torus:rows=R``), ``er:p=0.3``
(Erdos-Renyi), ``geometric:r=0.4`` (random geometric graph in the unit square), ``complete``, or
the path of an edge-list file (one ``i j`` pair per line, ``#`` comments). A disconnected graph is
refused (:class:`edgecode.errors.Infeasible`).

Missing neighbours (:func:`mix_row`): when the value of neighbour l has not arrived by the
gossip deadline, its weight W_il moves onto the peer's own value, so the row still sums to 1.
When a link fails in both directions this is the Metropolis-style matrix of the graph without
that edge: still symmetric and doubly stochastic, so the peers' mean is preserved.

Example
-------
>>> import numpy as np
>>> topology = build_topology("ring", 6, np.random.default_rng(0))
>>> round(topology.slem, 6), bool(np.allclose(topology.dense().sum(axis=1), 1.0))
(0.666667, True)
>>> X = np.arange(6.0)[:, None]
>>> for _ in range(200):
...     X = topology.mix(X)
>>> bool(np.allclose(X, 2.5))
True
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from scipy.sparse.csgraph import connected_components

from edgecode.codes.stochastic import StochasticCode, stochastic
from edgecode.errors import Infeasible, InvalidInput
from edgecode.learning.datasets import Dataset, partition_bounds

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: Graph kinds :func:`parse_graph` builds (anything else is read as an edge-list file).
GRAPH_KINDS = ("ring", "torus", "er", "geometric", "complete")
#: Schemes run by the same gossip engine.
SCHEMES = ("goco", "gossip", "gossip-wait")
SchemeName = Literal["goco", "gossip", "gossip-wait"]
#: Tolerance of the symmetry / stochasticity checks of a mixing matrix.
MIXING_TOLERANCE = 1e-12
#: Up to this many nodes the spectrum is computed densely (exact); above, by ARPACK (sparse
#: matvecs: ~10 ms instead of ~1 s for 1,000 peers, agreeing to 1e-14 in the tests).
DENSE_SPECTRUM_LIMIT = 500


# --------------------------------------------------------------------------- graphs


@dataclass(frozen=True)
class Graph:
    """An undirected simple graph on nodes 0..n-1; ``edges`` are sorted pairs (i, j), i < j."""

    n_nodes: int
    edges: tuple[tuple[int, int], ...]
    name: str

    @cached_property
    def neighbours(self) -> tuple[tuple[int, ...], ...]:
        """Per node, its sorted neighbours."""
        lists: list[list[int]] = [[] for _ in range(self.n_nodes)]
        for i, j in self.edges:
            lists[i].append(j)
            lists[j].append(i)
        return tuple(tuple(sorted(items)) for items in lists)

    @cached_property
    def degrees(self) -> NDArray[np.int64]:
        return np.array([len(items) for items in self.neighbours], dtype=np.int64)

    def adjacency(self) -> Any:
        """The symmetric 0/1 adjacency matrix, scipy CSR (n, n)."""
        if not self.edges:
            return sp.csr_array((self.n_nodes, self.n_nodes))
        pairs = np.asarray(self.edges, dtype=np.int64)
        rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
        cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
        ones = np.ones(rows.size)
        return sp.csr_array((ones, (rows, cols)), shape=(self.n_nodes, self.n_nodes))

    @property
    def n_components(self) -> int:
        count, _ = connected_components(self.adjacency(), directed=False)
        return int(count)

    @property
    def is_connected(self) -> bool:
        return self.n_components == 1


def _graph(n: int, pairs: Any, name: str) -> Graph:
    """A Graph from (i, j) pairs: self-loops refused, duplicates and direction merged."""
    edges = set()
    for i, j in pairs:
        a, b = int(i), int(j)
        if a == b:
            raise InvalidInput(f"graph {name}: self-loop at node {a}")
        if not (0 <= a < n and 0 <= b < n):
            raise InvalidInput(f"graph {name}: edge ({a}, {b}) has a node outside [0, {n})")
        edges.add((min(a, b), max(a, b)))
    return Graph(n_nodes=n, edges=tuple(sorted(edges)), name=name)


def _check_nodes(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (number of peers), got {n!r}")
    return int(n)


def ring(n: int) -> Graph:
    """The cycle 0 - 1 - ... - (n-1) - 0 (a single edge for n = 2)."""
    n = _check_nodes(n)
    return _graph(n, ((i, (i + 1) % n) for i in range(n)), "ring")


def torus(n: int, rows: int | None = None) -> Graph:
    """A rows x cols 2-D torus (n = rows * cols), node r * cols + c linked to its 4 wrap-around
    neighbours (duplicates merged when a side is 2). Without ``rows`` the most square
    factorisation with both sides >= 2 is used; a prime n has none and is refused."""
    n = _check_nodes(n)
    if rows is None:
        sides = [r for r in range(2, math.isqrt(n) + 1) if n % r == 0]
        if not sides:
            raise Infeasible(f"torus: n = {n} has no factorisation rows * cols with both >= 2")
        rows = sides[-1]
    if isinstance(rows, bool) or not isinstance(rows, numbers.Integral) or rows < 2:
        raise ValueError(f"torus: rows must be an integer >= 2, got {rows!r}")
    if n % rows or n // rows < 2:
        raise Infeasible(f"torus: rows = {rows} must divide n = {n} with n / rows >= 2")
    cols = n // rows
    pairs = []
    for r in range(rows):
        for c in range(cols):
            node = r * cols + c
            pairs.append((node, r * cols + (c + 1) % cols))
            pairs.append((node, ((r + 1) % rows) * cols + c))
    return _graph(n, pairs, f"torus:rows={rows}")


def complete(n: int) -> Graph:
    """Every pair of nodes linked."""
    n = _check_nodes(n)
    return _graph(n, ((i, j) for i in range(n) for j in range(i + 1, n)), "complete")


def _check_fraction(value: float, name: str, *, upper: float = 1.0) -> float:
    number = float(value)
    if not (math.isfinite(number) and 0.0 < number <= upper):
        raise ValueError(f"{name} must be in (0, {upper:g}], got {value!r}")
    return number


def erdos_renyi(n: int, p: float, rng: np.random.Generator) -> Graph:
    """G(n, p): each of the n (n-1) / 2 pairs linked independently with probability p."""
    n = _check_nodes(n)
    p = _check_fraction(p, "er: p")
    i, j = np.triu_indices(n, k=1)
    keep = rng.random(i.size) < p
    return _graph(n, zip(i[keep], j[keep], strict=True), f"er:p={p:g}")


def geometric(n: int, radius: float, rng: np.random.Generator) -> Graph:
    """Random geometric graph: n points uniform in the unit square, linked when their Euclidean
    distance is at most ``radius``."""
    n = _check_nodes(n)
    radius = _check_fraction(radius, "geometric: r", upper=math.sqrt(2.0))
    points = rng.random((n, 2))
    i, j = np.triu_indices(n, k=1)
    keep = np.linalg.norm(points[i] - points[j], axis=1) <= radius
    return _graph(n, zip(i[keep], j[keep], strict=True), f"geometric:r={radius:g}")


def read_edge_list(path: str | Path, n: int) -> Graph:
    """A graph on n nodes from a text file of edges: one ``i j`` (or ``i,j``) pair per line,
    0-based node indices, ``#`` starts a comment, blank lines ignored."""
    n = _check_nodes(n)
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"graph: {str(path)!r} is neither a graph kind {GRAPH_KINDS} nor a file")
    pairs = []
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        items = re.split(r"[\s,]+", text)
        if len(items) != 2 or not all(re.fullmatch(r"\d+", item) for item in items):
            raise InvalidInput(f"graph file {file}: line {number} must be 'i j', got {line!r}")
        pairs.append((int(items[0]), int(items[1])))
    return _graph(n, pairs, f"file:{file.name}")


def _spec_options(spec: str, rest: str, allowed: tuple[str, ...]) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in allowed:
            raise ValueError(f"graph {spec!r}: bad option {item!r}, expected one of {allowed}")
        options[key.strip()] = value.strip()
    return options


def _number(spec: str, options: Mapping[str, str], key: str) -> float:
    if key not in options:
        raise ValueError(f"graph {spec!r}: needs {key}=VALUE")
    try:
        return float(options[key])
    except ValueError:
        raise ValueError(f"graph {spec!r}: {key} must be a number, got {options[key]!r}") from None


def parse_graph(spec: str, n: int, rng: np.random.Generator) -> Graph:
    """The graph a spec names: ``ring | torus[:rows=R] | er:p=P | geometric:r=R | complete`` or
    the path of an edge-list file. ``rng`` draws the random graphs.

    >>> parse_graph("torus", 12, np.random.default_rng(0)).name
    'torus:rows=3'
    """
    kind, _, rest = spec.strip().partition(":")
    if kind == "ring" and not rest:
        return ring(n)
    if kind == "complete" and not rest:
        return complete(n)
    if kind == "torus":
        rows = _spec_options(spec, rest, ("rows",)).get("rows")
        if rows is not None and not rows.isdigit():
            raise ValueError(f"graph {spec!r}: rows must be a positive integer, got {rows!r}")
        return torus(n, None if rows is None else int(rows))
    if kind == "er":
        return erdos_renyi(n, _number(spec, _spec_options(spec, rest, ("p",)), "p"), rng)
    if kind == "geometric":
        return geometric(n, _number(spec, _spec_options(spec, rest, ("r",)), "r"), rng)
    if kind in GRAPH_KINDS:
        raise ValueError(f"graph {spec!r}: {kind} takes no options")
    return read_edge_list(spec, n)


# --------------------------------------------------------------------------- mixing


def metropolis_weights(graph: Graph) -> Any:
    """The Metropolis mixing matrix of ``graph`` as scipy CSR (n, n).

    ``W_il = 1 / (1 + max(deg_i, deg_l))`` on every edge, ``W_ii = 1 - sum_{l != i} W_il``,
    0 elsewhere. Symmetric by construction; rows (hence columns) sum to 1; ``W_ii >= 1 /
    (1 + deg_i) > 0``.

    >>> metropolis_weights(ring(3)).toarray().round(3).tolist()
    [[0.333, 0.333, 0.333], [0.333, 0.333, 0.333], [0.333, 0.333, 0.333]]
    """
    n, degrees = graph.n_nodes, graph.degrees
    if graph.edges:
        pairs = np.asarray(graph.edges, dtype=np.int64)
        values = 1.0 / (1.0 + np.maximum(degrees[pairs[:, 0]], degrees[pairs[:, 1]]))
        off = sp.coo_array(
            (
                np.concatenate([values, values]),
                (
                    np.concatenate([pairs[:, 0], pairs[:, 1]]),
                    np.concatenate([pairs[:, 1], pairs[:, 0]]),
                ),
            ),
            shape=(n, n),
        ).tocsr()
    else:
        off = sp.csr_array((n, n))
    diagonal = 1.0 - np.asarray(off.sum(axis=1)).reshape(-1)
    return (off + sp.diags_array(diagonal)).tocsr()


def check_mixing_matrix(weights: Any, graph: Graph, tol: float = MIXING_TOLERANCE) -> None:
    """Raise ``Infeasible`` unless ``weights`` is a valid mixing matrix for ``graph``:
    shape (n, n), finite, non-negative, symmetric and with unit row and column sums to ``tol``,
    and zero off the graph's edges (a peer mixes only with its neighbours). Dense or sparse."""
    n = graph.n_nodes
    matrix = sp.csr_array(weights, dtype=np.float64)
    if matrix.shape != (n, n):
        raise Infeasible(f"weights must have shape ({n}, {n}), got {matrix.shape}")
    if not np.all(np.isfinite(matrix.data)) or np.any(matrix.data < 0.0):
        raise Infeasible("weights must be finite and non-negative")
    asymmetry = float(abs(matrix - matrix.T).max()) if matrix.nnz else 0.0
    if not asymmetry <= tol:
        raise Infeasible(f"weights must be symmetric to {tol:g}, max |W - W^T| = {asymmetry:.3g}")
    rows = float(np.max(np.abs(np.asarray(matrix.sum(axis=1)) - 1.0)))
    cols = float(np.max(np.abs(np.asarray(matrix.sum(axis=0)) - 1.0)))
    if not max(rows, cols) <= tol:
        raise Infeasible(
            f"weights must be doubly stochastic to {tol:g}: row error {rows:.3g}, column {cols:.3g}"
        )
    off = abs(matrix - sp.diags_array(matrix.diagonal()))
    outside = off - off.multiply(graph.adjacency())
    if outside.nnz and float(abs(outside).max()) > 0.0:
        raise Infeasible("weights must vanish between nodes that are not neighbours")


def second_largest_modulus(weights: Any, dense_limit: int = DENSE_SPECTRUM_LIMIT) -> float:
    """``max(|lambda_2|, |lambda_n|)`` of a symmetric stochastic matrix (1 = not mixing).

    Dense and exact up to ``dense_limit`` nodes; above, ARPACK on W minus the consensus
    projector (the largest-magnitude eigenvalue of ``W - 11^T / n``) from a fixed start, falling
    back to the dense computation if ARPACK does not converge.
    """
    n = int(weights.shape[0])
    if n > dense_limit:
        from scipy.sparse.linalg import ArpackNoConvergence

        try:
            return _arpack_modulus(weights, n)
        except ArpackNoConvergence:
            pass
    dense = weights.toarray() if sp.issparse(weights) else np.asarray(weights)
    eigenvalues = np.linalg.eigvalsh(dense)
    return float(max(abs(eigenvalues[0]), abs(eigenvalues[-2])))


def _arpack_modulus(weights: Any, n: int) -> float:
    from scipy.sparse.linalg import LinearOperator, eigsh

    def deflated(v: FloatArray) -> FloatArray:
        v = np.asarray(v).reshape(-1)
        return np.asarray(weights @ v - v.mean(), dtype=np.float64)

    operator = LinearOperator((n, n), matvec=deflated, dtype=np.float64)
    start = np.cos(np.arange(n, dtype=np.float64))
    top = eigsh(operator, k=1, which="LM", v0=start, return_eigenvectors=False, tol=1e-10)
    return float(abs(top[0]))


@dataclass(frozen=True, eq=False)
class Topology:
    """A connected graph with its checked Metropolis matrix and spectrum.

    ``weights`` is scipy CSR (n, n); ``slem`` the second largest eigenvalue modulus; pure gossip
    shrinks the distance to the mean by a factor ``slem`` per round (asymptotically).
    """

    graph: Graph
    weights: Any
    slem: float

    @property
    def n_peers(self) -> int:
        return self.graph.n_nodes

    @property
    def spectral_gap(self) -> float:
        return 1.0 - self.slem

    def dense(self) -> FloatArray:
        return np.asarray(self.weights.toarray(), dtype=np.float64)

    def mix(self, params: ArrayLike) -> FloatArray:
        """One gossip round ``W X`` for X of shape (n,) or (n, dim)."""
        return np.asarray(self.weights @ np.asarray(params, dtype=np.float64), dtype=np.float64)

    def row(self, peer: int) -> tuple[tuple[int, ...], tuple[float, ...], float]:
        """Peer i's neighbours, its weights W_il on them (same order), and W_ii."""
        neighbours = self.graph.neighbours[peer]
        start, stop = self.weights.indptr[peer], self.weights.indptr[peer + 1]
        columns = self.weights.indices[start:stop].tolist()
        row = dict(zip(columns, self.weights.data[start:stop].tolist(), strict=True))
        return neighbours, tuple(float(row[other]) for other in neighbours), float(row[peer])

    def predicted_rounds(self, reduction: float) -> float:
        """Rounds of pure gossip to shrink the distance to the mean by ``reduction`` (< 1),
        ``log(reduction) / log(slem)`` (0 for a graph that mixes in one round)."""
        if self.slem <= MIXING_TOLERANCE:
            return 0.0
        return math.log(reduction) / math.log(self.slem)


def build_topology(graph: str | Graph, n: int, rng: np.random.Generator) -> Topology:
    """Build the graph (a spec for :func:`parse_graph` or a Graph), refuse it unless connected,
    build its Metropolis matrix, check it (:func:`check_mixing_matrix`) and its spectral gap.

    >>> round(build_topology("complete", 4, np.random.default_rng(0)).spectral_gap, 12)
    1.0
    """
    built = parse_graph(graph, n, rng) if isinstance(graph, str) else graph
    if built.n_nodes != n:
        raise ValueError(f"graph has {built.n_nodes} nodes, expected n = {n}")
    components = built.n_components
    if components != 1:
        raise Infeasible(
            f"graph {built.name} on {n} nodes is disconnected ({components} components); "
            "gossip cannot reach consensus"
        )
    weights = metropolis_weights(built)
    check_mixing_matrix(weights, built)
    slem = max(0.0, second_largest_modulus(weights))
    if slem >= 1.0 - MIXING_TOLERANCE:
        raise Infeasible(f"graph {built.name}: spectral gap {1.0 - slem:.3g} is not positive")
    return Topology(graph=built, weights=weights, slem=slem)


# --------------------------------------------------------------------------- the step


def mix_row(
    own: FloatArray,
    self_weight: float,
    neighbour_weights: Mapping[int, float],
    received: Mapping[int, FloatArray],
) -> FloatArray:
    """One peer's gossip average ``sum_l W_il x_l'`` with what arrived.

    ``own`` is x_i' (after the local step), ``neighbour_weights`` maps each neighbour l to W_il,
    ``received`` the neighbours whose x_l' arrived by the gossip deadline. The weight of every
    missing neighbour moves onto ``own``::

        x_i <- (W_ii + sum_{l missing} W_il) x_i' + sum_{l arrived} W_il x_l'

    >>> mix_row(np.zeros(1), 0.5, {1: 0.25, 2: 0.25}, {1: np.ones(1)}).tolist()
    [0.25]
    """
    missing = sum(w for other, w in neighbour_weights.items() if other not in received)
    mixed = (self_weight + missing) * own
    for other, value in received.items():
        mixed = mixed + neighbour_weights[other] * value
    return np.asarray(mixed, dtype=np.float64)


def goco_step(
    params: FloatArray,
    local_gradients: FloatArray,
    computed: BoolArray,
    coefficient: float,
    step_size: float,
    weights: Any,
) -> FloatArray:
    """One synchronous round on every peer at once (the simulator's step).

    ``params`` X (n, dim), ``local_gradients`` (n, dim) with row i = ``sum_{j in D_i} grad
    f_j(x_i)``, ``computed`` (n,) whether peer i's gradient made the deadline::

        X' = X - eta * c * diag(computed) G,      X <- W X'

    >>> goco_step(np.zeros((2, 1)), np.ones((2, 1)), np.array([True, False]), 2.0, 0.5,
    ...           np.full((2, 2), 0.5)).tolist()
    [[-0.5], [-0.5]]
    """
    scale = (step_size * coefficient) * computed.astype(np.float64)
    stepped = params - scale[:, None] * local_gradients
    return np.asarray(weights @ stepped, dtype=np.float64)


@dataclass(frozen=True)
class StepSchedule:
    """Step sizes ``eta_t = initial / (1 + t / decay_rounds)`` (constant for decay_rounds = inf).

    A decaying step (~ 1/t) is what drives the stochastic coded gradient and the non-iid drift
    to the exact optimum; a constant step stalls at a noise floor proportional to it.

    >>> StepSchedule(0.1, decay_rounds=10).at(10)
    0.05
    """

    initial: float
    decay_rounds: float = math.inf

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial) and self.initial >= 0.0):
            raise ValueError(f"initial step must be a finite number >= 0, got {self.initial!r}")
        if not (self.decay_rounds > 0.0):
            raise ValueError(f"decay_rounds must be > 0 (inf: constant), got {self.decay_rounds!r}")

    def at(self, round_: int) -> float:
        return self.initial / (1.0 + round_ / self.decay_rounds)


def peer_step_size(lr: float, n_peers: int, n_rows: int) -> float:
    """The peer step eta that moves the peers' MEAN by ``lr`` times the mean-loss gradient.

    The mean of the peers' steps is ``(eta / N) sum_i g_i ~ (eta / N) grad F`` with F the summed
    loss over all ``n_rows`` rows, i.e. ``lr * grad(F / n_rows)`` for ``eta = lr N / n_rows``.
    """
    return float(lr) * int(n_peers) / int(n_rows)


@dataclass(frozen=True)
class GossipScheme:
    """One of :data:`SCHEMES` at straggle probability ``p``: its placement code and weight.

    ``goco``: d holders per partition, coefficient 1 / (d (1 - p)), stragglers send 0.
    ``gossip``: d = 1, coefficient 1, a straggler skips its step (biased by (1 - p) overall).
    ``gossip-wait``: d = 1, coefficient 1, every peer waits for its gradient (never skips).
    """

    name: SchemeName
    replication: int
    straggle_probability: float
    code: StochasticCode = field(repr=False)

    @property
    def coefficient(self) -> float:
        return self.code.weight if self.name == "goco" else 1.0

    @property
    def waits(self) -> bool:
        """Whether a peer waits for its own gradient instead of skipping it at the deadline."""
        return self.name == "gossip-wait"


def gossip_scheme(name: str, n_peers: int, p: float, replication: int = 2) -> GossipScheme:
    """The scheme ``name`` on ``n_peers`` peers, K = n_peers partitions (partition j on peers
    j..j+d-1 mod n), straggle probability p; the baselines force d = 1.

    >>> gossip_scheme("goco", 4, 0.5).coefficient
    1.0
    """
    if name not in SCHEMES:
        raise ValueError(f"scheme must be one of {list(SCHEMES)}, got {name!r}")
    d = replication if name == "goco" else 1
    code = stochastic(n_peers, d, p)
    return GossipScheme(name, d, code.straggle_probability, code)  # type: ignore[arg-type]


def partition_order(dataset: Dataset, *, non_iid: bool) -> NDArray[np.int64]:
    """Row order before contiguous partitioning: as given (iid when the rows are exchangeable)
    or, for ``non_iid``, sorted by label (stable), so every partition covers a narrow label
    range and peers' data differ."""
    if not non_iid:
        return np.arange(dataset.n_rows, dtype=np.int64)
    return np.asarray(np.argsort(dataset.y, kind="stable"), dtype=np.int64)


def place_partitions(
    dataset: Dataset, code: StochasticCode, *, non_iid: bool
) -> tuple[tuple[tuple[Any, NDArray[Any]], ...], ...]:
    """Per peer, the (X_j, y_j) of the partitions it holds under ``code`` (K = code's
    n_partitions contiguous blocks of the rows in :func:`partition_order`)."""
    order = partition_order(dataset, non_iid=non_iid)
    blocks = [order[a:b] for a, b in partition_bounds(dataset.n_rows, code.n_partitions)]
    return tuple(
        tuple((dataset.X[blocks[j]], dataset.y[blocks[j]]) for j in partitions)
        for partitions in code.partitions_of_worker
    )


def consensus_distance(params: FloatArray) -> float:
    """``(1/N) sum_i ||x_i - x_bar||^2`` for params of shape (N, dim)."""
    centred = params - params.mean(axis=0)
    return float(np.sum(centred * centred) / params.shape[0])


__all__ = [
    "GRAPH_KINDS",
    "SCHEMES",
    "GossipScheme",
    "Graph",
    "StepSchedule",
    "Topology",
    "build_topology",
    "check_mixing_matrix",
    "complete",
    "consensus_distance",
    "erdos_renyi",
    "geometric",
    "goco_step",
    "gossip_scheme",
    "metropolis_weights",
    "mix_row",
    "parse_graph",
    "partition_order",
    "peer_step_size",
    "place_partitions",
    "read_edge_list",
    "ring",
    "second_largest_modulus",
    "torus",
]
