"""``edgecode bench``: performance measured side by side in one run (CSV/JSON + PNG)."""

from __future__ import annotations

import argparse
import csv
import json
from functools import partial
from pathlib import Path
from typing import Any

from edgecode.cli import _args, command_help
from edgecode.cli._render import console, print_help, table

#: The sparse random matrices below this size have too few non-zeros to time.
MIN_MATRIX_SIZE = 100
#: bench train compares steady-state rounds after 5 profiling / warm-up rounds.
MIN_TRAIN_ROUNDS = 6


def matrix_sources(text: str) -> list[str]:
    """``--matrices``: a comma list of random, tfidf or existing .npz/.mtx files."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma list of random, tfidf or files")
    for name in names:
        if name not in ("random", "tfidf"):
            matrix_file(name)
    return names


def matrix_file(text: str) -> str:
    """A matrix file the loaders read: an existing .npz or .mtx."""
    if text in ("random", "tfidf"):
        return text
    path = _args.existing_file(text)
    if path.suffix.lower() not in (".npz", ".mtx"):
        raise argparse.ArgumentTypeError(f"expected a .npz or .mtx file, got {text!r}")
    return text


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str = "bench"
) -> None:
    parser = subparsers.add_parser(
        "bench",
        help=command_help("bench"),
        description="Benchmarks. They print ratios measured in one run; the machines are noisy.",
    )
    targets = parser.add_subparsers(title="targets", metavar="TARGET")
    _codes_target(targets)
    _train_target(targets)
    from edgecode.cli.bench_matmul import matmul_target

    matmul_target(targets)
    _papers_targets(targets)
    _scale_target(targets)
    from edgecode.cli.gossip import add_bench_target  # bench goco lives with edgecode gossip

    add_bench_target(targets)
    from edgecode.cli.bench_torch import soak_target

    soak_target(targets)
    parser.set_defaults(func=partial(print_help, parser))


def _scale_target(targets: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``bench scale``: its parser."""
    scale = targets.add_parser(
        "scale",
        help="round time, master and edge CPU, bytes and memory for 8..64 workers; planner time",
        description=(
            "Real local clusters of 8, 16, 32 and 64 worker processes (about sqrt(N) edges, the "
            "same total emulated compute): hgc (planner) vs flat vs uncoded; mean round time, "
            "master and edge CPU per round, bytes the master receives per round, peak worker "
            "memory; and the planner's time up to 1,000 workers (targets < 50 ms at 16, < 1 s "
            "at 200). The master's cost per round should follow the edges, not the workers."
        ),
    )
    scale.add_argument(
        "--out", type=_args.output_dir, default="out/bench-scale", help="output folder"
    )
    scale.add_argument(
        "--sizes",
        type=_args.integer_list(2),
        default="8,16,32,64",
        help="worker counts (default 8,16,32,64)",
    )
    scale.add_argument("--rounds", type=_args.integer(4), default=20, help="rounds per job")
    scale.set_defaults(func=_bench_scale)


def _bench_scale(args: argparse.Namespace) -> int:
    from edgecode.bench.papers import write_rows
    from edgecode.bench.scale import bench_planner_sizes, bench_scale

    out = Path(args.out)
    with console().status("local clusters of growing size ..."):
        rows = bench_scale(args.sizes, args.rounds)
    keys = [k for k in rows[0] if k != "state"]
    table("bench scale: the round path", keys, [[r[k] for k in keys] for r in rows])
    with console().status("the planner up to 1,000 workers ..."):
        planner = bench_planner_sizes()
    table(
        "the planner (one run each; targets < 0.05 s at 16 workers, < 1 s at 200)",
        ["workers", "edges", "seconds", "cpu seconds", "target"],
        [
            [p["workers"], p["edges"], p["seconds"], p["cpu_seconds"], p["target_seconds"]]
            for p in planner
        ],
    )
    json_path, csv_path = write_rows(rows, out, "scale")
    (out / "planner.json").write_text(json.dumps(planner, indent=2, default=float) + "\n")
    console().print(f"wrote {json_path}, {csv_path}, {out / 'planner.json'}")
    return 0 if all(r["state"] == "succeeded" for r in rows) else 1


