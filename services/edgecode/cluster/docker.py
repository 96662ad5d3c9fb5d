"""A cluster of containers started by docker compose (``docker-compose.yml`` at the repository
root), driven through the Docker SDK: status, pause (a real straggler: every process in the
container is frozen by the cgroup freezer, sockets stay open and nothing answers), unpause, kill
(a crash) and logs.

The engine is the local one or a remote one named by ``DOCKER_HOST`` (``ssh://pi@host`` uses the
system's ``ssh`` client, so keys and ``~/.ssh/config`` apply). Bringing the stack up or down is
compose's job: :func:`compose_command` builds the command line for whichever compose is installed
(Debian's ``docker-compose`` v1 or the ``docker compose`` v2 plugin), which honours ``DOCKER_HOST``
too. A node is named by its compose service name (``worker-1``), its container name or a
container id prefix.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ROLE_LABEL = "org.edgecode.role"
ROLES = ("coordinator", "master", "aggregator", "worker")
#: Tries of a pause that the cgroup freezer refused for a moment, and the wait between them.
FREEZE_ATTEMPTS = 5
FREEZE_RETRY_SECONDS = 1.0


class Container(Protocol):
    """The part of ``docker.models.containers.Container`` used here."""

    id: str
    name: str
    status: str
    labels: dict[str, str]
    attrs: dict[str, Any]

    def pause(self) -> None: ...
    def unpause(self) -> None: ...
    def kill(self, signal: str | int | None = None) -> None: ...
    def logs(self, **kwargs: Any) -> Any: ...
    def reload(self) -> None: ...


class ContainerCollection(Protocol):
    def list(self, all: bool = False, filters: dict[str, Any] | None = None) -> Sequence[Any]: ...


class DockerClient(Protocol):
    @property
    def containers(self) -> ContainerCollection: ...


class NodeNotFound(LookupError):
    pass


@dataclass(frozen=True)
class NodeStatus:
    node: str
    role: str
    container: str
    state: str
    health: str
    ports: str


def connect(timeout: float = 30.0) -> DockerClient:
    """A Docker SDK client for ``DOCKER_HOST`` (default: the local socket). ``ssh://`` hosts go
    through the ``ssh`` binary rather than paramiko, which is not a dependency."""
    import docker

    client: DockerClient = docker.from_env(timeout=int(timeout), use_ssh_client=True)
    return client


class DockerCluster:
    """The edgecode containers of one compose project (or of every project when ``project`` is
    None and exactly one project runs edgecode)."""

    def __init__(self, client: DockerClient, project: str | None = None) -> None:
        self._client = client
        self.project = project

    def containers(self) -> list[Container]:
        """Every edgecode container, running or not, ordered coordinator, master, edges,
        workers, then by node name."""
        filters: dict[str, Any] = {"label": [ROLE_LABEL]}
        if self.project:
            filters["label"].append(f"{PROJECT_LABEL}={self.project}")
        found: list[Container] = list(self._client.containers.list(all=True, filters=filters))
        projects = sorted({c.labels.get(PROJECT_LABEL, "") for c in found})
        if self.project is None and len(projects) > 1:
            raise ValueError(
                f"several compose projects run edgecode ({', '.join(projects)}): pass --project"
            )
        return sorted(found, key=lambda c: (_role_rank(role_of(c)), node_of(c)))

    def find(self, node: str) -> Container:
        """The container of a node: compose service name, container name, or id prefix."""
        if not node:
            raise ValueError("node name must not be empty")
        containers = self.containers()
        for key in (node_of, lambda c: c.name):
            matches = [c for c in containers if key(c) == node]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ValueError(f"{node!r} names {len(matches)} containers: use a container name")
        by_id = [c for c in containers if c.id.startswith(node)]
        if len(by_id) == 1:
            return by_id[0]
        known = ", ".join(node_of(c) for c in containers) or "none (is the stack up?)"
        raise NodeNotFound(f"no edgecode node {node!r}; nodes: {known}")

    def status(self) -> list[NodeStatus]:
        return [
            NodeStatus(node_of(c), role_of(c), c.name, c.status, health_of(c), ports_of(c))
            for c in self.containers()
        ]

    def pause(self, node: str, attempts: int = FREEZE_ATTEMPTS) -> str:
        """Freeze a node's container. The kernel's cgroup freezer can fail to freeze a busy
        container for a moment (runc: "unable to freeze"; seen with QEMU-emulated containers on
        a loaded machine): that failure is tried again, up to ``attempts`` tries in all;
        anything else is raised at once."""
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        container = self.find(node)
        for _ in range(attempts - 1):
            try:
                container.pause()
                return container.name
            except Exception as exc:  # docker.errors.APIError (the SDK is imported lazily)
                if "unable to freeze" not in str(exc):
                    raise
                time.sleep(FREEZE_RETRY_SECONDS)
        container.pause()
        return container.name

    def unpause(self, node: str) -> str:
        container = self.find(node)
        container.unpause()
        return container.name

    def kill(self, node: str, signal: str = "SIGKILL") -> str:
        container = self.find(node)
        container.kill(signal=signal)
        return container.name

    def logs(self, node: str, tail: int | None = None) -> str:
        kwargs: dict[str, Any] = {"stdout": True, "stderr": True}
        if tail is not None:
            kwargs["tail"] = tail
        raw = self.find(node).logs(**kwargs)
        return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def node_of(container: Container) -> str:
    return container.labels.get(SERVICE_LABEL) or container.name


def role_of(container: Container) -> str:
    role = container.labels.get(ROLE_LABEL, "")
    if role:
        return role
    command = container.attrs.get("Config", {}).get("Cmd") or []
    return str(command[0]) if command else ""


def health_of(container: Container) -> str:
    health = container.attrs.get("State", {}).get("Health") or {}
    return str(health.get("Status", "-"))


def ports_of(container: Container) -> str:
    ports: Mapping[str, Any] = container.attrs.get("NetworkSettings", {}).get("Ports") or {}
    published = []
    for inner, bindings in sorted(ports.items()):
        for binding in bindings or []:
            published.append(f"{binding.get('HostIp', '')}:{binding.get('HostPort', '')}->{inner}")
    return ", ".join(published) or "-"


def _role_rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else len(ROLES)


def compose_program(which: Any = shutil.which) -> list[str]:
    """The compose command available here: Debian's ``docker-compose`` (v1) first, else the
    ``docker compose`` plugin (v2); both read the same file."""
    if which("docker-compose"):
        return ["docker-compose"]
    if which("docker"):
        return ["docker", "compose"]
    raise FileNotFoundError("neither docker-compose nor docker (compose plugin) is installed")


def compose_command(
    program: Sequence[str],
    action: str,
    files: Sequence[str] = (),
    project: str | None = None,
    services: Sequence[str] = (),
    build: bool | None = None,
) -> list[str]:
    """The compose command line for ``up`` (detached; health gates the start order through
    ``depends_on``; ``build`` True rebuilds the image, False never builds, None builds only a
    missing image) or ``down`` (removing volumes and orphans)."""
    if action not in ("up", "down"):
        raise ValueError(f"action must be up or down, got {action!r}")
    command = list(program)
    for file in files:
        command += ["-f", file]
    if project:
        command += ["-p", project]
    if action == "up":
        command += ["up", "-d"]
        if build is not None:
            command.append("--build" if build else "--no-build")
        command += services
    else:
        if services:
            raise ValueError("down takes the whole project; it does not accept services")
        command += ["down", "-v", "--remove-orphans"]
    return command
