"""The console script, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

from edgecode import __version__


def _edgecode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgecode", *args], capture_output=True, text=True, timeout=240
    )


def test_help_lists_subcommands() -> None:
    result = _edgecode("--help")
    assert result.returncode == 0
    for name in ("codes", "bench"):
        assert name in result.stdout


def test_version() -> None:
    result = _edgecode("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"edgecode {__version__}"


def test_codes_verify_reports_every_code(tmp_path) -> None:
    report = tmp_path / "report.json"
    result = _edgecode("codes", "verify", "--max-n", "16", "--json", str(report))
    assert result.returncode == 0, result.stderr
    rows = json.loads(report.read_text())
    kinds = {r["code"] for r in rows}
    assert kinds >= {
        "cyclic",
        "fractional",
        "hierarchical",
        "stochastic",
        "sparse matvec",
        "dense matvec",
    }
    assert {"partial SubsetDesign", "partial CyclicPartial"} <= kinds
    assert all(r["failures"] == 0 for r in rows)
    assert all(r["worst_relative_error"] <= 1e-9 for r in rows)
    # Codes built to meet their bound do; the baselines (dense MDS, cyclic partial) sit above it.
    meets = [r for r in rows if r["code"] not in ("dense matvec", "partial CyclicPartial")]
    assert all(abs(r["load"] - r["load_bound"]) < 1e-12 for r in meets)
    assert all(r["load"] >= r["load_bound"] - 1e-12 for r in rows)
    assert "decode every pattern checked" in result.stdout


def test_bad_arguments_are_a_clear_error() -> None:
    result = _edgecode("codes", "show", "cyclic", "-n", "4", "-s", "4")
    assert result.returncode == 2
    assert "edgecode: error: s (stragglers)" in result.stderr
    assert "Traceback" not in result.stderr
