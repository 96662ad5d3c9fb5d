"""The coordinator's logic: membership, liveness, live runtime fits, the planner.

State is soft: everything is rebuilt from re-registration (nodes re-register when a heartbeat is
answered with ``known=False``), so a coordinator restart loses nothing that matters.

Runtime models: each worker's shifted-exponential model (shift, rate for the whole data set) is
fitted from the compute times the master reports and the data fraction the worker held, once it
has at least ``MIN_MEASUREMENTS``; until then the worker's spec entry (when a cluster spec was
given) or a default model is used, and plans are reported as not fitted.

Membership is keyed by identity: with mutual TLS the service passes the caller's certificate
identity ``(role, name)``, and a node may register, heartbeat and report timings only as itself
(NotAllowed otherwise); the master may report the timings it measured for any node. Without TLS
(``--insecure``) there is no identity and nothing to check.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgecode.errors import Infeasible, InvalidInput, NotAllowed, Overloaded
from edgecode.planning.spec import ClusterSpec, EdgeSpec, Plan, WorkerSpec
from edgecode.stragglers import MIN_RELATIVE_SPREAD, censored_count, fit_shifted_exponential

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

MIN_MEASUREMENTS = 3
#: A node silent for this many dead-after periods is forgotten.
EXPIRE_FACTOR = 12
#: Expired registrations are looked for at most this often (seconds).
EXPIRY_PERIOD = 1.0
#: Most nodes the coordinator keeps (a registration flood is refused, not stored).
MAX_MEMBERS = 10_000
#: Longest name, address or edge name accepted.
MAX_FIELD_LENGTH = 256
#: Measurements kept per worker (a sliding window, so the model follows drift).
WINDOW = 50
#: Roles that register; peers (gossip jobs) are listed, never planned.
ROLES = ("worker", "edge", "peer")
#: A caller's certificate identity: (role, name); None on a plaintext server.
Caller = tuple[str, str] | None
#: Roles that may report timings measured for other nodes.
OBSERVERS = ("master",)
#: Most cores a host may claim, and most CPU seconds a worker may report for the whole data set.
MAX_HOST_CPUS = 4096.0
MAX_CPU_SECONDS = 1e6
#: Largest wall / CPU stretch a worker may report for its compute.
MAX_STRETCH = 1e6
#: A worker's CPU measurement counts as changed (the plan is recomputed) beyond this relative step.
CPU_CHANGE = 0.2


def check_caller(caller: Caller, name: str, role: str | None, action: str) -> None:
    """NotAllowed unless ``caller`` is the node ``name`` (of ``role``, when given)."""
    if caller is None:
        return
    caller_role, caller_name = caller
    if caller_name != name or (role is not None and caller_role != role):
        claimed = f"{role}/{name}" if role is not None else repr(name)
        raise NotAllowed(f"{caller_role}/{caller_name} may not {action} as {claimed}")


class CoordinatorMetricsPort(Protocol):
    """What the coordinator's logic records (runtime.metrics.CoordinatorMetrics)."""

    def measured(self, count: int, round_seconds: float) -> None: ...

    def planned(self, seconds: float, predicted: float, s_edge: int, partitions: int) -> None: ...

    def membership(self, role: str, alive: int, dead: int) -> None: ...


class NoCoordinatorMetrics:
    """Records nothing."""

    def measured(self, count: int, round_seconds: float) -> None:
        pass

    def planned(self, seconds: float, predicted: float, s_edge: int, partitions: int) -> None:
        pass

    def membership(self, role: str, alive: int, dead: int) -> None:
        pass


