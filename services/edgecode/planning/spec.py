"""The cluster spec (TOML) and the plan: the data shared by the planner, the simulator and ``run``.

A spec describes the hardware: edges (with their link delay to the master) and their workers (with
their runtime model). A worker holding a fraction f = l / K of the data finishes its compute in
``f * (shift + X)``, ``X ~ Exponential(rate)``, and arrives at its edge ``link_seconds`` later.

Spec file format::

    [job]
    partitions = 24            # optional: the planner chooses when absent
    [[edge]]
    name = "edge-0"
    link_seconds = 0.004       # edge -> master delay per round
      [[edge.worker]]
      name = "pi-0"
      shift = 0.160            # seconds for the WHOLE data set, deterministic part
      rate = 6.0               # random part ~ Exponential(rate) for the whole data set
      link_seconds = 0.001     # worker -> edge delay per round
      model = "shifted_exponential"   # or "markov" or "bernoulli" (simulator only)
      host = "box-1"           # optional: workers on one host share its cores ...
      host_cpus = 4            # ... this many (see planning.hosts)
      cpu_seconds = 0.5        # CPU seconds of real compute for the whole data set
      compute_stretch = 3.0    # its wall seconds over CPU seconds (the machine's contention)
      round_cpu_seconds = 0.002  # CPU seconds per round besides the compute, any share
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODELS = ("shifted_exponential", "markov", "bernoulli")


@dataclass(frozen=True)
class WorkerSpec:
    """One worker and its runtime model (times are for processing the whole data set)."""

    name: str
    shift: float
    rate: float
    link_seconds: float = 0.0
    model: str = "shifted_exponential"
    #: two-class Markov model: straggle probability when slow / active, class transitions
    p_slow: float = 0.0
    p_active: float = 0.0
    q_as: float = 0.0
    q_sa: float = 0.0
    #: Bernoulli model: straggle probability per round
    p_straggle: float = 0.0
    #: a straggling round takes ``slow_factor`` times as long (markov and bernoulli models)
    slow_factor: float = 1.0
    #: initial class of the Markov model
    slow: bool = False
    #: the machine this worker runs on ("" unknown); workers on one host share its cores
    host: str = ""
    #: that machine's cores (0: unknown)
    host_cpus: float = 0.0
    #: CPU seconds of real compute for the WHOLE data set (0: not measured); see planning.hosts
    cpu_seconds: float = 0.0
    #: wall over CPU seconds of that compute under the plan in use (0: not measured); the
    #: contention the worker saw, from which planning.hosts infers the machine's other load
    compute_stretch: float = 0.0
    #: CPU seconds per round besides the compute, whatever the share held (the round call's
    #: handling, serialisation; 0: not measured); see planning.hosts
    round_cpu_seconds: float = 0.0

    def __post_init__(self) -> None:
        where = f"worker {self.name!r}"
        _check(self.shift >= 0 and math.isfinite(self.shift), f"{where}: shift must be >= 0")
        _check(self.rate > 0 and math.isfinite(self.rate), f"{where}: rate must be > 0")
        _check(self.link_seconds >= 0, f"{where}: link_seconds must be >= 0")
        _check(self.model in MODELS, f"{where}: model must be one of {MODELS}, got {self.model!r}")
        for key in ("p_slow", "p_active", "q_as", "q_sa", "p_straggle"):
            value = getattr(self, key)
            _check(0.0 <= value <= 1.0, f"{where}: {key} must be in [0, 1], got {value}")
        _check(self.slow_factor >= 1.0, f"{where}: slow_factor must be >= 1")
        for key in ("host_cpus", "cpu_seconds", "compute_stretch", "round_cpu_seconds"):
            value = getattr(self, key)
            _check(value >= 0 and math.isfinite(value), f"{where}: {key} must be >= 0")


@dataclass(frozen=True)
class EdgeSpec:
    name: str
    workers: tuple[WorkerSpec, ...]
    link_seconds: float = 0.0

    def __post_init__(self) -> None:
        _check(len(self.workers) > 0, f"edge {self.name!r}: needs at least one worker")
        _check(self.link_seconds >= 0, f"edge {self.name!r}: link_seconds must be >= 0")


@dataclass(frozen=True)
class ClusterSpec:
    edges: tuple[EdgeSpec, ...]
    #: K, the number of data partitions; None lets the planner choose
    partitions: int | None = None

    def __post_init__(self) -> None:
        _check(len(self.edges) > 0, "spec: needs at least one [[edge]]")
        names = [w.name for e in self.edges for w in e.workers] + [e.name for e in self.edges]
        _check(len(set(names)) == len(names), "spec: edge and worker names must be unique")
        if self.partitions is not None:
            _check(self.partitions >= 1, "job.partitions must be >= 1")

    @property
    def n_workers(self) -> int:
        return sum(len(e.workers) for e in self.edges)


@dataclass(frozen=True)
class WorkerPlan:
    name: str
    selected: bool
    #: l: partitions this worker holds (0 when not selected)
    partitions: int


@dataclass(frozen=True)
class EdgePlan:
    name: str
    #: stragglers tolerated among this edge's selected workers
    s_worker: int
    link_seconds: float
    #: c_i: partitions this edge covers (0 when the edge does not take part)
    partitions: int
    workers: tuple[WorkerPlan, ...]

    @property
    def selected(self) -> bool:
        return self.partitions > 0


@dataclass(frozen=True)
class Plan:
    """A hierarchical plan. It is exact (constructible by ``codes.hierarchical_from_counts``) when

    - the selected edges' ``partitions`` add up to K (s_edge + 1), each at most K;
    - inside a selected edge, the selected workers' ``partitions`` add up to
      c_i (s_worker + 1), each at most c_i, and s_worker < number of selected workers;
    - s_edge < number of selected edges.
    ``scheme`` names the baseline the plan stands for ("hgc", "flat", "uncoded", "ignore").
    For the one-layer schemes ("flat", "uncoded", "ignore") ``s_edge`` is the number of WORKER
    messages the master may miss (edges only forward), every ``s_worker`` is 0, and the workers'
    ``partitions`` add up to K (s_edge + 1) for "flat", K otherwise; see
    :mod:`edgecode.planning.plans` (``check_plan``) for the full rules of every scheme.
    """

    scheme: str
    partitions: int
    s_edge: int
    edges: tuple[EdgePlan, ...]
    expected_round_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def spec_from_dict(data: dict[str, Any]) -> ClusterSpec:
    """Build a spec from parsed TOML, naming the offending key on error."""
    job = data.get("job", {})
    edges_raw = data.get("edge")
    if not isinstance(edges_raw, list) or not edges_raw:
        raise ValueError("spec: needs at least one [[edge]] table")
    edges = []
    for e_index, edge in enumerate(edges_raw):
        name = str(edge.get("name", f"edge-{e_index}"))
        workers = []
        for w_index, worker in enumerate(edge.get("worker", [])):
            fields = dict(worker)
            fields.setdefault("name", f"{name}-w{w_index}")
            unknown = set(fields) - set(WorkerSpec.__dataclass_fields__)
            _check(not unknown, f"edge {name!r} worker {w_index}: unknown keys {sorted(unknown)}")
            for key in ("shift", "rate"):
                _check(key in fields, f"edge {name!r} worker {fields['name']!r}: {key} is required")
            workers.append(WorkerSpec(**fields))
        edges.append(
            EdgeSpec(
                name=name, workers=tuple(workers), link_seconds=float(edge.get("link_seconds", 0.0))
            )
        )
    partitions = job.get("partitions")
    return ClusterSpec(
        edges=tuple(edges), partitions=None if partitions is None else int(partitions)
    )


def load_spec(path: str | Path) -> ClusterSpec:
    """Read a cluster spec from a TOML file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"spec file {path} does not exist")
    with path.open("rb") as handle:
        try:
            data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    return spec_from_dict(data)
