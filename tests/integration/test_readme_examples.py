"""Every command and model string the README shows runs, with small sizes, and exits 0 with no
traceback: a documented example can never crash again.

How the README becomes runs is told in ``readme_commands.py``; what the runs wrote is checked
by ``readme_outputs.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from readme_commands import (
    CASES,
    DATASET_SPECS,
    DELEGATED,
    EXAMPLE_SPECS,
    ROOT,
    RUN_TIMEOUT,
    SCHEME_NAMES,
    STRAGGLE_MODELS,
    Case,
    params_of,
)
from readme_outputs import Files, fit_operand, verify_outputs

from edgecode.cluster.local import (
    CLIENT_NAME,
    ClusterSetup,
    EdgeSetup,
    LocalCluster,
    WorkerSetup,
)
from pki import Pki

# ---- sanity of the extraction -------------------------------------------------------------------


def test_the_readme_yields_what_it_documents() -> None:
    """A README reformat that hides examples from this module fails here."""
    assert STRAGGLE_MODELS[:1] == ["slow:factor=5"] and len(STRAGGLE_MODELS) >= 4
    assert {m.split(":")[0] for m in STRAGGLE_MODELS} >= {"slow", "bernoulli", "markov", "exp"}
    assert set(SCHEME_NAMES) == {
        "hgc",
        "flat",
        "uncoded",
        "ignore",
        "partial",
        "approx",
        "approx-shuffle",
    }
    assert {"breast_cancer", "digits", "iris", "wine"} <= set(DATASET_SPECS)
    assert sum(s.startswith("synthetic-") for s in DATASET_SPECS) >= 3
    run = [c for c in CASES if c.argv[:2] == ("edgecode", "run")]
    assert any("--plan" in c.argv for c in run) and any("--spec" in c.argv for c in run)
    for sub in ("train", "plan", "simulate", "report", "matmul", "health"):
        assert any(c.argv[1:2] == (sub,) for c in CASES if c.argv), sub
    for target in (("bench", "codes"), ("bench", "train"), ("bench", "matmul")):
        assert any(c.argv[1:3] == target for c in CASES), target
    # The data sets an `edgecode run` example names run through `edgecode train` instead.
    trained = {c.argv[c.argv.index("--dataset") + 1] for c in CASES if "--dataset" in c.argv}
    assert DELEGATED <= trained, DELEGATED - trained
    unknown = [c.id for c in CASES if c.skip.startswith("UNKNOWN")]
    assert not unknown, f"README commands this test cannot run yet (add a rule): {unknown}"


def test_every_command_parses_and_every_subcommand_has_help(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgecode.cli import COMMANDS, build_parser

    monkeypatch.chdir(tmp_path)  # input files exist (empty: only parsed here), outputs can go
    (tmp_path / "in").mkdir()
    for case in CASES:
        if case.skip or case.argv[:1] != ("edgecode",):
            continue
        argv = [re.sub(r"^\{data:(\w+)\}$", r"data.\1", a) for a in case.argv]
        argv = [a.replace("{tls}", "in") for a in argv]
        argv = [a.format(master="127.0.0.1:1", out="out", files="in", port="1") for a in argv]
        for arg in argv:
            if arg.startswith("in/"):
                (tmp_path / arg).touch()
        parser = build_parser(argv[1])  # subcommands are built in full only when run
        try:
            parser.parse_args(argv[1:])
        except SystemExit as exc:  # argparse's way of refusing
            pytest.fail(f"{case.id}: the parser refused it (exit {exc.code})")
    for command in COMMANDS:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as caught:
            build_parser(command).parse_args([command, "--help"])
        assert caught.value.code == 0 and "usage:" in out.getvalue(), command


def test_straggle_models_parse() -> None:
    """The README's model strings, and those ``edgecode run --spec`` gives the workers of every
    example spec, are accepted by a worker (quickly, before the runs below)."""
    from edgecode.cli import build_parser
    from edgecode.cli.run import _setup
    from edgecode.emulation import parse_straggle

    for model in STRAGGLE_MODELS:
        assert parse_straggle(model, 0.01).emulates, model
    for spec in EXAMPLE_SPECS:
        setup = _setup(build_parser("run").parse_args(["run", "--spec", str(spec)]))
        for worker in setup.workers:
            assert parse_straggle(worker.straggle).emulates, (spec, worker.straggle)


# ---- running them ---------------------------------------------------------------------------------


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", *argv] if argv[0] == "edgecode" or "." in argv[0] else argv
    if argv[0].endswith(".py"):
        command = [sys.executable, *argv]
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGECODE_")}
    return subprocess.run(
        command,
        cwd=cwd,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def _check(result: subprocess.CompletedProcess[str], case: Case) -> None:
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, f"{case.id}: exit {result.returncode}\n{output}"
    assert "Traceback" not in result.stdout + result.stderr, f"{case.id}: traceback\n{output}"


def _fill(case: Case, out: Path, files: Files, master: str = "", port: str = "") -> list[str]:
    filled = []
    for arg in case.argv:
        data = re.fullmatch(r"\{data:(\w+)\}", arg)
        if data:
            filled.append(files.values[data.group(1)])
            continue
        # {tls} is filled by the caller that knows the cluster's certificates
        filled.append(
            arg.format(master=master, out=out, files=files.folder, port=port, tls="{tls}")
        )
    if filled[1:2] == ["matmul"] and "--matrix" in filled:
        filled = fit_operand(filled, out)
    return filled


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return Files(tmp_path_factory.mktemp("inputs")).make()


def _service_toml(out: Path) -> None:
    """The README's per-role TOML: one table per role, as the Kubernetes ConfigMap has it."""
    (out / "service.toml").write_text(
        "[coordinator]\nheartbeat_seconds = 0.5\n"
        '[master]\ncoordinator = "127.0.0.1:1"\n'
        "[aggregator]\nlink_seconds = 0.0\n"
        '[worker]\nstraggle = "none"\n'
    )


