"""Prometheus metrics of a real run: every service's ``/metrics`` is scraped (over HTTP) before a
job, after an hgc job with fixed s and after an uncoded job on the same LocalCluster (2 edges x 4
workers, ``edge-0-w1`` a persistent straggler, ``edge-1`` behind a slow link), and the deltas are
checked against what the run must have done.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgecode.cluster.local import LocalCluster, default_setup
from edgecode.master.client import MasterClient, params_of
from edgecode.records import JobConfig
from edgecode.runtime.metrics import (
    AggregatorMetrics,
    CoordinatorMetrics,
    MasterMetrics,
    WorkerMetrics,
)
from edgecode.v1 import master_pb2

ROUNDS = 15
STRAGGLER = "edge-0-w1"
#: The metric name prefix each role's registry may use.
ROLE_PREFIX = {
    "coordinator": "edgecode_coordinator_",
    "master": "edgecode_master_",
    "aggregator": "edgecode_edge_",
    "worker": "edgecode_worker_",
}
#: Collectors prometheus_client ships (process, platform, gc); allowed, not required.
STANDARD_PREFIXES = ("process_", "python_")
#: How long the services may take to account for the last round after the job has ended.
SETTLE_SECONDS = 20.0


@dataclass(frozen=True)
class Scrape:
    """One ``/metrics`` page: its metric families and every sample by (name, labels)."""

    families: tuple[str, ...]
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(key)[label] for (sample, key) in self.samples if sample == name}


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    families = list(text_string_to_metric_families(text))
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
    }
    return Scrape(tuple(family.name for family in families), samples)


@dataclass
class Run:
    cluster: LocalCluster
    #: stage ("before", "hgc", "uncoded") -> process name -> scrape taken after that stage
    scrapes: dict[str, dict[str, Scrape]] = field(default_factory=dict)
    statuses: dict[str, master_pb2.JobStatus] = field(default_factory=dict)
    n_params: int = 0

    def names(self, role: str) -> list[str]:
        return sorted(n for n, p in self.cluster.processes.items() if p.role == role)

    def delta(self, stage: str, process: str, name: str, **labels: str) -> float:
        previous = {"hgc": "before", "uncoded": "hgc"}[stage]
        return self.scrapes[stage][process].value(name, **labels) - self.scrapes[previous][
            process
        ].value(name, **labels)

    def workers_of(self, edge: str) -> list[str]:
        return [w for w in self.names("worker") if w.startswith(f"{edge}-")]


def _scrape_all(cluster: LocalCluster) -> dict[str, Scrape]:
    return {name: scrape(p.metrics_url) for name, p in cluster.processes.items()}


def _wait_settled(cluster: LocalCluster, done: Callable[[dict[str, Scrape]], bool]) -> None:
    """Poll the pages until ``done`` holds (every round accounted for) or the deadline passes;
    the tests then assert on the last scrape, so a counter that never settles fails there."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while not done(_scrape_all(cluster)) and time.monotonic() < deadline:
        time.sleep(0.05)