@dataclass
class Member:
    """A registered node and the measurements the master reported for it."""

    name: str
    role: str
    address: str
    edge: str = ""
    link_seconds: float = 0.0
    metrics_address: str = ""
    last_seen: float = 0.0
    #: the machine it runs on ("" unknown), its cores (0 unknown) and, for a worker, its CPU
    #: seconds for the whole data set (0 until it has computed) and their wall / CPU stretch
    #: (0 until measured); see planning.hosts
    host: str = ""
    host_cpus: float = 0.0
    cpu_seconds: float = 0.0
    compute_stretch: float = 0.0
    #: a worker's CPU seconds per round besides its compute (0 until measured)
    round_cpu_seconds: float = 0.0
    #: (compute seconds, data fraction, response seconds as seen by the edge)
    measurements: deque[tuple[float, float, float]] = field(
        default_factory=lambda: deque(maxlen=WINDOW)
    )


class CoordinatorLogic:
    """Membership, liveness, live runtime fits and the planner."""

    def __init__(
        self,
        heartbeat_seconds: float = 1.0,
        dead_after_seconds: float = 5.0,
        spec: ClusterSpec | None = None,
        default_worker: WorkerSpec | None = None,
        metrics: CoordinatorMetricsPort | None = None,
        max_members: int = MAX_MEMBERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.heartbeat_seconds = heartbeat_seconds
        self._dead_after = dead_after_seconds
        self._spec_workers = {w.name: w for e in spec.edges for w in e.workers} if spec else {}
        self._default = default_worker or WorkerSpec(name="default", shift=1.0, rate=10.0)
        self._metrics: CoordinatorMetricsPort = (
            metrics if metrics is not None else NoCoordinatorMetrics()
        )
        self._clock = clock
        self._members: dict[str, Member] = {}
        self._lock = threading.Lock()
        self.last_plan: Plan | None = None
        #: a node silent this long is forgotten (it re-registers when it comes back)
        self._expire_after = max(EXPIRE_FACTOR * dead_after_seconds, dead_after_seconds)
        self._max_members = max_members
        self._last_expiry = -float("inf")
        self._published = -math.inf
        # The plan is computed once per change of membership or measurements, one at a time;
        # every other caller gets the cached one (GetPlan is cheap to call repeatedly).
        self._version = 0
        self._planning = threading.Lock()
        self._plans: dict[
            tuple[int, tuple[str, ...], int], tuple[int, Plan, bool, ClusterSpec]
        ] = {}

    def register(
        self,
        name: str,
        role: str,
        address: str,
        edge: str = "",
        link_seconds: float = 0.0,
        metrics_address: str = "",
        caller: Caller = None,
        host: str = "",
        host_cpus: float = 0.0,
    ) -> None:
        check_caller(caller, name, role, "register")
        if not name or not address:
            raise InvalidInput("a node needs a name and an address")
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {ROLES}, got {role!r}")
        if role == "worker" and not edge:
            raise InvalidInput(f"worker {name!r} must name its edge")
        if not (link_seconds >= 0 and np.isfinite(link_seconds)):
            raise InvalidInput(f"link_seconds must be >= 0, got {link_seconds}")
        if not (0 <= host_cpus <= MAX_HOST_CPUS):  # NaN fails too
            raise InvalidInput(f"host_cpus must be in [0, {MAX_HOST_CPUS:g}], got {host_cpus}")
        fields = (("name", name), ("address", address), ("edge", edge), ("host", host))
        for field_name, value in fields:
            if len(value) > MAX_FIELD_LENGTH:
                raise InvalidInput(f"{field_name} is longer than {MAX_FIELD_LENGTH} characters")
        self._expire()
        with self._lock:
            if name not in self._members and len(self._members) >= self._max_members:
                raise Overloaded(f"the coordinator already knows {self._max_members} nodes")
            old = self._members.get(name)
            member = Member(name, role, address, edge, link_seconds, metrics_address, self._clock())
            member.host, member.host_cpus = host, float(host_cpus)
            if old is not None and old.role == role:
                member.measurements = old.measurements
                member.cpu_seconds = old.cpu_seconds if old.host == host else 0.0
                member.compute_stretch = old.compute_stretch if old.host == host else 0.0
                member.round_cpu_seconds = old.round_cpu_seconds if old.host == host else 0.0
            self._members[name] = member
            self._version += 1
        self._publish()

    def heartbeat(
        self,
        name: str,
        caller: Caller = None,
        cpu_seconds: float = 0.0,
        compute_stretch: float = 0.0,
        round_cpu_seconds: float = 0.0,
    ) -> bool:
        """Mark ``name`` alive (with a worker's CPU seconds for the whole data set, their
        wall / CPU stretch and its CPU seconds per round besides the compute, each 0 when it
        has none yet); False when it is not (or no longer) registered."""
        check_caller(caller, name, None, "heartbeat")
        if not (0 <= cpu_seconds <= MAX_CPU_SECONDS):  # NaN fails too
            raise InvalidInput(
                f"cpu_seconds must be in [0, {MAX_CPU_SECONDS:g}], got {cpu_seconds}"
            )
        if not (0 <= compute_stretch <= MAX_STRETCH):  # NaN fails too
            raise InvalidInput(
                f"compute_stretch must be in [0, {MAX_STRETCH:g}], got {compute_stretch}"
            )
        if not (0 <= round_cpu_seconds <= MAX_CPU_SECONDS):
            raise InvalidInput(
                f"round_cpu_seconds must be in [0, {MAX_CPU_SECONDS:g}], got {round_cpu_seconds}"
            )
        self._expire()
        with self._lock:
            member = self._members.get(name)
            if member is None:
                return False
            for key, value in (
                ("cpu_seconds", cpu_seconds),
                ("compute_stretch", compute_stretch),
                ("round_cpu_seconds", round_cpu_seconds),
            ):  # 0 is "not measured": the last value stays; small moves change no plan
                old = getattr(member, key)
                if value > 0 and abs(value - old) > CPU_CHANGE * old:
                    setattr(member, key, float(value))
                    self._version += 1
            now = member.last_seen = self._clock()
            # The membership gauges follow liveness, not only registrations: a node that went
            # silent shows as dead within a heartbeat interval (refreshed at most that often).
            publish = now - self._published >= self.heartbeat_seconds
            if publish:
                self._published = now
        if publish:
            self._publish()
        return True

    def report(
        self,
        timings: Sequence[tuple[str, float, float, float]],
        round_seconds: float,
        predicted: float,
        caller: Caller = None,
    ) -> int:
        """Record ``(worker, compute_seconds, load_fraction, response_seconds)`` measurements.
        Every number must be finite (InvalidInput otherwise, and nothing is recorded): one
        infinite time would make every later plan fail. A node reports only its own timings
        (NotAllowed otherwise, and nothing is recorded); the master, any node's."""
        if caller is not None and caller[0] not in OBSERVERS:
            for worker, *_ in timings:
                check_caller(caller, worker, None, "report timings")
        for worker, seconds, fraction, response in timings:
            if not all(np.isfinite(v) and v >= 0 for v in (seconds, fraction, response)):
                raise InvalidInput(
                    f"timing of {worker!r}: seconds, load_fraction and response_seconds must be "
                    f"finite and >= 0, got {seconds}, {fraction}, {response}"
                )
        for value, name in ((round_seconds, "round_seconds"), (predicted, "predicted")):
            if not (np.isfinite(value) and value >= 0):
                raise InvalidInput(f"{name} must be finite and >= 0, got {value}")
        count = 0
        with self._lock:
            for worker, seconds, fraction, response in timings:
                member = self._members.get(worker)
                if member is None or not 0 < fraction <= 1:
                    continue
                member.measurements.append(
                    (float(seconds), float(fraction), max(float(response), float(seconds)))
                )
                count += 1
            self._version += count > 0
        self._metrics.measured(count, round_seconds)
        return count

    def _expire(self) -> None:
        """Forget nodes silent for longer than the expiry (registrations do not pile up); at
        most once a second, so heartbeats stay O(1)."""
        now = self._clock()
        with self._lock:
            if now - self._last_expiry < EXPIRY_PERIOD:
                return
            self._last_expiry = now
            gone = [n for n, m in self._members.items() if now - m.last_seen > self._expire_after]
            for name in gone:
                del self._members[name]
            self._version += bool(gone)
        if gone:
            log.info("forgot nodes silent for %.0f s: %s", self._expire_after, gone)

    def members(self, include_dead: bool = False) -> tuple[list[Member], list[str]]:
        """(alive members, or all with ``include_dead``; names of the dead ones)."""
        self._expire()
        now = self._clock()
        with self._lock:
            alive = [m for m in self._members.values() if now - m.last_seen <= self._dead_after]
            dead = [m.name for m in self._members.values() if now - m.last_seen > self._dead_after]
            listed = list(self._members.values()) if include_dead else alive
        return sorted(listed, key=lambda m: m.name), sorted(dead)

    def worker_model(self, member: Member) -> tuple[WorkerSpec, bool]:
        base = self._spec_workers.get(member.name, self._default)
        base = replace(
            base,
            name=member.name,
            link_seconds=member.link_seconds,
            host=member.host or base.host,
            host_cpus=member.host_cpus or base.host_cpus,
            cpu_seconds=member.cpu_seconds or base.cpu_seconds,
            compute_stretch=member.compute_stretch or base.compute_stretch,
            round_cpu_seconds=member.round_cpu_seconds or base.round_cpu_seconds,
        )
        if len(member.measurements) < MIN_MEASUREMENTS:
            return base, False
        # fitted alone here; cluster_spec fits an edge's workers together (pooled_fits, _links)
        shift, rate = fit_shifted_exponential(*compute_samples(member))
        link = pooled_links([link_samples(member)])[0]
        fitted = replace(
            base, shift=shift, rate=rate, model="shifted_exponential", link_seconds=link
        )
        return fitted, True

    def cluster_spec(
        self, partitions: int | None = None, exclude: Sequence[str] = ()
    ) -> tuple[ClusterSpec, bool]:
        """The alive cluster (minus ``exclude``) as a planner spec; ``fitted`` is False while
        some worker has no measurements yet."""
        alive, _ = self.members()
        alive = [m for m in alive if m.name not in set(exclude)]
        edges, fitted = [], True
        for edge in (m for m in alive if m.role == "edge"):
            workers, measured = [], []
            for worker in (m for m in alive if m.role == "worker" and m.edge == edge.name):
                model, ok = self.worker_model(worker)
                fitted &= ok
                workers.append(model)
                if ok:
                    measured.append((len(workers) - 1, worker))
            fits = pooled_fits([compute_samples(m) for _, m in measured])
            links = pooled_links([link_samples(m) for _, m in measured])
            for (i, _), (shift, rate), link in zip(measured, fits, links, strict=True):
                workers[i] = replace(workers[i], shift=shift, rate=rate, link_seconds=link)
            if workers:
                edges.append(
                    EdgeSpec(name=edge.name, workers=tuple(workers), link_seconds=edge.link_seconds)
                )
        if not edges:
            raise InvalidInput("no edge with alive workers has registered")
        return ClusterSpec(edges=tuple(edges), partitions=partitions or None), fitted

    def plan(
        self,
        partitions: int = 0,
        exclude: Sequence[str] = (),
        max_partitions: int = 0,
        current: Plan | None = None,
    ) -> tuple[Plan, bool, float]:
        """The planner's plan for the alive cluster minus ``exclude`` (at most
        ``max_partitions`` partitions when > 0), whether every runtime is fitted, and the
        ``current`` plan re-timed on the same fits (0 when none is given or it no longer fits
        the alive cluster). Cached until membership or measurements change."""
        from edgecode.planning.optimize import optimize

        if partitions < 0 or max_partitions < 0 or len(exclude) > self._max_members:
            raise InvalidInput("partitions and max_partitions must be >= 0")
        key = (int(partitions), tuple(sorted(set(exclude))), int(max_partitions))
        with self._planning:
            cached = self._plans.get(key)
            if cached is not None and cached[0] == self._version:
                _, plan, fitted, spec = cached
            else:
                version = self._version
                spec, fitted = self.cluster_spec(partitions, key[1])
                start = self._clock()
                plan = optimize(spec, partitions or None, max_partitions=max_partitions or None)
                self.last_plan = plan
                self._plans = {key: (version, plan, fitted, spec)}
                self._metrics.planned(
                    self._clock() - start,
                    plan.expected_round_seconds or 0.0,
                    plan.s_edge,
                    plan.partitions,
                )
        return plan, fitted, self._retime(spec, current)

    @staticmethod
    def _retime(spec: ClusterSpec, current: Plan | None) -> float:
        """``current``'s expected round time on ``spec`` (0 when it does not fit it)."""
        if current is None:
            return 0.0
        from edgecode.planning.baselines import timed

        try:
            return float(timed(spec, current).expected_round_seconds or 0.0)
        except (ValueError, Infeasible):
            return 0.0

    def _publish(self) -> None:
        listed, _dead = self.members(include_dead=True)
        now = self._clock()
        for role in ROLES:
            up = sum(1 for m in listed if m.role == role and now - m.last_seen <= self._dead_after)
            self._metrics.membership(role, up, sum(1 for m in listed if m.role == role) - up)


def compute_samples(member: Member) -> tuple[FloatArray, FloatArray]:
    """A worker's measured compute seconds and the data fractions it held in those rounds."""
    return (
        np.array([seconds for seconds, _, _ in member.measurements]),
        np.array([fraction for _, fraction, _ in member.measurements]),
    )


def pooled_fits(samples: Sequence[tuple[ArrayLike, ArrayLike]]) -> list[tuple[float, float]]:
    """``(shift, rate)`` of the workers of one edge: :func:`fit_shifted_exponential` each, with
    the spreads ``1 / rate`` shrunk toward the edge's pooled spread by as much as the rounds
    cannot tell the workers apart (empirical Bayes, as :func:`pooled_links`).

    From ``r`` uncensored samples a spread is known to ``1 / sqrt(r - 1)`` of itself (its
    estimator is a Gamma(r - 1) variable): after three profiling rounds (``r = 2``), identical
    workers whose emulated compute overshot by a millisecond in one round got spreads from 0.1
    to 12.7 ms, and the planner gave the "spread" ones less work. With ``d_i = r_i - 1``, the
    pooled spread ``mu = sum d_i s_i / sum d_i``, noise ``v_i = mu^2 / d_i`` and
    ``tau^2 = max(0, sum (s_i - mu)^2 / (k - 1) - mean v_i)``, a worker's spread becomes
    ``mu + tau^2 / (tau^2 + v_i) (s_i - mu)`` and its shift ``y_(1) - spread / n`` (clipped at 0)
    as in the single fit. Workers with fewer than three samples, and edges with fewer than three
    such workers, keep their own fits; a worker that really is noisier keeps most of its spread
    (the spread between workers then dwarfs the noise).

    >>> alike = [[0.100, 0.112, 0.101], [0.100, 0.101, 0.102], [0.100, 0.100, 0.103]]
    >>> fits = pooled_fits([(t + [0.2], [1.0] * 4) for t in alike + [[0.100, 0.104, 0.100]]])
    >>> [round(1 / rate, 4) for _, rate in fits]  # alone: 0.0125, 0.0025, 0.003, 0.004
    [0.0077, 0.0045, 0.0047, 0.005]
    """
    fits = [fit_shifted_exponential(times, fractions) for times, fractions in samples]
    sorted_y, dof = [], []
    for times, fractions in samples:
        y = np.sort(np.asarray(times, dtype=np.float64) / np.asarray(fractions, dtype=np.float64))
        sorted_y.append(y)
        dof.append(y.size - censored_count(y.size) - 1 if y.size >= 3 else 0)
    pooled = [i for i, d in enumerate(dof) if d > 0]
    if len(pooled) < 3:
        return fits
    spreads = np.array([1.0 / fits[i][1] for i in pooled])
    weights = np.array([dof[i] for i in pooled], dtype=np.float64)
    mu = float(np.sum(weights * spreads) / np.sum(weights))
    noise = mu**2 / weights
    between = max(0.0, float(np.sum((spreads - mu) ** 2)) / (len(pooled) - 1) - float(noise.mean()))
    shrunk = mu + between / (between + noise) * (spreads - mu) if mu > 0 else spreads
    for i, spread in zip(pooled, shrunk, strict=True):
        y = sorted_y[i]
        shift = max(0.0, float(y[0]) - float(spread) / y.size)
        spread = max(float(spread), MIN_RELATIVE_SPREAD * (shift + float(spread)), 1e-12)
        fits[i] = (shift, 1.0 / spread)
    return fits


def link_samples(member: Member) -> FloatArray:
    """A worker's per-round seconds beyond its compute as its edge saw them (the link, the RPC,
    serialization and the edge's queue)."""
    return np.array([response - seconds for seconds, _, response in member.measurements])


def pooled_links(samples: Sequence[ArrayLike]) -> list[float]:
    """Link delays of the workers of one edge from their per-round samples (seconds beyond
    compute): each worker's trimmed mean, shrunk toward the edge's mean by as much as the data
    cannot tell the workers apart (Efron and Morris's empirical Bayes estimator).

    On one machine, what the edge sees beyond a worker's compute is mostly its own queue, the
    same for every worker, plus round-to-round noise: three profiling rounds gave identical
    workers "links" of 1.9-6.4 ms, and the planner sized their shares to that noise (7 to 13
    partitions of 80 where 10 each was right). A worker whose link really differs (a slow
    network) keeps its own estimate: the spread between workers then dwarfs the noise.

    Per worker: the ``t = censored_count(n)`` largest samples are dropped (a warm-up round, a
    busy moment; as the compute fit censors them), the rest give the mean ``y_i`` over ``r_i``
    samples. With ``s^2`` the within-worker variance pooled over the edge, ``v_i = s^2 / r_i``,
    ``mu`` the mean of the ``y_i`` and ``tau^2 = max(0, sum (y_i - mu)^2 / (k - 1) - mean v_i)``
    (the spread between workers beyond noise), the estimate is
    ``mu + tau^2 / (tau^2 + v_i) (y_i - mu)``; with fewer than three workers, ``y_i``.

    >>> [round(x, 4) for x in pooled_links([[0.003, 0.006], [0.002, 0.006], [0.005, 0.004]])]
    [0.0043, 0.0043, 0.0043]
    >>> [round(x, 3) for x in pooled_links([[0.003, 0.004], [0.002, 0.004], [0.050, 0.052]])]
    [0.004, 0.003, 0.051]
    """
    kept = []
    for values in samples:
        y = np.sort(np.asarray(values, dtype=np.float64))
        if y.ndim != 1 or y.size == 0 or not np.all(np.isfinite(y)):
            raise ValueError("link samples must be non-empty 1-D arrays of finite seconds")
        kept.append(y[: y.size - censored_count(y.size)])
    own = np.array([y.mean() for y in kept])
    dof = sum(y.size - 1 for y in kept)
    if own.size < 3 or dof == 0:
        return [float(x) for x in own]
    within = sum(float(np.sum((y - y.mean()) ** 2)) for y in kept) / dof
    noise = within / np.array([y.size for y in kept], dtype=np.float64)
    mu = float(own.mean())
    between = max(0.0, float(np.sum((own - mu) ** 2)) / (own.size - 1) - float(noise.mean()))
    if between == 0.0:
        return [mu] * own.size
    keep = between / (between + noise)
    return [float(x) for x in mu + keep * (own - mu)]
