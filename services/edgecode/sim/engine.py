"""Discrete-event simulation of training rounds on a whole cluster.

A round is played out message by message, the way the services run it, not by the order-statistic
formula the planner integrates, so the two are independent checks of each other:

1. at the round's start ``t0`` the master sends the parameters down (the downlink is folded into the
   per-round ``link_seconds``); every taking-part worker ``w`` of edge ``i`` computes for
   ``f_w * T_w`` seconds, ``f_w = l_w / K``, where ``T_w`` is its whole-data-set runtime drawn for this
   round from its straggler model, and its message reaches edge ``i`` at
   ``t0 + f_w T_w + link_w``;
2. hierarchical plans (``"hgc"``; ``"uncoded"`` is the case ``s_edge = s_worker = 0``): edge ``i``
   decodes as soon as ``m_i - s_w(i)`` of its ``m_i`` taking-part workers have arrived, cancels the
   rest, and its message reaches the master ``link_i`` later; the master decodes at the
   ``(n - s_edge)``-th edge message, which ends the round;
3. one-layer plans (``"flat"``, ``"ignore"``): edges relay every worker message as it comes
   (arrival at the master ``t0 + f_w T_w + link_w + link_i``) and the master decodes (or, ignoring
   stragglers, rescales) at the ``(N - s)``-th worker message, ``s = plan.s_edge``;
4. the master cancels everything still outstanding, and the next round starts at once: stale work is
   abandoned, so rounds interact only through the straggler models' state (the two-class Markov
   chain keeps each worker's slow/active class from round to round).

A worker *straggled* in a round when its message reached its edge after the edge had stopped
waiting for it (the edge's decodable set was complete or the master had ended the round), or, in flat
plans, reached the master after the round ended. Ties are broken by event order (workers before
edges, then by index).

Example
-------
>>> from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec
>>> from edgecode.planning.spec import EdgePlan, Plan, WorkerPlan
>>> spec = ClusterSpec(edges=(EdgeSpec("e", (WorkerSpec("a", 1.0, 1e9), WorkerSpec("b", 2.0, 1e9))),))
>>> plan = Plan("uncoded", 2, 0, (EdgePlan("e", 0, 0.0, 2, (WorkerPlan("a", True, 1),
...                                                         WorkerPlan("b", True, 1))),))
>>> result = simulate(spec, plan, rounds=3, rng=np.random.default_rng(0))
>>> result.round_seconds.round(6).tolist()     # worker b: (1/2) * 2.0 s, every round
[1.0, 1.0, 1.0]
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edgecode.planning.spec import ClusterSpec, Plan, WorkerSpec
from edgecode.stragglers import WorkerRuntime, runtime_for, sample_compute_times

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Plan schemes the engine can play: two-layer (edge decodes, then master) or flat (master only).
HIERARCHICAL_SCHEMES = ("hgc", "uncoded")
FLAT_SCHEMES = ("flat", "ignore")

_WORKER_ARRIVES = 0  # a worker's message reaches its edge
_EDGE_ARRIVES = (
    1  # an edge's decoded message (hierarchical) or a relayed message (flat) at the master
)


class RoundSampler(Protocol):
    """Compute times of a fixed list of workers, one round at a time.

    ``sample(rng)`` returns this round's compute seconds of every worker (for the data fraction it
    holds) and moves every model to the next round (a Markov class, a trace position).
    """

    def sample(self, rng: np.random.Generator) -> FloatArray: ...


#: Builds the sampler of the given workers holding the given data fractions, in that order
#: (see :func:`spec_sampler` and :func:`runtime_sampler`).
SamplerFactory = Callable[[tuple[WorkerSpec, ...], FloatArray], RoundSampler]


@dataclass(frozen=True)
class Topology:
    """A plan compiled for the engine: taking-part workers only, in plan order.

    ``edge_need[i]`` is how many workers edge ``i`` waits for (hierarchical) and ``master_need`` how
    many edge messages (hierarchical) or worker messages (flat) the master waits for.
    """

    scheme: str
    hierarchical: bool
    workers: tuple[WorkerSpec, ...]
    worker_edge: IntArray
    fraction: FloatArray
    worker_link: FloatArray
    edge_names: tuple[str, ...]
    edge_link: FloatArray
    edge_need: IntArray
    master_need: int


@dataclass(frozen=True)
class SimResult:
    """Per-round outcome of :func:`simulate`: ``round_seconds[r]`` and ``stragglers[r]``."""

    scheme: str
    round_seconds: FloatArray
    stragglers: IntArray
    expected_round_seconds: float | None = None

    @property
    def rounds(self) -> int:
        return int(self.round_seconds.size)

    @property
    def mean_round_seconds(self) -> float:
        return float(self.round_seconds.mean())

    @property
    def standard_error(self) -> float:
        """Standard error of the mean round time (i.i.d. approximation)."""
        if self.rounds < 2:
            return float("nan")
        return float(self.round_seconds.std(ddof=1) / np.sqrt(self.rounds))


def compile_plan(spec: ClusterSpec, plan: Plan) -> Topology:
    """Check that ``plan`` fits ``spec`` and flatten it for the engine.

    Raises ``ValueError`` naming the mismatch: an edge or worker the spec does not have, a scheme the
    engine does not know, or a wait count no set of taking-part nodes can meet.
    """
    if plan.scheme not in HIERARCHICAL_SCHEMES + FLAT_SCHEMES:
        known = HIERARCHICAL_SCHEMES + FLAT_SCHEMES
        raise ValueError(f"plan.scheme must be one of {known}, got {plan.scheme!r}")
    if plan.partitions < 1:
        raise ValueError(f"plan.partitions must be >= 1, got {plan.partitions}")
    edges_by_name = {edge.name: edge for edge in spec.edges}
    workers: list[WorkerSpec] = []
    worker_edge: list[int] = []
    loads: list[int] = []
    edge_names: list[str] = []
    edge_links: list[float] = []
    edge_need: list[int] = []
    for edge_plan in plan.edges:
        edge_spec = edges_by_name.get(edge_plan.name)
        if edge_spec is None:
            raise ValueError(f"plan edge {edge_plan.name!r} is not in the spec")
        by_name = {worker.name: worker for worker in edge_spec.workers}
        chosen = []
        for worker_plan in edge_plan.workers:
            if worker_plan.name not in by_name:
                raise ValueError(
                    f"plan worker {worker_plan.name!r} is not in spec edge {edge_plan.name!r}"
                )
            if worker_plan.selected and worker_plan.partitions > 0:
                chosen.append((by_name[worker_plan.name], worker_plan.partitions))
        if not chosen:
            continue
        for worker, load in chosen:
            workers.append(worker)
            worker_edge.append(len(edge_names))
            loads.append(load)
        edge_names.append(edge_plan.name)
        edge_links.append(edge_plan.link_seconds)
        s_worker = 0 if plan.scheme == "uncoded" else edge_plan.s_worker
        if not 0 <= s_worker < len(chosen):
            raise ValueError(
                f"edge {edge_plan.name!r}: s_worker={s_worker} needs 0 <= s_worker < "
                f"{len(chosen)} (its taking-part workers)"
            )
        edge_need.append(len(chosen) - s_worker)
    if not workers:
        raise ValueError("plan: no worker takes part")
    hierarchical = plan.scheme in HIERARCHICAL_SCHEMES
    if hierarchical:
        s_edge = 0 if plan.scheme == "uncoded" else plan.s_edge
        total = len(edge_names)
        what = "taking-part edges"
    else:
        s_edge = plan.s_edge  # one-layer plans keep their tolerance s there
        total = len(workers)
        what = "taking-part workers"
    if not 0 <= s_edge < total:
        raise ValueError(f"plan: tolerance {s_edge} needs 0 <= s < {total} ({what})")
    return Topology(
        scheme=plan.scheme,
        hierarchical=hierarchical,
        workers=tuple(workers),
        worker_edge=np.asarray(worker_edge, dtype=np.int64),
        fraction=np.asarray(loads, dtype=np.float64) / plan.partitions,
        worker_link=np.asarray([w.link_seconds for w in workers], dtype=np.float64),
        edge_names=tuple(edge_names),
        edge_link=np.asarray(edge_links, dtype=np.float64),
        edge_need=np.asarray(edge_need, dtype=np.int64),
        master_need=total - s_edge,
    )


def play_round(top: Topology, compute_seconds: FloatArray, start: float) -> tuple[float, int]:
    """Play one round starting at ``start``; return (end time, number of straggling workers).

    ``compute_seconds[w]`` is how long taking-part worker ``w`` computes this round (already scaled
    by its data fraction).
    """
    n_workers = len(top.workers)
    arrivals = start + compute_seconds + top.worker_link
    events: list[tuple[float, int, int]] = [
        (float(arrivals[w]), _WORKER_ARRIVES, w) for w in range(n_workers)
    ]
    heapq.heapify(events)
    heard = np.zeros(n_workers, dtype=bool)  # message used by the edge (or the master, when flat)
    edge_count = np.zeros(len(top.edge_names), dtype=np.int64)
    edge_done = np.zeros(len(top.edge_names), dtype=bool)
    master_count = 0
    while events:
        time, kind, index = heapq.heappop(events)
        if kind == _WORKER_ARRIVES:
            edge = int(top.worker_edge[index])
            if not top.hierarchical:
                # the edge relays the message at once
                heapq.heappush(events, (time + float(top.edge_link[edge]), _EDGE_ARRIVES, index))
                continue
            if edge_done[edge]:
                continue  # the edge already decoded and cancelled this worker
            heard[index] = True
            edge_count[edge] += 1
            if edge_count[edge] == top.edge_need[edge]:
                edge_done[edge] = True
                heapq.heappush(events, (time + float(top.edge_link[edge]), _EDGE_ARRIVES, edge))
        else:
            if not top.hierarchical:
                heard[index] = True
            master_count += 1
            if master_count == top.master_need:
                return time - start, int(n_workers - np.count_nonzero(heard))
    raise AssertionError("unreachable: compile_plan guarantees the master's wait count is met")


def simulate(
    spec: ClusterSpec,
    plan: Plan,
    rounds: int,
    rng: np.random.Generator,
    *,
    sampler_factory: SamplerFactory | None = None,
    progress: Callable[[int], None] | None = None,
) -> SimResult:
    """Simulate ``rounds`` consecutive rounds of ``plan`` on ``spec``.

    Parameters
    ----------
    spec, plan:
        The cluster (its workers' straggler models) and the plan to play; see :func:`compile_plan`.
    rounds:
        Number of rounds, >= 1.
    rng:
        The only source of randomness.
    sampler_factory:
        Builds the compute-time sampler of the taking-part workers; defaults to
        :func:`spec_sampler` (each worker's model from the spec). Use :func:`runtime_sampler` to
        replay recorded traces.
    progress:
        Called with 1 after every round (for progress bars).

    Returns
    -------
    SimResult
        ``round_seconds`` (shape ``(rounds,)``) and ``stragglers`` per round, with the plan's
        ``expected_round_seconds`` carried over for comparison.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    top = compile_plan(spec, plan)
    sampler = (sampler_factory or spec_sampler)(top.workers, top.fraction)
    seconds = np.empty(rounds, dtype=np.float64)
    stragglers = np.empty(rounds, dtype=np.int64)
    clock = 0.0
    for r in range(rounds):
        compute = np.asarray(sampler.sample(rng), dtype=np.float64)
        if compute.shape != top.fraction.shape:
            raise ValueError(
                f"sampler returned shape {compute.shape}, expected {top.fraction.shape}"
            )
        duration, late = play_round(top, compute, clock)
        clock += duration
        seconds[r] = duration
        stragglers[r] = late
        if progress is not None:
            progress(1)
    return SimResult(plan.scheme, seconds, stragglers, plan.expected_round_seconds)


def spec_sampler(workers: tuple[WorkerSpec, ...], fractions: FloatArray) -> RoundSampler:
    """The default sampler: each worker's straggler model as the spec states it.

    Memoryless models (shifted exponential, Bernoulli) are drawn vectorised in blocks of rounds;
    two-class Markov workers keep their class from round to round (starting in the spec's
    ``slow``), through :func:`edgecode.stragglers.runtime_for`.
    """
    return _SpecSampler(workers, np.asarray(fractions, dtype=np.float64))


def runtime_sampler(runtime: Callable[[WorkerSpec], WorkerRuntime]) -> SamplerFactory:
    """A factory driving one stateful :class:`~edgecode.stragglers.WorkerRuntime` per worker.

    ``runtime(worker)`` builds the model of a worker, for instance a
    :class:`~edgecode.stragglers.TraceRuntime` replaying its recorded times::

        simulate(spec, plan, 100, rng,
                 sampler_factory=runtime_sampler(lambda w: TraceRuntime(traces[w.name])))
    """

    def factory(workers: tuple[WorkerSpec, ...], fractions: FloatArray) -> RoundSampler:
        return _RuntimeSampler([runtime(worker) for worker in workers], fractions)

    return factory


class _RuntimeSampler:
    def __init__(self, runtimes: list[WorkerRuntime], fractions: FloatArray) -> None:
        self._runtimes = runtimes
        self._fractions = [float(f) for f in fractions]

    def sample(self, rng: np.random.Generator) -> FloatArray:
        times = np.empty(len(self._runtimes), dtype=np.float64)
        for index, (runtime, fraction) in enumerate(
            zip(self._runtimes, self._fractions, strict=True)
        ):
            times[index] = runtime.sample(fraction, rng)
            runtime.advance(rng)
        return times


#: Memoryless draws buffered per block: at most this many (round, worker) values.
_BLOCK_VALUES = 1 << 18


class _SpecSampler:
    def __init__(self, workers: tuple[WorkerSpec, ...], fractions: FloatArray) -> None:
        self._workers = workers
        self._fractions = fractions
        stateful = np.array([w.model == "markov" for w in workers], dtype=bool)
        self._memoryless = np.flatnonzero(~stateful)
        self._stateful = np.flatnonzero(stateful)
        self._markov = _RuntimeSampler(
            [runtime_for(workers[i]) for i in self._stateful], fractions[self._stateful]
        )
        self._block: FloatArray = np.empty((0, self._memoryless.size), dtype=np.float64)
        self._next = 0

    def sample(self, rng: np.random.Generator) -> FloatArray:
        times = np.empty(len(self._workers), dtype=np.float64)
        if self._memoryless.size:
            if self._next == self._block.shape[0]:
                rounds = max(1, _BLOCK_VALUES // self._memoryless.size)
                self._block = sample_compute_times(
                    [self._workers[i] for i in self._memoryless],
                    self._fractions[self._memoryless],
                    rounds,
                    rng,
                )
                self._next = 0
            times[self._memoryless] = self._block[self._next]
            self._next += 1
        if self._stateful.size:
            times[self._stateful] = self._markov.sample(rng)
        return times