def _papers_targets(targets: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``bench partial`` and ``bench shuffle``: papers 3 and 2 on a real local cluster."""
    for name, summary, default_rounds in (
        (
            "partial",
            "partial recovery (alpha = 1, 0.9, 0.8) vs full coding vs ignore, 10 workers, s = 3",
            60,
        ),
        (
            "shuffle",
            "approximate decoding without / with random / with aware shuffling vs hgc vs ignore",
            120,
        ),
    ):
        target = targets.add_parser(
            name,
            help=summary,
            description=(
                f"{summary}; on a real local cluster (separate processes), side by side in one "
                "run; writes JSON, CSV and a PNG. See edgecode.bench.papers for the targets."
            ),
        )
        target.add_argument(
            "--out",
            type=_args.output_dir,
            default=f"out/bench-{name}",
            help=f"output folder (default out/bench-{name})",
        )
        target.add_argument(
            "--rounds",
            type=_args.integer(30),
            default=default_rounds,
            help=f"rounds per job (default {default_rounds})",
        )
        target.add_argument("--seed", type=_args.seed, default=0)
        if name == "partial":
            target.add_argument(
                "--data",
                choices=("iid", "sorted", "both"),
                default="both",
                help="training rows in random order (iid partitions), sorted by label (each "
                "worker sees its own labels), or both side by side (default both)",
            )
        if name == "shuffle":
            target.add_argument(
                "--repeats",
                type=_args.integer(1),
                default=1,
                help="run every job this many times, in rotated order, and report means and "
                "the loss difference to no shuffling per repeat (default 1)",
            )
        target.set_defaults(func=partial(_bench_paper, name))


def _bench_paper(name: str, args: argparse.Namespace) -> int:
    from edgecode.bench.papers import bench_partial, bench_shuffle, plot_rows, write_rows

    out = Path(args.out)
    with console().status(f"bench {name}: jobs on a local cluster ..."):
        if name == "partial":
            data = ("iid", "sorted") if args.data == "both" else (args.data,)
            rows = bench_partial(args.rounds, args.seed, data)
        else:
            rows = bench_shuffle(args.rounds, args.seed, repeats=args.repeats)
    keys = list(rows[0])
    hidden = ("slow_nodes", "state", "loss_vs_no_shuffle_per_repeat")
    shown = [k for k in keys if k not in hidden]
    # a scheme that never reached uncoded's loss is shown, as "never"
    never = {"time_to_uncoded_round30_loss_s", "rounds_to_target"}
    table(
        f"bench {name}",
        shown,
        [["never" if k in never and row[k] is None else row[k] for k in shown] for row in rows],
    )
    json_path, csv_path = write_rows(rows, out, name)
    value = "mean_round_ms" if name == "partial" else "loss_at_equal_wall"
    figure = plot_rows(rows, out / f"{name}.png", value, f"bench {name}: {value}")
    console().print(f"wrote {json_path}, {csv_path}, {figure}")
    return 0 if all(row["state"] == "succeeded" for row in rows) else 1


def _codes_target(targets: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``bench codes``: its parser."""
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
        "--out",
        type=_args.output_dir,
        default="out/bench-codes",
        help="output folder (default out/bench-codes)",
    )
    codes.add_argument(
        "--length", type=_args.integer(1), default=1_000_000, help="gradient length (default 1M)"
    )
    codes.add_argument(
        "--matrix-size",
        type=_args.integer(MIN_MATRIX_SIZE),
        default=20_000,
        help=f"sparse matrix size, at least {MIN_MATRIX_SIZE} (default 20000)",
    )
    codes.add_argument("--repeats", type=_args.integer(1), default=7)
    codes.set_defaults(func=_bench_codes)


