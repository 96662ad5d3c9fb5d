"""Gossip learning on the wire: a peer's job header, gossip values, round reports, and the
coordinator's gossip job spec and status (records of :mod:`edgecode.gossip_records`).

Every ``*_from_proto`` validates what it reads (InvalidInput naming the field): tensors through
:func:`~edgecode.wire.tensors.tensor_from_proto` (dtype, shape, byte length, finiteness), every
other field through the records' own bounds.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import numpy as np

from edgecode.errors import InvalidInput
from edgecode.gossip_records import (
    FAILED,
    FINISHED,
    JOB_FAILED,
    JOB_RUNNING,
    MAX_PARTITIONS,
    MAX_PEERS,
    PLACED,
    RUNNING,
    STARTING,
    STOPPED,
    SUCCEEDED,
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
from edgecode.wire.tensors import tensor_from_proto, tensor_to_proto

PEER_STATES = {
    PLACED: peer_pb2.PEER_JOB_STATE_PLACED,
    RUNNING: peer_pb2.PEER_JOB_STATE_RUNNING,
    FINISHED: peer_pb2.PEER_JOB_STATE_FINISHED,
    FAILED: peer_pb2.PEER_JOB_STATE_FAILED,
}
GOSSIP_STATES = {
    STARTING: coordinator_pb2.GOSSIP_JOB_STATE_STARTING,
    JOB_RUNNING: coordinator_pb2.GOSSIP_JOB_STATE_RUNNING,
    SUCCEEDED: coordinator_pb2.GOSSIP_JOB_STATE_SUCCEEDED,
    JOB_FAILED: coordinator_pb2.GOSSIP_JOB_STATE_FAILED,
    STOPPED: coordinator_pb2.GOSSIP_JOB_STATE_STOPPED,
}
_PEER_STATE_NAMES = {v: k for k, v in PEER_STATES.items()}
_GOSSIP_STATE_NAMES = {v: k for k, v in GOSSIP_STATES.items()}


# ---- a peer's job ------------------------------------------------------------------------------


def peer_header_to_proto(assignment: PeerAssignment) -> peer_pb2.PeerJobHeader:
    header = peer_pb2.PeerJobHeader(
        job_id=assignment.job_id,
        scheme=assignment.scheme,
        peer=assignment.peer,
        n_peers=assignment.n_peers,
        neighbours=[
            peer_pb2.Neighbour(index=n.index, name=n.name, address=n.address, weight=n.weight)
            for n in assignment.neighbours
        ],
        self_weight=assignment.self_weight,
        model=assignment.model,
        n_features=assignment.n_features,
        n_classes=assignment.n_classes,
        l2=assignment.l2,
        partitions=assignment.partitions,
        rows=assignment.rows,
        n_partitions=assignment.n_partitions,
        coefficient=assignment.coefficient,
        step_initial=assignment.step_initial,
        step_decay_rounds=(
            0.0 if math.isinf(assignment.step_decay_rounds) else assignment.step_decay_rounds
        ),
        rounds=assignment.rounds,
        compute_deadline_seconds=assignment.compute_deadline_seconds,
        gossip_deadline_seconds=assignment.gossip_deadline_seconds,
        wait_for_gradient=assignment.wait_for_gradient,
        report_params_every=assignment.report_params_every,
        straggle=assignment.straggle,
        compute_seconds=assignment.compute_seconds,
        emulation_seed=assignment.emulation_seed,
    )
    tensor_to_proto(
        np.asarray(assignment.initial_params, dtype=np.float64), out=header.initial_params
    )
    return header


def peer_header_from_proto(message: peer_pb2.PeerJobHeader) -> PeerAssignment:
    """The validated assignment (every field bounded; a decay of 0 means a constant step)."""
    if len(message.neighbours) > MAX_PEERS or len(message.partitions) > MAX_PARTITIONS:
        raise InvalidInput(
            f"header: at most {MAX_PEERS} neighbours and {MAX_PARTITIONS} partitions, got "
            f"{len(message.neighbours)} and {len(message.partitions)}"
        )
    initial = tensor_from_proto(
        message.initial_params, "initial_params", dtype="float64", shape=[None]
    )
    if initial.size == 0:
        raise InvalidInput("initial_params must not be empty")
    decay = float(message.step_decay_rounds)
    return PeerAssignment(
        job_id=message.job_id,
        scheme=message.scheme,
        peer=int(message.peer),
        n_peers=int(message.n_peers),
        neighbours=tuple(
            NeighbourLink(int(n.index), n.name, n.address, float(n.weight))
            for n in message.neighbours
        ),
        self_weight=float(message.self_weight),
        model=message.model,
        n_features=int(message.n_features),
        n_classes=int(message.n_classes),
        l2=float(message.l2),
        partitions=tuple(int(j) for j in message.partitions),
        rows=tuple(int(r) for r in message.rows),
        n_partitions=int(message.n_partitions),
        coefficient=float(message.coefficient),
        step_initial=float(message.step_initial),
        step_decay_rounds=math.inf if decay == 0.0 else decay,
        rounds=int(message.rounds),
        compute_deadline_seconds=float(message.compute_deadline_seconds),
        gossip_deadline_seconds=float(message.gossip_deadline_seconds),
        wait_for_gradient=bool(message.wait_for_gradient),
        report_params_every=int(message.report_params_every),
        straggle=message.straggle,
        compute_seconds=float(message.compute_seconds),
        emulation_seed=int(message.emulation_seed),
        initial_params=np.array(initial, dtype=np.float64),
    ).validated()


def gossip_request(job_id: str, round_: int, sender: int, params: Any) -> peer_pb2.GossipRequest:
    request = peer_pb2.GossipRequest(job_id=job_id, round=round_, sender=sender)
    tensor_to_proto(np.asarray(params, dtype=np.float64), out=request.params)
    return request


def gossip_params_from_proto(request: peer_pb2.GossipRequest) -> np.ndarray:
    """The sender's vector: float64, 1-D, finite (the peer checks its length)."""
    return tensor_from_proto(request.params, "params", dtype="float64", shape=[None])


