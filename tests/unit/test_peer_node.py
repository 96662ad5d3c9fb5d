"""A peer process's jobs (edgecode.peer.node): install, run, keep reports (bounded), stop."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from edgecode.errors import InvalidInput, NotAllowed, Overloaded, StaleRound, UnknownJob
from edgecode.gossip_records import FINISHED, PLACED, NeighbourLink, PeerAssignment, RoundReport
from edgecode.peer.logic import GossipMessage
from edgecode.peer.node import JobBuilder, PeerNode

N_FEATURES = 2


class Hand:
    """The transport of a peer whose one neighbour (peer 1) is played by the test."""

    def __init__(self) -> None:
        self.sent: list[GossipMessage] = []
        self.closed = 0

    def send(self, message: GossipMessage, neighbours: Sequence[int]) -> None:
        self.sent.append(message)

    def close(self) -> None:
        self.closed += 1


class Metrics:
    def __init__(self) -> None:
        self.rounds: list[tuple[str, RoundReport, dict[int, str]]] = []
        self.held: list[dict[str, int]] = []
        self.neighbours: list[list[str]] = []

    def round_done(self, scheme: str, report: RoundReport, names: Any) -> None:
        self.rounds.append((scheme, report, dict(names)))

    def known_neighbours(self, names: Any) -> None:
        self.neighbours.append(list(names))

    def jobs_held(self, counts: Any) -> None:
        self.held.append(dict(counts))


def assignment(**changes: Any) -> PeerAssignment:
    base = PeerAssignment(
        job_id="j",
        scheme="gossip",
        peer=0,
        n_peers=2,
        neighbours=(NeighbourLink(1, "peer-1", "127.0.0.1:9", 0.5),),
        self_weight=0.5,
        model="least_squares",
        n_features=N_FEATURES,
        n_classes=1,
        l2=0.0,
        partitions=(0,),
        rows=(3,),
        n_partitions=2,
        coefficient=1.0,
        step_initial=0.1,
        step_decay_rounds=float("inf"),
        rounds=3,
        compute_deadline_seconds=5.0,
        gossip_deadline_seconds=5.0,
        wait_for_gradient=False,
        report_params_every=1,
        straggle="",
        compute_seconds=0.0,
        emulation_seed=0,
        initial_params=np.zeros(N_FEATURES + 1),
    )
    return replace(base, **changes)


X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
Y = np.array([1.0, 2.0, 3.0])


def placed(node: PeerNode, **changes: Any) -> PeerAssignment:
    a = assignment(**changes)
    builder = node.begin(a)
    builder.add(0, X[:2], Y[:2])
    builder.add(0, X[2:], Y[2:])
    assert node.install(builder) == (1, 3)
    return a


@pytest.fixture
def hand() -> Hand:
    return Hand()


@pytest.fixture
def node(hand: Hand) -> PeerNode:
    return PeerNode("peer-0", lambda links, timeout: hand, metrics=Metrics())


def neighbour_plays(node: PeerNode, rounds: int, value: float = 1.0) -> None:
    for r in range(rounds):
        node.receive("j", r, 1, np.full(N_FEATURES + 1, value))


def test_a_job_runs_and_reports(node: PeerNode, hand: Hand) -> None:
    placed(node)
    assert node.jobs() == {"j": PLACED}
    neighbour_plays(node, 3)
    assert node.start("j") == 0
    assert node.wait("j", 10.0) == FINISHED
    answer = node.reports("j")
    assert answer.state == FINISHED and answer.round == 3 and answer.rounds == 3
    assert [t.report.round for t in answer.reports] == [0, 1, 2]
    assert [m.round for m in hand.sent] == [0, 1, 2]
    # by hand: x' = x - 0.1 * grad, then x <- (x' + 1) / 2
    from edgecode.learning.models import LeastSquares

    x = np.zeros(3)
    for t in answer.reports:
        x = 0.5 * (x - 0.1 * LeastSquares().gradient(x, X, Y, reg_share=0.5)) + 0.5
        assert t.report.params is not None
        np.testing.assert_allclose(t.report.params, x, rtol=1e-12)
        assert t.job_seconds >= t.report.round_seconds >= 0
    # the local consensus of the two mixed values (x' and the neighbour's 1s)
    last = answer.reports[-1].report
    own = hand.sent[-1].params
    spread = np.array([own, np.ones(3)])
    expected = float(np.sum((spread - spread.mean(axis=0)) ** 2) / 2)
    assert last.local_consensus == pytest.approx(expected, rel=1e-12)
    assert node.reports("j", from_round=2).reports[0].report.round == 2
    assert node.reports("j", max_reports=1).reports[0].report.round == 0


def test_metrics_see_every_round_with_neighbour_names(hand: Hand) -> None:
    metrics = Metrics()
    node = PeerNode("peer-0", lambda links, timeout: hand, metrics=metrics)
    placed(node, scheme="goco")
    neighbour_plays(node, 3)
    node.start("j")
    node.wait("j", 10.0)
    assert [(s, r.round, names) for s, r, names in metrics.rounds] == [
        ("goco", r, {1: "peer-1"}) for r in range(3)
    ]
    assert metrics.held[-1] == {"placed": 0, "running": 0, "finished": 1, "failed": 0}
    assert metrics.neighbours == [["peer-1"]]


def test_reports_are_bounded_and_say_what_was_dropped(hand: Hand) -> None:
    node = PeerNode("peer-0", lambda links, timeout: hand, max_reports=4)
    placed(node, rounds=10)
    neighbour_plays(node, 10)
    node.start("j")
    node.wait("j", 10.0)
    answer = node.reports("j")
    assert [t.report.round for t in answer.reports] == [6, 7, 8, 9] and answer.dropped == 6
    assert node.reports("j", from_round=4).dropped == 2
    assert node.reports("j", from_round=6).dropped == 0
    # a byte budget too: 24 bytes of parameters per report, 50 bytes kept at most
    small = PeerNode("peer-0", lambda links, timeout: hand, max_report_bytes=50)
    placed(small, rounds=5)
    neighbour_plays(small, 5)
    small.start("j")
    small.wait("j", 10.0)
    assert [t.report.round for t in small.reports("j").reports] == [3, 4]


def test_values_are_validated_and_refusals_change_nothing(node: PeerNode) -> None:
    placed(node)
    good = np.ones(N_FEATURES + 1)
    cases: list[tuple[Any, type[Exception]]] = [
        (("j", 0, 1, np.ones(2)), InvalidInput),
        (("j", 0, 1, np.array([1.0, np.nan, 0.0])), InvalidInput),
        (("j", 0, 5, good), NotAllowed),
        (("j", 0, 0, good), NotAllowed),
        (("j", 3, 1, good), InvalidInput),
        (("j", -1, 1, good), InvalidInput),
        (("other", 0, 1, good), UnknownJob),
        (("../etc", 0, 1, good), InvalidInput),
        (("x" * 65, 0, 1, good), InvalidInput),
    ]
    for args, error in cases:
        with pytest.raises(error):
            node.receive(*args)
    node.receive("j", 0, 1, good)
    node.receive("j", 0, 1, good)  # the same value again is fine
    with pytest.raises(InvalidInput, match="different value"):
        node.receive("j", 0, 1, 2 * good)
    node.start("j")
    neighbour_plays(node, 3)
    node.wait("j", 10.0)
    with pytest.raises(StaleRound):
        node.receive("j", 1, 1, good)
    x = node.reports("j").reports[0].report.params
    assert x is not None  # round 0 mixed the first value only
    assert np.all(np.isfinite(x))


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"model": "torch:os:system"}, InvalidInput, "model must be one of"),
        ({"scheme": "push-sum"}, InvalidInput, "scheme"),
        ({"job_id": "a/b"}, InvalidInput, "job_id"),
        ({"peer": 2}, InvalidInput, "peer must be in"),
        ({"neighbours": ()}, InvalidInput, "neighbours must list"),
        ({"rounds": 0}, InvalidInput, "rounds"),
        ({"gossip_deadline_seconds": float("nan")}, InvalidInput, "gossip_deadline"),
        ({"compute_deadline_seconds": 0.0}, InvalidInput, "compute_deadline"),
        ({"partitions": (0, 0), "rows": (3, 3)}, InvalidInput, "distinct"),
        ({"partitions": (2,)}, InvalidInput, "partition must be in"),
        ({"rows": (3, 3)}, InvalidInput, "one row count each"),
        (
            {"neighbours": (NeighbourLink(1, "peer-1", "x" * 300, 0.5),)},
            InvalidInput,
            "address",
        ),
        ({"straggle": "bernoulli:p=2\n"}, InvalidInput, "straggle"),
    ],
)
def test_bad_headers_are_refused(
    node: PeerNode, change: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        node.begin(assignment(**change))
    assert node.jobs() == {}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"self_weight": 0.6}, "row sum"),
        ({"initial_params": np.zeros(5)}, "initial_params must have shape"),
        ({"straggle": "wobbly"}, "straggle"),
        ({"rows": (4,)}, "3 of its 4 rows"),
    ],
)
def test_bad_jobs_are_refused_at_install(
    node: PeerNode, change: dict[str, Any], match: str
) -> None:
    builder = node.begin(assignment(**change))
    builder.add(0, X, Y)
    with pytest.raises(ValueError, match=match):
        node.install(builder)
    assert node.jobs() == {}


def test_bad_chunks_are_refused(node: PeerNode) -> None:
    builder = JobBuilder(assignment())
    with pytest.raises(InvalidInput, match="does not list"):
        builder.add(1, X, Y)
    with pytest.raises(InvalidInput, match="columns"):
        builder.add(0, np.ones((3, 3)), Y)
    with pytest.raises(InvalidInput, match="labels"):
        builder.add(0, X, Y[:2])
    builder.add(0, X, Y)
    with pytest.raises(InvalidInput, match="more than its 3 rows"):
        builder.add(0, X[:1], Y[:1])


def test_replace_stop_and_room_for_jobs(hand: Hand) -> None:
    node = PeerNode("peer-0", lambda links, timeout: hand, max_jobs=2)
    placed(node, job_id="a", rounds=1000)
    node.start("a")
    placed(node, job_id="a", rounds=2)  # replaces the running one
    assert node.jobs() == {"a": PLACED} and hand.closed == 1
    placed(node, job_id="b")
    with pytest.raises(Overloaded):
        placed(node, job_id="c")
    neighbour_plays_job(node, "b", 3)
    node.start("b")
    assert node.wait("b", 10.0) == FINISHED
    placed(node, job_id="c")  # the finished job made room
    assert set(node.jobs()) == {"a", "c"}
    assert node.stop("a") and not node.stop("a")
    with pytest.raises(UnknownJob):
        node.start("a")
    with pytest.raises(UnknownJob):
        node.reports("a")
    node.close()
    assert node.jobs() == {}


def neighbour_plays_job(node: PeerNode, job_id: str, rounds: int) -> None:
    for r in range(rounds):
        node.receive(job_id, r, 1, np.ones(N_FEATURES + 1))


def test_a_round_in_flight_is_abandoned_on_stop(hand: Hand) -> None:
    node = PeerNode("peer-0", lambda links, timeout: hand)
    placed(node, gossip_deadline_seconds=600.0)  # the neighbour never answers
    node.start("j")
    done = threading.Event()
    threading.Thread(target=lambda: (node.wait("j", 30.0), done.set()), daemon=True).start()
    assert not done.wait(0.2)
    assert node.stop("j")
    assert done.wait(10.0)


def test_a_failing_job_fails_alone(hand: Hand) -> None:
    class Broken(Hand):
        def send(self, message: GossipMessage, neighbours: Sequence[int]) -> None:
            raise RuntimeError("wire cut")

    node = PeerNode("peer-0", lambda links, timeout: Broken())
    placed(node)
    node.start("j")
    assert node.wait("j", 10.0) == "failed"
    answer = node.reports("j")
    assert answer.state == "failed" and "wire cut" in answer.message


def test_per_job_emulation_is_seeded(hand: Hand) -> None:
    """The same emulation seed gives the same straggle pattern (common random numbers across
    the schemes of a comparison); peers' own seeds differ."""

    def pattern(seed: int, peer_seed: int) -> list[bool]:
        node = PeerNode("peer-0", lambda links, timeout: hand, seed=peer_seed)
        placed(
            node,
            rounds=20,
            straggle="bernoulli:p=0.5,factor=100",
            compute_seconds=0.002,
            compute_deadline_seconds=0.01,
            emulation_seed=seed,
        )
        neighbour_plays(node, 20)
        node.start("j")
        node.wait("j", 30.0)
        return [t.report.skipped_gradient for t in node.reports("j").reports]

    first = pattern(1, 7)
    assert first == pattern(1, 7) and 3 <= sum(first) <= 17
    assert first != pattern(2, 7) and first != pattern(1, 8)
