"""The peer's pure logic (edgecode.peer.logic) with a fake clock and an in-memory transport."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from edgecode.errors import (
    EdgecodeError,
    InvalidInput,
    NotAllowed,
    Overloaded,
    StaleRound,
    UnknownJob,
)
from edgecode.learning.datasets import synthetic_least_squares
from edgecode.learning.gossip import (
    GossipScheme,
    StepSchedule,
    Topology,
    build_topology,
    gossip_scheme,
    peer_step_size,
    place_partitions,
)
from edgecode.learning.models import LeastSquares
from edgecode.peer.logic import (
    GossipMessage,
    MonotonicClock,
    PeerJob,
    PeerLogic,
    RoundReport,
    RuntimeStraggle,
)
from edgecode.sim.goco import least_squares_peers, mean_smoothness, simulate_gossip
from edgecode.stragglers import BernoulliRuntime

JOB = "job"
COMPUTE_DEADLINE = 1.0
GOSSIP_DEADLINE = 0.5
#: emulated seconds of a straggler: past the compute deadline
STRAGGLER_SECONDS = 10.0


class FakeClock:
    """A clock that only moves when someone waits on it (and nothing has arrived)."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        self.t += max(0.0, seconds)
        return event.is_set()


class Memory:
    """In-memory transport: delivers at once, drops messages to dead peers, records refusals."""

    def __init__(self) -> None:
        self.peers: dict[int, PeerLogic] = {}
        self.dead: set[int] = set()
        self.sent: list[GossipMessage] = []
        self.refused: list[tuple[int, int, int, type[EdgecodeError]]] = []
        self._lock = threading.Lock()

    def send(self, message: GossipMessage, neighbours: Sequence[int]) -> None:
        with self._lock:
            self.sent.append(message)
        for n in neighbours:
            if n in self.dead or n not in self.peers:
                continue
            try:
                self.peers[n].receive(message)
            except EdgecodeError as exc:
                with self._lock:
                    self.refused.append((message.sender, n, message.round, type(exc)))


class Sink:
    def __init__(self) -> None:
        self.reports: list[RoundReport] = []
        self._lock = threading.Lock()

    def report(self, report: RoundReport) -> None:
        with self._lock:
            self.reports.append(report)

    def of(self, peer: int) -> list[RoundReport]:
        return [r for r in self.reports if r.peer == peer]


class Scripted:
    """Straggles (past the compute deadline) exactly in the rounds where ``alive`` is False."""

    def __init__(self, alive: np.ndarray, seconds: float = STRAGGLER_SECONDS) -> None:
        self.alive = alive
        self.seconds = seconds

    def extra_seconds(self, round_: int, load_fraction: float) -> float:
        return 0.0 if self.alive[round_] else self.seconds


def _data(rows: int = 120, features: int = 3, seed: int = 0) -> Any:
    return synthetic_least_squares(rows, features, np.random.default_rng(seed), noise=0.5)


def _network(
    topology: Topology,
    scheme: GossipScheme,
    data: Any,
    step: StepSchedule,
    rounds: int,
    *,
    alive: np.ndarray | None = None,
    every: int = 1,
    initial: np.ndarray | None = None,
) -> tuple[Memory, Sink, list[FakeClock]]:
    placed = place_partitions(data, scheme.code, non_iid=True)
    transport, sink, clocks = Memory(), Sink(), []
    if initial is None:
        initial = np.zeros((topology.n_peers, data.n_features + 1))
    for i in range(topology.n_peers):
        job = PeerJob.from_topology(
            JOB,
            topology,
            i,
            scheme,
            LeastSquares(),
            placed[i],
            step,
            initial[i],
            rounds=rounds,
            compute_deadline=COMPUTE_DEADLINE,
            gossip_deadline=GOSSIP_DEADLINE,
            report_params_every=every,
        )
        clock = FakeClock()
        straggle = Scripted(alive[:, i]) if alive is not None else None
        transport.peers[i] = PeerLogic(transport, sink, clock=clock, straggle=straggle)
        transport.peers[i].install(job)
        clocks.append(clock)
    return transport, sink, clocks