# ---- reports ---------------------------------------------------------------------------------


def round_report_to_proto(timed: TimedReport) -> peer_pb2.PeerRoundReport:
    report = timed.report
    message = peer_pb2.PeerRoundReport(
        round=report.round,
        round_seconds=report.round_seconds,
        compute_seconds=report.compute_seconds,
        skipped_gradient=report.skipped_gradient,
        step_size=report.step_size,
        gossip=[
            peer_pb2.NeighbourWait(neighbour=n, arrived=seconds is not None, seconds=seconds or 0.0)
            for n, seconds in report.gossip_seconds.items()
        ],
        params_norm=report.params_norm,
        job_seconds=timed.job_seconds,
        local_consensus=report.local_consensus,
    )
    if report.params is not None:
        tensor_to_proto(report.params, out=message.params)
    return message


def round_report_from_proto(
    message: peer_pb2.PeerRoundReport, job_id: str, peer: int
) -> TimedReport:
    """A peer's report; ``job_id`` and ``peer`` are who the caller asked, never what it says."""
    numbers = {
        "round_seconds": message.round_seconds,
        "compute_seconds": message.compute_seconds,
        "step_size": message.step_size,
        "params_norm": message.params_norm,
        "job_seconds": message.job_seconds,
    }
    for name, value in numbers.items():
        if not (math.isfinite(value) and value >= 0):
            raise InvalidInput(f"report.{name} must be a finite number >= 0, got {value}")
    if message.round < 0:
        raise InvalidInput(f"report.round must be >= 0, got {message.round}")
    waits: dict[int, float | None] = {}
    for wait in message.gossip:
        if not (math.isfinite(wait.seconds) and wait.seconds >= 0):
            raise InvalidInput(f"report.gossip seconds must be finite and >= 0, got {wait.seconds}")
        waits[int(wait.neighbour)] = float(wait.seconds) if wait.arrived else None
    params = None
    if message.HasField("params"):
        params = np.array(
            tensor_from_proto(message.params, "report.params", dtype="float64", shape=[None])
        )
    report = RoundReport(
        job_id=job_id,
        peer=peer,
        round=int(message.round),
        round_seconds=float(message.round_seconds),
        compute_seconds=float(message.compute_seconds),
        skipped_gradient=bool(message.skipped_gradient),
        step_size=float(message.step_size),
        gossip_seconds=waits,
        missing=tuple(n for n, s in waits.items() if s is None),
        params_norm=float(message.params_norm),
        params=params,
        local_consensus=float(message.local_consensus),
    )
    return TimedReport(report, float(message.job_seconds))


def peer_reports_to_proto(reports: PeerReports) -> peer_pb2.GetReportsResponse:
    return peer_pb2.GetReportsResponse(
        state=PEER_STATES[reports.state],
        round=reports.round,
        rounds=reports.rounds,
        message=reports.message,
        reports=[round_report_to_proto(r) for r in reports.reports],
        dropped=reports.dropped,
    )


def peer_reports_from_proto(
    message: peer_pb2.GetReportsResponse, job_id: str, peer: int
) -> PeerReports:
    state = _PEER_STATE_NAMES.get(message.state)
    if state is None:
        raise InvalidInput(f"reports: unknown state {message.state}")
    return PeerReports(
        state=state,
        round=int(message.round),
        rounds=int(message.rounds),
        message=message.message,
        reports=tuple(round_report_from_proto(r, job_id, peer) for r in message.reports),
        dropped=int(message.dropped),
    )


# ---- the coordinator's gossip jobs ----------------------------------------------------------


def gossip_spec_to_proto(spec: GossipJobSpec) -> coordinator_pb2.GossipJobSpec:
    values: dict[str, Any] = {}
    for f in fields(GossipJobSpec):
        value = getattr(spec, f.name)
        if f.name == "edges":
            values["edges"] = [node for pair in value for node in pair]
        else:
            values[f.name] = value
    return coordinator_pb2.GossipJobSpec(**values)


