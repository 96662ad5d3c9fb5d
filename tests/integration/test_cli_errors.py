"""Every error a user can cause ends in ONE line on stderr naming the flag, key, file or address,
with exit code 2 and no traceback, and (for ``run``, ``matmul`` and the services) before a
cluster or a server starts.

The cases run ``edgecode.cli.main(argv)`` in this process with the cluster and the roles
replaced by tripwires: if a case got as far as starting something, the tripwire's
AssertionError escapes ``main`` (it is not a user error) and the test fails. A few cases run the
real console script as a subprocess, as a user would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from edgecode.cli import main
from edgecode.v1 import master_pb2_grpc

EXAMPLES = Path(__file__).parents[2] / "examples"
SPEC = str(EXAMPLES / "homogeneous.toml")


def _started(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a cluster or a service was started")


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tripwires on everything that would start processes or bind ports."""
    from edgecode.cli.services import ROLES, role_module
    from edgecode.cluster.local import LocalCluster

    monkeypatch.setattr(LocalCluster, "start", _started)
    monkeypatch.setattr(LocalCluster, "__init__", _started)
    for role in ROLES:
        monkeypatch.setattr(role_module(role), "run", _started)
    for key in [k for k in os.environ if k.startswith("EDGECODE_")]:
        monkeypatch.delenv(key)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Bad inputs on disk: specs, configs, arrays, and a plain file where a folder belongs."""
    made = {
        "link.toml": '[[edge]]\nname = "e0"\nlink_seconds = "fast"\n'
        '  [[edge.worker]]\n  name = "w0"\n  shift = 0.1\n  rate = 5\n',
        "shift.toml": '[[edge]]\nname = "e0"\n  [[edge.worker]]\n  name = "w0"\n'
        '  shift = "slow"\n  rate = 5\n',
        "typo.toml": '[[edge]]\nname = "e0"\nlink_second = 0.1\n'
        '  [[edge.worker]]\n  name = "w0"\n  shift = 0.1\n  rate = 5\n',
        "broken.toml": "[[edge]\n",
        "port.toml": '[master]\nport = "abc"\n',
        "float_port.toml": "[worker]\nport = 1.5\n",
        "unknown.toml": "[master]\nnosuch = 1\n",
        "plain": "not a folder\n",
    }
    paths = {}
    for name, text in made.items():
        (tmp_path / name).write_text(text)
        paths[name] = str(tmp_path / name)
    np.save(tmp_path / "short.npy", np.ones(5))
    paths["short.npy"] = str(tmp_path / "short.npy")
    paths["missing"] = str(tmp_path / "nosuch.csv")
    paths["tmp"] = str(tmp_path)
    return paths


def _free_port() -> int:
    """A port nothing listens on (bound by the OS, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# (argv with {placeholders} for files, text the one line must contain)
CASES: list[tuple[list[str], str]] = [
    # run: flags, data, straggle models, specs, shapes, output files
    (["run", "--dataset", "{missing}"], "nosuch.csv"),
    (["run", "--dataset", "synthetic-lsq:n=1"], "--dataset"),
    (["run", "--straggle", "bogus"], "--straggle"),
    (["run", "--straggle", "exp:shift=-1"], "--straggle"),
    (["run", "--schemes", "hgc,magic"], "--schemes"),
    (["run", "--rounds", "0"], "--rounds"),
    (["run", "--rounds", "x"], "--rounds"),
    (["run", "--edges", "0"], "--edges"),
    (["run", "--s-edge", "2"], "--s-edge"),
    (["run", "--s-worker", "4"], "--s-worker"),
    (["run", "--s-flat", "8"], "--s-flat"),
    (["run", "--seed", "-1"], "--seed"),
    (["run", "--model", "nosuch"], "--model"),
    (["run", "--optimizer", "adam:beta1=x"], "--optimizer"),
    (["run", "--deadline", "0"], "--deadline"),
    (["run", "--compute-seconds", "nan"], "--compute-seconds"),
    (["run", "--spec", "{tmp}/none.toml"], "none.toml"),
    (["run", "--spec", "{link.toml}"], "link.toml: edge 'e0': link_seconds"),
    (["run", "--spec", "{shift.toml}"], "shift.toml: edge 'e0' worker 'w0': shift"),
    (["run", "--spec", SPEC, "--edges", "3"], "--edges"),
    (["run", "--json", "{plain}/out.json"], "--json"),
    (["run", "--plot", "{tmp}/out.txt"], "--plot"),
    (["run", "--workdir", "{plain}"], "--workdir"),
    # the gossip schemes (paper 4): checked before either cluster starts
    (["run", "--schemes", "goco", "--peers", "1"], "--peers"),
    (["run", "--schemes", "goco,gossip", "--graph", "{tmp}/none.txt"], "--graph"),
    (["run", "--schemes", "goco", "--gossip-p", "1"], "--gossip-p"),
    (["run", "--schemes", "goco", "--gossip-lr", "0"], "--gossip-lr"),
    (["run", "--schemes", "goco", "--straggle", "bogus"], "--straggle"),
    # train: everything but the master's own files is checked here
    (["train", "--master", "nonsense"], "--master"),
    (["train", "--master", "127.0.0.1:99999"], "--master"),
    (["train", "--master", "127.0.0.1:5", "--rounds", "0"], "--rounds"),
    (["train", "--master", "127.0.0.1:5", "--job-id", "a/b"], "--job-id"),
    (["train", "--master", "127.0.0.1:5", "--dataset", "synthetic-lsq:n=1"], "--dataset"),
    (["train", "--master", "127.0.0.1:5", "--optimizer", "nosuch"], "--optimizer"),
    (["train", "--master", "127.0.0.1:5", "--scheme", "magic"], "--scheme"),
    # plan, simulate, report
    (["plan", "{link.toml}"], "link.toml: edge 'e0': link_seconds must be a number"),
    (["plan", "{shift.toml}"], "shift.toml: edge 'e0' worker 'w0': shift must be a number"),
    (["plan", "{typo.toml}"], "typo.toml: edge 'e0': unknown keys ['link_second']"),
    (["plan", "{broken.toml}"], "broken.toml: not valid TOML"),
    (["plan", "{tmp}/none.toml"], "none.toml"),
    (["plan", SPEC, "--partitions", "0"], "--partitions"),
    (["plan", SPEC, "--ignore-stragglers", "1000"], "--ignore-stragglers"),
    (["simulate", SPEC, "--rounds", "1"], "--rounds"),
    (["simulate", SPEC, "--out", "{plain}"], "--out"),
    (["simulate", SPEC, "--seed", "-1"], "--seed"),
    (["report", "--probabilities", "x"], "--probabilities"),
    (["report", "--slowdowns", "0.5"], "--slowdowns"),
    (["report", "--cluster-seed", "-1"], "--cluster-seed"),
    (["report", "--out", "{plain}"], "--out"),
    # codes, bench
    (["codes", "verify", "--max-n", "4"], "--max-n"),
    (["codes", "verify", "--json", "{plain}/x.json"], "--json"),
    (["codes", "show", "cyclic", "-n", "0"], "-n"),
    (["codes", "show", "hierarchical", "--workers-per-edge", "a,b"], "--workers-per-edge"),
    (["codes", "show", "hierarchical", "--s-edge", "5"], "--s-edge"),
    (["codes", "show", "cyclic", "-n", "4", "-s", "4"], "s (stragglers)"),
    (["bench", "codes", "--length", "0"], "--length"),
    (["bench", "codes", "--repeats", "0"], "--repeats"),
    (["bench", "train", "--rounds", "0"], "--rounds"),
    (["bench", "matmul", "--workers", "4", "--k", "5"], "--k"),
    (["bench", "matmul", "--matrices", "random,{tmp}/a.npz"], "--matrices"),
    # matmul: n before k, files, shapes, straggle models, addresses
    (["matmul", "--workers", "0"], "--workers"),
    (["matmul", "--k", "7"], "--k"),
    (["matmul", "--matrix", "{tmp}/a.npz"], "--matrix"),
    (["matmul", "--size", "3"], "--k"),
    (["matmul", "--size", "100", "--vector", "{short.npy}"], "--vector"),
    (["matmul", "--vector", "{tmp}/x.npy"], "--vector"),
    (["matmul", "--straggle", "bogus"], "--straggle"),
    (["matmul", "--master", "nonsense"], "--master"),
    (["matmul", "--out", "{plain}/x.npy"], "--out"),
    # services: flags, environment, config files (file and key)
    (["master", "--port", "abc"], "--port"),
    (["master", "--config", "{port.toml}"], "port.toml: [master] port"),
    (["worker", "--config", "{float_port.toml}"], "float_port.toml: [worker] port"),
    (["master", "--config", "{unknown.toml}"], "unknown.toml: [master] unknown keys"),
    (["master", "--config", "{broken.toml}"], "broken.toml: not valid TOML"),
    (["master", "--config", "{tmp}/none.toml"], "none.toml"),
    (["master", "--checkpoint-dir", "{plain}"], "--checkpoint-dir"),
    (["master", "--ready-file", "{plain}/ready.json"], "--ready-file"),
    (["worker", "--straggle", "bogus"], "--straggle"),
    (["worker", "--port", "70000"], "--port"),
    (["worker", "--coordinator", "nonsense"], "--coordinator"),
    (["worker", "--host", "999.1.1.1"], "--host: cannot listen on '999.1.1.1'"),
    (["aggregator", "--metrics-host", "no host"], "--metrics-host: cannot listen"),
    (["coordinator", "--spec", "{link.toml}"], "link.toml: edge 'e0': link_seconds"),
    (["coordinator", "--heartbeat-seconds", "0"], "--heartbeat-seconds"),
    # health, cluster, the top level
    (["health", "nonsense"], "address"),
    (["health", "--timeout", "0"], "--timeout"),
    (["cluster", "logs", "worker-1", "--tail", "-1"], "--tail"),
    (["cluster", "up", "-f", "{tmp}/none.yml"], "--file"),
    (["nosuch"], "nosuch"),
]


def _fill(word: str, files: dict[str, str]) -> str:
    for key, path in files.items():
        word = word.replace("{" + key + "}", path)
    return word


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.usefixtures("nothing_starts")
@pytest.mark.parametrize(("argv", "names"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_user_error_is_one_line_naming_it(
    argv: list[str], names: str, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [_fill(word, files) for word in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's errors
        code = exc.code  # type: ignore[assignment]
    line = _one_error_line(capsys)
    assert code == 2, line
    assert names in line, line
    assert "error:" in line


@pytest.mark.usefixtures("nothing_starts")
def test_environment_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGECODE_METRICS_PORT", "many")
    assert main(["aggregator"]) == 2
    assert "EDGECODE_METRICS_PORT: expected an integer, got 'many'" in _one_error_line(capsys)


@pytest.mark.usefixtures("nothing_starts")
def test_matmul_without_workers_names_workers_not_k(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["matmul", "--workers", "0"])
    line = _one_error_line(capsys)
    assert exit_.value.code == 2 and "--workers" in line and "--k" not in line


@pytest.mark.usefixtures("nothing_starts")
@pytest.mark.parametrize("command", ["train", "matmul"])
def test_unreachable_master_is_one_line(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{_free_port()}"
    argv = [command, "--master", address] + (["--size", "50"] if command == "matmul" else [])
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert f"cannot reach the master at {address}" in line


class _RefusingMaster(master_pb2_grpc.MasterServicer):
    def SubmitJob(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "dataset: data file not found: /x.csv")


@pytest.mark.usefixtures("nothing_starts")
def test_master_refusing_a_job_is_one_line(
    inproc_servers: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    address = inproc_servers.serve(
        [(master_pb2_grpc.add_MasterServicer_to_server, _RefusingMaster(), "edgecode.v1.Master")]
    )
    # the file is on the master's machine: not checked here, refused there
    assert main(["train", "--master", address, "--dataset", "/x.csv"]) == 2
    line = _one_error_line(capsys)
    assert address in line and "INVALID_ARGUMENT: dataset: data file not found: /x.csv" in line


def _edgecode(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECODE_")}
    return subprocess.run(
        [sys.executable, "-m", "edgecode", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--dataset", "nosuch.csv"], "nosuch.csv"),
        (["--straggle", "bogus"], "--straggle"),
        (["--straggle", "exp:shift=0.1,rate=20", "--dataset", "synthetic-lsq:n=1"], "--dataset"),
    ],
)
def test_run_as_a_user_fails_before_the_cluster(
    args: list[str], names: str, tmp_path: Path
) -> None:
    workdir = tmp_path / "cluster"
    result = _edgecode("run", "--workdir", str(workdir), *args, cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert names in lines[0] and "Traceback" not in result.stderr
    # no process was spawned: LocalCluster would have written a log per process here
    assert not workdir.exists() or not list(workdir.glob("*.log"))


@pytest.mark.usefixtures("nothing_starts")
def test_errors_still_one_line_once_every_subcommand_module_is_loaded(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A subcommand module (edgecode.cli.report, ...) imported into the package must not
    shadow what main() needs to print an error."""
    from edgecode.cli import COMMANDS, build_parser

    build_parser(*COMMANDS)
    assert main(["plan", files["link.toml"]]) == 2
    assert "link.toml: edge 'e0': link_seconds" in _one_error_line(capsys)


@pytest.mark.usefixtures("nothing_starts")
@pytest.mark.parametrize("flag", ["--port", "--metrics-port"])
def test_port_in_use_is_one_line(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["master", flag, str(port)]) == 2
    assert f"{flag}: cannot listen on 127.0.0.1:{port}" in _one_error_line(capsys)