def _lockstep(transport: Memory, peers: Sequence[int] | None = None, rounds: int = 1) -> None:
    """``rounds`` rounds in lockstep: every peer starts (and sends), then every peer mixes."""
    peers = list(transport.peers) if peers is None else list(peers)
    for _ in range(rounds):
        for i in peers:
            transport.peers[i].start_round(JOB)
        for i in peers:
            transport.peers[i].finish_round(JOB)


def _ring3_job(**changes: Any) -> PeerJob:
    """Peer 0's job on a 3-ring (neighbours 1 and 2), with fields overridden by ``changes``."""
    data = _data()
    scheme = gossip_scheme("goco", 3, 0.3, replication=2)
    job = PeerJob.from_topology(
        JOB, _ring3(), 0, scheme, LeastSquares(),
        place_partitions(data, scheme.code, non_iid=True)[0], StepSchedule(0.0), np.zeros(4),
        rounds=2, compute_deadline=1.0, gossip_deadline=1.0,
    )  # fmt: skip
    fields = {name: getattr(job, name) for name in job.__dataclass_fields__}
    return PeerJob(**{**fields, **changes})


def _ring3() -> Topology:
    return build_topology("ring", 3, np.random.default_rng(0))


# --------------------------------------------------------------------------- the coded gradient


@pytest.mark.parametrize(("d", "p"), [(2, 0.3), (3, 0.6), (1, 0.5), (6, 0.2)])
def test_peer_gradients_are_unbiased_over_every_pattern_and_by_monte_carlo(
    d: int, p: float
) -> None:
    n = 6
    data = _data(rows=90, features=4, seed=d)
    scheme = gossip_scheme("goco", n, p, replication=d)
    topology = build_topology("ring", n, np.random.default_rng(0))
    x = np.random.default_rng(7).standard_normal(data.n_features + 1)
    placed = place_partitions(data, scheme.code, non_iid=True)
    transport, sink = Memory(), Sink()
    coded = np.empty((n, x.size))
    for i in range(n):
        # step 1 from x: the value a peer sends is x - g_i, so g_i = x - sent
        job = PeerJob.from_topology(
            JOB, topology, i, scheme, LeastSquares(), placed[i], StepSchedule(1.0), x,
            rounds=2, compute_deadline=COMPUTE_DEADLINE, gossip_deadline=GOSSIP_DEADLINE,
        )  # fmt: skip
        logic = PeerLogic(
            transport, sink, clock=FakeClock(), straggle=Scripted(np.array([True, False]))
        )
        transport.peers[i] = logic
        logic.install(job)
    for i in range(n):
        transport.peers[i].start_round(JOB)
    coded = np.array([x - m.params for m in transport.sent[-n:]])
    for i in range(n):
        transport.peers[i].finish_round(JOB)
    for i in range(n):  # round 1: everybody straggles and must send its x unchanged (g_i = 0)
        before = transport.peers[i].params(JOB)
        transport.peers[i].start_round(JOB)
        np.testing.assert_array_equal(transport.sent[-1].params, before)

    # the simulator's coded gradients are the same numbers
    problem = least_squares_peers(data, scheme.code, non_iid=True)
    simulated = scheme.coefficient * problem.local_gradients(np.tile(x, (n, 1)))
    scale = float(np.abs(coded).max())
    diff = np.abs(simulated - coded)
    assert np.all(np.isfinite(diff)) and np.all(diff <= 1e-12 * scale)

    full = LeastSquares().gradient(x, data.X, data.y)
    expectation = np.zeros_like(full)
    for pattern in itertools.product([False, True], repeat=n):
        alive = np.array(pattern)
        expectation += scheme.code.pattern_probability(alive) * coded[alive].sum(axis=0)
    err = np.abs(expectation - full)
    assert np.all(np.isfinite(err)) and np.all(err <= 1e-12 * np.abs(full).max())

    # Monte Carlo: within 3 standard errors (exact variance) of the full gradient
    draws = 40_000
    masks = scheme.code.sample_alive_rounds(np.random.default_rng(11), draws).astype(float)
    sums = masks @ coded
    partials = np.zeros((n, x.size))
    order = np.argsort(data.y, kind="stable")
    for j, (a, b) in enumerate(_bounds(data.n_rows, n)):
        rows = order[a:b]
        partials[j] = LeastSquares().gradient(x, data.X[rows], data.y[rows], reg_share=1 / n)
    variance = scheme.code.sum_variance(partials)
    stderr = np.sqrt(variance / draws)
    err = np.abs(sums.mean(axis=0) - full)
    assert np.all(np.isfinite(err)) and np.all(err <= 3 * stderr + 1e-12 * np.abs(full).max())
    sample_variance = sums.var(axis=0, ddof=1)
    assert np.all(np.abs(sample_variance - variance) <= 0.1 * variance + 1e-12)


