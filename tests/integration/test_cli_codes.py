"""The console script, run as a user runs it (a subprocess)."""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import sys

import numpy as np
import scipy.sparse as sp

from edgecode import __version__
from edgecode.codes import (
    cyclic_partial,
    cyclic_repetition,
    dense_mds_code,
    fractional_repetition,
    hierarchical,
    sparse_mv_code,
    stochastic,
    subset_design,
)
from edgecode.codes.matrix import matvec, split_columns

#: Patterns re-decoded per code by the test itself (every straggler set for partial codes).
RECHECKED = 200


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


def _parameters(text: str) -> dict[str, object]:
    """``"m=[4, 4] s_e=1 s_w=1 K=4"`` -> ``{"m": [4, 4], "s_e": 1, ...}``."""
    return {key: json.loads(value) for key, value in re.findall(r"(\w+)=(\[[^\]]*\]|\S+)", text)}


def _within(errors: list[float], bound: float, what: object) -> None:
    values = np.asarray(errors, dtype=np.float64)
    assert values.size > 0, what
    assert np.all(np.isfinite(values)) and np.all(values <= bound), (what, values.max())


def _recheck_flat(code, rng: np.random.Generator) -> list[float]:
    n, s = code.n_workers, code.stragglers
    g = rng.standard_normal((code.n_partitions, 3))
    sets = list(itertools.combinations(range(n), n - s))
    errors = []
    for t in rng.permutation(len(sets))[:RECHECKED]:
        alive = list(sets[t])
        decoded = code.decode_vector(alive)[alive] @ (code.B[alive] @ g)
        errors.append(float(np.linalg.norm(decoded - g.sum(axis=0)) / np.linalg.norm(g.sum(0))))
    return errors


def _recheck_hierarchical(code, rng: np.random.Generator) -> list[float]:
    g = rng.standard_normal((code.n_partitions, 3))
    errors = []
    for _ in range(RECHECKED):
        edges = rng.choice(code.active_edges, len(code.active_edges) - code.s_edge, replace=False)
        alive = []
        for e in edges:
            taking = code.active_workers[e]
            kept = rng.choice(taking, len(taking) - code.s_workers[e], replace=False)
            alive += [code.worker_offsets[e] + int(w) for w in kept]
        decoded = code.decode_vector(alive) @ (code.B @ g)
        errors.append(float(np.linalg.norm(decoded - g.sum(axis=0)) / np.linalg.norm(g.sum(0))))
    return errors


def _recheck_partial(scheme, rng: np.random.Generator) -> list[float]:
    g = rng.standard_normal((scheme.n_partitions, 3))
    errors = []
    for stragglers in itertools.combinations(range(scheme.n_workers), scheme.stragglers):
        coefficients = scheme.decode(stragglers)
        assert np.count_nonzero(coefficients == 1.0) >= scheme.min_recovered, stragglers
        assert np.all((coefficients == 0.0) | (coefficients == 1.0)), stragglers
        total = sum(
            c * scheme.encode(w, g)[m] for (w, m), c in scheme.decode_messages(stragglers).items()
        )
        assert not set(w for w, _ in scheme.decode_messages(stragglers)) & set(stragglers)
        true = coefficients @ g
        errors.append(float(np.linalg.norm(total - true) / np.linalg.norm(true)))
    return errors


def _recheck_stochastic(code, rng: np.random.Generator) -> list[float]:
    g = rng.standard_normal((code.n_partitions, 3))
    expected = np.zeros(3)
    for alive in itertools.product((False, True), repeat=code.n_workers):
        mask = np.array(alive)
        expected += code.pattern_probability(mask) * code.encode(mask, g).sum(axis=0)
    return [float(np.linalg.norm(expected - g.sum(axis=0)) / np.linalg.norm(g.sum(axis=0)))]


def _recheck_matvec(code, rng: np.random.Generator) -> list[float]:
    a = sp.random(60, 50, density=0.1, format="csr", rng=rng)
    x = rng.standard_normal(60)
    coded = code.encode(split_columns(a, code.k))
    errors = []
    for _ in range(RECHECKED):
        alive = sorted(rng.choice(code.n_workers, code.k, replace=False).tolist())
        got = matvec(code, coded, x, alive, n_cols=50)
        errors.append(float(np.linalg.norm(got - a.T @ x) / np.linalg.norm(a.T @ x)))
    return errors


def _rebuild(row: dict[str, object]):
    """The code a report row describes, built here, and the function that rechecks it."""
    p = _parameters(str(row["parameters"]))
    kind = str(row["code"])
    if kind in ("cyclic", "fractional"):
        build = cyclic_repetition if kind == "cyclic" else fractional_repetition
        return build(p["n"], p["s"]), _recheck_flat
    if kind == "hierarchical":
        return hierarchical(p["m"], p["s_e"], p["s_w"]), _recheck_hierarchical
    if kind == "partial SubsetDesign":
        return subset_design(p["n"], p["s"], p["alpha"]), _recheck_partial
    if kind == "partial CyclicPartial":
        return cyclic_partial(p["n"], p["s"], p["alpha"]), _recheck_partial
    if kind == "stochastic":
        return stochastic(p["n"], p["d"], p["p"]), _recheck_stochastic
    build = sparse_mv_code if kind == "sparse matvec" else dense_mds_code
    return build(p["n"], p["k"]), _recheck_matvec


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
    # The report's own numbers, each finite and within the bound (NaN fails both).
    _within([r["worst_relative_error"] for r in rows], 1e-9, "reported errors")
    # Codes built to meet their bound do; the baselines (dense MDS, cyclic partial) sit above it.
    meets = [r for r in rows if r["code"] not in ("dense matvec", "partial CyclicPartial")]
    assert all(abs(r["load"] - r["load_bound"]) < 1e-12 for r in meets)
    assert all(r["load"] >= r["load_bound"] - 1e-12 for r in rows)
    assert "decode every pattern checked" in result.stdout
    # Independently of the tool's own ``failures`` count: rebuild every code the report lists,
    # decode (a sample of) its patterns here, and check each error and each exhaustive count.
    rng = np.random.default_rng(2024)
    for row in rows:
        code, recheck = _rebuild(row)
        _within(recheck(code, rng), 1e-9, (row["code"], row["parameters"]))
        p = _parameters(row["parameters"])
        if row["code"] in ("cyclic", "fractional"):
            assert row["exhaustive"] == (row["patterns"] == math.comb(p["n"], p["s"])), row


def test_bad_arguments_are_a_clear_error() -> None:
    result = _edgecode("codes", "show", "cyclic", "-n", "4", "-s", "4")
    assert result.returncode == 2
    assert "edgecode: error: s (stragglers)" in result.stderr
    assert "Traceback" not in result.stderr
