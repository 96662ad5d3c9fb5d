r"""Planning a gossip job (pure): the graph and W, the data placement, each peer's assignment, and
the evaluator of the average model.

:func:`plan_gossip_job` turns a :class:`~edgecode.gossip_records.GossipJobSpec` and the
registered peers into a :class:`GossipPlan`:

1. the graph (a kind spec drawn with the job's seed, or the explicit edge list), refused unless
   connected, its Metropolis matrix W checked symmetric and doubly stochastic and its spectral
   gap ``1 - slem`` computed (:func:`edgecode.learning.gossip.build_topology`);
2. the data set (bundled or synthetic: the coordinator reads no file a request names), cut into
   K = N partitions (label-sorted for ``non_iid``) and placed by the scheme's stochastic code
   (partition j on peers j..j+d-1 mod N; d = 1 for the baselines);
3. per peer i its :class:`~edgecode.gossip_records.PeerAssignment`: its neighbours' names,
   addresses (from the membership) and weights W_il, W_ii, the coefficient c, the peer step
   ``eta = (lr / L) N / n_rows`` with L the smoothness of the mean loss, the compute deadline
   ``d * partition_deadline_seconds`` and the gossip deadline.

:class:`Evaluator` gives the mean loss at the average model and the relative optimality gap
``(F(x_bar) - F*) / (F(x_0) - F*)``; for least squares exactly as ``(x - x*)^T H (x - x*) / 2``
(no cancellation), for the other models from a known optimum when there is no L2 term.

Example
-------
>>> from edgecode.gossip_records import GossipJobSpec
>>> peers = [(f"peer-{i}", f"127.0.0.1:{5000 + i}") for i in range(4)]
>>> plan = plan_gossip_job(GossipJobSpec(job_id="j", graph="ring", replication=2), peers)
>>> plan.topology.graph.name, [len(a.partitions) for a in plan.assignments]
('ring', [2, 2, 2, 2])
>>> [n.address for n in plan.assignments[0].neighbours]
['127.0.0.1:5001', '127.0.0.1:5003']
>>> round(plan.evaluator.gap(plan.evaluator.initial), 12)
1.0
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from edgecode.errors import Infeasible, InvalidInput
from edgecode.gossip_records import (
    PEER_MODELS,
    GossipJobSpec,
    NeighbourLink,
    PeerAssignment,
    shown,
)
from edgecode.learning.datasets import DATASET_NAMES, Dataset, get_dataset
from edgecode.learning.gossip import (
    GossipScheme,
    Graph,
    Topology,
    build_topology,
    gossip_scheme,
    peer_step_size,
    place_partitions,
)
from edgecode.learning.models import Model, get_model, smoothness

FloatArray = NDArray[np.float64]
Data = tuple[tuple[Any, NDArray[Any]], ...]


def peer_index(name: str) -> int | None:
    """The index a peer's name ends in (``peer-3`` -> 3, ``peers-12`` -> 12), else None."""
    match = re.search(r"(\d+)$", name)
    return int(match.group(1)) if match else None