def _bounds(rows: int, parts: int) -> list[tuple[int, int]]:
    from edgecode.learning.datasets import partition_bounds

    return partition_bounds(rows, parts)


# --------------------------------------------------------------------------- whole runs


@pytest.mark.parametrize("name", ["goco", "gossip", "gossip-wait"])
def test_peers_follow_the_simulator_exactly(name: str) -> None:
    n, rounds, p = 12, 25, 0.4
    data = _data()
    topology = build_topology("torus", n, np.random.default_rng(0))
    scheme = gossip_scheme(name, n, p, replication=2)
    lr = peer_step_size(0.2 / mean_smoothness(data), n, data.n_rows)
    step = StepSchedule(lr, decay_rounds=10.0)
    alive = np.random.default_rng(5).random((rounds, n)) >= p
    transport, sink, clocks = _network(topology, scheme, data, step, rounds, alive=alive)
    _lockstep(transport, rounds=rounds)

    problem = least_squares_peers(data, scheme.code, non_iid=True)
    run = simulate_gossip(
        problem, topology, scheme, rounds, step, np.random.default_rng(0), alive=alive
    )
    peers = np.array([transport.peers[i].params(JOB) for i in range(n)])
    diff = np.abs(peers - run.final)
    assert np.all(np.isfinite(diff)) and np.all(diff <= 1e-10 * np.abs(run.final).max())
    # the reported vectors give the simulator's gap curve
    for t in range(rounds):
        vectors = np.array([r.params for r in sink.reports if r.round == t])
        gap = problem.gaps(vectors.mean(axis=0)[None, :])[0] / problem.initial_gap
        assert abs(gap - run.gap[t + 1]) <= 1e-8 * run.gap[t + 1] + 1e-15
    skipped = np.array([[r.skipped_gradient for r in sink.of(i)] for i in range(n)]).T
    np.testing.assert_array_equal(skipped, ~alive if name != "gossip-wait" else 0)
    assert all(r.missing == () for r in sink.reports)
    # fake time: a skipping peer stops at its compute deadline, a waiting one waits it out
    expected = rounds * (STRAGGLER_SECONDS if name == "gossip-wait" else COMPUTE_DEADLINE)
    for i in range(n):
        assert clocks[i].t == pytest.approx((~alive[:, i]).sum() * expected / rounds)


