"""Session fixtures of the docker e2e tests (test_compose.py, test_arm64.py): the docker client
and the amd64 edgecode image, built once per session from nothing as on these machines (no
registry, no HTTPS from inside containers; DESIGN.md section 7):

1. a base image made with debootstrap (Debian bookworm minbase with python3) and ``docker import``;
2. the edgecode image from ``deploy/Dockerfile`` on it, installed from wheels built here.

Both images are removed at the session's end: nothing amd64 is cached across runs. Needs root
(debootstrap), dockerd and docker-compose (or the compose plugin).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgecode.cluster.docker import compose_program
from helpers import require_infra, run_checked

REPO = Path(__file__).resolve().parents[2]
SESSION = uuid.uuid4().hex[:8]
BASE_IMAGE = f"edgecode-base:e2e-{SESSION}"
IMAGE = f"edgecode:e2e-{SESSION}"


def docker_or_skip() -> Any:
    """A docker client, after checking every tool the e2e tests need (skip, or fail in CI)."""
    for tool in ("docker", "debootstrap"):
        if shutil.which(tool) is None:
            require_infra(f"{tool} is not installed (Debian packages docker.io, debootstrap)")
    try:
        compose_program()
    except FileNotFoundError:
        require_infra("docker-compose is not installed (Debian package docker-compose)")
    if os.geteuid() != 0:
        require_infra("debootstrap and docker need root")
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        require_infra(f"dockerd is not running or not reachable: {exc}")
    return client


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    client = docker_or_skip()
    yield client
    client.close()


@pytest.fixture(scope="session")
def image(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The edgecode image on a debootstrap base, both built here and removed afterwards."""
    work = tmp_path_factory.mktemp("images")
    started = time.monotonic()
    rootfs = work / "rootfs"
    run_checked(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,python3-pip,ca-certificates",
            "bookworm",
            str(rootfs),
        ],
        timeout=900,
    )
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        run_checked(["docker", "import", "-", BASE_IMAGE], stdin=tar.stdout)
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait(60)
    shutil.rmtree(rootfs)
    debootstrapped = time.monotonic()

    # Every dependency as a wheel for this Python (3.11, like bookworm's) and architecture.
    context = work / "context"
    run_checked(
        [sys.executable, "-m", "pip", "wheel", "-q", str(REPO), "-w", str(context / "wheelhouse")]
    )
    try:
        run_checked(
            [
                "docker",
                "build",
                "-q",
                "-f",
                str(REPO / "deploy" / "Dockerfile"),
                "--build-arg",
                f"BASE_IMAGE={BASE_IMAGE}",
                "-t",
                IMAGE,
                str(context),
            ]
        )
        shutil.rmtree(context)
        print(
            f"\n[e2e] amd64 image: debootstrap + import {debootstrapped - started:.0f} s, "
            f"wheels + image {time.monotonic() - debootstrapped:.0f} s"
        )
        yield IMAGE
    finally:
        for tag in (IMAGE, BASE_IMAGE):
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
