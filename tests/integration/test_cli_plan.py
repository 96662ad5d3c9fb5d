"""``edgecode plan``, ``simulate`` and ``report``, run as a user runs them (subprocesses)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[2] / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABELS = ["uncoded", "ignore-stragglers", "flat-cyclic", "hgc-uniform", "hgc-optimized"]


def _edgecode(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgecode", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_plan_json_has_exactly_the_documented_shape() -> None:
    result = _edgecode("plan", EXAMPLES / "homogeneous.toml", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {"s_edge", "partitions", "expected_round_seconds", "edges", "alternatives"}
    assert isinstance(doc["s_edge"], int) and isinstance(doc["partitions"], int)
    assert doc["partitions"] == 24  # the spec's [job] partitions
    assert isinstance(doc["expected_round_seconds"], float)
    assert [e["name"] for e in doc["edges"]] == ["edge-0", "edge-1", "edge-2"]
    for edge in doc["edges"]:
        assert set(edge) == {"name", "s_worker", "link_seconds", "workers"}
        assert isinstance(edge["s_worker"], int) and isinstance(edge["link_seconds"], float)
        assert len(edge["workers"]) == 4
        for worker in edge["workers"]:
            assert set(worker) == {"name", "selected", "partitions"}
            assert isinstance(worker["selected"], bool) and isinstance(worker["partitions"], int)
            assert worker["selected"] == (worker["partitions"] > 0)
    alternatives = {a["scheme"]: a["expected_round_seconds"] for a in doc["alternatives"]}
    assert [a["scheme"] for a in doc["alternatives"]] == LABELS
    assert all(set(a) == {"scheme", "expected_round_seconds"} for a in doc["alternatives"])
    assert alternatives["hgc-optimized"] == doc["expected_round_seconds"]
    assert alternatives["hgc-optimized"] < alternatives["uncoded"]


def test_plan_tables_for_a_mixed_fleet() -> None:
    result = _edgecode("plan", EXAMPLES / "raspberry-pi-fleet.toml")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Optimized plan: K = " in out
    assert "faster than uncoded" in out
    for name in ["pi5-lab-0", "pi3-office-2", "vm-1", *LABELS]:
        assert name in out
    # the per-edge summary instead of every worker
    short = _edgecode("plan", EXAMPLES / "one-slow-edge.toml", "--workers", "none")
    assert short.returncode == 0, short.stderr
    assert "pi-00" not in short.stdout and "edge-3" in short.stdout


def test_plan_on_a_slow_edge_beats_every_baseline() -> None:
    result = _edgecode("plan", EXAMPLES / "one-slow-edge.toml", "--json")
    assert result.returncode == 0, result.stderr
    alternatives = json.loads(result.stdout)["alternatives"]
    times = {a["scheme"]: a["expected_round_seconds"] for a in alternatives}
    for label in ("uncoded", "flat-cyclic", "hgc-uniform"):
        assert times["hgc-optimized"] <= times[label] * (1 + 1e-9), label
    # waiting for the 250 ms uplink every round costs at least that much
    assert times["uncoded"] > 0.25 > times["hgc-optimized"]


def test_simulate_writes_csv_png_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    spec = EXAMPLES / "raspberry-pi-fleet.toml"
    result = _edgecode("simulate", spec, "--rounds", "300", "--out", out, "--seed", "3")
    assert result.returncode == 0, result.stderr
    with (out / "rounds.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["scheme", "round", "seconds", "stragglers"]
    assert len(rows) == 5 * 300
    assert [r["scheme"] for r in rows[::300]] == LABELS
    assert all(float(r["seconds"]) > 0 and int(r["stragglers"]) >= 0 for r in rows)
    assert {r["stragglers"] for r in rows if r["scheme"] == "uncoded"} == {"0"}
    assert (out / "round_times.png").read_bytes()[:8] == PNG_MAGIC
    summary = json.loads((out / "summary.json").read_text())
    assert [s["scheme"] for s in summary] == LABELS
    for row in summary:
        # 300 rounds: the simulated mean is within a few standard errors of the exact value
        assert abs(row["simulated_mean_seconds"] - row["expected_round_seconds"]) <= (
            3 * row["simulated_ci95_seconds"] + 0.01 * row["expected_round_seconds"]
        ), row
    assert "Simulated vs expected round time" in result.stdout

    again = _edgecode(
        "simulate", spec, "--rounds", "300", "--out", tmp_path / "again", "--seed", "3"
    )
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "rounds.csv").read_text() == (out / "rounds.csv").read_text()


def test_report_writes_markdown_png_and_csv(tmp_path: Path) -> None:
    out = tmp_path / "report"
    small = "--rounds 100 --probabilities 0,0.3 --slowdowns 1,8 --edges 2 --workers-per-edge 3"
    result = _edgecode("report", "--out", out, *small.split())
    assert result.returncode == 0, result.stderr
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("## Speed-up over uncoded training")
    assert "--edges 2 --workers-per-edge 3" in markdown  # the command that made it
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table_rows) == 2 * (1 + 2)  # header + 2 points, twice
    assert "![speed-up over uncoded](speedup.png)" in markdown
    assert (out / "speedup.png").read_bytes()[:8] == PNG_MAGIC
    with (out / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 * 5
    assert {r["scheme"] for r in rows} == set(LABELS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "missing.toml"], "spec file missing.toml does not exist"),
        (["simulate", "missing.toml", "--rounds", "10"], "does not exist"),
        (["plan", "{bad}"], "not valid TOML"),
        (["plan", "{negative}"], "rate must be > 0"),
        (["plan", "{unknown}"], "unknown keys ['speed']"),
        (
            ["simulate", str(EXAMPLES / "homogeneous.toml"), "--rounds", "0"],
            "argument --rounds: must be >= 2",
        ),
        (["report", "--probabilities", "0,2"], "argument --probabilities: values must be in"),
        (
            ["report", "--slowdowns", "x"],
            "argument --slowdowns: expected comma-separated numbers",
        ),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path: Path, args: list[str], message: str) -> None:
    files = {
        "{bad}": "[[edge]\nname = ",
        "{negative}": '[[edge]]\nname = "e"\n[[edge.worker]]\nshift = 0.1\nrate = -1.0\n',
        "{unknown}": '[[edge]]\nname = "e"\n[[edge.worker]]\nshift = 0.1\nrate = 1.0\nspeed = 2\n',
    }
    resolved = []
    for arg in args:
        if arg in files:
            path = tmp_path / "spec.toml"
            path.write_text(files[arg])
            arg = str(path)
        resolved.append(arg)
    result = subprocess.run(
        [sys.executable, "-m", "edgecode", *resolved],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "edgecode: error:" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["plan", "simulate", "report"])
def test_help(command: str) -> None:
    result = _edgecode(command, "--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert "--out" in result.stdout or command == "plan"