def test_peers_converge_in_process() -> None:
    n, rounds, p = 12, 400, 0.5
    data = _data(rows=240, features=5)
    topology = build_topology("torus", n, np.random.default_rng(0))
    scheme = gossip_scheme("goco", n, p, replication=2)
    step = StepSchedule(peer_step_size(0.2 / mean_smoothness(data), n, data.n_rows), 20.0)
    alive = np.random.default_rng(1).random((rounds, n)) >= p
    transport, sink, _ = _network(topology, scheme, data, step, rounds, alive=alive, every=100)
    _lockstep(transport, rounds=rounds)
    problem = least_squares_peers(data, scheme.code, non_iid=True)
    gaps, spreads = [], []
    for t in (99, 199, 299, 399):
        vectors = np.array([r.params for r in sink.reports if r.round == t])
        assert vectors.shape == (n, data.n_features + 1)
        mean = vectors.mean(axis=0)
        gaps.append(problem.gaps(mean[None, :])[0] / problem.initial_gap)
        spreads.append(np.sum((vectors - mean) ** 2) / n / np.sum(problem.optimum**2))
    gaps_, spreads_ = np.array(gaps), np.array(spreads)
    assert np.all(np.isfinite(gaps_)) and gaps_[-1] <= 1e-4
    assert np.all(np.isfinite(spreads_)) and spreads_[-1] <= 1e-5
    assert sum(r.params is not None for r in sink.reports) == 4 * n
    assert sum(r.skipped_gradient for r in sink.reports) == (~alive).sum()


# --------------------------------------------------------------------------- dead and paused


def test_a_dead_neighbour_is_noticed_at_the_gossip_deadline_and_left_out() -> None:
    n, dead = 6, 3
    data = _data()
    topology = build_topology("ring", n, np.random.default_rng(0))
    scheme = gossip_scheme("goco", n, 0.0, replication=2)
    step = StepSchedule(0.0)  # pure gossip: the alive peers' mean must stay put
    values = np.random.default_rng(3).standard_normal((n, data.n_features + 1))
    transport, sink, clocks = _network(topology, scheme, data, step, 6, initial=values)
    _lockstep(transport, rounds=2)
    transport.dead.add(dead)
    alive_peers = [i for i in range(n) if i != dead]
    before = np.array([transport.peers[i].params(JOB) for i in alive_peers])
    start = {i: clocks[i].t for i in alive_peers}
    _lockstep(transport, peers=alive_peers, rounds=1)
    for i in alive_peers:
        report = sink.of(i)[-1]
        neighbours, weights, self_weight = topology.row(i)
        if dead in neighbours:
            assert report.missing == (dead,) and report.gossip_seconds[dead] is None
            # noticed exactly at the gossip deadline, not later
            assert clocks[i].t - start[i] == pytest.approx(GOSSIP_DEADLINE)
            assert report.round_seconds == pytest.approx(GOSSIP_DEADLINE)
        else:
            assert report.missing == () and clocks[i].t == start[i]
        table = dict(zip(neighbours, weights, strict=True))
        own = before[alive_peers.index(i)]
        expected = (self_weight + table.get(dead, 0.0)) * own + sum(
            w * before[alive_peers.index(m)] for m, w in table.items() if m != dead
        )
        err = np.abs(transport.peers[i].params(JOB) - expected)
        assert np.all(np.isfinite(err)) and np.all(err <= 1e-14)
    after = np.array([transport.peers[i].params(JOB) for i in alive_peers])
    drift = np.abs(after.mean(axis=0) - before.mean(axis=0))
    assert np.all(np.isfinite(drift)) and np.all(drift <= 1e-14)


