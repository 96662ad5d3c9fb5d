"""``edgecode bench matmul``: coded A^T x and A^T B as a service, side by side in one run
(JSON, CSV and PNG); its parser and report. Kept apart from :mod:`edgecode.cli.bench`, which
registers it."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from edgecode.cli import _args
from edgecode.cli._render import console, table
from edgecode.cli.bench import MIN_MATRIX_SIZE, matrix_sources


def matmul_target(targets: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``bench matmul``: its parser."""
    matmul = targets.add_parser(
        "matmul",
        help="coded A^T x as a service: sparse vs dense-MDS vs polynomial vs uncoded",
        description=(
            "On a local cluster of n worker processes (this process is the master), for a "
            "1%%-dense random SIZE x SIZE matrix and a real sparse one (TF-IDF of scikit-learn's "
            "own text): per-worker multiply time, bytes placed, end-to-end time per product, "
            "worst-case condition number of the sparse, dense-MDS, polynomial and uncoded "
            "schemes, without stragglers and with 2 workers 10x slow. Targets: sparse worker "
            "time and bytes <= 0.4x dense; with the slow workers, sparse end-to-end <= 0.6x "
            "uncoded and <= 0.5x dense. A^T B rows (--parts atb) with a 1%%-dense B (random) "
            "or X X^T[:, block] (tfidf): both operands sparse-coded vs A coded and B sent "
            "column by column vs the polynomial code vs uncoded; targets: worker time and "
            "bytes placed <= 0.5x the polynomial code's (matmul_atb.json/.csv/.png)."
        ),
    )
    matmul.add_argument(
        "--out",
        type=_args.output_dir,
        default="out/bench-matmul",
        help="output folder (default out/bench-matmul)",
    )
    matmul.add_argument(
        "--size",
        type=_args.integer(MIN_MATRIX_SIZE),
        default=20_000,
        help=f"random matrix size, at least {MIN_MATRIX_SIZE} (default 20000)",
    )
    matmul.add_argument(
        "--matrices",
        type=matrix_sources,
        default="random,tfidf",
        help="comma list of random, tfidf or .npz/.mtx files",
    )
    matmul.add_argument("--workers", type=_args.integer(2), default=20, help="n (default 20)")
    matmul.add_argument("--k", type=_args.integer(1), default=16, help="k (default 16)")
    matmul.add_argument(
        "--repeats", type=_args.integer(1), default=5, help="products per scheme (default 5)"
    )
    matmul.add_argument(
        "--compute-seconds",
        type=_args.seconds,
        default=0.0,
        help="emulated seconds of the whole A^T x (A^T B) on one worker (a worker holding a "
        "fraction f of the non-zeros (multiply-adds) takes f times that, a slow one 10x "
        "more); default 0 = the real time measured here",
    )
    _matmul_rhs_flags(matmul)
    matmul.set_defaults(func=_bench_matmul)


def _matmul_rhs_flags(matmul: argparse.ArgumentParser) -> None:
    """``bench matmul``: the A^T B rows (sparse B, both operands coded)."""
    matmul.add_argument(
        "--parts",
        type=_args.choices_list(("matvec", "atb")),
        default="matvec,atb",
        help="comma list: matvec (A^T x rows), atb (A^T B rows with a sparse B: both operands "
        "coded vs A only column by column vs polynomial vs uncoded); default both",
    )
    matmul.add_argument(
        "--rhs-cols",
        type=_args.integer(1),
        default=200,
        help="columns of B for the A^T B rows (random: 1%% dense; tfidf: a block of X^T)",
    )
    matmul.add_argument(
        "--k-a",
        type=_args.integer(1),
        default=None,
        help="A^T B: k_a (default --k / --k-b: the same threshold K = k_a k_b as the A^T x rows)",
    )
    matmul.add_argument("--k-b", type=_args.integer(1), default=2, help="A^T B: k_b (default 2)")


