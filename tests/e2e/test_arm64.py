"""The arm64 (Raspberry Pi) image and a mixed amd64/arm64 cluster on this x86 machine, end to end:

1. ``scripts/arm64_image.py`` (``make image-arm64``) builds ``edgecode-arm64:local`` with no
   registry: a debootstrap arm64 base (second stage under QEMU), aarch64 wheels, the Dockerfile.
   The base image is its cache: the first run in CI builds it from nothing, later runs reuse it
   (the edgecode layer is rebuilt every time). Neither image is removed afterwards;
2. the image's contract (arm64, user 10001, entrypoint, health check) and ``uname -m`` =
   ``aarch64`` in its containers;
3. ``docker-compose.yml`` + ``docker-compose.arm64.yml``: worker-2 and worker-5 arm64 (emulated,
   genuinely slower), the rest amd64 (the session's image, conftest.py); every service passes
   the gRPC health check;
4. an hgc job equals the uncoded reference to 1e-9 at every round with an arm64 worker paused
   mid-job;
5. the planner, from live timings and the workers' own CPU measurements (all six share this
   machine's cores: planning/hosts.py), gives each arm64 worker fewer partitions than each
   amd64 worker; its expected round time beats every uniform plan's, all timed by the
   coordinator on the same fits in this run; and measured, alternating jobs that each hold one
   plan, its median round is shorter than the best uniform plan's.

Needs root, dockerd, docker-compose, debootstrap, qemu-user-static and binfmt-support.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from edgecode import wire
from edgecode.cluster.docker import (
    PROJECT_LABEL,
    SERVICE_LABEL,
    DockerCluster,
    compose_command,
    compose_program,
)
from edgecode.errors import Infeasible
from edgecode.master.client import MasterClient, param_history_of, state_name
from edgecode.planning.baselines import uniform_plan
from edgecode.planning.spec import ClusterSpec, EdgeSpec, WorkerSpec
from edgecode.records import JobConfig
from edgecode.runtime.security import Tls
from edgecode.runtime.server import make_channel
from edgecode.v1 import coordinator_pb2, coordinator_pb2_grpc
from helpers import require_infra, run_checked

# Budget (2 CPUs), from nothing: arm64 base ~4 min, wheels + image ~4 min; the mixed stack ~2 min
# to become healthy (Python under QEMU); the jobs ~3 min.
pytestmark = [pytest.mark.infra, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
SESSION = uuid.uuid4().hex[:8]
EDGES = {
    "edge-0": ("worker-0", "worker-1", "worker-2"),
    "edge-1": ("worker-3", "worker-4", "worker-5"),
}
ARM64 = ("worker-2", "worker-5")
AMD64 = ("worker-0", "worker-1", "worker-3", "worker-4")
SERVICES = ("coordinator", "master", *EDGES, *AMD64, *ARM64)
PAUSED = "worker-5"
RUN_ARM64 = ("docker", "run", "--rm", "--platform", "linux/arm64")
RUN_AMD64 = ("docker", "run", "--rm", "--network", "none", "--user", "0:0")
DATASET = "synthetic-lsq:n=60000,d=50,seed=1"
# For the planner, compute must outweigh the per-round messaging, or replicating everything
# everywhere wins and the load split is moot: X^T (X w - y) over all of it takes ~0.03 s on an
# amd64 worker here and ~1 s on an emulated arm64 one (60000 x 50: 0.017 s vs 0.15 s).
PLAN_DATASET = "synthetic-lsq:n=50000,d=200,seed=1"
# The coordinator keeps each worker's last 50 measurements: a 50-round job replaces those of
# earlier jobs (other data sets) before the test asks for the plan.
PLAN_ROUNDS = 50
#: jobs of the best uniform plan and of the planner's plan measured alternately
MEASURED_PAIRS = 4
MEASURED_ROUNDS = 20


def _script() -> ModuleType:
    """scripts/arm64_image.py as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location(
        "arm64_image", REPO / "scripts" / "arm64_image.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def arm64_image(docker_client: Any) -> str:
    """``edgecode-arm64:local``, built by the script as ``make image-arm64`` builds it."""
    script = _script()
    problem = script.setup_problem(need_debootstrap=not script.base_exists())
    if problem is None:
        try:
            script.enable_emulation()
        except script.BuildError as exc:
            problem = str(exc)
    problem = problem or script.emulation_problem()
    if problem is not None:
        require_infra(f"the arm64 build cannot run here: {problem}")
    started = time.monotonic()
    try:
        seconds = script.build(log=print)
    except script.BuildError as exc:
        pytest.fail(f"the arm64 image did not build: {exc}")
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    print(f"\n[arm64 e2e] image built in {time.monotonic() - started:.0f} s ({steps})")
    return str(script.IMAGE_TAG)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Stack:
    project: str
    image: str
    files: list[str]
    env: dict[str, str]
    master_port: int
    coordinator_port: int
    cluster: DockerCluster
    up: bool = False

    def compose(self, action: str, services: tuple[str, ...] = ()) -> None:
        command = compose_command(
            compose_program(),
            action,
            files=self.files,
            project=self.project,
            services=services,
            build=False if action == "up" else None,
        )
        run_checked(command, cwd=REPO, env=self.env, timeout=600)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.cluster.status()
            if len(nodes) == len(SERVICES) and all(n.health == "healthy" for n in nodes):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"the mixed stack did not become healthy within {timeout} s: {nodes}")
            time.sleep(2)

    def exec(self, node: str, *command: str) -> str:
        container = self.cluster.find(node)
        return run_checked(["docker", "exec", container.name, *command], timeout=120).stdout


