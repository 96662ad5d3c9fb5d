"""scripts/arm64_image.py without docker: the emulation check names what is wrong and what to
install, and the compose override builds the arm64 image with the script's own build args."""

from __future__ import annotations

import gc
import importlib.util
import tarfile
import warnings
from pathlib import Path
from types import ModuleType

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ENTRY = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: {flags}\noffset 0\n"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "arm64_image", REPO / "scripts" / "arm64_image.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _binfmt(tmp_path: Path, entry: str | None, mounted: bool = True) -> Path:
    if mounted:
        (tmp_path / "status").write_text("enabled\n")
    if entry is not None:
        (tmp_path / "qemu-aarch64").write_text(entry)
    return tmp_path


@pytest.mark.parametrize(
    ("mounted", "entry", "expected"),
    [
        (False, None, "not mounted"),
        (True, None, "install qemu-user-static and binfmt-support"),
        (True, ENTRY.replace("enabled", "disabled").format(flags="F"), "update-binfmts --enable"),
        (True, ENTRY.format(flags="P"), "lacks the F flag"),
        (True, ENTRY.format(flags="PF"), None),
        (True, ENTRY.format(flags="OCF"), None),
    ],
)
def test_the_emulation_check_names_the_problem(
    script: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mounted: bool,
    entry: str | None,
    expected: str | None,
) -> None:
    monkeypatch.setattr(script, "BINFMT", _binfmt(tmp_path, entry, mounted))
    problem = script.emulation_problem()
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem, problem


def test_setup_names_the_debian_packages(
    script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(script.os, "geteuid", lambda: 0)
    monkeypatch.setattr(script, "BINFMT", tmp_path)
    monkeypatch.setattr(script.shutil, "which", lambda tool: None)
    problem = script.setup_problem()
    assert problem is not None and "apt-get install" in problem
    assert "debootstrap" in problem and "docker.io" in problem, problem
    # With the base cached, only docker is needed.
    assert "debootstrap" not in script.setup_problem(need_debootstrap=False)
    monkeypatch.setattr(
        script.shutil, "which", lambda tool: None if tool == "update-binfmts" else "/x"
    )
    problem = script.setup_problem()
    assert problem is not None and "qemu-user-static binfmt-support" in problem, problem
    monkeypatch.setattr(script.os, "geteuid", lambda: 1000)
    assert "root" in script.setup_problem()


def test_the_override_builds_with_the_scripts_args(script: ModuleType) -> None:
    override = yaml.safe_load((REPO / "docker-compose.arm64.yml").read_text())
    services = override["services"]
    arm64 = {name for name, s in services.items() if s.get("platform") == "linux/arm64"}
    assert arm64 == {"worker-2", "worker-5"}
    for name in arm64:
        service = services[name]
        assert service["image"] == "${EDGECODE_ARM64_IMAGE:-" + script.IMAGE_TAG + "}"
        args = service["build"]["args"]
        assert {k: v for k, v in args.items() if k != "BASE_IMAGE"} == script.BUILD_ARGS
        assert args["BASE_IMAGE"] == "${EDGECODE_ARM64_BASE_IMAGE:-" + script.BASE_TAG + "}"
    # No injected slowness: the emulation is the only difference between workers.
    for name, service in services.items():
        assert service["environment"]["EDGECODE_COMPUTE_SECONDS"].endswith(":-0}"), name
    assert services["worker-1"]["environment"]["EDGECODE_STRAGGLE"] == "none"


@pytest.mark.parametrize("exit_code", [0, 1])
def test_loading_the_base_closes_docker_loads_pipes(
    script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exit_code: int
) -> None:
    """A stand-in ``docker`` reads the image tar and exits; load_base returns the tag or names
    the failure, and leaves no pipe open (an unclosed one is a ResourceWarning when the Popen is
    collected, an error under this suite's filterwarnings)."""
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    received = tmp_path / "received.tar"
    fake.write_text(f"#!/bin/sh\ncat > {received}\necho loaded\nexit {exit_code}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    layer = tmp_path / "layer.tar"
    layer.write_bytes(b"\0" * 1024)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        if exit_code == 0:
            assert script.load_base(layer, "edgecode-test:fake") == "edgecode-test:fake"
        else:
            with pytest.raises(script.BuildError, match="docker load of edgecode-test:fake failed"):
                script.load_base(layer, "edgecode-test:fake")
        gc.collect()
    with tarfile.open(received) as archive:
        assert "layer/layer.tar" in archive.getnames()
