"""``edgecode codes``: inspect and verify the coding core."""

from __future__ import annotations

import argparse
import json
from functools import partial

from edgecode.cli import _args, command_help
from edgecode.cli._render import console, print_help, progress, table


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str = "codes"
) -> None:
    parser = subparsers.add_parser(
        "codes",
        help=command_help("codes"),
        description=(
            "Inspect a code's coefficients and load, or verify that every code decodes the exact "
            "result from every straggler pattern it claims to tolerate."
        ),
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        help="decode every tolerated straggler pattern (sampled when too many) and report errors",
        description=(
            "For each code and size: enumerate every alive set the code claims to tolerate "
            "(2,000 sampled sets above 20,000), decode random float64 gradients, and report the "
            "worst relative error, the worst condition number, and the load beside its bound. "
            "Exit code 1 if any pattern fails to decode."
        ),
    )
    _verify_flags(verify)
    verify.set_defaults(func=_verify)

    show = actions.add_parser(
        "show",
        help="print one code's coefficient matrix B and its load (partial: every design's loads)",
        epilog=(
            "example: edgecode codes show partial --n 10 --s 3 --alpha 0.9  (the partial "
            "designs' computation and communication loads beside the LP bound)"
        ),
    )
    show.add_argument("kind", choices=["cyclic", "fractional", "hierarchical", "partial"])
    show.add_argument(
        "-n", "--n", type=_args.integer(1), default=6, help="workers (flat and partial codes)"
    )
    show.add_argument(
        "-s",
        "--s",
        type=_args.integer(0),
        default=1,
        help="stragglers tolerated (flat and partial codes)",
    )
    show.add_argument(
        "--alpha",
        type=float,
        default=0.9,
        help="partial: fraction of the partitions to recover from any n - s workers (0 < a <= 1)",
    )
    show.add_argument(
        "--max-partitions",
        type=_args.integer(1),
        default=None,
        help="partial: largest k a subset design may use (default 200000)",
    )
    show.add_argument(
        "--workers-per-edge",
        type=_args.integer_list(1),
        default="3,3",
        help="m_i list (hierarchical), e.g. 3,3",
    )
    show.add_argument("--s-edge", type=_args.integer(0), default=1)
    show.add_argument("--s-worker", type=_args.integer(0), default=1)
    show.set_defaults(func=_show)
    parser.set_defaults(func=partial(print_help, parser))


def _verify_flags(verify: argparse.ArgumentParser) -> None:
    """The flags of ``codes verify``."""
    verify.add_argument(
        "--max-n",
        type=_args.integer(8),
        default=64,
        help="largest flat code size, at least 8 (default 64; sizes 8, 16, 32, 64)",
    )
    verify.add_argument("--seed", type=_args.seed, default=0, help="seed of the random gradients")
    verify.add_argument(
        "--json", metavar="FILE", type=_args.output_file, help="also write the report as JSON"
    )
    verify.add_argument(
        "--table",
        action="store_true",
        help=(
            "instead: the exactness table of the cyclic code, worst condition number, residual "
            "and relative error over every alive set for n <= 16 (sampled above), per (n, s)"
        ),
    )
    verify.add_argument(
        "--sizes",
        type=_sizes_arg,
        default="2-16,24,32,48,64",
        help="n values of --table, e.g. 2-16,24,32 (default 2-16,24,32,48,64)",
    )


def _sizes_arg(text: str) -> str:
    """``--sizes``: checked as it is parsed (one line naming the flag)."""
    try:
        sizes = _sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--sizes ")) from None
    if not sizes or min(sizes) < 2:
        raise argparse.ArgumentTypeError(f"sizes must be >= 2, got {text!r}")
    return text


def _sizes(text: str) -> list[int]:
    sizes: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        try:
            sizes += list(range(int(low), int(high or low) + 1))
        except ValueError:
            raise ValueError(f"--sizes must look like 2-16,24,32, got {text!r}") from None
    return sizes