def _run_service(argv: list[str], out: Path, case: Case) -> None:
    """Start a service, wait until it is serving, then SIGTERM it: exit 0."""
    import json
    import signal
    import time

    ready = out / "ready.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECODE_")}
    # Mutual TLS as every service needs it: a certificate naming the service's role and name,
    # through the environment (a flag in the README's command would win over it).
    role = {"aggregator": "edge"}.get(argv[1], argv[1])
    default_name = {"worker": "worker-0", "edge": "edge-0", "peer": "peer-0"}.get(role, role)
    name = argv[argv.index("--name") + 1] if "--name" in argv else default_name
    env["EDGECODE_TLS_DIR"] = str(Pki().write(role, name, out / "tls"))
    with subprocess.Popen(
        [sys.executable, "-m", *argv], cwd=out, env=env, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                assert process.poll() is None, f"{case.id}: exited: {process.stderr.read()}"  # type: ignore[union-attr]
                assert time.monotonic() < deadline, f"{case.id}: never ready"
                time.sleep(0.05)
            assert json.loads(ready.read_text())["port"] > 0
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
            stderr = process.stderr.read() if process.stderr else ""
            assert "Traceback" not in stderr, stderr[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)


@pytest.mark.parametrize("case", params_of({"alone"}))
def test_example_runs(case: Case, tmp_path: Path, files: Files) -> None:
    if case.skip:
        pytest.skip(case.skip)
    _service_toml(tmp_path)
    argv = _fill(case, tmp_path, files)
    if argv[1:2] and argv[1] in ("coordinator", "master", "aggregator", "worker"):
        _run_service(argv, tmp_path, case)
        return
    _check(_run(argv, tmp_path, {}), case)
    verify_outputs(argv, tmp_path)


#: The shared cluster: 2 edges x 3 workers; workers straggle with the README's model strings.
def _shared_setup() -> ClusterSetup:
    models = iter(STRAGGLE_MODELS)
    workers = tuple(
        WorkerSetup(f"edge-{e}-w{w}", f"edge-{e}", next(models, "none"))
        for e in range(2)
        for w in range(3)
    )
    return ClusterSetup(
        (EdgeSetup("edge-0"), EdgeSetup("edge-1", 0.005)), workers, compute_seconds=0.01
    )


@pytest.fixture(scope="module")
def shared_cluster(
    tmp_path_factory: pytest.TempPathFactory, files: Files
) -> Iterator[LocalCluster]:
    # The data files and model files the README's train commands name are in the master's data
    # directories, as the README tells an operator to arrange.
    workdir = tmp_path_factory.mktemp("cluster")
    dirs = (str(files.folder), str(ROOT / "examples"))
    with LocalCluster(_shared_setup(), workdir, data_dirs=dirs) as cluster:
        yield cluster


@pytest.mark.parametrize("case", params_of({"cluster"}))
def test_example_runs_against_a_cluster(
    case: Case, tmp_path: Path, files: Files, shared_cluster: LocalCluster
) -> None:
    if case.skip:
        pytest.skip(case.skip)
    master = shared_cluster.master_address
    port = master.rsplit(":", 1)[1]
    # the cluster runs mutual TLS: clients present the launcher's certificate
    client_tls = str(shared_cluster.tls_dir / CLIENT_NAME)
    argv = [a.replace("{tls}", client_tls) for a in _fill(case, tmp_path, files, master, port)]
    env = {key: value.format(port=port) for key, value in case.env}
    env.setdefault("EDGECODE_TLS_DIR", client_tls)
    _check(_run(argv, tmp_path, env), case)
    verify_outputs(argv, tmp_path)


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.skip and not c.argv], ids=lambda c: c.id[:120]
)
def test_example_not_run_here(case: Case) -> None:
    """Listed so that the report shows every README command and why it is not run here."""
    pytest.skip(case.skip)
