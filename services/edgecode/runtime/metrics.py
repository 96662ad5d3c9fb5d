"""Prometheus metrics: one class per role, each on its OWN registry (no global registry), served
on a separate port. Names follow the Prometheus rules: base units, ``_seconds``, ``_bytes``,
``_total``, bounded labels (worker and edge names are bounded by the cluster size)."""

from __future__ import annotations

from collections.abc import Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from edgecode.records import JOB_SCHEMES, Timing

#: Latency buckets from 1 ms to 60 s: Raspberry Pi rounds are slow, loopback rounds fast.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class ServiceMetrics:
    """Base: a private registry and an HTTP endpoint serving it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._server: WSGIServer | None = None

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve ``/metrics`` on ``host:port`` (0 = any free port); returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class WorkerMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.compute_seconds = Histogram(
            "edgecode_worker_compute_seconds",
            "Seconds to compute one coded gradient (incl. emulated straggling)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rounds = Counter(
            "edgecode_worker_rounds_total", "Coded gradients computed", registry=r
        )
        self.abandoned = Counter(
            "edgecode_worker_abandoned_rounds_total",
            "Rounds dropped because cancelled or stale",
            registry=r,
        )
        self.received_bytes = Counter(
            "edgecode_worker_received_bytes_total",
            "Payload bytes received (placement and parameters)",
            registry=r,
        )
        self.sent_bytes = Counter(
            "edgecode_worker_sent_bytes_total", "Payload bytes sent (gradients)", registry=r
        )
        self.partitions = Gauge(
            "edgecode_worker_partitions", "Partitions currently held", registry=r
        )
        self.shuffle_bytes = Counter(
            "edgecode_worker_shuffle_bytes_total",
            "Bytes of partitions fetched from other workers by shuffles",
            registry=r,
        )
        self.shuffle_seconds = Histogram(
            "edgecode_worker_shuffle_seconds",
            "Seconds to assemble a shuffled placement (own data plus fetched partitions)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Matrix jobs (coded sparse blocks, A^T x).
        self.multiply_seconds = Histogram(
            "edgecode_worker_multiply_seconds",
            "Seconds to compute one coded product C_i^T x (incl. emulated straggling)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.products = Counter(
            "edgecode_worker_products_total", "Coded matrix products computed", registry=r
        )
        self.block_bytes = Counter(
            "edgecode_worker_block_received_bytes_total",
            "Bytes of coded matrix blocks received",
            registry=r,
        )
        self.block_nnz = Gauge(
            "edgecode_worker_block_nonzeros",
            "Non-zeros of the coded block held, per matrix job",
            ["job_id"],  # not "job": Prometheus reserves it for the scrape job
            registry=r,
        )

    # -- what the worker's logic records (worker.logic.WorkerMetricsPort) --
    def computed(self, seconds: float, nbytes: int) -> None:
        self.compute_seconds.observe(seconds)
        self.rounds.inc()
        self.sent_bytes.inc(nbytes)

    def abandoned_round(self) -> None:
        self.abandoned.inc()

    def holding(self, partitions: int) -> None:
        self.partitions.set(partitions)

    def shuffled(self, nbytes: int, seconds: float) -> None:
        self.shuffle_bytes.inc(nbytes)
        self.shuffle_seconds.observe(seconds)

    def received(self, nbytes: int) -> None:
        self.received_bytes.inc(nbytes)

    def multiplied(self, seconds: float, nbytes: int) -> None:
        self.multiply_seconds.observe(seconds)
        self.products.inc()
        self.sent_bytes.inc(nbytes)

    def block_held(self, job_id: str, nnz: int) -> None:
        self.block_nnz.labels(job_id=job_id).set(nnz)

    def block_dropped(self, job_id: str) -> None:
        try:
            self.block_nnz.remove(job_id)
        except KeyError:  # never exported
            pass

    def block_received(self, nbytes: int) -> None:
        self.received_bytes.inc(nbytes)
        self.block_bytes.inc(nbytes)


class AggregatorMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.peer_latency = Histogram(
            "edgecode_edge_worker_response_seconds",
            "Response time of each worker as seen by the edge (the straggler latency)",
            ["worker"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stragglers = Counter(
            "edgecode_edge_stragglers_total",
            "Workers not waited for, summed over rounds",
            registry=r,
        )
        self.round_seconds = Histogram(
            "edgecode_edge_round_seconds",
            "Seconds from fan-out to the edge's reply",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decode_seconds = Histogram(
            "edgecode_edge_decode_seconds",
            "Seconds spent decoding the edge layer",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.received_bytes = Counter(
            "edgecode_edge_received_bytes_total", "Payload bytes received", registry=r
        )
        self.sent_bytes = Counter(
            "edgecode_edge_sent_bytes_total", "Payload bytes sent", registry=r
        )
        self.inconsistent_results = Counter(
            "edgecode_edge_inconsistent_results_total",
            "Answers that contradicted the other workers' (verify: a lying worker)",
            ["node"],
            registry=r,
        )

    # -- what the edge's logic records (aggregator.logic.EdgeMetrics) --
    def response(self, node: str, seconds: float) -> None:
        self.peer_latency.labels(node).observe(seconds)

    def received(self, nbytes: int) -> None:
        self.received_bytes.inc(nbytes)

    def decoded(self, seconds: float) -> None:
        self.decode_seconds.observe(seconds)

    def round_done(self, seconds: float, stragglers: int) -> None:
        self.stragglers.inc(stragglers)
        self.round_seconds.observe(seconds)

    def sent(self, nbytes: int) -> None:
        self.sent_bytes.inc(nbytes)

    def known_workers(self, names: Sequence[str]) -> None:
        for name in names:
            self.peer_latency.labels(name)
            self.inconsistent_results.labels(name)

    def inconsistent(self, node: str) -> None:
        self.inconsistent_results.labels(node).inc()


class MasterMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.round_seconds = Histogram(
            "edgecode_master_round_seconds",
            "Seconds per training round",
            ["scheme"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.peer_latency = Histogram(
            "edgecode_master_peer_response_seconds",
            "Response time of each edge (or forwarded worker) as seen by the master",
            ["peer"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.worker_latency = Histogram(
            "edgecode_master_worker_response_seconds",
            "Response time of each worker as reported by its edge (the straggler latency)",
            ["worker", "edge"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stragglers = Counter(
            "edgecode_master_stragglers_total",
            "Nodes not waited for, summed over rounds",
            ["level"],
            registry=r,
        )
        self.round_stragglers = Gauge(
            "edgecode_master_round_stragglers",
            "Workers not waited for in the last round",
            registry=r,
        )
        self.decode_seconds = Histogram(
            "edgecode_master_decode_seconds",
            "Seconds spent decoding at the master",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.loss = Gauge(
            "edgecode_master_training_loss",
            "Training loss after the last round",
            ["job_id"],  # not "job": Prometheus reserves it for the scrape job
            registry=r,
        )
        self.predicted_round_seconds = Gauge(
            "edgecode_master_predicted_round_seconds",
            "Planner's expected round time for the plan in use",
            registry=r,
        )
        self.rounds = Counter(
            "edgecode_master_rounds_total", "Rounds completed", ["scheme"], registry=r
        )
        self.received_bytes = Counter(
            "edgecode_master_received_bytes_total", "Payload bytes received", registry=r
        )
        self.sent_bytes = Counter(
            "edgecode_master_sent_bytes_total", "Payload bytes sent", registry=r
        )
        self.placed_bytes = Counter(
            "edgecode_master_placed_bytes_total", "Bytes of data placed on workers", registry=r
        )
        self.recovered_fraction = Gauge(
            "edgecode_master_recovered_fraction",
            "Fraction of the partitions the last round's result holds (partial and approximate "
            "schemes; 1 when exact)",
            ["job_id"],
            registry=r,
        )
        self.decoding_residual = Gauge(
            "edgecode_master_decoding_residual",
            "Decoding residual ||B_A^T a - 1||^2 / K of the last round (approximate schemes)",
            ["job_id"],
            registry=r,
        )
        self.inconsistent_results = Counter(
            "edgecode_master_inconsistent_results_total",
            "Results that contradicted the others (verify: a lying node), by node",
            ["node"],
            registry=r,
        )
        self.vectors_received = Counter(
            "edgecode_master_vectors_received_total",
            "Coded vectors in the results the master used",
            registry=r,
        )
        # Matrix jobs (coded sparse blocks, A^T x).
        self.matrix_placed_bytes = Counter(
            "edgecode_master_matrix_placed_bytes_total",
            "Bytes of coded matrix blocks placed on workers",
            ["scheme"],
            registry=r,
        )
        self.matrix_block_nnz = Histogram(
            "edgecode_master_matrix_block_nonzeros",
            "Non-zeros per coded matrix block placed",
            ["scheme"],
            buckets=(1e2, 1e3, 1e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8),
            registry=r,
        )
        self.matrix_worker_seconds = Histogram(
            "edgecode_master_matrix_worker_multiply_seconds",
            "Seconds each worker reported for one coded product",
            ["worker"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.matrix_product_seconds = Histogram(
            "edgecode_master_matrix_product_seconds",
            "Seconds from fan-out to the decoded A^T x",
            ["scheme"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Export every known label value at 0 from the start: a labelled series that first
        # appears already counting (a short job finished between two scrapes) has no increase
        # for rate() to see, and the dashboards would show nothing for that job.
        for scheme in JOB_SCHEMES:
            self.round_seconds.labels(scheme)
            self.rounds.labels(scheme)
        for level in ("worker", "edge"):
            self.stragglers.labels(level)

    # -- what the master's logic records (master.ports.MasterMetricsPort) --
    def response(self, node: str, seconds: float) -> None:
        self.peer_latency.labels(node).observe(seconds)

    def received(self, nbytes: int) -> None:
        self.received_bytes.inc(nbytes)

    def decoded(self, seconds: float) -> None:
        self.decode_seconds.observe(seconds)

    def sent(self, nbytes: int) -> None:
        self.sent_bytes.inc(nbytes)

    def placed(self, nbytes: int) -> None:
        self.placed_bytes.inc(nbytes)

    def round_done(
        self,
        scheme: str,
        job_id: str,
        seconds: float,
        stragglers: int,
        loss: float,
        predicted: float,
        timings: Sequence[Timing],
    ) -> None:
        self.round_seconds.labels(scheme).observe(seconds)
        self.rounds.labels(scheme).inc()
        self.round_stragglers.set(stragglers)
        self.stragglers.labels("worker").inc(stragglers)
        self.loss.labels(job_id).set(loss)
        self.predicted_round_seconds.set(predicted)
        for t in timings:
            self.worker_latency.labels(t.node, t.edge).observe(t.seconds)

    def inconsistent(self, node: str) -> None:
        self.inconsistent_results.labels(node).inc()

    def recovery(self, job_id: str, fraction: float, residual: float, vectors: int) -> None:
        self.recovered_fraction.labels(job_id).set(fraction)
        self.decoding_residual.labels(job_id).set(residual)
        self.vectors_received.inc(vectors)

    def matrix_placed(self, scheme: str, nbytes: int, block_nnz: Sequence[int]) -> None:
        self.matrix_placed_bytes.labels(scheme=scheme).inc(nbytes)
        for nnz in block_nnz:
            self.matrix_block_nnz.labels(scheme=scheme).observe(nnz)

    def matrix_worker(self, worker: str, seconds: float) -> None:
        self.matrix_worker_seconds.labels(worker=worker).observe(seconds)

    def matrix_product(self, scheme: str, seconds: float) -> None:
        self.matrix_product_seconds.labels(scheme=scheme).observe(seconds)


class CoordinatorMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.nodes = Gauge(
            "edgecode_coordinator_nodes", "Registered nodes", ["role", "state"], registry=r
        )
        self.predicted_round_seconds = Gauge(
            "edgecode_coordinator_predicted_round_seconds",
            "Expected round time of the current plan",
            registry=r,
        )
        self.measured_round_seconds = Gauge(
            "edgecode_coordinator_measured_round_seconds",
            "Last round time reported by the master",
            registry=r,
        )
        # Not "..._plan_s_edge": promtool reads a lone "s" token as an abbreviated unit.
        self.plan_s_edge = Gauge(
            "edgecode_coordinator_plan_edge_stragglers",
            "s_edge of the current plan: edge stragglers tolerated",
            registry=r,
        )
        self.plan_partitions = Gauge(
            "edgecode_coordinator_plan_partitions", "K of the current plan", registry=r
        )
        self.plan_seconds = Histogram(
            "edgecode_coordinator_planning_seconds",
            "Seconds the planner took",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.measurements = Counter(
            "edgecode_coordinator_measurements_total", "Timing measurements received", registry=r
        )

    # -- what the coordinator's logic records (coordinator.logic.CoordinatorMetricsPort) --
    def measured(self, count: int, round_seconds: float) -> None:
        self.measurements.inc(count)
        if round_seconds > 0:
            self.measured_round_seconds.set(round_seconds)

    def planned(self, seconds: float, predicted: float, s_edge: int, partitions: int) -> None:
        self.plan_seconds.observe(seconds)
        self.predicted_round_seconds.set(predicted)
        self.plan_s_edge.set(s_edge)
        self.plan_partitions.set(partitions)

    def membership(self, role: str, alive: int, dead: int) -> None:
        self.nodes.labels(role, "alive").set(alive)
        self.nodes.labels(role, "dead").set(dead)
