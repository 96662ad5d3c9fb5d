"""Labelled series exist at 0 before anything happens, so that rate() sees the first increase
even when a whole short job runs between two scrapes (found by CI on a fast machine)."""

from __future__ import annotations

from prometheus_client import generate_latest

from edgecode.aggregator.logic import DECODE, AggregatorLogic
from edgecode.records import JOB_SCHEMES as SCHEMES
from edgecode.runtime.metrics import AggregatorMetrics, MasterMetrics


class _NoClient:
    def close(self) -> None:
        pass


def test_master_series_start_at_zero() -> None:
    page = generate_latest(MasterMetrics().registry).decode()
    for scheme in SCHEMES:
        assert f'edgecode_master_rounds_total{{scheme="{scheme}"}} 0.0' in page
        assert f'edgecode_master_round_seconds_count{{scheme="{scheme}"}} 0.0' in page
    for level in ("worker", "edge"):
        assert f'edgecode_master_stragglers_total{{level="{level}"}} 0.0' in page


def test_edge_worker_series_start_at_zero_when_configured() -> None:
    import numpy as np

    metrics = AggregatorMetrics()
    logic = AggregatorLogic("edge-0", lambda names, addresses: _NoClient(), metrics)  # type: ignore[arg-type,return-value]
    logic.configure(
        "job", ["w-a", "w-b"], ["127.0.0.1:1", "127.0.0.1:2"], DECODE, 5.0, np.eye(2), np.ones(2), 0
    )
    page = generate_latest(metrics.registry).decode()
    for worker in ("w-a", "w-b"):
        assert f'edgecode_edge_worker_response_seconds_count{{worker="{worker}"}} 0.0' in page


def test_peer_series_start_at_zero() -> None:
    from edgecode.runtime.peer_metrics import GOSSIP_SCHEMES, PEER_REFUSALS, PeerMetrics

    metrics = PeerMetrics()
    metrics.known_neighbours(["peer-1", "peer-7"])
    page = generate_latest(metrics.registry).decode()
    for scheme in GOSSIP_SCHEMES:
        assert f'edgecode_peer_rounds_total{{scheme="{scheme}"}} 0.0' in page
        assert f'edgecode_peer_skipped_gradients_total{{scheme="{scheme}"}} 0.0' in page
    for reason in PEER_REFUSALS:
        assert f'edgecode_peer_refused_messages_total{{reason="{reason}"}} 0.0' in page
    for name in ("peer-1", "peer-7"):
        assert f'edgecode_peer_missing_values_total{{neighbour="{name}"}} 0.0' in page
        assert f'edgecode_peer_gossip_seconds_count{{neighbour="{name}"}} 0.0' in page
