"""Metrics of gossip learning: each peer's ``edgecode_peer_*`` (its own registry, its own port)
and the coordinator's ``edgecode_coordinator_gossip_*`` (on the coordinator's registry).
Labels stay bounded: the scheme (3 values), a neighbour's registered name, a refusal reason
(5 values), the job id (bounded by the jobs the coordinator keeps)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edgecode.runtime.metrics import LATENCY_BUCKETS, ServiceMetrics

#: Why a peer refused a gossip value (the label values of edgecode_peer_refused_messages_total).
PEER_REFUSALS = ("invalid", "stale", "unknown_job", "not_neighbour", "too_far_ahead")
GOSSIP_SCHEMES = ("goco", "gossip", "gossip-wait")


class PeerMetrics(ServiceMetrics):
    """A gossip peer: ``edgecode_peer_*``. Labels are bounded: the scheme (3 values), the
    neighbour's registered name (a peer's neighbours), the refusal reason (5 values)."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.round_seconds = Histogram(
            "edgecode_peer_round_seconds",
            "Seconds per gossip round: compute (or give up), send, wait for the neighbours, mix",
            ["scheme"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_seconds = Histogram(
            "edgecode_peer_compute_seconds",
            "Seconds from a round's start to the gradient decision (incl. emulated straggling)",
            ["scheme"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.gossip_seconds = Histogram(
            "edgecode_peer_gossip_seconds",
            "Seconds each neighbour's value arrived after this peer sent its own",
            ["neighbour"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.missing = Counter(
            "edgecode_peer_missing_values_total",
            "Neighbour values that missed the gossip deadline (their weight went to the peer)",
            ["neighbour"],
            registry=r,
        )
        self.rounds = Counter(
            "edgecode_peer_rounds_total", "Gossip rounds completed", ["scheme"], registry=r
        )
        self.skipped = Counter(
            "edgecode_peer_skipped_gradients_total",
            "Rounds whose gradient missed the compute deadline (the peer still gossiped)",
            ["scheme"],
            registry=r,
        )
        self.consensus = Gauge(
            "edgecode_peer_consensus_distance",
            "Local consensus distance of the last round: mean squared distance of the values "
            "this peer mixed (its own and its neighbours') from their mean",
            registry=r,
        )
        self.refused = Counter(
            "edgecode_peer_refused_messages_total",
            "Gossip values refused, by reason",
            ["reason"],
            registry=r,
        )
        self.received_bytes = Counter(
            "edgecode_peer_received_bytes_total",
            "Payload bytes received (gossip values and placed data)",
            registry=r,
        )
        self.sent_bytes = Counter(
            "edgecode_peer_sent_bytes_total", "Payload bytes of gossip values sent", registry=r
        )
        self.send_failures = Counter(
            "edgecode_peer_send_failures_total",
            "Gossip values a neighbour did not take (unreachable, late or refused)",
            registry=r,
        )
        self.jobs = Gauge("edgecode_peer_jobs", "Gossip jobs held, by state", ["state"], registry=r)
        # Every known label value exported at 0 from the start (rate() needs a first sample).
        for scheme in GOSSIP_SCHEMES:
            self.round_seconds.labels(scheme)
            self.compute_seconds.labels(scheme)
            self.rounds.labels(scheme)
            self.skipped.labels(scheme)
        for reason in PEER_REFUSALS:
            self.refused.labels(reason)
        for state in ("placed", "running", "finished", "failed"):
            self.jobs.labels(state)

    # -- what the peer records (peer.node.PeerMetricsPort, peer transport and servicer) --
    def round_done(self, scheme: str, report: Any, names: Mapping[int, str]) -> None:
        self.round_seconds.labels(scheme).observe(report.round_seconds)
        self.compute_seconds.labels(scheme).observe(report.compute_seconds)
        self.rounds.labels(scheme).inc()
        if report.skipped_gradient:
            self.skipped.labels(scheme).inc()
        for neighbour, seconds in report.gossip_seconds.items():
            name = names.get(neighbour, str(neighbour))
            if seconds is None:
                self.missing.labels(name).inc()
            else:
                self.gossip_seconds.labels(name).observe(seconds)
        if math.isfinite(report.local_consensus):
            self.consensus.set(report.local_consensus)

    def known_neighbours(self, names: Sequence[str]) -> None:
        """Export a job's neighbours at 0 before its first round (rate() needs a first sample)."""
        for name in names:
            self.gossip_seconds.labels(name)
            self.missing.labels(name)

    def jobs_held(self, counts: Mapping[str, int]) -> None:
        for state, count in counts.items():
            self.jobs.labels(state).set(count)

    def refused_message(self, reason: str) -> None:
        self.refused.labels(reason).inc()

    def received(self, nbytes: int) -> None:
        self.received_bytes.inc(nbytes)

    def sent(self, nbytes: int) -> None:
        self.sent_bytes.inc(nbytes)

    def send_failed(self) -> None:
        self.send_failures.inc()


class GossipJobMetrics:
    """The coordinator's view of its gossip jobs (on the coordinator's registry):
    ``edgecode_coordinator_gossip_*``, labelled by ``job_id`` (bounded by the jobs kept)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.loss = Gauge(
            "edgecode_coordinator_gossip_loss",
            "Mean loss at the average model of the last recorded round",
            ["job_id"],
            registry=r,
        )
        self.gap = Gauge(
            "edgecode_coordinator_gossip_optimality_gap",
            "Relative optimality gap (F(x_bar) - F*) / (F(x_0) - F*) of the last recorded round",
            ["job_id"],
            registry=r,
        )
        self.consensus = Gauge(
            "edgecode_coordinator_gossip_consensus_distance",
            "(1/N) sum_i ||x_i - x_bar||^2 of the last recorded round",
            ["job_id"],
            registry=r,
        )
        self.rounds = Counter(
            "edgecode_coordinator_gossip_rounds_total",
            "Gossip rounds recorded (every peer reported)",
            ["scheme"],
            registry=r,
        )
        self.skipped = Counter(
            "edgecode_coordinator_gossip_skipped_gradients_total",
            "Skipped gradients over the recorded rounds",
            ["scheme"],
            registry=r,
        )
        self.dead = Gauge(
            "edgecode_coordinator_gossip_dead_peers",
            "Peers of the job found unreachable",
            ["job_id"],
            registry=r,
        )
        for scheme in GOSSIP_SCHEMES:
            self.rounds.labels(scheme)
            self.skipped.labels(scheme)

    def recorded(
        self, job_id: str, scheme: str, loss: float, gap: float, consensus: float, skipped: int
    ) -> None:
        self.rounds.labels(scheme).inc()
        self.skipped.labels(scheme).inc(skipped)
        for gauge, value in ((self.loss, loss), (self.gap, gap), (self.consensus, consensus)):
            if math.isfinite(value):
                gauge.labels(job_id).set(value)

    def dead_peers(self, job_id: str, count: int) -> None:
        self.dead.labels(job_id).set(count)

    def forget(self, job_id: str) -> None:
        for gauge in (self.loss, self.gap, self.consensus, self.dead):
            try:
                gauge.remove(job_id)
            except KeyError:  # never exported
                pass