def _iptables_forward(bridge: str, action: str) -> None:
    """Let traffic across the stack's own bridge through a FORWARD chain set to DROP."""
    if shutil.which("iptables") is not None:
        rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
        subprocess.run(["iptables", action, *rule], capture_output=True, check=False)


@pytest.fixture(scope="module")
def stack(
    docker_client: Any, image: str, arm64_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    project = f"ecarm{SESSION}"
    bridge = f"ecarm{SESSION}"[:15]
    master_port, coordinator_port = _free_port(), _free_port()
    # The test asks the coordinator for plans: its port published on loopback, this run only.
    extra = tmp_path_factory.mktemp("compose") / "coordinator-port.yml"
    extra.write_text(
        'version: "2.4"\nservices:\n  coordinator:\n'
        f'    ports: ["127.0.0.1:{coordinator_port}:50051"]\n'
    )
    files = [str(REPO / "docker-compose.yml"), str(REPO / "docker-compose.arm64.yml"), str(extra)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGECODE_", "COMPOSE_"))}
    env |= {
        "EDGECODE_IMAGE": image,
        "EDGECODE_ARM64_IMAGE": arm64_image,
        "EDGECODE_MASTER_PORT": str(master_port),
        "EDGECODE_BRIDGE": bridge,
    }
    running = Stack(
        project,
        image,
        files,
        env,
        master_port,
        coordinator_port,
        DockerCluster(docker_client, project),
    )
    _iptables_forward(bridge, "-I")
    try:
        started = time.monotonic()
        running.up = True
        running.compose("up", SERVICES)
        running.wait_healthy(timeout=600)
        print(f"\n[arm64 e2e] mixed stack up and healthy in {time.monotonic() - started:.0f} s")
        yield running
    finally:
        try:
            if running.up:
                running.compose("down")
        finally:
            _iptables_forward(bridge, "-D")


def _user_tls(docker_client: Any, stack: Stack, folder: Path) -> Tls:
    """The user's certificate, copied out of the certs volume as a user gets it."""
    listed = docker_client.containers.list(
        all=True,
        filters={"label": [f"{PROJECT_LABEL}={stack.project}", f"{SERVICE_LABEL}=certs"]},
    )
    assert len(listed) == 1, listed
    run_checked(["docker", "cp", f"{listed[0].name}:/certs/user", str(folder / "user")])
    return Tls.from_dir(folder / "user")


def _admin_tls(docker_client: Any, stack: Stack, folder: Path) -> Tls:
    """An admin certificate (GetCluster and GetPlan are the master's and admins' RPCs), issued
    from the stack's CA by the operator as the README's certs section shows."""
    volumes = [
        v
        for v in docker_client.volumes.list(filters={"label": f"{PROJECT_LABEL}={stack.project}"})
        if v.attrs["Labels"].get("com.docker.compose.volume") == "certs-ca"
    ]
    assert len(volumes) == 1, volumes
    mounts = ["-v", f"{volumes[0].name}:/ca", "-v", f"{folder}:/out"]
    issue = ["certs", "issue", "admin", "admin", "--dir", "/ca", "--out", "/out/admin"]
    run_checked([*RUN_AMD64, *mounts, stack.image, *issue, "--days", "1"], timeout=120)
    return Tls.from_dir(folder / "admin")


def _wait_container_healthy(stack: Stack, node: str, timeout: float = 180) -> None:
    """Docker's health status of ``node`` back to healthy (a paused container's checks time
    out and mark it unhealthy; one passing check after its unpause marks it healthy again)."""
    deadline = time.monotonic() + timeout
    while True:
        container = stack.cluster.find(node)
        container.reload()
        health = container.attrs["State"]["Health"]["Status"]
        if health == "healthy":
            return
        assert time.monotonic() < deadline, f"{node} is {health} after {timeout} s"
        time.sleep(2)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b)) / max(float(np.linalg.norm(b)), 1e-300)