def _train_target(targets: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``bench train``: its parser."""
    train = targets.add_parser(
        "train",
        help="round times of coded vs uncoded training on a local cluster, transport, memory",
        description=(
            "On a real local cluster (8 workers in 2 edges, 80 ms of emulated compute for the whole "
            "data set, i.e. 10 ms per worker's even share, real gradients; the planner chooses K for "
            "its hgc plan, the other schemes use K=16): the planner's hgc plan vs uncoded with one "
            "persistent 5x straggler "
            "(target <= 0.5x) and without stragglers (target <= 1.15x); fixed s_e=s_w=1 vs the load "
            "bound's prediction; an 8 MB gradient over an edgecode RPC vs a bare gRPC call vs a raw "
            "TCP socket (targets >= 0.75x and >= 0.25x); peak worker memory (target < 150 MB); "
            "beside them the ideal floor and oracle (threads in one process) and the grpc floor "
            "and oracle (the same tree of processes, bare gRPC calls that only wait)."
        ),
    )
    train.add_argument(
        "--out",
        type=_args.output_dir,
        default="out/bench-train",
        help="output folder (default out/bench-train)",
    )
    train.add_argument(
        "--rounds",
        type=_args.integer(MIN_TRAIN_ROUNDS),
        default=60,
        help=f"rounds per scheme, at least {MIN_TRAIN_ROUNDS} (default 60)",
    )
    train.add_argument(
        "--repeats",
        type=_args.integer(1),
        default=15,
        help="repetitions of the transport comparison (default 15); 1 is a quick run: the mTLS "
        "and --verify comparisons once each, and no second cluster with streams off",
    )
    train.add_argument(
        "--model",
        type=_args.model,
        default="",
        help="a torch:MODULE:FUNCTION model instead: hgc vs uncoded vs ignore on digits with one "
        "persistent straggler, round time and time to 95%% test accuracy, worker memory",
    )
    train.set_defaults(func=_bench_train)


def _bench_codes(args: argparse.Namespace) -> int:
    from edgecode.bench.codes import bench_decode

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with console().status("decode vectors and combining ..."):
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
        console().print("matrix codes not available in this build; skipping sparse vs dense")
    else:
        with console().status("sparse vs dense coded blocks ..."):
            matrix = bench_sparse_vs_dense(size=args.matrix_size, repeats=args.repeats)
        report["sparse_vs_dense"] = matrix
        table(
            "Sparse-preserving vs dense coded blocks",
            ["measure", "value"],
            [[k, v] for k, v in matrix.items() if isinstance(v, int | float | str)],
        )
    _write(out, report)
    console().print(f"wrote {out / 'codes.json'}, {out / 'decode.csv'}, {out / 'codes.png'}")
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


def _bench_train(args: argparse.Namespace) -> int:
    if args.model:
        from edgecode.cli.bench_torch import bench_train_torch

        return bench_train_torch(args)
    from edgecode.bench.train import bench_training
    from edgecode.bench.transport import bench_transport

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with console().status("transport: edgecode RPC vs bare gRPC vs raw TCP ..."):
        transport = bench_transport(repeats=args.repeats)
    table(
        "8 MB float64 gradient on loopback (median of interleaved repeats)",
        ["path", "GB/s", "ms"],
        [
            [name, gbps, transport["median_ms"][name]]
            for name, gbps in transport["throughput_gb_per_s"].items()
        ],
    )
    console().print(
        f"edgecode / bare gRPC = {transport['edgecode_over_bare_grpc']:.2f} (target >= 0.75); "
        f"edgecode / raw TCP = {transport['edgecode_over_raw_tcp']:.2f} (target >= 0.25); "
        f"over mTLS: edgecode / bare TLS gRPC = "
        f"{transport['edgecode_tls_over_bare_tls_grpc']:.2f} (target >= 0.75), "
        f"mTLS / plaintext = {transport['tls_over_plaintext']:.2f}"
    )
    with console().status("training on local clusters (two scenarios) ..."):
        training = bench_training(rounds=args.rounds, calls=args.repeats > 1)
    rows = []
    for scenario, r in training.items():
        rows.append(
            [
                scenario,
                r["planned_hgc_seconds"] * 1e3,
                (r["planned_predicted_seconds"] or 0) * 1e3,
                r["uncoded_seconds"] * 1e3,
                r["ignore_seconds"] * 1e3,
                r["fixed_s1_seconds"] * 1e3,
                r["fixed_s1_predicted_by_load_bound_seconds"] * 1e3,
                r["planned_over_uncoded"],
                (r["fixed_over_load_bound_prediction"] if scenario == "no_stragglers" else "-"),
                r["accuracy"]["hgc"],
                r["accuracy"]["ignore"],
                r["max_worker_peak_rss_mb"],
            ]
        )
    table(
        "Training round times (ms, steady state after the planner's profiling rounds)",
        [
            "scenario",
            "planned hgc",
            "predicted",
            "uncoded",
            "ignore",
            "fixed s=1",
            "load-bound pred.",
            "planned/uncoded",
            "fixed/pred.",
            "acc hgc",
            "acc ignore",
            "max worker MB",
        ],
        rows,
    )
    _print_ideal(training)
    tls, verify = _security_costs(args)
    report = {"transport": transport, "training": training, "tls": tls, "verify": verify}
    (out / "train.json").write_text(json.dumps(report, indent=2, default=float))
    _plot_train(training, out / "train.png")
    console().print(f"wrote {out / 'train.json'}, {out / 'train.png'}")
    return 0


def _security_costs(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Round time with mutual TLS vs plaintext, and with ``--verify`` vs without, printed."""
    from edgecode.bench.train import bench_tls, bench_verify

    with console().status("round time with mutual TLS vs plaintext (two clusters) ..."):
        tls = bench_tls(repeats=4 if args.repeats > 1 else 1)
    console().print(
        f"round time with mTLS {tls['median_round_seconds']['mtls'] * 1e3:.1f} ms vs plaintext "
        f"{tls['median_round_seconds']['plaintext'] * 1e3:.1f} ms: "
        f"{tls['mtls_over_plaintext']:.3f}x (target <= 1.1)"
    )
    with console().status("round time with --verify vs without (one cluster) ..."):
        # as many rounds as the training jobs (at least 10 after the 5 skipped ones)
        verify = bench_verify(rounds=max(args.rounds, 15), repeats=3 if args.repeats > 1 else 1)
    console().print(
        f"round time with --verify {verify['median_round_seconds']['verify'] * 1e3:.1f} ms vs "
        f"without {verify['median_round_seconds']['plain'] * 1e3:.1f} ms: "
        f"{verify['verify_over_plain']:.3f}x (target <= 1.2)"
    )
    return tls, verify


def _print_ideal(training: dict[str, Any]) -> None:
    """Planned hgc beside the ideal floor and the oracle, beside the same tree with bare gRPC
    calls (the transport floor), and where a round's time goes."""

    def ms(value: float | None) -> Any:
        return "-" if value is None else value * 1e3

    def ratio(value: float | None) -> Any:
        return "-" if value is None else value

    rows = [
        [
            scenario,
            r["planned_hgc_seconds"] * 1e3,
            r["floor_seconds"] * 1e3,
            ms(r["oracle_seconds"]),
            r["planned_over_floor"],
            ratio(r["planned_over_oracle"]),
            r["grpc_floor_seconds"] * 1e3,
            ms(r["grpc_oracle_seconds"]),
            r["grpc_floor_over_floor"],
            ratio(r["grpc_oracle_over_oracle"]),
        ]
        for scenario, r in training.items()
    ]
    table(
        "Planned hgc vs the ideal floor (threads + barrier, one process) and the oracle "
        "(targets: <= 1.6x the floor without stragglers, <= 1.3x the oracle with one); the "
        "grpc floor and grpc oracle: the same tree of processes with bare gRPC calls that only "
        "wait the compute (same mTLS), against the threads' floor and oracle",
        [
            "scenario",
            "hgc ms",
            "floor ms",
            "oracle ms",
            "hgc/floor",
            "hgc/oracle",
            "grpc floor ms",
            "grpc oracle ms",
            "grpc floor/floor",
            "grpc oracle/oracle",
        ],
        rows,
    )
    for scenario, r in training.items():
        against = "grpc oracle" if r["grpc_oracle_seconds"] is not None else "grpc floor"
        value = r["planned_over_grpc_oracle"] or r["planned_over_grpc_floor"]
        console().print(f"{scenario}: planned hgc / {against} = {value:.3f}")
        if r["streams_over_unary"] is None:
            continue  # a quick run (--repeats 1) has no cluster with streams off
        console().print(
            f"{scenario}: planned hgc on streams / on a call per child per round = "
            f"{r['streams_over_unary']:.3f} ({1e3 * r['planned_hgc_seconds']:.2f} ms vs "
            f"{1e3 * r['planned_hgc_unary_seconds']:.2f} ms, the same cluster after it)"
        )
    for scenario, r in training.items():
        parts = r["breakdown"]
        keys = list(parts["hgc"])
        table(
            f"Where a round's time goes, {scenario} (ms, steady state)",
            ["part", *parts],
            [
                [key.removesuffix("_ms").replace("_", " "), *(parts[s][key] for s in parts)]
                for key in keys
            ],
        )


def _plot_train(training: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(training), figsize=(6 * len(training), 4), squeeze=False)
    for ax, (scenario, r) in zip(axes[0], training.items(), strict=True):
        for label, seconds in r["round_seconds"].items():
            ax.plot(range(1, len(seconds) + 1), [1e3 * s for s in seconds], label=label)
        ax.set(
            title=scenario.replace("_", " "), xlabel="round", ylabel="round time (ms)", yscale="log"
        )
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
