"""What the README's commands wrote, checked (used by test_readme_examples.py): input files
the examples name, operands fitted to generated matrices, and the outputs' exactness."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp


@dataclass
class Files:
    """Inputs the examples name, made once in a temporary folder."""

    folder: Path
    values: dict[str, str] = field(default_factory=dict)

    def make(self) -> Files:
        rng = np.random.default_rng(0)
        f = self.folder
        a = sp.random(300, 300, density=0.02, format="csr", rng=rng)
        sp.save_npz(f / "A.npz", a)
        import scipy.io

        scipy.io.mmwrite(str(f / "A.mtx"), a)
        np.save(f / "x.npy", rng.standard_normal(300))
        sp.save_npz(f / "B.npz", sp.random(300, 3, density=0.3, format="csr", rng=rng))
        np.save(f / "B.npy", rng.standard_normal((300, 3)))
        x = sp.random(120, 12, density=0.3, format="csr", rng=rng)
        y = np.where(x @ rng.standard_normal(12) > 0, 1, -1)
        with (f / "data.svm").open("w") as handle:
            for row in range(x.shape[0]):
                cells = x.getrow(row)
                pairs = " ".join(
                    f"{j + 1}:{v:.5f}" for j, v in zip(cells.indices, cells.data, strict=True)
                )
                handle.write(f"{y[row]:+d} {pairs}\n")
        labels = rng.integers(0, 3, 90)
        table = np.column_stack([rng.standard_normal((90, 4)) + labels[:, None], labels])
        np.savetxt(f / "data.csv", table, delimiter=",", fmt="%.6g")
        np.savez(f / "data.npz", X=rng.standard_normal((100, 6)), y=rng.standard_normal(100))
        self.values = {
            "libsvm": str(f / "data.svm"),
            "csv": str(f / "data.csv"),
            "npz": str(f / "data.npz"),
        }
        return self


def fit_operand(argv: list[str], out: Path) -> list[str]:
    """The operand files fit A.npz / A.mtx; a generated A (random, tfidf) gets its own."""
    matrix = argv[argv.index("--matrix") + 1]
    if matrix not in ("random", "tfidf"):
        return argv
    from edgecode.bench.matmul import load_source

    size = int(argv[argv.index("--size") + 1]) if "--size" in argv else 2000
    rows = load_source(matrix, size=size)[1].shape[0]
    rng = np.random.default_rng(1)
    for flag in ("--vector", "--rhs"):
        if flag in argv:
            at = argv.index(flag) + 1
            path = out / f"fitted-{Path(argv[at]).name}"
            if path.suffix == ".npz":
                sp.save_npz(path, sp.random(rows, 3, density=0.3, format="csr", rng=rng))
            else:
                np.save(path, rng.standard_normal(rows if flag == "--vector" else (rows, 3)))
            argv[at] = str(path)
    return argv


# ---- what the runs produced ----------------------------------------------------------------------

EXACT = 1e-8


def _flag(argv: list[str], flag: str, default: str = "") -> str:
    return argv[argv.index(flag) + 1] if flag in argv else default


def _all_within(errors: list[float], bound: float, what: str) -> None:
    values = np.asarray(errors, dtype=float)
    assert values.size and np.all(np.isfinite(values)) and np.all(values <= bound), (what, values)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(float(np.linalg.norm(b)), 1e-300))


def verify_outputs(argv: list[str], cwd: Path) -> None:
    """Beyond exit 0: what the command wrote is right (exact products, exact coded training,
    finite and bounded benchmark errors)."""
    sub = argv[1:3] if argv[1:2] == ["bench"] else argv[1:2]
    if sub == ["matmul"] and "--out" in argv:
        _verify_matmul(argv, cwd)
    elif sub == ["run"] and "--json" in argv:
        import json

        schemes = {
            r["scheme"]: r for r in json.loads((cwd / _flag(argv, "--json")).read_text())["schemes"]
        }
        assert all(r["state"] == "succeeded" for r in schemes.values()), schemes
        if {"hgc", "uncoded"} <= set(schemes):
            hgc, uncoded = np.array(schemes["hgc"]["loss"]), np.array(schemes["uncoded"]["loss"])
            assert hgc.shape == uncoded.shape == (int(_flag(argv, "--rounds")),)
            _all_within(list(np.abs(hgc - uncoded) / np.abs(uncoded)), 1e-9, "hgc vs uncoded loss")
    elif sub == ["bench", "codes"]:
        import json

        report = json.loads(
            (cwd / _flag(argv, "--out", "out/bench-codes") / "codes.json").read_text()
        )
        for row in report["decode"]:
            values = [v for k, v in row.items() if k not in ("n", "s")]
            assert np.all(np.isfinite(values)) and np.all(np.asarray(values) > 0), row
        matrix = report["sparse_vs_dense"]
        _all_within(
            [matrix["sparse_decode_rel_error"], matrix["dense_decode_rel_error"]], EXACT, "decode"
        )
    elif sub == ["bench", "matmul"] and "matvec" not in _flag(argv, "--parts", "matvec,atb"):
        import json

        rows = json.loads(
            (cwd / _flag(argv, "--out", "out/bench-matmul") / "matmul_atb.json").read_text()
        )["rows"]
        _all_within([r["max_relative_error"] for r in rows], EXACT, "coded A^T B products")
    elif sub == ["bench", "matmul"]:
        import json

        rows = json.loads(
            (cwd / _flag(argv, "--out", "out/bench-matmul") / "matmul.json").read_text()
        )["rows"]
        _all_within([r["max_relative_error"] for r in rows], EXACT, "coded products")
        for scenario in {(r["matrix"], r["scenario"]) for r in rows}:
            nnz = {
                r["scheme"]: r["nnz_per_block"]
                for r in rows
                if (r["matrix"], r["scenario"]) == scenario
            }
            assert nnz["sparse"] < nnz["dense"], nnz
    elif sub == ["bench", "train"] and "--model" in argv:
        import json

        report = json.loads(
            (cwd / _flag(argv, "--out", "out/bench-train") / "torch.json").read_text()
        )
        loss = {r["scheme"]: r["loss"][-1] for r in report["rows"]}
        _all_within([abs(loss["hgc"] - loss["uncoded"]) / abs(loss["uncoded"])], 1e-9, "torch")
    elif sub == ["bench", "train"]:
        import json

        report = json.loads(
            (cwd / _flag(argv, "--out", "out/bench-train") / "train.json").read_text()
        )
        for scenario, result in report["training"].items():
            loss = result["final_loss"]
            _all_within([abs(loss["hgc"] - loss["uncoded"]) / abs(loss["uncoded"])], 1e-9, scenario)
        # every ratio printed is a finite, positive measurement
        ratios = [report["tls"]["mtls_over_plaintext"], report["verify"]["verify_over_plain"]]
        assert all(math.isfinite(r) and r > 0 for r in ratios), ratios


def _verify_matmul(argv: list[str], cwd: Path) -> None:
    from edgecode.bench.matmul import load_source

    seed = int(_flag(argv, "--seed", "0"))
    source = _flag(argv, "--matrix", "random")
    if source.endswith(".npz"):
        a = sp.load_npz(source).tocsr()
    elif source.endswith(".mtx"):
        import scipy.io

        a = sp.csr_matrix(scipy.io.mmread(source))
    else:
        a = load_source(source, size=int(_flag(argv, "--size", "2000")), seed=seed)[1]
    result = np.load(cwd / _flag(argv, "--out"))
    iterations = int(_flag(argv, "--power-iterations", "0"))
    if iterations:
        v = np.random.default_rng(seed).standard_normal(a.shape[1])
        v /= np.linalg.norm(v)
        for _ in range(iterations):
            w = a.T @ (a @ v)
            v = w / np.linalg.norm(w)
        expected = v
    else:
        if "--vector" in argv:
            operand = np.load(_flag(argv, "--vector"))
        elif "--rhs" in argv:
            rhs = _flag(argv, "--rhs")
            operand = sp.load_npz(rhs).toarray() if rhs.endswith(".npz") else np.load(rhs)
        else:
            operand = np.random.default_rng(seed).standard_normal(a.shape[0])
        expected = np.asarray(a.T @ operand)
    assert result.shape == expected.shape
    _all_within([_relative(result, expected)], EXACT, "A^T x against the direct product")
