"""Gossip records on the wire (edgecode.wire.gossip), fast: every field of every record survives a
round trip with a distinct non-default value, the encodings of "unset" (a decay of 0, a missing
wait, an absent number), every refusal with its message naming the field, and the size limits
checked before anything is built. The Hypothesis round trips are in
tests/property/test_wire_gossip.py.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace
from typing import Any

import numpy as np
import pytest

from edgecode.errors import InvalidInput
from edgecode.gossip_records import (
    MAX_PARTITIONS,
    MAX_PEERS,
    GossipJobSpec,
    GossipJobStatus,
    GossipRoundRecord,
    NeighbourLink,
    PeerAssignment,
    PeerReports,
    PeerRoundTiming,
    RoundReport,
    TimedReport,
)
from edgecode.v1 import coordinator_pb2, peer_pb2
from edgecode.wire.gossip import (
    GOSSIP_STATES,
    PEER_STATES,
    gossip_params_from_proto,
    gossip_request,
    gossip_spec_from_proto,
    gossip_spec_to_proto,
    gossip_status_from_proto,
    gossip_status_to_proto,
    peer_header_from_proto,
    peer_header_to_proto,
    peer_reports_from_proto,
    peer_reports_to_proto,
    round_report_from_proto,
    round_report_to_proto,
)
from edgecode.wire.tensors import tensor_to_proto


def wire_trip(message: Any) -> Any:
    """The message as the other side parses it."""
    return type(message).FromString(message.SerializeToString())


# ---- a peer's job header -----------------------------------------------------------------------


def assignment(**changes: Any) -> PeerAssignment:
    base = PeerAssignment(
        job_id="job-3",
        scheme="gossip-wait",
        peer=1,
        n_peers=4,
        neighbours=(
            NeighbourLink(0, "p-0", "10.0.0.1:50051", 0.25),
            NeighbourLink(2, "p-2", "p-2.svc:50051", 0.125),
        ),
        self_weight=0.625,
        model="softmax",
        n_features=6,
        n_classes=3,
        l2=0.001,
        partitions=(5, 2),
        rows=(30, 31),
        n_partitions=8,
        coefficient=0.75,
        step_initial=0.05,
        step_decay_rounds=40.0,
        rounds=120,
        compute_deadline_seconds=0.4,
        gossip_deadline_seconds=1.5,
        wait_for_gradient=True,
        report_params_every=7,
        straggle="bernoulli:p=0.2,factor=5",
        compute_seconds=0.1,
        emulation_seed=9,
        initial_params=np.array([0.5, -0.25, 2.0]),
    )
    return replace(base, **changes)


def assert_same_assignment(got: PeerAssignment, want: PeerAssignment) -> None:
    for f in fields(PeerAssignment):
        left, right = getattr(got, f.name), getattr(want, f.name)
        if isinstance(right, np.ndarray):
            assert left.dtype == np.float64 and np.array_equal(left, right), f.name
        else:
            assert left == right and type(left) is type(right), f.name


def test_peer_headers_round_trip_with_every_field() -> None:
    want = assignment()
    got = peer_header_from_proto(wire_trip(peer_header_to_proto(want)))
    assert_same_assignment(got, want)
    assert got.initial_params.flags.writeable  # a copy the peer may update in place


def test_a_constant_step_travels_as_a_decay_of_zero() -> None:
    header = peer_header_to_proto(assignment(step_decay_rounds=math.inf))
    assert header.step_decay_rounds == 0.0
    assert peer_header_from_proto(wire_trip(header)).step_decay_rounds == math.inf


def test_integer_initial_params_are_sent_as_float64() -> None:
    header = peer_header_to_proto(assignment(initial_params=np.array([1, 2])))
    assert header.initial_params.dtype == "float64"
    assert_same_assignment(
        peer_header_from_proto(header), assignment(initial_params=np.array([1.0, 2.0]))
    )


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda h: h.initial_params.Clear(), r"^initial_params: dtype '' is not one of"),
        (
            lambda h: h.initial_params.CopyFrom(tensor_to_proto(np.zeros(0))),
            r"^initial_params must not be empty$",
        ),
        (
            lambda h: h.initial_params.CopyFrom(tensor_to_proto(np.zeros(2, dtype=np.float32))),
            r"^initial_params: expected dtype float64, got float32$",
        ),
        (
            lambda h: h.initial_params.CopyFrom(tensor_to_proto(np.zeros((2, 1)))),
            r"^initial_params: expected shape \[None\], got \[2, 1\]$",
        ),
        (
            lambda h: h.initial_params.CopyFrom(tensor_to_proto(np.array([0.0, np.nan]))),
            r"^initial_params: contains NaN or infinite values$",
        ),
        (lambda h: setattr(h, "n_peers", 1), "n_peers"),
        (lambda h: setattr(h, "scheme", "flood"), "scheme"),
        (lambda h: setattr(h, "step_decay_rounds", -1.0), "step_decay_rounds"),
        (lambda h: h.neighbours[0].__setattr__("weight", 1.5), "neighbour weight"),
    ],
)
def test_bad_peer_headers_are_refused_naming_the_field(edit: Any, match: str) -> None:
    header = peer_header_to_proto(assignment())
    edit(header)
    with pytest.raises(InvalidInput, match=match):
        peer_header_from_proto(header)


def test_size_limits_are_checked_before_anything_is_built() -> None:
    header = peer_header_to_proto(assignment())
    header.neighbours.extend(peer_pb2.Neighbour(index=0) for _ in range(MAX_PEERS - 2))
    # at the limit the header is read, and the assignment refuses it for n_peers = 4
    with pytest.raises(InvalidInput, match=r"^neighbours must list 1 to 3 peers, got 1024$"):
        peer_header_from_proto(header)
    header.neighbours.add(index=0)
    with pytest.raises(
        InvalidInput,
        match=rf"^header: at most {MAX_PEERS} neighbours and {MAX_PARTITIONS} partitions, got "
        r"1025 and 2$",
    ):
        peer_header_from_proto(header)
    header = peer_header_to_proto(assignment())
    header.partitions.extend(range(MAX_PARTITIONS - 2))
    with pytest.raises(InvalidInput, match=r"^partitions must list 1 to 8 partitions"):
        peer_header_from_proto(header)
    header.partitions.append(0)
    with pytest.raises(InvalidInput, match=r"got 2 and 10001$"):
        peer_header_from_proto(header)
    header.initial_params.Clear()  # the size limit is checked first
    with pytest.raises(InvalidInput, match=r"^header: at most"):
        peer_header_from_proto(header)


def test_gossip_values_travel_as_float64_vectors() -> None:
    request = wire_trip(gossip_request("job-3", 12, 2, [1, 2, 3]))
    assert (request.job_id, request.round, request.sender) == ("job-3", 12, 2)
    values = gossip_params_from_proto(request)
    assert values.dtype == np.float64 and np.array_equal(values, [1.0, 2.0, 3.0])
    request.params.CopyFrom(tensor_to_proto(np.zeros(2, dtype=np.float32)))
    with pytest.raises(InvalidInput, match=r"^params: expected dtype float64, got float32$"):
        gossip_params_from_proto(request)
    request.params.CopyFrom(tensor_to_proto(np.zeros((1, 2))))
    with pytest.raises(InvalidInput, match=r"^params: expected shape \[None\]"):
        gossip_params_from_proto(request)
    request.params.CopyFrom(tensor_to_proto(np.array([np.inf])))
    with pytest.raises(InvalidInput, match=r"^params: contains NaN"):
        gossip_params_from_proto(request)


# ---- round reports -----------------------------------------------------------------------------


def report(params: np.ndarray | None, **changes: Any) -> RoundReport:
    base = RoundReport(
        job_id="job-3",
        peer=1,
        round=8,
        round_seconds=0.5,
        compute_seconds=0.25,
        skipped_gradient=True,
        step_size=0.125,
        gossip_seconds={0: 0.0625, 2: None, 3: 0.0},
        missing=(2,),
        params_norm=3.5,
        params=params,
        local_consensus=0.375,
    )
    return replace(base, **changes)


def assert_same_report(got: TimedReport, want: TimedReport) -> None:
    assert got.job_seconds == want.job_seconds
    for f in fields(RoundReport):
        left, right = getattr(got.report, f.name), getattr(want.report, f.name)
        if f.name == "params":
            assert (left is None) == (right is None)
            if right is not None:
                assert left.flags.writeable and np.array_equal(left, right)
        else:
            assert left == right, f.name


@pytest.mark.parametrize("params", [None, np.array([1.5, -2.0])])
def test_round_reports_round_trip_with_every_field(params: np.ndarray | None) -> None:
    timed = TimedReport(report(params), 12.5)
    message = wire_trip(round_report_to_proto(timed))
    assert message.HasField("params") == (params is not None)
    assert [(w.neighbour, w.arrived, w.seconds) for w in message.gossip] == [
        (0, True, 0.0625),
        (2, False, 0.0),
        (3, True, 0.0),
    ]
    assert_same_report(round_report_from_proto(message, "job-3", 1), timed)


def test_reports_belong_to_the_peer_asked_not_the_one_claimed() -> None:
    message = round_report_to_proto(TimedReport(report(None), 1.0))
    got = round_report_from_proto(message, "other-job", 5).report
    assert (got.job_id, got.peer) == ("other-job", 5)


def test_an_empty_report_is_round_zero_with_nothing_missing() -> None:
    timed = round_report_from_proto(peer_pb2.PeerRoundReport(), "j", 0)
    assert timed.job_seconds == 0.0 and timed.report.round == 0
    assert timed.report.gossip_seconds == {} and timed.report.missing == ()
    assert timed.report.params is None


@pytest.mark.parametrize(
    "name", ["round_seconds", "compute_seconds", "step_size", "params_norm", "job_seconds"]
)
@pytest.mark.parametrize("value", [math.nan, math.inf, -1e-300])
def test_bad_report_numbers_are_refused_naming_the_field(name: str, value: float) -> None:
    message = peer_pb2.PeerRoundReport(round=1, **{name: value})
    with pytest.raises(
        InvalidInput, match=rf"^report\.{name} must be a finite number >= 0, got {value}$"
    ):
        round_report_from_proto(message, "j", 0)


def test_bad_rounds_waits_and_params_are_refused() -> None:
    with pytest.raises(InvalidInput, match=r"^report\.round must be >= 0, got -1$"):
        round_report_from_proto(peer_pb2.PeerRoundReport(round=-1), "j", 0)
    for seconds in (math.nan, -math.inf, -0.5):
        message = peer_pb2.PeerRoundReport()
        message.gossip.add(neighbour=1, arrived=False, seconds=seconds)
        with pytest.raises(
            InvalidInput, match=rf"^report\.gossip seconds must be finite and >= 0, got {seconds}$"
        ):
            round_report_from_proto(message, "j", 0)
    message = peer_pb2.PeerRoundReport()
    message.params.CopyFrom(tensor_to_proto(np.zeros(2, dtype=np.int64)))
    with pytest.raises(InvalidInput, match=r"^report\.params: expected dtype float64"):
        round_report_from_proto(message, "j", 0)
    message.params.CopyFrom(tensor_to_proto(np.zeros((2, 2))))
    with pytest.raises(InvalidInput, match=r"^report\.params: expected shape \[None\]"):
        round_report_from_proto(message, "j", 0)


@pytest.mark.parametrize("state", ["placed", "running", "finished", "failed"])
def test_peer_reports_round_trip(state: str) -> None:
    reports = PeerReports(
        state=state,
        round=9,
        rounds=120,
        message="going",
        reports=(TimedReport(report(None), 1.5), TimedReport(report(np.ones(2), round=9), 2.5)),
        dropped=4,
    )
    back = peer_reports_from_proto(wire_trip(peer_reports_to_proto(reports)), "job-3", 1)
    assert (back.state, back.round, back.rounds, back.message, back.dropped) == (
        state,
        9,
        120,
        "going",
        4,
    )
    assert len(back.reports) == 2
    for got, want in zip(back.reports, reports.reports, strict=True):
        assert_same_report(got, want)


def test_unknown_states_are_refused() -> None:
    with pytest.raises(InvalidInput, match=r"^reports: unknown state 9$"):
        peer_reports_from_proto(peer_pb2.GetReportsResponse(state=9), "j", 0)  # type: ignore[arg-type]
    status = gossip_status_to_proto(GossipJobStatus("j", "running", GossipJobSpec()))
    status.state = 0  # type: ignore[assignment]
    with pytest.raises(InvalidInput, match=r"^gossip job status: unknown state 0$"):
        gossip_status_from_proto(status)


def test_every_state_has_its_own_wire_value() -> None:
    assert sorted(PEER_STATES) == ["failed", "finished", "placed", "running"]
    assert sorted(GOSSIP_STATES) == ["failed", "running", "starting", "stopped", "succeeded"]
    assert len(set(PEER_STATES.values())) == 4 and len(set(GOSSIP_STATES.values())) == 5
    assert 0 not in PEER_STATES.values() and 0 not in GOSSIP_STATES.values()


# ---- the coordinator's gossip jobs -------------------------------------------------------------


def spec(**changes: Any) -> GossipJobSpec:
    base = GossipJobSpec(
        job_id="g-1",
        graph="torus:rows=2",
        peers=6,
        scheme="gossip",
        replication=2,
        straggle_probability=0.25,
        dataset="synthetic-lsq:n=100,d=3,noise=1",
        model="least_squares",
        l2=0.5,
        non_iid=True,
        rounds=70,
        learning_rate=0.75,
        decay_rounds=30.0,
        partition_deadline_seconds=2.5,
        gossip_deadline_seconds=3.5,
        report_params_every=4,
        seed=11,
        straggle="bernoulli:p=0.1,factor=2",
        compute_seconds=0.125,
    )
    return replace(base, **changes)


def test_gossip_specs_round_trip_with_every_field() -> None:
    want = spec()
    assert all(getattr(want, f.name) != getattr(GossipJobSpec(), f.name) or f.name == "edges"
               for f in fields(GossipJobSpec))  # fmt: skip
    assert gossip_spec_from_proto(wire_trip(gossip_spec_to_proto(want))) == want


def test_an_edge_list_travels_flat() -> None:
    want = spec(graph="", edges=((0, 1), (1, 2), (2, 0)))
    message = wire_trip(gossip_spec_to_proto(want))
    assert list(message.edges) == [0, 1, 1, 2, 2, 0] and message.graph == ""
    assert gossip_spec_from_proto(message) == want


def test_unset_spec_fields_take_the_defaults_but_explicit_zeros_stay() -> None:
    assert gossip_spec_from_proto(coordinator_pb2.GossipJobSpec()) == GossipJobSpec()
    zeros = spec(peers=0, straggle_probability=0.0, l2=0.0, learning_rate=0.0, seed=0)
    zeros = replace(zeros, decay_rounds=0.0, report_params_every=0, compute_seconds=0.0)
    assert gossip_spec_from_proto(wire_trip(gossip_spec_to_proto(zeros))) == zeros
    message = coordinator_pb2.GossipJobSpec(rounds=5, scheme="", dataset="", model="", graph="")
    assert gossip_spec_from_proto(message) == GossipJobSpec(rounds=5)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"edges": [0, 1, 2]}, r"^edges must hold pairs, got 3 numbers$"),
        ({"edges": [5]}, r"^edges must hold pairs, got 1 numbers$"),
        ({"graph": "ring", "edges": [0, 1]}, r"^give either a graph kind or an explicit edge"),
        ({"rounds": 0}, "rounds"),
        ({"peers": 1}, r"^peers must be 0 \(all registered\) or at least 2, got 1$"),
        ({"scheme": "flood"}, "scheme"),
        ({"gossip_deadline_seconds": 0.0}, r"^gossip_deadline_seconds must be > 0$"),
    ],
)
def test_bad_gossip_specs_are_refused(values: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        gossip_spec_from_proto(coordinator_pb2.GossipJobSpec(**values))


def status(state: str = "running") -> GossipJobStatus:
    timings = (
        PeerRoundTiming(0, 0.5, 0.25, 0.125, True, 1),
        PeerRoundTiming(3, 0.75, 0.5, 0.0625, False, 2),
    )
    records = tuple(
        GossipRoundRecord(r, 5, 1.0 / (r + 1), 0.5 + r, 0.25 * r, r + 1, r + 2, r + 0.5, 0.375, timings)
        for r in range(4)
    )  # fmt: skip
    return GossipJobStatus(
        job_id="g-1",
        state=state,
        spec=spec(),
        message="on it",
        graph="torus",
        n_peers=5,
        slem=0.875,
        spectral_gap=0.125,
        peer_names=("p-0", "p-1"),
        dead=(4,),
        unresponsive=(2, 3),
        rounds_done=4,
        records=records,
        initial_loss=2.5,
        setup_seconds=0.625,
    )


@pytest.mark.parametrize("state", ["starting", "running", "succeeded", "failed", "stopped"])
def test_gossip_statuses_round_trip_with_every_field(state: str) -> None:
    want = status(state)
    assert gossip_status_from_proto(wire_trip(gossip_status_to_proto(want, 0, True))) == want


def test_status_records_from_a_round_and_without_peer_timings_by_default() -> None:
    want = status()
    got = gossip_status_from_proto(wire_trip(gossip_status_to_proto(want, 2)))
    assert [r.round for r in got.records] == [2, 3]
    assert got.records == tuple(replace(r, peer_timings=()) for r in want.records[2:])
    assert gossip_status_from_proto(gossip_status_to_proto(want)).records == tuple(
        replace(r, peer_timings=()) for r in want.records
    )
    assert gossip_status_from_proto(gossip_status_to_proto(want, 4, True)).records == ()


def test_a_bare_status_keeps_its_not_measured_numbers() -> None:
    bare = GossipJobStatus("g", "starting", GossipJobSpec())
    got = gossip_status_from_proto(wire_trip(gossip_status_to_proto(bare)))
    assert math.isnan(got.slem) and math.isnan(got.spectral_gap) and math.isnan(got.initial_loss)
    assert replace(got, slem=0.0, spectral_gap=0.0, initial_loss=0.0) == replace(
        bare, slem=0.0, spectral_gap=0.0, initial_loss=0.0
    )
