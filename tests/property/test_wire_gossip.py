"""Gossip records on the wire (edgecode.wire.gossip): every record survives a round trip, and
malformed messages are refused naming the field."""

from __future__ import annotations

import math
from dataclasses import fields, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecode import wire
from edgecode.errors import InvalidInput
from edgecode.gossip_records import (
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
from edgecode.v1 import common_pb2, coordinator_pb2, peer_pb2

finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


def assignment(**changes: Any) -> PeerAssignment:
    base = PeerAssignment(
        job_id="job-1",
        scheme="goco",
        peer=2,
        n_peers=5,
        neighbours=(
            NeighbourLink(1, "peer-1", "peer-1.peers.edgecode.svc:50051", 0.25),
            NeighbourLink(3, "peer-3", "10.0.0.3:50051", 0.25),
        ),
        self_weight=0.5,
        model="logistic",
        n_features=3,
        n_classes=2,
        l2=0.01,
        partitions=(1, 2),
        rows=(10, 11),
        n_partitions=5,
        coefficient=0.625,
        step_initial=0.05,
        step_decay_rounds=50.0,
        rounds=100,
        compute_deadline_seconds=0.4,
        gossip_deadline_seconds=1.5,
        wait_for_gradient=False,
        report_params_every=10,
        straggle="bernoulli:p=0.2,factor=5",
        compute_seconds=0.1,
        emulation_seed=9,
        initial_params=np.array([0.1, -0.2, 0.3, 0.0]),
    )
    return replace(base, **changes)


def same_assignment(a: PeerAssignment, b: PeerAssignment) -> None:
    for f in fields(PeerAssignment):
        left, right = getattr(a, f.name), getattr(b, f.name)
        if isinstance(left, np.ndarray):
            np.testing.assert_array_equal(left, right)
        else:
            assert left == right, f.name


@pytest.mark.parametrize("decay", [50.0, math.inf])
def test_peer_header_round_trip(decay: float) -> None:
    a = assignment(step_decay_rounds=decay, wait_for_gradient=decay == math.inf)
    same_assignment(wire.peer_header_from_proto(wire.peer_header_to_proto(a)), a)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda h: setattr(h, "job_id", "a b"), "job_id"),
        (lambda h: setattr(h, "model", "torch:evil:module"), "model"),
        (lambda h: h.initial_params.CopyFrom(common_pb2.Tensor()), "initial_params"),
        (lambda h: setattr(h.initial_params, "dtype", "float32"), "initial_params"),
        (
            lambda h: h.initial_params.CopyFrom(wire.tensor_to_proto(np.array([np.nan, 0.0]))),
            "NaN",
        ),
        (lambda h: h.neighbours[0].__setattr__("weight", -0.1), "weight"),
        (lambda h: h.neighbours[0].__setattr__("index", 7), "neighbour index"),
        (lambda h: h.partitions.append(4), "row count"),
        (lambda h: setattr(h, "rounds", 2_000_000), "rounds"),
        (lambda h: setattr(h, "gossip_deadline_seconds", float("inf")), "gossip_deadline"),
        (lambda h: setattr(h, "coefficient", float("nan")), "coefficient"),
        (lambda h: setattr(h, "emulation_seed", -1), "emulation_seed"),
        (lambda h: setattr(h, "n_peers", 1), "n_peers"),
    ],
)
def test_bad_peer_headers_are_refused(edit: Any, match: str) -> None:
    header = wire.peer_header_to_proto(assignment())
    edit(header)
    with pytest.raises(InvalidInput, match=match):
        wire.peer_header_from_proto(header)


def test_too_many_neighbours_are_refused_before_anything_is_built() -> None:
    header = wire.peer_header_to_proto(assignment())
    header.neighbours.extend(peer_pb2.Neighbour(index=1) for _ in range(2000))
    with pytest.raises(InvalidInput, match="at most 1024 neighbours"):
        wire.peer_header_from_proto(header)


@settings(max_examples=50, deadline=None)
@given(
    round_=st.integers(0, 10**6),
    seconds=st.tuples(finite, finite, finite, finite),
    skipped=st.booleans(),
    waits=st.dictionaries(st.integers(0, 100), st.one_of(st.none(), finite), max_size=6),
    params=st.one_of(st.none(), st.lists(st.floats(-1e9, 1e9), min_size=1, max_size=8)),
)
def test_round_reports_round_trip(
    round_: int,
    seconds: tuple[float, float, float, float],
    skipped: bool,
    waits: dict[int, float | None],
    params: list[float] | None,
) -> None:
    report = RoundReport(
        job_id="j",
        peer=4,
        round=round_,
        round_seconds=seconds[0],
        compute_seconds=seconds[1],
        skipped_gradient=skipped,
        step_size=seconds[2],
        gossip_seconds=waits,
        missing=tuple(n for n, s in waits.items() if s is None),
        params_norm=seconds[3],
        params=None if params is None else np.array(params),
        local_consensus=seconds[3],
    )
    answer = PeerReports("running", round_ + 1, 10**6 + 1, "", (TimedReport(report, 2.5),), 3)
    back = wire.peer_reports_from_proto(wire.peer_reports_to_proto(answer), "j", 4)
    assert (back.state, back.round, back.rounds, back.dropped) == (
        "running",
        round_ + 1,
        10**6 + 1,
        3,
    )
    got = back.reports[0]
    assert got.job_seconds == 2.5
    for f in fields(RoundReport):
        left, right = getattr(got.report, f.name), getattr(report, f.name)
        if f.name == "params":
            assert (left is None) == (right is None)
            if left is not None:
                np.testing.assert_array_equal(left, right)
        elif f.name == "gossip_seconds":
            assert dict(left) == dict(right)
        else:
            assert left == right, f.name