def test_a_paused_neighbour_catches_up_on_kept_messages() -> None:
    n, paused = 6, 2
    data = _data()
    topology = build_topology("ring", n, np.random.default_rng(0))
    scheme = gossip_scheme("goco", n, 0.3, replication=2)
    step = StepSchedule(peer_step_size(0.1 / mean_smoothness(data), n, data.n_rows))
    transport, sink, _ = _network(topology, scheme, data, step, 10)
    _lockstep(transport, rounds=3)
    others = [i for i in range(n) if i != paused]
    _lockstep(transport, peers=others, rounds=3)  # rounds 3, 4, 5 without peer 2
    for i in (1, 3):
        assert [r.missing for r in sink.of(i)[3:]] == [(paused,)] * 3
    assert transport.peers[paused].current_round(JOB) == 3
    _lockstep(transport, peers=[paused], rounds=3)  # it catches up on what it kept
    assert [r.missing for r in sink.of(paused)[3:]] == [()] * 3
    # its late values were refused as stale by the neighbours, who had moved on
    late = [(s, to, t, e) for s, to, t, e in transport.refused if s == paused]
    assert sorted(late) == sorted((paused, to, t, StaleRound) for to in (1, 3) for t in (3, 4, 5))
    _lockstep(transport, rounds=4)
    assert all(r.missing == () for r in sink.reports if r.round >= 6)
    assert {transport.peers[i].current_round(JOB) for i in range(n)} == {10}
    with pytest.raises(StaleRound, match="all its 10 rounds"):
        transport.peers[0].start_round(JOB)


def test_a_dead_neighbour_in_real_threads() -> None:
    n, rounds, dead, last = 4, 6, 3, 2
    data = _data()
    topology = build_topology("ring", n, np.random.default_rng(0))
    scheme = gossip_scheme("goco", n, 0.3, replication=2)
    step = StepSchedule(peer_step_size(0.1 / mean_smoothness(data), n, data.n_rows))
    placed = place_partitions(data, scheme.code, non_iid=True)
    transport, stops = Memory(), {i: threading.Event() for i in range(n)}
    deadline = 0.2

    class StopAfter(Sink):
        def report(self, report: RoundReport) -> None:
            super().report(report)
            if report.peer == dead and report.round == last:
                transport.dead.add(dead)  # it dies right after mixing round 2
                stops[dead].set()

    sink = StopAfter()
    for i in range(n):
        job = PeerJob.from_topology(
            JOB, topology, i, scheme, LeastSquares(), placed[i], step, np.zeros(4),
            rounds=rounds, compute_deadline=5.0, gossip_deadline=deadline,
        )  # fmt: skip
        transport.peers[i] = PeerLogic(transport, sink, clock=MonotonicClock())
        transport.peers[i].install(job)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            transport.peers[i].run(JOB, stops[i])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and not any(thread.is_alive() for thread in threads)
    assert [transport.peers[i].current_round(JOB) for i in range(n)] == [6, 6, 6, 3]
    for i in (0, 2):  # the dead peer's neighbours
        for report in sink.of(i)[last + 1 :]:
            assert dead in report.missing and report.gossip_seconds[dead] is None
            gossip_wait = report.round_seconds - report.compute_seconds
            assert deadline * (1 - 1e-6) <= gossip_wait <= deadline + 2.0
    final = np.array([transport.peers[i].params(JOB) for i in range(n)])
    assert np.all(np.isfinite(final))


# --------------------------------------------------------------------------- messages


@pytest.fixture
def pair() -> tuple[Memory, Sink, PeerLogic]:
    data = _data()
    topology = build_topology("ring", 3, np.random.default_rng(0))
    scheme = gossip_scheme("goco", 3, 0.3, replication=2)
    transport, sink, _ = _network(topology, scheme, data, StepSchedule(0.001), 4)
    return transport, sink, transport.peers[0]


def _message(round_: Any = 0, sender: Any = 1, params: Any = None, job: str = JOB) -> GossipMessage:
    return GossipMessage(job, round_, sender, np.ones(4) if params is None else params)


