"""The docker compose deployment end to end, built from nothing as on these machines (no registry,
no HTTPS from inside containers; DESIGN.md section 7):

1-2. the edgecode image on a debootstrap base (the session fixture ``image`` of conftest.py);
3. ``docker-compose.yml``'s edgecode services (coordinator, master, 2 edges, 6 workers, one a
   persistent straggler) with the master's port published on a free loopback port;
4. an uncoded reference job, then an hgc job (s_edge = s_worker = 1) during which one worker is
   paused (a real straggler: frozen, connections open) and another killed, through ``edgecode
   cluster``; the hgc trajectory must equal the reference's at every round (exact coding);
5. SIGTERM stops a container within 2 s; ``down -v`` leaves no container, network or volume.

Needs root (debootstrap), dockerd, docker-compose (or the compose plugin).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from edgecode.cluster.docker import (
    PROJECT_LABEL,
    SERVICE_LABEL,
    DockerCluster,
    compose_command,
    compose_program,
)
from edgecode.master.client import MasterClient, param_history_of, params_of, state_name
from edgecode.records import JobConfig
from edgecode.runtime.security import Tls
from edgecode.v1 import master_pb2, master_pb2_grpc
from helpers import run_checked as _run

# Budget (2 CPUs): debootstrap ~1 min, wheels + image ~0.5 min, stack up ~0.5 min, jobs ~1 min.
pytestmark = [pytest.mark.infra, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
SESSION = uuid.uuid4().hex[:8]
EDGECODE_SERVICES = (
    "coordinator",
    "master",
    "edge-0",
    "edge-1",
    *(f"worker-{i}" for i in range(6)),
)
#: Long enough that a pause and a kill (docker calls, slow on a busy machine) land mid-job:
#: with one BLAS thread per node a round takes ~20 ms, and 40 rounds ended before the faults.
ROUNDS = 300
PAUSED = "worker-4"  # edge-1
KILLED = "worker-2"  # edge-0, whose worker-1 is the compose file's persistent straggler
STOP_LIMIT_SECONDS = 2.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    bridge: str
    master_port: int
    cluster: DockerCluster
    up: bool = False

    def compose(self, action: str, services: tuple[str, ...] = ()) -> None:
        command = compose_command(
            compose_program(),
            action,
            files=[str(REPO / "docker-compose.yml")],
            project=self.project,
            services=services,
            build=False if action == "up" else None,
        )
        _run(command, cwd=REPO, env=self.env, timeout=300)

    def cli(self, *args: str) -> str:
        """``edgecode cluster --project P ARGS`` as a user runs it."""
        command = [sys.executable, "-m", "edgecode", "cluster", "--project", self.project, *args]
        return _run(command, env=self.env, timeout=120).stdout

    def down(self) -> None:
        if self.up:
            self.up = False
            self.compose("down")

    def heal(self) -> None:
        """Every service running and healthy again, whatever a test before did to it (the tests
        run in random order): paused nodes resumed, stopped ones started by ``compose up``."""
        for node in self.cluster.status():
            if node.state == "paused":
                self.cluster.unpause(node.node)
        self.compose("up", EDGECODE_SERVICES)
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.cluster.status()
            if len(nodes) == len(EDGECODE_SERVICES) and all(n.health == "healthy" for n in nodes):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"the stack did not become healthy within {timeout} s: {nodes}")
            time.sleep(1)


def _iptables_forward(bridge: str, action: str) -> None:
    """Let traffic across the stack's own bridge through a FORWARD chain that dockerd (or a host
    firewall) may have set to DROP; a no-op when it already passes."""
    if shutil.which("iptables") is None:
        return
    rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
    if action == "-I":
        subprocess.run(["iptables", "-I", *rule], capture_output=True, check=False)
    else:
        subprocess.run(["iptables", "-D", *rule], capture_output=True, check=False)


@pytest.fixture(scope="module")
def stack(docker_client: Any, image: str) -> Iterator[Stack]:
    project = f"ece2e{SESSION}"
    bridge = f"ece2e{SESSION}"[:15]  # Linux interface names have at most 15 characters
    master_port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGECODE_", "COMPOSE_"))}
    env |= {
        "EDGECODE_IMAGE": image,
        "EDGECODE_MASTER_PORT": str(master_port),
        "EDGECODE_BRIDGE": bridge,
        # Small enough to keep 30 rounds quick on 2 CPUs, large enough that the straggler shows.
        "EDGECODE_COMPUTE_SECONDS": "0.1",
    }
    running = Stack(project, env, bridge, master_port, DockerCluster(docker_client, project))
    _iptables_forward(bridge, "-I")
    try:
        started = time.monotonic()
        running.up = True
        running.compose("up", EDGECODE_SERVICES)
        running.wait_healthy()
        print(f"\n[compose e2e] stack up and healthy in {time.monotonic() - started:.0f} s")
        yield running
    finally:
        try:
            running.down()
        finally:
            _iptables_forward(bridge, "-D")
    # After the module's tests (whatever their order): `down` leaves nothing of the project.
    _assert_nothing_left(docker_client, running)


def _job(scheme: str) -> JobConfig:
    return JobConfig(
        scheme=scheme,
        rounds=ROUNDS,
        seed=11,
        s_edge=1,
        s_worker=1,
        record_params=True,
        checkpoint_every=0,
        round_deadline_seconds=20.0,
    )


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b)) / max(float(np.linalg.norm(b)), 1e-300)


def _wait_for_round(client: MasterClient, job_id: str, round_: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while client.status(job_id).round < round_:
        assert time.monotonic() < deadline, f"job {job_id} did not reach round {round_}"
        time.sleep(0.05)


def _user_tls(docker_client: Any, stack: Stack, folder: Path) -> Tls:
    """The user's certificate, made by the stack's one-shot ``certs`` service, as a user gets it
    (``docker cp`` out of the certs volume)."""
    listed = docker_client.containers.list(
        all=True,
        filters={"label": [f"{PROJECT_LABEL}={stack.project}", f"{SERVICE_LABEL}=certs"]},
    )
    assert len(listed) == 1, listed
    _run(["docker", "cp", f"{listed[0].name}:/certs/user", str(folder / "user")])
    return Tls.from_dir(folder / "user")


def test_the_stack_runs_mutual_tls(docker_client: Any, stack: Stack, tmp_path: Path) -> None:
    """Plaintext is refused on the master's published port; the user's certificate works, and a
    node certificate is no user's."""
    stack.heal()
    address = f"127.0.0.1:{stack.master_port}"
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            master_pb2_grpc.MasterStub(channel).GetJob(master_pb2.GetJobRequest(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    tls = _user_tls(docker_client, stack, tmp_path)
    assert tls.identity.role == "user"
    client = MasterClient(address, tls)
    try:
        with pytest.raises(grpc.RpcError) as info:
            client.status("no-such-job")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        client.close()


def test_hgc_with_a_paused_and_a_killed_worker_equals_uncoded(
    docker_client: Any, stack: Stack, tmp_path: Path
) -> None:
    stack.heal()
    tls = _user_tls(docker_client, stack, tmp_path)
    client = MasterClient(f"127.0.0.1:{stack.master_port}", tls)
    try:
        started = time.monotonic()
        reference = client.wait(client.submit(_job("uncoded")), timeout=300)
        assert state_name(reference) == "succeeded", reference.message

        job_id = client.submit(_job("hgc"))
        _wait_for_round(client, job_id, 5)
        # In-process (the code `edgecode cluster pause|kill` runs): a CLI start-up would let
        # many rounds pass before the faults land.
        stack.cluster.pause(PAUSED)
        stack.cluster.kill(KILLED)
        round_at_faults = client.status(job_id).round
        assert round_at_faults <= ROUNDS - 10, f"faults landed late, at round {round_at_faults}"
        assert _state(stack, PAUSED) == "paused"
        status = client.wait(job_id, timeout=300)
        print(
            f"\n[compose e2e] reference + faulty job in {time.monotonic() - started:.0f} s; "
            f"faults at round {round_at_faults} of {ROUNDS}"
        )
    finally:
        client.close()

    assert state_name(status) == "succeeded", status.message
    assert status.round == ROUNDS
    assert _state(stack, PAUSED) == "paused"
    assert _state(stack, KILLED) == "exited"
    history, expected = param_history_of(status), param_history_of(reference)
    assert len(history) == len(expected) == ROUNDS
    deviations = np.array([_relative(a, b) for a, b in zip(history, expected, strict=True)])
    assert np.all(np.isfinite(deviations)) and np.all(deviations <= 1e-9), (
        f"hgc left the uncoded trajectory (relative deviation per round: {deviations})"
    )
    assert _relative(params_of(status), params_of(reference)) <= 1e-9

    shown = stack.cli("status")
    assert KILLED in shown and "exited" in shown and "paused" in shown
    stack.cli("logs", KILLED, "--tail", "20")  # a dead node's log stays readable
    stack.cli("unpause", PAUSED)
    assert _state(stack, PAUSED) == "running"
    stack.cli("pause", "worker-5")
    assert _state(stack, "worker-5") == "paused"
    stack.cli("unpause", "worker-5")
    assert _state(stack, "worker-5") == "running"


def _state(stack: Stack, node: str) -> str:
    return {n.node: n.state for n in stack.cluster.status()}[node]


def test_sigterm_stops_a_container_within_two_seconds(docker_client: Any, stack: Stack) -> None:
    """``docker stop -t 10`` sends SIGTERM and waits up to 10 s before SIGKILL: the service must
    shut down by itself well before (health NOT_SERVING, graceful stop), exiting 0."""
    stack.heal()
    container = stack.cluster.find("worker-0")
    elapsed = _stop_seconds(docker_client, container)
    container.reload()
    print(f"\n[compose e2e] SIGTERM to exit took {elapsed:.2f} s (engine events)")
    assert container.attrs["State"]["ExitCode"] == 0, container.attrs["State"]
    assert elapsed < STOP_LIMIT_SECONDS, f"SIGTERM took {elapsed:.2f} s to stop worker-0"


def _stop_seconds(client: Any, container: Any) -> float:
    """``docker stop -t 10`` the container; returns the time from the engine's SIGTERM to the
    container's exit, both stamped by dockerd (its ``kill`` event with signal 15 and its ``die``
    event), so the docker CLI's own round trip on a busy machine is not counted."""
    since = int(time.time()) - 1
    _run(["docker", "stop", "-t", "10", container.name])
    events = client.events(
        since=since,
        until=int(time.time()) + 1,
        filters={"container": container.id},
        decode=True,
    )
    term = died = None
    for event in events:
        action = event.get("Action") or event.get("status")
        attributes = event.get("Actor", {}).get("Attributes", {})
        if action == "kill" and attributes.get("signal") == "15" and term is None:
            term = int(event["timeNano"])
        elif action == "die" and term is not None and died is None:
            died = int(event["timeNano"])
    assert term is not None and died is not None, "no SIGTERM / exit events from the engine"
    return (died - term) / 1e9


def test_sigterm_stops_the_image_without_an_init(docker_client: Any, image: str) -> None:
    """The image's entrypoint (Python as PID 1, no tini) stops on SIGTERM just as fast."""
    container = docker_client.containers.run(
        image, ["coordinator", "--insecure"], detach=True, name=f"ece2e{SESSION}-noinit"
    )
    try:
        deadline = time.monotonic() + 60
        while _health(container) != "healthy":
            assert time.monotonic() < deadline, "the coordinator did not become healthy"
            assert container.status != "exited", container.logs()[-2000:]
            time.sleep(0.5)
        elapsed = _stop_seconds(docker_client, container)
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0, container.logs()[-2000:]
        assert elapsed < STOP_LIMIT_SECONDS, f"SIGTERM took {elapsed:.2f} s without an init"
    finally:
        container.remove(v=True, force=True)


def _health(container: Any) -> str:
    container.reload()
    return str((container.attrs["State"].get("Health") or {}).get("Status", ""))


def _assert_nothing_left(docker_client: Any, stack: Stack) -> None:
    """``compose down`` removed every container, network and volume of the project (checked in
    the stack fixture's teardown, after every test of the module, in whatever order they ran)."""
    label = {"label": f"{PROJECT_LABEL}={stack.project}"}
    assert docker_client.containers.list(all=True, filters=label) == []
    assert docker_client.networks.list(filters=label) == []
    assert docker_client.volumes.list(filters=label) == []
    assert (
        docker_client.containers.list(all=True, filters={"ancestor": stack.env["EDGECODE_IMAGE"]})
        == []
    )
