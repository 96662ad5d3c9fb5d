"""``edgecode matmul`` with a coded B (--k-a/--k-b), --spares and --kill: a user
error is one line naming the flag, exit code 2, and nothing starts (no cluster, no master)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from edgecode.cli import main
from edgecode.cli.matmul import kill_schedule


def _started(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a user error must be refused before anything starts")


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecode.cluster.local import LocalCluster

    monkeypatch.setattr(LocalCluster, "__init__", _started)
    monkeypatch.setattr(LocalCluster, "start", _started)


@pytest.fixture
def rhs_files(tmp_path: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    a = sp.random(50, 40, density=0.1, format="csr", rng=rng)
    b = sp.random(50, 12, density=0.1, format="csr", rng=rng)
    nan = b.copy()
    nan.data[0] = np.nan
    files = {"A": a, "B": b, "Bcsc": b.tocsc(), "Bshort": b[:49], "Bnan": nan}
    for name, matrix in files.items():
        sp.save_npz(tmp_path / f"{name}.npz", matrix)
    np.save(tmp_path / "dense.npy", b.toarray())
    return {name: str(tmp_path / f"{name}.npz") for name in files} | {
        "dense": str(tmp_path / "dense.npy")
    }


CASES = [
    (["--rhs", "{Bcsc}", "--k-b", "2"], "holds a CSC matrix"),
    (["--rhs", "{Bshort}", "--k-b", "1"], "expected A's 50 rows"),
    (["--rhs", "{Bnan}", "--k-b", "1"], "NaN or infinite"),
    (["--rhs", "{B}", "--k-a", "3", "--k-b", "3"], "--k-a x --k-b must be <= --workers (6)"),
    (["--rhs", "{B}", "--scheme", "dense", "--k-b", "2"], "--scheme dense codes A only"),
    (["--k-b", "2"], "--k-b needs a sparse --rhs"),
    (["--rhs", "{dense}", "--k-b", "2"], "--k-b needs a sparse --rhs"),
    (
        ["--rhs", "{B}", "--scheme", "uncoded", "--k-a", "1", "--k-b", "4"],
        "--k-b to divide --workers (6)",
    ),
    (["--kill", "2:1"], "--kill needs --power-iterations"),
    (["--power-iterations", "3", "--kill", "2:9"], "--kill: no worker [9]"),
    (["--power-iterations", "3", "--kill", "x"], "--kill"),
]


@pytest.mark.usefixtures("nothing_starts")
@pytest.mark.parametrize(("argv", "words"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_matmul_user_error_is_one_line_naming_it(
    argv: list[str],
    words: str,
    rhs_files: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    filled = [word.format(**rhs_files) for word in argv]
    try:
        code = main(["matmul", "--matrix", rhs_files["A"], "--k", "2", *filled])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert words in lines[0], lines[0]


def test_kill_schedule_parses_pairs() -> None:
    assert kill_schedule("2:1, 4:3") == ((2, 1), (4, 3))
    for bad in ("", "0:1", "a:1", "2-1"):
        with pytest.raises(Exception, match="ITERATION:WORKER"):
            kill_schedule(bad)
