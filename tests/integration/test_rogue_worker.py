"""A rogue worker with a valid worker certificate, over real processes and mutual TLS: a worker
process of a LocalCluster is replaced by one that tampers with its coded gradient in random
rounds (``rogue_worker.py``: scaled, random or sign-flipped). With ``verify`` on, every lie is
caught until the rogue is quarantined (the edge has two spare answers: 4 workers per edge, s_worker = 2, a slack that lets
every answer arrive), none reaches the model (every round equals the uncoded reference computed
on the same cluster before the rogue came, to 1e-9), the rogue is quarantined, and the edge's
``edgecode_edge_inconsistent_results_total{node}`` counts each catch. The control: the same
rogue without verify moves the model.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgecode.cluster.local import LocalCluster, default_setup
from edgecode.master.client import param_history_of, state_name
from edgecode.records import JobConfig

ROGUE = "edge-0-w0"
ROUNDS = 10
SCRIPT = Path(__file__).with_name("rogue_worker.py")


def _config(**overrides: object) -> JobConfig:
    base: dict[str, object] = {
        "rounds": ROUNDS,
        "seed": 5,
        "checkpoint_every": 0,
        "record_params": True,
        "round_deadline_seconds": 20.0,
    }
    return JobConfig(**(base | overrides))  # type: ignore[arg-type]


def _relative_errors(history: list[np.ndarray], want: list[np.ndarray]) -> np.ndarray:
    assert len(history) == len(want) == ROUNDS
    return np.array(
        [
            float(np.linalg.norm(a - b)) / max(float(np.linalg.norm(b)), 1e-300)
            for a, b in zip(history, want, strict=True)
        ]
    )


def _caught(cluster: LocalCluster, edge: str, node: str) -> float:
    with urllib.request.urlopen(cluster.processes[edge].metrics_url, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "edgecode_edge_inconsistent_results_total"
                and sample.labels.get("node") == node
            ):
                return float(sample.value)
    return 0.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    setup = default_setup(straggler="none", slow_link_seconds=0.0, compute_seconds=0.02, seed=3)
    with LocalCluster(setup, tmp_path_factory.mktemp("rogue")) as running:
        yield running


@pytest.fixture(scope="module")
def reference(cluster: LocalCluster) -> list[np.ndarray]:
    """The uncoded trajectory, on the same cluster while every worker is honest."""
    client = cluster.client()
    try:
        status = client.wait(client.submit(_config(scheme="uncoded")), timeout=300)
    finally:
        client.close()
    assert state_name(status) == "succeeded", status.message
    return param_history_of(status)


def _become_rogue(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch, kind: str, log: Path
) -> None:
    """The worker process ROGUE started again as the rogue: the same arguments and certificate,
    ``rogue_worker.py`` instead of ``-m edgecode``."""
    monkeypatch.setenv("ROGUE_KIND", kind)
    monkeypatch.setenv("ROGUE_P", "0.6")
    monkeypatch.setenv("ROGUE_SEED", "11")
    monkeypatch.setenv("ROGUE_LOG", str(log))
    old = cluster.processes[ROGUE]
    at = old.args.index("-m")
    assert old.args[at : at + 2] == ["-m", "edgecode"]
    args = [sys.executable, str(SCRIPT), *old.args[at + 2 :]]
    cluster.processes[ROGUE] = replace(old, args=args)
    cluster.restart(ROGUE)
    cluster.wait_registered(len(cluster.setup.edges) + len(cluster.setup.workers))


def _honest_again(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    old = cluster.processes[ROGUE]
    at = old.args.index(str(SCRIPT))
    args = [sys.executable, "-m", "edgecode", *old.args[at + 1 :]]
    cluster.processes[ROGUE] = replace(old, args=args)
    monkeypatch.undo()
    cluster.restart(ROGUE)
    cluster.wait_registered(len(cluster.setup.edges) + len(cluster.setup.workers))


def _lies(log: Path, job_id: str) -> list[dict[str, int]]:
    if not log.exists():
        return []
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return [line for line in lines if line["job"] == job_id]


@pytest.mark.parametrize("kind", ["scaled", "random", "sign-flipped"])
def test_a_rogue_worker_is_caught_never_applied_and_quarantined(
    cluster: LocalCluster,
    reference: list[np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    kind: str,
) -> None:
    log = tmp_path / "lies.jsonl"
    edge = ROGUE.rsplit("-", 1)[0]
    before = _caught(cluster, edge, ROGUE)
    _become_rogue(cluster, monkeypatch, kind, log)
    client = cluster.client()
    try:
        config = _config(
            scheme="hgc",
            s_edge=0,
            s_worker=2,
            verify=True,
            verify_slack_seconds=5.0,
            quarantine_after=2,
        )
        job_id = client.submit(config)
        status = client.wait(job_id, timeout=300)
    finally:
        client.close()
        _honest_again(cluster, monkeypatch)
    assert state_name(status) == "succeeded", status.message
    errors = _relative_errors(param_history_of(status), reference)
    assert np.all(np.isfinite(errors)) and np.all(errors <= 1e-9), errors
    lies = _lies(log, job_id)
    assert lies, "the rogue never lied"
    # Every lie told before the quarantine was caught (the 2nd catch quarantines; what the
    # rogue sends after that is left out): the job's count and the edge's metric for the rogue.
    caught = min(len(lies), 2)
    assert status.inconsistent_rounds == caught, (status.inconsistent_rounds, lies)
    assert _caught(cluster, edge, ROGUE) - before == caught
    assert list(status.quarantined) == ([ROGUE] if caught == 2 else [])


def test_without_verify_the_rogue_moves_the_model(
    cluster: LocalCluster,
    reference: list[np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The control: the same rogue, verify off, changes the trajectory (so the test above means
    something)."""
    log = tmp_path / "lies.jsonl"
    _become_rogue(cluster, monkeypatch, "sign-flipped", log)
    client = cluster.client()
    try:
        job_id = client.submit(_config(scheme="hgc", s_edge=0, s_worker=0))
        status = client.wait(job_id, timeout=300)
    finally:
        client.close()
        _honest_again(cluster, monkeypatch)
    assert state_name(status) == "succeeded", status.message
    assert _lies(log, job_id)
    errors = _relative_errors(param_history_of(status), reference)
    assert np.all(np.isfinite(errors)) and float(np.max(errors)) > 1e-3, errors