def order_peers(peers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Registered ``(name, address)`` pairs in index order (names without an index last)."""

    def key(peer: tuple[str, str]) -> tuple[int, int, str]:
        index = peer_index(peer[0])
        return (0, index, peer[0]) if index is not None else (1, 0, peer[0])

    return sorted(peers, key=key)


@dataclass(frozen=True, eq=False)
class Evaluator:
    """The loss and optimality gap of a point on the whole data set (summed loss F)."""

    model: Model
    X: Any
    y: NDArray[Any]
    initial: FloatArray
    #: least squares: F's Hessian and minimiser (exact gaps); else None
    hessian: FloatArray | None
    optimum: FloatArray | None
    initial_gap: float

    def loss(self, params: FloatArray) -> float:
        """The mean loss over the rows, F(x) / n."""
        return float(self.model.loss(params, self.X, self.y)) / int(self.X.shape[0])

    def _excess(self, params: FloatArray) -> float:
        if self.optimum is None:
            return math.nan
        if self.hessian is not None:
            delta = params - self.optimum
            return float(0.5 * delta @ self.hessian @ delta)
        return float(self.model.loss(params, self.X, self.y)) - float(
            self.model.loss(self.optimum, self.X, self.y)
        )

    def gap(self, params: FloatArray) -> float:
        """``(F(x) - F*) / (F(x_0) - F*)`` (NaN when F* is unknown)."""
        if not self.initial_gap > 0.0:
            return math.nan
        return self._excess(params) / self.initial_gap


def make_evaluator(model: Model, dataset: Dataset, l2: float, initial: FloatArray) -> Evaluator:
    X, y = dataset.X, dataset.y
    hessian = optimum = None
    if model.name == "least_squares":
        matrix: Any = X
        dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
        A = np.hstack([dense, np.ones((dense.shape[0], 1))])
        penalty = np.full(A.shape[1], float(l2))
        penalty[-1] = 0.0
        hessian = A.T @ A + np.diag(penalty)
        optimum = np.linalg.lstsq(hessian, A.T @ y, rcond=None)[0]
    elif l2 == 0.0 and dataset.optimum is not None and model.name == dataset.default_model:
        optimum = np.asarray(dataset.optimum, dtype=np.float64)
    evaluator = Evaluator(model, X, y, initial, hessian, optimum, math.nan)
    return Evaluator(model, X, y, initial, hessian, optimum, evaluator._excess(initial))


@dataclass(frozen=True, eq=False)
class GossipPlan:
    """A planned job: who takes part, the graph, the scheme, each peer's assignment and data."""

    spec: GossipJobSpec
    names: tuple[str, ...]
    #: the registered address of every peer, by graph index
    addresses: tuple[str, ...]
    topology: Topology
    scheme: GossipScheme
    assignments: tuple[PeerAssignment, ...]
    data: tuple[Data, ...]
    evaluator: Evaluator


def _graph(spec: GossipJobSpec, n: int, rng: np.random.Generator) -> Topology:
    if spec.graph:
        return build_topology(spec.graph, n, rng)
    edges = set()
    for i, j in spec.edges:
        if i == j or not (0 <= i < n and 0 <= j < n):
            raise InvalidInput(f"edge ({i}, {j}) is a self-loop or has a node outside [0, {n})")
        edges.add((min(i, j), max(i, j)))
    return build_topology(Graph(n_nodes=n, edges=tuple(sorted(edges)), name="edges"), n, rng)


def _dataset(spec: GossipJobSpec, rng: np.random.Generator) -> Dataset:
    if spec.dataset.partition(":")[0] not in DATASET_NAMES:
        raise InvalidInput(
            f"dataset must be one of {list(DATASET_NAMES)} (synthetic specs with options); the "
            f"coordinator reads no file a request names, got {shown(spec.dataset)}"
        )
    try:
        return get_dataset(spec.dataset, rng)
    except (ValueError, FileNotFoundError) as exc:
        raise InvalidInput(f"dataset: {exc}") from None


def plan_gossip_job(spec: GossipJobSpec, peers: Sequence[tuple[str, str]]) -> GossipPlan:
    """Plan ``spec`` on the registered ``peers`` (``(name, address)``, any order): the first
    ``spec.peers`` in index order take part (all of them for 0)."""
    spec = spec.validated()
    ordered = order_peers(peers)
    n = spec.peers or len(ordered)
    if n < 2 or len(ordered) < n:
        raise Infeasible(f"the job needs {max(n, 2)} peers, {len(ordered)} are registered")
    ordered = ordered[:n]
    rng = np.random.default_rng(spec.seed)
    topology = _graph(spec, n, rng)
    dataset = _dataset(spec, rng)
    model_name = spec.model or dataset.default_model
    if model_name not in PEER_MODELS:
        raise InvalidInput(f"model must be one of {list(PEER_MODELS)}, got {shown(model_name)}")
    model = get_model(model_name, l2=spec.l2)
    if dataset.n_rows < n:
        raise Infeasible(f"the data set has {dataset.n_rows} rows, fewer than {n} partitions")
    if spec.scheme == "goco" and spec.replication > n:
        raise InvalidInput(
            f"replication d must be at most the number of peers {n}, got {spec.replication}"
        )
    scheme = gossip_scheme(spec.scheme, n, spec.straggle_probability, spec.replication)
    placed = place_partitions(dataset, scheme.code, non_iid=spec.non_iid)
    n_params = model.n_params(dataset.n_features, dataset.n_classes)
    initial = np.zeros(n_params)
    eta = peer_step_size(spec.learning_rate / smoothness(model, dataset.X), n, dataset.n_rows)
    assignments = []
    for i in range(n):
        neighbours, weights, self_weight = topology.row(i)
        partitions = scheme.code.partitions_of_worker[i]
        assignments.append(
            PeerAssignment(
                job_id=spec.job_id,
                scheme=spec.scheme,
                peer=i,
                n_peers=n,
                neighbours=tuple(
                    NeighbourLink(j, ordered[j][0], ordered[j][1], w)
                    for j, w in zip(neighbours, weights, strict=True)
                ),
                self_weight=self_weight,
                model=model_name,
                n_features=dataset.n_features,
                n_classes=dataset.n_classes,
                l2=spec.l2,
                partitions=tuple(partitions),
                rows=tuple(int(X.shape[0]) for X, _ in placed[i]),
                n_partitions=scheme.code.n_partitions,
                coefficient=scheme.coefficient,
                step_initial=eta,
                step_decay_rounds=spec.decay_rounds or math.inf,
                rounds=spec.rounds,
                compute_deadline_seconds=len(partitions) * spec.partition_deadline_seconds,
                gossip_deadline_seconds=spec.gossip_deadline_seconds,
                wait_for_gradient=scheme.waits,
                report_params_every=spec.report_params_every,
                straggle=spec.straggle,
                compute_seconds=spec.compute_seconds,
                emulation_seed=spec.seed,
                initial_params=initial,
            ).validated()
        )
    return GossipPlan(
        spec=spec,
        names=tuple(name for name, _ in ordered),
        addresses=tuple(address for _, address in ordered),
        topology=topology,
        scheme=scheme,
        assignments=tuple(assignments),
        data=placed,
        evaluator=make_evaluator(model, dataset, spec.l2, initial),
    )


def remaining_components(graph: Graph, dead: Sequence[int]) -> list[list[int]]:
    """The connected components of ``graph`` without the ``dead`` nodes (sorted lists)."""
    from scipy.sparse.csgraph import connected_components

    alive = [i for i in range(graph.n_nodes) if i not in set(dead)]
    if not alive:
        return []
    adjacency = graph.adjacency()[alive][:, alive]
    count, labels = connected_components(adjacency, directed=False)
    groups: list[list[int]] = [[] for _ in range(int(count))]
    for node, label in zip(alive, labels, strict=True):
        groups[int(label)].append(node)
    return sorted(groups)


__all__ = [
    "Evaluator",
    "GossipPlan",
    "make_evaluator",
    "order_peers",
    "peer_index",
    "plan_gossip_job",
    "remaining_components",
]
