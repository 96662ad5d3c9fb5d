"""What a placement epoch sets up, as pure data: the code of a scheme on the alive topology,
who holds which partitions with which coefficients, what every edge is told, and the rule that
ends the master's rounds.

Schemes, all on the same code path (placement, edge fan-out, first-decodable-set, decode):

- ``hgc``: hierarchical code; edges decode (DECODE mode), the master waits for any decodable set
  of edges. s from the job, or the planner's plan when the job's s_edge is negative.
- ``flat``: cyclic repetition over all workers; edges forward (FORWARD mode), the master waits
  for any N - s workers.
- ``uncoded``: every partition on one worker, plain sums; the master waits for every edge's sum.
- ``ignore``: uncoded placement; the master takes the first N - s workers and rescales by
  N / (N - s): fast and biased (the baseline that is NOT exact).
- ``partial`` (paper 3): a partial-recovery design over all workers; each worker sends V plain
  sums in one answer; edges forward; the master ends the round at the first arrival set from
  which at least ceil(alpha K) partitions are recovered, each with coefficient exactly 1.
- ``approx`` / ``approx-shuffle`` (paper 2): fractional or cyclic repetition over all workers;
  edges forward; the master waits for ``wait`` answers (or the deadline) and takes the optimal
  least-squares combination of what arrived (exact whenever that set is decodable).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

from edgecode.codes.approximate import LeastSquaresDecoder
from edgecode.codes.combine import Decoded, Rule
from edgecode.codes.flat import (
    GradientCode,
    cyclic_repetition,
    fractional_repetition,
    placement_code,
)
from edgecode.codes.hierarchical import HierarchicalCode, hierarchical, hierarchical_from_counts
from edgecode.codes.partial import partial_load_lower_bound
from edgecode.codes.partial_rule import PartialDecoder
from edgecode.codes.partial_schemes import design_label, partial_scheme, worker_encoding
from edgecode.errors import Infeasible, RoundFailed
from edgecode.master.ports import EdgeAssignment, Node, Topology
from edgecode.planning.partial import choose_partial_design
from edgecode.planning.shuffle import Assignment
from edgecode.planning.spec import ClusterSpec, EdgeSpec, Plan, WorkerSpec
from edgecode.records import JobConfig, Timing
from edgecode.rules import ExactRule, FastestRule, all_of
from edgecode.verification import VerifyingRule

DECODE, FORWARD = "decode", "forward"
#: A partition counts as used in a round when its weight in the result exceeds this.
USED_WEIGHT = 1e-6
#: s_edge and s_worker of a planner job when no plan is available.
FALLBACK_S = 1

log = logging.getLogger(__name__)

T = TypeVar("T")


def _memoized(method: Callable[[Layout], T]) -> Callable[[Layout], T]:
    """Computed once per layout (a layout's code and topology never change; every round asks
    again): a copy of the value, so a caller that changes it changes nothing here."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Layout) -> T:
        if name not in self._memo:
            self._memo[name] = method(self)
        return copy.copy(self._memo[name])  # type: ignore[no-any-return]

    return wrapper


