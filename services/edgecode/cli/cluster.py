"""``edgecode cluster up|down|status|pause|unpause|kill|logs``: drive the docker compose cluster.

``up`` and ``down`` run compose (Debian's ``docker-compose`` or the ``docker compose`` plugin) on
``docker-compose.yml``; the node commands talk to the engine through the Docker SDK. Both honour
``DOCKER_HOST`` (for example ``ssh://pi@raspberrypi``) to drive a remote engine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from edgecode.cli import _args, command_help
from edgecode.cli._errors import UsageError
from edgecode.cli._render import print_help, table

if TYPE_CHECKING:
    from edgecode.cluster.docker import DockerCluster

NODE_ACTIONS = {
    "pause": "freeze every process of a node's container (a real straggler: alive, silent)",
    "unpause": "resume a paused node",
    "kill": "SIGKILL a node's container (a crash; compose does not restart it)",
}


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str = "cluster"
) -> None:
    parser = subparsers.add_parser(
        "cluster",
        help=command_help("cluster"),
        description=(
            "Bring the docker compose cluster up or down, show its nodes, and inject stragglers "
            "(pause) and failures (kill) on purpose. Uses the local engine, or the one in "
            "DOCKER_HOST (e.g. ssh://pi@host). A NODE is a compose service name (worker-1), a "
            "container name or a container id prefix."
        ),
    )
    parser.add_argument(
        "--project",
        default=os.environ.get("COMPOSE_PROJECT_NAME"),
        help="compose project name (default: $COMPOSE_PROJECT_NAME; node commands then accept "
        "the only project that runs edgecode)",
    )
    parser.set_defaults(func=lambda args: print_help(parser, args))
    actions = parser.add_subparsers(title="actions", metavar="ACTION")

    up = actions.add_parser("up", help="docker compose up -d (builds the image if missing)")
    up.add_argument(
        "-f",
        "--file",
        action="append",
        default=[],
        type=_args.existing_file,
        help="compose file (repeatable; default: compose's own lookup, docker-compose.yml)",
    )
    up.add_argument("--build", action="store_true", help="rebuild the image first")
    up.add_argument("services", nargs="*", help="only these services (and what they depend on)")
    up.set_defaults(func=_compose_action("up"))

    down = actions.add_parser("down", help="docker compose down -v: stop and remove everything")
    down.add_argument(
        "-f",
        "--file",
        action="append",
        default=[],
        type=_args.existing_file,
        help="compose file (repeatable)",
    )
    down.set_defaults(func=_compose_action("down"))

    status = actions.add_parser("status", help="every node: role, state, health, ports")
    status.set_defaults(func=_status)

    for action, summary in NODE_ACTIONS.items():
        node_parser = actions.add_parser(action, help=summary)
        node_parser.add_argument("node", help="service name, container name or id prefix")
        node_parser.set_defaults(func=lambda args, action=action: _node_action(args, action))

    logs = actions.add_parser("logs", help="a node's log (stdout and stderr)")
    logs.add_argument("node", help="service name, container name or id prefix")
    logs.add_argument("--tail", type=_args.integer(0), default=None, help="only the last N lines")
    logs.set_defaults(func=_logs)


def _compose_action(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from edgecode.cluster.docker import compose_command, compose_program

        command = compose_command(
            compose_program(),
            action,
            files=[str(f) for f in args.file],
            project=args.project,
            services=getattr(args, "services", ()),
            build=True if getattr(args, "build", False) else None,
        )
        print("+ " + " ".join(command), file=sys.stderr)
        return subprocess.run(command, check=False).returncode

    return run


def _cluster(args: argparse.Namespace) -> DockerCluster:
    """The compose project on the engine; an unreachable engine is a one-line error."""
    from docker.errors import DockerException

    from edgecode.cluster.docker import DockerCluster, connect

    try:
        return DockerCluster(connect(), args.project)
    except DockerException as exc:
        host = os.environ.get("DOCKER_HOST", "the local socket")
        raise UsageError(f"cannot reach the Docker engine at {host} (DOCKER_HOST): {exc}") from None


def _status(args: argparse.Namespace) -> int:
    from docker.errors import DockerException

    try:
        nodes = _cluster(args).status()
    except DockerException as exc:
        raise UsageError(f"docker: {exc}") from None
    if not nodes:
        print("no edgecode containers (is the stack up? `edgecode cluster up`)", file=sys.stderr)
        return 1
    table(
        "edgecode cluster",
        ["node", "role", "container", "state", "health", "published ports"],
        [(n.node, n.role, n.container, n.state, n.health, n.ports) for n in nodes],
    )
    return 0


def _node_action(args: argparse.Namespace, action: str) -> int:
    from docker.errors import DockerException

    from edgecode.cluster.docker import NodeNotFound

    try:
        name = getattr(_cluster(args), action)(args.node)
    except (NodeNotFound, DockerException) as exc:
        print(f"edgecode: error: {exc}", file=sys.stderr)
        return 2
    print(f"{action}: {args.node} ({name})")
    return 0


def _logs(args: argparse.Namespace) -> int:
    from docker.errors import DockerException

    from edgecode.cluster.docker import NodeNotFound

    try:
        sys.stdout.write(_cluster(args).logs(args.node, args.tail))
    except (NodeNotFound, DockerException) as exc:
        print(f"edgecode: error: {exc}", file=sys.stderr)
        return 2
    return 0
