"""``edgecode --help`` imports none of the heavy libraries (the measured time is in
docs/notes/cli.md; this is the correctness check behind it), and every subcommand's own
``--help`` still shows its full flags.
"""

from __future__ import annotations

import json
import subprocess
import sys

from edgecode.cli import COMMANDS

#: Libraries and packages that ``edgecode --help`` and a light subcommand's --help must not import.
HEAVY = (
    "grpc",
    "numpy",
    "scipy",
    "matplotlib",
    "rich",
    "prometheus_client",
    "sklearn",
    "torch",
    "edgecode.v1",
    "edgecode.master",
    "edgecode.worker",
    "edgecode.aggregator",
    "edgecode.coordinator",
    "edgecode.runtime",
    "edgecode.planning",
    "edgecode.learning",
)
ROLES = ("coordinator", "master", "aggregator", "worker", "peer")
#: A flag each subcommand's --help must list (its full parser was built).
FLAGS = {
    "run": "--no-warmup",
    "train": "--checkpoint-every",
    "plan": "--ignore-stragglers",
    "simulate": "--partitions",
    "report": "--cluster-seed",
    "codes": "verify",
    "bench": "matmul",
    "matmul": "--power-iterations",
    "health": "--timeout",
    "cluster": "unpause",
    "coordinator": "--dead-after-seconds",
    "master": "--checkpoint-dir",
    "aggregator": "--link-seconds",
    "worker": "--straggle",
    "peer": "--compute-seconds",
    "gossip": "--replication",
    "certs": "issue",
}


def _heavy(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_top_level_help_imports_nothing_heavy() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "edgecode", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    imported = [
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    assert "edgecode.cli" in imported  # the check sees edgecode's own imports
    assert _heavy(imported) == []
    for name in COMMANDS:  # every subcommand is still listed, with its one line
        assert f"    {name} " in result.stdout


SCRIPT = """
import contextlib, io, json, sys
from edgecode.cli import main
light, roles = json.loads(sys.argv[1])
out = {}

def help_of(name):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
        main([name, "--help"])
    return buffer.getvalue()

out["light"] = {name: help_of(name) for name in light}
out["modules_after_light"] = sorted(sys.modules)
out["roles"] = {name: help_of(name) for name in roles}
print(json.dumps(out))
"""


def test_every_subcommand_help_is_full_and_light_ones_stay_light() -> None:
    light = [name for name in COMMANDS if name not in ROLES]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps([light, list(ROLES)])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert _heavy(out["modules_after_light"]) == []
    helps = out["light"] | out["roles"]
    assert set(helps) == set(FLAGS)
    for name, flag in FLAGS.items():
        assert helps[name].startswith(f"usage: edgecode {name}"), name
        assert flag in helps[name], name
