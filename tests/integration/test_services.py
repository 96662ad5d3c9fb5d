"""Each service started alone as a user starts it (a subprocess of the console script), and
`edgecode train` against a running cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgecode.cluster.local import LocalCluster, default_setup


def _wait_for(path: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "service did not become ready"
        time.sleep(0.05)
    return json.loads(path.read_text())


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return (
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(), timeout=5)
            .status
        )


@pytest.mark.parametrize("source", ["flags", "env", "toml"])
def test_worker_from_flags_env_or_toml_and_sigterm(tmp_path: Path, source: str) -> None:
    ready = tmp_path / "ready.json"
    args = [sys.executable, "-m", "edgecode", "worker"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECODE_")}
    settings = {"name": "w-test", "port": "0", "metrics_port": "0", "ready_file": str(ready)}
    if source == "flags":
        for key, value in settings.items():
            args += [f"--{key.replace('_', '-')}", value]
    elif source == "env":
        env.update({f"EDGECODE_{k.upper()}": v for k, v in settings.items()})
    else:
        config = tmp_path / "worker.toml"
        config.write_text("[worker]\n" + "".join(f'{k} = "{v}"\n' for k, v in settings.items()))
        args += ["--config", str(config)]
    with subprocess.Popen(args, env=env, stderr=subprocess.PIPE) as process:
        try:
            info = _wait_for(ready, process)
            assert info["role"] == "worker" and info["port"] > 0
            assert _health(info["address"]) == health_pb2.HealthCheckResponse.SERVING
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
            assert time.monotonic() - started < 5, "SIGTERM must stop a service quickly"
        finally:
            if process.poll() is None:
                process.kill()


def test_bad_config_value_names_the_key(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgecode", "worker", "--port", "many"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--port: expected an integer, got 'many'" in result.stderr


def test_train_command_submits_and_follows(tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    with LocalCluster(default_setup(compute_seconds=0.02)) as cluster:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "edgecode",
                "train",
                "--master",
                cluster.master_address,
                "--scheme",
                "hgc",
                "--s-edge",
                "1",
                "--s-worker",
                "1",
                "--rounds",
                "12",
                "--json",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["state"] == "succeeded" and report["rounds"] == 12
    assert len(report["loss"]) == 12 and report["loss"][-1] < report["loss"][0]
    assert "submitted" in result.stdout


def test_run_command_writes_json_and_plot(tmp_path: Path) -> None:
    out, plot = tmp_path / "run.json", tmp_path / "run.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecode",
            "run",
            "--rounds",
            "10",
            "--schemes",
            "hgc,uncoded,ignore",
            "--s-edge",
            "1",
            "--s-worker",
            "1",
            "--compute-seconds",
            "0.02",
            "--json",
            str(out),
            "--plot",
            str(plot),
            "--workdir",
            str(tmp_path / "cluster"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    schemes = {s["scheme"]: s for s in json.loads(out.read_text())["schemes"]}
    assert set(schemes) == {"hgc", "uncoded", "ignore"}
    for s in schemes.values():
        for key in (
            "rounds",
            "mean_round_seconds",
            "median_round_seconds",
            "loss",
            "accuracy",
            "stragglers",
            "setup_seconds",
            "placement_seconds",
            "end_to_end_seconds",
            "time_to_target_seconds",
            "target_loss",
        ):
            assert key in s
        # end to end (client) covers the master's setup and every round's wall time
        assert s["end_to_end_seconds"] >= s["setup_seconds"] + s["wall_seconds"][-1] > 0
        assert s["rounds"] == 10 and len(s["loss"]) == 10 and len(s["stragglers"]) == 10
    assert (
        abs(schemes["hgc"]["loss"][-1] - schemes["uncoded"]["loss"][-1])
        <= 1e-9 * schemes["uncoded"]["loss"][-1]
    )
    # hgc reaches uncoded's final loss, so it has a time to target; it includes its setup
    assert schemes["hgc"]["time_to_target_seconds"] >= schemes["hgc"]["setup_seconds"]
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "vs uncoded" in result.stdout and "to target" in result.stdout


def test_run_rejects_unknown_scheme() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgecode", "run", "--schemes", "hgc,magic"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "argument --schemes: expected a comma list" in result.stderr