def test_reports_name_the_peer_asked_not_the_one_claimed() -> None:
    message = peer_pb2.PeerRoundReport(round=1)
    assert wire.round_report_from_proto(message, "job", 7).report.peer == 7


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda r: setattr(r, "round_seconds", float("nan")), "round_seconds"),
        (lambda r: setattr(r, "job_seconds", -1.0), "job_seconds"),
        (lambda r: setattr(r, "round", -3), "round"),
        (lambda r: r.gossip.add(neighbour=1, arrived=True, seconds=float("inf")), "gossip"),
        (lambda r: r.params.CopyFrom(wire.tensor_to_proto(np.array([np.inf]))), "params"),
    ],
)
def test_bad_reports_are_refused(edit: Any, match: str) -> None:
    message = peer_pb2.PeerRoundReport(round=1)
    edit(message)
    with pytest.raises(InvalidInput, match=match):
        wire.round_report_from_proto(message, "job", 0)


specs = st.builds(
    GossipJobSpec,
    job_id=st.sampled_from(["", "job-7", "a_b"]),
    graph=st.sampled_from(["ring", "torus", "er:p=0.5", "complete"]),
    peers=st.integers(0, 1024).filter(lambda n: n != 1),
    scheme=st.sampled_from(["goco", "gossip", "gossip-wait"]),
    replication=st.integers(1, 64),
    straggle_probability=st.floats(0.0, 0.99),
    non_iid=st.booleans(),
    rounds=st.integers(1, 100_000),
    learning_rate=st.floats(0.0, 10.0),
    decay_rounds=st.floats(0.0, 1e6),
    partition_deadline_seconds=st.floats(1e-3, 3600.0),
    gossip_deadline_seconds=st.floats(1e-3, 3600.0),
    report_params_every=st.integers(0, 1000),
    seed=st.integers(0, 2**63 - 1),
    compute_seconds=st.floats(0.0, 10.0),
)


@settings(max_examples=60, deadline=None)
@given(spec=specs)
def test_gossip_specs_round_trip(spec: GossipJobSpec) -> None:
    assert wire.gossip_spec_from_proto(wire.gossip_spec_to_proto(spec)) == spec


def test_an_explicit_edge_list_and_zeros_survive() -> None:
    spec = GossipJobSpec(graph="", edges=((0, 1), (1, 2), (2, 0)), seed=0, non_iid=False, rounds=1)
    message = wire.gossip_spec_to_proto(spec)
    assert list(message.edges) == [0, 1, 1, 2, 2, 0]
    assert wire.gossip_spec_from_proto(message) == spec
    # unset numbers take the defaults
    assert wire.gossip_spec_from_proto(coordinator_pb2.GossipJobSpec()) == GossipJobSpec()


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"edges": [0, 1, 2]}, "pairs"),
        ({"graph": "../../etc/edges.txt"}, "graph must be a graph kind"),
        ({"graph": "ring", "edges": [0, 1]}, "either a graph kind or an explicit edge list"),
        ({"rounds": 0}, "rounds"),
        ({"rounds": 100_001}, "rounds must be in"),
        ({"peers": 1}, "at least 2"),
        ({"replication": 0}, "replication"),
        ({"straggle_probability": 1.0}, "straggle_probability"),
        ({"gossip_deadline_seconds": 0.0}, "gossip_deadline_seconds must be > 0"),
        ({"model": "torch:x:y"}, "model"),
        ({"dataset": "x" * 600}, "dataset"),
        ({"job_id": "with space"}, "job_id"),
        ({"learning_rate": float("nan")}, "learning_rate"),
    ],
)
def test_bad_gossip_specs_are_refused(values: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        wire.gossip_spec_from_proto(coordinator_pb2.GossipJobSpec(**values))


def test_gossip_status_round_trip_and_filters() -> None:
    timings = (
        PeerRoundTiming(0, 0.5, 0.2, 0.3, True, 1),
        PeerRoundTiming(1, 0.4, 0.1, 0.3, False, 0),
    )
    records = tuple(
        GossipRoundRecord(
            r, 2, 1.0 / (r + 1), math.nan if r == 0 else 0.1, 0.01, 1, 1, r + 0.5, 0.5, timings
        )
        for r in range(4)
    )
    status = GossipJobStatus(
        job_id="job",
        state="running",
        spec=GossipJobSpec(job_id="job"),
        message="continuing",
        graph="ring",
        n_peers=2,
        slem=0.5,
        spectral_gap=0.5,
        peer_names=("peer-0", "peer-1"),
        dead=(1,),
        unresponsive=(0,),
        rounds_done=4,
        records=records,
        initial_loss=3.0,
        setup_seconds=0.25,
    )
    full = wire.gossip_status_from_proto(wire.gossip_status_to_proto(status, 0, True))
    assert replace(full, records=()) == replace(status, records=())
    assert len(full.records) == 4
    for got, want in zip(full.records, records, strict=True):
        assert replace(got, gap=0.0) == replace(want, gap=0.0)
        assert (math.isnan(got.gap) and math.isnan(want.gap)) or got.gap == want.gap
    short = wire.gossip_status_from_proto(wire.gossip_status_to_proto(status, 2, False))
    assert [r.round for r in short.records] == [2, 3]
    assert all(r.peer_timings == () for r in short.records)