def test_the_arm64_image_keeps_the_dockerfile_contract(
    docker_client: Any, arm64_image: str
) -> None:
    attrs = docker_client.images.get(arm64_image).attrs
    config = attrs["Config"]
    assert (attrs["Os"], attrs["Architecture"]) == ("linux", "arm64")
    assert config["User"] == "edgecode"
    assert config["Entrypoint"] == ["edgecode"]
    assert config["Healthcheck"]["Test"][:4] == ["CMD", "python3", "-m", "edgecode.cli.health"]
    for entrypoint, args, expected in (
        ("uname", ["-m"], "aarch64"),
        ("id", ["-u"], "10001"),
    ):
        out = run_checked(
            [*RUN_ARM64, "--entrypoint", entrypoint, arm64_image, *args],
            timeout=120,
        ).stdout
        assert out.strip() == expected, (entrypoint, out)


def test_the_mixed_cluster_runs_arm64_workers_that_pass_the_health_check(stack: Stack) -> None:
    for node in (*AMD64, *ARM64):
        machine = stack.exec(node, "uname", "-m").strip()
        assert machine == ("aarch64" if node in ARM64 else "x86_64"), (node, machine)
    for node in ARM64:
        # The same gRPC health check as the image's HEALTHCHECK, asked explicitly.
        stack.exec(node, "python3", "-m", "edgecode.cli.health", "--timeout", "20")
        _wait_container_healthy(stack, node)


