"""``edgecode bench``: performance measured side by side in one run (CSV/JSON + PNG)."""

from __future__ import annotations

import argparse
import csv
import json
from functools import partial
from pathlib import Path
from typing import Any

from edgecode.cli._render import console, print_help, table


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmarks, each measured side by side with its baseline in one run",
        description="Benchmarks. They print ratios measured in one run; the machines are noisy.",
    )
    targets = parser.add_subparsers(title="targets", metavar="TARGET")
    codes = targets.add_parser(
        "codes",
        help="decode-vector time, combining cost vs numpy, sparse vs dense coded blocks",
        description=(
            "For n in 8,16,32,64: decode-vector time (cold and cached) and the time to combine "
            "n - s received vectors of 1M float64 beside a bare numpy dot of the same arrays "
            "(target <= 1.2x); then nnz and worker matvec time of sparse-preserving vs dense "
            "coded blocks of a 1%%-dense 20000 x 20000 matrix, n=20, k=16 (target >= 2.5x faster)."
        ),
    )
    codes.add_argument(
        "--out", default="out/bench-codes", help="output folder (default out/bench-codes)"
    )
    codes.add_argument("--length", type=int, default=1_000_000, help="gradient length (default 1M)")
    codes.add_argument(
        "--matrix-size", type=int, default=20_000, help="sparse matrix size (default 20000)"
    )
    codes.add_argument("--repeats", type=int, default=7)
    codes.set_defaults(func=_bench_codes)
    parser.set_defaults(func=partial(print_help, parser))


def _bench_codes(args: argparse.Namespace) -> int:
    from edgecode.bench.codes import bench_decode

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with console.status("decode vectors and combining ..."):
        decode_rows = bench_decode(vector_length=args.length, repeats=args.repeats)
    table(
        "Decoding: decode vector and combining n - s vectors",
        [
            "n",
            "s",
            "decode cold ms",
            "decode cached us",
            "combine ms",
            "numpy dot ms",
            "combine/dot",
        ],
        [
            [
                r["n"],
                r["s"],
                r["decode_vector_cold_ms"],
                r["decode_vector_cached_us"],
                r["combine_ms"],
                r["numpy_dot_ms"],
                r["combine_over_dot"],
            ]
            for r in decode_rows
        ],
    )
    report: dict[str, Any] = {"decode": decode_rows}
    try:
        from edgecode.bench.matrix_codes import bench_sparse_vs_dense
    except ImportError:
        console.print("matrix codes not available in this build; skipping sparse vs dense")
    else:
        with console.status("sparse vs dense coded blocks ..."):
            matrix = bench_sparse_vs_dense(size=args.matrix_size, repeats=args.repeats)
        report["sparse_vs_dense"] = matrix
        table(
            "Sparse-preserving vs dense coded blocks",
            ["measure", "value"],
            [[k, v] for k, v in matrix.items() if isinstance(v, int | float | str)],
        )
    _write(out, report)
    console.print(f"wrote {out / 'codes.json'}, {out / 'decode.csv'}, {out / 'codes.png'}")
    return 0


def _write(out: Path, report: dict[str, Any]) -> None:
    (out / "codes.json").write_text(json.dumps(report, indent=2, default=float))
    rows = report["decode"]
    with (out / "decode.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ns = [r["n"] for r in rows]
    axes[0].plot(ns, [r["combine_ms"] for r in rows], "o-", label="edgecode combine")
    axes[0].plot(ns, [r["numpy_dot_ms"] for r in rows], "s--", label="bare numpy dot")
    axes[0].set(
        xlabel="workers n (s = n/4)",
        ylabel="ms to combine n - s vectors",
        title="Combining 1M-float64 vectors",
    )
    axes[0].legend()
    axes[1].plot(ns, [r["decode_vector_cold_ms"] for r in rows], "o-", label="cold")
    axes[1].plot(ns, [r["decode_vector_cached_us"] / 1e3 for r in rows], "s--", label="cached")
    axes[1].set(xlabel="workers n", ylabel="ms", yscale="log", title="decode_vector")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "codes.png", dpi=110)
    plt.close(fig)
