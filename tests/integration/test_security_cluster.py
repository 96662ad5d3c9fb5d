"""No confused deputy, on a real local cluster (separate processes, mutual TLS from its ephemeral
CA): the master reads only files inside its data directories, refusing every other path with one
message that says nothing about the file; and dials only addresses of its authenticated
membership, never one a request names."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import scipy.sparse as sp

from edgecode.cluster.local import ClusterSetup, EdgeSetup, LocalCluster, WorkerSetup
from edgecode.master.client import FINAL_STATES, MasterClient
from edgecode.records import JobConfig
from edgecode.runtime.security import Tls
from edgecode.runtime.server import make_channel
from edgecode.v1 import master_pb2, master_pb2_grpc

#: A local cluster of five processes: about 10 s on a quiet 2-core machine, 20 s on a busy one.
pytestmark = pytest.mark.slow

DENIED = grpc.StatusCode.PERMISSION_DENIED
REFUSAL = "files outside the master's data directories are not allowed"


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("files")
    data, outside = base / "data", base / "outside"
    data.mkdir()
    outside.mkdir()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    rows = np.column_stack([x, (x[:, 0] > 0).astype(int)])
    np.savetxt(data / "train.csv", rows, delimiter=",", fmt="%.6f")
    np.savetxt(outside / "secret.csv", rows, delimiter=",", fmt="%.6f")
    sp.save_npz(data / "A.npz", sp.random(20, 8, density=0.3, random_state=1, format="csr"))
    sp.save_npz(outside / "A.npz", sp.random(20, 8, density=0.3, random_state=1, format="csr"))
    (outside / "model.py").write_text("def net(n_features, n_classes):\n    raise SystemExit\n")
    (data / "link.csv").symlink_to(outside / "secret.csv")
    return {"data": data, "outside": outside}


@pytest.fixture(scope="module")
def cluster(
    places: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    setup = ClusterSetup(
        (EdgeSetup("edge-0"),),
        (WorkerSetup("w0", "edge-0"), WorkerSetup("w1", "edge-0")),
    )
    workdir = tmp_path_factory.mktemp("cluster")
    with LocalCluster(setup, workdir, data_dirs=(str(places["data"]),)) as running:
        yield running


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[MasterClient]:
    master = cluster.client()
    try:
        yield master
    finally:
        master.close()


def _error(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), str(exc.details())
    return grpc.StatusCode.OK, ""


def _job(dataset: str, model: str = "") -> JobConfig:
    return JobConfig(scheme="uncoded", dataset=dataset, model=model, rounds=2, checkpoint_every=0)


def test_the_local_cluster_runs_mutual_tls(cluster: LocalCluster) -> None:
    assert cluster.client_tls is not None
    for process in cluster.processes.values():
        with grpc.insecure_channel(process.address) as channel:
            stub = master_pb2_grpc.MasterStub(channel)
            code, _ = _error(lambda stub=stub: stub.GetJob(master_pb2.GetJobRequest(), timeout=5))
            assert code == grpc.StatusCode.UNAVAILABLE, process.name
    # a node's certificate is not a user's: a worker may not submit jobs
    worker = Tls.from_dir(cluster.tls_dir / "w0")
    with make_channel(cluster.master_address, worker) as channel:
        stub = master_pb2_grpc.MasterStub(channel)
        code, details = _error(lambda: stub.GetJob(master_pb2.GetJobRequest(), timeout=5))
        assert code == DENIED and "worker/w0 may not call" in details


def test_job_files_outside_the_data_directories_are_refused_alike(
    client: MasterClient, places: dict[str, Path]
) -> None:
    data, outside = places["data"], places["outside"]
    refused = [
        _job(str(outside / "secret.csv")),  # exists
        _job(str(outside / "missing.csv")),  # does not
        _job(str(outside)),  # a folder
        _job("/etc/passwd"),
        _job(str(data / ".." / "outside" / "secret.csv")),  # climbs out
        _job(str(data / "link.csv")),  # a link inside pointing outside
        _job("~/secret.csv"),
        _job("breast_cancer", f"torch:{outside / 'model.py'}:net"),
    ]
    answers = {_error(lambda config=config: client.submit(config)) for config in refused}
    # one answer for all: nothing about the file leaks
    assert {code for code, _ in answers} == {DENIED}
    assert {details.replace("model:", "dataset:") for _, details in answers} == {
        f"dataset: {REFUSAL}"
    }
    # inside: the usual errors and the usual service
    code, details = _error(lambda: client.submit(_job(str(data / "missing.csv"))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not found" in details
    job_id = client.submit(_job(str(data / "train.csv")))
    status = client.wait(job_id, timeout=120)
    assert status.state == master_pb2.JOB_STATE_SUCCEEDED, status.message
    assert status.state in FINAL_STATES


def _matmul(client: MasterClient, **spec: Any) -> tuple[grpc.StatusCode, str]:
    message = master_pb2.MatmulSpec(scheme="dense", n=len(spec.get("workers", "01")), k=1, **spec)
    return _error(lambda: client.submit_matmul(message, None, timeout=60))


def test_matrix_files_outside_the_data_directories_are_refused(
    client: MasterClient, places: dict[str, Path]
) -> None:
    for path in (places["outside"] / "A.npz", places["outside"] / "none.npz"):
        assert _matmul(client, matrix_path=str(path)) == (DENIED, f"matrix_path: {REFUSAL}")
    code, _ = _matmul(client, job_id="inside", matrix_path=str(places["data"] / "A.npz"))
    assert code == grpc.StatusCode.OK


def test_the_master_dials_only_its_membership(
    client: MasterClient, places: dict[str, Path]
) -> None:
    """A matrix job naming worker addresses: an address no node registered is refused before
    the master connects to it (a listener there sees no connection)."""
    matrix = str(places["data"] / "A.npz")
    with socket.create_server(("127.0.0.1", 0)) as bait:
        bait.settimeout(0.5)
        address = f"127.0.0.1:{bait.getsockname()[1]}"
        code, details = _matmul(client, job_id="bait", workers=[address], matrix_path=matrix)
        assert code == DENIED and "not the address of a node registered" in details
        with pytest.raises(TimeoutError):
            bait.accept()
    # the registered workers' addresses are fine
    code, _ = _matmul(client, job_id="members", matrix_path=matrix)
    assert code == grpc.StatusCode.OK
