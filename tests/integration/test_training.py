"""Training on a real local cluster (separate processes, real gRPC on loopback): exactness of
the coded schemes at every round, and faults (killed workers, edges and master)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from edgecode.cluster.local import ClusterSetup, EdgeSetup, LocalCluster, WorkerSetup, default_setup
from edgecode.learning.models import get_model
from edgecode.master.client import MasterClient, param_history_of, params_of, state_name
from edgecode.records import JobConfig

ROUNDS = 24
#: Relative deviation from the uncoded trajectory allowed at every round.
EXACT = 1e-9


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(float(np.linalg.norm(b)), 1e-300))


def assert_exact_at_every_round(
    history: list[np.ndarray], reference: list[np.ndarray], tol: float = EXACT
) -> None:
    """Every round's parameters are finite and within ``tol`` (relative) of the reference's:
    each error is checked, not a running max (which would drop a NaN)."""
    assert len(history) == len(reference) > 0
    assert all(np.all(np.isfinite(h)) for h in history), "non-finite parameters"
    errors = np.array([_relative(a, b) for a, b in zip(history, reference, strict=True)])
    assert np.all(np.isfinite(errors)) and np.all(errors <= tol), errors


def _come_and_go_setup() -> ClusterSetup:
    """2 edges x 4 workers; stragglers come and go (Bernoulli) on three workers, one edge slow."""
    straggle = {
        "edge-0-w1": "bernoulli:p=0.4,factor=6",
        "edge-1-w2": "bernoulli:p=0.4,factor=6",
        "edge-1-w3": "bernoulli:p=0.3,factor=6",
    }
    workers = tuple(
        WorkerSetup(f"edge-{e}-w{w}", f"edge-{e}", straggle.get(f"edge-{e}-w{w}", "none"))
        for e in range(2)
        for w in range(4)
    )
    return ClusterSetup((EdgeSetup("edge-0"), EdgeSetup("edge-1", 0.01)), workers, 0.024, seed=3)


def _job(scheme: str, **changes: object) -> JobConfig:
    values = {
        "scheme": scheme,
        "rounds": ROUNDS,
        "seed": 7,
        "record_params": True,
        "checkpoint_every": 0,
        "s_edge": 1,
        "s_worker": 1,
        "s_flat": 1,
        "round_deadline_seconds": 20.0,
    }
    values.update(changes)
    return JobConfig(**values)  # type: ignore[arg-type]


def _run(client: MasterClient, config: JobConfig) -> tuple[list[np.ndarray], object]:
    status = client.wait(client.submit(config), timeout=180)
    assert state_name(status) == "succeeded", status.message
    history = param_history_of(status)
    assert len(history) == config.rounds
    return history, status


@pytest.fixture(scope="module")
def cluster(data_files):
    # The master reads the test's data files and the example torch models: its data directories.
    folders = {str(Path(path).parent) for path in data_files.values()}
    folders.add(str(Path(__file__).resolve().parents[2] / "examples" / "torch"))
    with LocalCluster(_come_and_go_setup(), data_dirs=tuple(sorted(folders))) as running:
        yield running


@pytest.fixture(scope="module")
def uncoded_reference(cluster) -> list[np.ndarray]:
    client = cluster.client()
    history, _ = _run(client, _job("uncoded"))
    client.close()
    return history


def _run_watching(
    client: MasterClient, config: JobConfig, workers: set[str]
) -> tuple[list[np.ndarray], object, dict[int, frozenset[str]]]:
    """Run a job and note, for every round the watch sees, the workers whose answer was not
    used (the round's stragglers by name; a status lists the nodes that answered)."""
    seen: dict[int, frozenset[str]] = {}

    def note(status: object) -> None:
        # The watch sends only new history records; the client joins them into the whole.
        records = [r.round for r in status.history]  # type: ignore[attr-defined]
        assert records == list(range(status.round)), records  # type: ignore[attr-defined]
        timings = status.last_timings  # type: ignore[attr-defined]
        if status.round > 0 and timings:  # type: ignore[attr-defined]
            seen[status.round] = frozenset(workers - {t.node for t in timings if t.arrived})  # type: ignore[attr-defined]

    status = client.wait(client.submit(config), on_status=note, timeout=180)
    assert state_name(status) == "succeeded", status.message
    history = param_history_of(status)
    assert len(history) == config.rounds
    return history, status, seen


@pytest.mark.parametrize("scheme", ["hgc", "flat"])
def test_coded_schemes_follow_uncoded_at_every_round(cluster, uncoded_reference, scheme) -> None:
    client = cluster.client()
    workers = {w.name for w in cluster.setup.workers}
    history, status, stragglers = _run_watching(client, _job(scheme), workers)
    client.close()
    assert_exact_at_every_round(history, uncoded_reference)
    # Stragglers really came and went: the set of nodes not waited for changes between rounds
    # (the COUNT is fixed by the code, e.g. always one worker for flat with s = 1).
    assert len(stragglers) >= 3, stragglers
    assert all(stragglers.values()), "every coded round leaves someone out"
    assert len(set(stragglers.values())) >= 2, stragglers
    # The counts agree with the names seen.
    counts = {r.round + 1: r.stragglers for r in status.history}
    assert all(counts[r] == len(names) for r, names in stragglers.items()), (counts, stragglers)


def test_planner_job_is_exact_at_every_round(cluster, uncoded_reference) -> None:
    """The default path (``make run``, ``edgecode train``): hgc with ``s_edge = -1`` uses the
    coordinator's plan, re-plans after the profiling rounds and may re-place the data; the
    parameters still follow the uncoded job's at every round."""
    client = cluster.client()
    history, status = _run(client, _job("hgc", s_edge=-1))
    client.close()
    assert status.plan_json, "a planner job reports the plan it used"
    assert status.predicted_round_seconds > 0, "a planned job has a predicted round time"
    assert_exact_at_every_round(history, uncoded_reference)


def test_ignore_stragglers_visibly_deviates(cluster, uncoded_reference) -> None:
    client = cluster.client()
    history, _ = _run(client, _job("ignore"))
    client.close()
    assert _relative(history[-1], uncoded_reference[-1]) > 1e-4


def test_hgc_is_exact_with_more_partitions(cluster, uncoded_reference) -> None:
    client = cluster.client()
    history, _ = _run(client, _job("hgc", partitions=24))
    client.close()
    assert_exact_at_every_round(history, uncoded_reference)


# ---- other data and models through the real cluster -----------------------------------------

DATA_ROUNDS = 8


def _write_libsvm(path: Path, rng: np.random.Generator) -> None:
    """A sparse binary problem, labels -1/+1, 1-based indices."""
    X = sp.random(160, 30, density=0.15, format="csr", random_state=rng)
    w = rng.standard_normal(30)
    labels = np.where(X @ w + 0.1 * rng.standard_normal(160) > 0, 1, -1)
    with path.open("w") as handle:
        for row, label in enumerate(labels):
            start, end = X.indptr[row], X.indptr[row + 1]
            pairs = " ".join(
                f"{j + 1}:{v:.6f}"
                for j, v in zip(X.indices[start:end], X.data[start:end], strict=True)
            )
            handle.write(f"{label:+d} {pairs}\n")


def _write_csv(path: Path, rng: np.random.Generator) -> None:
    """A dense 3-class problem (softmax) with a header line."""
    centres = rng.standard_normal((3, 5)) * 2
    labels = rng.integers(0, 3, size=150)
    X = centres[labels] + rng.standard_normal((150, 5))
    table = np.column_stack([X, labels])
    np.savetxt(path, table, delimiter=",", header="a,b,c,d,e,label", comments="", fmt="%.8g")


def _write_npz(path: Path, rng: np.random.Generator) -> None:
    """A sparse regression problem (least squares) stored as CSR arrays."""
    X = sp.random(140, 25, density=0.2, format="csr", random_state=rng)
    y = X @ rng.standard_normal(25) + 0.01 * rng.standard_normal(140)
    np.savez(path, data=X.data, indices=X.indices, indptr=X.indptr, shape=X.shape, y=y)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(11)
    files = {
        "libsvm": folder / "binary.svm",
        "csv": folder / "classes.csv",
        "npz": folder / "lsq.npz",
    }
    _write_libsvm(files["libsvm"], rng)
    _write_csv(files["csv"], rng)
    _write_npz(files["npz"], rng)
    return {kind: str(path) for kind, path in files.items()}


#: data set spec (or a data file's kind) -> the model the master must pick for it
DATASETS = {
    "synthetic-sparse:n=300,d=40,density=0.1,task=binary": ("logistic", True),
    "synthetic-lsq:n=200,d=10": ("least_squares", False),
    "iris": ("softmax", False),
    "libsvm": ("logistic", True),
    "csv": ("softmax", False),
    "npz": ("least_squares", True),
}


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_other_data_and_models_are_exact_at_every_round(cluster, data_files, dataset: str) -> None:
    """Sparse and dense data, logistic, softmax and least-squares models, bundled, synthetic
    and LIBSVM / CSV / NPZ files: hgc through the real cluster follows uncoded at every round."""
    from edgecode.learning.datasets import get_dataset

    spec = data_files.get(dataset, dataset)
    model, sparse = DATASETS[dataset]
    loaded = get_dataset(spec, np.random.default_rng(0))
    assert loaded.default_model == model and loaded.is_sparse == sparse
    n_params = get_model(model).n_params(loaded.n_features, loaded.n_classes)
    client = cluster.client()
    # A step size that suits every problem here (the default is tuned for logistic regression).
    changes = {"dataset": spec, "rounds": DATA_ROUNDS, "learning_rate": 0.1}
    reference, _ = _run(client, _job("uncoded", **changes))
    history, status = _run(client, _job("hgc", **changes))
    client.close()
    assert all(h.shape == (n_params,) for h in history)
    assert_exact_at_every_round(history, reference)
    losses = [r.loss for r in status.history]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    # The job really moved: the parameters left their start.
    assert np.linalg.norm(history[-1]) > 0


#: (function in examples/torch/models.py, its parameter count for digits: 64 features, 10 classes)
TORCH_MODELS = {"small_mlp": 2410, "small_cnn": 1898}


@pytest.mark.parametrize("function", list(TORCH_MODELS))
def test_torch_models_are_exact_at_every_round(cluster, function: str) -> None:
    """A PyTorch model (issue 17) through the real cluster: float64 parameters on the wire,
    each worker's coded gradient in one weighted backward pass, Adam with a cosine schedule on
    the master, Bernoulli stragglers coming and going; hgc and flat follow uncoded at every
    round."""
    pytest.importorskip("torch")
    models = Path(__file__).resolve().parents[2] / "examples" / "torch" / "models.py"
    changes = {
        "dataset": "digits",
        "model": f"torch:{models}:{function}",
        "rounds": 8,
        "optimizer": "adam",
        "learning_rate": 0.01,
        "lr_schedule": "cosine:total=8",
    }
    client = cluster.client()
    reference, _ = _run(client, _job("uncoded", **changes))
    for scheme in ("hgc", "flat"):
        history, status = _run(client, _job(scheme, **changes))
        assert all(h.shape == (TORCH_MODELS[function],) and h.dtype == np.float64 for h in history)
        assert_exact_at_every_round(history, reference)
        losses = [r.loss for r in status.history]
        assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], (scheme, losses)
    client.close()