@pytest.mark.parametrize(
    ("message", "error", "match"),
    [
        (_message(job="other"), UnknownJob, "no job 'other'"),
        (_message(sender=0), NotAllowed, "not a neighbour"),
        (_message(sender=7), NotAllowed, "not a neighbour"),
        (_message(round_=-1), InvalidInput, r"in \[0, 4\)"),
        (_message(round_=4), InvalidInput, r"in \[0, 4\)"),
        (_message(round_=True), InvalidInput, "integer"),
        (_message(round_=1.0), InvalidInput, "integer"),
        (_message(params=np.ones(5)), InvalidInput, r"shape \(4,\)"),
        (_message(params=np.ones((4, 1))), InvalidInput, r"shape \(4,\)"),
        (_message(params=np.array([1.0, np.nan, 0, 0])), InvalidInput, "finite"),
        (_message(params=np.array([1.0, np.inf, 0, 0])), InvalidInput, "finite"),
        (_message(params=np.ones(4, dtype=complex)), InvalidInput, "real array"),
        (_message(params=np.array(["a"] * 4)), InvalidInput, "real array"),
    ],
)
def test_bad_messages_are_refused_and_change_nothing(
    pair: tuple[Memory, Sink, PeerLogic], message: GossipMessage, error: type, match: str
) -> None:
    transport, _sink, peer = pair
    before = peer.params(JOB)
    with pytest.raises(error, match=match):
        peer.receive(message)
    np.testing.assert_array_equal(peer.params(JOB), before)
    assert peer.current_round(JOB) == 0
    # nothing was stored: with neighbour 1 silent, round 0 mixes without it ...
    peer.start_round(JOB)
    own = transport.sent[-1].params
    report = peer.finish_round(JOB)
    assert report.missing == (1, 2)
    np.testing.assert_array_equal(peer.params(JOB), own)


def test_a_refused_value_does_not_block_the_valid_one(pair: tuple[Memory, Sink, PeerLogic]) -> None:
    transport, _sink, peer = pair
    with pytest.raises(InvalidInput):
        peer.receive(_message(params=np.full(4, np.nan)))
    peer.receive(_message(params=np.full(4, 2.0)))
    peer.receive(_message(params=np.full(4, 2.0)))  # an identical retry is harmless
    with pytest.raises(InvalidInput, match="different value"):
        peer.receive(_message(params=np.full(4, 3.0)))
    peer.start_round(JOB)
    own = transport.sent[-1].params
    report = peer.finish_round(JOB)
    assert report.missing == (2,)
    neighbours, weights, self_weight = _ring3().row(0)
    w = dict(zip(neighbours, weights, strict=True))
    expected = (self_weight + w[2]) * own + w[1] * np.full(4, 2.0)
    np.testing.assert_allclose(peer.params(JOB), expected, rtol=0, atol=1e-15)


def test_stale_and_far_ahead_rounds(pair: tuple[Memory, Sink, PeerLogic]) -> None:
    _transport, _sink, peer = pair
    peer.receive(_message(round_=3))  # ahead: kept for later
    peer.run_round(JOB)
    before = peer.params(JOB)
    with pytest.raises(StaleRound, match="older"):
        peer.receive(_message(round_=0))
    np.testing.assert_array_equal(peer.params(JOB), before)
    job = _ring3_job(job_id="long", rounds=500)
    logic = PeerLogic(Memory(), Sink(), clock=FakeClock(), max_rounds_ahead=5)
    logic.install(job)
    logic.receive(GossipMessage("long", 5, 1, np.ones(4)))
    with pytest.raises(Overloaded, match="more than 5 rounds ahead"):
        logic.receive(GossipMessage("long", 6, 1, np.ones(4)))


# --------------------------------------------------------------------------- rounds and reports


