"""The compose profile ``goco`` (gossip learning: the coordinator and 8 peers), checked offline from
``docker-compose config`` (no docker engine needed): the peers exist only in the profile, each
registers under its service name (whose number is its index in a job's graph) and advertises that
name, the one-shot ``gossip`` launcher waits for every peer and its command is a valid job for the
real CLI, and ``prometheus-goco`` scrapes exactly these peers. The stack itself runs the same
processes as ``tests/integration/test_gossip.py``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgecode.cluster.docker import compose_program
from edgecode.coordinator.gossip_plan import peer_index
from helpers import require_infra

pytestmark = [pytest.mark.infra, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
PEERS = tuple(f"peer-{i}" for i in range(8))
GOCO_ONLY = {*PEERS, "gossip", "prometheus-goco"}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    try:
        program = compose_program()
    except FileNotFoundError:
        require_infra("docker-compose is not installed (Debian package docker-compose)")
    command = [*program, "-f", str(REPO / "docker-compose.yml"), "--profile", "goco"]
    result = subprocess.run(
        [*command, "config"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    return parsed


def test_the_goco_services_exist_only_in_the_profile(services: dict[str, Any]) -> None:
    assert GOCO_ONLY <= set(services)
    for name, service in services.items():
        assert (service.get("profiles") == ["goco"]) == (name in GOCO_ONLY), name
    assert "profiles" not in services["coordinator"]


def test_each_peer_registers_under_its_index(services: dict[str, Any]) -> None:
    for i, name in enumerate(PEERS):
        service = services[name]
        env = service["environment"]
        assert service["command"] == ["peer"]
        assert env["EDGECODE_NAME"] == name == env["EDGECODE_ADVERTISE_HOST"]
        assert peer_index(env["EDGECODE_NAME"]) == i
        assert env["EDGECODE_COORDINATOR"] == "coordinator:50051"
        assert env["EDGECODE_TLS_DIR"] == f"/certs/{name}"  # its own certificate, not another's
        assert service["depends_on"] == {
            "certs": {"condition": "service_completed_successfully"},
            "coordinator": {"condition": "service_healthy"},
        }
        assert service["healthcheck"]["test"][:4] == ["CMD", "python3", "-m", "edgecode.cli.health"]
        assert service["init"] is True


def test_the_launcher_waits_for_every_peer_and_runs_a_valid_job(services: dict[str, Any]) -> None:
    import argparse

    from edgecode.cli import gossip

    launcher = services["gossip"]
    depends = launcher["depends_on"]
    assert set(depends) == {"certs", "coordinator", *PEERS}
    assert depends.pop("certs") == {"condition": "service_completed_successfully"}
    assert all(d["condition"] == "service_healthy" for d in depends.values())
    command = launcher["command"]
    assert command[0] == "gossip"
    parser = argparse.ArgumentParser()
    gossip.register(parser.add_subparsers())
    args = parser.parse_args(command)
    spec = gossip.spec_from_args(args)
    assert (spec.graph, spec.scheme, spec.replication) == ("torus", "goco", 3)
    assert args.coordinator == "coordinator:50051"


def test_prometheus_goco_scrapes_exactly_the_peers(services: dict[str, Any]) -> None:
    service = services["prometheus-goco"]
    mounted = next(v for v in service["volumes"] if "goco.yml" in str(v))
    source = mounted["source"] if isinstance(mounted, dict) else str(mounted).split(":")[0]
    text = Path(source).read_text()
    targets = set(re.findall(r'"([\w.-]+):9100"', text))
    assert targets == {"coordinator", *PEERS}
    for name in PEERS:
        assert f'["{name}:9100"]\n        labels: {{peer: {name}}}' in text