def _run_job(run: Run, client: MasterClient, stage: str, config: JobConfig) -> None:
    previous = run.scrapes[{"hgc": "before", "uncoded": "hgc"}[stage]]
    job_id = client.submit(config)
    status = client.wait(job_id, timeout=120)
    assert status.state == master_pb2.JOB_STATE_SUCCEEDED, status.message
    assert status.round == ROUNDS

    def settled(now: dict[str, Scrape]) -> bool:
        # Each edge answers every round it is asked, and every call a worker gets ends computed
        # or abandoned: once those counters moved by ROUNDS, all observations of the job are in.
        edges = all(
            now[e].value("edgecode_edge_round_seconds_count")
            - previous[e].value("edgecode_edge_round_seconds_count")
            >= ROUNDS
            for e in run.names("aggregator")
        )
        workers = all(
            sum(
                now[w].value(name) - previous[w].value(name)
                for name in (
                    "edgecode_worker_rounds_total",
                    "edgecode_worker_abandoned_rounds_total",
                )
            )
            >= ROUNDS
            for w in run.names("worker")
        )
        return edges and workers

    _wait_settled(run.cluster, settled)
    run.scrapes[stage] = _scrape_all(run.cluster)
    run.statuses[stage] = status


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with LocalCluster(default_setup(), workdir=tmp_path_factory.mktemp("cluster")) as cluster:
        client = cluster.client()
        try:
            run = Run(cluster)
            run.scrapes["before"] = _scrape_all(cluster)
            common = {"rounds": ROUNDS, "checkpoint_every": 0, "seed": 3}
            _run_job(
                run,
                client,
                "hgc",
                JobConfig(scheme="hgc", s_edge=1, s_worker=1, job_id="metrics-hgc", **common),
            )
            _run_job(
                run,
                client,
                "uncoded",
                JobConfig(scheme="uncoded", job_id="metrics-uncoded", **common),
            )
            run.n_params = params_of(run.statuses["uncoded"]).size
            yield run
        finally:
            client.close()


# ---- the pages ---------------------------------------------------------------------------------


def test_every_page_parses_and_holds_only_its_roles_metrics(run: Run) -> None:
    assert len(run.cluster.processes) == 12
    for stage, pages in run.scrapes.items():
        assert set(pages) == set(run.cluster.processes)
        for name, page in pages.items():
            prefix = ROLE_PREFIX[run.cluster.processes[name].role]
            assert any(f.startswith(prefix) for f in page.families), (stage, name)
            foreign = [
                sample
                for sample, _ in page.samples
                if not sample.startswith(prefix) and not sample.startswith(STANDARD_PREFIXES)
            ]
            assert not foreign, (stage, name, foreign)


def test_metrics_classes_use_private_registries() -> None:
    """Two instances of every role's metrics in one process (as a test or an embedded cluster
    does) must not collide, and nothing may land in prometheus_client's global registry."""
    for kind in (WorkerMetrics, AggregatorMetrics, MasterMetrics, CoordinatorMetrics):
        first, second = kind(), kind()
        assert first.registry is not second.registry
        assert first.registry is not prometheus_client.REGISTRY
    global_names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(n.startswith("edgecode_") for n in global_names), global_names


# ---- the master ------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["hgc", "uncoded"])
def test_master_round_histogram_counts_the_rounds(run: Run, stage: str) -> None:
    other = {"hgc": "uncoded", "uncoded": "hgc"}[stage]
    for name in ("edgecode_master_round_seconds_count", "edgecode_master_rounds_total"):
        assert run.delta(stage, "master", name, scheme=stage) == ROUNDS, name
        assert run.delta(stage, "master", name, scheme=other) == 0, name
    seconds = run.delta(stage, "master", "edgecode_master_round_seconds_sum", scheme=stage)
    history = sum(r.seconds for r in run.statuses[stage].history)
    assert seconds == pytest.approx(history, rel=1e-6)


@pytest.mark.parametrize("stage", ["hgc", "uncoded"])
def test_master_loss_gauge_is_the_last_round_loss(run: Run, stage: str) -> None:
    status = run.statuses[stage]
    loss = run.scrapes[stage]["master"].value("edgecode_master_training_loss", job_id=status.job_id)
    assert math.isfinite(loss) and loss > 0
    assert loss == pytest.approx(status.history[-1].loss, rel=1e-12)


def test_stragglers_counted_during_hgc_and_not_uncoded(run: Run) -> None:
    hgc_master = run.delta("hgc", "master", "edgecode_master_stragglers_total", level="worker")
    assert hgc_master >= ROUNDS  # at least the persistent straggler, every round
    assert hgc_master == sum(r.stragglers for r in run.statuses["hgc"].history)
    # edge-0 holds the persistent straggler and tolerates one: it never waits for it.
    assert run.delta("hgc", "edge-0", "edgecode_edge_stragglers_total") >= ROUNDS
    # Uncoded waits for everyone: no stragglers anywhere.
    assert run.delta("uncoded", "master", "edgecode_master_stragglers_total", level="worker") == 0
    for edge in run.names("aggregator"):
        assert run.delta("uncoded", edge, "edgecode_edge_stragglers_total") == 0, edge


