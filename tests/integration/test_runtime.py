"""What every service shares, checked on real processes and real gRPC:

- settings come from flags, then ``EDGECODE_*`` variables, then the TOML file (one process given
  the same keys in all three sources);
- SIGTERM: health turns NOT_SERVING (seen by a client watching it), then the process exits 0;
- the error mapping: every core exception raised inside a real servicer reaches the client as
  its status code (PERMISSION_DENIED for ``NotAllowed`` included), anything else as INTERNAL with
  a message that does not leak the exception, and the service keeps serving;
- heartbeats: a killed or frozen node is marked dead by the coordinator after
  ``dead_after_seconds``, live nodes never are, and a thawed node is alive again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgecode import errors
from edgecode.aggregator.logic import AggregatorLogic
from edgecode.aggregator.service import AggregatorServicer
from edgecode.aggregator.transport import GrpcWorkerClient
from edgecode.cluster.local import ClusterSetup, EdgeSetup, LocalCluster, WorkerSetup
from edgecode.coordinator.logic import CoordinatorLogic
from edgecode.coordinator.service import CoordinatorServicer
from edgecode.master.ports import Node
from edgecode.master.transport import GrpcTransport
from edgecode.records import JobConfig
from edgecode.runtime.errors import STATUS
from edgecode.runtime.membership import machine_id
from edgecode.runtime.metrics import AggregatorMetrics, WorkerMetrics
from edgecode.v1 import (
    aggregator_pb2,
    aggregator_pb2_grpc,
    coordinator_pb2,
    coordinator_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)
from edgecode.worker.logic import WorkerLogic
from edgecode.worker.service import WorkerServicer, add_worker_servicer

CALL_TIMEOUT = 20.0
START_TIMEOUT = 60.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _clean_env() -> dict[str, str]:
    # Plaintext, explicitly: these services talk to in-process plaintext servers and are probed
    # without certificates (mutual TLS is tested in test_security*.py and test_services.py).
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECODE_")}
    return env | {"EDGECODE_INSECURE": "true"}


def _wait_ready(path: Path, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT
    while not path.exists():
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise AssertionError(f"exited with {process.returncode}: {err[-2000:]}")
        assert time.monotonic() < deadline, "service did not become ready"
        time.sleep(0.05)
    return dict(json.loads(path.read_text()))


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


# ---- configuration precedence ------------------------------------------------------------------


@pytest.fixture
def coordinator(inproc_servers: Any) -> tuple[str, coordinator_pb2_grpc.CoordinatorStub]:
    logic = CoordinatorLogic(heartbeat_seconds=0.5, dead_after_seconds=3600.0)
    address = inproc_servers.serve(
        [
            (
                coordinator_pb2_grpc.add_CoordinatorServicer_to_server,
                CoordinatorServicer(logic),
                "edgecode.v1.Coordinator",
            )
        ]
    )
    return address, coordinator_pb2_grpc.CoordinatorStub(inproc_servers.channel(address))


def _registered(stub: coordinator_pb2_grpc.CoordinatorStub) -> list[coordinator_pb2.Node]:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        nodes = list(stub.GetCluster(coordinator_pb2.GetClusterRequest(), timeout=5).nodes)
        if nodes:
            return nodes
        assert time.monotonic() < deadline, "the worker never registered"
        time.sleep(0.05)


def test_flags_beat_environment_beat_toml(tmp_path: Path, coordinator: Any) -> None:
    """One worker given overlapping settings in all three sources: for every key the flag wins
    over the variable, the variable over the file, and the file over the default."""
    address, stub = coordinator
    ready = {source: tmp_path / f"{source}.json" for source in ("flag", "env", "toml")}
    toml = tmp_path / "worker.toml"
    toml.write_text(
        "[worker]\n"
        'name = "toml-name"\n'  # flag and env also set: the flag wins
        f'ready_file = "{ready["toml"]}"\n'  # flag and env also set: the flag wins
        'advertise_host = "toml-host"\n'  # env also set: env wins
        'coordinator = "127.0.0.1:1"\n'  # env also set (the live one): env wins
        "link_seconds = 0.25\n"  # flag also set: the flag wins
        'edge = "toml-edge"\n'  # only here: beats the default "edge-0"
        'port = "not-a-port"\n'  # env also set: never read, or the worker would refuse it
    )
    env = _clean_env() | {
        "EDGECODE_NAME": "env-name",
        "EDGECODE_READY_FILE": str(ready["env"]),
        "EDGECODE_ADVERTISE_HOST": "env-host",
        "EDGECODE_COORDINATOR": address,
        "EDGECODE_PORT": "0",
        "EDGECODE_METRICS_PORT": "0",
    }
    args = [sys.executable, "-m", "edgecode", "worker", "--config", str(toml)]
    args += ["--name", "flag-name", "--ready-file", str(ready["flag"]), "--link-seconds", "0.5"]
    with subprocess.Popen(args, env=env, stderr=subprocess.PIPE) as process:
        try:
            info = _wait_ready(ready["flag"], process)
            (node,) = _registered(stub)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            _stop(process)
    assert not ready["env"].exists() and not ready["toml"].exists()
    assert info["address"] == f"env-host:{info['port']}" and info["port"] > 0
    assert (node.name, node.address, node.edge) == ("flag-name", info["address"], "toml-edge")
    assert node.link_seconds == 0.5


# ---- SIGTERM -----------------------------------------------------------------------------------


def _role_args(role: str) -> list[str]:
    # A master needs a coordinator address; one that answers nothing is enough to start.
    return ["--coordinator", "127.0.0.1:1"] if role == "master" else []


@pytest.mark.parametrize("role", ["coordinator", "master", "aggregator", "worker"])
def test_sigterm_turns_health_not_serving_then_exits_zero(tmp_path: Path, role: str) -> None:
    ready = tmp_path / "ready.json"
    args = [sys.executable, "-m", "edgecode", role, "--port", "0", "--metrics-port", "0"]
    args += ["--ready-file", str(ready), *_role_args(role)]
    with subprocess.Popen(args, env=_clean_env(), stderr=subprocess.PIPE) as process:
        try:
            info = _wait_ready(ready, process)
            with grpc.insecure_channel(info["address"]) as channel:
                watch = health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT
                )
                statuses: Iterator[Any] = (response.status for response in watch)
                assert next(statuses) == SERVING
                process.send_signal(signal.SIGTERM)
                # The watcher is told before the server stops: a load balancer stops sending.
                assert next(statuses) == NOT_SERVING
                watch.cancel()
            assert process.wait(timeout=30) == 0
        finally:
            _stop(process)


# ---- error mapping -----------------------------------------------------------------------------


class FaultyWorkerLogic(WorkerLogic):
    """The real worker logic, except that ``compute`` raises the exception it is given."""

    fault: BaseException | None = None

    def compute(self, *args: Any, **kwargs: Any) -> Any:
        if self.fault is not None:
            raise self.fault
        return super().compute(*args, **kwargs)


class FaultyAggregatorLogic(AggregatorLogic):
    fault: BaseException | None = None

    def run_round(self, *args: Any, **kwargs: Any) -> Any:
        if self.fault is not None:
            raise self.fault
        return super().run_round(*args, **kwargs)


C = grpc.StatusCode
#: The README's mapping, written out (not read from the table under test).
EXPECTED: dict[type[BaseException], grpc.StatusCode] = {
    errors.InvalidInput: C.INVALID_ARGUMENT,
    errors.BadModel: C.INVALID_ARGUMENT,
    ValueError: C.INVALID_ARGUMENT,
    errors.StaleRound: C.FAILED_PRECONDITION,
    errors.UnknownJob: C.FAILED_PRECONDITION,
    errors.Infeasible: C.FAILED_PRECONDITION,
    errors.NotAllowed: C.PERMISSION_DENIED,
    errors.Overloaded: C.RESOURCE_EXHAUSTED,
    errors.NotDecodable: C.UNAVAILABLE,
    errors.RoundFailed: C.UNAVAILABLE,
    errors.AlreadyExists: C.ALREADY_EXISTS,
}
MAPPED = [(kind(f"{kind.__name__} detail"), code) for kind, code in EXPECTED.items()]
UNEXPECTED = (RuntimeError("secret detail"), KeyError("secret detail"), ZeroDivisionError())


def test_every_mapped_class_is_expected_here() -> None:
    """A class added to the mapping must be added above (and so be tested)."""
    assert {kind for kind, _ in STATUS} <= set(EXPECTED)


@pytest.fixture
def faulty_worker(inproc_servers: Any) -> tuple[FaultyWorkerLogic, worker_pb2_grpc.WorkerStub]:
    metrics = WorkerMetrics()
    logic = FaultyWorkerLogic("w-faulty", metrics=metrics)
    address = inproc_servers.serve(
        [(add_worker_servicer, WorkerServicer(logic, metrics), "edgecode.v1.Worker")]
    )
    return logic, worker_pb2_grpc.WorkerStub(inproc_servers.channel(address))


def _compute(stub: worker_pb2_grpc.WorkerStub) -> Any:
    from edgecode import wire

    request = worker_pb2.ComputeGradientRequest(job_id="no-job", round=1, placement_epoch=1)
    wire.tensor_to_proto(np.zeros(3), out=request.params)
    return stub.ComputeGradient(request, timeout=CALL_TIMEOUT)


def _status_of(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value  # type: ignore[return-value]


def test_unary_servicer_maps_every_exception(faulty_worker: Any) -> None:
    logic, stub = faulty_worker
    for exc, code in MAPPED:
        logic.fault = exc
        error = _status_of(lambda: _compute(stub))
        assert (error.code(), error.details()) == (code, str(exc)), type(exc).__name__
    for exc in UNEXPECTED:
        logic.fault = exc
        error = _status_of(lambda: _compute(stub))
        assert error.code() == grpc.StatusCode.INTERNAL, type(exc).__name__
        details = error.details() or ""
        assert details == "internal error in ComputeGradient" and "secret" not in details
    # The service stays up and answers as usual: an unknown job is a failed precondition.
    logic.fault = None
    error = _status_of(lambda: _compute(stub))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "no-job" in (
        error.details() or ""
    )


def test_streaming_servicer_maps_every_exception(inproc_servers: Any) -> None:
    logic = FaultyAggregatorLogic("edge-faulty", GrpcWorkerClient, AggregatorMetrics())
    address = inproc_servers.serve(
        [
            (
                aggregator_pb2_grpc.add_AggregatorServicer_to_server,
                AggregatorServicer(logic),
                "edgecode.v1.Aggregator",
            )
        ]
    )
    stub = aggregator_pb2_grpc.AggregatorStub(inproc_servers.channel(address))

    def run_round() -> list[Any]:
        from edgecode import wire

        request = aggregator_pb2.RunRoundRequest(job_id="no-job", round=1, placement_epoch=1)
        wire.tensor_to_proto(np.zeros(3), out=request.params)
        return list(stub.RunRound(request, timeout=CALL_TIMEOUT))

    for exc, code in [*MAPPED, *((e, grpc.StatusCode.INTERNAL) for e in UNEXPECTED)]:
        logic.fault = exc
        error = _status_of(run_round)
        assert error.code() == code, type(exc).__name__
        if code == grpc.StatusCode.INTERNAL:
            assert error.details() == "internal error in RunRound"
        else:
            assert error.details() == str(exc)
    logic.fault = None
    assert _status_of(run_round).code() == grpc.StatusCode.FAILED_PRECONDITION


# ---- heartbeats ----------------------------------------------------------------------------------

HEARTBEAT = 0.2
#: 15 heartbeats: a loaded machine (other suites on the same 2 cores) may delay a few.
DEAD_AFTER = 3.0


@pytest.fixture
def small_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    setup = ClusterSetup(
        (EdgeSetup("edge-0"),),
        tuple(WorkerSetup(f"edge-0-w{i}", "edge-0") for i in range(3)),
        heartbeat_seconds=HEARTBEAT,
        dead_after_seconds=DEAD_AFTER,
    )
    with LocalCluster(setup, tmp_path / "cluster") as cluster:
        yield cluster


def _membership(cluster: LocalCluster) -> tuple[set[str], set[str]]:
    """(alive, dead) node names as the coordinator reports them."""
    with cluster.channel(cluster.processes["coordinator"].address) as channel:
        reply = coordinator_pb2_grpc.CoordinatorStub(channel).GetCluster(
            coordinator_pb2.GetClusterRequest(), timeout=CALL_TIMEOUT
        )
    return {n.name for n in reply.nodes}, set(reply.dead)


def _until(condition: Any, what: str, timeout: float = 30.0) -> float:
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout, what
        time.sleep(0.05)
    return time.monotonic() - began


def _dead_gauge(cluster: LocalCluster, role: str) -> float:
    page = urllib.request.urlopen(cluster.processes["coordinator"].metrics_url, timeout=10).read()
    line = f'edgecode_coordinator_nodes{{role="{role}",state="dead"}} '
    values = [float(row[len(line) :]) for row in page.decode().splitlines() if row.startswith(line)]
    assert len(values) == 1, page.decode()[-2000:]
    return values[0]


def test_heartbeats_mark_silent_nodes_dead_and_keep_live_ones(small_cluster: LocalCluster) -> None:
    everyone = {"edge-0", "edge-0-w0", "edge-0-w1", "edge-0-w2"}
    # Live nodes stay alive over several dead-after periods: only heartbeats can do that.
    stop = time.monotonic() + 1.5 * DEAD_AFTER
    while time.monotonic() < stop:
        assert _membership(small_cluster) == (everyone, set())
        time.sleep(0.1)
    # A crash: dead after dead_after (its last heartbeat was at most one interval before).
    small_cluster.kill("edge-0-w1")
    _until(lambda: "edge-0-w1" in _membership(small_cluster)[1], "never marked dead")
    assert _membership(small_cluster) == (everyone - {"edge-0-w1"}, {"edge-0-w1"})
    # The membership gauge follows within a heartbeat interval (it is refreshed by heartbeats).
    _until(lambda: _dead_gauge(small_cluster, "worker") == 1, "dead gauge never 1", timeout=10)
    # A frozen node (alive, silent) goes dead too, and comes back when it thaws.
    small_cluster.pause("edge-0")
    try:
        _until(lambda: "edge-0" in _membership(small_cluster)[1], "frozen edge never dead")
    finally:
        small_cluster.resume("edge-0")
    _until(lambda: "edge-0" not in _membership(small_cluster)[1], "thawed edge not alive again")
    assert _membership(small_cluster) == (everyone - {"edge-0-w1"}, {"edge-0-w1"})


def test_workers_name_their_machine_and_report_their_cpu_cost(small_cluster: LocalCluster) -> None:
    """Real worker processes register their machine (the boot-id digest every process and
    container of this machine shares) and its cores; after a job their heartbeats carry the
    CPU seconds their real compute took per whole data set (the planner's shared-host floor)."""
    client = small_cluster.client()
    try:
        config = JobConfig(
            scheme="hgc", dataset="digits", rounds=3, s_edge=0, s_worker=1, checkpoint_every=0
        )
        status = client.wait(client.submit(config), timeout=120)
        assert status.message == "3 rounds", status
    finally:
        client.close()

    def workers() -> list[coordinator_pb2.Node]:
        with small_cluster.channel(small_cluster.processes["coordinator"].address) as channel:
            reply = coordinator_pb2_grpc.CoordinatorStub(channel).GetCluster(
                coordinator_pb2.GetClusterRequest(), timeout=CALL_TIMEOUT
            )
        return [n for n in reply.nodes if n.role == "worker"]

    _until(
        lambda: len(workers()) == 3 and all(n.cpu_seconds > 0 for n in workers()),
        "every worker's heartbeat carries its CPU seconds",
    )
    nodes = workers()
    assert {n.host for n in nodes} == {machine_id()}, [n.host for n in nodes]
    assert {n.host_cpus for n in nodes} == {float(os.cpu_count() or 1)}
    cpu = np.array([n.cpu_seconds for n in nodes])
    # digits (1797 x 64, softmax): well under a second of CPU for the whole set, not zero
    assert np.all(np.isfinite(cpu)) and np.all((cpu > 0) & (cpu < 5.0)), cpu


def test_the_gradient_stream_answers_every_exception_and_goes_on(inproc_servers: Any) -> None:
    """ComputeGradients: each failed round is answered with the same status code and message
    as the unary call (INTERNAL without internals for the unexpected ones) on the SAME stream,
    which then answers the next round as usual."""
    metrics = WorkerMetrics()
    logic = FaultyWorkerLogic("w-faulty", metrics=metrics)
    address = inproc_servers.serve(
        [(add_worker_servicer, WorkerServicer(logic, metrics), "edgecode.v1.Worker")]
    )
    client = GrpcWorkerClient(["w-faulty"], [address])
    try:
        for exc, code in [*MAPPED, *((e, grpc.StatusCode.INTERNAL) for e in UNEXPECTED)]:
            logic.fault = exc
            (call,) = client.compute("no-job", 1, np.zeros(3), 1, CALL_TIMEOUT)
            error = _status_of(lambda call=call: call.result(timeout=CALL_TIMEOUT))
            assert error.code() == code, type(exc).__name__
            expected = "internal error in ComputeGradients" if code.name == "INTERNAL" else str(exc)
            assert error.details() == expected and "secret" not in error.details()
        logic.fault = None
        (call,) = client.compute("no-job", 2, np.zeros(3), 1, CALL_TIMEOUT)
        error = _status_of(lambda: call.result(timeout=CALL_TIMEOUT))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "no-job" in error.details()
    finally:
        client.close()


def test_the_round_stream_answers_every_exception_and_goes_on(inproc_servers: Any) -> None:
    """RunRounds: the same mapping as RunRound, each failed round on the same stream."""
    logic = FaultyAggregatorLogic("edge-faulty", GrpcWorkerClient, AggregatorMetrics())
    address = inproc_servers.serve(
        [
            (
                aggregator_pb2_grpc.add_AggregatorServicer_to_server,
                AggregatorServicer(logic),
                "edgecode.v1.Aggregator",
            )
        ]
    )
    transport = GrpcTransport(streams=True)
    node = Node("edge-faulty", address)
    try:
        for exc, code in [*MAPPED, *((e, grpc.StatusCode.INTERNAL) for e in UNEXPECTED)]:
            logic.fault = exc
            error = _status_of(
                lambda: list(transport.run_round(node, "no-job", 1, np.zeros(3), 1, CALL_TIMEOUT))
            )
            assert error.code() == code, type(exc).__name__
            expected = "internal error in RunRounds" if code.name == "INTERNAL" else str(exc)
            assert error.details() == expected
        assert len(transport._conversations) == 1
    finally:
        transport.close()