@dataclass
class Layout:
    """One placement epoch: the code and who holds what."""

    scheme: str
    topology: Topology
    epoch: int
    code: HierarchicalCode | GradientCode
    s_tolerated: int
    predicted_round_seconds: float = 0.0
    plan: Plan | None = None
    #: partial recovery: the decoder and, per worker, each held partition's message index
    partial: PartialDecoder | None = None
    groups: tuple[tuple[int, ...], ...] = ()
    #: approximate decoding: the least-squares decoder and the answers to wait for (0: all)
    approx: LeastSquaresDecoder | None = None
    wait: int = 0
    #: check every exact decoding against a spare arrival (hgc, flat), waiting at most
    #: ``verify_slack`` seconds for it
    verify: bool = False
    verify_slack: float = 0.0
    #: approx-shuffle: the base code's B and which of its rows each worker plays
    base_B: np.ndarray | None = None
    assignment: Assignment | None = None
    _memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def shuffled(self, after: Assignment, epoch: int) -> Layout:
        """This layout with worker w playing row ``after.rows[w]`` of the base code."""
        assert self.base_B is not None and isinstance(self.code, GradientCode)
        B = after.sender_matrix(self.base_B)
        holders = tuple(tuple(int(w) for w in np.flatnonzero(B[:, j])) for j in range(B.shape[1]))
        code = GradientCode(
            B=B,
            stragglers=self.code.stragglers,
            holders=holders,
            name=self.code.name,
            targets=self.code.targets,
        )
        return replace(
            self, epoch=epoch, code=code, approx=LeastSquaresDecoder(B), assignment=after
        )

    @property
    def n_partitions(self) -> int:
        return int(self.code.n_partitions)

    @property
    @_memoized
    def workers(self) -> tuple[Node, ...]:
        """Every worker in the code's (edge-major) order."""
        return tuple(w for members in self.topology.workers for w in members)

    @property
    @_memoized
    def plan_json(self) -> str:
        """The plan in use as JSON (the hgc planner's plan, or the partial design's loads)."""
        if self.partial is not None:
            B = self.code.B
            return json.dumps(
                {
                    "design": design_label(self.partial.scheme),
                    "partitions": int(B.shape[1]),
                    "computation_load": float(np.count_nonzero(B, axis=1).max() / B.shape[1]),
                    "lp_bound": partial_load_lower_bound(
                        B.shape[0], self.partial.scheme.stragglers, self.partial.scheme.alpha
                    ),
                    "vectors_per_worker": max((max(g) + 1 for g in self.groups if g), default=1),
                }
            )
        return "" if self.plan is None else json.dumps(plan_dict(self.plan))

    def edge_layer(self) -> bool:
        """True when the master decodes edge messages (hgc, uncoded), False when the edges
        forward every worker's message (flat, ignore)."""
        return isinstance(self.code, HierarchicalCode) or self.scheme == "uncoded"

    @_memoized
    def holding(self) -> tuple[Node, ...]:
        """The workers that hold data (the others take no part in rounds)."""
        B = self.code.B
        return tuple(w for i, w in enumerate(self.workers) if np.any(B[i]))

    @_memoized
    def participating_edges(self) -> list[Node]:
        """The edges a round is sent to."""
        if isinstance(self.code, HierarchicalCode):
            return [self.topology.edges[e] for e in self.code.active_edges]
        return [a.edge for a in self.assignments()]

    def message_shape(self, length: int) -> tuple[int | None, ...]:
        """The shape of every message the master's rule takes (several rows for partial)."""
        return (None, length) if self.partial is not None else (length,)

    @_memoized
    def senders(self) -> dict[str, int]:
        """Message sender name -> index of the master's rule."""
        nodes: tuple[Node, ...] | list[Node]
        if isinstance(self.code, HierarchicalCode):
            nodes = self.topology.edges  # the code's edge indices
        elif self.scheme == "uncoded":
            nodes = self.participating_edges()
        elif self.scheme == "ignore":
            nodes = self.holding()
        else:
            nodes = self.workers  # the flat code's worker indices
        return {node.name: i for i, node in enumerate(nodes)}

    def rule(self, round_: int = 0, length: int = 0) -> Rule:
        """A fresh rule for round ``round_`` (messages of ``length`` values) of this layout."""
        if self.partial is not None:
            return self.partial.rule(length, rotation=round_)
        if self.approx is not None:
            return self.approx.rule(length, wait=self.wait or None)
        code = self.code
        exact = VerifyingRule if self.verify else ExactRule
        if isinstance(code, HierarchicalCode):
            needed = len(code.active_edges) - code.s_edge
            return exact(len(self.topology.edges), code.master_decode_vector, needed)
        if self.scheme == "uncoded":
            return all_of(len(self.participating_edges()))
        if self.scheme == "ignore":
            n = len(self.holding())
            return FastestRule(n, min(self.s_tolerated, n - 1))
        return exact(len(self.workers), code.decode_vector, len(self.workers) - code.stragglers)

    def uploads(self) -> list[tuple[Node, tuple[int, ...], tuple[float, ...], tuple[int, ...]]]:
        """``(worker, partitions held, their coefficients, their message indices)`` for every
        worker holding data (message indices empty: one vector per answer)."""
        B = self.code.B
        out = []
        for index, worker in enumerate(self.workers):
            held = tuple(int(j) for j in np.flatnonzero(B[index]))
            if held:
                groups = self.groups[index] if self.groups else ()
                out.append((worker, held, tuple(float(B[index, j]) for j in held), groups))
        return out

    @_memoized
    def edge_messages(self) -> dict[str, int]:
        """Edge name -> the messages its round call carries, where the protocol fixes it: a
        DECODE-mode edge answers with exactly one (its decoded vector)."""
        return {a.edge.name: 1 for a in self.assignments() if a.mode == DECODE}

    @_memoized
    def assignments(self) -> list[EdgeAssignment]:
        """What every taking-part edge is told: its taking-part workers (those that hold data)
        and, in DECODE mode, their code rows and the edge's targets."""
        code = self.code
        out = []
        offset = 0
        for e, (edge, members) in enumerate(
            zip(self.topology.edges, self.topology.workers, strict=True)
        ):
            rows = code.B[offset : offset + len(members)]
            offset += len(members)
            holding = [w for w in range(len(members)) if np.any(rows[w])]
            if not holding:
                continue
            workers = tuple(members[w] for w in holding)
            if isinstance(code, HierarchicalCode):
                assert code.edge_code is not None
                targets = np.array(code.edge_code.B[code.active_edges.index(e)])
                out.append(
                    EdgeAssignment(
                        edge,
                        workers,
                        DECODE,
                        rows[holding],
                        targets,
                        code.s_workers[e],
                        verify=self.verify,
                        verify_slack=self.verify_slack,
                    )
                )
            elif self.scheme == "uncoded":
                code_rows = rows[holding]
                out.append(EdgeAssignment(edge, workers, DECODE, code_rows, code_rows.sum(0), 0))
            else:
                several = -1 if self.partial is not None else 0
                out.append(EdgeAssignment(edge, workers, FORWARD, None, None, 0, several))
        return out

    def partitions_used(self, decoded: Decoded) -> np.ndarray:
        """Per partition, 1 when the round's result holds its gradient (with any weight)."""
        K = self.n_partitions
        if decoded.recovered is not None:
            used = np.zeros(K)
            used[list(decoded.recovered)] = 1.0
            return used
        weights = decoded.partition_weights
        if weights is None and self.scheme == "ignore" and decoded.weights is not None:
            holding = set(self.holding())
            B = self.code.B[[i for i, w in enumerate(self.workers) if w in holding]]
            weights = decoded.weights @ B
        if weights is None:
            return np.ones(K)  # exact: every partition, with coefficient 1
        return (np.abs(weights) > USED_WEIGHT).astype(np.float64)

    def vectors(self, used: tuple[int, ...]) -> int:
        """Coded vectors in the messages of the senders ``used`` (several per partial answer)."""
        if not self.groups:
            return len(used)
        return sum(max(self.groups[i], default=-1) + 1 for i in used)

    def stragglers(self, timings: tuple[Timing, ...]) -> int:
        """Workers whose message was not used this round."""
        return len(self.workers) - sum(1 for t in timings if t.arrived)