def test_master_sees_every_worker_and_edge(run: Run) -> None:
    page = run.scrapes["uncoded"]["master"]
    assert page.label_values("edgecode_master_worker_response_seconds_count", "worker") == set(
        run.names("worker")
    )
    for edge in run.names("aggregator"):
        assert (
            run.delta("uncoded", "master", "edgecode_master_peer_response_seconds_count", peer=edge)
            == ROUNDS
        )


# ---- edges and workers ------------------------------------------------------------------------


def test_edge_latency_histograms_grow_per_worker(run: Run) -> None:
    name = "edgecode_edge_worker_response_seconds_count"
    for edge in run.names("aggregator"):
        workers = run.workers_of(edge)
        assert len(workers) == 4
        # hgc (s_worker = 1): the edge takes at least 3 answers a round (more when the 4th
        # arrives before it is cancelled).
        assert sum(run.delta("hgc", edge, name, worker=w) for w in workers) >= 3 * ROUNDS, edge
        # uncoded: every worker answers every round, and only this edge sees its workers.
        for worker in workers:
            assert run.delta("uncoded", edge, name, worker=worker) == ROUNDS, (edge, worker)
        assert run.scrapes["uncoded"][edge].label_values(name, "worker") == set(workers)
        assert run.delta("uncoded", edge, "edgecode_edge_round_seconds_count") == ROUNDS


def _mean_latency(run: Run, stage: str, process: str, metric: str, **labels: str) -> float:
    count = run.delta(stage, process, f"{metric}_count", **labels)
    assert count > 0, (process, labels)
    return run.delta(stage, process, f"{metric}_sum", **labels) / count


def test_persistent_straggler_has_the_highest_mean_latency(run: Run) -> None:
    """In the uncoded job every worker's answer is awaited, so its latency is fully observed."""
    edge_means = {
        w: _mean_latency(
            run,
            "uncoded",
            w.rsplit("-", 1)[0],
            "edgecode_edge_worker_response_seconds",
            worker=w,
        )
        for w in run.names("worker")
    }
    others = {w: m for w, m in edge_means.items() if w != STRAGGLER}
    assert edge_means[STRAGGLER] > max(others.values()), edge_means
    master_means = {
        w: _mean_latency(
            run,
            "uncoded",
            "master",
            "edgecode_master_worker_response_seconds",
            worker=w,
            edge=w.rsplit("-", 1)[0],
        )
        for w in run.names("worker")
    }
    assert master_means[STRAGGLER] == max(master_means.values()), master_means


def test_worker_compute_histogram_grows(run: Run) -> None:
    name = "edgecode_worker_compute_seconds_count"
    # hgc (s_edge = 1, s_worker = 1): the edge the master decodes from took at least 3 of its
    # 4 workers' answers every round. The other edge is cancelled as soon as the master has
    # decoded (it needs one edge of two), and with rounds on streams the cancel reaches its
    # workers before they finish in some rounds (edge-1, behind the slow link: 6 of 15 rounds
    # abandoned), so 6 answers a round is not an invariant of the protocol; the accounting of
    # every round below is.
    assert sum(run.delta("hgc", w, name) for w in run.names("worker")) >= 3 * ROUNDS
    for worker in run.names("worker"):
        assert run.delta("uncoded", worker, name) == ROUNDS, worker
        assert run.delta("uncoded", worker, "edgecode_worker_rounds_total") == ROUNDS, worker
        accounted = run.delta("hgc", worker, "edgecode_worker_rounds_total") + run.delta(
            "hgc", worker, "edgecode_worker_abandoned_rounds_total"
        )
        assert accounted == ROUNDS, worker
    # The straggler is cancelled in (nearly) every hgc round: abandoned work is counted.
    assert run.delta("hgc", STRAGGLER, "edgecode_worker_abandoned_rounds_total") >= ROUNDS - 1