def test_straggling_deadlines_and_reports() -> None:
    data = _data()
    topology = build_topology("ring", 3, np.random.default_rng(0))
    scheme = gossip_scheme("goco", 3, 0.5, replication=2)
    placed = place_partitions(data, scheme.code, non_iid=True)

    class Fixed:
        def __init__(self, seconds: list[float]) -> None:
            self.seconds = seconds

        def extra_seconds(self, round_: int, load_fraction: float) -> float:
            assert load_fraction == pytest.approx(2 / 3)
            return self.seconds[round_]

    class Slow(LeastSquares):
        """Least squares whose real compute takes 0.25 s of the fake clock per partition."""

        clock = FakeClock()
        calls = 0

        def gradient(self, params: Any, X: Any, y: Any, reg_share: float = 1.0) -> np.ndarray:
            type(self).calls += 1
            self.clock.t += 0.25
            return super().gradient(params, X, y, reg_share)

    def peer(wait: bool, seconds: list[float]) -> tuple[PeerLogic, Memory, Sink]:
        job = PeerJob.from_topology(
            JOB, topology, 0, gossip_scheme("gossip-wait" if wait else "goco", 3, 0.5),
            Slow(), placed[0], StepSchedule(0.01), np.zeros(4),
            rounds=4, compute_deadline=1.0, gossip_deadline=0.5, report_params_every=2,
        )  # fmt: skip
        Slow.clock, Slow.calls = FakeClock(), 0
        transport, sink = Memory(), Sink()  # neighbours 1 and 2 never answer
        logic = PeerLogic(transport, sink, clock=Slow.clock, straggle=Fixed(seconds))
        logic.install(job)
        return logic, transport, sink

    # real compute 2 x 0.25 s, plus: 0.3 s (in time); 0.7 s (past the deadline only with the
    # real compute: the result is dropped at the deadline); 30 s (longer than the deadline on
    # its own: the real compute is skipped too); 0.5 s (exactly at the deadline: in time)
    logic, transport, sink = peer(False, [0.3, 0.7, 30.0, 0.5])
    for _ in range(4):
        logic.run_round(JOB)
    reports = sink.reports
    assert [r.skipped_gradient for r in reports] == [False, True, True, False]
    assert [r.compute_seconds for r in reports] == pytest.approx([0.8, 1.0, 1.0, 1.0])
    assert Slow.calls == 6
    # nobody answers on this 3-ring: each round also waits the whole gossip deadline
    assert [r.round_seconds for r in reports] == pytest.approx([1.3, 1.5, 1.5, 1.5])
    assert Slow.clock.t == pytest.approx(5.8)
    assert [r.missing for r in reports] == [(1, 2)] * 4
    assert [r.params is not None for r in reports] == [False, True, False, True]
    assert [r.step_size for r in reports] == pytest.approx([0.01] * 4)
    for report, message in zip(reports, transport.sent, strict=True):
        assert report.params_norm == pytest.approx(np.linalg.norm(message.params))
    # a straggler still gossips: it sends its x unchanged (here x after round 0 = its own x')
    assert [m.round for m in transport.sent] == [0, 1, 2, 3]
    np.testing.assert_array_equal(transport.sent[1].params, transport.sent[0].params)
    np.testing.assert_array_equal(transport.sent[2].params, transport.sent[1].params)
    assert not np.array_equal(transport.sent[3].params, transport.sent[2].params)

    # gossip-wait never skips, it waits the straggler out
    logic, transport, sink = peer(True, [0.3, 30.0, 0.0, 0.7])
    for _ in range(4):
        logic.run_round(JOB)
    assert [r.skipped_gradient for r in sink.reports] == [False] * 4
    assert [r.compute_seconds for r in sink.reports] == pytest.approx([0.8, 30.5, 0.5, 1.2])
    assert Slow.calls == 8


def test_gossip_seconds_per_neighbour() -> None:
    data = _data()
    topology = build_topology("ring", 3, np.random.default_rng(0))
    scheme = gossip_scheme("goco", 3, 0.3, replication=2)
    transport, _sink, clocks = _network(topology, scheme, data, StepSchedule(0.0), 2)
    peer = transport.peers[0]
    transport.peers[1].start_round(JOB)  # neighbour 1 is early: its value waits for peer 0
    clocks[0].t = 5.0
    peer.start_round(JOB)
    clocks[0].t = 5.25  # neighbour 2 arrives 0.25 s after peer 0 sent
    peer.receive(GossipMessage(JOB, 0, 2, np.zeros(4)))
    report = peer.finish_round(JOB)
    assert report.gossip_seconds == {1: 0.0, 2: 0.25}
    assert report.missing == ()