def build_layout(
    config: JobConfig,
    topology: Topology,
    epoch: int,
    plan: tuple[Plan, float] | None = None,
    max_partitions: int | None = None,
) -> Layout:
    """The code of ``config.scheme`` on ``topology`` (the planner's ``plan`` for hgc with a
    negative s_edge); with ``verify``, exact schemes check every decoding."""
    layout = _build(config, topology, epoch, plan, max_partitions)
    if config.verify and config.scheme in ("hgc", "flat"):
        layout.verify, layout.verify_slack = True, config.verify_slack_seconds
    return layout


def _build(
    config: JobConfig,
    topology: Topology,
    epoch: int,
    plan: tuple[Plan, float] | None,
    max_partitions: int | None,
) -> Layout:
    m = [len(w) for w in topology.workers]
    n_workers = sum(m)
    code: HierarchicalCode | GradientCode
    if config.scheme == "hgc":
        s_edge, s_worker = config.s_edge, config.s_worker
        if s_edge < 0:
            if plan is not None:
                try:
                    code = code_from_plan(plan[0], topology)
                    return Layout("hgc", topology, epoch, code, code.s_edge, plan[1], plan[0])
                except RoundFailed as exc:
                    log.warning("%s; using s_edge = s_worker = 1 instead", exc)
            # No usable plan (the coordinator is out of reach): tolerate one of each.
            s_edge, s_worker = FALLBACK_S, FALLBACK_S
        code = _fixed_hierarchical(m, s_edge, s_worker, config.partitions or None)
        return Layout("hgc", topology, epoch, code, code.s_edge)
    if config.scheme == "flat":
        s = min(config.s_flat, n_workers - 1)
        code = (
            cyclic_repetition(n_workers, s)
            if not config.partitions
            else _cyclic_code(n_workers, s, config.partitions)
        )
        return Layout("flat", topology, epoch, code, s)
    if config.scheme == "partial":
        return _partial_layout(config, topology, epoch, max_partitions)
    if config.scheme in ("approx", "approx-shuffle"):
        s = min(config.s_flat, n_workers - 1)
        if config.base_code == "frc":
            # Fractional repetition needs groups of s + 1: a worker left over (after a failure,
            # say) is a spare holding nothing.
            used = n_workers - n_workers % (s + 1)
            code = fractional_repetition(used, s)
            if used < n_workers:
                log.warning("frc with s = %d uses %d of the %d workers", s, used, n_workers)
                B = np.vstack([code.B, np.zeros((n_workers - used, code.B.shape[1]))])
                code = GradientCode(B, s, code.holders, code.name, code.targets)
        else:
            code = cyclic_repetition(n_workers, s)
        wait = min(config.wait, n_workers)
        return Layout(
            config.scheme,
            topology,
            epoch,
            code,
            s,
            approx=LeastSquaresDecoder(code.B),
            wait=wait,
            base_B=code.B,
            assignment=Assignment.identity(n_workers),
        )
    # uncoded and ignore: every partition on one worker, plain sums
    K = config.partitions or n_workers
    code = placement_code([[j % n_workers] for j in range(K)], n_workers, 0)
    tolerated = min(config.s_flat, n_workers - 1) if config.scheme == "ignore" else 0
    return Layout(config.scheme, topology, epoch, code, tolerated)