def _wait_for_round(client: MasterClient, job_id: str, round_: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while client.status(job_id).round < round_:
        assert time.monotonic() < deadline, f"job {job_id} did not reach round {round_}"
        time.sleep(0.1)


#: Rounds of the exactness jobs: enough that a pause lands early even when rounds are fast
#: (~20 ms with one BLAS thread per node) and freezing the emulated container takes seconds
#: (a loaded machine: the freezer's retries; a pause landed at round 60 of 60 beside a CPU hog).
EXACT_ROUNDS = 300


def _exact_job(scheme: str) -> JobConfig:
    return JobConfig(
        scheme=scheme,
        dataset=DATASET,
        rounds=EXACT_ROUNDS,
        seed=11,
        s_edge=1,
        s_worker=1,
        record_params=True,
        checkpoint_every=0,
        round_deadline_seconds=30.0,
    )


def test_hgc_with_a_paused_arm64_worker_equals_uncoded(
    docker_client: Any, stack: Stack, tmp_path: Path
) -> None:
    client = MasterClient(
        f"127.0.0.1:{stack.master_port}", _user_tls(docker_client, stack, tmp_path)
    )
    paused = False
    try:
        reference = client.wait(client.submit(_exact_job("uncoded")), timeout=600)
        assert state_name(reference) == "succeeded", reference.message
        job_id = client.submit(_exact_job("hgc"))
        _wait_for_round(client, job_id, 3)
        began = time.monotonic()
        stack.cluster.pause(PAUSED)
        paused = True
        at, took = client.status(job_id).round, time.monotonic() - began
        # at least 15 rounds run with the arm64 worker paused (rounds are fast on a quiet machine)
        assert at <= EXACT_ROUNDS - 15, f"the pause landed late, at round {at}"
        status = client.wait(job_id, timeout=600)
        print(
            f"\n[arm64 e2e] {PAUSED} paused at round {at} of {EXACT_ROUNDS} (freezing it "
            f"took {took:.2f} s)"
        )
    finally:
        if paused:
            stack.cluster.unpause(PAUSED)
        client.close()
    _wait_container_healthy(stack, PAUSED)
    assert state_name(status) == "succeeded", status.message
    history, expected = param_history_of(status), param_history_of(reference)
    assert len(history) == len(expected) == EXACT_ROUNDS
    deviations = np.array([_relative(a, b) for a, b in zip(history, expected, strict=True)])
    assert np.all(np.isfinite(deviations)) and np.all(deviations <= 1e-9), (
        f"hgc left the uncoded trajectory (relative deviation per round: {deviations})"
    )


def _wait_all_workers_alive(stub: Any, timeout: float = 120) -> None:
    """Every worker registered and alive at the coordinator (a worker paused by another test
    comes back within a heartbeat of its unpause)."""
    deadline = time.monotonic() + timeout
    while True:
        cluster = stub.GetCluster(coordinator_pb2.GetClusterRequest(), timeout=30)
        alive = {n.name for n in cluster.nodes if n.role == "worker"}
        if alive >= {*AMD64, *ARM64}:
            return
        assert time.monotonic() < deadline, f"workers alive at the coordinator: {sorted(alive)}"
        time.sleep(1)


def _settled_plan(stub: Any, timeout: float = 60) -> Any:
    """The coordinator's plan once its fits stopped changing: the master sends a job's last
    timings just after the job is seen to end (off its own path), so a plan asked for at
    once may come from fits one batch short of what the next call sees."""
    deadline = time.monotonic() + timeout
    last = stub.GetPlan(coordinator_pb2.GetPlanRequest(), timeout=120)
    while True:
        time.sleep(1)
        plan = stub.GetPlan(coordinator_pb2.GetPlanRequest(), timeout=120)
        if plan.expected_round_seconds == last.expected_round_seconds:
            return plan
        assert time.monotonic() < deadline, "the coordinator's fits kept changing after the job"
        last = plan


def _uniform_plans() -> list[Any]:
    """Every feasible uniform plan of the paper (one s_worker, equal loads) on this topology;
    the runtimes here are placeholders: the coordinator re-times each on its live fits."""
    spec = ClusterSpec(
        edges=tuple(
            EdgeSpec(edge, tuple(WorkerSpec(w, 1.0, 1.0) for w in workers))
            for edge, workers in EDGES.items()
        )
    )
    plans = []
    for s_edge in range(len(EDGES)):
        for s_worker in range(3):
            try:
                plans.append(uniform_plan(spec, s_edge, s_worker))
            except Infeasible:
                continue
    return plans


def _check_arm64_hold_less(partitions: dict[str, int]) -> None:
    """No arm64 worker holds more than any amd64 worker, and the arm64 workers hold less in
    all. (Not "each arm64 worker strictly less than each amd64 worker": the six workers share
    two cores, and a plan that also leaves an amd64 worker idle, one holder per edge, saves
    CPU the shared machine does not have; planning/hosts.py, docs/notes/arm64.md.)"""
    arm, amd = [partitions[w] for w in ARM64], [partitions[w] for w in AMD64]
    assert max(arm) <= min(amd) and sum(arm) < sum(amd), partitions


def _partitions(plan: dict[str, Any]) -> dict[str, int]:
    return {w["name"]: int(w["partitions"]) for e in plan["edges"] for w in e["workers"]}


def test_the_planner_gives_arm64_workers_less_and_beats_uniform(
    docker_client: Any, stack: Stack, tmp_path: Path
) -> None:
    channel = make_channel(
        f"127.0.0.1:{stack.coordinator_port}", _admin_tls(docker_client, stack, tmp_path)
    )
    client = MasterClient(
        f"127.0.0.1:{stack.master_port}", _user_tls(docker_client, stack, tmp_path)
    )
    try:
        stub = coordinator_pb2_grpc.CoordinatorStub(channel)
        _wait_all_workers_alive(stub)
        # The planner chooses (s_edge < 0): a plan from what the coordinator knows (priors on a
        # fresh stack), then a re-plan after 3 rounds on the timings the master reported.
        job = JobConfig(
            scheme="hgc",
            dataset=PLAN_DATASET,
            rounds=PLAN_ROUNDS,
            seed=3,
            s_edge=-1,
            checkpoint_every=0,
            round_deadline_seconds=30.0,
            profile_rounds=3,
            # an emulated worker's first answer (its CPU measurement) may come after round 3:
            # the job re-plans every 10 rounds, so it moves to the plan that knows it
            replan_every=10,
        )
        status = client.wait(client.submit(job), timeout=900)
        assert state_name(status) == "succeeded", status.message
        planned = _settled_plan(stub)
        cluster = stub.GetCluster(coordinator_pb2.GetClusterRequest(), timeout=30)
        round_cpu = {
            n.name: round(n.round_cpu_seconds, 4) for n in cluster.nodes if n.role == "worker"
        }
        uniform = []
        for plan in _uniform_plans():
            request = coordinator_pb2.GetPlanRequest(current=wire.plan_to_proto(plan))
            answer = stub.GetPlan(request, timeout=120)
            assert answer.expected_round_seconds == planned.expected_round_seconds  # same fits
            uniform.append(
                (plan.s_edge, plan.edges[0].s_worker, answer.current_expected_round_seconds)
            )
        # Measured as well as modelled: the uniform plan the model ranks best and the plan
        # the planner makes from every timing so far, alternating, each held for the whole
        # job (no profiling re-plan: both are fixed plans, so the pair compares the plans and
        # not a job's re-planning on its own few rounds).
        s_edge, s_worker, _ = min(uniform, key=lambda u: u[2])
        measured: dict[str, list[float]] = {"planner": [], "uniform": []}
        for _ in range(MEASURED_PAIRS):
            for kind, config in (
                ("uniform", replace(job, s_edge=s_edge, s_worker=s_worker)),
                ("planner", replace(job, profile_rounds=0, replan_every=0)),
            ):
                done = client.wait(
                    client.submit(replace(config, rounds=MEASURED_ROUNDS)), timeout=900
                )
                assert state_name(done) == "succeeded", done.message
                measured[kind] += [r.seconds for r in done.history][3:]
    finally:
        client.close()
        channel.close()

    assert planned.fitted, "some worker had no measurements after the job"
    partitions = {w.name: int(w.partitions) for e in planned.edges for w in e.workers}
    seconds = np.array([planned.expected_round_seconds] + [t for *_, t in uniform])
    job_plan = json.loads(status.plan_json)
    rounds = np.array([r.seconds for r in status.history])
    print(
        f"\n[arm64 e2e] planner: s_edge {planned.s_edge}, K {planned.partitions}, partitions "
        f"{partitions}, expected {planned.expected_round_seconds:.4f} s; uniform (s_edge, "
        f"s_worker, expected s): {uniform}; the job's plan after {status.placements} placements: "
        f"{_partitions(job_plan)}, expected {job_plan['expected_round_seconds']}; round seconds "
        f"median: rounds 0-2 {np.median(rounds[:3]):.4f}, rounds 10-29 {np.median(rounds[10:]):.4f}; "
        f"workers' CPU seconds per round besides the compute: {round_cpu}"
    )
    assert np.all(np.isfinite(seconds)) and np.all(seconds > 0), seconds
    assert len(uniform) >= 2, uniform
    _check_arm64_hold_less(partitions)
    assert np.all(planned.expected_round_seconds < seconds[1:]), (planned, uniform)
    print(
        f"[arm64 e2e] measured median round over rounds 3+ of {MEASURED_PAIRS} alternating "
        f"pairs of jobs: planner {np.median(measured['planner']):.4f} s, uniform (s_edge "
        f"{s_edge}, s_worker {s_worker}) {np.median(measured['uniform']):.4f} s; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    planner_s, uniform_s = np.median(measured["planner"]), np.median(measured["uniform"])
    assert np.isfinite(planner_s) and np.isfinite(uniform_s), measured
    assert planner_s < uniform_s, measured
    # The job itself ran on the planner's plan (fitted from the start when earlier jobs left
    # timings, else re-placed after its profiling rounds).
    _check_arm64_hold_less(_partitions(job_plan))