def gossip_spec_from_proto(message: coordinator_pb2.GossipJobSpec) -> GossipJobSpec:
    """Unset fields take the defaults (numbers are proto3 ``optional``: an explicit 0 stays 0);
    the result is validated."""
    defaults = GossipJobSpec()
    values: dict[str, Any] = {}
    for f in fields(GossipJobSpec):
        if f.name == "edges":
            flat = list(message.edges)
            if len(flat) % 2:
                raise InvalidInput(f"edges must hold pairs, got {len(flat)} numbers")
            values["edges"] = tuple(zip(flat[0::2], flat[1::2], strict=True))
        elif isinstance(getattr(defaults, f.name), str):
            values[f.name] = getattr(message, f.name)
        elif message.HasField(f.name):  # type: ignore[arg-type]
            values[f.name] = getattr(message, f.name)
    if not values["graph"] and not values["edges"]:
        values["graph"] = defaults.graph
    for name in ("scheme", "dataset"):
        values[name] = values[name] or getattr(defaults, name)
    return GossipJobSpec(**values).validated()


def _timing_to_proto(t: PeerRoundTiming) -> coordinator_pb2.PeerRoundTiming:
    return coordinator_pb2.PeerRoundTiming(
        peer=t.peer,
        round_seconds=t.round_seconds,
        compute_seconds=t.compute_seconds,
        gossip_seconds=t.gossip_seconds,
        skipped_gradient=t.skipped_gradient,
        missing=t.missing,
    )


def gossip_status_to_proto(
    status: GossipJobStatus, from_round: int = 0, include_peer_timings: bool = False
) -> coordinator_pb2.GossipJobStatus:
    return coordinator_pb2.GossipJobStatus(
        job_id=status.job_id,
        state=GOSSIP_STATES[status.state],
        message=status.message,
        spec=gossip_spec_to_proto(status.spec),
        graph=status.graph,
        n_peers=status.n_peers,
        slem=status.slem,
        spectral_gap=status.spectral_gap,
        peer_names=status.peer_names,
        dead=status.dead,
        unresponsive=status.unresponsive,
        rounds_done=status.rounds_done,
        records=[
            coordinator_pb2.GossipRoundRecord(
                round=r.round,
                peers=r.peers,
                loss=r.loss,
                gap=r.gap,
                consensus_distance=r.consensus_distance,
                skipped_gradients=r.skipped_gradients,
                missing_values=r.missing_values,
                wall_seconds=r.wall_seconds,
                max_round_seconds=r.max_round_seconds,
                peer_timings=(
                    [_timing_to_proto(t) for t in r.peer_timings] if include_peer_timings else []
                ),
            )
            for r in status.records
            if r.round >= from_round
        ],
        initial_loss=status.initial_loss,
        setup_seconds=status.setup_seconds,
    )


def gossip_status_from_proto(message: coordinator_pb2.GossipJobStatus) -> GossipJobStatus:
    """The status as a record (for clients; the coordinator's own spec is trusted as sent)."""
    state = _GOSSIP_STATE_NAMES.get(message.state)
    if state is None:
        raise InvalidInput(f"gossip job status: unknown state {message.state}")
    return GossipJobStatus(
        job_id=message.job_id,
        state=state,
        spec=gossip_spec_from_proto(message.spec),
        message=message.message,
        graph=message.graph,
        n_peers=int(message.n_peers),
        slem=float(message.slem),
        spectral_gap=float(message.spectral_gap),
        peer_names=tuple(message.peer_names),
        dead=tuple(int(i) for i in message.dead),
        unresponsive=tuple(int(i) for i in message.unresponsive),
        rounds_done=int(message.rounds_done),
        records=tuple(
            GossipRoundRecord(
                round=int(r.round),
                peers=int(r.peers),
                loss=float(r.loss),
                gap=float(r.gap),
                consensus_distance=float(r.consensus_distance),
                skipped_gradients=int(r.skipped_gradients),
                missing_values=int(r.missing_values),
                wall_seconds=float(r.wall_seconds),
                max_round_seconds=float(r.max_round_seconds),
                peer_timings=tuple(
                    PeerRoundTiming(
                        peer=int(t.peer),
                        round_seconds=float(t.round_seconds),
                        compute_seconds=float(t.compute_seconds),
                        gossip_seconds=float(t.gossip_seconds),
                        skipped_gradient=bool(t.skipped_gradient),
                        missing=int(t.missing),
                    )
                    for t in r.peer_timings
                ),
            )
            for r in message.records
        ),
        initial_loss=float(message.initial_loss),
        setup_seconds=float(message.setup_seconds),
    )


__all__ = [
    "GOSSIP_STATES",
    "PEER_STATES",
    "gossip_params_from_proto",
    "gossip_request",
    "gossip_spec_from_proto",
    "gossip_spec_to_proto",
    "gossip_status_from_proto",
    "gossip_status_to_proto",
    "peer_header_from_proto",
    "peer_header_to_proto",
    "peer_reports_from_proto",
    "peer_reports_to_proto",
    "round_report_from_proto",
    "round_report_to_proto",
]