def _wait_for_round(client: MasterClient, job_id: str, round_: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.status(job_id).round < round_:
        assert time.monotonic() < deadline, f"job did not reach round {round_}"
        time.sleep(0.02)


def _reference(setup: ClusterSetup, config: JobConfig) -> list[np.ndarray]:
    with LocalCluster(setup) as reference_cluster:
        client = reference_cluster.client()
        history, _ = _run(client, config)
        client.close()
    return history


FAULT_JOB = {"rounds": 40, "round_deadline_seconds": 5.0}


def _kill_mid_job(
    cluster: LocalCluster, client: MasterClient, job_id: str, names: tuple[str, ...]
) -> int:
    """Kill ``names`` once the job is past round 8; returns the round the job was at when every
    kill had landed (the processes are gone), checked to be well before the job's end."""
    _wait_for_round(client, job_id, 8)
    for name in names:
        cluster.kill(name)
    for name in names:
        popen = cluster.processes[name].popen
        assert popen is not None and popen.poll() is not None, f"{name} is still running"
    status = client.status(job_id)
    assert state_name(status) == "running", (state_name(status), status.message)
    assert status.round <= FAULT_JOB["rounds"] - 10, "the kills landed too late to matter"
    return int(status.round)


def test_killing_tolerated_nodes_keeps_the_trajectory() -> None:
    """Kill s_w = 1 worker of edge 0 and s_e = 1 whole edge mid-job: same trajectory, and no
    re-placement: the code tolerates the loss as it is."""
    setup = default_setup(compute_seconds=0.032, seed=5)
    reference = _reference(setup, _job("uncoded", **FAULT_JOB))
    killed = ("edge-0-w2", "edge-1")
    with LocalCluster(setup) as faulty:
        client = faulty.client()
        job_id = client.submit(_job("hgc", **FAULT_JOB))
        at_kill = _kill_mid_job(faulty, client, job_id, killed)
        status = client.wait(job_id, timeout=180)
        client.close()
    assert state_name(status) == "succeeded", status.message
    assert status.placements == 1, "tolerated failures must not re-place the data"
    assert status.round == FAULT_JOB["rounds"] > at_kill
    # The last round ran without the killed nodes: none of them answered.
    arrived = {t.node for t in status.last_timings if t.arrived}
    assert arrived and arrived.isdisjoint({"edge-0-w2", *(f"edge-1-w{i}" for i in range(4))})
    assert_exact_at_every_round(param_history_of(status), reference)


def test_more_failures_than_tolerated_replans_and_stays_exact() -> None:
    """Kill two workers of edge 0 (s_w = 1) and edge 1 (s_e = 1): the round cannot be decoded,
    the master re-plans around the unreachable nodes, and the gradient is never wrong."""
    setup = default_setup(compute_seconds=0.032, seed=6)
    reference = _reference(setup, _job("uncoded", **FAULT_JOB))
    with LocalCluster(setup) as faulty:
        client = faulty.client()
        job_id = client.submit(_job("hgc", **FAULT_JOB))
        _kill_mid_job(faulty, client, job_id, ("edge-0-w2", "edge-0-w3", "edge-1"))
        status = client.wait(job_id, timeout=180)
        client.close()
    assert state_name(status) == "succeeded", status.message
    assert status.placements >= 2, "the master should have re-placed the data around the dead nodes"
    assert_exact_at_every_round(param_history_of(status), reference)


def test_too_many_failures_fail_the_job_with_a_clear_message() -> None:
    setup = default_setup(edges=1, workers_per_edge=2, compute_seconds=0.032)
    dead = ("edge-0-w0", "edge-0-w1")
    with LocalCluster(setup) as faulty:
        client = faulty.client()
        job_id = client.submit(_job("hgc", rounds=200, round_deadline_seconds=3.0, s_edge=0))
        _wait_for_round(client, job_id, 3)
        for name in dead:
            faulty.kill(name)
        status = client.wait(job_id, timeout=120)
        client.close()
    assert state_name(status) == "failed"
    assert "could not be decoded" in status.message or "no alive" in status.message
    # The message names every node that was lost.
    for name in dead:
        assert name in status.message, status.message
    # The model keeps the parameters of the last completed round.
    history = param_history_of(status)
    assert 3 <= status.round < 200 and len(history) == status.round
    assert np.all(np.isfinite(params_of(status)))
    np.testing.assert_array_equal(params_of(status), history[-1])


def test_master_restart_resumes_from_checkpoint() -> None:
    setup = default_setup(compute_seconds=0.08, seed=8)
    config = _job("hgc", rounds=40, checkpoint_every=2, job_id="resume-me", record_params=False)
    with LocalCluster(setup) as cluster:
        client = cluster.client()
        client.submit(config)
        _wait_for_round(client, "resume-me", 15)
        client.close()
        master = cluster.restart_master()
        client = MasterClient(master.address, cluster.client_tls)
        deadline = time.monotonic() + 60
        while True:  # the restarted master picks the job up from its checkpoint by itself
            try:
                status = client.status("resume-me")
                break
            except Exception:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert status.round >= 14, "no completed round before the last checkpoint may be lost"
        status = client.wait("resume-me", timeout=180)
        reference_client = cluster.client()
        reference = reference_client.wait(
            reference_client.submit(_job("uncoded", rounds=40, job_id="ref")), timeout=180
        )
        reference_client.close()
        client.close()
    assert state_name(status) == "succeeded", status.message
    assert [r.round for r in status.history] == list(range(40))
    assert _relative(params_of(status), params_of(reference)) <= 1e-9