def _table(args: argparse.Namespace) -> int:
    import numpy as np

    from edgecode.codes.verify import exactness_cases, exactness_row

    rng = np.random.default_rng(args.seed)
    cases = exactness_cases(_sizes(args.sizes))
    rows = [exactness_row(n, s, rng) for n, s in progress(cases, "decoding every alive set")]
    table(
        "cyclic_repetition(n, s): worst alive set",
        [
            "n",
            "s",
            "alive sets",
            "all",
            "worst cond.",
            "worst |aB - 1|",
            "worst rel. error",
            "build s",
        ],
        [
            [
                r.n,
                r.s,
                r.alive_sets,
                "all" if r.exhaustive else "sampled",
                r.worst_condition,
                r.worst_residual,
                r.worst_relative_error,
                r.build_seconds,
            ]
            for r in rows
        ],
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with args.json.open("w") as handle:
            json.dump([r.__dict__ for r in rows], handle, indent=2)
    bad = [r for r in rows if not (r.worst_residual <= 1e-9 and r.worst_relative_error <= 1e-9)]
    console().print(
        f"{len(rows) - len(bad)} of {len(rows)} (n, s) decode every alive set checked to <= 1e-9"
        + ("" if not bad else f"; ABOVE: {[(r.n, r.s) for r in bad]}")
    )
    return 1 if bad else 0


def _verify(args: argparse.Namespace) -> int:
    import numpy as np

    from edgecode.codes.verify import default_suite

    if args.table:
        return _table(args)
    rng = np.random.default_rng(args.seed)
    suite = default_suite(args.max_n)
    results = [check(rng) for _, check in progress(suite, "verifying codes")]
    table(
        "Decoding every tolerated straggler pattern",
        [
            "code",
            "parameters",
            "patterns",
            "all",
            "decoded",
            "worst rel. error",
            "worst cond.",
            "load",
            "bound",
            "note",
        ],
        [
            [
                r.code,
                r.parameters,
                r.patterns,
                "all" if r.exhaustive else "sampled",
                r.ok,
                r.worst_relative_error,
                r.worst_condition,
                r.load,
                r.load_bound,
                r.note,
            ]
            for r in results
        ],
    )
    failed = [r for r in results if not r.ok]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with args.json.open("w") as handle:
            json.dump([r.__dict__ for r in results], handle, indent=2)
    console().print(
        f"{len(results) - len(failed)} of {len(results)} codes decode every pattern checked"
        + (
            ""
            if not failed
            else f"; FAILED: {', '.join(r.code + ' ' + r.parameters for r in failed)}"
        )
    )
    return 1 if failed else 0


def _show(args: argparse.Namespace) -> int:
    import numpy as np

    from edgecode.codes import cyclic_repetition, fractional_repetition, hierarchical

    np.set_printoptions(precision=3, suppress=True, linewidth=160)
    if args.kind == "partial":
        return _show_partial(args)
    if args.kind == "hierarchical":
        m = args.workers_per_edge
        _args.check(
            args.s_edge < len(m),
            f"--s-edge must be < the {len(m)} edges of --workers-per-edge, got {args.s_edge}",
        )
        _args.check(
            args.s_worker < min(m),
            f"--s-worker must be < the smallest edge of --workers-per-edge ({min(m)}), "
            f"got {args.s_worker}",
        )
        code = hierarchical(m, args.s_edge, args.s_worker)
        console().print(
            f"hierarchical m={m} s_e={args.s_edge} s_w={args.s_worker} K={code.n_partitions}"
        )
        console().print(f"load D/K = {code.load:.4f}, bound = {code.load_bound:.4f}")
        print(code.B)
        return 0
    code_f = (
        cyclic_repetition(args.n, args.s)
        if args.kind == "cyclic"
        else fractional_repetition(args.n, args.s)
    )
    console().print(
        f"{code_f.name} n={args.n} s={args.s}: "
        f"load {code_f.load:.4f} (bound {code_f.load_bound:.4f})"
    )
    print(code_f.B)
    return 0


def _show_partial(args: argparse.Namespace) -> int:
    import numpy as np

    from edgecode.codes.partial import MAX_PARTITIONS, CyclicPartial, partial_load_optimum
    from edgecode.codes.partial_rule import MASK_LIMIT, PartialDecoder
    from edgecode.codes.partial_schemes import check_alpha, design_label, partial_designs
    from edgecode.planning.partial import guaranteed_arrivals, stop_arrival_distribution

    alpha = check_alpha(args.alpha)
    cap = MAX_PARTITIONS if args.max_partitions is None else args.max_partitions
    designs = partial_designs(args.n, args.s, alpha, max_partitions=cap)
    optimum = partial_load_optimum(args.n, args.s, alpha)
    mix = ", ".join(f"w_{r}={w}" for r, w in zip(optimum.sizes, optimum.weights, strict=True))
    console().print(
        f"partial recovery n={args.n} s={args.s} alpha={alpha}: every n - s workers give at "
        f"least ceil(alpha k) partial gradients, each with coefficient 1. LP bound on the "
        f"computation load L* = {float(optimum.load):.4f} (n L* = {optimum.n_load} = "
        f"{float(optimum.n_load):.4f}; data on r workers: {mix})"
    )
    rows = []
    for scheme in designs:
        decoder = PartialDecoder(scheme)
        timed = decoder.count_only or scheme.n_workers <= MASK_LIMIT
        distribution = stop_arrival_distribution(decoder) if timed else None
        rows.append(
            [
                design_label(scheme),
                scheme.n_partitions,
                scheme.partitions_per_worker,
                scheme.computation_load,
                scheme.lower_bound,
                f"{scheme.computation_load / scheme.lower_bound:.3f}x",
                scheme.communication_load,
                scheme.worst_case_recovered
                if isinstance(scheme, CyclicPartial)
                else int(decoder.by_arrivals[scheme.n_workers - scheme.stragglers])
                if decoder.by_arrivals is not None
                else "-",
                scheme.min_recovered,
                guaranteed_arrivals(decoder) if timed else "-",
                "-"
                if distribution is None
                else f"{float(distribution @ np.arange(distribution.size)):.2f}",
            ]
        )
    table(
        "Partial-recovery designs: computation load (data per worker) vs communication load "
        "(vectors per worker)",
        [
            "design",
            "k",
            "held/worker",
            "comp. load",
            "LP bound",
            "load/bound",
            "vectors/worker",
            "worst rec.",
            "need",
            "ends by",
            "mean end",
        ],
        rows,
    )
    console().print(
        "comp. load: fraction of the data a worker processes; worst rec.: fewest partitions "
        "recovered from any n - s workers (need = ceil(alpha k)); ends by: the arrival at which "
        "recovery is guaranteed; mean end: the mean arrival that ends a round (identical "
        "workers, random order). "
        "Expected round times on a cluster: edgecode plan SPEC --alpha A.",
        style="dim",
    )
    return 0