def _bench_matmul(args: argparse.Namespace) -> int:
    from edgecode.bench.matmul import bench_matrix, load_source, targets

    _args.check(
        "matvec" not in args.parts or args.k <= args.workers,
        f"--k must be <= --workers ({args.workers}), got {args.k}",
    )
    if args.k_a is None:
        args.k_a = max(1, args.k // args.k_b)
    _args.check(
        "atb" not in args.parts or args.k_a * args.k_b <= args.workers,
        f"--k-a x --k-b must be <= --workers ({args.workers}), got {args.k_a} x {args.k_b}",
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "atb" in args.parts:
        _bench_matmul_rhs(args, out)
    if "matvec" not in args.parts:
        return 0
    rows: list[dict[str, Any]] = []
    for spec in args.matrices:
        with console().status(f"loading {spec} ...") as status:
            label, matrix = load_source(spec, size=args.size)
            rows += bench_matrix(
                label,
                matrix,
                n=args.workers,
                k=args.k,
                repeats=args.repeats,
                workdir=out / "clusters",
                compute_seconds=args.compute_seconds,
                progress=lambda text: status.update(text),
            )
    table(
        f"Coded A^T x, n={args.workers}, k={args.k} (medians)",
        [
            "matrix",
            "scenario",
            "scheme",
            "worker ms",
            "placed MB",
            "nnz/block",
            "end-to-end ms",
            "worst cond",
            "max rel err",
        ],
        [
            [
                r["matrix"],
                r["scenario"],
                r["scheme"],
                r["worker_multiply_ms"],
                r["placed_mb"],
                r["nnz_per_block"],
                r["end_to_end_ms"],
                r["worst_condition"],
                r["max_relative_error"],
            ]
            for r in rows
        ],
    )
    checks = targets(rows)
    table(
        "Targets (sparse code)",
        ["matrix", "target", "measured", "limit", "met"],
        [[m, t, v, lim, "yes" if ok else "NO"] for m, t, v, lim, ok in checks],
    )
    (out / "matmul.json").write_text(json.dumps({"rows": rows}, indent=2, default=float))
    with (out / "matmul.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=sorted({key for r in rows for key in r}))
        writer.writeheader()
        writer.writerows(rows)
    _plot_matmul(out, rows)
    console().print(f"wrote {out / 'matmul.json'}, {out / 'matmul.csv'}, {out / 'matmul.png'}")
    return 0


def _bench_matmul_rhs(args: argparse.Namespace, out: Path) -> None:
    """The A^T B rows: run, print, write matmul_atb.{json,csv,png}."""
    from edgecode.bench.matmul import bench_rhs, rhs_source, rhs_targets

    rows: list[dict[str, Any]] = []
    for spec in args.matrices:
        with console().status(f"loading {spec} (A^T B) ...") as status:
            label, a, b = rhs_source(spec, size=args.size, rhs_cols=args.rhs_cols)
            rows += bench_rhs(
                label,
                a,
                b,
                n=args.workers,
                k_a=args.k_a,
                k_b=args.k_b,
                repeats=args.repeats,
                workdir=out / "clusters",
                compute_seconds=args.compute_seconds,
                progress=lambda text: status.update(text),
            )
    _rhs_table(args, rows)
    table(
        "Targets (A^T B, sparse code on both operands)",
        ["matrix", "target", "measured", "limit", "met"],
        [[m, t, v, lim, "yes" if ok else "NO"] for m, t, v, lim, ok in rhs_targets(rows)],
    )
    (out / "matmul_atb.json").write_text(json.dumps({"rows": rows}, indent=2, default=float))
    with (out / "matmul_atb.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=sorted({key for r in rows for key in r}))
        writer.writeheader()
        writer.writerows(rows)
    _plot_matmul(out, rows, "matmul_atb.png")
    console().print(f"wrote {out / 'matmul_atb.json'}, .csv, .png")


RHS_COLUMNS = (
    *("matrix", "scenario", "scheme", "weight", "bound", "worker M adds", "worker ms"),
    *("placed MB", "MB/product", "end-to-end ms", "worst cond", "max rel err"),
)


def _rhs_table(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """The A^T B rows: weight beside the counting bound, work, time, bytes, accuracy."""
    columns = ["worker_multiply_ms", "placed_mb", "per_product_mb", "end_to_end_ms"]
    table(
        f"Coded A^T B, sparse B, n={args.workers}, k_a={args.k_a}, k_b={args.k_b} (medians; "
        "worker ms: fastest of the repeats)",
        RHS_COLUMNS,
        [
            [
                r["matrix"],
                r["scenario"],
                r["scheme"],
                f"({r['weight_a']}, {r['weight_b']})",
                r["counting_bound"],
                r["worker_multiply_adds"] / 1e6,
                *(r[c] for c in columns),
                r["worst_condition"],
                r["max_relative_error"],
            ]
            for r in rows
        ],
    )


def _plot_matmul(out: Path, rows: list[dict[str, Any]], name: str = "matmul.png") -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrices = sorted({r["matrix"] for r in rows})
    fig, axes = plt.subplots(len(matrices), 3, figsize=(13, 3.6 * len(matrices)), squeeze=False)
    for line, matrix in zip(axes, matrices, strict=True):
        mine = [r for r in rows if r["matrix"] == matrix]
        calm = [r for r in mine if r["scenario"] == "no stragglers"]
        slow = [r for r in mine if r["scenario"] != "no stragglers"]
        names = [r["scheme"] for r in calm]
        line[0].bar(names, [r["worker_multiply_ms"] for r in calm])
        line[0].set(title=f"{matrix}: worker multiply", ylabel="ms")
        line[1].bar(names, [r["placed_mb"] for r in calm])
        line[1].set(title="bytes placed", ylabel="MB")
        width = 0.4
        positions = np.arange(len(names))
        line[2].bar(positions - width / 2, [r["end_to_end_ms"] for r in calm], width, label="none")
        line[2].bar(
            positions + width / 2, [r["end_to_end_ms"] for r in slow], width, label="2 slow"
        )
        line[2].set(
            xticks=positions, xticklabels=names, title="end-to-end per product", ylabel="ms"
        )
        line[2].legend()
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