def _fixed_hierarchical(
    m: list[int], s_edge: int, s_worker: int, partitions: int | None
) -> HierarchicalCode:
    """The hierarchical code with the job's s, or, when the alive workers cannot carry it
    (edges of unequal size after a failure or a quarantine), the largest s_edge below it that
    they can (logged): a job keeps running on what is left rather than failing."""
    s_workers = [min(s_worker, mi - 1) for mi in m]
    wanted = min(s_edge, len(m) - 1)
    for s in range(wanted, 0, -1):
        try:
            code = hierarchical(m, s, s_workers, partitions)
        except Infeasible as exc:
            log.info("s_edge = %d does not fit the alive edges (%s); trying %d", s, exc, s - 1)
            continue
        return code
    if wanted > 0:
        log.warning("the alive edges %s tolerate no edge straggler (asked: %d)", m, wanted)
    return hierarchical(m, 0, s_workers, partitions)


def _partial_layout(
    config: JobConfig, topology: Topology, epoch: int, max_partitions: int | None
) -> Layout:
    """Paper 3's layout: the design's partitions on every worker, its messages as groups."""
    n = sum(len(w) for w in topology.workers)
    s = min(config.s_flat, n - 1)
    vectors = config.vectors or None
    if config.partial_design == "auto":
        # The planner's runtime model of this cluster size (equal workers): the design with the
        # lowest expected round time, weighing computation against communication load.
        spec = ClusterSpec(
            edges=(
                EdgeSpec(
                    "all",
                    tuple(WorkerSpec(f"w{i}", shift=1.0, rate=10.0) for i in range(n)),
                ),
            )
        )
        cap = {} if max_partitions is None else {"max_partitions": max_partitions}
        choice = choose_partial_design(
            spec,
            s,
            config.alpha,
            max_vectors=vectors,
            rng=np.random.default_rng(config.seed),
            **cap,
        )
        scheme = choice.best.scheme
    else:
        cap = {} if max_partitions is None else {"max_partitions": max_partitions}
        scheme = partial_scheme(n, s, config.alpha, config.partial_design, vectors=vectors, **cap)
    B = np.zeros((n, scheme.n_partitions))
    groups = []
    for i in range(n):
        encoding = worker_encoding(scheme, i)
        B[i, list(encoding.partitions)] = 1.0
        if np.any(encoding.sums.sum(axis=0) != 1):
            raise Infeasible(f"worker {i}'s messages of the {scheme} design overlap")
        groups.append(tuple(int(m) for m in np.argmax(encoding.sums, axis=0)))
    holders = tuple(tuple(int(w) for w in np.flatnonzero(B[:, j])) for j in range(B.shape[1]))
    code = GradientCode(
        B=B, stragglers=s, holders=holders, name="partial", targets=np.ones(B.shape[1])
    )
    decoder = PartialDecoder(scheme, scale=config.partial_scale)
    return Layout("partial", topology, epoch, code, s, partial=decoder, groups=tuple(groups))