# ---- bytes --------------------------------------------------------------------------------------


def test_worker_bytes_counters(run: Run) -> None:
    vector = 8 * run.n_params
    for worker in run.names("worker"):
        for stage in ("hgc", "uncoded"):
            received = run.delta(stage, worker, "edgecode_worker_received_bytes_total")
            # every round's parameters, plus the placement of the job's partitions
            assert received > ROUNDS * vector, (stage, worker)
            computed = run.delta(stage, worker, "edgecode_worker_rounds_total")
            sent = run.delta(stage, worker, "edgecode_worker_sent_bytes_total")
            assert sent == computed * vector, (stage, worker)
        assert run.delta("uncoded", worker, "edgecode_worker_sent_bytes_total") > 0


def test_edge_received_bytes_counter(run: Run) -> None:
    vector = 8 * run.n_params
    decoded_rounds = 0.0
    for edge in run.names("aggregator"):
        # hgc (s_worker = 1): every round the edge decodes (and sends on) took at least 3 of its
        # 4 workers' vectors. The master may cancel an edge before it decodes (s_edge = 1; edge-1
        # is behind a slow link), and then the edge received fewer: the bound is per decode.
        sent = run.delta("hgc", edge, "edgecode_edge_sent_bytes_total")
        assert sent % vector == 0, edge
        assert run.delta("hgc", edge, "edgecode_edge_received_bytes_total") >= 3 * sent, edge
        decoded_rounds += sent / vector
        assert run.delta("uncoded", edge, "edgecode_edge_received_bytes_total") == (
            4 * ROUNDS * vector
        )
    # The master decodes from one edge a round: at least one edge decoded every round.
    assert decoded_rounds >= ROUNDS


def test_master_bytes_counters(run: Run) -> None:
    vector = 8 * run.n_params
    edges = len(run.names("aggregator"))
    for stage in ("hgc", "uncoded"):
        assert run.delta(stage, "master", "edgecode_master_placed_bytes_total") > 0, stage
    # hgc: at least one edge's vector per round; uncoded: every edge's, every round.
    assert run.delta("hgc", "master", "edgecode_master_received_bytes_total") >= ROUNDS * vector
    assert (
        run.delta("uncoded", "master", "edgecode_master_received_bytes_total")
        == edges * ROUNDS * vector
    )
    # What the master placed is what the workers received, minus the per-round parameters.
    for stage in ("hgc", "uncoded"):
        placed = run.delta(stage, "master", "edgecode_master_placed_bytes_total")
        received = sum(
            run.delta(stage, w, "edgecode_worker_received_bytes_total") for w in run.names("worker")
        )
        assert received - placed == len(run.names("worker")) * ROUNDS * vector, stage


def test_sent_bytes_counters_of_edges_and_master(run: Run) -> None:
    vector = 8 * run.n_params
    edges = run.names("aggregator")
    # uncoded: the master sends the parameters to every edge and every edge its vector back.
    assert run.delta("uncoded", "master", "edgecode_master_sent_bytes_total") >= (
        len(edges) * ROUNDS * vector
    )
    for edge in edges:
        assert run.delta("uncoded", edge, "edgecode_edge_sent_bytes_total") >= ROUNDS * vector


# ---- the coordinator ----------------------------------------------------------------------------


def test_coordinator_metrics(run: Run) -> None:
    page = run.scrapes["uncoded"]["coordinator"]
    assert page.value("edgecode_coordinator_nodes", role="worker", state="alive") == 8
    assert page.value("edgecode_coordinator_nodes", role="edge", state="alive") == 2
    # The master reports each round's arrived workers' compute times.
    for stage in ("hgc", "uncoded"):
        assert run.delta(stage, "coordinator", "edgecode_coordinator_measurements_total") >= (
            3 * ROUNDS
        ), stage
    last = run.statuses["uncoded"].history[-1].seconds
    assert page.value("edgecode_coordinator_measured_round_seconds") == pytest.approx(last)