def test_jobs_and_misuse() -> None:
    data = _data()
    topology = build_topology("ring", 3, np.random.default_rng(0))
    scheme = gossip_scheme("goco", 3, 0.3, replication=2)
    transport, _sink, _ = _network(topology, scheme, data, StepSchedule(0.0), 2)
    peer = transport.peers[0]
    with pytest.raises(RuntimeError, match="not started"):
        peer.finish_round(JOB)
    peer.start_round(JOB)
    with pytest.raises(RuntimeError, match="already started"):
        peer.start_round(JOB)
    assert peer.drop(JOB) and not peer.drop(JOB)
    for call in (peer.start_round, peer.finish_round, peer.params, peer.current_round):
        with pytest.raises(UnknownJob):
            call(JOB)
    with pytest.raises(UnknownJob):
        peer.receive(_message())


def test_a_round_in_flight_ends_when_its_job_is_dropped_or_replaced() -> None:
    job = _ring3_job()
    peer = PeerLogic(Memory(), Sink(), clock=FakeClock())
    peer.install(job)
    peer.start_round(JOB)
    peer.install(job)  # replaced: the old round is abandoned, the new job starts at round 0
    with pytest.raises(RuntimeError, match="not started"):
        peer.finish_round(JOB)
    assert peer.current_round(JOB) == 0

    waiting = threading.Event()

    class Signalling(MonotonicClock):
        def wait(self, event: threading.Event, seconds: float) -> bool:
            waiting.set()
            return super().wait(event, seconds)

    # dropped while it waits (up to 60 s) for its neighbours: the wait ends at once
    logic = PeerLogic(Memory(), Sink(), clock=Signalling())
    logic.install(_ring3_job(gossip_deadline=60.0))
    logic.start_round(JOB)
    waiting.clear()
    errors: list[BaseException] = []

    def finish() -> None:
        try:
            logic.finish_round(JOB)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=finish, daemon=True)
    thread.start()
    assert waiting.wait(timeout=30)
    logic.drop(JOB)
    thread.join(timeout=30)
    assert not thread.is_alive() and len(errors) == 1 and isinstance(errors[0], UnknownJob)


def test_runtime_straggle_draws_one_sample_per_round() -> None:
    runtime = BernoulliRuntime(shift=2.0, rate=1e9, p_straggle=0.5, slow_factor=4.0)
    emulation = RuntimeStraggle(runtime, np.random.default_rng(0))
    seconds = np.array([emulation.extra_seconds(t, 0.5) for t in range(400)])
    assert np.all(np.isclose(seconds, 1.0, atol=1e-6) | np.isclose(seconds, 4.0, atol=1e-6))
    assert 0.4 <= np.mean(seconds > 2.0) <= 0.6


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"job_id": ""}, ValueError, "job_id"),
        ({"neighbours": (0, 1)}, ValueError, "exclude peer"),
        ({"neighbours": (1, 1)}, ValueError, "distinct"),
        ({"neighbour_weights": (0.5,)}, ValueError, "2 finite numbers"),
        ({"self_weight": 0.5}, ValueError, "row sum of 1"),
        ({"data": ()}, ValueError, "at least one partition"),
        ({"n_partitions": 1}, ValueError, "n_partitions"),
        ({"coefficient": 0.0}, ValueError, "coefficient"),
        ({"rounds": -1}, ValueError, "rounds"),
        ({"compute_deadline": 0.0}, ValueError, "compute_deadline"),
        ({"gossip_deadline": float("inf")}, ValueError, "gossip_deadline"),
        ({"report_params_every": -1}, ValueError, "report_params_every"),
        ({"initial_params": np.zeros(7)}, InvalidInput, "params"),
        ({"initial_params": np.array([np.nan, 0, 0, 0])}, InvalidInput, "finite"),
    ],
)
def test_peer_job_validation(change: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        _ring3_job(**change)
