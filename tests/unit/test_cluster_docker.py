"""``edgecode.cluster.docker``'s lookup and command-line logic against a fake Docker client (the
real engine is exercised by tests/e2e/test_compose.py)."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Any

import pytest

from edgecode.cluster.docker import (
    PROJECT_LABEL,
    ROLE_LABEL,
    SERVICE_LABEL,
    DockerCluster,
    NodeNotFound,
    compose_command,
    compose_program,
)


@dataclass
class FakeContainer:
    id: str
    name: str
    labels: dict[str, str]
    status: str = "running"
    attrs: dict[str, Any] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def pause(self) -> None:
        self.calls.append("pause")

    def unpause(self) -> None:
        self.calls.append("unpause")

    def kill(self, signal: str | int | None = None) -> None:
        self.calls.append(f"kill {signal}")

    def logs(self, **kwargs: Any) -> bytes:
        return f"log tail={kwargs.get('tail')}".encode()

    def reload(self) -> None:
        pass


class FakeContainers:
    def __init__(self, containers: list[FakeContainer]) -> None:
        self._containers = containers

    def list(self, all: bool = False, filters: dict[str, Any] | None = None) -> list[FakeContainer]:
        wanted = (filters or {}).get("label", [])
        # ``all`` is the SDK's keyword (stopped containers too) and shadows the builtin here.
        return [c for c in self._containers if builtins.all(_has(c, label) for label in wanted)]


def _has(container: FakeContainer, label: str) -> bool:
    key, _, value = label.partition("=")
    return key in container.labels and (not value or container.labels[key] == value)


class FakeClient:
    def __init__(self, containers: list[FakeContainer]) -> None:
        self.containers = FakeContainers(containers)


def _container(project: str, service: str, role: str, id_: str) -> FakeContainer:
    labels = {PROJECT_LABEL: project, SERVICE_LABEL: service, ROLE_LABEL: role}
    return FakeContainer(id_, f"{project}_{service}_1", labels)


def _stack(project: str = "demo", prefix: str = "a") -> list[FakeContainer]:
    return [
        _container(project, "worker-1", "worker", f"{prefix}1"),
        _container(project, "master", "master", f"{prefix}2"),
        _container(project, "worker-0", "worker", f"{prefix}3"),
        _container(project, "edge-0", "aggregator", f"{prefix}4"),
        _container(project, "coordinator", "coordinator", f"{prefix}5"),
    ]


def test_containers_are_ordered_by_role_then_name() -> None:
    cluster = DockerCluster(FakeClient([*_stack(), FakeContainer("z", "unrelated", {})]))
    nodes = [s.node for s in cluster.status()]
    assert nodes == ["coordinator", "master", "edge-0", "worker-0", "worker-1"]


def test_find_by_service_container_name_or_id_prefix() -> None:
    cluster = DockerCluster(FakeClient(_stack()))
    assert cluster.find("worker-1").id == "a1"
    assert cluster.find("demo_master_1").id == "a2"
    assert cluster.find("a4").name == "demo_edge-0_1"


def test_unknown_node_lists_the_known_ones() -> None:
    with pytest.raises(NodeNotFound, match=r"worker-9.*coordinator, master"):
        DockerCluster(FakeClient(_stack())).find("worker-9")


def test_two_projects_need_a_project_name() -> None:
    client = FakeClient([*_stack("one", "a"), *_stack("two", "b")])
    with pytest.raises(ValueError, match="one, two"):
        DockerCluster(client).find("master")
    assert DockerCluster(client, "two").find("master").id == "b2"


def test_actions_reach_the_right_container() -> None:
    containers = _stack()
    cluster = DockerCluster(FakeClient(containers))
    cluster.pause("worker-0")
    cluster.unpause("worker-0")
    cluster.kill("edge-0")
    assert containers[2].calls == ["pause", "unpause"]
    assert containers[3].calls == ["kill SIGKILL"]
    assert cluster.logs("master", tail=5) == "log tail=5"


def test_compose_command_lines() -> None:
    assert compose_command(["docker-compose"], "up", ["a.yml"], "p", ["master"], build=False) == [
        "docker-compose",
        "-f",
        "a.yml",
        "-p",
        "p",
        "up",
        "-d",
        "--no-build",
        "master",
    ]
    assert compose_command(["docker", "compose"], "down") == [
        "docker",
        "compose",
        "down",
        "-v",
        "--remove-orphans",
    ]
    with pytest.raises(ValueError, match="action"):
        compose_command(["docker-compose"], "restart")


def test_compose_program_prefers_v1_then_the_plugin() -> None:
    assert compose_program(lambda name: "/usr/bin/" + name) == ["docker-compose"]
    only_docker = {"docker": "/usr/bin/docker"}.get
    assert compose_program(only_docker) == ["docker", "compose"]
    with pytest.raises(FileNotFoundError):
        compose_program(lambda name: None)


@dataclass
class StubbornContainer(FakeContainer):
    """A container whose first ``refusals`` pauses fail with ``error``."""

    refusals: int = 0
    error: str = "OCI runtime pause failed: unable to freeze: unknown"

    def pause(self) -> None:
        self.calls.append("pause")
        if self.calls.count("pause") <= self.refusals:
            raise RuntimeError(f'500 Server Error: Internal Server Error ("{self.error}")')


def _stubborn(refusals: int, error: str = StubbornContainer.error) -> StubbornContainer:
    labels = {PROJECT_LABEL: "demo", SERVICE_LABEL: "worker-5", ROLE_LABEL: "worker"}
    return StubbornContainer("c1", "demo_worker-5_1", labels, refusals=refusals, error=error)


def test_a_pause_the_freezer_refused_for_a_moment_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr("edgecode.cluster.docker.time.sleep", slept.append)
    container = _stubborn(refusals=2)
    assert DockerCluster(FakeClient([container])).pause("worker-5") == "demo_worker-5_1"
    assert container.calls == ["pause"] * 3 and len(slept) == 2


def test_a_pause_refused_every_time_or_for_another_reason_is_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("edgecode.cluster.docker.time.sleep", lambda seconds: None)
    stubborn = _stubborn(refusals=10)
    with pytest.raises(RuntimeError, match="unable to freeze"):
        DockerCluster(FakeClient([stubborn])).pause("worker-5", attempts=3)
    assert stubborn.calls == ["pause"] * 3
    other = _stubborn(refusals=1, error="container is not running")
    with pytest.raises(RuntimeError, match="not running"):
        DockerCluster(FakeClient([other])).pause("worker-5")
    assert other.calls == ["pause"]
    with pytest.raises(ValueError, match="attempts"):
        DockerCluster(FakeClient([_stubborn(0)])).pause("worker-5", attempts=0)