def _cyclic_code(n: int, s: int, K: int) -> GradientCode:
    holders = [[(j + u) % n for u in range(s + 1)] for j in range(K)]
    return placement_code([sorted(set(h)) for h in holders], n, s)


def code_from_plan(plan: Plan, topology: Topology) -> HierarchicalCode:
    """The exact hierarchical code of a plan on the alive topology (unequal loads allowed)."""
    by_name = {e.name: e for e in plan.edges}
    edge_partitions, s_workers, loads = [], [], []
    for edge, members in zip(topology.edges, topology.workers, strict=True):
        planned = by_name.get(edge.name)
        worker_loads = {w.name: w.partitions for w in planned.workers} if planned else {}
        edge_partitions.append(planned.partitions if planned else 0)
        s_workers.append(planned.s_worker if planned else 0)
        loads.append([int(worker_loads.get(w.name, 0)) for w in members])
    try:
        return hierarchical_from_counts(
            plan.partitions, plan.s_edge, edge_partitions, s_workers, loads
        )
    except Infeasible as exc:
        raise RoundFailed(f"the planner's plan does not fit the alive nodes: {exc}") from exc


def plan_dict(plan: Plan) -> dict[str, Any]:
    """A plan as JSON-able data (the job status shows it)."""
    return {
        "s_edge": plan.s_edge,
        "partitions": plan.partitions,
        "expected_round_seconds": plan.expected_round_seconds,
        "edges": [
            {
                "name": e.name,
                "s_worker": e.s_worker,
                "partitions": e.partitions,
                "workers": [
                    {"name": w.name, "selected": w.selected, "partitions": w.partitions}
                    for w in e.workers
                ],
            }
            for e in plan.edges
        ],
    }
